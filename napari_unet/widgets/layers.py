"""napari layer helpers for the widget: annotation layers, output layers, what to copy for a worker.

No Qt here: these functions take a viewer and layers, so tests can call them directly.
"""

from __future__ import annotations

import numpy as np
from napari.layers import Image, Labels
from napari.utils.colormaps import Colormap, DirectLabelColormap, ensure_colormap

from .._colors import MAX_COLOURED, label_color_dict
from . import big
from ..errors import UserError

# perceptual maps (brightness grows with probability), drawn translucent so the image shows through
PROB_COLORMAPS = ["magma", "viridis", "cividis", "inferno", "plasma"]
PROB_STYLE = dict(contrast_limits=(0.0, 1.0), blending="translucent", opacity=0.7)
ANNOTATION_OPACITY = 0.8
ACCEPTED_CONTOUR = 1  # after Accept the annotations cover the whole image: draw outlines, the image shows
LINK_KEY = "napari_unet_image"  # annotation layer metadata: the image layer it annotates


def label_colormap(n_values: int, transparent_background: bool = False, prediction: bool = False) -> DirectLabelColormap:
    return DirectLabelColormap(color_dict=label_color_dict(n_values, transparent_background, prediction))


def probability_colormap(name: str) -> Colormap:
    """A perceptual colormap whose opacity grows with the probability: p = 0 leaves the image as it is,
    p = 0.3 and p = 1 differ in colour and in cover (an additive map saturates on bright objects)."""
    base = ensure_colormap(name)
    colors = base.map(np.linspace(0.0, 1.0, 64)).copy()
    colors[:, 3] = np.clip(np.linspace(0.0, 1.0, 64) * 1.5, 0.0, 1.0)
    return Colormap(colors, name=f"{name} (transparent low)")


def class_features(class_names) -> dict:
    """Layer features naming each label value, shown in napari's status bar on hover."""
    names = ["not annotated"] + list(class_names)
    return {"index": list(range(len(names))), "class": names}


def name_classes(layer: Labels, class_names) -> None:
    """Record the class names on a Labels layer (metadata and hover features)."""
    layer.metadata["class_names"] = list(class_names)
    layer.features = class_features(class_names)


CHANNEL_LABELS = ("c", "ch", "channel", "channels")
TIME_LABELS = ("t", "time")


def _labelled_axis(layer: Image, names) -> int | None:
    labels = [str(a).lower() for a in getattr(layer, "axis_labels", ())]
    hits = [i for i, a in enumerate(labels) if a in names]
    return hits[0] if hits else None


def channel_axis(layer: Image) -> int | None:
    """The channel axis of an image layer's data: RGB(A) layers have it last; else an axis labelled c/C."""
    return -1 if layer.rgb else _labelled_axis(layer, CHANNEL_LABELS)


def time_axis(layer: Image) -> int | None:
    """The axis of the layer's data labelled t/T (time points), if any."""
    return _labelled_axis(layer, TIME_LABELS)


def spatial_shape(layer: Image) -> tuple[int, ...]:
    shape = tuple(layer.data.shape)
    ax = channel_axis(layer)
    return shape if ax is None else tuple(s for i, s in enumerate(shape) if i != ax % len(shape))


def stack_channels(layers) -> np.ndarray:
    """A copy of the image layers stacked as channels on the last axis, after checking that they fit.

    The worker reads this copy; the layers stay as they are. Lazy (dask, zarr) layers are stacked
    lazily (a dask array, nothing read).
    """
    first = layers[0]
    for lay in layers:
        if lay.rgb or channel_axis(lay) is not None:
            raise UserError(f"'{lay.name}' has channels of its own; pick it alone, or pick single-channel layers "
                            "as channels.")
        if tuple(lay.data.shape) != tuple(first.data.shape):
            raise UserError(f"Channel layers '{first.name}' {tuple(first.data.shape)} and '{lay.name}' "
                            f"{tuple(lay.data.shape)} differ in shape; pick layers of the same image.")
        if not np.allclose(lay.scale, first.scale) or not np.allclose(lay.translate, first.translate):
            raise UserError(f"Channel layers '{first.name}' and '{lay.name}' differ in scale or position; pick "
                            "aligned channels of the same image.")
    data = [image_data(lay) for lay in layers]
    if any(big.is_lazy(d) for d in data):
        import dask.array as da

        return da.stack([big.as_dask(d) for d in data], axis=-1)
    return np.stack([np.asarray(d) for d in data], axis=-1)


def annotation_name(image: Image) -> str:
    return f"{image.name} annotations"


def probability_name(image_name: str, class_name: str, n_object_classes: int) -> str:
    return f"{image_name} probabilities" if n_object_classes == 1 else f"{image_name} probabilities ({class_name})"


def prediction_name(image_name: str) -> str:
    return f"{image_name} prediction"


def _same_frame(src: Image, dims: int) -> dict:
    """Spatial scale and translate of ``src`` (its channel axis left out) for a layer with ``dims`` dimensions."""
    ax = None if src.rgb else channel_axis(src)
    keep = [i for i in range(src.ndim) if ax is None or i != ax % src.ndim]
    return {"scale": tuple(np.asarray(src.scale)[keep][-dims:]),
            "translate": tuple(np.asarray(src.translate)[keep][-dims:])}


def add_annotation_layer(viewer, image: Image, class_names) -> Labels:
    """A new empty annotation layer aligned to ``image`` (reused when one is already linked)."""
    existing = find_annotations(viewer, image)
    if existing is not None:
        return existing
    shape = spatial_shape(image)
    data = np.zeros(shape, np.uint8 if len(class_names) < 255 else np.uint16)
    layer = viewer.add_labels(data, name=annotation_name(image), opacity=ANNOTATION_OPACITY,
                              colormap=label_colormap(len(class_names)), features=class_features(class_names),
                              metadata={LINK_KEY: image.name, "class_names": list(class_names)},
                              **_same_frame(image, len(shape)))
    layer.brush_size = 4
    layer.selected_label = 1
    layer.mode = "paint"
    return layer


def find_annotations(viewer, image: Image) -> Labels | None:
    """The annotation layer linked to ``image``: by metadata, else by the conventional name."""
    candidates = [lay for lay in viewer.layers if isinstance(lay, Labels)]
    for lay in candidates:
        if lay.metadata.get(LINK_KEY) == image.name:
            return lay
    for lay in candidates:
        if lay.name == annotation_name(image):
            return lay
    return None


def annotated_pairs(viewer) -> list[tuple[Image, Labels]]:
    """Every (image, annotation layer) pair in the viewer whose annotations hold something."""
    pairs = []
    for lay in viewer.layers:
        if isinstance(lay, Image):
            ann = find_annotations(viewer, lay)
            if ann is not None and spatial_shape(lay) == tuple(ann.data.shape) and np.any(np.asarray(ann.data)):
                pairs.append((lay, ann))
    return pairs


def _place_output(viewer, layer, src) -> None:
    """Put a new output layer just above its source image, keep the user's active layer active.

    Annotations painted above the image therefore stay on top, and the brush stays on them.
    """
    if src in viewer.layers:
        viewer.layers.move(viewer.layers.index(layer), viewer.layers.index(src) + 1)


def _add_output(viewer, kind: str, name: str, data, src, **kwargs):
    active = viewer.layers.selection.active
    if name in viewer.layers:
        viewer.layers.remove(name)
    layer = getattr(viewer, f"add_{kind}")(data, name=name, **_same_frame(src, data.ndim), **kwargs)
    _place_output(viewer, layer, src)
    if active is not None and active in viewer.layers:
        viewer.layers.selection.active = active
    return layer


def _upsert_image(viewer, name: str, data: np.ndarray, src: Image, **kwargs) -> Image:
    if name in viewer.layers and isinstance(viewer.layers[name], Image) and viewer.layers[name].data.shape == data.shape:
        layer = viewer.layers[name]
        layer.data = data
        return layer
    return _add_output(viewer, "image", name, data, src, **kwargs)


def write_probabilities(viewer, image: Image, probs: np.ndarray, class_names, key: tuple | None = None) -> None:
    """Write per-object-class probability layers (background is 1 - the rest and is not shown).

    ``key`` = index of a plane (live preview of one plane of a stack); None = the whole image.
    """
    shape = spatial_shape(image)
    n_obj = len(class_names) - 1
    for c in range(1, len(class_names)):
        name = probability_name(image.name, class_names[c], n_obj)
        style = dict(colormap=probability_colormap(PROB_COLORMAPS[(c - 1) % len(PROB_COLORMAPS)]), **PROB_STYLE)
        if key is None:
            _upsert_image(viewer, name, probs[c], image, **style)
            continue
        layer = viewer.layers[name] if name in viewer.layers else None
        if layer is None or layer.data.shape != shape:
            layer = _upsert_image(viewer, name, np.zeros(shape, np.float32), image, **style)
        layer.data[key] = probs[c]
        layer.refresh()


def write_plane(viewer, image: Image, name: str, data: np.ndarray, key: tuple = (), **style) -> Image:
    """An Image layer ``name`` over ``image``: the whole of it (``key`` ()), or one plane of a stack."""
    if not key:
        return _upsert_image(viewer, name, data, image, **style)
    shape = spatial_shape(image)
    layer = viewer.layers[name] if name in viewer.layers else None
    if layer is None or layer.data.shape != shape:
        layer = _upsert_image(viewer, name, np.zeros(shape, np.float32), image, **style)
    layer.data[key] = data
    layer.refresh()
    return layer


def write_prediction(viewer, image: Image, labels: np.ndarray, class_names) -> Labels:
    """The argmax ``Labels`` layer (1 = background, shown transparent; classes in the prediction
    palette, never the annotation colours), reused by name."""
    name = prediction_name(image.name)
    if name in viewer.layers and isinstance(viewer.layers[name], Labels) and viewer.layers[name].data.shape == labels.shape:
        layer = viewer.layers[name]
        layer.data = labels
    else:
        layer = _add_output(viewer, "labels", name, labels, image, opacity=0.6,
                            colormap=label_colormap(len(class_names), True, prediction=True))
    name_classes(layer, class_names)
    return layer


def accept_prediction(annotations: Labels, prediction: np.ndarray) -> int:
    """Copy the prediction into the unpainted (0) pixels of ``annotations``, undoably.

    Returns the number of pixels filled. Painted pixels are never changed.
    """
    data = np.asarray(annotations.data)
    if data.shape != prediction.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from annotations {data.shape}")
    idx = np.nonzero((data == 0) & (prediction > 0))
    if idx[0].size == 0:
        return 0
    annotations.data_setitem(idx, prediction[idx].astype(data.dtype))
    annotations.contour = ACCEPTED_CONTOUR
    return int(idx[0].size)


def fit_label_values(layer: Labels, top: int) -> None:
    """Let ``layer`` hold and show label values up to ``top`` (objects mode: one value per object):
    a wider data type and colours for every value when the uint8 range or the 255 colours run out."""
    data = layer.data
    if data.dtype.kind in "iu" and top > np.iinfo(data.dtype).max:
        layer.data = np.asarray(data).astype(np.uint32)
    if top > MAX_COLOURED:
        layer.colormap = label_colormap(top)


def image_data(layer: Image):
    """The full-resolution data of an image layer (level 0 of a multiscale one)."""
    return layer.data[0] if layer.multiscale else layer.data


def is_output(layer) -> bool:
    """A probability layer written by this plugin (not an image to predict)."""
    return " probabilities" in layer.name
