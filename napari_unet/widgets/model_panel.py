"""4. Model: save and load model folders, and what the model in use is."""

from __future__ import annotations

from magicgui.widgets import Container, PushButton
from napari.utils.notifications import show_info
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFileDialog, QLabel, QMessageBox, QVBoxLayout, QWidget

from ..core.checkpoint import is_model_folder
from ..errors import UserError


def ask_replace(parent, folder) -> bool:
    """Ask before a saved model replaces another one (the default answer keeps it)."""
    answer = QMessageBox.question(parent, "Replace model?", f"'{folder}' already holds a napari-unet model. "
                                  "Replace it with the current model?",
                                  QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                  QMessageBox.StandardButton.No)
    return answer == QMessageBox.StandardButton.Yes


class ModelPanel(QWidget):
    def __init__(self, session, device):
        super().__init__()
        self.session, self.device = session, device  # device(): the device chosen in the train panel
        self.ask_replace = ask_replace  # tests replace the question with an answer
        self.save_btn = PushButton(text="Save model...")
        self.load_btn = PushButton(text="Load model...")
        self.export_btn = PushButton(text="Export...")
        self.export_btn.tooltip = "Write a bioimage.io model package (.zip) for other tools (deepImageJ, ilastik...)"
        self.report_btn = PushButton(text="Report...")
        self.report_btn.tooltip = "Write an HTML report of the model: settings, training curve, rounds of correction"
        row = Container(widgets=[self.save_btn, self.load_btn, self.export_btn, self.report_btn], layout="horizontal",
                        labels=False)
        row.margins = (0, 0, 0, 0)
        self.info = QLabel()  # a QLabel: wraps and lets the user select the text
        self.info.setWordWrap(True)
        self.info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(row.native)
        lay.addWidget(self.info)
        self.save_btn.changed.connect(lambda *_: self._dialog(self.save_model, "Save model to folder"))
        self.load_btn.changed.connect(lambda *_: self._dialog(self.load_model, "Load model folder"))
        self.export_btn.changed.connect(lambda *_: self._file_dialog(self.export_model, "Export bioimage.io package",
                                                                     "model.zip", "bioimage.io package (*.zip)"))
        self.report_btn.changed.connect(lambda *_: self._file_dialog(self.write_report, "Write model report",
                                                                     "report.html", "HTML (*.html)"))
        session.model_changed.connect(self._on_model)
        session.state_changed.connect(self._on_state)
        self._on_model(session.model)
        self._on_state(session.state)

    def _on_model(self, _model):
        self.info.setText(self.session.model_info)

    def _on_state(self, state):
        self.load_btn.enabled = not state.busy
        self.save_btn.enabled = self.export_btn.enabled = self.report_btn.enabled = \
            not state.busy and self.session.model is not None

    def _file_dialog(self, action, title, default, filters):
        path, _ = QFileDialog.getSaveFileName(self, title, default, filters)
        if path:
            action(path)

    def _need_model(self):
        if self.session.model is None:
            raise UserError("There is no model yet: train one or load a model folder first.")
        return self.session.model

    def export_model(self, path):
        """Write a bioimage.io package; returns its path (None on failure, shown as an error)."""
        def run():
            from ..core.export import export_model  # imported on use: the bioimage.io spec loads slowly
            return export_model(self._need_model(), path)

        out = self.session.guard(run)
        if out is not None:
            show_info(f"Exported the model to {out}")
        return out

    def write_report(self, path):
        """Write the HTML report with this session's rounds of correction; returns its path."""
        def run():
            from ..core.report import write_report
            return write_report(self._need_model(), path, rounds=list(self.session.rounds))

        out = self.session.guard(run)
        if out is not None:
            show_info(f"Report written to {out}")
            self.info.setText(f"{self.session.model_info}\nreport: {out}")
        return out

    def _dialog(self, action, title):
        folder = QFileDialog.getExistingDirectory(self, title)
        if folder:
            action(folder)

    def save_model(self, folder) -> bool:
        """Save to ``folder``; a model already there is replaced only when the user agrees."""
        replace = is_model_folder(folder)
        if replace and not self.ask_replace(self, folder):
            return False
        if self.session.guard(self.session.save, folder, overwrite=replace) is None:
            return False
        show_info(f"Model saved to {folder}")
        return True

    def load_model(self, folder) -> bool:
        if self.session.guard(self.session.load, folder, self.device()) is None:
            return False
        show_info(f"Loaded model from {folder}")
        return True
