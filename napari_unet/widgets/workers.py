"""What runs in napari workers, and the glue that keeps a worker from outliving its widget."""

from __future__ import annotations

import threading

from ..core.inference import predict_iter


def on_viewer_closed(stop: threading.Event, box: list, *_):
    """The viewer closed: end any worker at its next yield (no reference to the dead widget)."""
    stop.set()
    if box and box[0] is not None:
        box[0].quit()


class WorkerError(Exception):
    """An unexpected failure inside a worker, carrying the original's type and message."""


def shielded(fn, *args, **kwargs):
    """Run generator ``fn`` in a worker. superqt takes a RuntimeError escaping a worker for "the
    worker was deleted" and drops it without emitting ``errored`` or ``finished`` (torch raises
    RuntimeError for many real failures), so those are re-raised as WorkerError."""
    try:
        return (yield from fn(*args, **kwargs))
    except RuntimeError as e:
        raise WorkerError(f"{type(e).__name__}: {e}") from e


def predict_many(model, jobs):
    """Worker body: jobs are (name, data, channel_axis); yields progress, then ("result", name, probs)."""
    for name, data, ax in jobs:
        probs = yield from predict_iter(model, data, channel_axis=ax)
        yield ("result", name, probs)
