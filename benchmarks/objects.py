"""Objects: AP of separated nuclei on synthetic touching nuclei, U-Net beside the usual pipelines.

    python benchmarks/objects.py [--times 60] [--steps N] [--cases 2d] [--seed 0]

The left half of the image is annotated object by object (every nucleus whose centre lies there is
painted whole with its own value, the rest of the left half is background); the right half is
scored as in DSB2018 / StarDist: a predicted object matches a true one at IoU >= t (one to one),
AP_t = TP / (TP + FP + FN), on the right half of both masks.
Rows: the U-Net in objects mode (core/objects.py: normalised distance head + seeded watershed);
a random forest (ilastik-style features, as in quality_vs_time.py) + distance-transform watershed;
Otsu + distance-transform watershed; and the TRUE semantic mask + the same watershed (the best a
semantic segmentation followed by the usual post-processing can do). ``--steps`` trains a fixed
number of steps instead of a time budget (for tuning on a shared CPU).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from napari_unet.config import TrainConfig
from napari_unet.core.device import describe, get_device
from napari_unet.core.inference import predict, split_outputs
from napari_unet.core.metrics import match_objects
from napari_unet.core.objects import instances_from_foreground, instances_from_output
from napari_unet.core.training import train_blocking

HARD = dict(snr=3.0, dimmest=0.2, blur=2.0)  # as quality_vs_time.py
# crowded: many nuclei touch and press into each other, so that even the true semantic mask plus a
# distance watershed is wrong on some (as on real crowded nuclei)
CASES = {"2d": dict(shape=(512, 512), radius=9.0, n=700), "3d": dict(shape=(48, 128, 128), radius=7.0, n=160)}
RF_SAMPLES, RF_TREES = 50_000, 100
THRESHOLDS = (0.5, 0.7, 0.9)


def make_data(shape, radius, n, seed):
    """The realistic nuclei when the quality work has landed them, else crowded touching nuclei."""
    from napari_unet.core import synthetic

    if hasattr(synthetic, "make_realistic_nuclei"):
        return synthetic.make_realistic_nuclei(shape, seed=seed)
    return synthetic.make_nuclei(shape, n=n, seed=seed, radius=radius, **HARD)


def make_case(name: str, seed: int = 0):
    c = CASES[name]
    syn = make_data(c["shape"], c["radius"], c["n"], seed)
    inst = syn.instances
    half = inst.shape[-1] // 2
    ann = np.zeros(inst.shape, np.uint32)
    ann[..., :half] = 1  # background, left half
    ann[..., :half][inst[..., :half] > 0] = 0  # object pixels are painted below, or left unannotated
    from scipy import ndimage as ndi

    ids = np.unique(inst[inst > 0])
    centres = ndi.center_of_mass(np.ones(inst.shape), inst, ids)
    painted = [i for i, c in zip(ids, centres) if c[-1] < half]
    mask = np.isin(inst, painted)
    ann[mask] = inst[mask] + 1  # each object its own value (2..)
    return syn, ann, half


def score(pred_inst, syn, half) -> dict:
    return match_objects(syn.instances[..., half:], pred_inst[..., half:], THRESHOLDS)


def forest_foreground(syn, ann, seed=0, n_jobs=2):
    from skimage.feature import multiscale_basic_features
    from sklearn.ensemble import RandomForestClassifier

    feats = multiscale_basic_features(syn.image, intensity=True, edges=True, texture=True, sigma_min=1,
                                      sigma_max=16, channel_axis=None)
    sem = np.where(ann >= 2, 2, ann)
    mask = sem > 0
    X, y = feats[mask], sem[mask]
    rng = np.random.default_rng(seed)
    if len(y) > RF_SAMPLES:
        keep = rng.choice(len(y), RF_SAMPLES, replace=False)
        X, y = X[keep], y[keep]
    rf = RandomForestClassifier(n_estimators=RF_TREES, n_jobs=n_jobs, random_state=seed).fit(X, y)
    return rf.predict(feats.reshape(-1, feats.shape[-1])).reshape(syn.image.shape) == 2


def otsu_foreground(syn):
    from skimage.filters import gaussian, threshold_otsu

    sm = gaussian(syn.image, 1.0)
    return sm > threshold_otsu(sm)


def unet_objects(syn, ann, budget=None, steps=None, device="auto", seed=0, save=None):
    ndim = syn.image.ndim
    from napari_unet.config import ModelConfig, default_presets

    arch = default_presets(ndim, get_device(device).type)[0]
    tc = TrainConfig(time_budget=budget, steps=steps, device=device, seed=seed)
    res = train_blocking(syn.image, ann, model_config=ModelConfig(ndim=ndim, **arch), train_config=tc, objects=True,
                         out=save)
    probs, dist = split_outputs(res.model, predict(res.model, syn.image, extras=True))
    return instances_from_output(probs, dist, ndim=ndim), res


def fmt(m) -> str:
    return " | ".join(f"{m['ap'][t]:.3f}" for t in THRESHOLDS) + f" | {m['f1'][0.5]:.3f} | {m['count_error']:+d}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--times", default="60", help="training budgets in seconds, comma-separated")
    ap.add_argument("--steps", type=int, default=None, help="train this many steps instead (tuning)")
    ap.add_argument("--cases", default="2d")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-baselines", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (e.g. 2 to mimic a laptop)")
    ap.add_argument("--save-model", default=None, help="keep the (last) trained model in this folder")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = get_device(args.device)
    print(f"device: {describe(dev)}; torch {torch.__version__}; threads {torch.get_num_threads()}")
    head = ["case", "method"] + [f"AP@{t}" for t in THRESHOLDS] + ["F1@0.5", "count error", "seconds"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name in args.cases.split(","):
        syn, ann, half = make_case(name, args.seed)
        n_true = len(np.unique(syn.instances[..., half:])) - 1
        print(f"<!-- {name}: {syn.image.shape}, {int(np.count_nonzero(np.unique(ann) >= 2))} objects painted, "
              f"{n_true} scored -->")
        nd = syn.image.ndim
        if not args.no_baselines:
            for label, fg_fn in (("TRUE semantic mask + distance watershed", lambda: syn.semantic == 2),
                                 ("forest + distance watershed", lambda: forest_foreground(syn, ann, args.seed)),
                                 ("Otsu + distance watershed", lambda: otsu_foreground(syn))):
                t0 = time.perf_counter()
                inst = instances_from_foreground(fg_fn(), ndim=nd)
                print(f"| {name} | {label} | {fmt(score(inst, syn, half))} | {time.perf_counter() - t0:.1f} |",
                      flush=True)
        runs = [(None, args.steps)] if args.steps else [(float(t), None) for t in args.times.split(",")]
        for budget, steps in runs:
            t0 = time.perf_counter()
            inst, res = unet_objects(syn, ann, budget, steps, args.device, args.seed, args.save_model)
            what = f"U-Net objects, {res.steps} steps" + (f" ({budget:g} s budget)" if budget else "")
            print(f"| {name} | {what} | {fmt(score(inst, syn, half))} | {time.perf_counter() - t0:.1f} |", flush=True)


if __name__ == "__main__":
    main()
