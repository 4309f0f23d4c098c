"""Time to quality: the U-Net's held-out IoU after 15..300 s of training, beside the tools users
would pick instead, measured in the same run on the same annotations.

    python benchmarks/quality_vs_time.py [--times 15,30,60,120,300] [--cases 2d-dense,2d-sparse,3d-dense]

Cases: synthetic nuclei (napari_unet.core.synthetic); the left half of each image is annotated
(dense: every pixel; sparse: scribbles), the right half is the held-out region where IoU of the
nucleus class against the exact ground truth is measured.
Baselines: an ilastik-style random forest on skimage ``multiscale_basic_features`` (scikit-learn,
100 trees on up to 50,000 annotated pixels, 2 cores; its seconds include features, fit and
prediction) and Otsu's threshold after a Gaussian blur.
The U-Net uses the product's defaults for the device (``default_presets``, ``TrainConfig``), one
training run per time budget (the schedule adapts to the budget, as it does for a user).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from napari_unet.config import TrainConfig
from napari_unet.core.device import describe, get_device
from napari_unet.core.inference import predict, to_labels
from napari_unet.core.synthetic import make_nuclei, scribbles
from napari_unet.core.training import train_blocking
from napari_unet.core.util import Notice

# noisy widefield-like nuclei, dim ones among bright ones: hard enough that the random forest
# lands near the IoU 0.88 that users see from it on real nuclei
HARD = dict(snr=3.0, dimmest=0.2, blur=2.0)
CASES = {
    "2d-dense": dict(shape=(512, 512), radius=9.0, sparse=False),
    "2d-sparse": dict(shape=(512, 512), radius=9.0, sparse=True),
    "3d-dense": dict(shape=(48, 128, 128), radius=7.0, sparse=False),
}
RF_SAMPLES, RF_TREES = 50_000, 100


def make_case(name: str, seed: int = 0):
    c = CASES[name]
    syn = make_nuclei(c["shape"], seed=seed, radius=c["radius"], **HARD)
    half = c["shape"][-1] // 2
    ann = scribbles(syn.semantic, seed=seed + 1, width=3 if len(c["shape"]) == 2 else 1) if c["sparse"] \
        else syn.semantic.copy()
    ann[..., half:] = 0  # only the left half is annotated
    return syn, ann.astype(np.uint8), half


def heldout_iou(pred_labels: np.ndarray, syn, half: int) -> float:
    p, t = pred_labels[..., half:] == 2, syn.semantic[..., half:] == 2
    return float(np.count_nonzero(p & t) / max(np.count_nonzero(p | t), 1))


def random_forest(syn, ann, half, n_jobs=2, seed=0):
    from skimage.feature import multiscale_basic_features
    from sklearn.ensemble import RandomForestClassifier

    t0 = time.perf_counter()
    feats = multiscale_basic_features(syn.image, intensity=True, edges=True, texture=True,
                                      sigma_min=1, sigma_max=16, channel_axis=None)
    mask = ann > 0
    X, y = feats[mask], ann[mask]
    rng = np.random.default_rng(seed)
    if len(y) > RF_SAMPLES:  # ilastik samples too; keeps the fit within seconds
        keep = rng.choice(len(y), RF_SAMPLES, replace=False)
        X, y = X[keep], y[keep]
    rf = RandomForestClassifier(n_estimators=RF_TREES, max_depth=None, min_samples_leaf=1, n_jobs=n_jobs,
                                random_state=seed)
    rf.fit(X, y)
    flat = feats[..., half:, :].reshape(-1, feats.shape[-1])
    pred = np.ones(syn.image.shape, np.uint8)
    pred[..., half:] = rf.predict(flat).reshape(syn.image[..., half:].shape)
    return heldout_iou(pred, syn, half), time.perf_counter() - t0


def otsu(syn, half):
    from skimage.filters import gaussian, threshold_otsu

    t0 = time.perf_counter()
    sm = gaussian(syn.image, 1.0)
    pred = np.where(sm > threshold_otsu(sm), 2, 1)
    return heldout_iou(pred, syn, half), time.perf_counter() - t0


def unet_curve(syn, ann, half, times, device="auto", seed=0, model_over=None, train_over=None):
    """One training run per time budget, as a user who sets that budget gets it."""
    ndim = syn.image.ndim
    from napari_unet.config import ModelConfig, default_presets

    arch = default_presets(ndim, get_device(device).type)[0]
    arch.update(model_over or {})
    out = {}
    for t in times:
        skipped = []
        result = train_blocking(syn.image, ann, model_config=ModelConfig(ndim=ndim, **arch),
                                train_config=TrainConfig(time_budget=t, device=device, seed=seed, **(train_over or {})),
                                on_event=lambda e: skipped.append(e) if isinstance(e, Notice) else None)
        out[t] = (heldout_iou(to_labels(predict(result.model, syn.image)), syn, half),
                  f"{result.steps}" + (f", {len(skipped)} skipped" if skipped else ""))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--times", default="15,30,60,120,300")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", action="append", default=[], help="override a ModelConfig field: KEY=VALUE")
    ap.add_argument("--train", action="append", default=[], help="override a TrainConfig field: KEY=VALUE")
    ap.add_argument("--no-baselines", action="store_true")
    args = ap.parse_args()
    import ast

    def over(items):
        out = {}
        for it in items:
            k, v = it.split("=", 1)
            try:
                out[k] = ast.literal_eval(v)
            except (ValueError, SyntaxError):
                out[k] = v
        return out
    times = [float(t) for t in args.times.split(",")]
    dev = get_device(args.device)
    print(f"device: {describe(dev)}; torch {torch.__version__}; times {times}; overrides {args.model} {args.train}")
    header = ["case", "Otsu IoU", "RF IoU", "RF s"] + [f"U-Net {t:g}s" for t in times]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name in args.cases.split(","):
        syn, ann, half = make_case(name, args.seed)
        o_iou, rf_iou, rf_s = (float("nan"),) * 3
        if not args.no_baselines:
            o_iou, _ = otsu(syn, half)
            rf_iou, rf_s = random_forest(syn, ann, half, seed=args.seed)
        curve = unet_curve(syn, ann, half, times, args.device, args.seed, over(args.model), over(args.train))
        cells = [f"{curve[t][0]:.3f} ({curve[t][1]} st)" if t in curve else "-" for t in times]
        print(f"| {name} | {o_iou:.3f} | {rf_iou:.3f} | {rf_s:.1f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
