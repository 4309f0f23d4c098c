"""Device selection: "auto" picks cuda, then mps, then cpu; an explicit missing device is an error."""

from __future__ import annotations

import torch

from ..errors import UserError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
OutOfMemoryError = torch.cuda.OutOfMemoryError  # what running out of GPU memory raises


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def available_devices() -> list[str]:
    """Devices usable on this machine, best first (always ends with "cpu")."""
    out = []
    if torch.cuda.is_available():
        out += [f"cuda:{i}" if i else "cuda" for i in range(torch.cuda.device_count())]
    if _mps_available():
        out.append("mps")
    return out + ["cpu"]


def get_device(name: str | torch.device | None = "auto") -> torch.device:
    """Resolve a device name. Raises UserError when an explicitly requested device is absent."""
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = name.split(":")[0]
    if kind == "cpu":
        return torch.device("cpu")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"Device '{name}' was requested but CUDA is not available here; "
                            f"use --device auto or cpu (available: {', '.join(available_devices())}).")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"Device '{name}' does not exist; this machine has "
                            f"{torch.cuda.device_count()} CUDA device(s).")
        return dev
    if kind == "mps":
        if not _mps_available():
            raise UserError(f"Device 'mps' was requested but Apple MPS is not available here; "
                            f"use auto or cpu (available: {', '.join(available_devices())}).")
        return torch.device("mps")
    raise UserError(f"Unknown device '{name}'; choose one of {', '.join(DEVICE_CHOICES)}.")


def describe(device: torch.device) -> str:
    """A plain description for the user: 'CUDA (NVIDIA H100)', 'CPU (2 threads)'."""
    if device.type == "cuda":
        return f"CUDA ({torch.cuda.get_device_name(device)})"
    if device.type == "mps":
        return "MPS (Apple GPU)"
    return f"CPU ({torch.get_num_threads()} threads)"
