"""The dock widget: assembles the panels around one Session, in a scroll area of collapsible sections.

Threads: see ``session.py`` (workers read copies made on the main thread and never touch a layer
or a widget). Closing the dock or the viewer stops the workers and drops what they still send.
"""

from __future__ import annotations

from qtpy.QtCore import QEvent, Qt
from qtpy.QtWidgets import QFrame, QLayout, QScrollArea, QVBoxLayout, QWidget
from superqt import QCollapsible

from .annotate_panel import AnnotatePanel
from .model_panel import ModelPanel
from .review_panel import ReviewPanel
from .session import Session, State  # noqa: F401 - State re-exported for tests and scripts
from .status_panel import StatusPanel
from .train_panel import TrainPanel
from .where_panel import WherePanel
from .workers import run_in_thread


OBJECTS_TABLE_HEIGHT = 180  # px: a few rows, the dock still fits a 768 px screen


def _section(title: str, panel: QWidget, expanded: bool = True) -> QCollapsible:
    box = QCollapsible(title)
    box.setDuration(0)  # no animation: instant, and no timers left running in tests
    box.addWidget(panel)
    box.layout().setContentsMargins(0, 0, 0, 0)
    if expanded:
        box.expand(animate=False)
    else:
        box.collapse(animate=False)
    return box


class UNetWidget(QWidget):
    """Annotate, train in the background, review, correct, retrain, save."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.session = Session(runner=run_in_thread)
        self.annotate = AnnotatePanel(napari_viewer, self.session)
        self.training = TrainPanel(napari_viewer, self.session, self.annotate)
        self.review = ReviewPanel(napari_viewer, self.session, self.annotate)
        self.model_panel = ModelPanel(self.session, device=lambda: self.training.device.value)
        self.status = StatusPanel(self.session)
        self.where = WherePanel(napari_viewer, self.session, self.annotate)
        self.sections = {
            "annotate": _section("1. Annotate", self.annotate),
            "train": _section("2. Train", self.training),
            "review": _section("3. Review and correct", self.review),
            "model": _section("4. Model", self.model_panel),
            "where": _section("5. Where to annotate next", self.where, expanded=False),
            "objects": _section("Objects", self.review.table, expanded=False),  # filled in objects mode
        }
        self.review.table.table.setMinimumHeight(OBJECTS_TABLE_HEIGHT)
        self.review.table.table.setMaximumHeight(OBJECTS_TABLE_HEIGHT)
        self.review.objects_shown.connect(lambda _: self.sections["objects"].expand(animate=False))
        body = QWidget()
        inner = QVBoxLayout(body)
        inner.setContentsMargins(4, 0, 4, 0)
        inner.setSpacing(2)
        for box in self.sections.values():
            inner.addWidget(box)
        inner.addStretch(1)
        scroll = QScrollArea()  # on a small screen the sections scroll; the status line stays in view
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)  # fit the width, never cut
        scroll.setWidget(body)
        for layout in body.findChildren(QLayout):  # compact rows: the four sections fit a 768 px screen
            layout.setSpacing(min(layout.spacing(), 3))
        self._scroll = scroll
        self._fit_width()
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(scroll, 1)
        lay.addWidget(self.status)
        self._docked = False
        self._layer_events = (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed,
                              napari_viewer.layers.events.moved)
        for ev in self._layer_events:
            ev.connect(self.reset_choices)
        self.destroyed.connect(self.session.shutdown)  # the viewer closed (no reference to this widget)
        self.reset_choices()

    # the state tests and scripts look at
    @property
    def state(self) -> State:
        return self.session.state

    @property
    def worker(self):
        return self.session.worker

    @property
    def model(self):
        return self.session.model

    def reset_choices(self, *_):
        """napari calls this when layers change; the layer pickers follow."""
        self.annotate.reset_choices()

    def _fit_width(self) -> None:
        """As wide as the sections need (the dock follows), so nothing is cut on the right. Again once
        shown: napari's style sheet, applied when docked, makes the rows wider than at construction."""
        body, bar = self._scroll.widget(), self._scroll.verticalScrollBar()
        self.setMinimumWidth(body.minimumSizeHint().width() + bar.sizeHint().width() + 2)

    def event(self, ev):  # noqa: D401 - Qt API
        if ev.type() == QEvent.Type.Show:
            self._fit_width()
        # napari's close button takes the widget out of its dock (setParent(None)) without deleting it
        if ev.type() == QEvent.Type.ParentChange:
            if self.parent() is not None:
                self._docked = True
            elif self._docked:
                self.close_session()
        return super().event(ev)

    def close_session(self) -> None:
        """The dock was closed: stop the workers, write no more layers, stop listening to the viewer."""
        self.session.shutdown()
        for ev in self._layer_events:
            ev.disconnect(self.reset_choices)
        self.viewer.dims.events.current_step.disconnect(self.training._on_step)
