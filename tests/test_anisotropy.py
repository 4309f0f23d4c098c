"""Anisotropic voxels: pooling plan, network, model folders, CLI, prediction (core/anisotropy.py)."""

import json

import numpy as np
import pytest
import tifffile
import torch

from napari_unet.cli import main
from napari_unet.config import ModelConfig, PredictConfig
from napari_unet.core.anisotropy import (conv_kernels, pool_plan, size_multiples, voxel_mismatch)
from napari_unet.core.checkpoint import Model, load_model, save_model
from napari_unet.core.events import Notice, Started
from napari_unet.core.inference import _tile_for, predict
from napari_unet.core.synthetic import make_nuclei, scribbles
from napari_unet.core.training import train
from napari_unet.core.util import drain
from napari_unet.errors import UserError

from conftest import tiny_train

ANISO = ModelConfig(ndim=3, depth=3, width=4, voxel_size=(4, 1, 1))


def test_pool_plan_follows_nnunets_rule():
    assert pool_plan(None, 3, 3) == ((2, 2, 2),) * 3
    assert pool_plan(None, 3, 2) == ((2, 2),) * 3
    assert pool_plan((1, 1), 4) == ((2, 2),) * 4
    # Z 4x coarser: pooled only once YX have caught up (spacing 4 -> 4,4,4 after two levels)
    assert pool_plan((4, 1, 1), 3) == ((1, 2, 2), (1, 2, 2), (2, 2, 2))
    assert pool_plan((2.0, 0.5, 0.5), 3) == ((1, 2, 2), (1, 2, 2), (2, 2, 2))  # only ratios count
    assert pool_plan((2, 1, 1), 3) == ((1, 2, 2), (2, 2, 2), (2, 2, 2))
    assert pool_plan((1.5, 1, 1), 3) == ((2, 2, 2),) * 3  # less than 2x coarser: pooled as isotropic
    assert pool_plan((10, 1, 1), 3) == ((1, 2, 2),) * 3  # never catches up within 3 levels
    assert size_multiples((4, 1, 1), 3, 3) == (2, 8, 8)
    assert size_multiples((10, 1, 1), 3, 3) == (1, 8, 8)
    assert size_multiples(None, 4, 3) == (16, 16, 16)
    # kernels: 1 along an axis still >= 3x coarser than the finest (first level of (4, 1, 1) only)
    assert conv_kernels((4, 1, 1), 3, 3) == ((1, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3))
    assert conv_kernels((2, 1, 1), 3, 3) == ((3, 3, 3),) * 4
    assert conv_kernels(None, 2, 2) == ((3, 3),) * 3
    assert ANISO.pool_plan == pool_plan((4, 1, 1), 3) and ANISO.size_multiples == (2, 8, 8)
    assert ANISO.size_multiple == 8


def test_voxel_size_is_validated():
    assert ModelConfig(ndim=3, voxel_size=[4, 1, 1]).voxel_size == (4.0, 1.0, 1.0)
    for bad in ((4, 1), (0, 1, 1), (-1, 1, 1), ("a", 1, 1), (float("inf"), 1, 1)):
        with pytest.raises(UserError, match="voxel_size"):
            ModelConfig(ndim=3, voxel_size=bad)


def _structure(net):
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


@pytest.mark.parametrize("voxel", [(1, 1, 1), (0.3, 0.3, 0.3), (1.5, 1, 1)])
def test_isotropic_voxel_size_builds_the_plain_unet(voxel):
    plain = ModelConfig(ndim=3, depth=2, width=4)
    torch.manual_seed(0)
    a = Model.new(plain, seed=0).net.eval()
    b = Model.new(plain.replace(voxel_size=voxel), seed=0).net.eval()
    assert _structure(a) == _structure(b)
    # the plain U-Net: 3x3x3 convolutions, 2x2x2 up-convolutions, 2x2x2 pooling at every level
    assert all(s[2:] == (3, 3, 3) for k, s in _structure(a).items() if k.endswith("weight") and len(s) == 5
               and not k.startswith(("ups", "head")))
    assert all(_structure(a)[f"ups.{i}.weight"][2:] == (2, 2, 2) for i in range(2))
    assert [m.kernel_size for m in a.pools] == [2, 2]
    x = torch.rand(1, 1, 12, 20, 20)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_anisotropic_net_takes_thin_stacks():
    net = Model.new(ANISO, seed=0).net.eval()
    assert _structure(net)["down.0.0.weight"][2:] == (1, 3, 3)
    assert _structure(net)["ups.2.weight"][2:] == (1, 2, 2)  # the last up-convolution undoes the first pooling
    with torch.no_grad():
        for shape in ((2, 16, 16), (3, 24, 20), (6, 40, 32)):  # Z below the isotropic multiple of 8
            assert net(torch.rand((1, 1) + shape)).shape == (1, 2) + shape


def test_voxel_size_round_trips_and_old_folders_load(tmp_path):
    model = Model.new(ANISO, seed=0)
    save_model(model, tmp_path / "m")
    info = json.loads((tmp_path / "m" / "config.json").read_text())
    assert info["model"]["voxel_size"] == [4.0, 1.0, 1.0]
    back = load_model(tmp_path / "m")
    assert back.config.voxel_size == (4.0, 1.0, 1.0) and back.config.pool_plan == ANISO.pool_plan
    for k, v in model.net.state_dict().items():
        assert torch.equal(v, back.net.state_dict()[k])
    # a folder written before the field existed: no voxel_size key, loads as isotropic
    save_model(Model.new(ModelConfig(ndim=3, depth=2, width=4), seed=0), tmp_path / "old")
    cfg = tmp_path / "old" / "config.json"
    info = json.loads(cfg.read_text())
    del info["model"]["voxel_size"]
    cfg.write_text(json.dumps(info))
    old = load_model(tmp_path / "old")
    assert old.config.voxel_size is None and old.config.size_multiples == (4, 4, 4)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    d = tmp_path_factory.mktemp("aniso")
    syn = make_nuclei((10, 32, 32), seed=0, radius=5)
    tifffile.imwrite(d / "img.tif", syn.image)
    tifffile.imwrite(d / "lab.tif", scribbles(syn.semantic, seed=1, width=2))
    return d


TINY3 = ["--ndim", "3", "--width", "4", "--depth", "2", "--batch-size", "2", "--device", "cpu", "--steps", "2"]


def test_cli_train_stores_voxel_size_and_predict_warns_on_mismatch(stack, capsys):
    d = stack
    assert main(["train", "--image", str(d / "img.tif"), "--labels", str(d / "lab.tif"), "--out", str(d / "m"),
                 "--voxel-size", "4,1,1"] + TINY3) == 0
    assert "voxel size (4.0, 1.0, 1.0)" in capsys.readouterr().err
    model = load_model(d / "m")
    assert model.config.voxel_size == (4.0, 1.0, 1.0) and model.config.size_multiples == (1, 4, 4)
    assert model.patch_size[0] < model.patch_size[1]  # the default patch takes fewer of the coarse planes
    # the same voxel size: no notice; another one (> 25 % off on an axis): a one-line notice, not an error
    assert main(["predict", "--model", str(d / "m"), "--image", str(d / "img.tif"), "--out", str(d / "p.tif"),
                 "--voxel-size", "4.5", "1", "1", "--device", "cpu"]) == 0
    assert "voxel size" not in capsys.readouterr().err
    assert main(["predict", "--model", str(d / "m"), "--image", str(d / "img.tif"), "--out", str(d / "p.tif"),
                 "--voxel-size", "1", "1", "1", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "trained at voxel size (4, 1, 1)" in err and "has (1, 1, 1)" in err
    assert tifffile.imread(d / "p.tif").shape == (2, 10, 32, 32)
    assert main(["train", "--image", str(d / "img.tif"), "--labels", str(d / "lab.tif"), "--out", str(d / "bad"),
                 "--voxel-size", "4", "1"] + TINY3) == 2
    assert "needs 3 positive numbers" in capsys.readouterr().err
    assert not (d / "bad" / "config.json").exists()


def test_cli_train_takes_the_voxel_size_from_the_metadata(stack, tmp_path):
    img = tifffile.imread(stack / "img.tif")
    tifffile.imwrite(tmp_path / "img.tif", img, imagej=True, resolution=(2.0, 2.0),
                     metadata={"spacing": 2.0, "unit": "um", "axes": "ZYX"})
    assert main(["train", "--image", str(tmp_path / "img.tif"), "--labels", str(stack / "lab.tif"),
                 "--out", str(tmp_path / "m")] + TINY3) == 0
    assert load_model(tmp_path / "m").config.voxel_size == (2.0, 0.5, 0.5)


def test_api_voxel_size_with_an_initial_model_keeps_it_and_notices():
    syn = make_nuclei((8, 32, 32), seed=0, radius=5)
    ann = scribbles(syn.semantic, seed=1, width=2)
    init = Model.new(ANISO.replace(depth=2), seed=0)
    gen = train(syn.image, ann, init=init, voxel_size=(1, 1, 1), train_config=tiny_train(steps=1, patch_size=(8, 32, 32)))
    events = []
    result = drain(gen, events.append)
    assert result.model.config.voxel_size == (4.0, 1.0, 1.0)
    assert any(isinstance(e, Notice) and "trained at voxel size" in e.message for e in events)
    # a new model takes the voxel size given and, without a patch size, the preset patch capped to the stack
    events = []
    drain(train(syn.image, ann, model_config=ModelConfig(ndim=3, depth=2, width=4), voxel_size=(4, 1, 1),
                train_config=tiny_train(steps=1, patch_size=None, batch_size=2)), events.append)
    started = next(e for e in events if isinstance(e, Started))
    assert started.model_config.voxel_size == (4.0, 1.0, 1.0)
    assert started.patch_size == (8, 32, 32)  # the preset (32, 64, 64) capped to the stack (8 planes, 32 px)


def test_anisotropic_prediction_has_the_image_shape():
    model = Model.new(ANISO, seed=0)
    model.net.eval()
    assert _tile_for(model, (13, 37, 30), (5, 30, 30)) == (4, 24, 24)  # multiples of (2, 8, 8), not 8
    img = np.random.default_rng(0).random((13, 37, 30)).astype(np.float32)  # Z not a multiple of 16 (nor 2)
    probs = predict(model, img, config=PredictConfig(tile_size=(8, 24, 24), device="cpu"))
    assert probs.shape == (2, 13, 37, 30)
    np.testing.assert_allclose(probs.sum(0), 1, atol=1e-5)


def test_voxel_mismatch_notice():
    assert voxel_mismatch(None, (1, 1, 1)) is None
    assert voxel_mismatch((4, 1, 1), None) is None
    assert voxel_mismatch((4, 1, 1), (4.9, 1.2, 0.8)) is None  # within 25 %
    msg = voxel_mismatch((4, 1, 1), (2, 1, 1), "'a.tif'")
    assert "'a.tif' has (2, 1, 1)" in msg and "\n" not in msg
    assert voxel_mismatch((4, 1, 1), (9, 4, 1, 1)) is None  # a TZYX scale: its last axes compare


def test_layer_scale_gives_the_voxel_size():
    from napari_unet.widgets.session import layer_voxel_size

    assert layer_voxel_size((2.0, 0.5, 0.5), 3) == (2.0, 0.5, 0.5)
    assert layer_voxel_size((1.0, 4.0, 1.0, 1.0), 3) == (4.0, 1.0, 1.0)  # TZYX
    assert layer_voxel_size((1.0, 1.0, 1.0), 3) is None  # napari's default says nothing
    assert layer_voxel_size((4.0, 1.0, 1.0), 2) is None  # a 2D model pools YX alike


def test_session_records_the_layer_scale_and_notices_a_mismatch():
    from napari_unet.core import events as E
    from napari_unet.widgets.session import PredictInput, Session, TrainInput

    syn = make_nuclei((8, 32, 32), seed=0, radius=5)
    ann = scribbles(syn.semantic, seed=1, width=2)
    s = Session()
    s.train_config = lambda budget, device: tiny_train(steps=2, patch_size=(8, 32, 32))
    events = []
    s.event.connect(events.append)
    s.start_training([TrainInput("stack", syn.image.copy(), ann.copy(), None, scale=(4.0, 1.0, 1.0))],
                     ("background", "nucleus"), ndim=3, device="cpu", preview=False)
    assert s.model.config.voxel_size == (4.0, 1.0, 1.0) and "voxel size 4, 1, 1" in s.model_info
    s.start_prediction([PredictInput("stack", syn.image, None, scale=(4.0, 1.0, 1.0))])
    assert not [e for e in events if isinstance(e, E.Notice) and "voxel size" in e.message]
    s.start_prediction([PredictInput("thin", syn.image, None, scale=(1.0, 0.5, 0.5))])
    assert [e for e in events if isinstance(e, E.Notice) and "'thin' has (1, 0.5, 0.5)" in e.message]
