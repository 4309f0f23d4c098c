"""What runs in napari workers, and the runner that starts them on a thread (Qt only inside it)."""

from __future__ import annotations

import numpy as np

from ..config import PredictConfig
from ..core.events import PredictResult
from ..core.inference import predict_iter, predict_time_iter, split_outputs
from ..core.objects import instances_from_output, measure
from .big import predict_stored


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


def predict_many(model, jobs, objects: bool = False, scales: dict | None = None, tta: bool | None = None):
    """Worker body: jobs are (name, data, channel_axis[, time_axis[, store]]); yields progress, then a
    PredictResult per image. With a time axis the time points are predicted one after another (a 3D
    model on TZYX). With a ``store`` folder the outputs are written there tile by tile (zarr) and come
    back as lazy arrays (``big.predict_stored``: outputs too big for memory).

    ``objects``: also decode the objects and measure them here, off the GUI thread (not for time-lapses);
    ``scales`` maps an image name to its pixel size per spatial axis (areas in those units, anisotropic
    splitting).
    """
    config = PredictConfig(tta=tta)  # outputs on disk (big images) predict once: too big for automatic TTA
    for name, data, ax, *rest in jobs:
        t = rest[0] if rest else None
        store = rest[1] if len(rest) > 1 else None
        if store is not None:
            probs, labels = yield from predict_stored(model, data, ax, store)
            yield PredictResult(name, probs, labels=labels, stored=str(store))
            continue
        if t is not None:
            probs = yield from predict_time_iter(model, data, time_axis=t, channel_axis=ax, name=f"'{name}'",
                                                 config=config)
            yield PredictResult(name, probs)
            continue
        outputs = yield from predict_iter(model, data, channel_axis=ax, extras=objects, config=config)
        if not objects:
            yield PredictResult(name, outputs)
            continue
        probs, dist = split_outputs(model, outputs)
        probs = np.ascontiguousarray(probs)  # not a view: the distance channel is freed
        scale = (scales or {}).get(name)
        instances = instances_from_output(probs, dist, ndim=model.config.ndim, sampling=scale)
        yield PredictResult(name, probs, instances, objects_measurements(instances, data, ax, scale))


def objects_measurements(instances, data, channel_axis, scale) -> dict:
    """``core.objects.measure`` of 2D/3D objects; a stack beyond 3D gets the ids only (measure takes 2D/3D)."""
    if instances.ndim in (2, 3):
        return measure(instances, data, channel_axis=channel_axis, scale=scale)
    ids = np.unique(instances)
    return {"label": ids[ids > 0].astype(np.int64)}


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
