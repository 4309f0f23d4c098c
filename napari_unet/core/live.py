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
from .data import PatchSampler, Sample, make_samples

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
    """The current annotations and their training samples, rebuilt per changed image.

    Samples come from :func:`~napari_unet.core.data.make_samples` (the same checks, normalisation
    and per-plane split as a fixed-budget run; ``sample_kwargs`` pass through), for the changed
    image only. ``fresh`` marks, per sample, the pixels painted or changed by the last update.
    """

    def __init__(self, images, labels, ndim: int, in_channels: int | None, channel_axis, norm_low: float,
                 norm_high: float, from_instances: bool = False, **sample_kwargs):
        self.images = list(images)
        self.axes = channel_axis if isinstance(channel_axis, (list, tuple)) else [channel_axis] * len(self.images)
        self.args = (ndim, in_channels, norm_low, norm_high)
        self.kwargs = dict(from_instances=from_instances, **sample_kwargs)
        self.labels = [self._check(i, lab) for i, lab in enumerate(labels)]
        self.per_image = [self._samples(i, self.labels[i]) for i in range(len(self.images))]
        self.fresh_per_image: list[list] = [[None] * len(s) for s in self.per_image]

    def _check(self, i: int, lab) -> np.ndarray:
        """A private copy, as given (make_samples checks and converts it)."""
        return np.array(lab, copy=True)

    def _painted(self, lab: np.ndarray) -> np.ndarray:
        # an instance mask annotates every pixel (0 is background there)
        return np.ones(lab.shape, bool) if self.kwargs["from_instances"] else lab > 0

    def _samples(self, i: int, lab: np.ndarray) -> list[Sample]:
        ndim, in_ch, low, high = self.args
        kwargs = dict(self.kwargs)
        if kwargs.get("percentiles") is not None:  # per image: this image's only
            kwargs["percentiles"] = [kwargs["percentiles"][i]]
        return make_samples([self.images[i]], [lab], ndim, in_ch, [self.axes[i]], low, high, **kwargs)

    def _planes(self, lab: np.ndarray) -> list[tuple]:
        """Index of each sample of an image in its stack, in make_samples' order (annotated planes)."""
        if self.args[0] == 3:
            return [()] if self._painted(lab).any() else []
        lead = lab.shape[:-2]
        painted = self._painted(lab)
        return [idx for idx in (np.ndindex(*lead) if lead else [()]) if painted[idx].any()]

    def update(self, updates: list[AnnotationUpdate]) -> int:
        """Swap in new annotation copies; return the number of newly painted/changed pixels.

        Raises UserError (nothing changed) when an update is unusable.
        """
        staged = {}
        for u in updates:
            if not 0 <= u.index < len(self.labels):
                raise UserError(f"Annotation update for image {u.index + 1}, but training has {len(self.labels)} "
                                "image(s).")
            lab = self._check(u.index, u.labels)
            staged[u.index] = (lab, self._samples(u.index, lab))
        n_new = 0
        for i, (lab, samples) in staged.items():
            new = self._painted(lab) & (lab != self.labels[i] if lab.shape == self.labels[i].shape else True)
            n_new += int(new.sum())
            self.labels[i], self.per_image[i] = lab, samples
            self.fresh_per_image[i] = [new[idx] if new[idx].any() else None for idx in self._planes(lab)]
        return n_new

    @property
    def samples(self) -> list[Sample]:
        return [s for per in self.per_image for s in per]

    @property
    def fresh(self) -> list:
        return [m for per in self.fresh_per_image for m in per]

    @property
    def annotated(self) -> int:
        return int(sum(np.count_nonzero(self._painted(lab)) for lab in self.labels))


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
    old = [Sample(s.image, np.where(m, 0, s.labels), s.target) if m is not None else s for s, m in zip(samples, fresh)]
    train, regions = split_validation(old, fraction, block, rng)
    if not regions:
        return samples, samples, []
    train = [Sample(t.image, np.where(m, s.labels, t.labels), t.target) if m is not None else t
             for t, s, m in zip(train, samples, fresh)]
    return train, old, regions



class LiveAnnotations:
    """The training loop's side of continuous training: polls the source, rebuilds the data.

    ``poll(step, patch)`` is cheap between polls (every ``poll_every`` seconds it asks the source).
    On changed annotations it returns :class:`AnnotationsChanged` and exposes the new
    ``train_samples``, ``val_samples``, ``val_regions`` and ``sampler`` (new strokes favoured for
    FRESH_STEPS steps); a bad edit returns a Notice and the previous annotations stay in use.
    """

    def __init__(self, source: AnnotationSource, images, labels, *, ndim: int, in_channels: int, channel_axis,
                 norm_low: float, norm_high: float, from_instances: bool, n_classes: int, train_config,
                 poll_every: float = 1.0, **sample_kwargs):
        self.source, self.images, self.labels = source, images, labels
        self.args = (ndim, in_channels, channel_axis, norm_low, norm_high, from_instances)
        self.sample_kwargs = sample_kwargs
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
            if self.data is None:  # built on the first edit: nothing to do for a run without edits
                self.data = LiveData(self.images, self.labels, *self.args, **self.sample_kwargs)
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
