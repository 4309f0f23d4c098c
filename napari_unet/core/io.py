"""Image files in and out (TIFF, .npy, .zarr), safe temporary files and output-path checks.

Every problem becomes a :class:`UserError` naming the file and the fix. Outputs are written to a
temporary file in the target folder, then renamed; temporary names carry our prefix, the host and
the process id, so a writer removes only its own temporary files and stale ones (dead process or
older than an hour), never those of another live process writing the same folder.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import socket
import time
from pathlib import Path

import numpy as np

from ..errors import UserError
from .ome import ImageInfo

__all__ = ["ImageInfo", "read_image", "read_array", "write_array", "check_output_file", "check_distinct"]

IMAGE_SUFFIXES = (".tif", ".tiff", ".npy", ".zarr")
OUTPUT_SUFFIXES = (".tif", ".tiff", ".npy")
TMP_TAG = "nutmp"  # .<name>.nutmp-<host>-<pid>-<random><suffix>
STALE_SECONDS = 3600
LAZY_TIFF_BYTES = 512 * 2**20  # TIFFs larger than this are read tile by tile, smaller ones at once


# --------------------------------------------------------------------------- permissions
def _read_umask() -> int:
    """The process umask without changing it where possible (os.umask() sets it: racy with threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def output_mode(executable: bool = False) -> int:
    """Permissions a plain ``open()`` would give a new file (mkstemp gives 0600 whatever the umask)."""
    return (0o777 if executable else 0o666) & ~_read_umask()


def apply_umask(path) -> None:
    try:
        os.chmod(path, output_mode())
    except OSError:
        pass  # e.g. a file system without permissions; the data is written all the same


# --------------------------------------------------------------------------- temporary files
def _host() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def temp_path(target: Path, suffix: str = ".tmp") -> Path:
    """A fresh temporary path next to ``target`` that names this host and process."""
    return target.parent / f".{target.name}.{TMP_TAG}-{_host()}-{os.getpid()}-{secrets.token_hex(4)}{suffix}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists but belongs to someone else
    return True


def remove_stale_temps(folder: Path, name: str | None = None) -> list[Path]:
    """Remove our temporary files in ``folder`` left by dead processes or older than an hour.

    Only names with our tag are touched; a live process's temporary file is left alone.
    """
    removed = []
    pattern = f".{name or '*'}.{TMP_TAG}-*"
    try:
        candidates = list(Path(folder).glob(pattern))
    except OSError:
        return removed
    host = _host()
    for p in candidates:
        try:
            fields = p.name.split(f".{TMP_TAG}-", 1)[1].split("-")
            t_host, pid = fields[0], int(fields[1])
            age = time.time() - p.lstat().st_mtime
        except (IndexError, ValueError, OSError):
            continue
        if pid == os.getpid() and t_host == host:
            continue  # ours and maybe in use by another thread
        if age > STALE_SECONDS or (t_host == host and not _pid_alive(pid)):
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


def disk_error(e: OSError, target, fix: str) -> UserError:
    """A one-line UserError for an OSError raised while writing ``target``."""
    if e.errno == errno.ENOSPC or e.errno == errno.EDQUOT:
        return UserError(f"No space left on device writing '{target}'; free some space or {fix}.")
    if isinstance(e, PermissionError) or e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return UserError(f"Permission denied writing '{target}'; {fix}.")
    return UserError(f"Could not write '{target}' ({e.strerror or e}); check the space and permissions there, "
                     f"or {fix}.")


# --------------------------------------------------------------------------- reading
def _read_npy(p: Path, what: str):
    try:
        with open(p, "rb") as f:
            magic = f.read(6)
    except OSError as e:
        raise UserError(f"Cannot read the {what} file '{p}' ({e.strerror}); check its permissions.") from None
    if magic[:4] == b"PK\x03\x04":
        raise UserError(f"The {what} file '{p}' is an .npz archive, not a .npy array; extract one array "
                        "(numpy.load(...)[name]) and save it with numpy.save.")
    if magic != b"\x93NUMPY":
        raise UserError(f"The {what} file '{p}' is not a .npy array file; save the image with numpy.save "
                        "or as TIFF.")
    try:
        # memory-mapped: a header claiming a huge array allocates nothing; numpy checks it fits the file
        arr = np.load(p, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, MemoryError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"Cannot read the {what} file '{p}' ({msg}); the file is truncated or its header "
                        "is wrong. Save it again.") from None
    if arr.dtype.hasobject or arr.dtype.kind not in "biuf":
        raise UserError(f"The {what} file '{p}' holds {arr.dtype} data, not numbers; save a numeric array.")
    return arr


def _tiff_voxel_size(tif, series) -> tuple[tuple[float, ...] | None, str | None]:
    """Voxel size per spatial axis (Z, Y, X as present) from OME-XML or ImageJ/resolution tags."""
    axes = series.axes.upper()
    spatial = [a for a in axes if a in "ZYX"]
    if tif.is_ome and tif.ome_metadata:
        import xml.etree.ElementTree as ET

        try:
            root = ET.fromstring(tif.ome_metadata)
            px = next(e for e in root.iter() if e.tag.endswith("Pixels"))
            sizes = {a: px.get(f"PhysicalSize{a}") for a in "ZYX"}
            unit = px.get("PhysicalSizeXUnit") or "\u00b5m"  # the OME default unit is the micrometre
            if sizes["X"] is not None:
                return tuple(float(sizes[a] or 1.0) for a in spatial), unit
        except (ET.ParseError, StopIteration, ValueError):
            pass
    try:
        page = tif.pages[0]
        xres, yres = page.tags["XResolution"].value, page.tags["YResolution"].value
        xs, ys = xres[1] / xres[0], yres[1] / yres[0]
    except (KeyError, ZeroDivisionError, TypeError, IndexError):
        return None, None
    ij = tif.imagej_metadata or {}
    unit = ij.get("unit")
    if not ij and int(getattr(page.tags.get("ResolutionUnit"), "value", 1)) == 1 and (xs, ys) == (1.0, 1.0):
        return None, None  # no unit and no resolution: tifffile's defaults say nothing
    size = {"Z": float(ij.get("spacing", 1.0)), "Y": ys, "X": xs}
    return tuple(size[a] for a in spatial), unit


def _read_tiff(p: Path, what: str, lazy: bool | None) -> ImageInfo:
    """TIFF / OME-TIFF, lazily when large: memory-mapped if stored contiguous and uncompressed, else via
    tifffile's zarr store (reads only the strips/tiles a region needs)."""
    import tifffile

    try:
        with tifffile.TiffFile(p) as tif:
            series = tif.series[0]
            shape, dtype, axes = tuple(series.shape), np.dtype(series.dtype), series.axes.lower()
            voxel, unit = _tiff_voxel_size(tif, series)
            contiguous = series.dataoffset is not None
        nbytes = int(np.prod(shape)) * dtype.itemsize
        if lazy is None:
            lazy = nbytes > LAZY_TIFF_BYTES
        if not lazy:
            arr = tifffile.imread(p)
        elif contiguous:
            arr = tifffile.memmap(p, mode="r")
        else:
            import zarr

            arr = zarr.open(tifffile.imread(p, aszarr=True), mode="r")
            if not hasattr(arr, "dtype"):  # a pyramid: level 0
                arr = arr["0"]
    except PermissionError:
        raise UserError(f"Cannot read the {what} file '{p}': permission denied; check its permissions.") from None
    except MemoryError:
        raise UserError(f"The {what} file '{p}' is too large to load into memory; save it as .zarr (read tile "
                        "by tile) or crop it.") from None
    except (ValueError, OSError, KeyError, IndexError, TypeError) as e:
        raise UserError(f"Cannot read the {what} file '{p}' ({e}); is it a valid TIFF file?") from None
    if arr.dtype.kind not in "biuf":
        raise UserError(f"The {what} file '{p}' holds {arr.dtype} data, not numbers; save a numeric image.")
    ch = axes.find("c") if axes.count("c") == 1 and len(axes) == arr.ndim else -1
    return ImageInfo(arr, axes if len(axes) == arr.ndim else None, voxel, unit, ch if ch >= 0 else None)


def read_image(path, what: str = "image", lazy: bool | None = None) -> ImageInfo:
    """Read a TIFF/OME-TIFF, .npy (memory-mapped), zarr array or OME-Zarr image, with its voxel size.

    Large TIFFs (over ``LAZY_TIFF_BYTES``, or ``lazy=True``), .npy and zarr are read tile by tile.
    """
    p = Path(path)
    if not p.exists():
        raise UserError(f"The {what} file '{p}' does not exist; check the path.")
    suffix = p.suffix.lower()
    if suffix == ".zarr" or (p.is_dir() and any(q.suffix.lower() == ".zarr" for q in p.parents)):
        from .ome import read_zarr_image

        return read_zarr_image(p, what)  # a .zarr array or OME-Zarr image, or an array inside a .zarr group
    if suffix not in IMAGE_SUFFIXES:
        raise UserError(f"The {what} file '{p}' has an unsupported type; use one of {', '.join(IMAGE_SUFFIXES)}.")
    if p.is_dir():
        raise UserError(f"The {what} path '{p}' is a folder, not an image file; give a {suffix} file.")
    if suffix == ".npy":
        return ImageInfo(_read_npy(p, what))
    return _read_tiff(p, what, lazy)


def read_array(path, what: str = "image"):
    """The array of :func:`read_image` (TIFF, .npy memory-mapped, or .zarr read tile by tile)."""
    return read_image(path, what).array


# --------------------------------------------------------------------------- writing
def check_output_file(path) -> Path:
    """Fail before any work when ``path`` cannot be written."""
    p = Path(path)
    if p.suffix.lower() not in OUTPUT_SUFFIXES:
        raise UserError(f"Output '{p}' must end in .tif, .tiff or .npy.")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"The folder of the output '{p}' does not exist; create it first.")
    if p.is_dir():
        raise UserError(f"Output '{p}' is a folder; give a file name.")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise UserError(f"Cannot write '{p}': permission denied; choose a writable location.")
    return p


def _same(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _inside(a: Path, folder: Path) -> bool:
    try:
        return folder.is_dir() and Path(os.path.realpath(a)).is_relative_to(os.path.realpath(folder))
    except OSError:
        return False


def check_distinct(inputs: dict[str, object], outputs: dict[str, object]) -> None:
    """Refuse an output path that is an input (or inside an input folder) or another output.

    Paths are compared resolved (symlinks followed, hard links by inode), before any work.
    """
    outs = [(k, Path(v)) for k, v in outputs.items() if v is not None]
    ins = [(k, Path(v)) for k, v in inputs.items() if v is not None]
    for i, (oname, o) in enumerate(outs):
        for iname, ip in ins:
            if _same(o, ip) or _inside(o, ip):
                raise UserError(f"{oname} '{o}' is the {iname} '{ip}'; writing it would destroy the input. "
                                f"Choose another {oname} path.")
        for oname2, o2 in outs[i + 1:]:
            if _same(o, o2):
                raise UserError(f"{oname} and {oname2} are the same file '{o}'; give two different paths.")


def write_atomic(path, write, fix: str, suffix: str = ".tmp") -> Path:
    """Write ``path`` through ``write(tmp)`` into a temporary file of ours in the same folder, then
    rename it into place with the umask's permissions; a disk error names the file and ``fix``."""
    path = Path(path)
    remove_stale_temps(path.parent, path.name)
    tmp = temp_path(path, suffix)
    try:
        write(tmp)
        apply_umask(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise disk_error(e, path, fix) from None
        raise
    return path


def write_array(path: Path, data: np.ndarray) -> None:
    """Write atomically: a temporary file in the same folder, then rename (umask permissions)."""
    path = Path(path)

    def write(tmp):
        if path.suffix.lower() == ".npy":
            with open(tmp, "wb") as f:
                np.save(f, data)
        else:
            import tifffile

            tifffile.imwrite(tmp, data, compression="zlib")

    write_atomic(path, write, "choose another --out", suffix=path.suffix)
