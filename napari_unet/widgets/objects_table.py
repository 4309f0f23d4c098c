"""A table of the objects' measurements: sortable, a click centres the viewer on the object,
"Save CSV...", the count shown above it.

Self-contained: ``ObjectsTable(viewer)``, then ``set_layer(objects_layer)`` whenever the
``"<image> objects"`` layer is written; the rows come from the layer's ``features``
(see ``objects_layer.write_objects``), so hover and table always agree.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (QFileDialog, QHBoxLayout, QLabel, QPushButton, QTableWidget, QTableWidgetItem,
                            QVBoxLayout, QWidget)

from ..core.objects import write_csv
from ..errors import UserError

ID_ROLE = Qt.UserRole + 1


class _NumberItem(QTableWidgetItem):
    """Sorts by number, not by text."""

    def __lt__(self, other):
        a, b = self.data(Qt.UserRole), other.data(Qt.UserRole)
        if a is None or b is None:
            return super().__lt__(other)
        return a < b


class ObjectsTable(QWidget):
    def __init__(self, viewer, parent=None):
        super().__init__(parent)
        self.viewer = viewer
        self.layer = None
        self.columns: dict[str, np.ndarray] = {}
        self.count_label = QLabel("no objects")
        self.save_button = QPushButton("Save CSV...")
        self.save_button.setEnabled(False)
        self.save_button.clicked.connect(lambda: self.save_csv())
        self.table = QTableWidget(0, 0)
        self.table.setSortingEnabled(True)
        self.table.setEditTriggers(QTableWidget.NoEditTriggers)
        self.table.setSelectionBehavior(QTableWidget.SelectRows)
        self.table.cellClicked.connect(self._on_click)
        top = QHBoxLayout()
        top.addWidget(self.count_label)
        top.addStretch(1)
        top.addWidget(self.save_button)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(top)
        lay.addWidget(self.table)

    # ------------------------------------------------------------------ content
    def set_layer(self, layer) -> None:
        """Show the objects of ``layer`` (a Labels layer whose features hold the measurements)."""
        self.layer = layer
        feats = layer.features
        cols = {("label" if k == "index" else k): np.asarray(feats[k]) for k in feats.columns}
        if "label" in cols:
            cols = {"label": cols.pop("label"), **cols}
        self.set_columns(cols)

    def set_columns(self, columns: dict) -> None:
        self.columns = {k: np.asarray(v) for k, v in columns.items()}
        names = list(self.columns)
        n = len(next(iter(self.columns.values()))) if names else 0
        self.table.setSortingEnabled(False)  # filling a sorted table scrambles rows
        self.table.clear()
        self.table.setColumnCount(len(names))
        self.table.setRowCount(n)
        self.table.setHorizontalHeaderLabels(names)
        for c, name in enumerate(names):
            values = self.columns[name]
            for r in range(n):
                v = values[r].item() if hasattr(values[r], "item") else values[r]
                item = _NumberItem(f"{v:.4g}" if isinstance(v, float) else str(v))
                item.setData(Qt.UserRole, v if isinstance(v, (int, float)) else None)
                if "label" in self.columns:
                    item.setData(ID_ROLE, int(self.columns["label"][r]))
                item.setData(ID_ROLE + 1, r)
                self.table.setItem(r, c, item)
        self.table.setSortingEnabled(True)
        self.count_label.setText(f"{n} object{'s' if n != 1 else ''}")
        self.save_button.setEnabled(n > 0)

    def row_index(self, table_row: int) -> int:
        """The measurement row shown in ``table_row`` (rows move when the table is sorted)."""
        return int(self.table.item(table_row, 0).data(ID_ROLE + 1))

    # ------------------------------------------------------------------ actions
    def _on_click(self, table_row: int, _col: int) -> None:
        self.centre_on(self.row_index(table_row))

    def centre_on(self, row: int) -> None:
        """Centre the view on the object of measurement row ``row`` (and step to its plane)."""
        if self.layer is None:
            return
        nd = self.layer.ndim
        axes = "tzyx"[-nd:]
        try:
            centroid = [float(self.columns[f"centroid_{a}"][row]) for a in axes]
        except KeyError:
            return
        world = np.asarray(self.layer.data_to_world(centroid), float)
        dims = self.viewer.dims
        offset = dims.ndim - len(world)
        for ax in range(dims.ndim):
            if ax not in dims.displayed and ax >= offset:
                dims.set_point(ax, world[ax - offset])
        shown = [world[ax - offset] for ax in dims.displayed if ax >= offset]
        if len(shown) == len(dims.displayed):
            self.viewer.camera.center = tuple(shown)
        label = self.columns.get("label")
        if label is not None:
            self.layer.selected_label = int(label[row])

    def save_csv(self, path=None) -> Path | None:
        """Write the table as CSV (asks for a file name when ``path`` is None)."""
        if not self.columns:
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Save objects as CSV", "objects.csv", "CSV (*.csv)")
            if not path:
                return None
        path = Path(path)
        if path.suffix.lower() != ".csv":
            path = path.with_suffix(".csv")
        try:
            return write_csv(path, self.columns)
        except UserError as e:  # full disk, no permission: a notification, never a crash
            from napari.utils.notifications import show_error

            show_error(str(e))
            return None
