"""Model folders: ``model.safetensors`` (weights) + ``config.json`` (everything else).

Nothing that loads a model executes code from the folder: weights are read with safetensors (no
pickle, no ``torch.load``) and the JSON is validated (types, ranges, sizes) before use. Writes are
atomic: each file goes to a temporary file in the same folder, is fsynced, then ``os.replace``d.

Crash safety: ``model.safetensors`` is self-contained: its metadata carries the same description
as ``config.json``, and it is replaced first (one atomic rename commits a new model).
``config.json`` is the readable copy and records the SHA-256 of the weights it belongs to. A
process killed between the two renames leaves a ``config.json`` that names other weights; loading
then uses the description inside the weights file, which always belongs to them. So a folder
holds nothing, or the last complete model, never a mix.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from ..config import ModelConfig
from ..errors import UserError
from .io import TMP_TAG, disk_error, remove_stale_temps, temp_path
from .model import UNet

FORMAT = "napari-unet-loop"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
MAX_CONFIG_BYTES = 5_000_000
MAX_HISTORY = 100_000
MAX_WEIGHTS_BYTES = 2 * 2**30  # far above the largest allowed architecture
EMBEDDED = "napari_unet_config"  # safetensors metadata key holding the description


def _version() -> str:
    from .. import __version__

    return __version__


@dataclass
class Model:
    """A network with what it needs to be used: architecture, classes, normalisation, history."""

    net: UNet
    config: ModelConfig
    patch_size: tuple[int, ...] = ()
    history: list[dict] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    @classmethod
    def new(cls, config: ModelConfig, seed: int | None = None) -> Model:
        if seed is not None:
            torch.manual_seed(seed)
        return cls(net=UNet(config), config=config)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def save(self, folder) -> Path:
        return save_model(self, folder)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = temp_path(path)  # names this process: concurrent writers never remove each other's files
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0o666 minus the umask
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def check_writable_folder(folder) -> Path:
    """Create ``folder`` if needed and check we can write there; UserError otherwise."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"Model output '{folder}' is a file, not a folder; choose a folder path.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"Cannot create model folder '{folder}': {e.strerror}; choose a writable location.") from None
    if not os.access(folder, os.W_OK):
        raise UserError(f"Model folder '{folder}' is not writable; choose a writable location.")
    return folder


def save_model(model: Model, folder, state: dict | None = None) -> Path:
    """Write the model folder atomically (weights first, then the config that names their hash).

    ``state`` overrides the network's current weights (e.g. the best weights seen in training).
    """
    folder = check_writable_folder(folder)
    state = {k: v.detach().to("cpu").contiguous() for k, v in (state or model.net.state_dict()).items()}
    info = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": _version(),
        "saved": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": model.config.to_dict(),
        "patch_size": list(model.patch_size),
        "history": model.history[-MAX_HISTORY:],
        "meta": model.meta,
    }
    blob = save(state, metadata={"format": FORMAT, EMBEDDED: json.dumps(info)})
    info["weights_sha256"] = hashlib.sha256(blob).hexdigest()
    remove_stale_temps(folder)  # left by killed writers; a live writer's files stay
    try:
        _atomic_write(folder / WEIGHTS, blob)
        _atomic_write(folder / CONFIG, json.dumps(info, indent=1).encode())
    except OSError as e:
        raise disk_error(e, folder, "save the model to another folder") from None
    return folder


def save_or_rescue(model: Model, folder, state: dict | None = None) -> Path:
    """Save to ``folder``; if that fails (e.g. a full disk), save to a new temporary folder and raise a
    UserError naming both, so trained weights are never lost silently."""
    import tempfile

    try:
        return save_model(model, folder, state)
    except UserError as e:
        try:
            rescue = Path(tempfile.mkdtemp(prefix="napari-unet-rescued-"))
            save_model(model, rescue, state)
        except (UserError, OSError):
            raise UserError(f"{e} The trained model could not be written anywhere else either; it is lost.") from None
        raise UserError(f"{e} The trained model was saved to '{rescue}' instead; move it from there.") from None


def is_model_folder(folder) -> bool:
    """True when ``folder`` holds a napari-unet model (its config.json or weights say so)."""
    folder = Path(folder)
    try:
        cfg = folder / CONFIG
        if cfg.is_file() and cfg.stat().st_size <= MAX_CONFIG_BYTES:
            info = json.loads(cfg.read_text(encoding="utf-8"))
            if isinstance(info, dict) and info.get("format") == FORMAT:
                return True
    except (OSError, ValueError, RecursionError):
        pass
    try:
        return (folder / WEIGHTS).is_file() and safe_open_metadata(folder / WEIGHTS).get("format") == FORMAT
    except (OSError, ValueError, SafetensorError):
        return False


def check_model_target(folder, overwrite: bool = False, flag: str | None = None) -> Path:
    """Check ``folder`` may receive a model, before any work.

    Refuses a file, a non-empty folder that is not a napari-unet model (the user's own files), and
    an existing model unless ``overwrite`` (``flag`` names the option that allows it, e.g. ``--overwrite``;
    a GUI asks the user first and passes ``overwrite=True``).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"Model output '{folder}' is a file, not a folder; choose a folder path.")
    if not folder.exists():
        return folder
    try:
        entries = [e.name for e in os.scandir(folder) if f".{TMP_TAG}-" not in e.name]
    except OSError as e:
        raise UserError(f"Cannot list the folder '{folder}' ({e.strerror}); choose a readable, writable folder.") from None
    if not entries:
        return folder
    if is_model_folder(folder):
        if not overwrite:
            how = f"pass {flag} to replace it" if flag else "confirm replacing it (overwrite=True)"
            raise UserError(f"'{folder}' already holds a napari-unet model; {how}, or choose another folder.")
        return folder
    shown = ", ".join(sorted(entries)[:5]) + (", ..." if len(entries) > 5 else "")
    raise UserError(f"'{folder}' is not empty and not a napari-unet model folder (it holds {shown}); choose an "
                    "empty or new folder so nothing of yours is replaced.")


def _parse_json(text: str, path) -> object:
    try:
        return json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path} is not valid JSON ({e}); the model folder is corrupt, save the model again.") from None
    except RecursionError:
        raise UserError(f"{path} is nested too deeply; it is not a napari-unet model config.") from None


def _read_config(folder: Path) -> dict:
    path = folder / CONFIG
    if not path.is_file():
        raise UserError(f"'{folder}' is not a model folder: {CONFIG} is missing. Choose a folder written by "
                        "napari-unet (it holds model.safetensors and config.json).")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise UserError(f"{path} is larger than {MAX_CONFIG_BYTES // 1_000_000} MB; it is not a napari-unet "
                        "model config.")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"Cannot read {path} ({e.strerror}); check the folder's permissions.") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e}); the model folder is corrupt, save the model again.") from None
    info = _parse_json(text, path)
    _validate_info(info, path)
    if not isinstance(info.get("weights_sha256"), str):
        raise UserError(f"{path}: field 'weights_sha256' is missing or not a str.")
    return info


_NUM = (int, float)
# history entries written by training: key -> allowed types (None allowed where listed)
_SESSION_TYPES = {"steps": (int,), "seconds": _NUM, "device": (str,), "kept": (str,), "warm_start": (bool,),
                  "runs": (list,)}
_RUN_TYPES = {"step": (int,), "time": _NUM, "loss": _NUM + (type(None),), "val_loss": _NUM,
              "val_iou": _NUM + (type(None),)}


def _check_entry(entry: dict, types: dict, path, where: str) -> None:
    for key, kinds in types.items():
        if key not in entry:
            continue
        v = entry[key]
        if (isinstance(v, bool) and bool not in kinds) or not isinstance(v, kinds):
            raise UserError(f"{path}: {where} field '{key}' has the wrong type ({type(v).__name__}); the model "
                            "folder was edited or is corrupt. Save the model again.")
        if kinds == (int,) and v < 0:
            raise UserError(f"{path}: {where} field '{key}' is {v}; the model folder is corrupt.")


def _validate_info(info, path) -> None:
    """Check the description's types, ranges and sizes (``path`` names where it came from)."""
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise UserError(f"{path} is not a napari-unet model config (format field missing or foreign).")
    ver = info.get("format_version")
    if not isinstance(ver, int) or isinstance(ver, bool) or ver < 1:
        raise UserError(f"{path}: format_version must be a positive integer.")
    if ver > FORMAT_VERSION:
        raise UserError(f"{path} was written by a newer napari-unet (format {ver}); update napari-unet-loop.")
    for key, kind in (("model", dict), ("patch_size", list), ("history", list), ("meta", dict)):
        if not isinstance(info.get(key), kind):
            raise UserError(f"{path}: field '{key}' is missing or not a {kind.__name__}.")
    if len(info["history"]) > MAX_HISTORY or not all(isinstance(h, dict) for h in info["history"]):
        raise UserError(f"{path}: 'history' must be a list of at most {MAX_HISTORY} objects.")
    for i, h in enumerate(info["history"]):
        _check_entry(h, _SESSION_TYPES, path, f"history[{i}]")
        for j, r in enumerate(h.get("runs", [])):
            if not isinstance(r, dict):
                raise UserError(f"{path}: history[{i}].runs[{j}] is not an object; the model folder is corrupt.")
            _check_entry(r, _RUN_TYPES, path, f"history[{i}].runs[{j}]")
    ps = info["patch_size"]
    if not all(isinstance(p, int) and not isinstance(p, bool) and 1 <= p <= 4096 for p in ps) or len(ps) > 3:
        raise UserError(f"{path}: 'patch_size' must be up to 3 integers in 1..4096.")


def _expected_bytes(config: ModelConfig) -> int:
    with torch.device("meta"):  # sizes only: allocates nothing, whatever the config says
        return sum(v.numel() * v.element_size() for v in UNet(config).state_dict().values())


def safe_open_metadata(path: Path) -> dict:
    """The string metadata of a safetensors file (header only; no tensor is read)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}


MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own limit


def _read_header(f, path: Path, size: int) -> dict:
    """The safetensors header (u64 length + JSON) read from the open file ``f``.

    Parsed here rather than with ``safe_open(path)`` so that header and data come from one open file,
    even while another process replaces the path (atomic renames do not touch an open file).
    """
    raw = f.read(8)
    n = int.from_bytes(raw, "little") if len(raw) == 8 else -1
    if not 2 <= n <= min(size - 8, MAX_HEADER_BYTES):
        raise UserError(f"{path} is not a valid safetensors file (bad header length); save the model again.")
    try:
        header = json.loads(f.read(n).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise UserError(f"{path} is not a valid safetensors file (unreadable header); save the model again.") from None
    if not isinstance(header, dict):
        raise UserError(f"{path} is not a valid safetensors file (header is not an object); save the model again.")
    return header


def load_model(folder, device: str | torch.device = "cpu") -> Model:
    """Load and validate a model folder. Never unpickles; raises UserError with the fix on problems."""
    try:
        return _load_model(Path(folder), device)
    except PermissionError as e:
        raise UserError(f"Cannot read the model folder '{folder}': permission denied ({e.filename}); check its "
                        "permissions.") from None
    except MemoryError:
        raise UserError(f"Not enough memory to load the model in '{folder}'; close other programs.") from None


def _load_model(folder: Path, device) -> Model:
    from .device import get_device

    if not folder.exists():
        raise UserError(f"Model folder '{folder}' does not exist; check the path.")
    if not folder.is_dir():
        from .export import is_package, load_package

        if is_package(folder):  # a bioimage.io package exported by napari-unet
            return load_package(folder, device)
        raise UserError(f"'{folder}' is a file; give the model folder (holding model.safetensors and config.json) "
                        "or a .zip package exported by napari-unet.")
    wpath = folder / WEIGHTS
    if not (folder / CONFIG).is_file() and wpath.is_file():
        info = None  # killed before the first config.json landed: the weights file describes itself
    else:
        info = _read_config(folder)
        if not wpath.is_file():
            raise UserError(f"'{folder}' has no {WEIGHTS}; the model folder is incomplete, save the model again.")

    def check_size(config: ModelConfig, size: int) -> None:
        if size > 2 * _expected_bytes(config) + MAX_CONFIG_BYTES:
            raise UserError(f"{wpath} is far larger than the architecture it describes needs; it is not this "
                            "model's weights file.")

    with open(wpath, "rb") as f:  # one open file: header, checksum and tensors all come from it
        size = os.fstat(f.fileno()).st_size
        if size > MAX_WEIGHTS_BYTES:
            raise UserError(f"{wpath} is larger than any napari-unet model ({MAX_WEIGHTS_BYTES // 2**30} GiB); "
                            "it is not a model weights file.")
        if info is not None:
            check_size(ModelConfig.from_dict(info["model"]), size)
        header = _read_header(f, wpath, size)  # the header first; no tensor is read until it checks out
        embedded = header.pop("__metadata__", None) or {}
        if not isinstance(embedded, dict):
            raise UserError(f"{wpath} is not a valid safetensors file (bad metadata); save the model again.")
        if info is None:
            if not isinstance(embedded.get(EMBEDDED), str):
                raise UserError(f"{wpath} carries no napari-unet description and {CONFIG} is missing; it is not a "
                                "napari-unet model.")
            info = _parse_json(embedded[EMBEDDED], wpath)
            _validate_info(info, wpath)
            check_size(ModelConfig.from_dict(info["model"]), size)
        f.seek(0)
        blob = f.read()  # bounded: the size fits the described architecture
    if hashlib.sha256(blob).hexdigest() != info.get("weights_sha256"):
        # config.json belongs to other weights (a save was interrupted between its two renames, or
        # the folder was edited, or another process just saved): trust the description inside the weights
        if not isinstance(embedded.get(EMBEDDED), str):
            raise UserError(f"{wpath} does not match {CONFIG} (different checksum); the folder is corrupt or "
                            "was edited by hand. Save the model again.")
        info = _parse_json(embedded[EMBEDDED], wpath)
        _validate_info(info, wpath)
    config = ModelConfig.from_dict(info["model"])
    check_size(config, size)
    net = UNet(config)
    expected = net.state_dict()
    if set(header) != set(expected):
        raise UserError(f"{wpath} holds weights for a different architecture than {CONFIG} describes.")
    for k, entry in header.items():
        shape = tuple(entry.get("shape", ())) if isinstance(entry, dict) else None
        if shape != tuple(expected[k].shape):
            raise UserError(f"{wpath}: tensor '{k}' has shape {shape}, expected {tuple(expected[k].shape)}.")
    try:
        state = load(blob)
    except (SafetensorError, ValueError) as e:
        raise UserError(f"{wpath} is not a valid safetensors file ({e}); save the model again.") from None
    for k, v in state.items():
        if v.dtype != expected[k].dtype or v.shape != expected[k].shape:
            raise UserError(f"{wpath}: tensor '{k}' has type {v.dtype}, expected {expected[k].dtype}.")
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise UserError(f"{wpath}: tensor '{k}' holds NaN or infinite values (training diverged or the file "
                            "is corrupt); use another model or train again.")
    net.load_state_dict(state)
    net.to(get_device(device)).eval()
    return Model(net=net, config=config, patch_size=tuple(info["patch_size"]), history=info["history"],
                 meta=info["meta"])
