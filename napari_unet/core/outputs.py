"""Prediction outputs written as tiles finish: probabilities and labels to zarr, .npy or TIFF.

:class:`Outputs` is a sink for :func:`inference.predict_iter`: it receives finished regions of the
probability map, writes them, and derives the argmax labels region by region, so neither output
has to fit in memory. Each output goes to a temporary path next to its target (our pid-named
temporary names) and is moved into place by :meth:`Outputs.commit`; an error or interruption
removes the temporaries and leaves any older output untouched.

- ``.zarr``: an OME-Zarr image (chunked, compressed, voxel size in its metadata), memory bounded by
  a row of tiles.
- ``.npy`` and ``.tif`` larger than ``MEMMAP_BYTES``: memory-mapped files (an uncompressed BigTIFF
  for TIFF), written region by region; the page cache, not the process, holds the data.
- smaller ``.npy``/``.tif``: in memory, written at the end (TIFF zlib-compressed), as before.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from ..errors import UserError
from .io import apply_umask, disk_error, remove_stale_temps, temp_path, write_array
from .ome import create_output, replace_dir

MEMMAP_BYTES = 1 << 30
PIECE = 512  # last-axis width of one write (the 2D chunk width)


def label_dtype(n_classes: int):
    return np.uint8 if n_classes < 255 else np.uint16


def is_zarr(path) -> bool:
    return Path(path).suffix.lower() == ".zarr"


class Outputs:
    """The sink of one prediction: ``outputs(region, block)`` with ``block`` (n_classes, *region)."""

    def __init__(self, probabilities=None, labels=None, *, n_classes: int, spatial: tuple[int, ...],
                 voxel_size=None, unit: str | None = None, model_ndim: int = 2, memmap_bytes: int = MEMMAP_BYTES):
        self.targets = {k: Path(v) for k, v in (("probabilities", probabilities), ("labels", labels)) if v}
        self.n_classes, self.spatial = n_classes, tuple(int(s) for s in spatial)
        self.shapes = {"probabilities": (n_classes,) + self.spatial, "labels": self.spatial}
        self.dtypes = {"probabilities": np.dtype(np.float32), "labels": np.dtype(label_dtype(n_classes))}
        self.voxel_size, self.unit, self.model_ndim, self.memmap_bytes = voxel_size, unit, model_ndim, memmap_bytes
        self.arrays: dict[str, object] = {}
        self.tmp: dict[str, Path] = {}
        self.kind: dict[str, str] = {}

    # -- lifecycle
    def __enter__(self):
        try:
            for name, target in self.targets.items():
                self._open(name, target)
        except BaseException:
            self.abort()
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
        return False

    def _open(self, name: str, target: Path) -> None:
        shape, dtype = self.shapes[name], self.dtypes[name]
        remove_stale_temps(target.parent, target.name)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        suffix = target.suffix.lower()
        try:
            if suffix == ".zarr":
                self.tmp[name] = tmp = temp_path(target, ".zarr")
                self.arrays[name] = create_output(tmp, shape, dtype, has_channel=name == "probabilities",
                                                  voxel_size=self.voxel_size, unit=self.unit,
                                                  model_ndim=self.model_ndim, name=target.name.split(".")[0])
                self.kind[name] = "zarr"
            elif nbytes > self.memmap_bytes:
                self.tmp[name] = tmp = temp_path(target, suffix)
                if suffix == ".npy":
                    self.arrays[name] = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
                else:
                    import tifffile

                    self.arrays[name] = tifffile.memmap(tmp, shape=shape, dtype=dtype, bigtiff=True,
                                                        photometric="minisblack")
                self.kind[name] = "memmap"
            else:
                self.arrays[name] = np.zeros(shape, dtype)
                self.kind[name] = "memory"
        except OSError as e:
            raise disk_error(e, target, "choose another output path") from None

    def __call__(self, region, block: np.ndarray) -> None:
        region = tuple(region)
        x0 = region[-1].start or 0
        try:
            # piece by piece along the last axis (one chunk wide): zarr encodes a few chunks at a time
            # and the labels' argmax temporaries stay small, whatever the image width
            for a in range(0, block.shape[-1], PIECE):
                sub = block[..., a:a + PIECE]
                r = region[:-1] + (slice(x0 + a, x0 + a + sub.shape[-1]),)
                if "probabilities" in self.arrays:
                    self.arrays["probabilities"][(slice(None),) + r] = sub
                if "labels" in self.arrays:
                    self.arrays["labels"][r] = to_labels_block(sub)
        except OSError as e:
            raise disk_error(e, self.targets.get("probabilities") or self.targets["labels"],
                             "choose another output path") from None

    def commit(self) -> None:
        """Move every output into place (after a successful prediction)."""
        try:
            for name, target in self.targets.items():
                kind = self.kind[name]
                if kind == "memory":
                    write_array(target, self.arrays[name])
                    continue
                arr = self.arrays.pop(name)
                if kind == "memmap":
                    arr.flush()
                    del arr
                    apply_umask(self.tmp[name])
                    os.replace(self.tmp[name], target)
                else:  # zarr wrote its files with plain open()/mkdir: the umask applies already
                    replace_dir(self.tmp[name], target)
                del self.tmp[name]
        except OSError as e:
            self.abort()
            raise disk_error(e, target, "choose another output path") from None
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Remove the temporaries; outputs already in place and older outputs stay."""
        self.arrays.clear()
        for tmp in self.tmp.values():
            try:
                shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
            except OSError:
                pass
        self.tmp.clear()

    def describe(self) -> str:
        return " and ".join(f"{name} {self.shapes[name]} to {t}" for name, t in self.targets.items())


def write_label_image(path, data: np.ndarray, *, voxel_size=None, unit: str | None = None,
                      model_ndim: int = 2) -> None:
    """Write a whole label image (e.g. instances) to .zarr (OME-Zarr, as the probabilities), .npy or .tif.

    Atomic: a temporary file or folder next to ``path``, then moved into place (an older zarr output
    of the same name is replaced only then).
    """
    path = Path(path)
    if not is_zarr(path):
        write_array(path, data)
        return
    remove_stale_temps(path.parent, path.name)
    tmp = temp_path(path, ".zarr")
    try:
        arr = create_output(tmp, data.shape, data.dtype, has_channel=False, voxel_size=voxel_size, unit=unit,
                            model_ndim=model_ndim, name=path.name.split(".")[0])
        arr[...] = data
        replace_dir(tmp, path)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise disk_error(e, path, "choose another output path") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def to_labels_block(probabilities: np.ndarray) -> np.ndarray:
    """Argmax labels of a block (channel c -> label value c + 1), as :func:`inference.to_labels`."""
    lab = np.argmax(probabilities, axis=0) + 1
    return lab.astype(label_dtype(probabilities.shape[0]))


def check_output_target(path, flag: str = "--out") -> Path:
    """Fail before any work when an output path (.tif/.tiff/.npy/.zarr) cannot be written."""
    p = Path(path)
    if p.suffix.lower() not in (".tif", ".tiff", ".npy", ".zarr"):
        raise UserError(f"{flag} '{p}' must end in .tif, .tiff, .npy or .zarr.")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"The folder of {flag} '{p}' does not exist; create it first.")
    if p.suffix.lower() != ".zarr" and (p.is_dir() or str(path).endswith(("/", os.sep))):
        raise UserError(f"{flag} '{p}' is a folder; give a file name.")
    if p.suffix.lower() == ".zarr" and p.exists() and not (p / ".zattrs").exists() and not (p / "zarr.json").exists() \
            and not (p / ".zarray").exists() and (p.is_file() or any(p.iterdir())):
        raise UserError(f"{flag} '{p}' exists and is not a zarr image; choose another path (only an older zarr "
                        "output is replaced).")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise UserError(f"Cannot write '{p}': permission denied; choose a writable location.")
    return p
