"""Per-step time cost of each unannotated-pixel loss term (TrainConfig regularizer / consistency /
pseudo_labels), measured on the 2D strokes case with the CPU defaults.

    python benchmarks/unlabelled_cost.py [--steps 40] [--repeats 3] [--threads 1]

Configurations are interleaved (base, regulariser, consistency, pseudo-labels, all; repeat) so a
neighbour's load hits all alike; each row gives the median seconds per step and the ratio to the
plain cross-entropy. Validation is off; the terms are on from the first step (no ramp-up).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import make_case  # noqa: E402

from napari_unet.config import ModelConfig, TrainConfig, default_presets  # noqa: E402
from napari_unet.core.training import Progress, train  # noqa: E402

CONFIGS = {
    "plain cross-entropy": {},
    "+ regulariser (Potts/CRF)": dict(regularizer=1.0),
    "+ consistency (mean teacher)": dict(consistency=1.0),
    "+ pseudo-labels": dict(pseudo_labels=1.0),
    "+ all three": dict(regularizer=1.0, consistency=1.0, pseudo_labels=1.0),
}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--case", default="2d-strokes")
    args = ap.parse_args(argv)
    case = make_case(args.case, 0)
    arch = default_presets(case.ndim, "cpu")[0]
    per = {k: [] for k in CONFIGS}
    for _ in range(args.repeats):
        for name, over in CONFIGS.items():
            stamps = []
            tc = TrainConfig(steps=args.steps, time_budget=None, device="cpu", val_fraction=0, threads=args.threads,
                             unlabelled_rampup=0.0, **over)
            for ev in train(case.image, case.annotations, model_config=ModelConfig(ndim=case.ndim, **arch),
                            channel_axis=case.channel_axis, train_config=tc):
                if isinstance(ev, Progress):
                    stamps.append(time.perf_counter())
            d = np.diff(stamps[5:])  # the first steps warm up
            per[name].append(float(np.median(d)))
    base = np.median(per["plain cross-entropy"])
    print(f"{args.case}, {args.steps} steps x {args.repeats} repeats, threads {args.threads}, load {os.getloadavg()[0]:.1f}")
    print("| configuration | s/step (median) | vs plain |")
    print("|---|---|---|")
    for name in CONFIGS:
        m = np.median(per[name])
        print(f"| {name} | {m:.3f} | {m / base:.2f}x |")


if __name__ == "__main__":
    main()
