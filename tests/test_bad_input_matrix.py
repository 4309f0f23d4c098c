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
    widget.image_combo.value = image
    widget.budget_spin.setValue(1)
    return viewer, widget


def _wait_idle(qtbot, widget):
    from napari_unet.widgets.main import State

    qtbot.waitUntil(lambda: widget.state == State.IDLE and widget.worker is None, timeout=20_000)


def test_widget_bad_inputs_notify_and_keep_annotations(gui, qtbot, notes, tmp_path):
    viewer, widget = gui
    widget.train()
    assert "annotation layer" in notes[-1]
    other = viewer.add_labels(np.zeros((10, 10), np.uint8), name="other")
    widget.labels_combo.value = other
    widget.train()
    assert "have shape (10, 10)" in notes[-1]
    ann = widget.new_annotations()
    ann.data[:] = np.where(ANN > 0, 2, 0)
    before = digest(ann.data)
    widget.train()
    _wait_idle(qtbot, widget)
    assert "Only label 2" in notes[-1]
    widget.load_model(_folder(tmp_path, "foreign"))
    assert "not a napari-unet model" in notes[-1]
    widget.classes_edit.setText("background, background")
    widget.new_annotations()
    assert "different names" in notes[-1]
    widget.accept_prediction()
    assert "no prediction" in notes[-1]
    assert digest(ann.data) == before and digest(other.data) == digest(np.zeros((10, 10), np.uint8))
