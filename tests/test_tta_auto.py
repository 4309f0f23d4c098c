"""Automatic test-time augmentation (PredictConfig.tta None): on for small images, off for large ones,
decided once per image, never in the live preview or inside the uncertainty's own flipped views."""

import numpy as np
import pytest
import torch
from conftest import record_tta

import napari_unet.core.inference as inf
from napari_unet.config import TTA_AUTO_PIXELS, ModelConfig, PredictConfig
from napari_unet.core.checkpoint import Model
from napari_unet.core.inference import predict, predict_time_iter, resolve_tta
from napari_unet.core.util import drain

pytestmark = pytest.mark.auto_tta


def _model():
    return Model.new(ModelConfig(ndim=2, depth=1, width=2), seed=0)


def test_resolve_tta_follows_the_size_per_device_and_keeps_an_explicit_choice():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert PredictConfig().tta is None
    assert resolve_tta(PredictConfig(), TTA_AUTO_PIXELS["cpu"], cpu).tta is True
    assert resolve_tta(PredictConfig(), TTA_AUTO_PIXELS["cpu"] + 1, cpu).tta is False
    assert resolve_tta(PredictConfig(), TTA_AUTO_PIXELS["cpu"] + 1, cuda).tta is True
    assert resolve_tta(PredictConfig(), TTA_AUTO_PIXELS["cuda"] + 1, cuda).tta is False
    assert resolve_tta(PredictConfig(), 10, cpu, ndim=3).tta is False  # 3D on a CPU: too slow by default
    assert resolve_tta(PredictConfig(), 10, cuda, ndim=3).tta is True
    assert resolve_tta(PredictConfig(tta=False), 10, cpu).tta is False
    assert resolve_tta(PredictConfig(tta=True), 1 << 40, cpu).tta is True


def test_auto_is_tta_on_a_small_image_and_plain_on_a_large_one(monkeypatch):
    model, img = _model(), np.random.default_rng(0).normal(size=(32, 32)).astype(np.float32)
    auto = predict(model, img, config=PredictConfig(device="cpu"))
    np.testing.assert_allclose(auto, predict(model, img, config=PredictConfig(device="cpu", tta=True)), atol=1e-6)
    monkeypatch.setitem(TTA_AUTO_PIXELS, "cpu", 32 * 32 - 1)  # now the image is "large"
    auto = predict(model, img, config=PredictConfig(device="cpu"))
    np.testing.assert_allclose(auto, predict(model, img, config=PredictConfig(device="cpu", tta=False)), atol=1e-6)


def test_a_time_series_decides_once_for_the_whole_series(monkeypatch):
    seen = record_tta(monkeypatch)
    monkeypatch.setitem(TTA_AUTO_PIXELS, "cpu", 3 * 16 * 16 - 1)  # each frame is small, the series is not
    img = np.random.default_rng(0).normal(size=(3, 16, 16)).astype(np.float32)
    drain(predict_time_iter(_model(), img, time_axis=0, config=PredictConfig(device="cpu")))
    assert seen == [False, False, False]


@pytest.mark.parametrize("where", ["preview", "uncertainty"])
def test_previews_and_uncertainty_views_never_add_tta(where, monkeypatch, easy2d):
    from napari_unet.core import training

    seen = record_tta(monkeypatch, training)
    if where == "preview":
        from napari_unet.config import TrainConfig

        syn, lab = easy2d
        img = syn.image
        drain(training.train(img, lab, model_config=ModelConfig(ndim=2, depth=1, width=4),
                             train_config=TrainConfig(steps=3, time_budget=None, device="cpu", val_fraction=0,
                                                      patch_size=(32, 32), batch_size=2),
                             preview=lambda: ("k", img, None, None), preview_every=0))
    else:
        from napari_unet.core.uncertainty import tta_predict

        tta_predict(_model(), np.zeros((32, 32), np.float32), config=PredictConfig(device="cpu"))
    assert seen and all(v is False for v in seen)


def test_tta_halves_the_automatic_3d_tile_on_a_cpu_so_batches_stay_short(monkeypatch):
    tiles = []
    real = inf.tiled_apply

    def spy(read, shape, fn, n_out, tile, *a, **kw):
        tiles.append(tuple(tile))
        return real(read, shape, fn, n_out, tile, *a, **kw)

    monkeypatch.setattr(inf, "tiled_apply", spy)
    model, img = _model(), np.zeros((40, 40), np.float32)
    for tta in (False, True):  # 2D: the same tile
        predict(model, img, config=PredictConfig(device="cpu", tta=tta))
    m3 = Model.new(ModelConfig(ndim=3, depth=1, width=2), seed=0)
    vol = np.zeros((16, 24, 24), np.float32)
    for tta in (False, True):
        predict(m3, vol, config=PredictConfig(device="cpu", tta=tta))
    predict(m3, vol, config=PredictConfig(device="cpu", tta=True, tile_size=(64, 64, 64)))  # as asked
    d2, d3 = inf.DEFAULT_TILE[2], inf.DEFAULT_TILE[3]
    assert tiles == [(d2, d2), (d2, d2), (d3,) * 3, (d3 // 2,) * 3, (64, 64, 64)]
