"""Device selection: "auto" picks cuda, then mps, then cpu; an explicit missing device is an error."""

from __future__ import annotations

import contextlib
import functools

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
    n = torch.get_num_threads()
    return f"CPU ({n} thread{'' if n == 1 else 's'})"


@functools.lru_cache(maxsize=1)
def cpu_bf16_fast() -> bool:
    """True where the CPU computes bfloat16 natively (AVX512-BF16 or AMX): autocast then about
    doubles training speed (benchmarks/efficiency.py). Elsewhere bfloat16 is emulated and slower."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_bf16_ok(ndim: int) -> bool:
    """Whether bfloat16 autocast is safe for training a ``ndim``-D network on this CPU.

    2D only. In 3D, oneDNN's bfloat16 Conv3d weight gradient on CPU comes back as garbage (1e27 or
    inf) whenever a feature map is 2 voxels deep (torch 2.13; e.g. input (2, 16, 2, 16, 16), about
    2 calls in 3; depths 1 and 3..6 are fine). A U-Net meets that depth at some level for thin
    stacks and small Z patches, which is why 3D training skipped 10-45 % of its steps as
    non-finite (and could take a finite but wrong step). bfloat16 bought 3D only ~1.25x, so 3D
    trains in float32 on the CPU. tests/test_precision.py checks this.
    """
    return ndim == 2 and cpu_bf16_fast()


def autocast(device: torch.device, enabled: bool, cpu: bool = False, ndim: int = 2):
    """Mixed precision: float16 on CUDA; bfloat16 on a CPU that has it natively when ``cpu`` (2D only)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    if enabled and cpu and device.type == "cpu" and cpu_bf16_ok(ndim):
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_format_for(ndim: int, device: torch.device) -> torch.memory_format:
    """Channels-last on CPU, where oneDNN's convolutions run 1.3x (2D) to 1.8x (3D) faster on it."""
    if device.type != "cpu":
        return torch.contiguous_format
    return torch.channels_last if ndim == 2 else torch.channels_last_3d
