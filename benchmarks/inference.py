"""Tiled prediction: our predict() against MONAI's sliding_window_inference, same model and image.

    pip install monai --no-deps    # benchmark-only dependency (the `bench` extra)
    python benchmarks/inference.py [--size 2048] [--tile 512] [--repeats 3]

Each method runs in a fresh subprocess so that its peak resident memory (ru_maxrss, minus what the
process held before predicting) is its own. Both use the default 2D CPU model, tiles of --tile
pixels, overlap 0.25, batch 1, float32; MONAI gets the image normalised the same way (counted in
its time) and blends with its default constant mode or --monai-mode gaussian.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def worker(method: str, size: int, tile: int, repeats: int, monai_mode: str) -> dict:
    import numpy as np
    import torch

    from napari_unet.config import ModelConfig, PredictConfig, default_presets
    from napari_unet.core.checkpoint import Model
    from napari_unet.core.data import ImageView, compute_percentiles, normalize
    from napari_unet.core.inference import predict

    torch.manual_seed(0)
    model = Model.new(ModelConfig(**default_presets(2, "cpu")[0]))
    model.net.eval()
    img = np.random.default_rng(0).normal(100, 10, (size, size)).astype(np.float32)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        if method == "ours":
            out = predict(model, img, config=PredictConfig(tile_size=(tile, tile), overlap=0.25, device="cpu"))
        else:
            from monai.inferers import sliding_window_inference

            pct = compute_percentiles(ImageView(img), model.config.norm_low, model.config.norm_high)
            x = torch.from_numpy(normalize(img[None], pct))[None]
            with torch.inference_mode():
                out = sliding_window_inference(x, (tile, tile), 1, lambda t: torch.softmax(model.net(t), 1),
                                               overlap=0.25, mode=monai_mode)[0].numpy()
        times.append(time.perf_counter() - t0)
        assert out.shape == (2, size, size)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return dict(method=method, seconds=min(times), mp_s=size * size / min(times) / 1e6,
                peak_mb=(peak - base) / 1024)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--monai-mode", default="constant", choices=("constant", "gaussian"))
    ap.add_argument("--worker", default=None)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.size, args.tile, args.repeats, args.monai_mode)))
        return
    import torch

    print(f"image {args.size}x{args.size}, tile {args.tile}, overlap 0.25, torch threads {torch.get_num_threads()}")
    print("| method | seconds | MP/s | peak memory above baseline (MiB) |")
    print("|---|---|---|---|")
    for method in ("ours", "monai"):
        cmd = [sys.executable, __file__, "--worker", method, "--size", str(args.size), "--tile", str(args.tile),
               "--repeats", str(args.repeats), "--monai-mode", args.monai_mode]
        r = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
        name = "napari-unet predict" if method == "ours" else f"MONAI sliding_window_inference ({args.monai_mode})"
        print(f"| {name} | {r['seconds']:.2f} | {r['mp_s']:.2f} | {r['peak_mb']:.0f} |")


if __name__ == "__main__":
    main()
