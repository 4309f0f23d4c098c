"""The dock's status line: progress bar, what is happening in words, and napari's activity dock."""

from __future__ import annotations

from magicgui.widgets import ProgressBar
from napari.utils import progress
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget

from ..core import events as E
from .session import State

STEPS = 1000  # resolution of both progress bars


class StatusPanel(QWidget):
    def __init__(self, session):
        super().__init__()
        self.session = session
        self.progress = ProgressBar(min=0, max=STEPS, value=0)
        self.label = QLabel("Paint, then Train.")  # word-wrapped status: a QLabel, not magicgui's Label
        self.label.setWordWrap(True)
        self.activity: progress | None = None  # the same progress in napari's activity dock
        self._device = ""
        self._saturated, self._saved, self._edits = False, "", ""
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.progress.native)
        lay.addWidget(self.label)
        session.event.connect(self._on_event)
        session.state_changed.connect(self._on_state)
        session.error.connect(self._on_error)
        session.trained.connect(self._on_trained)

    def set_progress(self, fraction: float) -> None:
        value = int(max(0.0, min(1.0, fraction)) * STEPS)
        self.progress.value = value
        if self.activity is not None:
            self.activity.update(value - self.activity.n)

    def _on_state(self, state):
        if self.activity is not None:
            self.activity.close()
            self.activity = None
        if state in (State.TRAINING, State.PREDICTING):
            desc = "U-Net training" if state == State.TRAINING else "U-Net prediction"
            self.activity = progress(total=STEPS, desc=desc)
            self.progress.max = STEPS  # a keep-training run before may have left it busy
            self.progress.value = 0
            self.label.setText("Starting training..." if state == State.TRAINING else "Predicting...")
        elif state == State.STOPPING:
            self.label.setText("Stopping after this step; the weights are kept.")
        elif not state.busy:
            self.progress.max = STEPS

    def _on_event(self, ev):
        if isinstance(ev, E.Started):
            self._device, self._saturated, self._saved, self._edits = ev.device, False, "", ""
            self.label.setText(f"Training on {ev.device}" + (" (continuing)" if ev.warm_start else ""))
        elif isinstance(ev, E.Progress):
            open_ended = not ev.time_budget and not ev.steps  # keep training: a busy bar, no fraction
            if self.progress.max != (0 if open_ended else STEPS):
                self.progress.max = 0 if open_ended else STEPS
            self.set_progress(ev.fraction)
            secs = (f"{ev.elapsed:.0f} / {ev.time_budget:.0f} s" if ev.time_budget else
                    f"{ev.elapsed:.0f} s" + ("" if ev.steps else " (until Stop)"))
            self.label.setText(f"{self._device}: step {ev.step}, {secs}, loss {ev.loss:.3f}"
                               + ("; held-out IoU saturated" if self._saturated else "") + self._edits + self._saved)
        elif isinstance(ev, E.Validation):
            self.label.setToolTip("The held-out IoU is saturated: the held-out annotations are all right, which "
                                  "says nothing more about quality; annotate harder places." if ev.saturated else "")
            self._saturated = ev.saturated
        elif isinstance(ev, E.PredictProgress) and self.session.state == State.PREDICTING:  # not a preview's
            self.set_progress(ev.done / max(ev.total, 1))
        elif isinstance(ev, E.Saved):
            self._saved = f"; saved in {ev.path}"
        elif isinstance(ev, E.AnnotationsChanged):
            self._edits = f"; your edits in use since step {ev.step}"
        elif isinstance(ev, E.Notice):
            if self.session.state == State.PREDICTING:  # e.g. where outputs too big for memory are written
                self.label.setText(ev.message)
            show_info(ev.message)

    def _on_trained(self, result):
        self.progress.max = STEPS
        self.progress.value = STEPS
        self.label.setText(f"Trained {result.steps} steps in {result.seconds:.0f} s on {result.device}.")
        self.label.setToolTip(f"kept {result.kept}")  # also in the model section

    def _on_error(self, msg: str):
        self.label.setText(f"Error: {msg}")
        show_error(msg)
