"""Sanity alarms: notices (never errors) that something in the loop is likely to go wrong.

Pure functions; each returns a list of one-line messages (empty when all is well):

- :func:`few_painted`: a class with very few painted pixels;
- :func:`validation_worsening`: held-out validation worse than its best for a long stretch;
- :func:`one_class`: a prediction that is (almost) all one class;
- :func:`image_statistics` / :func:`summarise_statistics` / :func:`far_from_training`: an image
  whose intensity statistics after normalisation lie far from those of the training images (the
  summary is stored in the model's ``meta["image_stats"]`` by training).
"""

from __future__ import annotations

import numpy as np

MIN_PIXELS = 50  # painted pixels below which a class is "very few"
PATIENCE = 8  # validations in a row worse than the best
ONE_CLASS = 0.998  # share of pixels of one class that makes a prediction "all one class"
STAT_KEYS = ("p5", "p50", "p95", "mean", "std", "noise")
MAX_STAT_SAMPLES = 1_000_000  # image statistics read at most about this many pixels (a strided subsample)
LOCATION_TOL = 0.25  # normalised units (0..1 = the image's low..high percentiles) beyond the training range
SCALE_FACTOR = 2.5  # std / noise more than this factor outside the training range


def few_painted(labels_list, class_names: tuple[str, ...] | list[str] = (), min_pixels: int = MIN_PIXELS,
                objects: bool = False) -> list[str]:
    """Classes with fewer than ``min_pixels`` painted pixels (but some), over all annotation arrays."""
    counts: dict[int, int] = {}
    for lab in labels_list:
        lab = np.asarray(lab)
        if objects:
            lab = np.where(lab >= 2, 2, lab)
        vals, n = np.unique(lab[lab > 0], return_counts=True)
        for v, c in zip(vals.tolist(), n.tolist()):
            counts[v] = counts.get(v, 0) + c
    out = []
    for v in sorted(counts):
        if counts[v] < min_pixels:
            name = class_names[v - 1] if 0 < v <= len(class_names) else f"label {v}"
            out.append(f"Class '{name}' (label {v}) has only {counts[v]} painted pixels; paint a few more strokes "
                       "of it, or the model will hardly learn it.")
    return out


def validation_worsening(history: list[dict], patience: int = PATIENCE, use_loss: bool = False) -> list[str]:
    """Validation worse than its best for the last ``patience`` validations in a row.

    ``history``: validation entries with ``val_iou`` (higher is better) and ``val_loss``; ``use_loss``
    (e.g. once the held-out IoU has saturated) compares the loss instead.
    """
    key = "val_loss" if use_loss else "val_iou"
    vals = [h.get(key) for h in history if h.get(key) is not None]
    if len(vals) <= patience:
        return []
    sign = -1.0 if use_loss else 1.0  # higher is better after the sign
    best_before = max(sign * v for v in vals[:-patience])
    recent = [sign * v for v in vals[-patience:]]
    if all(r < best_before for r in recent):
        what = "loss" if use_loss else "IoU"
        return [f"The held-out {what} has been worse than its best for the last {patience} validations: the model "
                "may be learning a mistake in the annotations (see suspect strokes) or overfitting; the best "
                "weights are kept."]
    return []


def one_class(prediction: np.ndarray, class_names=(), share: float = ONE_CLASS) -> list[str]:
    """The prediction is all (``share`` of pixels or more) one class. ``prediction``: labels or probabilities."""
    p = np.asarray(prediction)
    lab = np.argmax(p, axis=0) + 1 if p.dtype.kind == "f" and p.ndim >= 3 else p
    lab = lab[lab > 0]
    if lab.size == 0:
        return []
    vals, n = np.unique(lab, return_counts=True)
    k = int(np.argmax(n))
    if n[k] >= share * lab.size:
        v = int(vals[k])
        name = class_names[v - 1] if 0 < v <= len(class_names) else f"label {v}"
        return [f"The prediction is all '{name}' ({100 * n[k] / lab.size:.1f} % of pixels); paint more strokes of the "
                "other classes, or train longer."]
    return []


# --------------------------------------------------------------------------- image statistics
def image_statistics(image, channel_axis: int | None = None, low: float = 1.0, high: float = 99.8,
                     percentiles: np.ndarray | None = None, max_samples: int | None = None) -> list[dict]:
    """Per channel, statistics of the normalised image (as the network sees it), from a subsample.

    ``p5``/``p50``/``p95``/``mean``/``std`` of the values, and ``noise``: a robust estimate of the
    pixel-to-pixel noise (median absolute difference of X-neighbours x 1.4826 / sqrt 2).
    """
    from .data import ImageView, compute_percentiles, normalize

    view = ImageView(image, channel_axis)
    if percentiles is None:
        percentiles = compute_percentiles(view, low, high)
    sp = view.spatial_shape
    # a strided subsample in the leading axes and Y, but whole X rows: neighbours stay neighbours
    max_samples = max_samples or MAX_STAT_SAMPLES
    n = int(np.prod(sp))
    stride = max(1, int(np.ceil((n / max_samples) ** (1 / max(1, len(sp) - 1)))))
    sub = normalize(view.read(tuple(slice(None, None, stride) for _ in sp[:-1]) + (slice(None),)), percentiles)
    out = []
    for c in range(sub.shape[0]):
        v = sub[c]
        q = np.percentile(v, [5, 50, 95])
        d = np.abs(np.diff(v, axis=-1)) if v.shape[-1] > 1 else np.zeros(1)
        out.append({"p5": float(q[0]), "p50": float(q[1]), "p95": float(q[2]), "mean": float(v.mean()),
                    "std": float(v.std()), "noise": float(np.median(d) * 1.4826 / np.sqrt(2))})
    return out


def summarise_statistics(per_image: list[list[dict]]) -> dict:
    """Range (min, max) of each statistic over the training images, per channel: JSON for ``meta``."""
    if not per_image:
        return {}
    n_ch = len(per_image[0])
    chans = []
    for c in range(n_ch):
        chans.append({k: [min(s[c][k] for s in per_image), max(s[c][k] for s in per_image)] for k in STAT_KEYS})
    return {"channels": chans, "n_images": len(per_image)}


def merge_statistics(summary: dict | None, per_image: list[list[dict]]) -> dict:
    """A summary covering an earlier one (a warm-started model's) and new images' statistics."""
    new = summarise_statistics(per_image)
    old_ch = (summary or {}).get("channels") or []
    if not new or len(old_ch) != len(new["channels"]):
        return new or dict(summary or {})
    chans = []
    for a, b in zip(old_ch, new["channels"]):
        chans.append({k: [min(a[k][0], b[k][0]), max(a[k][1], b[k][1])] if k in a else b[k] for k in b})
    return {"channels": chans, "n_images": int(summary.get("n_images", 0)) + new["n_images"]}


def far_from_training(summary: dict, stats: list[dict]) -> list[str]:
    """Statistics of an image outside the training images' range by more than a tolerance.

    Location statistics (percentiles, mean) by more than LOCATION_TOL normalised units; spread
    statistics (std, noise) by more than a factor SCALE_FACTOR. Empty when no summary is stored.
    """
    chans = (summary or {}).get("channels") or []
    if not chans or len(chans) != len(stats):
        return []
    odd = []
    for c, (rng, s) in enumerate(zip(chans, stats)):
        for k in STAT_KEYS:
            if k not in rng or k not in s:
                continue
            lo, hi = rng[k]
            v = s[k]
            if k in ("std", "noise"):
                bad = v > hi * SCALE_FACTOR or v < lo / SCALE_FACTOR
            else:
                bad = v > hi + LOCATION_TOL or v < lo - LOCATION_TOL
            if bad:
                ch = f" (channel {c})" if len(chans) > 1 else ""
                odd.append(f"{k} {v:.3g} vs {lo:.3g}..{hi:.3g}{ch}")
    if not odd:
        return []
    return ["This image looks unlike the training images after normalisation (" + "; ".join(odd[:4]) + "); the "
            "prediction may be unreliable: check it, and annotate a little of this image if it is wrong."]


def check_image(model, image, channel_axis: int | None = None, percentiles=None) -> list[str]:
    """:func:`far_from_training` for ``image`` against the statistics stored in ``model.meta``."""
    summary = (getattr(model, "meta", None) or {}).get("image_stats")
    if not summary:
        return []
    mc = model.config
    return far_from_training(summary, image_statistics(image, channel_axis, mc.norm_low, mc.norm_high, percentiles))


__all__ = ["few_painted", "validation_worsening", "one_class", "image_statistics", "summarise_statistics",
           "merge_statistics", "far_from_training", "check_image"]
