"""Training steps in a fixed time with 1 vs N torch threads (issue 8: pick the CPU default by measurement).

    python benchmarks/threads.py [--seconds 15] [--repeats 5] [--threads 1,2,auto] [--case 2d-strokes]
    python benchmarks/threads.py --threads 1,2,auto --busy-after 4     # a neighbour takes a core after 4 s

``auto`` is the product default (no ``--threads``: the idle cores, lowered when steps slow down;
core/threads.py). ``--busy-after S`` starts a process that keeps one core busy S seconds into
each run (another program starting while training runs), and stops it when the run ends.

Each run is its own process (a fresh torch thread pool, as the CLI gets) training the product
defaults on a benchmark case for ``--seconds``; thread counts are interleaved (1, 2, 1, 2, ...) so
that a neighbour's load hits both alike. Prints the steps of every run and, per thread count,
the median, min and max. Run it on a quiet machine: on a shared one the spread is the finding.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

CHILD = r"""
import json, sys
sys.path.insert(0, {bench!r})
from common import make_case
from napari_unet.config import ModelConfig, TrainConfig, default_presets
from napari_unet.core.training import train_blocking
case = make_case({case!r}, 0)
arch = default_presets(case.ndim, "cpu")[0]
r = train_blocking(case.image, case.annotations, model_config=ModelConfig(ndim=case.ndim, **arch),
                   channel_axis=case.channel_axis,
                   train_config=TrainConfig(time_budget={seconds}, threads={threads}, device="cpu", seed=0),
                   on_event=lambda e: print("notice:", e.message, file=sys.stderr) if type(e).__name__ == "Notice" else None)
print(json.dumps({{"steps": r.steps, "seconds": r.seconds}}))
"""


BUSY = "import time; time.sleep({after}); exec('while True: pass')"


def run_once(case: str, seconds: float, threads: int | None, busy_after: float | None = None) -> dict:
    bench = os.path.dirname(os.path.abspath(__file__))
    code = CHILD.format(bench=bench, case=case, seconds=seconds, threads=threads)
    busy = None if busy_after is None else subprocess.Popen([sys.executable, "-c", BUSY.format(after=busy_after)])
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    notes = [ln for ln in out.stderr.splitlines() if ln.startswith("notice:") and "thread" in ln]
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "notes": notes}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", default=f"1,{os.cpu_count()},auto", help="comma separated counts; auto: the default")
    ap.add_argument("--busy-after", type=float, default=None, help="a neighbour keeps a core busy from then on")
    ap.add_argument("--case", default="2d-strokes", help="a case of benchmarks/common.py (3d-dense for 3D)")
    args = ap.parse_args(argv)
    counts = [None if t == "auto" else int(t) for t in args.threads.split(",")]
    print(f"{args.case}: steps in {args.seconds:g} s of training, threads {[t or 'auto' for t in counts]}, {args.repeats} repeats, "
          f"{os.cpu_count()} CPUs; load average before: {os.getloadavg()[0]:.2f}"
          + ("" if args.busy_after is None else f"; a neighbour busy from {args.busy_after:g} s"), flush=True)
    steps = {t: [] for t in counts}
    for rep in range(args.repeats):
        for t in counts:
            r = run_once(args.case, args.seconds, t, args.busy_after)
            steps[t].append(r["steps"])
            print(f"  repeat {rep + 1} threads {t or 'auto'}: {r['steps']} steps"
                  + "".join(f" ({n})" for n in r["notes"]), flush=True)
    print("| threads | median steps | min | max | runs |")
    print("|---|---|---|---|---|")
    for t in counts:
        s = np.asarray(steps[t])
        print(f"| {t or 'auto'} | {np.median(s):.0f} | {s.min()} | {s.max()} | {', '.join(map(str, s))} |")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
