"""A small live plot of training loss and the validation score, painted with QPainter.

Hand-written rather than matplotlib/pyqtgraph: napari ships neither, and a plot of two lines with
axes and a legend is ~100 lines. Steps continue across warm starts (each session is offset by the
steps before it) and a dashed mark shows where each later session started.
"""

from __future__ import annotations

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QFontMetrics, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

LOSS_COLOR = QColor("#ff9f43")
VAL_COLOR = QColor("#2ecc71")
SATURATED_COLOR = QColor("#9aa0a6")
AXIS_COLOR = QColor("#5a626c")
TEXT_COLOR = QColor("#c0c6cc")
MAX_POINTS = 4000
HEIGHT = 115


def _fmt(v: float) -> str:
    return f"{v:.3g}" if v < 1000 else f"{v:.0f}"


class LossPlot(QWidget):
    """Training loss (orange, left axis) and the validation score (green, right axis 0..1) by step."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.loss: list[tuple[int, float]] = []
        self.val: list[tuple[int, float, bool]] = []  # (step, score, saturated)
        self.session_starts: list[int] = []
        self.val_text = ""
        self.offset = 0
        self.setMinimumHeight(HEIGHT)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip("orange: training loss (left axis); green: the score on held-out annotations (right "
                        "axis); grey: a saturated score (the held-out pixels are all right: not a measure of "
                        "quality); dashed: a training session continued from the previous weights")

    def sizeHint(self):  # noqa: N802 - Qt API
        hint = super().sizeHint()
        hint.setHeight(HEIGHT)
        return hint

    def clear(self):
        self.loss, self.val, self.session_starts, self.offset = [], [], [], 0
        self.update()

    def start_session(self):
        """A training session starts: its steps continue after the last point plotted."""
        last = max([s for s, _ in self.loss] + [s for s, *_ in self.val], default=0)
        self.offset = last
        if last:
            self.session_starts.append(last)
        self.update()

    def add_loss(self, step: int, loss: float):
        self.loss.append((self.offset + step, loss))
        if len(self.loss) > MAX_POINTS:  # keep painting cheap on long runs
            self.loss = self.loss[::2]
        self.update()

    def add_val(self, step: int, iou: float, saturated: bool = False, text: str | None = None):
        """A held-out IoU point (hollow grey when saturated); ``text`` is the legend's phrase for it."""
        self.val.append((self.offset + step, iou, saturated))
        self.val_text = text or f"held-out IoU {iou:.3f}" + (" (saturated)" if saturated else "")
        self.update()

    # ------------------------------------------------------------------ painting
    def paintEvent(self, event):  # noqa: N802 - Qt API
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.fillRect(self.rect(), QColor("#262930"))
        fm = QFontMetrics(p.font())
        th = fm.height()
        legend = self._legend(p, fm, 4)
        steps = [s for s, _ in self.loss] + [s for s, *_ in self.val]
        y_max = max((v for _, v in self.loss), default=1.0) or 1.0
        left = fm.horizontalAdvance(_fmt(y_max)) + 8
        right = fm.horizontalAdvance("1.0") + 8
        area = QRectF(left, legend + 6, self.width() - left - right, self.height() - legend - th - 12)
        p.setPen(QPen(AXIS_COLOR, 1))
        p.drawRect(area)
        p.setPen(TEXT_COLOR)
        self._text(p, fm, QPointF(area.left() - 4, area.top()), _fmt(y_max), Qt.AlignmentFlag.AlignRight)
        self._text(p, fm, QPointF(area.left() - 4, area.bottom() - th), "0", Qt.AlignmentFlag.AlignRight)
        self._text(p, fm, QPointF(area.right() + 4, area.top()), "1.0", Qt.AlignmentFlag.AlignLeft)
        self._text(p, fm, QPointF(area.right() + 4, area.bottom() - th), "0", Qt.AlignmentFlag.AlignLeft)
        if not steps:
            p.drawText(area, Qt.AlignmentFlag.AlignCenter, "appears while training")
            p.end()
            return
        x_max = max(max(steps), 1)
        self._text(p, fm, QPointF(area.left(), area.bottom() + 2), "step 0", Qt.AlignmentFlag.AlignLeft)
        self._text(p, fm, QPointF(area.right(), area.bottom() + 2), str(x_max), Qt.AlignmentFlag.AlignRight)
        p.setPen(QPen(SATURATED_COLOR, 1, Qt.PenStyle.DashLine))
        for s in self.session_starts:
            x = area.left() + area.width() * s / x_max
            p.drawLine(QPointF(x, area.top()), QPointF(x, area.bottom()))

        def xy(s, v, top):
            return QPointF(area.left() + area.width() * s / x_max, area.top() + area.height() * (1 - min(v, top) / top))

        if self.loss:
            p.setPen(QPen(LOSS_COLOR, 1.5))
            p.drawPolyline(QPolygonF([xy(s, v, y_max) for s, v in self.loss]))
        if self.val:
            p.setPen(QPen(VAL_COLOR, 1.5))
            p.drawPolyline(QPolygonF([xy(s, max(v, 0.0), 1.0) for s, v, _ in self.val]))
            for s, v, sat in self.val:
                p.setPen(QPen(SATURATED_COLOR if sat else VAL_COLOR, 1.5))
                p.setBrush(Qt.BrushStyle.NoBrush if sat else VAL_COLOR)
                p.drawEllipse(xy(s, max(v, 0.0), 1.0), 2.5, 2.5)
        p.end()

    def _legend(self, p, fm, y) -> int:
        """The legend on its own row above the plot, so it is never cut; returns its height."""
        items = [(LOSS_COLOR, "loss")]
        if self.val:
            items.append((SATURATED_COLOR if self.val[-1][2] else VAL_COLOR, self.val_text))
        elif self.loss:
            items[0] = (LOSS_COLOR, f"loss {self.loss[-1][1]:.3f}")
        x = 6
        for color, text in items:
            needed = 16 + fm.horizontalAdvance(text)
            if x > 6 and x + needed > self.width():  # wrap rather than cut
                x, y = 6, y + fm.height()
            p.setPen(QPen(color, 3))
            p.drawLine(QPointF(x, y + fm.height() / 2), QPointF(x + 12, y + fm.height() / 2))
            p.setPen(TEXT_COLOR)
            p.drawText(QPointF(x + 16, y + fm.ascent()), text)
            x += needed + 12
        return fm.height() + y

    @staticmethod
    def _text(p, fm, at: QPointF, text: str, align) -> None:
        w = fm.horizontalAdvance(text)
        x = at.x() - w if align == Qt.AlignmentFlag.AlignRight else at.x()
        p.drawText(QPointF(x, at.y() + fm.ascent()), text)
