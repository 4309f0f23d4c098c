"""CPU threads for training: the cores idle when training starts, fewer as soon as the machine gets busy.

Measured with ``benchmarks/threads.py`` on a 2-core machine (docs/benchmarks.md, "Threads"): on a
quiet machine 2 threads did 130-150 steps in 10 s and 1 thread 83-86; with one other busy process
2 threads collapsed to 4-19 steps while 1 thread kept 80-88 (torch's OpenMP threads wait for a core
that another process holds). Neither fixed number is right for both cases, so:

* :func:`auto_threads` starts with the cores that are idle now (two reads of ``/proc/stat`` 0.1 s
  apart; where that file does not exist, all cores but one, :func:`napari_unet.config.default_threads`);
* :class:`ThreadGovernor` watches the training step time and, when steps get several times slower
  than the best seen (something else took a core), lowers the threads to all cores but one.

No library offers this (torch has no load-aware thread pool; psutil is not a dependency), hence the
few lines here.
"""

from __future__ import annotations

import os
import time
from collections import deque

import numpy as np

from ..config import default_threads


def _cpu_times() -> tuple[float, float] | None:
    """(idle, total) jiffies of all CPUs from /proc/stat, or None where it cannot be read."""
    try:
        with open("/proc/stat") as f:
            fields = [float(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    if len(fields) < 5:
        return None
    return fields[3] + fields[4], sum(fields[:8])  # idle + iowait, all


def idle_cores(interval: float = 0.1) -> int | None:
    """How many cores were idle over ``interval`` seconds (rounded), or None where unknown."""
    a = _cpu_times()
    if a is None:
        return None
    time.sleep(interval)
    b = _cpu_times()
    if b is None or b[1] <= a[1]:
        return None
    n = os.cpu_count() or 1
    return int(round(n * (b[0] - a[0]) / (b[1] - a[1])))


def auto_threads() -> int:
    """Threads to start training with when none are asked for: the idle cores, at least 1, and at
    least all cores but one (that many never collapsed in the measurements above)."""
    idle = idle_cores()
    fallback = default_threads()
    if idle is None:
        return fallback
    return max(fallback, min(os.cpu_count() or 1, idle))


class ThreadGovernor:
    """Lowers the training threads to ``fallback`` when steps get ``factor`` times slower than the best.

    ``step(seconds)`` takes the duration of one training step (sampling, forward, backward, update)
    and returns a message when it lowered the threads. It compares the median of the last
    ``window`` steps with the best such median seen, so a single slow step (a validation, the
    garbage collector) does not trigger it.
    """

    def __init__(self, threads: int, fallback: int, window: int = 8, factor: float = 2.5, set_threads=None):
        self.threads, self.fallback = threads, fallback
        self.window, self.factor = window, factor
        self.recent: deque[float] = deque(maxlen=window)
        self.best: float | None = None
        self._set = set_threads
        if self._set is None:
            import torch

            self._set = torch.set_num_threads

    @property
    def active(self) -> bool:
        return self.threads > self.fallback

    def step(self, seconds: float) -> str | None:
        if not self.active:
            return None
        self.recent.append(seconds)
        if len(self.recent) < self.window:
            return None
        med = float(np.median(self.recent))
        if self.best is None or med < self.best:
            self.best = med
            return None
        if med <= self.factor * self.best:
            return None
        old, self.threads = self.threads, self.fallback
        self._set(self.threads)
        self.recent.clear()
        return (f"Training slowed down {med / self.best:.0f}x (another program is using the CPU): "
                f"{old} -> {self.threads} thread(s).")


__all__ = ["idle_cores", "auto_threads", "ThreadGovernor"]
