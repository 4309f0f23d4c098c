"""Objects: annotations of one value per object, separation targets, instances and measurements.

Objects mode (``objects=True`` / ``--objects``): annotations are ``0`` not annotated, ``1``
background, ``2..`` one value per object (napari's "new label" gives each painted object its own
value); instance masks from other tools (``0`` background, any ids) come in with
``from_instances``. Each painted object is taken as painted whole: its rim is its boundary.

How objects are separated (read from StarDist's object probability and the "distance transform
regression + seeded watershed" approach of DSB2018 entries and plantseg/elf): besides the
semantic classes the network has one more output channel, trained (binary cross-entropy, masked to
annotated pixels) to predict each object's distance transform normalised to 1 at its centre and
falling to ~0 at its rim, where it touches a neighbour too; background is 0. Objects are then
found by a seeded watershed: seeds are the predicted distance map's h-maxima (each peak that rises
at least ``SEED_H`` above the saddle to any higher peak: a touching pair whose valley is shallow
in absolute terms, as after a short training, still gets two seeds, where a fixed threshold on
the map merged it), the mask is the foreground probability. It needs no star-convexity or flow
integration, learns from a few whole objects in a minute on a CPU, and is the same code in 2D and
3D. A model without this channel (a semantic one) still gives objects: a watershed on the distance
transform of its foreground, seeded by the transform's h-maxima.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from ..errors import UserError

MAX_OBJECTS = 2**32 - 1  # output ids 1..N fit uint32
# Decoding of the objects head (measured on the realistic benchmark's tuning seeds 10 and 11, see
# docs/benchmarks.md): h-maxima of the distance map beat a fixed threshold on it (AP@0.5 0.89 vs
# 0.79 on the same models), fewer touching pairs merged.
SEED_H = 0.1  # h-maxima depth of the predicted normalised distance (0..1) that makes a seed
SEED_THRESHOLD = 0.2  # ... whose peak reaches this (faint bumps are no seed; an unseeded region stays one object)
FALLBACK_H = 1.0  # h-maxima depth (pixels) for the distance-transform watershed of a semantic model
DIST_SMOOTH = 0.5  # Gaussian sigma (pixels) on the predicted distance map before seeding
MIN_SIZE = {2: 8, 3: 27}  # objects smaller than this (pixels/voxels) are dropped
AXIS_NAMES = "tzyx"


# --------------------------------------------------------------------------- annotations
def _integer_labels(labels, name: str) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.dtype.kind == "b" or arr.dtype.kind not in "iuf":
        raise UserError(f"The {name} have data type {arr.dtype}; object annotations must be integers "
                        "(0 = not annotated, 1 = background, 2.. = one value per object).")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise UserError(f"The {name} contain fractional, NaN or infinite values; object annotations must "
                            "be whole numbers.")
        arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        raise UserError(f"The {name} contain negative values; use 0 = not annotated, 1 = background, "
                        "2.. = one value per object.")
    return arr


def object_labels(labels, from_instances: bool = False, name: str = "labels") -> tuple[np.ndarray, np.ndarray]:
    """Annotations in objects mode as a new int64 array: 0 not annotated, 1 background, 2..N+1 objects.

    ``from_instances``: ``labels`` is an instance mask (0 background, any ids, fully annotated).
    Object values are renumbered consecutively (the input is never modified). Also returns the
    user's value of each object value (index = new value) for messages.
    """
    from skimage.segmentation import relabel_sequential

    arr = _integer_labels(labels, name)
    ids = arr if from_instances else np.where(arr >= 2, arr, 0)
    seq, _, inv = relabel_sequential(ids)
    n = len(inv) - 1  # inv maps new -> old ids, 0 included
    if n > MAX_OBJECTS - 1:
        raise UserError(f"The {name} hold {n} objects; at most {MAX_OBJECTS - 1} are supported. Split the "
                        "image into parts and annotate each separately.")
    seq = seq.astype(np.int64)
    originals = np.concatenate([[0, 1], np.asarray(inv)[1:]]).astype(np.int64)
    if from_instances:
        return np.where(seq > 0, seq + 1, 1), originals
    return np.where(seq > 0, seq + 1, arr.astype(np.int64)), originals


def check_objects(obj: np.ndarray, ndim: int, name: str = "labels", originals: np.ndarray | None = None,
                  from_instances: bool = False, min_piece: int = 3) -> None:
    """Refuse object annotations that cannot be separate objects (``obj`` from :func:`object_labels`).

    * An object value made of several separate regions: one value for all objects (a semantic
      mask) or two objects painted with one value. Pieces under ``min_piece`` pixels or under 5 %
      of the value's largest piece (stray pixels) are tolerated.
    * A 2D model (``ndim`` 2) with an object value in several planes of a stack: 3D objects, which
      a 2D model would count once per plane.
    Touching objects painted with one value form one connected region; they cannot be told apart
    from one object and are not detected. ``originals[v]``: the user's value of object value v.
    """

    def user_value(v: int) -> int:
        return int(originals[v]) if originals is not None else v

    n_values = int(obj.max()) - 1 if obj.size else 0
    if obj.ndim > ndim and ndim == 2:
        for value, sl in enumerate(ndi.find_objects(obj), start=1):
            if value < 2 or sl is None:
                continue
            if any(s.stop - s.start > 1 for s in sl[:-2]):
                raise UserError(f"In the {name}, object value {user_value(value)} spans several planes: these "
                                "are 3D objects, but a 2D model finds objects plane by plane. Train a 3D model "
                                "(--ndim 3), or give each plane's objects their own values.")
    struct = ndi.generate_binary_structure(obj.ndim, obj.ndim)  # diagonal neighbours connect
    for value, sl in enumerate(ndi.find_objects(obj), start=1):
        if value < 2 or sl is None:
            continue
        pieces, k = ndi.label(obj[sl] == value, struct)
        if k < 2:
            continue
        sizes = np.sort(np.bincount(pieces.ravel())[1:])[::-1]
        real = int(np.count_nonzero(sizes >= max(min_piece, 0.05 * sizes[0])))
        if real < 2:
            continue
        if (n_values == 1 or real >= 3) and from_instances:
            raise UserError(f"The {name} look like a binary mask, not instances: id {user_value(value)} marks {real} "
                            "separate regions. Give each object its own id, or train without --objects.")
        if n_values == 1 or real >= 3:
            raise UserError(f"The {name} look semantic: value {user_value(value)} marks {real} separate "
                            "regions. In objects mode give each object its own value (napari: a new label per "
                            "object), pass --from-instances for an instance mask, or train without --objects.")
        raise UserError(f"In the {name}, object value {user_value(value)} marks {real} separate regions; "
                        "give each object its own value (napari: a new label per object).")


def semantic_from_objects(obj: np.ndarray) -> np.ndarray:
    """Objects-mode annotations -> semantic labels: 0 stays 0, 1 background, every object -> 2."""
    return np.where(obj >= 2, 2, obj)


def distance_targets(obj: np.ndarray, sampling=None) -> np.ndarray:
    """Per-object normalised distance transform (float32, 1 at each object's centre, 1/max at its rim).

    ``obj``: 0 not annotated, 1 background, 2.. object values (consecutive, as from
    :func:`object_labels`). Background and unannotated pixels are 0. An object's rim is where it
    meets any other value, a touching neighbour included; the image edge is not a rim (the object
    goes on beyond it). ``sampling``: voxel size per axis (anisotropic 3D), as in
    ``scipy.ndimage.distance_transform_edt``. As StarDist's ``edt_prob``, computed per object in its
    bounding box (scipy's exact EDT; a library call, not our own transform).
    """
    out = np.zeros(obj.shape, np.float32)
    for value, sl in enumerate(ndi.find_objects(obj), start=1):
        if value < 2 or sl is None:
            continue
        grown = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(sl, obj.shape))
        mask = obj[grown] == value
        if mask.all():  # fills its whole box up to the image edges: measure to the box edge
            mask = np.pad(mask, 1)
            d = ndi.distance_transform_edt(mask, sampling=sampling)[(slice(1, -1),) * mask.ndim]
            mask = mask[(slice(1, -1),) * mask.ndim]
        else:
            d = ndi.distance_transform_edt(mask, sampling=sampling)
        top = d[mask].max()
        out[grown][mask] = (d[mask] / top).astype(np.float32)
    return out


# --------------------------------------------------------------------------- instances
def instances_from_output(probabilities: np.ndarray, distance: np.ndarray | None = None, *, ndim: int | None = None,
                          sampling=None, seed_threshold: float = SEED_THRESHOLD, seed_h: float = SEED_H,
                          min_size: int | None = None, fallback_h: float = FALLBACK_H) -> np.ndarray:
    """Instances (0 background, 1..N) from class probabilities ``(n_classes, *spatial)``.

    Foreground: background probability below 0.5. With ``distance`` (the objects head's output,
    ``spatial``), seeds are its h-maxima of depth ``seed_h`` that reach ``seed_threshold``; without,
    the h-maxima of depth ``fallback_h`` of the foreground's distance transform (physical units with
    ``sampling``). A seeded watershed then splits the foreground; foreground regions without a seed
    become objects too.
    ``ndim`` 2 on a stack: plane by plane, ids unique over the stack. Returns uint16 or uint32.
    """
    probabilities = np.asarray(probabilities)
    foreground = probabilities[0] < 0.5
    return instances_from_foreground(foreground, distance, ndim=ndim, sampling=sampling,
                                     seed_threshold=seed_threshold, seed_h=seed_h, min_size=min_size,
                                     fallback_h=fallback_h)


def instances_from_foreground(foreground: np.ndarray, distance: np.ndarray | None = None, *, ndim: int | None = None,
                              sampling=None, seed_threshold: float = SEED_THRESHOLD, seed_h: float = SEED_H,
                              min_size: int | None = None, fallback_h: float = FALLBACK_H) -> np.ndarray:
    """As :func:`instances_from_output`, from a boolean foreground mask."""
    foreground = np.asarray(foreground, bool)
    nd = ndim or min(foreground.ndim, 3)
    if nd not in (2, 3) or foreground.ndim < nd:
        raise UserError(f"Objects need a 2D or 3D foreground; got shape {foreground.shape} for ndim {ndim}.")
    if sampling is not None:
        sampling = tuple(float(s) for s in sampling)[-nd:]
    size = MIN_SIZE[nd] if min_size is None else int(min_size)
    out = np.zeros(foreground.shape, np.uint32)
    lead = foreground.shape[:-nd]
    offset = 0
    for idx in (np.ndindex(*lead) if lead else [()]):
        dist = None if distance is None else np.asarray(distance[idx], np.float32)
        h = fallback_h if dist is None else seed_h
        lab = _split(foreground[idx], dist, sampling, h, seed_threshold, size)
        n = int(lab.max())
        if offset + n > MAX_OBJECTS:
            raise UserError(f"More than {MAX_OBJECTS} objects were found; predict the image in parts.")
        out[idx] = np.where(lab > 0, lab.astype(np.uint64) + offset, 0)
        offset += n
    return out.astype(np.uint16) if offset < 2**16 else out


def _split(fg: np.ndarray, dist, sampling, h: float, floor: float, min_size: int) -> np.ndarray:
    from skimage.morphology import h_maxima
    from skimage.segmentation import relabel_sequential, watershed

    if not fg.any():
        return np.zeros(fg.shape, np.int64)
    if dist is None:
        dist = ndi.distance_transform_edt(fg, sampling=sampling)
        dist = ndi.gaussian_filter(dist, 0.5)  # flattens the transform's pixel-grid ridges
        seeds = h_maxima(dist, h) > 0
    else:
        dist = ndi.gaussian_filter(dist, DIST_SMOOTH)  # flattens noise bumps that would be extra peaks
        seeds = (h_maxima(dist.astype(np.float64), h) > 0) & (dist >= floor)
    seeds &= fg
    markers, n = ndi.label(seeds)
    lab = watershed(-dist, markers, mask=fg)
    rest, k = ndi.label(fg & (lab == 0))  # foreground regions no seed reached
    if k:
        lab = np.where(rest > 0, rest + n, lab)
    if min_size > 1:  # by hand: skimage's remove_small_objects changed its size parameter in 0.26
        sizes = np.bincount(lab.ravel())
        small = sizes < min_size
        small[0] = False
        lab[small[lab]] = 0
    return relabel_sequential(lab)[0].astype(np.int64)


def instances_dtype(n: int):
    """uint16 for up to 65535 objects, uint32 above."""
    if n > MAX_OBJECTS:
        raise UserError(f"{n} objects do not fit uint32 ids; predict the image in parts.")
    return np.uint16 if n < 2**16 else np.uint32


# --------------------------------------------------------------------------- measurements
def measure(instances: np.ndarray, image: np.ndarray | None = None, channel_axis: int | None = None,
            scale=None) -> dict[str, np.ndarray]:
    """One row per object (skimage ``regionprops_table``): id, size, centroid, bounding box, intensity.

    Columns: ``label``; ``area`` (2D) or ``volume`` (3D) in physical units when ``scale`` (the
    pixel/voxel size per axis) is given, in pixels otherwise; ``pixels``; ``centroid_<axis>`` and
    ``bbox_<axis>_min``/``_max`` (stop, exclusive) in pixel coordinates; ``mean_intensity`` and
    ``max_intensity`` of the raw image (``_c<k>`` per channel when it has several).
    """
    from skimage.measure import regionprops_table

    instances = np.asarray(instances)
    nd = instances.ndim
    if nd not in (2, 3):
        raise UserError(f"Measurements need a 2D or 3D object mask; got {nd} dimensions.")
    props = ["label", "num_pixels", "centroid", "bbox"]
    intensity = None
    if image is not None:
        intensity = np.asarray(image)
        if channel_axis is not None:
            intensity = np.moveaxis(intensity, channel_axis, -1)
        if intensity.shape[:nd] != instances.shape:
            raise UserError(f"The image's spatial shape {intensity.shape[:nd]} differs from the objects' "
                            f"{instances.shape}.")
        props += ["intensity_mean", "intensity_max"]
    table = regionprops_table(instances.astype(np.int64, copy=False), intensity_image=intensity,
                              properties=props)
    axes = AXIS_NAMES[-nd:]
    voxel = 1.0 if scale is None else float(np.prod([float(s) for s in tuple(scale)[-nd:]]))
    cols: dict[str, np.ndarray] = {"label": np.asarray(table["label"], np.int64)}
    cols["area" if nd == 2 else "volume"] = np.asarray(table["num_pixels"], np.float64) * voxel
    cols["pixels"] = np.asarray(table["num_pixels"], np.int64)
    for i, a in enumerate(axes):
        cols[f"centroid_{a}"] = np.asarray(table[f"centroid-{i}"], np.float64)
    for i, a in enumerate(axes):
        cols[f"bbox_{a}_min"] = np.asarray(table[f"bbox-{i}"], np.int64)
        cols[f"bbox_{a}_max"] = np.asarray(table[f"bbox-{i + nd}"], np.int64)
    if intensity is not None:
        n_ch = 1 if intensity.ndim == nd else intensity.shape[-1]
        for stat in ("mean", "max"):
            for c in range(n_ch):
                key = f"intensity_{stat}" if intensity.ndim == nd else f"intensity_{stat}-{c}"
                name = f"{stat}_intensity" + ("" if n_ch == 1 else f"_c{c}")
                cols[name] = np.asarray(table[key], np.float64)
    return cols


def table_csv(columns: dict[str, np.ndarray]) -> str:
    """The measurements as CSV text (a header, one row per object)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    names = list(columns)
    w.writerow(names)
    for row in zip(*(columns[n].tolist() for n in names)):
        w.writerow(row)
    return buf.getvalue()


def write_csv(path, columns: dict[str, np.ndarray]) -> Path:
    """Write the measurements atomically (a temporary file in the same folder, then rename)."""
    from .io import write_atomic

    def write(tmp):
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(table_csv(columns))

    return write_atomic(path, write, "choose another file for the measurements")
