"""The typed events that training and prediction yield: one module, frozen dataclasses, one union.

``core.training.train`` yields :data:`TrainEvent` items, ``core.inference.predict_iter`` yields
:data:`PredictEvent` items; the CLI prints them, the widget turns them into layers and labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

from ..config import ModelConfig


def budget_fraction(step: int, steps: int | None, elapsed: float, time_budget: float | None) -> float:
    """How much of the training budget is used: the larger of the step and time fractions."""
    parts = []
    if steps:
        parts.append(step / steps)
    if time_budget:
        parts.append(elapsed / time_budget)
    return min(1.0, max(parts)) if parts else 0.0


@dataclass(frozen=True)
class Started:
    """Training has set up its data and model and is about to take its first step."""

    device: str
    model_config: ModelConfig
    patch_size: tuple[int, ...]
    batch_size: int
    n_train_samples: int
    n_val_regions: int
    warm_start: bool


@dataclass(frozen=True)
class Progress:
    """One training step done."""

    step: int
    steps: int | None
    loss: float
    elapsed: float
    time_budget: float | None

    @property
    def fraction(self) -> float:
        return budget_fraction(self.step, self.steps, self.elapsed, self.time_budget)


@dataclass(frozen=True)
class Validation:
    """A validation on held-out annotations.

    ``score`` is the number to display and ``metric`` says what it measures ("held-out IoU"; NaN
    score: show ``iou``). ``saturated``: the held-out IoU reached its ceiling, so it no longer tells
    quality apart (e.g. all held-out stroke pixels are right while object boundaries are not).
    ``iou``/``loss`` stay the raw values.
    """

    step: int
    loss: float
    iou: float
    best_iou: float
    best_step: int
    improved: bool
    metric: str = "held-out IoU"
    saturated: bool = False
    score: float = float("nan")

    @property
    def shown(self) -> float:
        """The number to show next to ``metric``."""
        return self.iou if self.score != self.score else self.score  # NaN: not given

    def describe(self) -> str:
        """One short phrase for a progress line, e.g. 'val-IoU 0.912' or 'val-loss 0.031 (IoU saturated)'."""
        if self.saturated:
            return f"val-loss {self.loss:.4f} (held-out IoU saturated)"
        return f"val-IoU {self.iou:.3f}"


@dataclass(frozen=True, eq=False)
class Preview:
    """Probabilities of the previewed plane (``key``: its index in the stack; None: the whole image)."""

    step: int
    key: object
    probabilities: np.ndarray


@dataclass(frozen=True)
class Saved:
    """The model folder was written (autosave or the final save)."""

    step: int
    path: str


@dataclass(frozen=True)
class AnnotationsChanged:
    """Continuous training swapped in changed annotations at ``step`` (see core/live.py)."""

    step: int
    version: int
    annotated: int  # annotated pixels now, over all images
    new_pixels: int  # pixels painted (or changed) since the previous state
    n_train_samples: int
    n_val_regions: int


@dataclass(frozen=True)
class Notice:
    """Something the user should know that is not an error (e.g. a smaller batch after running out of memory)."""

    message: str


@dataclass(frozen=True)
class PredictProgress:
    """Tiles predicted so far, of ``total``."""

    done: int
    total: int


@dataclass(frozen=True, eq=False)
class PredictResult:
    """The probabilities of one named image, float32 ``(n_classes, *spatial)`` (a widget's batch prediction).

    Objects mode: ``instances`` (0 background, 1..N) and ``measurements`` (``core.objects.measure``
    columns), decoded in the worker; None otherwise.
    Outputs too big for memory: ``probabilities`` and ``labels`` are lazy arrays over the zarr stores
    in folder ``stored`` (the argmax labels were written tile by tile); otherwise ``labels`` is None
    (the receiver takes the argmax).
    """

    name: str
    probabilities: np.ndarray
    instances: np.ndarray | None = None
    measurements: dict | None = None
    labels: object | None = None
    stored: str | None = None


TrainEvent = Union[Started, Progress, Validation, Preview, Saved, AnnotationsChanged, Notice]
PredictEvent = Union[PredictProgress, PredictResult, Notice]
Event = Union[Started, Progress, Validation, Preview, Saved, AnnotationsChanged, Notice, PredictProgress,
              PredictResult]

__all__ = ["budget_fraction", "Started", "Progress", "Validation", "Preview", "Saved", "AnnotationsChanged", "Notice",
           "PredictProgress", "PredictResult", "TrainEvent", "PredictEvent", "Event"]
