"""Data-parallel training on several GPUs (or CPU processes) under ``torchrun``.

``torchrun --nproc-per-node N -m napari_unet.cli train ...`` starts N copies of the command with
``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` (and the rendezvous address) in their environment.
:func:`session` (used by the CLI) then joins them in one process group (nccl on CUDA, gloo on
CPU); the training loop (core/training.py) asks the small helpers below what to do, and each is a
no-op when no process group is up, so a plain run is unchanged:

* every process trains on its own device (``cuda:LOCAL_RANK``) with its own patch sampler seed, on
  the same held-out split; the network is wrapped in ``DistributedDataParallel``, which averages the
  gradients, so the weights stay identical on all processes;
* once per step the processes agree on the elapsed time (process 0's clock: the time budget, the
  learning-rate schedule and the stop decision are the same everywhere) and on whether anyone was
  asked to stop (Ctrl+C, SIGTERM), and whether every loss was finite: no process is ever left alone
  in a collective;
* validation is split over the processes and its sums are all-reduced, so every process takes the
  same keep/plateau decisions;
* process 0 alone prints and writes the model folder (from the unwrapped network: no ``module.``
  prefix, so the folder loads in a plain single process).

Batch norm stays per process (not SyncBatchNorm): each process normalises over its own batch as a
single-GPU run with that batch would, and DDP broadcasts process 0's running statistics at each
step (``broadcast_buffers``); that is also what the saved model holds.

A process that fails ends the others: torchrun stops the rest when one exits, and every collective
here has a timeout (``NAPARI_UNET_DDP_TIMEOUT`` seconds, default 300), after which the waiting
processes end with a :class:`DistributedError` instead of hanging.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ..errors import UserError

TIMEOUT_ENV = "NAPARI_UNET_DDP_TIMEOUT"
DEFAULT_TIMEOUT = 300.0  # seconds a collective may wait for the other processes
# test hooks: a folder where each process writes a checksum of its final weights, and "RANK:STEP"
# making that process fail at that step (tests/test_ddp.py)
DEBUG_ENV, FAIL_ENV = "NAPARI_UNET_DDP_DEBUG", "NAPARI_UNET_DDP_FAIL"


class DistributedError(UserError):
    """The other training processes could not be reached (one failed, was stopped or timed out)."""


def requested() -> bool:
    """True when started by torchrun (or alike) with more than one process."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def _timeout() -> float:
    try:
        return float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT))
    except ValueError:
        raise UserError(f"{TIMEOUT_ENV} must be a number of seconds, got {os.environ[TIMEOUT_ENV]!r}.") from None


def _lost(e: BaseException) -> DistributedError:
    text = re.sub(r"^\[[^\]]*\]\s*", "", str(e).strip())  # gloo prefixes its source location
    first = text.splitlines()[0][:160] if text else type(e).__name__
    return DistributedError(
        f"training process {rank()} of {world_size()} lost contact with the others ({first}): another process "
        "failed, was stopped or is stuck; see the first error above (torchrun names the failed rank). Nothing "
        f"was saved by this process; fix that error and rerun (a slow step may raise {TIMEOUT_ENV}).")


@contextlib.contextmanager
def collective():
    """Turns a failed collective (a peer gone, a timeout) into a :class:`DistributedError`."""
    try:
        yield
    except DistributedError:
        raise
    except (RuntimeError, dist.DistError) as e:
        if not active():
            raise
        raise _lost(e) from None


@contextlib.contextmanager
def session(device_name: str = "auto"):
    """Join the other processes when started by torchrun; a no-op otherwise.

    Yields the backend ("nccl", "gloo") or None. On the way out (also after an error) the process
    group is destroyed; after success all processes first meet at a barrier, so process 0 has
    written the model before any process exits.
    """
    if not requested() or (dist.is_available() and dist.is_initialized()):
        yield None
        return
    if not dist.is_available():
        raise UserError("WORLD_SIZE > 1 (started by torchrun?) but this torch has no torch.distributed; install a "
                        "standard torch build, or run napari-unet train without torchrun.")
    from .device import get_device

    kind = get_device(device_name).type
    if kind == "cuda":
        local, n = _local_rank(), torch.cuda.device_count()
        if local >= n:
            raise UserError(f"torchrun started more processes on this node than it has GPUs (local rank {local}, "
                            f"{n} GPU(s)); use --nproc-per-node {n} or fewer.")
        torch.cuda.set_device(local)
        backend, extra = "nccl", {"device_id": torch.device("cuda", local)}
    elif kind == "cpu":
        backend, extra = "gloo", {}
    else:
        raise UserError(f"Training on several processes needs CUDA GPUs or the CPU, not {kind}; use --device cuda "
                        "or cpu, or run without torchrun.")
    try:
        dist.init_process_group(backend, timeout=_dt.timedelta(seconds=_timeout()), **extra)
    except (RuntimeError, ValueError, dist.DistError) as e:
        raise UserError(f"Could not join the other training processes ({str(e).splitlines()[0][:200]}); check the "
                        "torchrun --rdzv-endpoint / --master-addr and that every node can reach it.") from None
    ok = False
    try:
        yield backend
        ok = True
    finally:
        try:
            if ok:
                with collective():
                    dist.barrier(device_ids=[_local_rank()]) if backend == "nccl" else dist.barrier()
        finally:
            dist.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    """This process's device: ``cuda:LOCAL_RANK`` under torchrun, else ``device`` as chosen."""
    if active() and device.type == "cuda":
        return torch.device("cuda", _local_rank())
    return device


def wrap(net: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The network to run the training forward pass with: DDP-wrapped when distributed.

    Everything else (EMA, validation, saving) keeps using the plain ``net``; its state dict has no
    ``module.`` prefix. Building DDP broadcasts process 0's weights to all.
    """
    if not active():
        return net
    from torch.nn.parallel import DistributedDataParallel

    with collective():
        # buffers (batch-norm statistics) are synced from process 0 at each forward pass by default
        return DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)


def rank_seed(seed: int, rank_: int | None = None) -> int:
    """Patch-sampler seed for this process: the given seed on process 0 (a one-process run is
    unchanged), a different stream derived from (seed, rank) elsewhere."""
    r = rank() if rank_ is None else rank_
    return int(seed) if r == 0 else int(np.random.SeedSequence([int(seed), r]).generate_state(1)[0])


def share_threads(n: int) -> int:
    """CPU threads per process when several processes share a node's cores."""
    if not active():
        return n
    return max(1, n // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def _tensor(values) -> torch.Tensor:
    dev = torch.device("cuda", _local_rank()) if dist.get_backend() == "nccl" else torch.device("cpu")
    return torch.tensor(values, dtype=torch.float64, device=dev)


def agree(step: int, elapsed: float, stop: bool) -> tuple[float, bool]:
    """Once per step: process 0's elapsed seconds, and True if any process was asked to stop."""
    if not active():
        return elapsed, stop
    fail = os.environ.get(FAIL_ENV, "")
    if fail and fail == f"{rank()}:{step}":
        raise RuntimeError(f"simulated failure of process {rank()} at step {step} ({FAIL_ENV})")
    t = _tensor([elapsed if rank() == 0 else -1.0, float(stop)])
    with collective():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t[0]), bool(t[1] > 0)


def finite_mean(loss: torch.Tensor) -> tuple[bool, float]:
    """Whether every process's loss is finite, and their mean: all step (or skip) together."""
    value = float(loss.detach())
    finite = bool(np.isfinite(value))
    if not active():
        return finite, value
    t = _tensor([value if finite else 0.0, 0.0 if finite else 1.0])
    with collective():
        dist.all_reduce(t)
    return bool(t[1] == 0), float(t[0]) / world_size()


def shard(items: list) -> list:
    """This process's share of a list (validation blocks)."""
    return items[rank()::world_size()] if active() else items


def all_sum(*values):
    """Sums of numbers / numpy arrays over all processes (the validation's loss, count, confusion)."""
    if not active():
        return values
    arrays = [np.asarray(v, np.float64) for v in values]
    t = _tensor(np.concatenate([a.ravel() for a in arrays]).tolist())
    with collective():
        dist.all_reduce(t)
    flat, out, i = t.cpu().numpy(), [], 0
    for v, a in zip(values, arrays):
        part = flat[i:i + a.size].reshape(a.shape)
        i += a.size
        out.append(part.astype(np.asarray(v).dtype) if a.ndim else type(v)(part))
    return tuple(out)


def describe_suffix() -> str:
    if not active():
        return ""
    return f" x {world_size()} processes (DDP over {dist.get_backend()})"


def debug_dump(net: torch.nn.Module, sampler_seed: int) -> None:
    """Test hook: with NAPARI_UNET_DDP_DEBUG=FOLDER, write this process's weight checksum there."""
    folder = os.environ.get(DEBUG_ENV)
    if not folder or not active():
        return
    h = hashlib.sha256()
    for name, p in sorted(net.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    info = {"rank": rank(), "world_size": world_size(), "backend": dist.get_backend(), "params_sha256": h.hexdigest(),
            "sampler_seed": sampler_seed}
    Path(folder, f"rank{rank()}.json").write_text(json.dumps(info))


__all__ = ["session", "requested", "active", "rank", "world_size", "is_main", "local_device", "wrap", "rank_seed",
           "share_threads", "agree", "finite_mean", "shard", "all_sum", "describe_suffix", "DistributedError"]
