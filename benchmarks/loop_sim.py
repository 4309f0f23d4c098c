"""A simulated user: quality against annotation effort (strokes, rounds), not against seconds.

    python benchmarks/loop_sim.py [--image I.tif --truth GT.tif] [--rounds 6] [--seconds 30] [--strokes 10]
                                  [--holdout 0.5] [--seed 0] [--json out.json]

Truth: 0 = background, > 0 = object (an instance mask is fine). Without ``--image`` a built-in
realistic synthetic nuclei image (512 x 512) is used. The top ``1 - holdout`` of the image (rows)
is where the scripted annotator paints; the bottom ``holdout`` is never painted and is where the
IoU of the object class is scored.

Round 1 paints ``--strokes`` strokes: centre lines of some objects and background strokes close to
them. Each round then trains a U-Net for ``--seconds`` (warm start from the previous round's model),
predicts, and (rounds 2..) first paints ``--strokes`` corrective strokes on the largest wrong
regions of the previous prediction (in the top part only), as a user correcting the prediction.
The same annotations, round by round, go to an ilastik-style pixel forest (skimage multiscale
features, scikit-learn random forest, 2 jobs) trained from scratch each round; its features are
computed once (ilastik caches them too) and counted in round 1's seconds.
Prints a table per round and writes JSON ``{"unet": [IoU per round], "forest": [...],
"annotated_pixels": [...], ...}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
from scipy import ndimage as ndi

from common import RF_SAMPLES, RF_TREES, parse_overrides

BRUSH = 3  # stroke width in pixels


# --------------------------------------------------------------------------- the scripted annotator
def paint_line(ann, allowed, centre, direction, length, value, width=BRUSH) -> int:
    """Paint a straight stroke through ``centre`` where ``allowed``; return the pixels newly painted."""
    d = np.asarray(direction, float)
    d /= np.linalg.norm(d) + 1e-9
    mark = np.zeros(ann.shape, bool)
    for t in np.arange(-length / 2, length / 2 + 0.5, 0.5):
        q = np.round(np.asarray(centre) + t * d).astype(int)
        if np.all(q >= 0) and np.all(q < ann.shape):
            mark[tuple(q)] = True
    if width > 1:
        mark = ndi.binary_dilation(mark, np.ones((width, width), bool))
    new = mark & allowed & (ann == 0)
    ann[new] = value
    return int(new.sum())


def principal(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Centre, long-axis direction and long-axis extent (pixels) of a set of points."""
    c = pts.mean(0)
    if len(pts) < 3:
        return c, np.array([0.0, 1.0]), 2.0
    w, v = np.linalg.eigh(np.cov((pts - c).T))
    return c, v[:, -1], 4 * np.sqrt(max(w[-1], 0.25))


class Annotator:
    def __init__(self, truth: np.ndarray, top: int, seed: int):
        self.cls = np.where(truth > 0, 2, 1).astype(np.uint8)
        ids = np.unique(truth[truth > 0])
        self.instances = truth.astype(np.int64) if len(ids) > 1 else ndi.label(truth > 0)[0]
        self.top = top
        self.rng = np.random.default_rng(seed)
        self.region = np.zeros(truth.shape, bool)
        self.region[:top] = True
        # a careful user stays a couple of pixels inside the class they paint
        self.depth = {c: ndi.distance_transform_edt(self.cls == c) for c in (1, 2)}

    def first(self, ann: np.ndarray, n: int) -> int:
        """Centre lines of some objects (wholly in the top part) and background strokes beside them."""
        objs = ndi.find_objects(self.instances)
        inside = [k + 1 for k, sl in enumerate(objs) if sl is not None and sl[0].stop <= self.top]
        n_obj = max(1, (n + 1) // 2)
        picks = self.rng.permutation(inside)[:n_obj] if inside else []
        strokes = 0
        for k in picks:
            pts = np.argwhere((self.instances == k) & (self.depth[2] >= 2))
            if len(pts) == 0:
                continue
            c, d, ext = principal(pts)
            strokes += paint_line(ann, self.region & (self.depth[2] >= 2), c, d, 0.8 * ext, 2) > 0
        bg_ok = self.region & (self.depth[1] >= 2)
        near = np.argwhere(bg_ok & (self.depth[1] <= 8))
        for k in picks[:max(0, n - strokes)]:  # background strokes hugging the chosen objects
            c = np.argwhere(self.instances == k).mean(0)
            cand = near[np.abs(near - c).max(1) <= 20]
            if len(cand) == 0:
                continue
            p = cand[self.rng.integers(len(cand))]
            normal = np.array([g[tuple(p)] for g in np.gradient(self.depth[1])])
            tangent = np.array([-normal[1], normal[0]]) if np.linalg.norm(normal) > 0 else self.rng.normal(0, 1, 2)
            paint_line(ann, bg_ok, p, tangent, self.rng.uniform(10, 20), 1)
        return int(np.count_nonzero(ann))

    def correct(self, ann: np.ndarray, pred: np.ndarray, n: int) -> int:
        """``n`` strokes on the largest wrong regions of ``pred`` in the top part, with the true class."""
        wrong = (pred != self.cls) & self.region & (ann == 0)
        comps = []
        for c in (1, 2):
            lab, k = ndi.label(wrong & (self.cls == c))
            if k:
                sizes = np.bincount(lab.ravel())[1:]
                comps += [(int(s), c, lab, i + 1) for i, s in enumerate(sizes) if s >= 4]
        comps.sort(key=lambda t: -t[0])
        done = 0
        for _, c, lab, i in comps:
            if done >= n:
                break
            comp = lab == i
            for depth in (2, 1):  # inside the class by 2 pixels if the region allows, else 1
                safe = comp & (self.depth[c] >= depth)
                if safe.any():
                    break
            else:
                continue
            ctr, d, ext = principal(np.argwhere(safe))
            allowed = ndi.binary_dilation(comp, iterations=BRUSH) & self.region & (self.depth[c] >= depth)
            if paint_line(ann, allowed, ctr, d, max(ext, 3), c) == 0:
                p = np.argwhere(safe)[0]
                ann[tuple(p)] = c
            done += 1
        return done


# --------------------------------------------------------------------------- the two learners
def iou(pred: np.ndarray, cls: np.ndarray, top: int) -> float:
    p, t = pred[top:] == 2, cls[top:] == 2
    return float(np.count_nonzero(p & t) / max(np.count_nonzero(p | t), 1))


class Forest:
    """ilastik-style pixel classifier on multiscale intensity/edge/texture features."""

    def __init__(self, image, trees=RF_TREES, seed=0):
        from skimage.feature import multiscale_basic_features

        t0 = time.perf_counter()
        self.feats = multiscale_basic_features(np.asarray(image, np.float32), intensity=True, edges=True,
                                               texture=True, sigma_min=1, sigma_max=16)
        self.feature_seconds = time.perf_counter() - t0
        self.trees, self.seed = trees, seed

    def round(self, ann: np.ndarray, top: int) -> np.ndarray:
        from sklearn.ensemble import RandomForestClassifier

        mask = ann > 0
        X, y = self.feats[mask], ann[mask]
        rng = np.random.default_rng(self.seed)
        if len(y) > RF_SAMPLES:
            keep = rng.choice(len(y), RF_SAMPLES, replace=False)
            X, y = X[keep], y[keep]
        rf = RandomForestClassifier(n_estimators=self.trees, n_jobs=2, random_state=self.seed).fit(X, y)
        pred = np.ones(ann.shape, np.uint8)  # only the held-out part is needed for the score
        held = self.feats[top:]
        pred[top:] = rf.predict(held.reshape(-1, held.shape[-1])).reshape(held.shape[:-1])
        return pred


def unet_round(image, ann, model, args):
    from napari_unet.config import ModelConfig, TrainConfig
    from napari_unet.core.inference import predict, to_labels
    from napari_unet.core.training import train_blocking

    tc = TrainConfig(time_budget=None if args.steps else args.seconds, steps=args.steps, seed=args.seed,
                     device=args.device, **({"patch_size": (args.patch,) * 2, "batch_size": 2} if args.patch else {}),
                     **args.overrides)
    mc = None
    if model is None and (args.depth or args.width):
        mc = ModelConfig(depth=args.depth or 3, width=args.width or 16)
    result = train_blocking(image, ann, model_config=mc, train_config=tc, init=model)
    return result.model, to_labels(predict(result.model, image)), result.steps, result.best_step


# --------------------------------------------------------------------------- main
def load(args):
    if args.image is None:
        from napari_unet.core.synthetic import make_realistic_nuclei  # the benchmarks' realistic data

        syn = make_realistic_nuclei((args.size, args.size), seed=args.seed)
        return syn.image, syn.instances, "built-in realistic synthetic nuclei"
    from napari_unet.core.io import read_array

    image = np.asarray(read_array(args.image, "image"))
    truth = np.asarray(read_array(args.truth, "truth")) if args.truth else None
    return image, truth, args.image


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image")
    ap.add_argument("--truth")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--strokes", type=int, default=10)
    ap.add_argument("--holdout", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--train", action="append", default=[], help="override a TrainConfig field: KEY=VALUE")
    # for tests and quick checks: steps instead of seconds, a smaller net, image and forest
    for flag, kind in (("--steps", int), ("--depth", int), ("--width", int), ("--patch", int), ("--trees", int)):
        ap.add_argument(flag, type=kind, help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, default=512, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if (args.image is None) != (args.truth is None):
        ap.error("give both --image and --truth, or neither (built-in synthetic image)")
    if not 0 < args.holdout < 1 or args.rounds < 1 or args.strokes < 1:
        ap.error("--holdout must be in (0, 1), --rounds and --strokes at least 1")
    args.overrides = parse_overrides(args.train)  # TrainConfig fields, checked by the first round
    image, truth, name = load(args)
    if image.ndim != 2 or truth.shape != image.shape:
        ap.error(f"need a 2D single-channel image and a truth of the same shape; got {image.shape} and {truth.shape}")
    top = int(round(image.shape[0] * (1 - args.holdout)))
    user = Annotator(truth, top, args.seed)
    ann = np.zeros(image.shape, np.uint8)
    forest = Forest(image, trees=args.trees or RF_TREES, seed=args.seed)
    out = {"unet": [], "forest": [], "annotated_pixels": [], "unet_seconds": [], "forest_seconds": [],
           "unet_steps": [], "unet_kept_step": [], "settings": {k: v for k, v in vars(args).items()}, "image": name}
    print(f"loop_sim: {name} {image.shape}, painted rows 0..{top - 1}, scored rows {top}..{image.shape[0] - 1}; "
          f"{args.rounds} rounds x {f'{args.steps} steps' if args.steps else f'{args.seconds:g} s'}, "
          f"{args.strokes} strokes a round")
    print("| round | strokes | annotated px | U-Net IoU | forest IoU | U-Net s | forest s | U-Net steps (kept) |")
    print("|---|---|---|---|---|---|---|---|")
    model, pred = None, None
    for r in range(1, args.rounds + 1):
        strokes = args.strokes if r == 1 else user.correct(ann, pred, args.strokes)
        if r == 1:
            user.first(ann, args.strokes)
        t0 = time.perf_counter()
        model, pred, steps, kept = unet_round(image, ann, model, args)
        t_unet = time.perf_counter() - t0
        t0 = time.perf_counter()
        f_pred = forest.round(ann, top)
        t_forest = time.perf_counter() - t0 + (forest.feature_seconds if r == 1 else 0.0)
        for key, v in (("unet", iou(pred, user.cls, top)), ("forest", iou(f_pred, user.cls, top)),
                       ("annotated_pixels", int(np.count_nonzero(ann))), ("unet_seconds", round(t_unet, 2)),
                       ("forest_seconds", round(t_forest, 2)), ("unet_steps", steps), ("unet_kept_step", kept)):
            out[key].append(v)
        print(f"| {r} | {strokes} | {out['annotated_pixels'][-1]} | {out['unet'][-1]:.3f} | {out['forest'][-1]:.3f} "
              f"| {t_unet:.1f} | {t_forest:.1f} | {steps} ({'last' if kept is None else kept}) |", flush=True)
    target = out["forest"][-1]
    reach = {k: next((i + 1 for i, v in enumerate(out[k]) if v >= target), None) for k in ("unet", "forest")}
    out["summary"] = {"last_round_difference": round(out["unet"][-1] - target, 4),
                      "rounds_to_forest_last_iou": reach}
    print(f"last round: U-Net {out['unet'][-1]:.3f} vs forest {target:.3f} ({out['unet'][-1] - target:+.3f}); "
          f"forest's last-round IoU reached in round {reach['unet']} by the U-Net, {reach['forest']} by the forest")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
