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


# --------------------------------------------------------------------------- objects
AP_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


def object_ious(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU of every (true object, predicted object) pair; instance masks with 0 = background.

    Returns a (n_true, n_pred) matrix over the ids in order of ``np.unique`` (0 excluded).
    """
    truth, pred = np.asarray(truth), np.asarray(pred)
    if truth.shape != pred.shape:
        raise ValueError(f"shape mismatch: {truth.shape} vs {pred.shape}")
    t_ids, t_inv = np.unique(truth, return_inverse=True)
    p_ids, p_inv = np.unique(pred, return_inverse=True)
    t_inv, p_inv = t_inv.ravel(), p_inv.ravel()
    # contingency table of id pairs (index 0 is background when present)
    table = np.bincount(t_inv * len(p_ids) + p_inv, minlength=len(t_ids) * len(p_ids)).reshape(len(t_ids), len(p_ids))
    t_keep, p_keep = t_ids != 0, p_ids != 0
    inter = table[np.ix_(t_keep, p_keep)].astype(np.float64)
    t_size, p_size = table.sum(1)[t_keep], table.sum(0)[p_keep]
    union = t_size[:, None] + p_size[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_objects(truth: np.ndarray, pred: np.ndarray, thresholds=AP_THRESHOLDS) -> dict:
    """Object detection scores as in DSB2018 / StarDist: a predicted object matches a true one when
    their IoU >= t (one to one, best total IoU: scipy's linear_sum_assignment).

    Returns ``{"ap": {t: TP/(TP+FP+FN)}, "f1": {t: 2TP/(2TP+FP+FN)}, "tp": {t: ..}, "n_true",
    "n_pred", "count_error": n_pred - n_true, "relative_count_error": |n_pred - n_true| / n_true}``.
    Nothing to find and nothing found scores 1.
    """
    from scipy.optimize import linear_sum_assignment

    iou = object_ious(truth, pred)
    n_true, n_pred = iou.shape
    out = {"ap": {}, "f1": {}, "tp": {}, "n_true": n_true, "n_pred": n_pred, "count_error": n_pred - n_true,
           "relative_count_error": abs(n_pred - n_true) / n_true if n_true else float(n_pred > 0)}
    for t in thresholds:
        if n_true and n_pred:
            cost = np.where(iou >= t, -iou, 0.0)  # pairs below t cannot match
            rows, cols = linear_sum_assignment(cost)
            tp = int(np.count_nonzero(iou[rows, cols] >= t))
        else:
            tp = 0
        fp, fn = n_pred - tp, n_true - tp
        denom = tp + fp + fn
        out["tp"][t] = tp
        out["ap"][t] = tp / denom if denom else 1.0
        out["f1"][t] = 2 * tp / (2 * tp + fp + fn) if denom else 1.0
    return out
