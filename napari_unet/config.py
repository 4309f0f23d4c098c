"""Frozen configuration dataclasses shared by the API, the CLI and the widgets.

Each class converts to and from a plain dict (JSON) and validates itself on construction, so a
config read from a model folder is checked the same way as one built in code.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Literal, get_args

from .errors import UserError

Norm = Literal["batch", "group", "instance", "none"]
Schedule = Literal["cosine", "constant"]
Keep = Literal["iou", "loss", "last"]
NORMS: tuple[str, ...] = get_args(Norm)
SCHEDULES: tuple[str, ...] = get_args(Schedule)
KEEPS: tuple[str, ...] = get_args(Keep)
ObjectHead = Literal["none", "distance"]  # see core/objects.py
OBJECT_HEADS: tuple[str, ...] = get_args(ObjectHead)

DEMO_TIME_BUDGET = 30.0  # seconds of training in `napari-unet demo` (headless and in napari)
PREVIEW_EVERY = 3.0  # seconds between live previews of the plane in view while training
# the GUI keeps a prediction's outputs (float32 probabilities + labels) in memory up to this many bytes
# (or a quarter of the available memory when psutil can tell, whichever is less); larger outputs are
# written to zarr stores on disk and shown lazily
GUI_OUTPUT_MEMORY_BYTES = 1 << 30
GUI_PREVIEW_PIXELS = 4096 * 4096  # a lazy image's live preview predicts the plane in view up to this size


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise UserError(msg)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class _DictMixin:
    @classmethod
    def from_dict(cls, d: dict):
        if not isinstance(d, dict):
            raise UserError(f"{cls.__name__} must be a JSON object, got {type(d).__name__}.")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        _check(not unknown, f"{cls.__name__}: unknown field(s) {sorted(unknown)}.")
        kwargs = {}
        for k, v in d.items():
            kwargs[k] = tuple(v) if isinstance(v, list) else v
        try:
            return cls(**kwargs)
        except TypeError as e:  # wrong field combination
            raise UserError(f"{cls.__name__}: {e}") from None

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class ModelConfig(_DictMixin):
    """Architecture and the meaning of the model's inputs and outputs."""

    ndim: int = 2  # 2: YX planes (stacks plane by plane); 3: ZYX volumes
    in_channels: int = 1
    class_names: tuple[str, ...] = ("background", "object")  # channel c = label value c+1
    depth: int = 3
    width: int = 16
    norm: Norm = "batch"
    # percentile normalisation, applied per image and channel
    norm_low: float = 1.0
    norm_high: float = 99.8
    # objects mode: "distance" adds one output channel, each object's normalised distance transform
    # (core.objects); "none": semantic classes only. Old model folders lack the field: "none".
    object_head: ObjectHead = "none"
    # the input channels' names in order (the image layers they came from); () = unnamed (old folders)
    channel_names: tuple[str, ...] = ()
    # physical size of a voxel per spatial axis (ZYX for 3D; any unit, only ratios shape the network) the
    # model was trained at; None: isotropic or unknown (old folders). Anisotropic voxels change how the
    # network pools and convolves (core/anisotropy.py, nnU-Net's rule); isotropic ones give the plain U-Net.
    voxel_size: tuple[float, ...] | None = None

    def __post_init__(self):
        _check(self.ndim in (2, 3), f"ndim must be 2 or 3, got {self.ndim!r}.")
        _check(_is_int(self.in_channels) and 1 <= self.in_channels <= 64,
               f"in_channels must be an integer in 1..64, got {self.in_channels!r}.")
        _check(isinstance(self.class_names, tuple) and 2 <= len(self.class_names) <= 255
               and all(isinstance(c, str) and 0 < len(c) <= 100 for c in self.class_names),
               "class_names must list 2..255 non-empty names (background first).")
        _check(_is_int(self.depth) and 1 <= self.depth <= 6, f"depth must be in 1..6, got {self.depth!r}.")
        _check(_is_int(self.width) and 1 <= self.width <= 256, f"width must be in 1..256, got {self.width!r}.")
        _check(self.width * 2 ** self.depth <= 1024,
               f"width x 2^depth must be at most 1024 channels, got {self.width} x 2^{self.depth}.")
        _check(self.norm in NORMS, f"norm must be one of {NORMS}, got {self.norm!r}.")
        _check(_is_num(self.norm_low) and _is_num(self.norm_high) and 0 <= self.norm_low < self.norm_high <= 100,
               "norm_low/norm_high must be percentiles with 0 <= low < high <= 100.")
        _check(self.object_head in OBJECT_HEADS,
               f"object_head must be one of {OBJECT_HEADS}, got {self.object_head!r}.")
        _check(isinstance(self.channel_names, tuple) and all(isinstance(c, str) for c in self.channel_names)
               and len(self.channel_names) in (0, self.in_channels),
               f"channel_names must name each of the {self.in_channels} input channel(s) or be empty, "
               f"got {self.channel_names!r}.")
        if isinstance(self.voxel_size, (list, tuple)) and all(_is_num(v) for v in self.voxel_size):
            object.__setattr__(self, "voxel_size", tuple(float(v) for v in self.voxel_size))  # JSON gives ints too
        _check(self.voxel_size is None or (isinstance(self.voxel_size, tuple) and len(self.voxel_size) == self.ndim
               and all(_is_num(v) and 0 < v < float("inf") for v in self.voxel_size)),
               f"voxel_size must be {self.ndim} positive numbers (one per spatial axis, ZYX in 3D) or none, "
               f"got {self.voxel_size!r}.")

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def n_extra(self) -> int:
        """Output channels after the class channels (1 for the objects head's distance map)."""
        return 1 if self.object_head == "distance" else 0

    @property
    def objects(self) -> bool:
        return self.object_head != "none"

    @property
    def pool_plan(self) -> tuple[tuple[int, ...], ...]:
        """Pooling factor per axis at each level (all 2 unless the voxels are anisotropic)."""
        from .core.anisotropy import pool_plan

        return pool_plan(self.voxel_size, self.depth, self.ndim)

    @property
    def conv_kernels(self) -> tuple[tuple[int, ...], ...]:
        """Convolution kernel per axis at each encoder level and the bottom (all 3 unless anisotropic)."""
        from .core.anisotropy import conv_kernels

        return conv_kernels(self.voxel_size, self.depth, self.ndim)

    @property
    def size_multiples(self) -> tuple[int, ...]:
        """Each spatial size is padded to a multiple of these (2**depth per axis unless anisotropic)."""
        from .core.anisotropy import size_multiples

        return size_multiples(self.voxel_size, self.depth, self.ndim)

    @property
    def size_multiple(self) -> int:
        """The largest of :attr:`size_multiples` (2**depth)."""
        return max(self.size_multiples)


@dataclass(frozen=True)
class TrainConfig(_DictMixin):
    """How to train. ``steps`` and ``time_budget`` both stop training; whichever comes first."""

    steps: int | None = None
    time_budget: float | None = 60.0
    patch_size: tuple[int, ...] | None = None  # None: the preset for the device and dimensionality
    batch_size: int | None = None  # None: the preset
    lr: float = 2e-3
    warm_lr: float = 0.25  # share of lr when continuing from a model (warm start): a retrain adjusts, not restarts
    weight_decay: float = 1e-4
    seed: int = 0
    device: str = "auto"
    augment: bool = True
    amp: bool = True  # mixed precision: float16 on CUDA, bfloat16 on CPUs that compute it natively
    val_fraction: float = 0.15
    validate_every: int = 25  # steps
    annotated_fraction: float = 0.9  # share of patches centred on an annotated pixel
    autosave_every: float = 30.0  # seconds, when an output folder is given
    threads: int | None = None  # torch CPU threads; None: default_threads() on the CPU
    ema_decay: float = 0.99  # exponential moving average of the weights (0: off); validated and kept
    class_balance: float = 0.5  # loss weight per class = frequency ** -class_balance (0: plain CE)
    schedule: Schedule = "cosine"  # learning rate over the steps/time budget: "cosine" decay or "constant"
    keep: Keep = "iou"  # which weights to keep: best held-out "iou" (ties: lower loss), lowest "loss", or "last"
    deterministic: bool = False  # deterministic algorithms only (and no cuDNN autotuning): repeatable runs, slower
    # learning from unannotated pixels (napari_unet/core/losses.py); weights of extra loss terms, 0 = off
    regularizer: float = 0.0  # image-aware Potts/CRF loss (bilateral kernel) on unannotated pixels
    regularizer_sigma: float = 0.15  # its intensity bandwidth, in normalised image units (0..1)
    consistency: float = 0.0  # mean-teacher consistency: student vs averaged weights on another view
    pseudo_labels: float = 0.0  # cross-entropy to the averaged weights' confident predictions
    pseudo_threshold: float = 0.9  # how sure the averaged weights must be for a pseudo-label
    unlabelled_rampup: float = 0.2  # the terms above ramp up linearly over this fraction of the budget
    # open-ended training until stopped (steps/time_budget, if given, still end it); picks up annotation
    # edits; learning rate constant after warm-up, halved when validation stalls, restored on new annotations
    continuous: bool = False

    def __post_init__(self):
        _check(self.steps is None or (_is_int(self.steps) and self.steps >= 1),
               f"steps must be a positive integer, got {self.steps!r}.")
        _check(self.time_budget is None or (_is_num(self.time_budget) and self.time_budget > 0),
               f"time budget must be a positive number of seconds, got {self.time_budget!r}.")
        _check(self.steps is not None or self.time_budget is not None or self.continuous is True,
               "Give a number of steps or a time budget (or continuous training, which ends when stopped).")
        _check(self.patch_size is None or isinstance(self.patch_size, tuple) and len(self.patch_size) in (2, 3)
               and all(_is_int(p) and 8 <= p <= 4096 for p in self.patch_size),
               f"patch_size must be 2 or 3 integers in 8..4096, got {self.patch_size!r}.")
        _check(self.batch_size is None or _is_int(self.batch_size) and 1 <= self.batch_size <= 1024,
               f"batch_size must be in 1..1024, got {self.batch_size!r}.")
        _check(_is_num(self.lr) and 0 < self.lr < 1, f"lr must be in (0, 1), got {self.lr!r}.")
        _check(_is_num(self.warm_lr) and 0 < self.warm_lr <= 1, f"warm_lr must be in (0, 1], got {self.warm_lr!r}.")
        _check(_is_int(self.seed), f"seed must be an integer, got {self.seed!r}.")
        _check(0 <= self.val_fraction < 0.9, "val_fraction must be in [0, 0.9).")
        _check(_is_int(self.validate_every) and self.validate_every >= 1, "validate_every must be >= 1.")
        _check(0 <= self.annotated_fraction <= 1, "annotated_fraction must be in [0, 1].")
        _check(0 <= self.ema_decay < 1, "ema_decay must be in [0, 1).")
        _check(0 <= self.class_balance <= 1, "class_balance must be in [0, 1].")
        _check(self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {self.schedule!r}.")
        _check(self.keep in KEEPS, f"keep must be one of {KEEPS}, got {self.keep!r}.")
        _check(isinstance(self.deterministic, bool), "deterministic must be true or false.")
        _check(isinstance(self.continuous, bool), "continuous must be true or false.")
        _check(self.threads is None or (_is_int(self.threads) and self.threads >= 1), "threads must be >= 1.")
        for name in ("regularizer", "consistency", "pseudo_labels"):
            v = getattr(self, name)
            _check(_is_num(v) and 0 <= v <= 100, f"{name} must be a weight in [0, 100], got {v!r}.")
        _check(_is_num(self.regularizer_sigma) and self.regularizer_sigma > 0, "regularizer_sigma must be > 0.")
        _check(_is_num(self.pseudo_threshold) and 0.5 <= self.pseudo_threshold < 1,
               "pseudo_threshold must be in [0.5, 1).")
        _check(_is_num(self.unlabelled_rampup) and 0 <= self.unlabelled_rampup <= 1,
               "unlabelled_rampup must be in [0, 1].")


# Automatic test-time augmentation (PredictConfig.tta None) for images up to this many pixels (voxels),
# per device type and model dimensionality: 8 views cost ~7x the plain prediction, a few seconds at these
# sizes (docs/benchmarks.md, "Test-time augmentation"). Not for 3D on a CPU: 10 s for a 0.8 Mvoxel stack and
# 2.4 s between two yields. Larger images, and every live preview, predict once.
TTA_AUTO_PIXELS = {"cpu": 1 << 20, "cpu-3d": 0, "cuda": 1 << 24}


def tta_auto_rule() -> str:
    """The automatic TTA rule in words, for help texts and tooltips."""
    return (f"2D images up to {TTA_AUTO_PIXELS['cpu'] / 2**20:g} Mpx on a CPU, images up to "
            f"{TTA_AUTO_PIXELS['cuda'] / 2**20:g} Mpx on a GPU")


@dataclass(frozen=True)
class PredictConfig(_DictMixin):
    """How to predict: tile size (None = automatic), overlap between tiles, device."""

    tile_size: tuple[int, ...] | None = None
    overlap: float = 0.25
    batch_size: int = 1
    device: str = "auto"
    amp: bool = True
    # test-time augmentation: average over flips / 90-degree rotations; None: on for images of at most
    # TTA_AUTO_PIXELS on the device (core.inference.resolve_tta)
    tta: bool | None = None

    def __post_init__(self):
        _check(self.tta is None or isinstance(self.tta, bool), f"tta must be true, false or none, got {self.tta!r}.")
        _check(self.tile_size is None or (isinstance(self.tile_size, tuple) and len(self.tile_size) in (2, 3)
               and all(_is_int(t) and 8 <= t <= 8192 for t in self.tile_size)),
               f"tile_size must be 2 or 3 integers in 8..8192, got {self.tile_size!r}.")
        _check(_is_num(self.overlap) and 0 <= self.overlap < 0.9, "overlap must be in [0, 0.9).")
        _check(_is_int(self.batch_size) and self.batch_size >= 1, "batch_size must be >= 1.")


def default_threads() -> int:
    """All cores but one: the widget's training threads (napari's event loop keeps a core) and the
    fewest threads headless training drops to when the machine gets busy (core/threads.py).

    Measured (benchmarks/threads.py, 2-core machine with one other process busy): 1 thread did
    80-88 steps in 10 s, 2 threads 4-19: torch's OpenMP threads that ask for every core collapse
    as soon as anything else runs (a GUI, a second job). On a quiet machine 2 threads did 130-150,
    so headless training starts with the idle cores (``core.threads.auto_threads``) instead.
    """
    return max(1, (os.cpu_count() or 2) - 1)


def default_presets(ndim: int, device_type: str) -> tuple[dict, dict]:
    """Default (model, train) settings for a dimensionality and device type.

    Small and fast on CPU, wider with AMP on CUDA. Benchmarks in ``benchmarks/`` back these.
    """
    if device_type == "cuda":
        model = dict(depth=4, width=32)
        train = dict(patch_size=(256, 256) if ndim == 2 else (64, 64, 64), batch_size=8 if ndim == 2 else 2)
    else:
        model = dict(depth=3, width=16 if ndim == 2 else 8)
        train = dict(patch_size=(128, 128) if ndim == 2 else (32, 64, 64), batch_size=4 if ndim == 2 else 2)
    return model, train


__all__ = ["ModelConfig", "TrainConfig", "PredictConfig", "default_presets", "TTA_AUTO_PIXELS", "tta_auto_rule",
           "NORMS", "SCHEDULES", "KEEPS", "DEMO_TIME_BUDGET", "PREVIEW_EVERY"]
