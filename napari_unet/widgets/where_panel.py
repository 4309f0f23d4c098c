"""5. Where next: the "<image> uncertainty" layer, regions ranked by uncertainty, suspect strokes.

Refreshed with every live preview and prediction of the image being trained or predicted (when
the uncertainty checkbox is on; off, nothing is computed). Each list entry is a click that moves
the view there (the plane of a stack, and the camera centre). The maps come from core/uncertainty.py.
"""

from __future__ import annotations

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container
from qtpy.QtWidgets import QLabel, QListWidget, QListWidgetItem, QVBoxLayout, QWidget

from ..core import events as E
from ..core.uncertainty import KINDS, rank_regions, suspect_strokes, uncertainty_map
from . import layers as L

TOP = 8  # entries per list
TILE = 64  # pixels per side of a ranked tile


def uncertainty_name(image_name: str) -> str:
    return f"{image_name} uncertainty"


class WherePanel(QWidget):
    def __init__(self, viewer, session, annotate):
        super().__init__()
        self.viewer, self.session, self.annotate = viewer, session, annotate
        self.enabled = CheckBox(value=False, text="uncertainty layer and lists")
        self.enabled.tooltip = "Show where the model is least sure, and painted strokes it contradicts"
        self.kind = ComboBox(choices=list(KINDS), value=KINDS[0], label="measure")
        self.kind.tooltip = "entropy of the class probabilities, or 1 - margin between the two likeliest classes"
        form = Container(widgets=[self.enabled, self.kind], layout="horizontal", labels=False)
        form.margins = (0, 0, 0, 0)
        self.regions = QListWidget()
        self.suspects = QListWidget()
        for w in (self.regions, self.suspects):
            w.setMaximumHeight(110)
            w.itemClicked.connect(self._go)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(form.native)
        lay.addWidget(QLabel("Least sure (click to go there):"))
        lay.addWidget(self.regions)
        lay.addWidget(QLabel("Suspect strokes (painted, confidently contradicted):"))
        lay.addWidget(self.suspects)
        self._name = None
        session.event.connect(self._on_event)
        session.predicted.connect(self._on_predicted)

    def _on_event(self, ev):
        if isinstance(ev, E.Preview) and self.session.preview_name:
            self.update(self.session.preview_name, ev.probabilities, ev.key)

    def _on_predicted(self, name, probs, _labels):
        self.update(name, probs, None)

    def update(self, name: str, probs: np.ndarray, key=None) -> None:
        """Refresh the layer and the lists for image ``name`` (``key``: the plane of a stack, or None)."""
        if not self.enabled.value or name not in self.viewer.layers or not isinstance(probs, np.ndarray):
            return  # outputs on disk (too big for memory, widgets/big.py): no uncertainty map
        image, self._name = self.viewer.layers[name], name
        key = tuple(key) if key else ()
        u = uncertainty_map(probs, self.kind.value)
        L.write_plane(self.viewer, image, uncertainty_name(name), u, key, colormap=L.probability_colormap("cividis"),
                      opacity=0.6, blending="translucent", contrast_limits=(0.0, 1.0))  # sure pixels: see-through
        ann = L.find_annotations(self.viewer, image)
        painted = None
        if ann is not None and tuple(ann.data.shape) == L.spatial_shape(image):
            painted = np.asarray(ann.data[key]) if key else np.asarray(ann.data)
        self.regions.clear()
        for r in rank_regions(u, tile=TILE, top=TOP, annotated=painted):
            self._add(self.regions, key, r.centre, r.describe())
        self.suspects.clear()
        if painted is not None and painted.shape == u.shape:
            model = self.session.model
            plane_ndim = model.config.ndim if model is not None else 2  # 2D models: strokes plane by plane
            for s in suspect_strokes(probs, painted, top=TOP, plane_ndim=min(plane_ndim, painted.ndim)):
                self._add(self.suspects, key, s.centre, s.describe())

    @staticmethod
    def _add(widget, key, centre, text):
        item = QListWidgetItem(text)
        item.setData(256, tuple(float(k) for k in key) + tuple(centre))  # Qt.UserRole: full data coordinates
        widget.addItem(item)

    def _go(self, item) -> None:
        """Move the view to the entry: its plane in the stack, and the camera centre on it."""
        pos = np.asarray(item.data(256), float)
        image = self.viewer.layers[self._name] if self._name in self.viewer.layers else None
        if image is not None:
            pos = np.asarray(image.data_to_world(pos), float)
        n = self.viewer.dims.ndim
        for i, v in enumerate(pos[:-2]):  # the plane of a stack
            axis = n - len(pos) + i
            if axis >= 0:
                self.viewer.dims.set_point(axis, v)
        self.viewer.camera.center = tuple(pos[-2:])
