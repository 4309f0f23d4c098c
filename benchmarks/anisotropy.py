"""Anisotropic stacks: a 3D U-Net that knows the voxel size against one that ignores it.

    python benchmarks/anisotropy.py --steps 150 --seeds 0,1          # a fixed number of steps
    python benchmarks/anisotropy.py --times 30,60 --seeds 0,1,2      # time budgets (the fair comparison)

The stack: ``make_realistic_nuclei`` in 3D on a near-isotropic grid (Z, 128, 128), then every
``--factor``-th plane (default 4), so the voxel size is (4, 1, 1) and a nucleus spans 2-3 planes.
The left half is annotated densely, the right half held out (benchmarks/common.py ``score``: IoU of
the nucleus class there). Cases, all with the product's CPU/GPU presets otherwise:

- ``ignore``: today's network (voxel size not given): 2x2x2 pooling and 3x3x3 kernels everywhere;
  the default patch, capped to the stack.
- ``aware`` (the product's default): ``voxel_size=(4, 1, 1)``: Z pooled only once YX have caught
  up (nnU-Net's rule), (1, 3, 3) kernels at the first level, the preset patch.
- ``aware-physical-patch``: the aware network with a patch following the voxel size (fewer planes,
  larger YX, about the preset's voxel count; nnU-Net's idea). It lost at equal steps (IoU and
  speed), so it is not the default; kept here to rerun the comparison.

Each cell: median over seeds [min-max]; steps/s is training steps per second of training.
Seed s makes the image and the training seed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Case, score  # noqa: E402
from quality_vs_time import cell  # noqa: E402

from napari_unet.config import ModelConfig, PredictConfig, TrainConfig, default_presets  # noqa: E402
from napari_unet.core.device import describe, get_device  # noqa: E402
from napari_unet.core.events import Started  # noqa: E402
from napari_unet.core.inference import predict, to_labels  # noqa: E402
from napari_unet.core.synthetic import make_realistic_nuclei  # noqa: E402
from napari_unet.core.training import train_blocking  # noqa: E402

CASE_NAMES = ("ignore", "aware", "aware-physical-patch")


def physical_patch(patch: Sequence[int], voxel_size: Sequence[float] | None,
                      multiples: Sequence[int]) -> tuple[int, ...]:
    """The default training patch for anisotropic voxels: the preset's shape in physical units, with about
    the preset's number of voxels (so a step costs about the same).

    Each axis is divided by its coarseness ``r = spacing / finest spacing`` and all are scaled by
    ``prod(r) ** (1 / ndim)``: (32, 64, 64) at (4, 1, 1) becomes (12, 104, 104) (12 planes of 4 cover
    about what 48 isotropic ones would). Rounded to the network's size multiples, at least 8 per axis.
    Isotropic voxels (or None) return ``patch`` unchanged.
    """
    patch = tuple(int(p) for p in patch)
    if voxel_size is None:
        return patch
    finest = min(voxel_size)
    ratios = [v / finest for v in voxel_size]
    if max(ratios) < 1.0 + 1e-9:
        return patch
    grow = 1.0
    for r in ratios:
        grow *= r
    grow **= 1.0 / len(ratios)
    out = []
    for p, r, m in zip(patch, ratios, multiples):
        want = p * grow / r
        out.append(max(8, m, int(round(want / m)) * m))
    return tuple(out)


def make_stack(seed: int, planes: int, factor: int, size: int = 128) -> Case:
    """A near-isotropic nuclei volume with only every ``factor``-th plane kept (voxel size (factor, 1, 1))."""
    syn = make_realistic_nuclei((planes * factor, size, size), seed=seed)
    img, truth = syn.image[::factor].copy(), syn.semantic[::factor].copy()
    half = size // 2
    ann = truth.astype(np.uint8)
    ann[..., half:] = 0
    return Case(f"{factor}x-z", img, ann, truth, half, None, 3, 2)


def run(case: Case, which: str, voxel, seed: int, device: str, steps=None, time_budget=None):
    """One training run; returns (held-out IoU, steps, seconds, steps/s, patch)."""
    arch = default_presets(3, get_device(device).type)[0]
    mc = ModelConfig(ndim=3, **arch)
    patch = None
    if which == "aware-physical-patch":
        patch = physical_patch(default_presets(3, get_device(device).type)[1]["patch_size"], voxel,
                               ModelConfig(ndim=3, voxel_size=tuple(voxel), **arch).size_multiples)
    tc = TrainConfig(steps=steps, time_budget=time_budget, device=device, seed=seed, patch_size=patch)
    started = []
    result = train_blocking(case.image, case.annotations, model_config=mc, train_config=tc,
                            voxel_size=None if which == "ignore" else voxel,
                            on_event=lambda e: started.append(e) if isinstance(e, Started) else None)
    pred = to_labels(predict(result.model, case.image, config=PredictConfig(device=device)))
    return (score(case, pred), result.steps, result.seconds, result.steps / max(result.seconds, 1e-9),
            started[0].patch_size)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=None, help="train a fixed number of steps")
    ap.add_argument("--times", default=None, help="time budgets in seconds, comma separated (instead of --steps)")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--factor", type=int, default=4, help="keep every FACTOR-th plane: voxel size (FACTOR, 1, 1)")
    ap.add_argument("--planes", type=int, default=24, help="planes of the anisotropic stack")
    ap.add_argument("--size", type=int, default=128, help="Y and X size of the stack")
    ap.add_argument("--cases", default=",".join(CASE_NAMES))
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    if args.steps is None and args.times is None:
        args.steps = 150
    seeds = [int(s) for s in args.seeds.split(",")]
    budgets = [(args.steps, None)] if args.steps else [(None, float(t)) for t in args.times.split(",")]
    cases = args.cases.split(",")
    voxel = (float(args.factor), 1.0, 1.0)
    dev = get_device(args.device)
    print(f"device: {describe(dev)}; torch {torch.__version__}; seeds {seeds}; stack {args.planes}x{args.size}x"
          f"{args.size}, voxel size {voxel}; " + (f"steps {args.steps}" if args.steps else f"times {args.times}"),
          flush=True)
    header = ["budget", "case", "patch", "held-out IoU", "steps/s", "steps"]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    results = {}
    for seed in seeds:
        case = make_stack(seed, args.planes, args.factor, args.size)
        for steps, tb in budgets:
            for which in cases:
                t0 = time.perf_counter()
                iou, n, sec, rate, patch = run(case, which, voxel, seed, args.device, steps, tb)
                results.setdefault((steps, tb, which), []).append((iou, n, rate, patch))
                print(f"  seed {seed} {which}: IoU {iou:.3f}, {n} steps in {sec:.1f} s ({rate:.2f} steps/s), patch "
                      f"{patch}, {time.perf_counter() - t0:.1f} s with prediction", flush=True)
    for steps, tb in budgets:
        for which in cases:
            r = results[(steps, tb, which)]
            budget = f"{steps} steps" if steps else f"{tb:g} s"
            rows.append(f"| {budget} | {which} | {'x'.join(map(str, r[0][3]))} | {cell([x[0] for x in r])} | "
                        f"{cell([x[2] for x in r], '{:.2f}')} | {int(np.median([x[1] for x in r]))} |")
    print("\nsummary:\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
