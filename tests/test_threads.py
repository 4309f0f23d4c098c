"""CPU threads for training: idle cores at the start, fewer when steps slow down (core/threads.py)."""

import os

import pytest

from napari_unet.config import TrainConfig, default_threads
from napari_unet.core import threads as T
from napari_unet.core.events import Notice
from napari_unet.core.training import train_blocking


def test_governor_lowers_threads_when_steps_get_much_slower():
    calls = []
    g = T.ThreadGovernor(2, 1, window=4, factor=2.5, set_threads=calls.append)
    for _ in range(12):  # steady 0.1 s steps, one slow outlier in the middle: nothing happens
        assert g.step(0.1) is None
    assert g.step(0.9) is None
    for _ in range(3):
        assert g.step(0.1) is None
    assert calls == []
    msgs = [g.step(1.0) for _ in range(4)]  # another program takes a core: 10x slower
    said = [m for m in msgs if m is not None]
    assert calls == [1] and len(said) == 1 and "2 -> 1 thread" in said[0]
    assert not g.active and g.step(5.0) is None and calls == [1]  # lowered once, then it stays


def test_governor_keeps_threads_for_a_mild_slowdown():
    calls = []
    g = T.ThreadGovernor(4, 3, window=4, set_threads=calls.append)
    for s in [0.1] * 8 + [0.2] * 20:  # 2x slower: within the factor
        assert g.step(s) is None
    assert calls == []


def test_governor_without_spare_threads_does_nothing():
    g = T.ThreadGovernor(1, 1, set_threads=lambda n: pytest.fail("must not set threads"))
    assert not g.active
    for s in [0.1] * 10 + [10.0] * 10:
        assert g.step(s) is None


def test_auto_threads_uses_idle_cores_and_never_fewer_than_all_but_one(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.setattr(T, "idle_cores", lambda: 4)
    assert T.auto_threads() == 4
    monkeypatch.setattr(T, "idle_cores", lambda: 0)
    assert T.auto_threads() == default_threads() == 3
    monkeypatch.setattr(T, "idle_cores", lambda: None)  # no /proc/stat (macOS, Windows)
    assert T.auto_threads() == 3


def test_idle_cores_reads_proc_stat(monkeypatch):
    reads = iter([(100.0, 200.0), (150.0, 300.0)])  # half of the time idle between the two reads
    monkeypatch.setattr(T, "_cpu_times", lambda: next(reads))
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert T.idle_cores(interval=0) == 2
    monkeypatch.setattr(T, "_cpu_times", lambda: None)
    assert T.idle_cores(interval=0) is None


def test_training_lowers_threads_on_slow_steps_and_says_so(monkeypatch, bands):
    """Auto threads in the loop: the governor sees the step times and its notice reaches the user;
    the caller's thread count is restored at the end."""
    import torch

    monkeypatch.setattr("napari_unet.core.training.auto_threads", lambda: 2)
    monkeypatch.setattr("napari_unet.core.training.default_threads", lambda: 1)
    slow = iter([0.0] * 8 + [1.0] * 100)
    real = T.ThreadGovernor.step
    monkeypatch.setattr(T.ThreadGovernor, "step", lambda self, s: real(self, 0.01 + next(slow)))
    before = torch.get_num_threads()
    seen = []
    image, labels = bands
    train_blocking(image, labels, train_config=TrainConfig(steps=20, time_budget=None, patch_size=(32, 32),
                                                          batch_size=2, val_fraction=0.0),
                   on_event=lambda e: seen.append(e))
    notes = [e.message for e in seen if isinstance(e, Notice) and "thread" in e.message]
    assert len(notes) == 1 and "2 -> 1 thread" in notes[0]
    assert torch.get_num_threads() == before


def test_explicit_threads_are_not_governed(monkeypatch, bands):
    monkeypatch.setattr("napari_unet.core.training.ThreadGovernor",
                        lambda *a, **k: pytest.fail("explicit threads must not be governed"))
    image, labels = bands
    train_blocking(image, labels, train_config=TrainConfig(steps=3, time_budget=None, patch_size=(32, 32),
                                                          batch_size=2, threads=1, val_fraction=0.0))
