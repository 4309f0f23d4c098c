"""Losses that learn from the pixels nobody painted (sparse strokes leave most of a patch unlabelled).

* :func:`potts_loss`: an image-aware Potts / CRF regulariser on the softmax (Tang et al., "On
  Regularized Losses for Weakly-supervised CNN Segmentation", ECCV 2018: the relaxed dense-CRF
  energy ``sum_k S_k^T W (1 - S_k)``). Tang et al. use a *dense* bilateral kernel computed with
  a permutohedral lattice (a compiled extension, https://github.com/meng-tang/rloss); here the
  kernel is a *local approximation*: pixel pairs at a few axis and diagonal offsets at dilations
  1, 2, 4 (and 8 in 2D), each weighted by ``exp(-|I_i - I_j|^2 / 2 s^2) * exp(-|d|^2 / 2 s_xy^2)``.
  That is a sparse sample of the same bilateral kernel, written in torch so it runs on any
  device with no extension to build. It makes neighbouring pixels of similar intensity share a
  class, so a boundary pays little where the image has an edge and a lot where it has none: the
  network learns where an object ends from the image, not only from the strokes.
* :func:`consistency_loss`: mean-teacher consistency (Tarvainen & Valpola 2017): the student's
  softmax should match the averaged (EMA) teacher's on another augmented view.
* :func:`pseudo_label_loss`: FixMatch-style (Sohn et al. 2020) cross-entropy to the teacher's
  confident predictions (max probability above a threshold).

All three act on unannotated pixels only (``mask``); annotated pixels are the cross-entropy's.
"""

from __future__ import annotations

import functools
import itertools
import math

import torch
import torch.nn.functional as F


@functools.lru_cache(maxsize=4)
def _offsets(ndim: int) -> tuple[tuple[int, ...], ...]:
    """Neighbour offsets: the axes and (in-plane) diagonals at a few dilations, one of each +/- pair."""
    out = []
    if ndim == 2:
        dirs = [(0, 1), (1, 0), (1, 1), (1, -1)]
        dils = (1, 2, 4, 8)
    else:  # 3D: the three axes plus the YX diagonals; fewer dilations (the volumes are smaller)
        dirs = [(0, 0, 1), (0, 1, 0), (1, 0, 0), (0, 1, 1), (0, 1, -1)]
        dils = (1, 2, 4)
    for d, v in itertools.product(dils, dirs):
        out.append(tuple(d * c for c in v))
    return tuple(out)


def _pair_slices(shape: tuple[int, ...], off: tuple[int, ...]):
    """Slices a, b over the spatial axes so that x[a] and x[b] are pixels ``off`` apart."""
    a, b = [], []
    for n, o in zip(shape, off):
        if o >= 0:
            a.append(slice(0, n - o))
            b.append(slice(o, n))
        else:
            a.append(slice(-o, n))
            b.append(slice(0, n + o))
    return (slice(None), slice(None)) + tuple(a), (slice(None), slice(None)) + tuple(b)


def potts_loss(probs: torch.Tensor, image: torch.Tensor, mask: torch.Tensor, sigma: float = 0.15,
               sigma_xy: float = 6.0) -> torch.Tensor:
    """Relaxed Potts energy with a bilateral kernel, per unannotated pixel and offset (0..1).

    ``probs``: softmax (N, K, *spatial); ``image``: normalised input (N, C, *spatial), not
    differentiated; ``mask``: (N, *spatial), true where the pixel is NOT annotated. A pair counts
    when at least one of its pixels is unannotated (pairs of two annotated pixels are left to the
    cross-entropy). For a pair (i, j) the relaxed cut is ``1 - <p_i, p_j>`` (``sum_k p_ik (1 - p_jk)``
    summed over classes), zero when both are sure of the same class.
    """
    nd = probs.ndim - 2
    img = image.detach().float()
    m = mask[:, None].float()
    total = probs.new_zeros(())
    offsets = _offsets(nd)
    for off in offsets:
        a, b = _pair_slices(tuple(probs.shape[2:]), off)
        diff = ((img[a] - img[b]) ** 2).mean(1, keepdim=True)
        w = torch.exp(-diff / (2 * sigma ** 2)) * math.exp(-sum(o * o for o in off) / (2 * sigma_xy ** 2))
        pair_mask = torch.maximum(m[a], m[b])
        cut = 1 - (probs[a] * probs[b]).sum(1, keepdim=True)
        total = total + (w * pair_mask * cut).sum()
    return total / (m.sum().clamp(min=1.0) * len(offsets))


def consistency_loss(student_probs: torch.Tensor, teacher_probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the softmaxes over unannotated pixels (the teacher is a target)."""
    sq = ((student_probs - teacher_probs.detach()) ** 2).sum(1)
    m = mask.float()
    return (sq * m).sum() / m.sum().clamp(min=1.0)


def pseudo_label_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, mask: torch.Tensor,
                      threshold: float, class_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy to the teacher's argmax where it is at least ``threshold`` sure, on unannotated pixels."""
    conf, target = teacher_probs.detach().max(1)
    keep = mask & (conf >= threshold)
    if not bool(keep.any()):
        return student_logits.new_zeros(())
    ce = F.cross_entropy(student_logits, target, weight=class_weight, reduction="none")
    return (ce * keep).sum() / keep.sum()


def flip_axes(ndim: int, generator: torch.Generator | None = None) -> tuple[int, ...]:
    """A random subset of the spatial axes (as tensor dims of (N, C, *spatial)) to flip."""
    pick = torch.rand(ndim, generator=generator) < 0.5
    return tuple(2 + i for i in range(ndim) if pick[i])


def unlabelled_terms(tc, logits: torch.Tensor, x: torch.Tensor, target: torch.Tensor, teacher, amp_ctx,
                     ramp: float, class_weight: torch.Tensor | None = None,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """The weighted sum of the enabled unannotated-pixel terms of TrainConfig ``tc`` for one batch.

    ``logits``: the student's (N, K, *spatial); ``x``: its input; ``target``: class index, -1 where
    not annotated; ``teacher``: the averaged network (eval mode) or None; ``ramp``: 0..1 factor.
    """
    mask = target < 0
    total = logits.new_zeros((), dtype=torch.float32)
    if ramp <= 0 or not bool(mask.any()):
        return total
    probs = torch.softmax(logits.float(), 1)
    if tc.regularizer:
        total = total + tc.regularizer * ramp * potts_loss(probs, x, mask, tc.regularizer_sigma)
    if (tc.consistency or tc.pseudo_labels) and teacher is not None:
        nd = x.ndim - 2
        axes = flip_axes(nd, generator)
        # another view for the teacher: flipped and with its own brightness/contrast jitter
        n = x.shape[0]
        shape = (n, 1) + (1,) * nd
        gain = 0.9 + 0.2 * torch.rand(shape, generator=generator)
        shift = 0.1 * torch.rand(shape, generator=generator) - 0.05
        view = x * gain.to(x.device) + shift.to(x.device)
        if axes:
            view = torch.flip(view, axes)
        with torch.no_grad(), amp_ctx():
            t_logits = teacher(view).float()[:, :logits.shape[1]]  # class channels (an objects head adds more)
        t_probs = torch.softmax(t_logits, 1)
        if axes:
            t_probs = torch.flip(t_probs, axes)
        if tc.consistency:
            total = total + tc.consistency * ramp * consistency_loss(probs, t_probs, mask)
        if tc.pseudo_labels:
            total = total + tc.pseudo_labels * ramp * pseudo_label_loss(logits.float(), t_probs, mask,
                                                                        tc.pseudo_threshold, class_weight)
    return total


__all__ = ["potts_loss", "consistency_loss", "pseudo_label_loss", "flip_axes", "unlabelled_terms"]
