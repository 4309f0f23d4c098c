"""Continuous training: annotation edits reach a running :func:`~napari_unet.core.training.train`.

The training loop polls an *annotation source*, a callable that returns ``None`` (nothing new) or
one or more :class:`AnnotationUpdate` (a private copy of one image's whole annotation array). The
GUI thread puts copies into an :class:`AnnotationMailbox` (thread-safe, keeps the latest copy per
image); the worker's loop takes them out between steps, as RootPainter's trainer re-reads its
annotation folder between batches. No Qt here: the widget decides when to copy (debounced paint
events) and the core decides when to look.

:class:`LiveData` keeps the normalised images (normalised once) and the current annotations, and
rebuilds the training samples of a changed image only. Newly painted pixels are remembered, so
the sampler can centre patches on them first (:class:`FreshFirstSampler`): a stroke painted where
the model is wrong changes the preview within seconds rather than after an epoch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import UserError
from .events import AnnotationsChanged  # noqa: F401 - re-exported
from .data import ImageView, PatchSampler, Sample, check_labels, compute_percentiles, instances_to_classes, normalize

FRESH_FRACTION = 0.5  # share of patches centred on newly painted pixels, right after an edit
FRESH_STEPS = 300  # steps after an edit during which new strokes are favoured


@dataclass(frozen=True)
class AnnotationUpdate:
    """A new state of one image's annotations: ``index`` into train()'s images, a private copy."""

    index: int
    labels: np.ndarray
    version: int = 0


AnnotationSource = Callable[[], "AnnotationUpdate | list[AnnotationUpdate] | None"]


class AnnotationMailbox:
    """Thread-safe hand-over of annotation copies from the GUI thread to the training worker.

    ``put`` (GUI thread) stores a copy per image index, replacing an older one not yet taken;
    calling the mailbox (the worker) takes everything pending. It is an :data:`AnnotationSource`.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._pending: dict[int, AnnotationUpdate] = {}
        self.version = 0

    def put(self, index: int, labels: np.ndarray, copy: bool = True) -> int:
        arr = np.array(labels, copy=True) if copy else labels
        with self._lock:
            self.version += 1
            self._pending[index] = AnnotationUpdate(index, arr, self.version)
            return self.version

    def __call__(self) -> list[AnnotationUpdate] | None:
        with self._lock:
            if not self._pending:
                return None
            out = sorted(self._pending.values(), key=lambda u: u.version)
            self._pending = {}
        return out

    @property
    def pending(self) -> bool:
        with self._lock:
            return bool(self._pending)


def as_updates(got) -> list[AnnotationUpdate]:
    if got is None:
        return []
    if isinstance(got, AnnotationUpdate):
        return [got]
    if isinstance(got, tuple) and len(got) in (2, 3) and isinstance(got[0], (int, np.integer)):
        return [AnnotationUpdate(int(got[0]), got[1], int(got[2]) if len(got) == 3 else 0)]
    return list(got)


class LiveData:
    """Images normalised once, their current annotations, and training samples rebuilt per image."""

    def __init__(self, images, labels, ndim: int, channel_axis, norm_low: float, norm_high: float,
                 from_instances: bool = False):
        axes = channel_axis if isinstance(channel_axis, (list, tuple)) else [channel_axis] * len(images)
        self.views = [ImageView(img, ax) for img, ax in zip(images, axes)]
        self.pct = [compute_percentiles(v, norm_low, norm_high) for v in self.views]
        self.ndim = ndim
        self.from_instances = from_instances
        self.labels = [self._check(i, lab) for i, lab in enumerate(labels)]
        self._planes: dict[tuple, np.ndarray] = {}  # normalised planes (2D models), read once
        self.fresh: list[np.ndarray | None] = []  # per sample: newly painted pixels, or None
        self.samples: list[Sample] = []
        self._owner: list[int] = []  # image index of each sample
        self._rebuild({})

    def _check(self, i: int, lab) -> np.ndarray:
        if self.from_instances:
            lab = instances_to_classes(lab, name=f"instance mask of image {i + 1}").astype(np.int64)
        else:
            lab = check_labels(lab, name=f"annotations of image {i + 1}")
        if lab.shape != self.views[i].spatial_shape:
            raise UserError(f"The new annotations of image {i + 1} have shape {lab.shape} but the image has "
                            f"{self.views[i].spatial_shape}; they must match.")
        return lab

    def _plane(self, i: int, idx: tuple) -> np.ndarray:
        key = (i,) + idx
        if key not in self._planes:
            sl = tuple(int(j) for j in idx) + (slice(None),) * (len(self.views[i].spatial_shape) - len(idx))
            self._planes[key] = normalize(self.views[i].read(sl), self.pct[i])
        return self._planes[key]

    def _rebuild(self, fresh_by_image: dict[int, np.ndarray]) -> None:
        samples, owner, fresh = [], [], []
        for i, lab in enumerate(self.labels):
            new = fresh_by_image.get(i)
            if self.ndim == 3:
                if lab.any():
                    samples.append(Sample(self._plane(i, ()), lab))
                    owner.append(i)
                    fresh.append(new)
                continue
            lead = lab.shape[:-2]
            for idx in (np.ndindex(*lead) if lead else [()]):
                if lab[idx].any():
                    samples.append(Sample(self._plane(i, idx), lab[idx]))
                    owner.append(i)
                    fresh.append(None if new is None or not new[idx].any() else new[idx])
        self.samples, self._owner, self.fresh = samples, owner, fresh

    def update(self, updates: list[AnnotationUpdate]) -> int:
        """Swap in new annotation copies; return the number of newly painted/changed pixels."""
        checked = {}
        for u in updates:
            if not 0 <= u.index < len(self.labels):
                raise UserError(f"Annotation update for image {u.index + 1}, but training has {len(self.labels)} "
                                "image(s).")
            checked[u.index] = self._check(u.index, u.labels)
        fresh, n_new = {}, 0
        for i, lab in checked.items():
            new = (lab != self.labels[i]) & (lab > 0)
            n_new += int(new.sum())
            fresh[i] = new
            self.labels[i] = lab
        self._rebuild(fresh)
        return n_new

    @property
    def annotated(self) -> int:
        return int(sum(np.count_nonzero(lab) for lab in self.labels))


class FreshFirstSampler(PatchSampler):
    """A :class:`PatchSampler` that centres a share of patches on newly painted pixels."""

    def __init__(self, samples, patch_size, annotated_fraction=0.9, augment=True, seed=0, fresh=None,
                 fresh_fraction: float = FRESH_FRACTION):
        super().__init__(samples, patch_size, annotated_fraction, augment, seed=seed)
        self.fresh_fraction = fresh_fraction
        self.fresh = [(si, np.argwhere(m)) for si, m in enumerate(fresh or []) if m is not None and m.any()]

    def _centre(self):
        if self.fresh and self.fresh_fraction > 0 and self.rng.random() < self.fresh_fraction:
            sizes = np.array([len(p) for _, p in self.fresh], np.float64)
            si, pts = self.fresh[self.rng.choice(len(self.fresh), p=sizes / sizes.sum())]
            return si, pts[self.rng.integers(len(pts))]
        return super()._centre()




def split_keeping_fresh(samples: list[Sample], fresh: list, fraction: float, block, rng):
    """:func:`~napari_unet.core.data.split_validation` where newly painted pixels always train.

    Returns (training samples, samples for validation, regions): a new stroke is never held out
    (the user painted it to be learnt now) and never scored (it would be scored on what it teaches).
    """
    from .data import split_validation

    if not any(m is not None for m in fresh):
        train, regions = split_validation(samples, fraction, block, rng)
        return train, samples, regions
    old = [Sample(s.image, np.where(m, 0, s.labels)) if m is not None else s for s, m in zip(samples, fresh)]
    train, regions = split_validation(old, fraction, block, rng)
    if not regions:
        return samples, samples, []
    train = [Sample(t.image, np.where(m, s.labels, t.labels)) if m is not None else t
             for t, s, m in zip(train, samples, fresh)]
    return train, old, regions



class LiveAnnotations:
    """The training loop's side of continuous training: polls the source, rebuilds the data.

    ``poll(step, patch)`` is cheap between polls (every ``poll_every`` seconds it asks the source).
    On changed annotations it returns :class:`AnnotationsChanged` and exposes the new
    ``train_samples``, ``val_samples``, ``val_regions`` and ``sampler`` (new strokes favoured for
    FRESH_STEPS steps); a bad edit returns a Notice and the previous annotations stay in use.
    """

    def __init__(self, source: AnnotationSource, images, labels, *, ndim: int, channel_axis, norm_low: float,
                 norm_high: float, from_instances: bool, n_classes: int, train_config, poll_every: float = 1.0):
        self.source, self.images, self.labels = source, images, labels
        self.args = (ndim, channel_axis, norm_low, norm_high, from_instances)
        self.n_classes, self.tc, self.poll_every = n_classes, train_config, poll_every
        self.data: LiveData | None = None
        self.last = time.perf_counter()
        self.fresh_until = -1
        self.sampler = None

    def poll(self, step: int, patch: tuple[int, ...]):
        from .data import check_annotations
        from .events import Notice

        if step == self.fresh_until and self.sampler is not None:
            self.sampler.fresh_fraction = 0.0  # the new strokes have had their turn
        if time.perf_counter() - self.last < self.poll_every:
            return None
        self.last = time.perf_counter()
        updates = as_updates(self.source())
        if not updates:
            return None
        try:
            if self.data is None:  # images normalised once, on the first edit
                self.data = LiveData(self.images, self.labels, *self.args)
            n_new = self.data.update(updates)
            check_annotations([s.labels for s in self.data.samples], self.n_classes)
        except UserError as e:  # a bad edit never ends the run
            return Notice(f"New annotations not used: {e}")
        tc, d = self.tc, self.data
        rng = np.random.default_rng(tc.seed)  # the same held-out blocks while they exist: a stable split
        self.train_samples, self.val_samples, self.val_regions = split_keeping_fresh(
            d.samples, d.fresh, tc.val_fraction, tuple(max(8, p // 2) for p in patch), rng)
        self.sampler = FreshFirstSampler(self.train_samples, patch, tc.annotated_fraction, tc.augment,
                                         seed=tc.seed + step, fresh=d.fresh)
        self.fresh_until = step + FRESH_STEPS
        return AnnotationsChanged(step, max(u.version for u in updates), d.annotated, n_new,
                                  len(self.train_samples), len(self.val_regions))


__all__ = ["AnnotationUpdate", "AnnotationSource", "AnnotationsChanged", "AnnotationMailbox", "LiveData",
           "FreshFirstSampler", "LiveAnnotations", "as_updates", "split_keeping_fresh", "FRESH_FRACTION", "FRESH_STEPS"]
