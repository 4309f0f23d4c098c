"""Images, labels and patches: normalisation, the label convention, sampling and augmentation.

Label convention (everywhere): 0 = not annotated (ignored by the loss), 1 = background,
2..K+1 = object classes. Instance masks from other tools (0 = background, each object its own id)
become this convention with :func:`instances_to_classes`: 0 -> 1 (background), any id > 0 -> 2.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from ..errors import UserError

MAX_PERCENTILE_SAMPLES = 2_000_000
MAX_EMPTY_CLASSES = 4  # a new model with more classes than this, most never painted: labels are likely ids
CLIP = 10.0  # normalised values are clipped to [-CLIP, CLIP]; protects against huge outliers


# --------------------------------------------------------------------------- image access
class ImageView:
    """Channels-first access to an array-like (numpy, dask, zarr) without loading it whole.

    ``channel_axis`` names the channel axis of ``array`` (None: a single channel).
    """

    def __init__(self, array, channel_axis: int | None = None):
        if not hasattr(array, "shape") or not hasattr(array, "__getitem__"):
            array = np.asarray(array)
        shape = tuple(int(s) for s in array.shape)
        dtype = np.dtype(getattr(array, "dtype", np.float32))
        if dtype.kind not in "biuf":
            raise UserError(f"Image data type {dtype} is not numeric; convert the image to integers or floats.")
        if channel_axis is not None:
            if not -len(shape) <= channel_axis < len(shape):
                raise UserError(f"Channel axis {channel_axis} does not exist in an image of shape {shape}.")
            channel_axis %= len(shape)
        self.array = array
        self.channel_axis = channel_axis
        self.n_channels = 1 if channel_axis is None else shape[channel_axis]
        self.spatial_shape = tuple(s for i, s in enumerate(shape) if i != channel_axis)
        if len(self.spatial_shape) < 2:
            raise UserError(f"Image of shape {shape} has fewer than 2 spatial axes; a 2D or 3D image is needed.")
        if any(s == 0 for s in self.spatial_shape):
            raise UserError(f"Image of shape {shape} is empty.")

    def read(self, index: tuple) -> np.ndarray:
        """Read ``index`` (a tuple of ints/slices over the spatial axes) as float (C, ...)."""
        if self.channel_axis is None:
            block = np.asarray(self.array[index])[None]
        else:
            full = list(index)
            full.insert(self.channel_axis, slice(None))
            block = np.asarray(self.array[tuple(full)])
            # the channel axis moved left by the number of integer indices before it
            ch = self.channel_axis - sum(isinstance(i, (int, np.integer)) for i in index[: self.channel_axis])
            block = np.moveaxis(block, ch, 0)
        # float64 stays float64 until normalised: huge values would overflow float32 to inf
        return block.astype(np.float64 if block.dtype == np.float64 else np.float32, copy=False)


def compute_percentiles(view: ImageView, low: float, high: float) -> np.ndarray:
    """Per-channel (low, high) percentiles of the finite values, from a strided subsample.

    Returns an array of shape (C, 2). Raises UserError when the image has no finite value.
    """
    n = int(np.prod(view.spatial_shape))
    stride = max(1, int(np.ceil((n / MAX_PERCENTILE_SAMPLES) ** (1 / len(view.spatial_shape)))))
    sub = view.read(tuple(slice(None, None, stride) for _ in view.spatial_shape))
    out = np.zeros((view.n_channels, 2), np.float64)
    for c in range(view.n_channels):
        vals = sub[c][np.isfinite(sub[c])]
        if vals.size == 0:
            raise UserError("The image holds no finite value (all NaN or inf); check the image file.")
        out[c] = np.percentile(vals.astype(np.float64), [low, high])
    return out


def normalize(block: np.ndarray, percentiles: np.ndarray) -> np.ndarray:
    """Map percentiles (C, 2) to 0..1 per channel; NaN becomes 0, infinities and outliers are clipped."""
    # in the block's precision: float32 tiles stay float32, float64 keeps huge values finite
    dtype = block.dtype if block.dtype.kind == "f" else np.dtype(np.float32)
    shape = (-1,) + (1,) * (block.ndim - 1)
    lo, hi = percentiles[:, 0], percentiles[:, 1]
    scale = np.where(hi - lo > 1e-12, hi - lo, 1.0)  # a constant image maps to 0, not to NaN
    lo, scale = lo.reshape(shape).astype(dtype), scale.reshape(shape).astype(dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        out = ((block - lo) / scale)
    out = np.clip(out, -CLIP, CLIP).astype(np.float32)  # NaN passes clip and is zeroed next
    return np.nan_to_num(out, copy=False, nan=0.0)


# --------------------------------------------------------------------------- labels
def instances_to_classes(mask: np.ndarray, name: str = "instance mask") -> np.ndarray:
    """Instance or binary mask (0 = background, ids > 0 = objects) -> convention (1 bg, 2 object).

    Ids may be of any size (uint32, 70000...): only zero / non-zero matters, so no value-range check
    applies before the conversion. Boolean masks are accepted.
    """
    mask = np.asarray(mask)
    if mask.dtype.kind not in "biuf":
        raise UserError(f"The {name} has data type {mask.dtype}; an instance mask must hold integers.")
    if mask.dtype.kind == "f" and not np.all(np.isfinite(mask)):
        raise UserError(f"The {name} contains NaN or infinite values; an instance mask must hold whole numbers.")
    if mask.dtype.kind in "if" and mask.size and mask.min() < 0:
        raise UserError(f"The {name} contains negative values; an instance mask uses 0 for background and "
                        "positive ids for objects.")
    return np.where(mask > 0, 2, 1).astype(np.uint8)


def check_labels(labels, name: str = "labels") -> np.ndarray:
    """Validate an annotation array and return it as a new int64 array (the input is never modified)."""
    arr = np.asarray(labels)
    if arr.dtype.kind == "b":
        raise UserError(f"The {name} are boolean; use 1 for background and 2 for objects "
                        "(or pass the instance-mask option to convert a mask).")
    if arr.dtype.kind not in "iuf":
        raise UserError(f"The {name} have data type {arr.dtype}; annotations must be integers.")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise UserError(f"The {name} contain NaN or infinite values; annotations must be whole numbers.")
        if np.any(arr != np.round(arr)):
            raise UserError(f"The {name} contain fractional values; annotations must be whole numbers "
                            "(0 = not annotated, 1 = background, 2.. = classes).")
    if arr.size and arr.min() < 0:
        raise UserError(f"The {name} contain negative values; use 0 = not annotated, 1 = background, "
                        "2.. = object classes.")
    if arr.size and arr.max() > 256:
        raise UserError(f"The {name} use value {int(arr.max())}; at most 255 classes (values up to 256) are "
                        "supported. Instance masks from other tools need the instance-mask option.")
    return arr.astype(np.int64)


def class_counts(labels_list) -> np.ndarray:
    """Annotated pixel count per label value (index = value), over several label arrays."""
    top = max(int(lab.max()) if lab.size else 0 for lab in labels_list)
    total = np.zeros(top + 1, np.int64)
    for lab in labels_list:
        total += np.bincount(lab.ravel(), minlength=top + 1)
    return total


def check_annotations(labels_list, n_classes: int | None = None, declared: int = 0) -> int:
    """Check there is something to learn from; return the number of classes (background included).

    ``n_classes``: the classes of the model trained on (warm start). ``declared``: the number of
    class names the user gave for a new model; classes up to it may be still unpainted.
    """
    counts = class_counts(labels_list)
    present = [v for v in range(1, len(counts)) if counts[v] > 0]
    if not present:
        raise UserError("The annotations contain no annotated pixel (all 0). Paint some background (label 1) "
                        "and some objects (label 2) first.")
    if len(present) < 2:
        raise UserError(f"Only label {present[0]} is annotated; a model needs at least two classes. Paint "
                        "some background (label 1) and some objects (label 2).")
    needed = len(counts) - 1
    empty = needed - len(present)
    if n_classes is None and needed > max(MAX_EMPTY_CLASSES, declared) and empty > needed // 2:
        shown = ", ".join(str(v) for v in present[:6]) + (", ..." if len(present) > 6 else "")
        raise UserError(f"The annotations use labels {shown}: that makes {needed} classes of which {empty} have no "
                        "annotation. For an instance or binary mask use the instance-mask option; otherwise remap "
                        "the labels to 1 = background, 2, 3.. = classes.")
    if n_classes is not None and needed > n_classes:
        raise UserError(f"The annotations use label {needed} but the model knows {n_classes} classes "
                        f"(labels 1..{n_classes}); start a new model to add classes.")
    return max(needed, n_classes or 0)


# --------------------------------------------------------------------------- training samples
@dataclass
class Sample:
    """One normalised training image (C, *spatial) with its labels (*spatial), int64.

    ``target``: extra float32 targets (E, *spatial) for the objects head (objects mode), else None.
    """

    image: np.ndarray
    labels: np.ndarray
    target: np.ndarray | None = None


def make_samples(images, labels, ndim: int, in_channels: int | None, channel_axis, norm_low: float,
                 norm_high: float, from_instances: bool = False, objects: bool = False,
                 percentiles=None) -> list[Sample]:
    """Pair, check and normalise images and annotations.

    2D models split stacks into planes and keep the annotated planes only; 3D models take ZYX, or the
    annotated time points of TZYX.
    ``objects``: annotations hold one value per object (see core/objects.py); the samples get
    semantic labels (1 background, 2 object) and the objects head's targets.
    ``percentiles``: per image, the (C, 2) normalisation percentiles to use, or None to compute them
    from the image (the GUI trains on a crop of a big image normalised as the whole image is).
    """
    if len(images) != len(labels):
        raise UserError(f"Got {len(images)} image(s) but {len(labels)} annotation array(s); give one "
                        "annotation array per image.")
    if not images:
        raise UserError("No training images were given.")
    axes = channel_axis if isinstance(channel_axis, (list, tuple)) else [channel_axis] * len(images)
    pcts = list(percentiles) if percentiles is not None else [None] * len(images)
    samples = []
    for i, (img, lab, ax) in enumerate(zip(images, labels, axes)):
        view = ImageView(img, ax)
        if objects:
            from .objects import check_objects, object_labels

            name = f"annotations of image {i + 1}"
            obj, originals = object_labels(lab, from_instances, name)
            if obj.shape == view.spatial_shape:
                check_objects(obj, ndim, name, originals, from_instances)
            lab = obj
        elif from_instances:  # converted first: instance ids may be far above the class limit
            lab = instances_to_classes(lab, name=f"instance mask of image {i + 1}").astype(np.int64)
        else:
            lab = check_labels(lab, name=f"annotations of image {i + 1}")
        if lab.shape != view.spatial_shape:
            raise UserError(f"Image {i + 1} has spatial shape {view.spatial_shape} but its annotations have "
                            f"shape {lab.shape}; they must match (is the channel axis set correctly?).")
        if in_channels is not None and view.n_channels != in_channels:
            raise UserError(f"Image {i + 1} has {view.n_channels} channel(s) but the model expects "
                            f"{in_channels}; pick matching images or start a new model.")
        sp = len(view.spatial_shape)
        if ndim == 3 and sp not in (3, 4):
            raise UserError(f"A 3D model needs ZYX images (or TZYX time-lapses); image {i + 1} has {sp} spatial "
                            f"axes {view.spatial_shape}. Use a 2D model for this image.")
        if ndim == 2 and sp > 4:
            raise UserError(f"Image {i + 1} has {sp} spatial axes; at most 4 (e.g. TZYX) are supported.")
        pct = pcts[i] if pcts[i] is not None else compute_percentiles(view, norm_low, norm_high)
        if ndim == 3 and sp == 3:
            samples.append(_sample(normalize(view.read((slice(None),) * 3), pct), lab, objects))
            continue
        lead = view.spatial_shape[:-ndim]  # 2D: planes of stacks; 3D: the time points of TZYX
        for idx in np.ndindex(*lead) if lead else [()]:
            plane_lab = lab[idx]
            if not plane_lab.any():
                continue
            plane = view.read(tuple(int(j) for j in idx) + (slice(None),) * ndim)
            samples.append(_sample(normalize(plane, pct), plane_lab, objects))
    return samples


def _sample(image: np.ndarray, lab: np.ndarray, objects: bool) -> Sample:
    if not objects:
        return Sample(image, lab)
    from .objects import distance_targets, semantic_from_objects

    return Sample(image, semantic_from_objects(lab), distance_targets(lab)[None])


def split_validation(samples: list[Sample], fraction: float, block: tuple[int, ...],
                     rng: np.random.Generator, max_blocks: int = 32) -> tuple[list[Sample], list[tuple[int, tuple]]]:
    """Hold out whole blocks of annotations for validation.

    Returns the training samples (held-out annotations set to 0, new arrays) and a list of
    (sample index, block slices) regions for validation. No split when there is too little
    annotation to spare (fewer than 4 annotated blocks) or training would lose a class.

    Blocks are taken in the order of a hash of their place on a fixed grid, salted from ``rng`` (the
    training seed), until ``fraction`` of the annotated pixels is held out. So a retrain on grown
    annotations (a warm start, a correction round) holds out the same places again, plus the next
    in that order when the annotations grew: what was held out stays unseen, and a round is no
    longer scored on the strokes the previous round trained on. (A split redrawn each round was:
    its score started saturated and it kept steps from a round's first seconds; loop_sim.py. A
    block held out only when its own hash fell below ``fraction`` kept the places exactly but left
    some runs with no held-out block at all.)
    """
    if fraction <= 0:
        return samples, []
    salt = int(rng.integers(2**62))
    blocks = []  # (hash, sample index, slices, annotated pixels)
    for si, s in enumerate(samples):
        shape = s.labels.shape
        b = [min(bs, n) for bs, n in zip(block, shape)]
        for origin in np.ndindex(*[int(np.ceil(n / bb)) for n, bb in zip(shape, b)]):
            sl = tuple(slice(o * bb, min((o + 1) * bb, n)) for o, bb, n in zip(origin, b, shape))
            cnt = int(np.count_nonzero(s.labels[sl]))
            if cnt:
                key = f"{salt}:{si}:{origin}:{tuple(b)}".encode()
                u = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")
                blocks.append((u, si, sl, cnt))
    if len(blocks) < 4:
        return samples, []
    total = sum(b[3] for b in blocks)
    chosen, held = [], 0
    for _, si, sl, cnt in sorted(blocks, key=lambda b: b[0]):
        if held >= fraction * total or len(chosen) >= min(len(blocks) // 2, max_blocks):
            break
        chosen.append((si, sl, cnt))
        held += cnt
    train_labels = [s.labels.copy() for s in samples]
    for si, sl, _ in chosen:
        train_labels[si][sl] = 0
    counts = class_counts(train_labels)
    if np.count_nonzero(counts[1:]) < 2:
        return samples, []
    train = [Sample(s.image, lab, s.target) for s, lab in zip(samples, train_labels)]
    return train, [(si, sl) for si, sl, _ in chosen]


class PatchSampler:
    """Draws augmented patches, most of them centred on annotated pixels, classes balanced.

    Sparse strokes train well because patches are centred on the strokes rather than drawn
    uniformly over a mostly unannotated image.
    """

    def __init__(self, samples: list[Sample], patch_size: tuple[int, ...], annotated_fraction: float = 0.9,
                 augment: bool = True, max_coords: int = 200_000, seed: int = 0):
        self.samples = samples
        self.patch = tuple(patch_size)
        self.annotated_fraction = annotated_fraction
        self.augment = augment
        self.rng = np.random.default_rng(seed)
        # coordinates of annotated pixels per class: {class: [(sample index, coords array)]}
        self.coords: dict[int, list[tuple[int, np.ndarray]]] = {}
        weights = []
        for si, s in enumerate(samples):
            for v in np.unique(s.labels):
                if v == 0:
                    continue
                pts = np.argwhere(s.labels == v)
                if len(pts) > max_coords:
                    pts = pts[self.rng.choice(len(pts), max_coords, replace=False)]
                self.coords.setdefault(int(v), []).append((si, pts))
            weights.append(np.count_nonzero(s.labels))
        self.classes = sorted(self.coords)
        w = np.asarray(weights, np.float64) + 1e-9
        self.sample_weights = w / w.sum()

    def _centre(self) -> tuple[int, np.ndarray]:
        if self.classes and self.rng.random() < self.annotated_fraction:
            cls = self.classes[self.rng.integers(len(self.classes))]
            entries = self.coords[cls]
            sizes = np.array([len(p) for _, p in entries], np.float64)
            si, pts = entries[self.rng.choice(len(entries), p=sizes / sizes.sum())]
            return si, pts[self.rng.integers(len(pts))]
        si = int(self.rng.choice(len(self.samples), p=self.sample_weights))
        shape = self.samples[si].labels.shape
        return si, np.array([self.rng.integers(n) for n in shape])

    def draw(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(image, labels, targets or None) of one patch."""
        si, centre = self._centre()
        s = self.samples[si]
        shape = s.labels.shape
        jitter = [self.rng.integers(-(p // 4), p // 4 + 1) for p in self.patch]
        starts = [int(c) - p // 2 + j for c, p, j in zip(centre, self.patch, jitter)]
        starts = [min(max(st, 0), max(n - p, 0)) for st, n, p in zip(starts, shape, self.patch)]
        # targets travel as extra channels, so crops and flips stay aligned; no intensity jitter on them
        extra = 0 if s.target is None else s.target.shape[0]
        both = s.image if not extra else np.concatenate([s.image, s.target])
        img, lab = crop_padded(both, s.labels, starts, self.patch)
        if self.augment:
            img, lab = augment(img, lab, self.rng, n_extra=extra)
        if not extra:
            return img, lab, None
        return img[:-extra], lab, img[-extra:]

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(images, labels, targets or None) of ``n`` patches."""
        drawn = [self.draw() for _ in range(n)]
        targets = None if any(d[2] is None for d in drawn) else np.stack([d[2] for d in drawn])
        return np.stack([d[0] for d in drawn]), np.stack([d[1] for d in drawn]), targets


def crop_padded(image: np.ndarray, labels: np.ndarray | None, starts, size):
    """Crop (C, *spatial) image and labels at ``starts``; pad (reflect / 0) where the image is smaller."""
    sl = tuple(slice(st, st + p) for st, p in zip(starts, size))
    img = image[(slice(None),) + sl]
    lab = None if labels is None else labels[sl]
    short = [p - n for p, n in zip(size, img.shape[1:])]
    if any(short):
        pad = [(0, max(d, 0)) for d in short]
        mode = "reflect" if all(n > d for n, d in zip(img.shape[1:], short)) else "edge"
        img = np.pad(img, [(0, 0)] + pad, mode=mode)
        if lab is not None:
            lab = np.pad(lab, pad, mode="constant")
    return img, lab


def augment(img: np.ndarray, lab: np.ndarray, rng: np.random.Generator, n_extra: int = 0):
    """Random flips on every spatial axis, 90-degree rotations in YX, intensity jitter (3D-aware).

    The last ``n_extra`` channels of ``img`` (targets) are flipped and rotated but not jittered.
    """
    nd = lab.ndim
    for ax in range(nd):
        if rng.random() < 0.5:
            img, lab = np.flip(img, ax + 1), np.flip(lab, ax)
    if img.shape[-1] == img.shape[-2]:
        k = int(rng.integers(4))
        img, lab = np.rot90(img, k, axes=(-2, -1)), np.rot90(lab, k, axes=(-2, -1))
    gain = rng.uniform(0.8, 1.25, size=(img.shape[0],) + (1,) * nd)
    shift = rng.uniform(-0.1, 0.1, size=(img.shape[0],) + (1,) * nd)
    if n_extra:
        gain[-n_extra:], shift[-n_extra:] = 1.0, 0.0
    img = (img * gain + shift).astype(np.float32)
    return np.ascontiguousarray(img), np.ascontiguousarray(lab)
