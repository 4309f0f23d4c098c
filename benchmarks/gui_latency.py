"""napari event-loop latency while the widget trains with the default CPU preset.

    xvfb-run -a python benchmarks/gui_latency.py [--seconds 30] [--continuous 30]

A 10 ms QTimer runs on the GUI thread; its lateness (actual interval - 10 ms) is what a user feels
as lag while painting. Prints p50/p99/max lateness idle and during training, and the seconds from
pressing Train to the first live preview in the probability layer.
``--continuous S`` adds a phase of S seconds of "keep training" with the uncertainty layer and
lists on, while a scripted brush paints: a dab every 30 ms for 1.5 s (a stroke, as a mouse drag
sends them), then a 1.5 s pause, over and over. It also reports the seconds from the end of a
stroke to the training using it (AnnotationsChanged) and to the next live preview after that.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication

INTERVAL_MS = 10


def ticks_during(app, seconds, busy=lambda: True):
    stamps = []
    timer = QTimer()
    timer.setInterval(INTERVAL_MS)
    timer.timeout.connect(lambda: stamps.append(time.perf_counter()))
    timer.start()
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds and busy():
        app.processEvents()
        time.sleep(0.001)
    timer.stop()
    late = (np.diff(stamps) * 1000 - INTERVAL_MS).clip(min=0)
    return late


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--continuous", type=float, default=0, help="seconds of keep-training while painting (0: skip)")
    args = ap.parse_args()
    from napari_unet.widgets.launch import open_demo_viewer

    viewer, widget = open_demo_viewer(show=True)
    widget.training.autosave.value = tempfile.mkdtemp(prefix="gui-latency-")  # not the user's autosave folder
    app = QApplication.instance()
    idle = ticks_during(app, 3)
    from napari_unet.core.events import Preview, Started

    seen = {}
    widget.session.event.connect(lambda ev: seen.setdefault(type(ev).__name__, (time.perf_counter(), ev)))
    widget.training.budget.value = int(args.seconds)
    t0 = time.perf_counter()
    widget.training.train()
    busy = ticks_during(app, args.seconds + 30, busy=lambda: widget.worker is not None)
    device = seen[Started.__name__][1].device if Started.__name__ in seen else "?"
    first = seen[Preview.__name__][0] - t0 if Preview.__name__ in seen else float("nan")
    print(f"device: {device}; first live preview {first:.2f} s after Train")
    print("| phase | ticks | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|")
    phases = [("idle", idle), ("training", busy)]
    if args.continuous:
        phases.append(("continuous + painting", continuous_phase(app, viewer, widget, args.continuous)))
    for name, late in phases:
        print(f"| {name} | {len(late)} | {np.percentile(late, 50):.1f} | {np.percentile(late, 99):.1f} | "
              f"{late.max():.1f} |")
    viewer.close()


def continuous_phase(app, viewer, widget, seconds):
    """Keep training while a scripted brush paints background strokes; lateness and edit-to-use delays."""
    from napari_unet.core.events import AnnotationsChanged, Preview

    ann = widget.annotate.labels.value
    shape = ann.data.shape
    rng = np.random.default_rng(0)
    marks = {"stroke_end": [], "used": [], "preview": []}
    state = {"dabs": 0, "pos": None, "dir": None, "painting": True, "t": time.perf_counter()}

    def on_event(ev):
        now = time.perf_counter()
        if isinstance(ev, AnnotationsChanged):
            marks["used"].append(now)
        elif isinstance(ev, Preview) and len(marks["preview"]) < len(marks["used"]):
            marks["preview"].append(now)
    widget.session.event.connect(on_event)

    def dab():
        now = time.perf_counter()
        if state["painting"] and now - state["t"] > 1.5:
            state.update(painting=False, t=now)
            marks["stroke_end"].append(now)
        elif not state["painting"] and now - state["t"] > 1.5:
            state.update(painting=True, t=now, pos=None)
        if not state["painting"]:
            return
        if state["pos"] is None:
            state["pos"] = np.array([rng.uniform(10, n - 10) for n in shape[-2:]])
            d = rng.normal(0, 1, 2)
            state["dir"] = d / np.linalg.norm(d)
        state["pos"] = np.clip(state["pos"] + 2 * state["dir"], 0, np.array(shape[-2:]) - 1)
        ann.brush_size = 3
        ann.paint(tuple(int(v) for v in state["pos"]), 1, refresh=True)  # background: plausible anywhere
        state["dabs"] += 1

    widget.where.enabled.value = True
    widget.training.keep.value = True
    widget.training.train()
    brush = QTimer()
    brush.setInterval(30)
    brush.timeout.connect(dab)
    brush.start()
    late = ticks_during(app, seconds)
    brush.stop()
    widget.session.stop()
    ticks_during(app, 60, busy=lambda: widget.worker is not None)
    ends = marks["stroke_end"]
    to_use = [min((u - e for u in marks["used"] if u > e), default=np.nan) for e in ends]
    to_prev = [min((p - e for p in marks["preview"] if p > e), default=np.nan) for e in ends]
    print(f"continuous: {state['dabs']} dabs in {len(ends)} strokes; stroke end -> training uses it: median "
          f"{np.nanmedian(to_use):.2f} s; -> next live preview: median {np.nanmedian(to_prev):.2f} s")
    return late


if __name__ == "__main__":
    main()
