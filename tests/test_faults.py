"""Faults: GPU out-of-memory (simulated), a training process killed mid-write."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from conftest import TINY, tiny_train
from napari_unet.config import ModelConfig, PredictConfig
from napari_unet.core.checkpoint import Model, load_model
from napari_unet.core.inference import predict, predict_iter
from napari_unet.core.training import Notice, Progress, train
from napari_unet.core.util import drain
from napari_unet.errors import UserError


def _oom(*_):
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_training_halves_batch_on_oom_and_goes_on(easy2d, monkeypatch):
    syn, ann = easy2d
    model = Model.new(TINY, seed=0)
    forward = model.net.forward
    batches = []

    def flaky(x):
        batches.append(x.shape[0])
        if model.net.training and x.shape[0] > 1:
            _oom()
        return forward(x)

    monkeypatch.setattr(model.net, "forward", flaky)
    events = []
    result = drain(train(syn.image, ann, init=model, train_config=tiny_train(steps=3, batch_size=4, val_fraction=0)),
                   events.append)
    notices = [e.message for e in events if isinstance(e, Notice)]
    assert notices == ["Out of GPU memory: batch size lowered to 2.", "Out of GPU memory: batch size lowered to 1."]
    assert result.steps == 3 and len([e for e in events if isinstance(e, Progress)]) == 3


def test_training_oom_at_smallest_size_is_a_clear_error(easy2d, monkeypatch):
    syn, ann = easy2d
    model = Model.new(TINY, seed=0)
    monkeypatch.setattr(model.net, "forward", _oom)
    with pytest.raises(UserError, match="Out of GPU memory even with the smallest"):
        drain(train(syn.image, ann, init=model, train_config=tiny_train(steps=2, patch_size=(16, 16))))


def test_prediction_retries_with_smaller_tiles(monkeypatch):
    model = Model.new(ModelConfig(depth=2, width=4), seed=0)
    model.net.eval()
    img = np.random.default_rng(0).normal(size=(70, 70)).astype(np.float32)
    ref = predict(model, img, config=PredictConfig(tile_size=(32, 32), device="cpu"))
    forward = model.net.forward

    def big_tiles_fail(x):
        if max(x.shape[2:]) > 32:
            _oom()
        return forward(x)

    monkeypatch.setattr(model.net, "forward", big_tiles_fail)
    events = []
    out = drain(predict_iter(model, img, config=PredictConfig(tile_size=(128, 128), device="cpu")), events.append)
    assert [e.message for e in events if isinstance(e, Notice)] == [
        "Out of GPU memory: retrying with tiles of (64, 64).", "Out of GPU memory: retrying with tiles of (32, 32)."]
    np.testing.assert_allclose(out, ref, atol=1e-5)


KILLED_TRAINER = textwrap.dedent("""
    import sys
    from napari_unet.config import ModelConfig, TrainConfig
    from napari_unet.core.synthetic import make_nuclei, scribbles
    from napari_unet.core.training import train_blocking
    syn = make_nuclei((64, 64), seed=1, radius=6)
    print("ready", flush=True)
    train_blocking(syn.image, scribbles(syn.semantic, seed=2, width=2), out=sys.argv[1],
                   model_config=ModelConfig(depth=2, width=4),
                   train_config=TrainConfig(steps=None, time_budget=60, patch_size=(32, 32), batch_size=2,
                                            device="cpu", autosave_every=0.0, validate_every=3))
""")


@pytest.mark.parametrize("seed", range(4))
def test_sigkill_during_training_leaves_nothing_or_a_complete_model(tmp_path, seed):
    folder = tmp_path / "model"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_TRAINER, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(np.random.default_rng(seed).uniform(0.3, 2.5))  # autosaves run back to back meanwhile
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    if not (folder / "model.safetensors").exists():
        return  # killed before the first save completed: nothing
    model = load_model(folder)  # never a corrupt model
    assert model.config.width == 4
    assert np.isfinite(predict(model, np.zeros((16, 16), np.float32))).all()


def test_non_finite_steps_are_skipped_then_refused(easy2d, monkeypatch):
    syn, ann = easy2d
    model = Model.new(TINY, seed=0)
    forward = model.net.forward
    calls = {"n": 0}

    def sometimes_nan(x):
        out = forward(x)
        if model.net.training:
            calls["n"] += 1
            if calls["n"] in (2, 3):
                return out * float("nan")
        return out

    monkeypatch.setattr(model.net, "forward", sometimes_nan)
    events = []
    result = drain(train(syn.image, ann, init=model, train_config=tiny_train(steps=4, val_fraction=0)), events.append)
    assert result.steps == 4
    assert sum(isinstance(e, Notice) and "non-finite" in e.message for e in events) == 2
    assert all(torch.isfinite(p).all() for p in result.model.net.parameters())
    monkeypatch.setattr(model.net, "forward", lambda x: forward(x) * float("nan"))
    with pytest.raises(UserError, match="diverged"):
        drain(train(syn.image, ann, init=model, train_config=tiny_train(steps=4, val_fraction=0)))
