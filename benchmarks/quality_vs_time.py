"""Time to quality: the U-Net's held-out IoU after a time budget (or a fixed number of steps),
beside the tools users would pick instead, on the same annotations, over several seeds.

    python benchmarks/quality_vs_time.py --times 15,30,60,180 --seeds 0,1,2 \\
        [--cases 2d-dense,2d-strokes,3d-dense,rgb-textures]
    python benchmarks/quality_vs_time.py --steps 300 --seeds 0,1,2 --cases 2d-strokes \\
        --train regularizer=0 --train consistency=0          # fixed-step ablation

Cases (benchmarks/common.py): realistic synthetic nuclei and an RGB texture image; the left half
is annotated, the right half held out. Each cell prints the median over seeds and the range
[min-max]; seed s makes the image, the annotations and the training seed. The U-Net uses the
product defaults (``default_presets``, ``TrainConfig``) plus any ``--train``/``--model`` overrides,
one training run per budget (the schedule adapts to the budget, as it does for a user).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import CASES, make_case, otsu, parse_overrides, random_forest, score  # noqa: E402

from napari_unet.config import ModelConfig, PredictConfig, TrainConfig, default_presets  # noqa: E402
from napari_unet.core.device import describe, get_device  # noqa: E402
from napari_unet.core.inference import predict, to_labels  # noqa: E402
from napari_unet.core.training import train_blocking  # noqa: E402
from napari_unet.core.util import Notice  # noqa: E402


def unet_run(case, seed, device="auto", time_budget=None, steps=None, model_over=None, train_over=None,
             predict_over=None):
    """One training run as a user gets it; returns (held-out score, steps, seconds, skipped steps)."""
    arch = default_presets(case.ndim, get_device(device).type)[0]
    arch.update(model_over or {})
    skipped = []
    tc = TrainConfig(time_budget=time_budget, steps=steps, device=device, seed=seed, **(train_over or {}))
    result = train_blocking(case.image, case.annotations, model_config=ModelConfig(ndim=case.ndim, **arch),
                            train_config=tc, channel_axis=case.channel_axis,
                            on_event=lambda e: skipped.append(e) if isinstance(e, Notice) else None)
    pc = PredictConfig(device=device, **(predict_over or {}))
    pred = to_labels(predict(result.model, case.image, channel_axis=case.channel_axis, config=pc))
    return score(case, pred), result.steps, result.seconds, len(skipped)


def cell(values, fmt="{:.3f}") -> str:
    v = np.asarray(values, float)
    if len(v) == 1:
        return fmt.format(v[0])
    return f"{fmt.format(np.median(v))} [{fmt.format(v.min())}-{fmt.format(v.max())}]"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--times", default="15,30,60,180", help="time budgets in seconds, comma separated")
    ap.add_argument("--steps", type=int, default=None, help="train a fixed number of steps instead of --times")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--model", action="append", default=[], help="override a ModelConfig field: KEY=VALUE")
    ap.add_argument("--train", action="append", default=[], help="override a TrainConfig field: KEY=VALUE")
    ap.add_argument("--predict", action="append", default=[], help="override a PredictConfig field: KEY=VALUE")
    ap.add_argument("--no-baselines", action="store_true")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    budgets = [None] if args.steps else [float(t) for t in args.times.split(",")]
    mo, to, po = parse_overrides(args.model), parse_overrides(args.train), parse_overrides(args.predict)
    dev = get_device(args.device)
    print(f"device: {describe(dev)}; torch {torch.__version__}; seeds {seeds}; "
          + (f"steps {args.steps}" if args.steps else f"times {budgets}")
          + f"; overrides model {mo} train {to} predict {po}", flush=True)
    cols = [f"{args.steps} steps" if args.steps else f"U-Net {t:g} s" for t in budgets]
    header = ["case", "Otsu", "forest", "forest s"] + cols
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    print("\n".join(rows), flush=True)
    for name in args.cases.split(","):
        base = {"otsu": [], "rf": [], "rf_s": []}
        unet = {t: [] for t in budgets}
        info = {t: [] for t in budgets}
        for seed in seeds:
            case = make_case(name, seed)
            if not args.no_baselines:
                o, _ = otsu(case)
                rf, rf_s = random_forest(case, seed=seed)
                base["otsu"].append(o)
                base["rf"].append(rf)
                base["rf_s"].append(rf_s)
            for t in budgets:
                t0 = time.perf_counter()
                s, n, sec, skipped = unet_run(case, seed, args.device, t, args.steps, mo, to, po)
                unet[t].append(s)
                info[t].append((n, sec, skipped))
                print(f"  {name} seed {seed} {cols[budgets.index(t)]}: {s:.3f} ({n} steps, {sec:.1f} s train, "
                      f"{time.perf_counter() - t0:.1f} s total" + (f", {skipped} notices" if skipped else "") + ")",
                      flush=True)
        cells = []
        for t in budgets:
            steps = [i[0] for i in info[t]]
            secs = [i[1] for i in info[t]]
            cells.append(f"{cell(unet[t])} ({int(np.median(steps))} st, {np.median(secs):.0f} s)")
        b = ["-", "-", "-"] if args.no_baselines else [
            "-" if np.all(np.isnan(base["otsu"])) else cell(base["otsu"]), cell(base["rf"]),
            cell(base["rf_s"], "{:.1f}")]
        row = f"| {name} | " + " | ".join(b + cells) + " |"
        rows.append(row)
        print(row, flush=True)
    print("\nsummary:\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
