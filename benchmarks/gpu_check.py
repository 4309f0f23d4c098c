"""GPU check for one NVIDIA H100/H200 (issue 8): one table to choose GPU presets from.

    bash benchmarks/gpu_check.sh                    # on the GPU machine, < 6 min
    bash benchmarks/gpu_check.sh --device cpu --quick   # end-to-end smoke run on a CPU, < 1 min

Needs python3 with torch, numpy, scipy, scikit-image, scikit-learn, safetensors, tqdm (no napari,
zarr or dask). Prints, for the 2D and 3D presets of the device: training steps/s and MP/s with AMP
on and off; seconds of training for the U-Net to reach the random forest's held-out IoU on the
benchmark cases (the averaged weights are scored against the truth every ``--every`` seconds;
scoring time is not counted); prediction MP/s; and a real out-of-memory recovery (a 3D patch of
512^3 with batch 8 must shrink until it fits, through the training loop's own OOM handling).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import make_case, random_forest, score  # noqa: E402

from napari_unet.config import ModelConfig, PredictConfig, TrainConfig, default_presets  # noqa: E402
from napari_unet.core.device import describe, get_device  # noqa: E402
from napari_unet.core.inference import predict, to_labels  # noqa: E402
from napari_unet.core.synthetic import make_realistic_nuclei  # noqa: E402
from napari_unet.core.training import Preview, Progress, Validation, train  # noqa: E402
from napari_unet.core.util import Notice, drain  # noqa: E402

ROWS: list[tuple[str, str, str]] = []


def row(what: str, setting: str, value: str) -> None:
    ROWS.append((what, setting, value))
    print(f"  {what} | {setting} | {value}", flush=True)


def throughput(ndim: int, device: str, amp: bool, seconds: float) -> None:
    dev = get_device(device)
    arch, preset = default_presets(ndim, dev.type)
    syn = make_realistic_nuclei((512, 512) if ndim == 2 else (64, 160, 160), seed=0)
    stamps = []
    drain(train(syn.image, syn.semantic, model_config=ModelConfig(ndim=ndim, **arch),
                train_config=TrainConfig(time_budget=seconds, device=device, amp=amp, val_fraction=0)),
          lambda e: stamps.append(time.perf_counter()) if isinstance(e, Progress) else None)
    warm = min(5, len(stamps) // 3)
    rate = (len(stamps) - 1 - warm) / max(stamps[-1] - stamps[warm], 1e-9) if len(stamps) > warm + 1 else 0.0
    px = int(np.prod(preset["patch_size"])) * preset["batch_size"]
    row(f"train {ndim}D", f"AMP {'on' if amp else 'off'}, depth {arch['depth']} width {arch['width']}, "
        f"patch {'x'.join(map(str, preset['patch_size']))}, batch {preset['batch_size']}",
        f"{rate:.1f} steps/s, {rate * px / 1e6:.1f} MP/s")


def time_to_forest(name: str, device: str, budget: float, every: float) -> None:
    """Training seconds until the averaged weights score at least the forest's held-out IoU."""
    case = make_case(name, 0)
    rf, rf_s = random_forest(case, n_jobs=-1)
    dev = get_device(device)
    arch = default_presets(case.ndim, dev.type)[0]
    state = {"scoring": 0.0, "asked": None, "step_elapsed": 0.0, "hit": None, "best": 0.0, "steps": 0,
             "first": None, "val": 0.0}

    def ask():
        state["asked"] = time.perf_counter()
        return ("x", case.image, case.channel_axis, None)

    gen = train(case.image, case.annotations, model_config=ModelConfig(ndim=case.ndim, **arch),
                channel_axis=case.channel_axis, preview=ask, preview_every=every,
                train_config=TrainConfig(time_budget=budget, device=device, seed=0))
    try:
        for ev in gen:
            if isinstance(ev, Progress):
                state["step_elapsed"], state["steps"] = ev.elapsed, ev.step
                state["first"] = ev.elapsed if state["first"] is None else state["first"]
                last = time.perf_counter()
            elif isinstance(ev, Validation):  # validation counts as training time; reported apart
                state["val"] += time.perf_counter() - last
            elif isinstance(ev, Preview):
                s = score(case, to_labels(ev.probabilities))
                train_s = state["step_elapsed"] - state["scoring"]
                state["scoring"] += time.perf_counter() - state["asked"]
                state["best"] = max(state["best"], s)
                if s >= rf:
                    state["hit"] = (train_s, ev.step, s)
                    break
    finally:
        gen.close()
    if state["hit"]:
        t, step, s = state["hit"]
        value = (f"{t:.1f} s ({step} steps, IoU {s:.3f} >= forest {rf:.3f}; first step at {state['first']:.2f} s, "
                 f"validation {state['val']:.2f} s; forest took {rf_s:.1f} s)")
    else:
        value = (f"not reached in {budget:g} s ({state['steps']} steps; best {state['best']:.3f} < forest "
                 f"{rf:.3f}; forest took {rf_s:.1f} s)")
    row("reach the forest's IoU", f"{name}, default preset, budget {budget:g} s", value)


def prediction(ndim: int, device: str, quick: bool) -> None:
    dev = get_device(device)
    arch = default_presets(ndim, dev.type)[0]
    from napari_unet.core.checkpoint import Model

    model = Model.new(ModelConfig(ndim=ndim, **arch), seed=0)
    shape = ((1024, 1024) if not quick else (512, 512)) if ndim == 2 else ((128, 512, 512) if not quick else (32, 128, 128))
    if dev.type == "cuda" and ndim == 2 and not quick:
        shape = (4096, 4096)
    img = np.random.default_rng(0).normal(100, 10, shape).astype(np.float32)
    cfg = PredictConfig(device=device)
    predict(model, img[tuple(slice(0, min(s, 64)) for s in shape)], config=cfg)  # warm-up
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    predict(model, img, config=cfg)
    dt = time.perf_counter() - t0
    row(f"predict {ndim}D", f"{'x'.join(map(str, shape))}, untrained net, default tiles", f"{np.prod(shape) / dt / 1e6:.1f} MP/s")


def oom_recovery(device: str) -> None:
    dev = get_device(device)
    if dev.type != "cuda":
        row("OOM recovery", "3D patch 256^3, batch 32", "skipped (not a CUDA device)")
        return
    # a 256^3 patch x 32 needs several hundred GiB of activations: more than any single card has
    # (a 512^3 patch capped to a 96x384x384 volume with batch 8 fitted in an H200's 139 GiB)
    rng = np.random.default_rng(0)
    image = rng.normal(size=(256, 256, 256)).astype(np.float32)
    labels = np.ones(image.shape, np.uint8)
    labels[:, :, 128:] = 2
    image[:, :, 128:] += 1
    notes = []
    t0 = time.perf_counter()
    try:
        result = drain(train(image, labels, model_config=ModelConfig(ndim=3, depth=4, width=32),
                             train_config=TrainConfig(steps=3, time_budget=None, device=device,
                                                      patch_size=(256, 256, 256), batch_size=32, val_fraction=0)),
                       lambda e: notes.append(e.message) if isinstance(e, Notice) else None)
        ok = f"recovered: {result.steps} steps done after {len(notes)} notice(s): " + " / ".join(notes)
    except Exception as e:  # noqa: BLE001 - the check reports any failure as its result
        ok = f"FAILED: {type(e).__name__}: {e} (notices: {' / '.join(notes)})"
    row("OOM recovery", "3D patch 256^3, batch 32, depth 4 width 32 (random volume)",
        f"{ok} ({time.perf_counter() - t0:.1f} s)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--quick", action="store_true", help="tiny budgets, 2D strokes only: a smoke run")
    ap.add_argument("--every", type=float, default=None, help="seconds between scorings against the truth")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    dev = get_device(args.device)
    print(f"gpu_check on {describe(dev)}; torch {torch.__version__}; {os.cpu_count()} CPUs", flush=True)
    q = args.quick
    every = args.every or (0.5 if dev.type == "cuda" else 2.0)
    for ndim in ((2,) if q else (2, 3)):
        for amp in (True, False):
            throughput(ndim, args.device, amp, 2.0 if q else 12.0)
    for name in (("2d-strokes",) if q else ("2d-strokes", "2d-dense", "3d-dense")):
        time_to_forest(name, args.device, 6.0 if q else 40.0, every)
    for ndim in ((2,) if q else (2, 3)):
        prediction(ndim, args.device, q)
    oom_recovery(args.device)
    print(f"\n## gpu_check: {describe(dev)}, torch {torch.__version__} ({time.perf_counter() - t_start:.0f} s)\n")
    print("| measure | setting | result |")
    print("|---|---|---|")
    for r in ROWS:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
