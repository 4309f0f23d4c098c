"""Test-time augmentation: held-out score and prediction time with and without it.

    python benchmarks/tta.py [--steps 300] [--seeds 0,1,2] [--cases 2d-strokes,2d-dense]

Trains the product defaults for a fixed number of steps per case and seed, then predicts the
whole image with ``PredictConfig(tta=False)`` and ``tta=True`` in the same process (times are
each the best of two runs).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import make_case, score  # noqa: E402

from napari_unet.config import ModelConfig, PredictConfig, TrainConfig, default_presets  # noqa: E402
from napari_unet.core.inference import predict, to_labels  # noqa: E402
from napari_unet.core.training import train_blocking  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--cases", default="2d-strokes,2d-dense")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    print("| case | seed | plain | TTA | gain | plain s | TTA s | x slower |")
    print("|---|---|---|---|---|---|---|---|")
    gains = []
    for name in args.cases.split(","):
        for seed in map(int, args.seeds.split(",")):
            case = make_case(name, seed)
            arch = default_presets(case.ndim, "cpu")[0]
            r = train_blocking(case.image, case.annotations, model_config=ModelConfig(ndim=case.ndim, **arch),
                               channel_axis=case.channel_axis,
                               train_config=TrainConfig(steps=args.steps, time_budget=None, seed=seed, device="cpu",
                                                        threads=args.threads))
            res = {}
            for tta in (False, True):
                best = None
                for _ in range(2):
                    t0 = time.perf_counter()
                    p = predict(r.model, case.image, channel_axis=case.channel_axis,
                                config=PredictConfig(device="cpu", tta=tta))
                    dt = time.perf_counter() - t0
                    best = dt if best is None else min(best, dt)
                res[tta] = (score(case, to_labels(p)), best)
            gains.append(res[True][0] - res[False][0])
            print(f"| {name} | {seed} | {res[False][0]:.3f} | {res[True][0]:.3f} | {gains[-1]:+.3f} | "
                  f"{res[False][1]:.2f} | {res[True][1]:.2f} | {res[True][1] / res[False][1]:.1f} |", flush=True)
    print(f"median gain {np.median(gains):+.3f} (min {min(gains):+.3f}, max {max(gains):+.3f})")


if __name__ == "__main__":
    main()
