"""napari layer helpers for objects mode, without Qt: the ``"<image> objects"`` Labels layer and
accepting objects into an annotation layer.

The measurements travel as the layer's ``features`` (one row per object, ``index`` = object id),
so napari shows them on hover and the objects table reads them from the layer: one source of truth.
"""

from __future__ import annotations

import numpy as np
from napari.layers import Image, Labels


def objects_name(image_name: str) -> str:
    return f"{image_name} objects"


def measurement_features(columns: dict | None) -> dict:
    """Measurements (core.objects.measure) as a napari features table: ``index`` = object id."""
    if not columns:
        return {"index": np.zeros(0, np.int64)}
    cols = {"index": np.asarray(columns["label"], np.int64)}
    cols.update({k: np.asarray(v) for k, v in columns.items() if k != "label"})
    return cols


def write_objects(viewer, image: Image, instances: np.ndarray, measurements: dict | None = None) -> Labels:
    """Show ``instances`` (0 background, 1..N) as ``"<image> objects"``, reused by name, in the image's frame.

    ``measurements``: columns from ``core.objects.measure``; they become the layer's features.
    """
    name = objects_name(image.name)
    features = measurement_features(measurements)
    nd = instances.ndim
    layer = viewer.layers[name] if name in viewer.layers else None
    if isinstance(layer, Labels) and layer.data.shape == instances.shape:
        layer.data = instances
        layer.features = features
        return layer
    active = viewer.layers.selection.active
    if layer is not None:
        viewer.layers.remove(layer)
    layer = viewer.add_labels(instances, name=name, opacity=0.6, features=features,
                              scale=tuple(image.scale[-nd:]), translate=tuple(image.translate[-nd:]))
    if image in viewer.layers:  # just above its image, like the other outputs
        viewer.layers.move(viewer.layers.index(layer), viewer.layers.index(image) + 1)
    if active is not None and active in viewer.layers:
        viewer.layers.selection.active = active
    return layer


def object_count(layer: Labels) -> int:
    return int(len(layer.features)) if "index" in layer.features else int(np.asarray(layer.data).max())


def accept_objects(annotations: Labels, instances: np.ndarray) -> int:
    """Copy objects into the unpainted (0) pixels of an objects-mode annotation layer.

    Each object gets a new value above the layer's largest (so it stays its own object), the
    space between objects becomes background (1). Painted pixels are never changed. Returns the
    number of pixels filled. The layer's data type is widened first when the new values need it.
    """
    data = np.asarray(annotations.data)
    if data.shape != instances.shape:
        raise ValueError(f"objects shape {instances.shape} differs from annotations {data.shape}")
    free = data == 0
    if not free.any():
        return 0
    base = max(int(data.max()), 1)
    # an object cut into pieces by painted pixels would be one value in several regions, which
    # objects-mode training refuses: each connected piece of the free pixels gets its own value
    from skimage.measure import label

    pieces = label(np.where(free, instances, 0), background=0, connectivity=1)
    new = np.where(pieces > 0, pieces.astype(np.int64) + base, 1)
    top = int(new[free].max())
    if data.dtype.kind in "iu" and top > np.iinfo(data.dtype).max:
        annotations.data = data.astype(np.uint32 if top < 2**32 else np.uint64)
    idx = np.nonzero(free)
    annotations.data_setitem(idx, new[idx].astype(annotations.data.dtype))
    return int(idx[0].size)
