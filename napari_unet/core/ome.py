"""Zarr and OME-Zarr images: read level 0 of a multiscale with its axes and voxel size, write
chunked outputs with OME-Zarr metadata.

Reading understands OME-Zarr 0.4 (``multiscales`` in the group attributes, zarr format 2) and 0.5
(the same under ``ome``, zarr format 3), and plain zarr arrays. Outputs are written as OME-Zarr 0.4
on zarr format 2 (readable by zarr-python 2 and 3, napari-ome-zarr, Fiji/MoBIE, ome-zarr-py), one
resolution level named ``0``. No OME library is used for so little metadata: ome-zarr-py would add
a dependency (and fsspec/aiohttp) for a dozen lines of JSON.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError

OME_VERSION = "0.4"
SPATIAL = ("z", "y", "x")


@dataclass
class ImageInfo:
    """An image array (numpy, memmap, zarr or a lazy view: read tile by tile) and what we know of it.

    ``axes``: lower-case axis names of ``array`` when the file says (e.g. "czyx"), else None.
    ``voxel_size``: physical size per *spatial* axis of the array (channel axis excluded), or None.
    ``channel_axis``: the channel axis named by the file's metadata, or None.
    """

    array: object
    axes: str | None = None
    voxel_size: tuple[float, ...] | None = None
    unit: str | None = None
    channel_axis: int | None = None


class AxisView:
    """A lazy view of ``array`` with some axes fixed to an index (drops singleton t/c axes of OME data).

    Indexing reads only the requested region from the underlying (zarr) array.
    """

    def __init__(self, array, fixed: dict[int, int]):
        self.base, self.fixed = array, dict(fixed)
        self.shape = tuple(s for i, s in enumerate(array.shape) if i not in self.fixed)
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, index):
        index = index if isinstance(index, tuple) else (index,)
        if any(i is Ellipsis for i in index):
            k = index.index(Ellipsis)
            index = index[:k] + (slice(None),) * (self.ndim - len(index) + 1) + index[k + 1:]
        index = index + (slice(None),) * (self.ndim - len(index))
        it = iter(index)
        full = tuple(self.fixed[i] if i in self.fixed else next(it) for i in range(len(self.base.shape)))
        return np.asarray(self.base[full])

    def __array__(self, dtype=None, copy=None):
        out = self[...]
        return out.astype(dtype) if dtype is not None else out

    def __len__(self):
        return self.shape[0]


# --------------------------------------------------------------------------- reading
def _multiscales(attrs: dict):
    ome = attrs.get("ome")
    if isinstance(ome, dict) and "multiscales" in ome:
        return ome["multiscales"]  # 0.5
    return attrs.get("multiscales")  # 0.4 and earlier


def _scale_of(transforms) -> list[float] | None:
    for t in transforms or []:
        if isinstance(t, dict) and t.get("type") == "scale" and isinstance(t.get("scale"), list):
            return [float(s) for s in t["scale"]]
    return None


def image_from_group(group, p: Path, what: str) -> ImageInfo:
    """Level 0 of an OME-Zarr multiscale group, with axes, channel axis and voxel size."""
    ms = _multiscales(dict(group.attrs))
    if not isinstance(ms, list) or not ms or not isinstance(ms[0], dict) or not ms[0].get("datasets"):
        try:
            names = sorted(group.array_keys())
        except Exception:  # noqa: BLE001 - whatever the store says, the message stays useful
            names = []
        listing = ", ".join(names[:10]) if names else "none"
        raise UserError(f"'{p}' is a zarr group, not an array or an OME-Zarr image (no multiscales metadata); give "
                        f"the path of one of its arrays (arrays in it: {listing}).")
    m = ms[0]
    ds = m["datasets"][0]
    try:
        arr = group[ds["path"]]
    except Exception:  # noqa: BLE001
        raise UserError(f"The OME-Zarr {what} '{p}' names level '{ds.get('path')}' but it is missing; the file is "
                        "incomplete, write it again.") from None
    axes_meta = m.get("axes") or []
    names = [a.get("name", "?") if isinstance(a, dict) else str(a) for a in axes_meta]
    types = [a.get("type") if isinstance(a, dict) else None for a in axes_meta]
    if len(names) != arr.ndim:  # 0.1-0.3 had no axes; assume trailing spatial axes
        names = list("tczyx"[-arr.ndim:]) if arr.ndim <= 5 else [f"d{i}" for i in range(arr.ndim)]
        types = [None] * arr.ndim
    types = [t or ("space" if n in SPATIAL else "channel" if n == "c" else "time" if n == "t" else None)
             for n, t in zip(names, types)]
    scale = _scale_of(ds.get("coordinateTransformations"))
    outer = _scale_of(m.get("coordinateTransformations"))
    if scale is not None and outer is not None and len(outer) == len(scale):
        scale = [a * b for a, b in zip(scale, outer)]
    units = {a.get("unit") for a in axes_meta if isinstance(a, dict) and a.get("type") == "space"} - {None}
    # singleton time/channel axes would count as extra planes or a missing channel: view them away
    fixed = {i: 0 for i, (t, s) in enumerate(zip(types, arr.shape)) if t in ("time", "channel") and s == 1}
    keep = [i for i in range(arr.ndim) if i not in fixed]
    array = AxisView(arr, fixed) if fixed else arr
    names = [names[i] for i in keep]
    types = [types[i] for i in keep]
    ch = [i for i, t in enumerate(types) if t == "channel"]
    channel_axis = ch[0] if len(ch) == 1 else None
    voxel = None
    if scale is not None and len(scale) == arr.ndim:
        voxel = tuple(float(scale[k]) for j, k in enumerate(keep) if types[j] == "space")
    return ImageInfo(array, "".join(n[0] for n in names).lower(), voxel or None, units.pop() if len(units) == 1 else None,
                     channel_axis)


def read_zarr_image(p: Path, what: str = "image") -> ImageInfo:
    """A zarr array, an array inside a zarr group, or an OME-Zarr image (level 0)."""
    try:
        import zarr

        node = zarr.open(str(p), mode="r")
    except (ValueError, OSError, KeyError, TypeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"'{p}' is not a readable zarr array ({msg}); give the path of a zarr array or OME-Zarr "
                        "image.") from None
    except Exception as e:  # noqa: BLE001 - zarr raises its own error types (e.g. no group or array found)
        raise UserError(f"'{p}' is not a zarr array or OME-Zarr image ({type(e).__name__}); give the path of one.") from None
    if not hasattr(node, "dtype"):
        info = image_from_group(node, p, what)
    else:
        info = ImageInfo(node)
        parent = p.parent  # an array inside an OME-Zarr image: take the image's axes and voxel size
        if (parent / ".zattrs").exists() or (parent / "zarr.json").exists():
            try:
                g = zarr.open_group(str(parent), mode="r")
                ms = _multiscales(dict(g.attrs))
                if ms and ms[0]["datasets"][0].get("path") == p.name:
                    info = image_from_group(g, parent, what)
            except Exception:  # noqa: BLE001 - metadata is a bonus; the array itself is readable
                pass
    if np.dtype(info.array.dtype).kind not in "biuf":
        raise UserError(f"The {what} zarr array '{p}' holds {info.array.dtype} data, not numbers.")
    return info


# --------------------------------------------------------------------------- writing
def default_chunks(shape: tuple[int, ...], n_lead: int, model_ndim: int = 2) -> tuple[int, ...]:
    """Chunks for an output: whole ``n_lead`` leading (channel) axes, then one plane per chunk along a
    2D model's stack axes and 512^2 (2D) or 128^3 (3D) spatial chunks (1-8 MiB of float32)."""
    spatial = shape[n_lead:]
    side = 512 if model_ndim == 2 else 128
    k = min(model_ndim, len(spatial))
    return tuple(shape[:n_lead]) + (1,) * (len(spatial) - k) + tuple(min(s, side) for s in spatial[-k:])


def _axes_meta(ndim: int, has_channel: bool, unit: str | None):
    n_sp = ndim - int(has_channel)
    names = (["t"] * max(0, n_sp - 3) + list(SPATIAL[-min(3, n_sp):]))
    axes = []
    if has_channel:
        axes.append({"name": "c", "type": "channel"})
    for i, n in enumerate(names):
        if n == "t" and i < n_sp - 3:
            axes.append({"name": f"t{i}" if i else "t", "type": "time"})
        else:
            axes.append({"name": n, "type": "space", **({"unit": unit} if unit else {})})
    return axes


def create_output(path: Path, shape: tuple[int, ...], dtype, *, has_channel: bool, voxel_size=None,
                  unit: str | None = None, chunks=None, model_ndim: int = 2, name: str = "image"):
    """Create an OME-Zarr image (one level, ``0``) at ``path`` and return its array, ready for writes.

    ``voxel_size`` covers the spatial axes (the last ones); missing or mismatched sizes give 1.0.
    """
    import zarr

    n_sp = len(shape) - int(has_channel)
    scale = [1.0] * len(shape)
    if voxel_size is not None and len(voxel_size) <= n_sp:
        scale[len(shape) - len(voxel_size):] = [float(v) for v in voxel_size]
    chunks = chunks or default_chunks(tuple(shape), int(has_channel), model_ndim)
    kw = {"zarr_format": 2} if int(zarr.__version__.split(".")[0]) >= 3 else {}
    group = zarr.open_group(str(path), mode="w", **kw)
    group.attrs["multiscales"] = [{
        "version": OME_VERSION, "name": name, "axes": _axes_meta(len(shape), has_channel, unit),
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}],
    }]
    if int(zarr.__version__.split(".")[0]) >= 3:
        arr = group.create_array("0", shape=tuple(shape), chunks=tuple(chunks), dtype=dtype, fill_value=0,
                                 chunk_key_encoding={"name": "v2", "separator": "/"})
    else:  # pragma: no cover - zarr 2
        arr = group.create_dataset("0", shape=tuple(shape), chunks=tuple(chunks), dtype=dtype, fill_value=0,
                                   dimension_separator="/")
    return arr


def open_output_array(path, mode: str = "r+") -> object:
    """Open level 0 of an output created by :func:`create_output`: for writing (on a cluster worker)
    or, with ``mode="r"``, for reading (the widget shows outputs on disk from it)."""
    import zarr

    return zarr.open_array(str(Path(path) / "0"), mode=mode)


def replace_dir(tmp: Path, target: Path) -> None:
    """Move a finished zarr folder into place, replacing an older output of the same name."""
    target = Path(target)
    old = None
    if target.exists() or target.is_symlink():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() and not old.is_symlink() else old.unlink()
