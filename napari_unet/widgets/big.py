"""Big image layers in the widget (dask, zarr, multiscale): nothing here loads a lazy image whole.

Qt-free (the session and the panels call it; tests call it directly).

- Prediction reads a lazy layer tile by tile (``core.inference``); when its outputs (float32
  probabilities + labels) would not fit in memory (:func:`memory_limit`), the worker writes them
  tile by tile into zarr stores in a folder next to the autosave folder (:func:`outputs_folder`)
  and the layers show those stores lazily (:func:`predict_stored`).
- Training on a lazy image reads only what is annotated (:func:`train_crop`): the annotated planes
  (time points) and, in the model's axes, the bounding box of the strokes plus a margin of a patch,
  normalised with the whole image's percentiles (a strided sample, as for its prediction).
- The live preview of a lazy image predicts the plane in view from the lazy image, when the
  plane and the preview layers are small enough (:func:`preview_refusal`).
"""

from __future__ import annotations

import re
from itertools import product
from pathlib import Path

import numpy as np

from .. import config as C
from ..core.inference import predict_iter
from ..core.ome import open_output_array
from ..core.outputs import Outputs, label_dtype


def is_lazy(data) -> bool:
    """A dask, zarr or other array-like the widget must not copy whole (numpy arrays are copied)."""
    return not isinstance(data, np.ndarray)


def as_dask(data):
    """A dask array over ``data`` (lazy; zarr arrays keep their chunks), for lazy slicing and moving axes."""
    import dask.array as da

    if isinstance(data, da.Array):
        return data
    chunks = getattr(data, "chunks", None)
    ok = isinstance(chunks, tuple) and len(chunks) == len(data.shape) and all(isinstance(c, int) for c in chunks)
    return da.from_array(data, chunks=chunks if ok else "auto")


def memory_limit() -> int:
    """Bytes of outputs the GUI keeps in memory: the config's limit, or a quarter of the available
    memory when psutil (optional) can tell and that is less."""
    limit = C.GUI_OUTPUT_MEMORY_BYTES
    try:
        import psutil
    except ImportError:
        return limit
    return int(min(limit, psutil.virtual_memory().available // 4))


def output_bytes(spatial, n_classes: int) -> int:
    """Bytes of a prediction's outputs: float32 probabilities per class and the argmax labels."""
    n = int(np.prod([int(s) for s in spatial], dtype=np.int64))
    return n * (4 * n_classes + np.dtype(label_dtype(n_classes)).itemsize)


def outputs_folder(autosave_dir: str | None) -> Path:
    """Where outputs too big for memory go: ``outputs`` next to the autosave folder."""
    from .session import default_autosave_dir

    return Path(autosave_dir or default_autosave_dir()).expanduser().parent / "outputs"


def store_for(name: str, spatial, n_classes: int, folder) -> Path | None:
    """The folder receiving the outputs of image ``name`` when they do not fit in memory, else None."""
    if output_bytes(spatial, n_classes) <= memory_limit():
        return None
    safe = re.sub(r"[^\w.-]+", "_", name).strip("._") or "image"
    return Path(folder) / safe


def open_lazy(path):
    """Level 0 of an OME-Zarr output (``core.ome.create_output``) as a dask array, read on demand."""
    import dask.array as da

    arr = open_output_array(path, mode="r")
    return da.from_array(arr, chunks=arr.chunks)


def predict_stored(model, data, channel_axis, store: Path):
    """Worker body part: predict ``data`` tile by tile into ``store``/probabilities.zarr and
    ``store``/prediction.zarr (written as tiles finish, moved into place at the end; an older
    output of the same image is replaced); returns both as lazy arrays."""
    from ..core.data import ImageView

    spatial = ImageView(data, channel_axis).spatial_shape
    store = Path(store)
    store.mkdir(parents=True, exist_ok=True)
    probs, labels = store / "probabilities.zarr", store / "prediction.zarr"
    with Outputs(probs, labels, n_classes=model.config.n_classes, spatial=spatial,
                 model_ndim=model.config.ndim) as sink:
        yield from predict_iter(model, data, channel_axis=channel_axis, sink=sink)
        sink.commit()
    return open_lazy(probs), open_lazy(labels)


def preview_refusal(spatial, ndim: int, n_classes: int) -> str | None:
    """Why a lazy image gets no live preview (None: it gets one): the plane in view, or the preview
    layers (the size of the whole image), would not fit in memory."""
    plane = int(np.prod(spatial[-ndim:]))
    if ndim == 2 and plane > C.GUI_PREVIEW_PIXELS:
        return (f"Live preview is off: a plane of this image has {plane:,} pixels (more than "
                f"{C.GUI_PREVIEW_PIXELS:,}); press Predict after training.")
    if output_bytes(spatial, n_classes) > memory_limit():
        return "Live preview is off: its layers would not fit in memory for this image; press Predict after training."
    return None


def patch_margin(ndim: int, model) -> tuple[int, ...]:
    """Context kept around the strokes of a cropped training image: one patch per axis (patches are
    centred near strokes with a quarter-patch jitter, so half a patch suffices; a whole one is safe)."""
    patch = getattr(model, "patch_size", None) if model is not None else None
    if not patch or len(patch) != ndim:
        patch = C.default_presets(ndim, "cuda")[1]["patch_size"]  # the largest preset patch
    return tuple(int(p) for p in patch)


def train_crop(image, labels: np.ndarray, ndim: int, margin: tuple[int, ...], everything: bool = False):
    """Read the annotated part of a lazy ``image`` (channels last, if any) for training.

    Returns (image crop as numpy, labels crop, region). ``region``: per spatial axis, an index
    array (leading axes: the annotated planes or time points) or a slice (the model's axes: the
    strokes' bounding box plus ``margin``, clipped); :func:`crop` applies it to other arrays of
    the image's shape (later annotations, a prediction). ``everything``: every pixel counts as
    annotated (an instance mask).
    """
    labels = np.asarray(labels)
    sp = labels.shape
    lead = len(sp) - ndim
    painted = np.ones(sp, bool) if everything else labels > 0
    region: list = []
    for a, n in enumerate(sp):
        hit = np.flatnonzero(painted.any(axis=tuple(i for i in range(len(sp)) if i != a)))
        if hit.size == 0:  # nothing painted: a token crop, training then says what is missing
            hit = np.array([0])
        if a < lead:
            region.append(hit)
        else:
            m = margin[a - lead]
            region.append(slice(max(int(hit[0]) - m, 0), min(int(hit[-1]) + 1 + m, n)))
    planes = [np.asarray(image[tuple(int(i) for i in idx) + tuple(region[lead:])])
              for idx in product(*region[:lead])]
    data = np.stack(planes).reshape(tuple(len(r) for r in region[:lead]) + planes[0].shape)
    return data, np.ascontiguousarray(crop(labels, region)), tuple(region)


def crop(array, region):
    """``array`` (the image's spatial shape) cut to a :func:`train_crop` region."""
    out = array
    for a, r in enumerate(region):
        if not isinstance(r, slice):
            out = np.take(out, r, axis=a)
    return out[tuple(r if isinstance(r, slice) else slice(None) for r in region)]
