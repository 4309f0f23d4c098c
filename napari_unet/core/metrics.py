"""Segmentation metrics in the label convention (0 ignored, 1 background, 2.. classes)."""

from __future__ import annotations

import numpy as np


def iou_per_class(pred: np.ndarray, truth: np.ndarray, n_classes: int) -> list[float]:
    """IoU of each object class (label values 2..n_classes) over the pixels where truth > 0.

    A class absent from both truth and prediction scores NaN.
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"shape mismatch: {pred.shape} vs {truth.shape}")
    valid = truth > 0
    out = []
    for c in range(2, n_classes + 1):
        p, t = (pred == c) & valid, truth == c
        union = np.count_nonzero(p | t)
        out.append(np.count_nonzero(p & t) / union if union else float("nan"))
    return out


def mean_object_iou(conf: np.ndarray) -> float:
    """Mean IoU over object classes (all but background) from a confusion matrix (truth x prediction),
    over the classes present in truth or prediction; NaN when none is."""
    ious = []
    for c in range(1, conf.shape[0]):
        tp = conf[c, c]
        denom = conf[c, :].sum() + conf[:, c].sum() - tp
        if denom > 0:
            ious.append(tp / denom)
    return float(np.mean(ious)) if ious else float("nan")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean masks (1.0 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = np.count_nonzero(a) + np.count_nonzero(b)
    return 1.0 if total == 0 else 2 * np.count_nonzero(a & b) / total


def agreement(prediction: np.ndarray, corrected: np.ndarray) -> float:
    """How much of a prediction survived the user's corrections: mean Dice over the classes present.

    ``prediction`` and ``corrected`` are label arrays (1 background, 2.. classes; 0 in
    ``corrected`` = not annotated, ignored).
    """
    valid = corrected > 0
    classes = [c for c in np.unique(np.concatenate([prediction[valid], corrected[valid]])) if c > 0]
    if not classes:
        return float("nan")
    return float(np.mean([dice((prediction == c) & valid, (corrected == c) & valid) for c in classes]))
