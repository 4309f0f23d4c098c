"""A combo box listing the viewer's layers of one type, kept in sync with the layer list."""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox


class LayerCombo(QComboBox):
    def __init__(self, viewer, layer_type, parent=None):
        super().__init__(parent)
        self.viewer = viewer
        self.layer_type = layer_type
        self.refresh()

    @property
    def value(self):
        """The selected layer, or None."""
        name = self.currentText()
        if name and name in self.viewer.layers and isinstance(self.viewer.layers[name], self.layer_type):
            return self.viewer.layers[name]
        return None

    @value.setter
    def value(self, layer):
        self.refresh()
        idx = self.findText(layer.name) if layer is not None else -1
        if idx >= 0:
            self.setCurrentIndex(idx)

    def refresh(self):
        current = self.currentText()
        names = [lay.name for lay in self.viewer.layers if isinstance(lay, self.layer_type)]
        if names == [self.itemText(i) for i in range(self.count())]:
            return
        self.blockSignals(True)
        self.clear()
        self.addItems(names)
        if current in names:
            self.setCurrentIndex(names.index(current))
        self.blockSignals(False)
        if current not in names:
            self.currentIndexChanged.emit(self.currentIndex())
