"""Bad input across the API, the CLI and the widget: a clear message, no crash, and the annotations
byte-identical afterwards. Each row names the input and the words the message must contain."""

import hashlib
import json

import numpy as np
import pytest
import tifffile

from conftest import TINY, tiny_train
from napari_unet.cli import main
from napari_unet.config import ModelConfig, TrainConfig
from napari_unet.core.checkpoint import Model, load_model, save_model
from napari_unet.core.inference import predict
from napari_unet.core.synthetic import make_nuclei, scribbles
from napari_unet.core.training import train_blocking
from napari_unet.errors import UserError

SYN = make_nuclei((48, 48), seed=1, radius=6)
ANN = scribbles(SYN.semantic, seed=2, width=2)


def digest(a) -> str:
    a = np.asarray(a)
    return hashlib.sha256(a.tobytes() + str((a.dtype, a.shape)).encode()).hexdigest()


def _train(img, lab, **kw):
    kw.setdefault("model_config", TINY)
    kw.setdefault("train_config", tiny_train(steps=1))
    return train_blocking(img, lab, **kw)


def _model(**cfg):
    return Model.new(TINY.replace(**cfg), seed=0)


# (id, image, labels, extra train kwargs, message regex)
API_TRAIN = [
    ("shape mismatch", SYN.image, ANN[:40], {}, "must match"),
    ("no annotated pixel", SYN.image, np.zeros_like(ANN), {}, "no annotated pixel|No plane"),
    ("one class only", SYN.image, np.where(ANN > 0, 2, 0).astype(np.uint8), {}, "Only label 2"),
    ("fractional labels", SYN.image, ANN + 0.5 * (ANN > 0), {}, "fractional"),
    ("negative labels", SYN.image, ANN.astype(np.int16) - 1, {}, "negative"),
    ("boolean labels", SYN.image, ANN > 0, {}, "boolean"),
    ("NaN in labels", SYN.image, np.where(ANN > 0, ANN, np.nan), {}, "NaN"),
    ("instance ids as labels", SYN.image, SYN.instances * 100 + (SYN.instances > 0), {}, "at most 255 classes"),
    ("text image", np.full((48, 48), "a"), ANN, {}, "not numeric"),
    ("all-NaN image", np.full((48, 48), np.nan, np.float32), ANN, {}, "no finite value"),
    ("1D image", SYN.image[0], ANN[0], {}, "fewer than 2 spatial axes"),
    ("6D image", SYN.image[None, None, None, None], ANN[None, None, None, None], {}, "at most 4"),
    ("3D model, 2D image", SYN.image, ANN, {"model_config": ModelConfig(ndim=3, depth=2, width=4)}, "needs ZYX"),
    ("channel axis out of range", SYN.image, ANN, {"channel_axis": 3}, "does not exist"),
    ("two images, one labels", [SYN.image, SYN.image], [ANN], {}, "one annotation array per image"),
    ("warm start, other channel count", np.stack([SYN.image] * 2, -1), ANN,
     {"init": _model(), "channel_axis": -1}, "expects 1"),
    ("warm start, more classes than model", SYN.image, np.where(ANN == 2, 3, ANN).astype(np.uint8),
     {"init": _model()}, "start a new model"),
    ("patch size of wrong dimensionality", SYN.image, ANN,
     {"train_config": tiny_train(patch_size=(16, 16, 16))}, "Patch size"),
    ("absent device", SYN.image, ANN, {"train_config": tiny_train(device="mps")}, "not available"),
    ("zero steps", SYN.image, ANN, {"train_config": None}, "positive integer"),
]


@pytest.mark.parametrize("name,img,lab,kw,match", API_TRAIN, ids=[c[0] for c in API_TRAIN])
def test_api_training_refuses(name, img, lab, kw, match):
    labs = lab if isinstance(lab, list) else [lab]
    before = [digest(x) for x in labs]
    with pytest.raises(UserError, match=match):
        if kw.get("train_config", 1) is None:
            TrainConfig(steps=0)
        _train(img, lab, **kw)
    assert [digest(x) for x in labs] == before


def test_api_huge_values_are_handled_not_refused():
    img = SYN.image.astype(np.float64) * 1e300
    img[0, 0] = np.inf
    before = digest(ANN)
    result = _train(img, ANN)
    assert np.isfinite(predict(result.model, img)).all()
    assert digest(ANN) == before


def test_api_unwritable_model_folder(tmp_path):
    (tmp_path / "f").write_text("x")
    before = digest(ANN)
    with pytest.raises(UserError, match="is a file"):
        _train(SYN.image, ANN, out=tmp_path / "f")
    assert digest(ANN) == before


def _folder(tmp_path, kind):
    f = tmp_path / kind
    if kind == "missing":
        return f
    f.mkdir()
    if kind == "corrupt":
        save_model(_model(), f)
        (f / "config.json").write_text('{"format": "napari-unet-loop", "format_')
    elif kind == "foreign":
        (f / "config.json").write_text(json.dumps({"model_type": "bert"}))
        (f / "pytorch_model.bin").write_bytes(b"\x80\x04junk")
    return f


@pytest.mark.parametrize("kind,match", [("missing", "does not exist"), ("empty", "config.json is missing"),
                                        ("corrupt", "not valid JSON"), ("foreign", "not a napari-unet model")])
def test_api_bad_model_folders(tmp_path, kind, match):
    with pytest.raises(UserError, match=match):
        load_model(_folder(tmp_path, kind))


def test_api_prediction_channel_mismatch():
    with pytest.raises(UserError, match="trained on 2"):
        predict(_model(in_channels=2), SYN.image)


@pytest.fixture
def cli_files(tmp_path):
    tifffile.imwrite(tmp_path / "img.tif", SYN.image)
    tifffile.imwrite(tmp_path / "lab.tif", ANN)
    (tmp_path / "garbage.tif").write_bytes(b"not a tiff at all")
    save_model(_model(), tmp_path / "model")
    return tmp_path


CLI = [
    ("missing image", ["train", "--image", "{d}/nope.tif", "--labels", "{d}/lab.tif", "--out", "{d}/m"],
     "does not exist"),
    ("garbage tiff", ["train", "--image", "{d}/garbage.tif", "--labels", "{d}/lab.tif", "--out", "{d}/m"],
     "Cannot read"),
    ("labels as image", ["train", "--image", "{d}/img.tif", "--labels", "{d}/img.tif", "--out", "{d}/m"],
     "fractional|at most 255"),
    ("output folder missing", ["predict", "--model", "{d}/model", "--image", "{d}/img.tif", "--out",
                               "{d}/no/p.tif"], "does not exist"),
    ("output is a folder", ["predict", "--model", "{d}/model", "--image", "{d}/img.tif", "--out",
                            "{d}/model.tif/"], "is a folder|does not exist"),
    ("unsupported output type", ["predict", "--model", "{d}/model", "--image", "{d}/img.tif", "--out", "{d}/p.png"],
     "must end in"),
    ("image not a model", ["predict", "--model", "{d}/img.tif", "--image", "{d}/img.tif", "--out", "{d}/p.tif"],
     "is a file"),
]


@pytest.mark.parametrize("name,args,match", CLI, ids=[c[0] for c in CLI])
def test_cli_refuses_with_one_line(cli_files, capsys, name, args, match):
    if name == "output is a folder":
        (cli_files / "model.tif").mkdir()
    before = (cli_files / "lab.tif").read_bytes()
    rc = main([a.format(d=cli_files) for a in args] + ["--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err and err[-1].startswith("napari-unet: error:")
    import re
    assert re.search(match, err[-1]), err[-1]
    assert (cli_files / "lab.tif").read_bytes() == before
    assert not (cli_files / "m").exists() and not (cli_files / "p.tif").exists()


@pytest.fixture
def gui(make_napari_viewer):
    from napari_unet.widgets.main import UNetWidget

    viewer = make_napari_viewer()
    image = viewer.add_image(SYN.image, name="cells")
    widget = UNetWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.annotate.image.value = image
    widget.training.budget.value = 1
    return viewer, widget


def _wait_idle(qtbot, widget):
    qtbot.waitUntil(lambda: not widget.state.busy and widget.worker is None, timeout=20_000)


def test_widget_bad_inputs_notify_and_keep_annotations(gui, qtbot, notes, tmp_path):
    viewer, widget = gui
    widget.training.train()
    assert "annotation layer" in notes[-1]
    other = viewer.add_labels(np.zeros((10, 10), np.uint8), name="other")
    widget.annotate.labels.value = other
    widget.training.train()
    assert "have shape (10, 10)" in notes[-1]
    ann = widget.annotate.new_annotations()
    ann.data[:] = np.where(ANN > 0, 2, 0)
    before = digest(ann.data)
    widget.training.train()
    _wait_idle(qtbot, widget)
    assert "Only label 2" in notes[-1]
    widget.model_panel.load_model(_folder(tmp_path, "foreign"))
    assert "not a napari-unet model" in notes[-1]
    widget.annotate.classes.value = "background, background"
    widget.session.guard(widget.annotate.new_annotations)
    assert "different names" in notes[-1]
    widget.review.accept_prediction()
    assert "no prediction" in notes[-1]
    assert digest(ann.data) == before and digest(other.data) == digest(np.zeros((10, 10), np.uint8))


# --------------------------------------------------------------------------- issue 10: nothing lost, nothing silent
def _hostile_files(d):
    """Inputs of the hostile pass: each is refused with its real reason and stays byte-identical."""
    import numpy.lib.format as npformat
    import zarr

    np.save(d / "img.npy", SYN.image)
    (d / "link.tif").symlink_to(d / "img.tif")
    with open(d / "huge.npy", "wb") as f:  # header claims 149 GiB, the file holds nothing
        npformat.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (200_000, 200_000)})
    np.savez(d / "arch.npz", a=SYN.image)
    (d / "arch.npz").rename(d / "arch.npy")
    g = zarr.open_group(str(d / "group.zarr"), mode="w")
    g.create_array("raw", shape=(4, 4), dtype="f4")
    (d / "deep").mkdir()
    (d / "deep" / "config.json").write_text("[" * 200_000 + "]" * 200_000)
    (d / "deep" / "model.safetensors").write_bytes(b"x")
    (d / "mine").mkdir()
    (d / "mine" / "config.json").write_text('{"my": "own settings"}')
    tifffile.imwrite(d / "ids.tif", np.where(ANN == 2, 255, ANN).astype(np.uint8))
    tifffile.imwrite(d / "bad_weights_img.tif", SYN.image)


HOSTILE = [
    # item 1: an output path that is an input or another output
    ("predict out is image tif", ["predict", "--model", "{d}/model", "--image", "{d}/img.tif", "--out", "{d}/img.tif"],
     "would destroy the input"),
    ("predict out is image npy", ["predict", "--model", "{d}/model", "--image", "{d}/img.npy", "--out", "{d}/img.npy"],
     "would destroy the input"),
    ("predict out is a symlink to image", ["predict", "--model", "{d}/model", "--image", "{d}/img.tif", "--out",
                                           "{d}/link.tif"], "would destroy the input"),
    ("predict out via dot-dot", ["predict", "--model", "{d}/model", "--image", "{d}/img.tif", "--out",
                                 "{d}/model/../img.tif"], "would destroy the input"),
    ("predict labels-out is out", ["predict", "--model", "{d}/model", "--image", "{d}/img.tif", "--out", "{d}/p.tif",
                                   "--labels-out", "{d}/p.tif"], "same file"),
    ("train out is the image", ["train", "--image", "{d}/img.tif", "--labels", "{d}/lab.tif", "--out", "{d}/img.tif"],
     "would destroy the input"),
    ("train out is the labels", ["train", "--image", "{d}/img.tif", "--labels", "{d}/lab.tif", "--out", "{d}/lab.tif"],
     "would destroy the input"),
    ("train out is a symlink to the image", ["train", "--image", "{d}/img.tif", "--labels", "{d}/lab.tif", "--out",
                                             "{d}/link.tif"], "would destroy the input"),
    # item 6: the real reason, not "unexpected error"
    ("npy header claims 149 GiB", ["predict", "--model", "{d}/model", "--image", "{d}/huge.npy", "--out", "{d}/p.tif"],
     "header is wrong"),
    ("npz named npy", ["predict", "--model", "{d}/model", "--image", "{d}/arch.npy", "--out", "{d}/p.tif"],
     "npz archive"),
    ("zarr group", ["predict", "--model", "{d}/model", "--image", "{d}/group.zarr", "--out", "{d}/p.tif"],
     "zarr group, not an array.*raw"),
    ("config nested 200000 deep", ["predict", "--model", "{d}/deep", "--image", "{d}/img.tif", "--out", "{d}/p.tif"],
     "nested too deeply.*not a napari-unet model config"),
    # item 8: the user's own folder and an existing model are not replaced silently
    ("train out holds the user's files", ["train", "--image", "{d}/img.tif", "--labels", "{d}/lab.tif", "--out",
                                          "{d}/mine"], "not empty and not a napari-unet model folder"),
    ("train out holds a model", ["train", "--image", "{d}/img.tif", "--labels", "{d}/lab.tif", "--out", "{d}/model"],
     "already holds a napari-unet model; pass --overwrite"),
    # item 11: label values that are ids, not classes
    ("labels 0, 1, 255", ["train", "--image", "{d}/img.tif", "--labels", "{d}/ids.tif", "--out", "{d}/m"],
     "253 have no annotation.*instance-mask option.*remap"),
]


@pytest.mark.parametrize("name,args,match", HOSTILE, ids=[c[0] for c in HOSTILE])
def test_cli_hostile_inputs_refused_inputs_untouched(cli_files, capsys, name, args, match):
    import re

    _hostile_files(cli_files)
    files = sorted(p for p in cli_files.rglob("*") if p.is_file() and not p.is_symlink())
    before = {p: p.read_bytes() for p in files}
    rc = main([a.format(d=cli_files) for a in args] + ["--device", "cpu", "--steps", "1"][: 2 + 2 * (args[0] == "train")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err and err[-1].startswith("napari-unet: error:"), err
    assert re.search(match, err[-1]), err[-1]
    assert {p: p.read_bytes() for p in files} == before  # inputs, models and the user's files byte-identical
    assert sorted(p for p in cli_files.rglob("*") if p.is_file() and not p.is_symlink()) == files  # nothing new
    assert not (cli_files / "m").exists()


@pytest.mark.parametrize("ids", [np.uint32(70_000), np.uint16(1000)])
def test_from_instances_accepts_large_ids(tmp_path, capsys, ids):
    """Item 2: instance ids above 256 are converted, not refused (make_samples and evaluate)."""
    inst = (SYN.instances.astype(np.uint32) * ids).astype(type(ids))
    before = digest(inst)
    result = _train(SYN.image, inst, from_instances=True, out=tmp_path / "m")
    assert result.model.config.n_classes == 2 and digest(inst) == before
    tifffile.imwrite(tmp_path / "img.tif", SYN.image)
    tifffile.imwrite(tmp_path / "truth.tif", inst)
    rc = main(["evaluate", "--model", str(tmp_path / "m"), "--image", str(tmp_path / "img.tif"),
               "--truth", str(tmp_path / "truth.tif"), "--truth-instances", "--device", "cpu"])
    assert rc == 0 and "IoU object" in capsys.readouterr().out
    with pytest.raises(UserError, match="negative"):
        _train(SYN.image, SYN.instances.astype(np.int32) - 1, from_instances=True)


@pytest.mark.parametrize("values,ok", [((1, 255), False), ((1, 2, 10), False), ((1, 3), True),
                                       ((1, 2, 3, 4, 5, 6), True)])
def test_gappy_labels_are_refused_legit_classes_are_not(values, ok):
    """Item 11: {0, 1, 255} would train a 255-class model; dense multi-class labels still train."""
    lab = np.zeros((48, 48), np.uint8)
    for k, v in enumerate(values):
        lab[4 + 6 * k: 8 + 6 * k, 4:40] = v
    before = digest(lab)
    if ok:
        assert _train(SYN.image, lab).model.config.n_classes == max(values)
    else:
        with pytest.raises(UserError, match="instance-mask option.*remap"):
            _train(SYN.image, lab)
    assert digest(lab) == before


def test_declared_classes_may_be_unpainted():
    names = ("background",) + tuple(f"c{k}" for k in range(1, 10))
    lab = np.zeros((48, 48), np.uint8)
    lab[4:10], lab[20:26] = 1, 10
    assert _train(SYN.image, lab, model_config=TINY.replace(class_names=names)).model.config.n_classes == 10


def test_batch_size_one_on_a_3x3_image(tmp_path, capsys):
    """Item 6: batch norm got one value per channel at the bottom of the U-Net (torch ValueError)."""
    tifffile.imwrite(tmp_path / "i.tif", np.random.default_rng(0).random((3, 3)).astype(np.float32))
    tifffile.imwrite(tmp_path / "l.tif", np.array([[1, 2, 1], [2, 1, 2], [1, 1, 2]], np.uint8))
    rc = main(["train", "--image", str(tmp_path / "i.tif"), "--labels", str(tmp_path / "l.tif"), "--out",
               str(tmp_path / "m"), "--steps", "2", "--batch-size", "1", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    assert load_model(tmp_path / "m").config.n_classes == 2


def test_zarr_is_a_dependency():
    """Item 6: .zarr input needs zarr on a plain install."""
    import tomllib
    from pathlib import Path

    deps = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.split(">")[0].split("=")[0].strip() == "zarr" for d in deps)


def test_zarr_array_inside_a_group_is_read(tmp_path, capsys):
    import zarr

    g = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    g.create_array("raw", shape=SYN.image.shape, dtype="f4")[:] = SYN.image
    save_model(_model(), tmp_path / "model")
    rc = main(["predict", "--model", str(tmp_path / "model"), "--image", str(tmp_path / "g.zarr" / "raw"),
               "--out", str(tmp_path / "p.npy"), "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    assert np.load(tmp_path / "p.npy").shape == (2, 48, 48)


def test_full_disk_on_predict_names_the_file(cli_files, capsys, monkeypatch):
    import errno

    def no_space(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", no_space)
    rc = main(["predict", "--model", str(cli_files / "model"), "--image", str(cli_files / "img.tif"),
               "--out", str(cli_files / "p.npy"), "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "No space left on device writing" in err[-1] and "p.npy" in err[-1] and "--out" in err[-1]
    assert [p.name for p in cli_files.iterdir() if "p.npy" in p.name] == []  # no partial file left


@pytest.mark.parametrize("where", ["config", "weights"])
def test_unreadable_model_folder_is_a_user_error(tmp_path, monkeypatch, where):
    import pathlib

    import napari_unet.core.checkpoint as ckpt

    folder = save_model(_model(), tmp_path / "m")

    def denied(self, *a, **k):
        raise PermissionError(13, "Permission denied", str(self))

    # chmod 000 does not stop root, so the denial is simulated where the files are opened
    if where == "config":
        monkeypatch.setattr(pathlib.Path, "read_bytes", denied)
    else:
        monkeypatch.setattr(ckpt, "open", denied, raising=False)
    with pytest.raises(UserError, match="(?i)permission denied"):
        load_model(folder)


def test_non_finite_weights_refused_on_load(tmp_path):
    model = _model()
    with torch_no_grad():
        next(model.net.parameters()).view(-1)[0] = float("nan")
    folder = save_model(model, tmp_path / "m")
    with pytest.raises(UserError, match="NaN or infinite"):
        load_model(folder)


def torch_no_grad():
    import torch

    return torch.no_grad()


@pytest.mark.parametrize("history", [[{"steps": "many"}], [{"steps": 3, "runs": [{"val_iou": "high"}]}],
                                     [{"steps": 3, "runs": ["x"]}], [{"steps": -1}]])
def test_history_of_wrong_types_refused_on_load(tmp_path, history):
    """Item 11: validated before anything uses it (the widget swapped the model in, then failed)."""
    folder = save_model(_model(), tmp_path / "m")
    info = json.loads((folder / "config.json").read_text())
    info["history"] = history
    (folder / "config.json").write_text(json.dumps(info))
    with pytest.raises(UserError, match="history"):
        load_model(folder)
