"""Long-session soak: N train/predict cycles in one process; resident memory growth and leaked threads.

    python benchmarks/soak.py [--cycles 20] [--seconds 2]            # API
    xvfb-run -a python benchmarks/soak.py --gui [--cycles 20]         # the widget in a real viewer

Growth is measured from the end of cycle 1 (after torch and napari warmed up) to the end of the
last cycle. Targets: RSS growth < 10 %, leaked threads 0.
"""

from __future__ import annotations

import argparse
import gc
import threading
import time


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def os_threads() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return -1


def api_cycle(state, seconds):
    from napari_unet import TrainConfig, predict, train_blocking
    from napari_unet.core.synthetic import demo_pair

    if "data" not in state:
        state["data"] = demo_pair(2, seed=0)
    image, ann, _ = state["data"]
    result = train_blocking(image, ann, init=state.get("model"), train_config=TrainConfig(time_budget=seconds))
    state["model"] = result.model
    predict(result.model, image)


def gui_cycle(state, seconds):
    from qtpy.QtWidgets import QApplication

    if "widget" not in state:
        from napari_unet.widgets.launch import open_demo_viewer

        state["viewer"], state["widget"] = open_demo_viewer(show=True)
    app, w = QApplication.instance(), state["widget"]
    w.budget_spin.setValue(int(seconds))
    w.train()
    t0 = time.perf_counter()
    while (w.worker is not None or w.state.value != "idle") and time.perf_counter() - t0 < 120:
        app.processEvents()
        time.sleep(0.005)
    w.predict()
    while (w.worker is not None or w.state.value != "idle") and time.perf_counter() - t0 < 240:
        app.processEvents()
        time.sleep(0.005)
    app.processEvents()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=2)
    ap.add_argument("--gui", action="store_true")
    args = ap.parse_args()
    cycle = gui_cycle if args.gui else api_cycle
    state: dict = {}
    py0, os0 = threading.active_count(), os_threads()
    rows = []
    for i in range(args.cycles):
        cycle(state, args.seconds)
        gc.collect()
        rows.append((i + 1, rss_mb(), threading.active_count(), os_threads()))
        if i == 0:
            py1, os1 = threading.active_count(), os_threads()
    print(f"mode: {'widget in napari' if args.gui else 'API'}; {args.cycles} cycles of {args.seconds:g} s "
          f"training + prediction")
    print("| cycle | RSS MiB | Python threads | OS threads |")
    print("|---|---|---|---|")
    for r in rows:
        if r[0] in (1, 2, 5, 10, 15) or r[0] == args.cycles:
            print(f"| {r[0]} | {r[1]:.0f} | {r[2]} | {r[3]} |")
    growth = (rows[-1][1] - rows[0][1]) / rows[0][1] * 100
    print(f"RSS growth cycle 1 -> {args.cycles}: {growth:+.1f} % (target < 10 %)")
    print(f"threads: Python {py0} at start, {py1} after cycle 1, {rows[-1][2]} at the end; "
          f"OS {os0} / {os1} / {rows[-1][3]}; leaked after cycle 1: {rows[-1][2] - py1} Python, "
          f"{rows[-1][3] - os1} OS (target 0)")
    if args.gui:
        state["viewer"].close()


if __name__ == "__main__":
    main()
