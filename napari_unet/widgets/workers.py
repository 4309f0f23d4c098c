"""What runs in napari workers, and the runner that starts them on a thread (Qt only inside it)."""

from __future__ import annotations

from ..core.events import PredictResult
from ..core.inference import predict_iter, predict_time_iter


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
    """Worker body: jobs are (name, data, channel_axis[, time_axis]); yields progress, then a PredictResult
    per image. With a time axis the time points are predicted one after another (a 3D model on TZYX)."""
    for name, data, ax, *rest in jobs:
        t = rest[0] if rest else None
        probs = yield from (predict_iter(model, data, channel_axis=ax) if t is None else
                            predict_time_iter(model, data, time_axis=t, channel_axis=ax, name=f"'{name}'"))
        yield PredictResult(name, probs)


def run_in_thread(body, *args, on_event, on_return, on_error, on_finished, **kwargs):
    """Start ``body`` (a generator function) in a superqt worker; callbacks run on the main thread."""
    from superqt.utils import create_worker  # here: the rest of this module (and the session) stays Qt-free

    worker = create_worker(shielded, body, *args, _start_thread=False, _ignore_errors=True, **kwargs)
    worker.yielded.connect(on_event)
    worker.returned.connect(on_return)
    worker.errored.connect(on_error)
    worker.finished.connect(on_finished)
    worker.start()
    return worker
