"""Training efficiency: achieved GFLOP/s of a training step against this machine's matmul GFLOP/s.

    python benchmarks/efficiency.py [--threads 2] [--steps 20]

FLOPs of one step (forward + backward) come from torch.utils.flop_counter.FlopCounterMode; the
step is timed on the default presets (2D and 3D) with the product's training settings
(channels-last, bfloat16 autocast where the CPU has it natively; FLOPs are counted the same
whatever the precision). matmul: a float32 2048x2048 product timed in the same run.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from napari_unet.config import ModelConfig, default_presets
from napari_unet.core.model import UNet
from napari_unet.core.device import autocast, memory_format_for


def matmul_gflops(n=2048, reps=20) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9


def step_gflops(ndim: int, steps: int) -> dict:
    arch, preset = default_presets(ndim, "cpu")
    cfg = ModelConfig(ndim=ndim, **arch)
    net = UNet(cfg).train()
    fmt = memory_format_for(ndim, torch.device("cpu"))
    net = net.to(memory_format=fmt)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x = torch.randn(preset["batch_size"], 1, *preset["patch_size"]).contiguous(memory_format=fmt)
    y = torch.randint(0, 2, (preset["batch_size"], *preset["patch_size"]))

    def step():
        with autocast(torch.device("cpu"), True, cpu=True, ndim=ndim):  # as the trainer does
            out = net(x)
        loss = F.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as fc:
        step()
    flops = fc.get_total_flops()
    for _ in range(3):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    dt = (time.perf_counter() - t0) / steps
    return dict(case=f"{ndim}D depth {arch['depth']} width {arch['width']} patch "
                f"{'x'.join(map(str, preset['patch_size']))} batch {preset['batch_size']}",
                gflop=flops / 1e9, ms=dt * 1000, gflops=flops / dt / 1e9)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    mm = matmul_gflops()
    print(f"threads {args.threads}; matmul float32 2048^2: {mm:.1f} GFLOP/s")
    print("| step | GFLOP/step | ms/step | GFLOP/s | % of matmul |")
    print("|---|---|---|---|---|")
    for nd in (2, 3):
        r = step_gflops(nd, args.steps)
        print(f"| {r['case']} | {r['gflop']:.2f} | {r['ms']:.0f} | {r['gflops']:.1f} | {100 * r['gflops'] / mm:.0f} % |")


if __name__ == "__main__":
    main()
