"""Where to annotate next: uncertainty maps, regions ranked by uncertainty, suspect strokes.

Pure functions of probability maps ``(n_classes, *spatial)`` (channel c = label value c + 1) and
annotations (0 not annotated, 1 background, 2.. classes):

- :func:`uncertainty_map`: per pixel, 0 (sure) .. 1 (unsure): normalised entropy, or one minus the
  margin between the two most likely classes.
- :func:`tta_iter` / :func:`tta_predict`: probabilities averaged over flipped views of the image and
  the views' disagreement (mean total-variation distance of each view from the mean), which also
  catches pixels the model is confidently wrong about in only some orientations.
- :func:`rank_regions`: tiles of a 2D image (planes of a stack) ordered from least to most sure,
  each with a score and the centre of its uncertainty, for a "go there" list.
- :func:`suspect_strokes`: painted strokes the model confidently contradicts (a slipped brush, a
  wrong label), ranked: a few bad pixels quietly damage a small training set.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import numpy as np

KINDS = ("entropy", "margin")


# --------------------------------------------------------------------------- maps
def uncertainty_map(probabilities: np.ndarray, kind: str = "entropy") -> np.ndarray:
    """Uncertainty per pixel in [0, 1] (float32, the spatial shape of ``probabilities``).

    ``entropy``: Shannon entropy divided by log(n_classes) (1 = all classes equally likely).
    ``margin``: 1 - (p_first - p_second) (1 = the two best classes tie).
    """
    p = np.asarray(probabilities, dtype=np.float32)
    if p.ndim < 3 or p.shape[0] < 2:
        raise ValueError(f"probabilities must be (n_classes >= 2, *spatial), got shape {p.shape}")
    if kind == "entropy":
        with np.errstate(divide="ignore", invalid="ignore"):
            h = -np.sum(np.where(p > 0, p * np.log(np.clip(p, 1e-12, None)), 0.0), axis=0)
        out = h / np.log(p.shape[0])
    elif kind == "margin":
        top2 = np.partition(p, p.shape[0] - 2, axis=0)[-2:]
        out = 1.0 - (top2[1] - top2[0])
    else:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def disagreement(views: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(mean probabilities, disagreement in [0, 1]) of several probability maps of one image.

    Disagreement: the mean over views of the total-variation distance 0.5 * sum_c |p_view - p_mean|.
    """
    if not views:
        raise ValueError("need at least one view")
    mean = np.mean(views, axis=0, dtype=np.float32)
    tv = np.mean([0.5 * np.abs(v - mean).sum(axis=0) for v in views], axis=0)
    return mean.astype(np.float32), np.clip(tv, 0, 1).astype(np.float32)


def _flip_axes(shape: tuple[int, ...], channel_axis: int | None) -> tuple[int, int]:
    """The array axes of the image's last two spatial axes (Y, X)."""
    nd = len(shape)
    spatial = [a for a in range(nd) if channel_axis is None or a != channel_axis % nd]
    return spatial[-2], spatial[-1]


def tta_iter(model, image, *, channel_axis: int | None = None, config=None, percentiles=None
             ) -> Generator[object, None, tuple[np.ndarray, np.ndarray]]:
    """Predict ``image`` in 4 flipped views (none, Y, X, both); return (mean probabilities, disagreement).

    A generator like :func:`~napari_unet.core.inference.predict_iter` (it yields progress of each
    view), so a GUI worker can stop it. Flips keep any tile shape, unlike 90-degree rotations.
    """
    from ..config import PredictConfig
    from .data import ImageView, compute_percentiles
    from .inference import predict_iter

    config = (config or PredictConfig()).replace(tta=False)  # these 4 views are the augmentation
    if percentiles is None:  # the same normalisation for every view
        view = ImageView(image, channel_axis)
        percentiles = compute_percentiles(view, model.config.norm_low, model.config.norm_high)
    arr = np.asarray(image)
    ay, ax = _flip_axes(arr.shape, channel_axis)
    views = []
    for flips in ((), (ay,), (ax,), (ay, ax)):
        flipped = np.flip(arr, flips) if flips else arr
        probs = yield from predict_iter(model, np.ascontiguousarray(flipped), channel_axis=channel_axis,
                                        config=config, percentiles=percentiles, check_image=not views)
        # axes in the probabilities: class axis first, then the spatial axes (channel axis removed)
        back = tuple(_prob_axis(a, channel_axis, arr.ndim) for a in flips)
        views.append(np.flip(probs, back) if back else probs)
    return disagreement(views)


def _prob_axis(axis: int, channel_axis: int | None, ndim: int) -> int:
    """Where image axis ``axis`` sits in the probabilities (class axis first, channel axis gone)."""
    shift = 1 if channel_axis is not None and axis > channel_axis % ndim else 0
    return axis + 1 - shift


def tta_predict(model, image, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """Blocking form of :func:`tta_iter`."""
    from .util import drain

    return drain(tta_iter(model, image, **kwargs))


# --------------------------------------------------------------------------- ranked regions
@dataclass(frozen=True)
class Region:
    """A place to look at: ``slices`` index the spatial array; ``centre`` is where the uncertainty is."""

    score: float  # mean uncertainty over the region's pixels, 0..1
    centre: tuple[float, ...]  # spatial coordinates (stack indices included)
    slices: tuple[slice, ...]
    kind: str  # "tile" or "plane"

    def describe(self) -> str:
        where = ", ".join(f"{c:.0f}" for c in self.centre)
        return f"{self.kind} at ({where}): uncertainty {self.score:.2f}"


def _centroid(weights: np.ndarray, offset) -> tuple[float, ...]:
    total = float(weights.sum())
    if total <= 0:
        return tuple(o + (n - 1) / 2 for o, n in zip(offset, weights.shape))
    grids = np.indices(weights.shape, dtype=np.float64)
    return tuple(float(o + (g * weights).sum() / total) for o, g in zip(offset, grids))


def rank_regions(uncertainty: np.ndarray, *, tile: int = 64, top: int = 10, by: str = "auto",
                 annotated: np.ndarray | None = None) -> list[Region]:
    """Regions ordered from least to most sure (highest mean uncertainty first), at most ``top``.

    ``by``: ``"tiles"`` (squares of ``tile`` pixels in the last two axes; on a stack, tiles of every
    plane), ``"planes"`` (each YX plane of a stack) or ``"auto"`` (tiles in 2D, planes in stacks).
    ``annotated``: labels of the same shape; painted pixels count as sure (the user has spoken).
    """
    u = np.asarray(uncertainty, dtype=np.float32)
    if u.ndim < 2:
        raise ValueError(f"uncertainty must have at least 2 axes, got shape {u.shape}")
    if annotated is not None:
        if annotated.shape != u.shape:
            raise ValueError(f"annotated shape {annotated.shape} differs from {u.shape}")
        u = np.where(np.asarray(annotated) > 0, 0.0, u).astype(np.float32)
    if by == "auto":
        by = "tiles" if u.ndim == 2 else "planes"
    if by not in ("tiles", "planes"):
        raise ValueError(f"by must be 'auto', 'tiles' or 'planes', got {by!r}")
    if by == "planes" and u.ndim == 2:
        by = "tiles"
    lead = u.shape[:-2]
    out: list[Region] = []
    for idx in (np.ndindex(*lead) if lead else [()]):
        plane = u[idx]
        pre = tuple(slice(i, i + 1) for i in idx)
        if by == "planes":
            out.append(Region(float(plane.mean()), tuple(float(i) for i in idx) + _centroid(plane ** 2, (0, 0)),
                              pre + (slice(0, plane.shape[0]), slice(0, plane.shape[1])), "plane"))
            continue
        h, w = plane.shape
        for y in range(0, h, tile):
            for x in range(0, w, tile):
                block = plane[y:y + tile, x:x + tile]
                # squared weights pull the centre to the most uncertain pixels, not the tile's middle
                out.append(Region(float(block.mean()), tuple(float(i) for i in idx) + _centroid(block ** 2, (y, x)),
                                  pre + (slice(y, min(y + tile, h)), slice(x, min(x + tile, w))), "tile"))
    out.sort(key=lambda r: -r.score)
    return out[:top]


# --------------------------------------------------------------------------- suspect strokes
@dataclass(frozen=True)
class Suspect:
    """A connected painted stroke (pixels of one label value) that the model contradicts."""

    label: int  # the painted value
    predicted: int  # the label value the model prefers on the contradicted pixels
    pixels: int  # size of the stroke
    contradicted: int  # its pixels where another class has probability >= confidence
    confidence: float  # mean probability of the preferred class on those pixels
    centre: tuple[float, ...]
    slices: tuple[slice, ...]

    @property
    def fraction(self) -> float:
        return self.contradicted / max(self.pixels, 1)

    @property
    def score(self) -> float:
        return self.contradicted * self.confidence

    def describe(self) -> str:
        where = ", ".join(f"{c:.0f}" for c in self.centre)
        return (f"label {self.label} at ({where}): {self.contradicted}/{self.pixels} px predicted "
                f"{self.predicted} (p {self.confidence:.2f})")


def suspect_strokes(probabilities: np.ndarray, labels: np.ndarray, *, confidence: float = 0.9,
                    min_fraction: float = 0.5, min_pixels: int = 3, top: int = 20, plane_ndim: int | None = None,
                    objects: bool = False) -> list[Suspect]:
    """Painted strokes the model confidently contradicts, most damaging first.

    A stroke is a connected component of pixels painted with the same value (in each YX plane of a
    stack when ``plane_ndim`` is 2, across all axes otherwise). It is suspect when at least
    ``min_fraction`` of its pixels (and ``min_pixels``) have another class with probability >=
    ``confidence``. Ranked by (contradicted pixels x mean confidence). ``objects``: labels 2.. are
    object ids (one class, label 2).
    """
    from skimage.measure import label as cc_label, regionprops

    p = np.asarray(probabilities)
    lab = np.asarray(labels)
    if p.shape[1:] != lab.shape:
        raise ValueError(f"probabilities {p.shape} do not match labels {lab.shape}")
    cls = np.where(lab >= 2, 2, lab) if objects else lab
    pred = np.argmax(p, axis=0) + 1
    pmax = np.max(p, axis=0)
    wrong = (lab > 0) & (pred != cls) & (pmax >= confidence)
    if not wrong.any():
        return []
    nd = plane_ndim if plane_ndim is not None else lab.ndim
    lead = lab.shape[:lab.ndim - nd]
    found: list[Suspect] = []
    for idx in (np.ndindex(*lead) if lead else [()]):
        if not wrong[idx].any():
            continue
        # skimage labels regions of equal value apart (touching strokes of two values stay two strokes)
        comps = cc_label(np.asarray(lab[idx]), background=0, connectivity=nd)
        for rp in regionprops(comps):
            sl = rp.slice
            mask = comps[sl] == rp.label
            w = wrong[idx][sl] & mask
            n_wrong = int(w.sum())
            if n_wrong < min_pixels or n_wrong < min_fraction * rp.area:
                continue
            preds = pred[idx][sl][w]
            top_pred = int(np.bincount(preds).argmax())
            value = int(lab[idx][sl][mask][0])
            centre = tuple(float(i) for i in idx) + tuple(float(c) for c in rp.centroid)
            found.append(Suspect(value, top_pred, int(rp.area), n_wrong, float(pmax[idx][sl][w].mean()),
                                 centre, tuple(slice(i, i + 1) for i in idx) + tuple(sl)))
    found.sort(key=lambda s: -s.score)
    return found[:top]


__all__ = ["uncertainty_map", "disagreement", "tta_iter", "tta_predict", "Region", "rank_regions", "Suspect",
           "suspect_strokes", "KINDS"]
