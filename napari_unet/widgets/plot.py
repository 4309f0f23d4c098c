"""A small live plot of training loss and validation IoU, painted with QPainter (no extra dependency)."""

from __future__ import annotations

from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

LOSS_COLOR = QColor("#ff9f43")
VAL_COLOR = QColor("#2ecc71")


class LossPlot(QWidget):
    """Training loss (orange, left scale from 0) and validation IoU (green, 0..1) against step."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.loss: list[tuple[int, float]] = []
        self.val: list[tuple[int, float]] = []
        self.setFixedHeight(120)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        self.setToolTip("orange: training loss; green: IoU on held-out annotations")

    def clear(self):
        self.loss, self.val = [], []
        self.update()

    def add_loss(self, step: int, loss: float):
        self.loss.append((step, loss))
        if len(self.loss) > 4000:  # keep painting cheap on long runs
            self.loss = self.loss[::2]
        self.update()

    def add_val(self, step: int, iou: float):
        self.val.append((step, iou))
        self.update()

    def paintEvent(self, event):  # noqa: N802 - Qt API
        p = QPainter(self)
        p.setRenderHint(QPainter.Antialiasing)
        w, h, m = self.width(), self.height(), 6
        p.fillRect(self.rect(), QColor("#262930"))
        p.setPen(QPen(QColor("#5a626c"), 1))
        p.drawRect(m, m, w - 2 * m, h - 2 * m - 12)
        steps = [s for s, _ in self.loss] + [s for s, _ in self.val]
        if steps:
            x_max = max(max(steps), 1)
            y_loss = max((v for _, v in self.loss), default=1.0) or 1.0
            self._line(p, self.loss, x_max, y_loss, LOSS_COLOR, m, w, h)
            self._line(p, self.val, x_max, 1.0, VAL_COLOR, m, w, h)
            p.setPen(QColor("#c0c6cc"))
            last = f"loss {self.loss[-1][1]:.3f}" if self.loss else ""
            if self.val:
                last += f"   val IoU {self.val[-1][1]:.3f}"
            p.drawText(m, h - 3, f"step {x_max}   {last}")
        else:
            p.setPen(QColor("#8a9096"))
            p.drawText(self.rect(), Qt.AlignCenter, "loss and validation appear here while training")
        p.end()

    @staticmethod
    def _line(p, pts, x_max, y_max, color, m, w, h):
        if not pts:
            return
        pw, ph = w - 2 * m, h - 2 * m - 12
        poly = QPolygonF([QPointF(m + pw * s / x_max, m + ph * (1 - min(v, y_max) / y_max)) for s, v in pts])
        p.setPen(QPen(color, 1.5))
        p.drawPolyline(poly)
