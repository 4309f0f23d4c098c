"""Benchmark cases and the baselines a user would pick instead of a U-Net, shared by benchmarks.

Cases (``make_case``): realistic synthetic nuclei (``make_realistic_nuclei``) and an RGB texture
image (``make_textures``). The left half of each image is annotated, the right half is held out;
``score`` gives the IoU of the nucleus class there (textures: mean IoU over all classes).
Baselines: an ilastik-style random forest on skimage ``multiscale_basic_features`` (sigma 1..16,
scikit-learn, 100 trees on up to 50,000 annotated pixels, 2 jobs; its seconds include features,
fit and prediction) and Otsu's threshold after a Gaussian blur.
"""

from __future__ import annotations

import ast
import time
from dataclasses import dataclass

import numpy as np

from napari_unet.core.synthetic import make_realistic_nuclei, make_textures, realistic_strokes, texture_strokes

CASES = {
    "2d-dense": dict(shape=(512, 512), kind="nuclei", strokes=False),
    "2d-strokes": dict(shape=(512, 512), kind="nuclei", strokes=True),
    "3d-dense": dict(shape=(48, 128, 128), kind="nuclei", strokes=False),
    "rgb-textures": dict(shape=(384, 384), kind="textures", strokes=True),
}
RF_SAMPLES, RF_TREES = 50_000, 100


def parse_overrides(items) -> dict:
    """``["lr=1e-3", "keep=last"]`` -> ``{"lr": 0.001, "keep": "last"}`` (Python literals, else strings)."""
    out = {}
    for it in items:
        k, v = it.split("=", 1)
        try:
            out[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            out[k] = v
    return out


@dataclass
class Case:
    name: str
    image: np.ndarray  # spatial (+ channels last for RGB)
    annotations: np.ndarray  # label convention, right half 0
    truth: np.ndarray  # label convention, everywhere
    half: int  # first held-out column
    channel_axis: int | None
    ndim: int  # model dimensionality
    n_classes: int


def make_case(name: str, seed: int = 0) -> Case:
    c = CASES[name]
    if c["kind"] == "textures":
        syn = make_textures(c["shape"], seed=seed)
        ann = texture_strokes(syn.semantic, seed=seed + 1)
        ch, n = -1, int(syn.semantic.max())
    else:
        syn = make_realistic_nuclei(c["shape"], seed=seed)
        ann = realistic_strokes(syn.instances, seed=seed + 1) if c["strokes"] else syn.semantic.copy()
        ch, n = None, 2
    half = c["shape"][-1] // 2
    ann = ann.astype(np.uint8)
    ann[..., half:] = 0
    return Case(name, syn.image, ann, syn.semantic, half, ch, len(c["shape"]), n)


def score(case: Case, pred_labels: np.ndarray) -> float:
    """Held-out IoU of the nucleus class, or mean IoU over the classes for textures."""
    p, t = pred_labels[..., case.half:], case.truth[..., case.half:]
    classes = [2] if case.n_classes == 2 else range(1, case.n_classes + 1)
    ious = []
    for c in classes:
        union = np.count_nonzero((p == c) | (t == c))
        ious.append(np.count_nonzero((p == c) & (t == c)) / max(union, 1))
    return float(np.mean(ious))


def random_forest(case: Case, n_jobs: int = 2, seed: int = 0) -> tuple[float, float]:
    """ilastik-style pixel classifier: (held-out score, seconds for features + fit + prediction)."""
    from skimage.feature import multiscale_basic_features
    from sklearn.ensemble import RandomForestClassifier

    t0 = time.perf_counter()
    feats = multiscale_basic_features(case.image, intensity=True, edges=True, texture=True,
                                      sigma_min=1, sigma_max=16, channel_axis=case.channel_axis)
    mask = case.annotations > 0
    X, y = feats[mask], case.annotations[mask]
    rng = np.random.default_rng(seed)
    if len(y) > RF_SAMPLES:  # ilastik samples too; keeps the fit within seconds
        keep = rng.choice(len(y), RF_SAMPLES, replace=False)
        X, y = X[keep], y[keep]
    rf = RandomForestClassifier(n_estimators=RF_TREES, n_jobs=n_jobs, random_state=seed)
    rf.fit(X, y)
    held = feats[..., case.half:, :]
    pred = np.ones(case.truth.shape, np.uint8)
    pred[..., case.half:] = rf.predict(held.reshape(-1, held.shape[-1])).reshape(held.shape[:-1])
    return score(case, pred), time.perf_counter() - t0


def otsu(case: Case) -> tuple[float, float]:
    """Otsu threshold after a Gaussian blur (nuclei cases only): (held-out score, seconds)."""
    from skimage.filters import gaussian, threshold_otsu

    if case.n_classes != 2:
        return float("nan"), 0.0
    t0 = time.perf_counter()
    sm = gaussian(case.image, 1.0)
    pred = np.where(sm > threshold_otsu(sm), 2, 1)
    return score(case, pred), time.perf_counter() - t0
