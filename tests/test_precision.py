"""Precision (bfloat16 autocast on CPU, --no-amp), torch threads (--threads) and the CLI's TTA switch."""

import numpy as np
import torch

from conftest import TINY, tiny_train
from napari_unet import cli
from napari_unet.config import ModelConfig, PredictConfig
from napari_unet.core import training
from napari_unet.core.device import autocast, cpu_bf16_fast, cpu_bf16_ok
from napari_unet.core.synthetic import make_nuclei
from napari_unet.core.training import Started, train
from napari_unet.core.util import Notice, drain


def _logit_dtypes(monkeypatch, syn_image, labels, mc, tc):
    seen = []
    real_new = training.Model.new.__func__

    def new(cls, config, seed=0):
        m = real_new(cls, config, seed)
        m.net.register_forward_hook(lambda mod, i, o: seen.append(o.dtype) if mod.training else None)
        return m

    monkeypatch.setattr(training.Model, "new", classmethod(new))
    drain(train(syn_image, labels, model_config=mc, train_config=tc))
    return set(seen)


def test_no_amp_trains_in_float32(easy2d, monkeypatch):
    syn, ann = easy2d
    assert _logit_dtypes(monkeypatch, syn.image, ann, TINY, tiny_train(steps=2, amp=False)) == {torch.float32}
    amp_on = _logit_dtypes(monkeypatch, syn.image, ann, TINY, tiny_train(steps=2, amp=True))
    assert amp_on == ({torch.bfloat16} if cpu_bf16_fast() else {torch.float32})


def test_3d_trains_in_float32_on_cpu_and_takes_every_step():
    # oneDNN's bfloat16 Conv3d weight gradient is garbage for feature maps 2 voxels deep; a thin
    # stack puts one level of this U-Net at that depth, which made about half the steps non-finite
    assert not cpu_bf16_ok(3)
    assert isinstance(autocast(torch.device("cpu"), True, cpu=True, ndim=3), type(autocast(torch.device("cpu"), False)))
    syn = make_nuclei((2, 32, 32), seed=0, radius=5, snr=20)
    events = []
    drain(train(syn.image, syn.semantic, model_config=ModelConfig(ndim=3, depth=2, width=4),
                train_config=tiny_train(steps=8, patch_size=(8, 32, 32), amp=True)), events.append)
    assert not [e.message for e in events if isinstance(e, Notice)]


def test_threads_option_applies_during_training_and_is_restored(easy2d):
    syn, ann = easy2d
    before = torch.get_num_threads()
    inside = []
    gen = train(syn.image, ann, model_config=TINY, train_config=tiny_train(steps=2, threads=1))
    drain(gen, lambda e: inside.append(torch.get_num_threads()) if isinstance(e, Started) else None)
    assert inside == [1]
    assert torch.get_num_threads() == before


def test_cli_passes_threads_no_amp_and_tta(tmp_path, monkeypatch):
    import tifffile

    syn = make_nuclei((32, 32), seed=0, radius=5)
    tifffile.imwrite(tmp_path / "img.tif", syn.image)
    tifffile.imwrite(tmp_path / "lab.tif", syn.semantic)
    got = {}
    real = training.train_blocking

    def spy(*a, **kw):
        got["tc"] = kw["train_config"]
        return real(*a, **kw)

    monkeypatch.setattr(training, "train_blocking", spy)
    rc = cli.main(["train", "--image", str(tmp_path / "img.tif"), "--labels", str(tmp_path / "lab.tif"),
                   "--out", str(tmp_path / "m"), "--steps", "2", "--threads", "1", "--no-amp", "--width", "4",
                   "--depth", "2", "--patch-size", "32", "32", "--batch-size", "2", "--device", "cpu"])
    assert rc == 0 and got["tc"].threads == 1 and got["tc"].amp is False
    import napari_unet.core.inference as inf

    seen = []
    real_iter = inf.predict_iter

    def spy_iter(*a, **kw):
        seen.append(kw["config"].tta)
        return real_iter(*a, **kw)

    monkeypatch.setattr(inf, "predict_iter", spy_iter)
    for flag, want in (("--tta", True), ("--no-tta", False)):
        rc = cli.main(["predict", "--model", str(tmp_path / "m"), "--image", str(tmp_path / "img.tif"),
                       "--out", str(tmp_path / "p.npy"), "--device", "cpu", flag])
        assert rc == 0
    assert seen == [True, False]
    assert PredictConfig().tta is None  # automatic: decided per image (tests/test_tta_auto.py)
    assert np.load(tmp_path / "p.npy").shape == (2, 32, 32)
