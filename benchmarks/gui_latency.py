"""napari event-loop latency while the widget trains with the default CPU preset.

    xvfb-run -a python benchmarks/gui_latency.py [--seconds 30]

A 10 ms QTimer runs on the GUI thread; its lateness (actual interval - 10 ms) is what a user feels
as lag while painting. Prints p50/p99/max lateness idle and during training, and the seconds from
pressing Train to the first live preview in the probability layer.
"""

from __future__ import annotations

import argparse
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
    args = ap.parse_args()
    from napari_unet.widgets.launch import open_demo_viewer

    viewer, widget = open_demo_viewer(show=True)
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
    for name, late in (("idle", idle), ("training", busy)):
        print(f"| {name} | {len(late)} | {np.percentile(late, 50):.1f} | {np.percentile(late, 99):.1f} | "
              f"{late.max():.1f} |")
    viewer.close()


if __name__ == "__main__":
    main()
