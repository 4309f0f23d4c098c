"""2. Train: dimensionality, device, time budget or keep training, live preview, autosave folder;
Train / Stop / New model; the curve.

Keep training: while it runs, edits of the annotation layers (paint, fill, erase, data set) are
noticed here on the GUI thread, debounced (EDIT_DEBOUNCE_MS after the last edit), copied and handed
to the worker through the session: the worker never reads a layer.
"""

from __future__ import annotations

from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, PushButton, SpinBox
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QVBoxLayout, QWidget

from ..config import ModelConfig, TrainConfig
from ..core import events as E
from ..core.device import available_devices
from . import layers as L
from .plot import LossPlot
from .session import State

DEFAULTS = TrainConfig()  # the form's defaults come from the config, their one home
EDIT_DEBOUNCE_MS = 1000  # an edit reaches continuous training this long after the last brush event


class TrainPanel(QWidget):
    def __init__(self, viewer, session, annotate):
        super().__init__()
        self.viewer, self.session, self.annotate = viewer, session, annotate
        self.ndim = ComboBox(choices=["2D", "3D"], value=f"{ModelConfig().ndim}D", label="model")
        self.ndim.tooltip = "2D: plane by plane (stacks too); 3D: ZYX volumes (images with a Z axis)"
        self.device = ComboBox(choices=["auto", *available_devices()], value=DEFAULTS.device, label="device")
        self.budget = SpinBox(value=int(DEFAULTS.time_budget), min=1, max=24 * 3600, step=10, label="budget (s)")
        self.budget.tooltip = "Seconds of training; Stop ends it earlier and keeps the weights."
        self.preview = CheckBox(value=True, text="live preview")
        self.preview.tooltip = "Predict the plane in view every few seconds while training"
        self.keep = CheckBox(value=DEFAULTS.continuous, text="keep training")
        self.keep.tooltip = ("Train until Stop; strokes painted meanwhile are learnt within seconds (the budget "
                             "is not used)")
        self.autosave = FileEdit(mode="d", value=session.autosave_dir or "", label="autosave")
        self.autosave.tooltip = "The model is saved here during training (every 30 s and at the end); empty: off"
        model_row = Container(widgets=[self.ndim, self.device], layout="horizontal")
        budget_row = Container(widgets=[self.budget, self.keep, self.preview], layout="horizontal")
        for row in (model_row, budget_row):
            row.margins = (0, 0, 0, 0)
        self.train_btn = PushButton(text="Train")
        self.stop_btn = PushButton(text="Stop")
        self.new_model_btn = PushButton(text="New model")
        buttons = Container(widgets=[self.train_btn, self.stop_btn, self.new_model_btn], layout="horizontal",
                            labels=False)
        buttons.margins = (0, 0, 0, 0)
        self.form = Container(widgets=[model_row, budget_row, self.autosave, buttons], labels=False)
        self.form.margins = (0, 0, 0, 0)
        self.plot = LossPlot()  # custom painting: no magicgui widget for a live plot
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.form.native)
        lay.addWidget(self.plot)
        self._names: tuple[str, ...] = ()
        self.train_btn.changed.connect(lambda *_: self.train())
        self.stop_btn.changed.connect(lambda *_: session.stop())
        self.new_model_btn.changed.connect(lambda *_: self.new_model())
        annotate.image.changed.connect(self._on_image)
        session.event.connect(self._on_event)
        session.state_changed.connect(self._on_state)
        session.model_changed.connect(self._on_model)
        session.loaded.connect(lambda _: self.plot.clear())
        viewer.dims.events.current_step.connect(self._on_step)
        self.keep.changed.connect(lambda on: setattr(self.budget, "enabled", not on))
        self.autosave.changed.connect(self._on_autosave)
        self._watched: dict = {}  # annotation layer -> image name, while continuous training runs
        self._dirty: set = set()
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(EDIT_DEBOUNCE_MS)
        self._debounce.timeout.connect(self.hand_over_edits)
        self._on_state(session.state)

    def _on_image(self, img):
        # a 3D model needs a Z axis: offer it only for images that have one
        self.ndim.choices = ["2D", "3D"] if img is not None and len(L.spatial_shape(img)) >= 3 else ["2D"]

    def _on_model(self, model):
        if model is not None and f"{model.config.ndim}D" in self.ndim.choices:  # the form shows the model in use
            self.ndim.value = f"{model.config.ndim}D"

    def _on_step(self, *_):
        self.session.update_preview(self.viewer.dims.current_step)

    def _on_autosave(self, path):
        text = str(path).strip() if path is not None else ""
        self.session.autosave_dir = text if text not in ("", ".") else None

    def _on_state(self, state):
        for w in (self.train_btn, self.new_model_btn, self.ndim, self.device, self.keep, self.autosave):
            w.enabled = not state.busy
        self.stop_btn.enabled = state == State.TRAINING
        if state != State.TRAINING:
            self.unwatch()

    # ------------------------------------------------------------------ continuous training: edits
    def watch(self, pairs) -> None:
        for img, ann in pairs:
            self._watched[ann] = img.name
            ann.events.paint.connect(self._on_edit)
            ann.events.data.connect(self._on_edit)

    def unwatch(self) -> None:
        for ann in self._watched:
            ann.events.paint.disconnect(self._on_edit)
            ann.events.data.disconnect(self._on_edit)
        self._watched.clear()
        self._dirty.clear()
        self._debounce.stop()

    def _on_edit(self, event=None):
        layer = getattr(event, "source", None)
        self._dirty.update([layer] if layer in self._watched else self._watched)
        self._debounce.start()  # restarts: a stroke in progress is handed over once it pauses

    def hand_over_edits(self) -> int:
        """Copy the edited annotation layers for the running training; returns how many were handed over."""
        dirty, self._dirty = [a for a in self._dirty if a in self._watched], set()
        return sum(self.session.annotations_edited(self._watched[a], a.data) for a in dirty)

    def train(self):
        self.session.guard(self._train)

    def _train(self):
        pairs = self.annotate.pairs()
        names = self.session.start_training(
            self.annotate.train_inputs(pairs, int(self.ndim.value[0])), self.annotate.class_names(),
            ndim=int(self.ndim.value[0]),
            device=self.device.value, time_budget=self.budget.value, from_instances=self.annotate.instances.value,
            preview=self.preview.value, view_step=tuple(self.viewer.dims.current_step), continuous=self.keep.value,
            objects=self.annotate.objects.value)
        if names:
            self._names = names
            self.annotate.show_class_names(names, pairs)
            if self.keep.value:
                self.watch(pairs)

    def new_model(self):
        self.session.new_model()
        self.plot.clear()

    def _on_event(self, ev):
        if isinstance(ev, E.Started):
            if not ev.warm_start:
                self.plot.clear()
            self.plot.start_session()
        elif isinstance(ev, E.Progress):
            self.plot.add_loss(ev.step, ev.loss)
        elif isinstance(ev, E.Validation):
            self.plot.add_val(ev.step, ev.iou, ev.saturated,
                              f"{ev.metric} {ev.shown:.3f}" + (" (IoU saturated)" if ev.saturated else ""))
        elif isinstance(ev, E.Preview):
            name = self.session.preview_name
            if name in self.viewer.layers:
                L.write_probabilities(self.viewer, self.viewer.layers[name], ev.probabilities, self._names, key=ev.key)
