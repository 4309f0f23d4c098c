"""Training steps in a fixed time with 1 vs N torch threads (issue 8: pick the CPU default by measurement).

    python benchmarks/threads.py [--seconds 15] [--repeats 5] [--threads 1,2] [--ndim 2] [--case 2d-strokes]

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
                   train_config=TrainConfig(time_budget={seconds}, threads={threads}, device="cpu", seed=0))
print(json.dumps({{"steps": r.steps, "seconds": r.seconds}}))
"""


def run_once(case: str, seconds: float, threads: int) -> dict:
    bench = os.path.dirname(os.path.abspath(__file__))
    code = CHILD.format(bench=bench, case=case, seconds=seconds, threads=threads)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", default=f"1,{os.cpu_count()}")
    ap.add_argument("--case", default="2d-strokes", help="a case of benchmarks/common.py (3d-dense for 3D)")
    args = ap.parse_args(argv)
    counts = [int(t) for t in args.threads.split(",")]
    print(f"{args.case}: steps in {args.seconds:g} s of training, threads {counts}, {args.repeats} repeats, "
          f"{os.cpu_count()} CPUs; load average before: {os.getloadavg()[0]:.2f}", flush=True)
    steps = {t: [] for t in counts}
    for rep in range(args.repeats):
        for t in counts:
            r = run_once(args.case, args.seconds, t)
            steps[t].append(r["steps"])
            print(f"  repeat {rep + 1} threads {t}: {r['steps']} steps", flush=True)
    print("| threads | median steps | min | max | runs |")
    print("|---|---|---|---|---|")
    for t in counts:
        s = np.asarray(steps[t])
        print(f"| {t} | {np.median(s):.0f} | {s.min()} | {s.max()} | {', '.join(map(str, s))} |")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
