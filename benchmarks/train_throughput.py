"""Training throughput of the default presets on this machine (megapixels of patch per second).

    python benchmarks/train_throughput.py [--seconds 20] [--device auto]

Prints a table: dimensionality, device, architecture, patch, batch, steps/s, MP/s (voxels count
as pixels). Uses the synthetic nuclei; the first 3 steps are warm-up and not timed.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from napari_unet.config import ModelConfig, TrainConfig, default_presets
from napari_unet.core.device import describe, get_device
from napari_unet.core.synthetic import demo_pair
from napari_unet.core.training import Progress, train


def measure(ndim: int, seconds: float, device: str) -> dict:
    dev = get_device(device)
    arch, preset = default_presets(ndim, dev.type)
    image, ann, _ = demo_pair(ndim, seed=0, size=256 if ndim == 2 else None)
    times = []
    gen = train(image, ann, model_config=ModelConfig(ndim=ndim, **arch),
                train_config=TrainConfig(time_budget=seconds, device=device, val_fraction=0))
    for ev in gen:
        if isinstance(ev, Progress):
            times.append(time.perf_counter())
    steps = len(times) - 3
    rate = steps / (times[-1] - times[2])
    px = int(np.prod(preset["patch_size"])) * preset["batch_size"]
    return dict(ndim=f"{ndim}D", device=describe(dev), arch=f"depth {arch['depth']} width {arch['width']}",
                patch="x".join(map(str, preset["patch_size"])), batch=preset["batch_size"],
                steps_s=rate, mp_s=rate * px / 1e6)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [measure(nd, args.seconds, args.device) for nd in (2, 3)]
    cols = ["ndim", "device", "arch", "patch", "batch", "steps_s", "mp_s"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")


if __name__ == "__main__":
    main()
