"""Sharing a model: bioimage.io package (validated by bioimageio.core), ONNX/TorchScript files, import."""

import importlib.util
import json
import zipfile

import numpy as np
import pytest
import torch
from conftest import TINY, tiny_train

from napari_unet import UserError
from napari_unet.cli import main
from napari_unet.core.checkpoint import load_model
from napari_unet.core.export import expected_output, export_model
from napari_unet.core.inference import predict
from napari_unet.core.training import train_blocking


@pytest.fixture(scope="module")
def trained():
    from napari_unet.core.synthetic import make_nuclei, scribbles

    syn = make_nuclei((64, 64), seed=1, radius=6, snr=20)
    ann = scribbles(syn.semantic, seed=2, width=2)
    return train_blocking(syn.image, ann, model_config=TINY.replace(class_names=("background", "nucleus")),
                          train_config=tiny_train(steps=4)).model, syn.image


@pytest.fixture(scope="module")
def package(trained, tmp_path_factory):
    pytest.importorskip("bioimageio.spec", reason="the export extra is not installed")
    path = tmp_path_factory.mktemp("pkg") / "model.zip"
    return export_model(trained[0], path, image=trained[1], authors=("A. Biologist",))


def test_package_contents(package, trained):
    with zipfile.ZipFile(package) as z:
        names = set(z.namelist())
        rdf = z.read("rdf.yaml").decode()
        readme = z.read("README.md").decode()
        test_in = np.load(z.open("test_input.npy"))
        test_out = np.load(z.open("test_output.npy"))
    assert {"rdf.yaml", "weights_torchscript.pt", "model.safetensors", "config.json", "cover.png",
            "README.md"} <= names
    if importlib.util.find_spec("onnx"):
        assert "weights.onnx" in names
    for key in ("format_version: 0.5", "scale_range", "max_percentile: 99.8", "min_percentile: 1.0", "clip",
                "nucleus", "A. Biologist", "torchscript"):
        assert key in rdf, key
    assert test_in.shape[:2] == (1, 1) and all(s % TINY.size_multiple == 0 for s in test_in.shape[2:])
    assert test_out.shape == (1, 2) + test_in.shape[2:]
    np.testing.assert_allclose(test_out.sum(1), 1.0, atol=1e-5)  # probabilities
    # the expected output is napari-unet's own prediction of the test input
    np.testing.assert_allclose(test_out[0], predict(trained[0], test_in[0], channel_axis=0), atol=1e-4)
    assert "nucleus" in readme and "round 1" in readme


def test_bioimageio_test_passes(package):
    pytest.importorskip("bioimageio.core", reason="the export extra is not installed")
    from napari_unet.core.export import test_package

    ok, text = test_package(package)
    assert ok, text
    assert "Reproduce test outputs from test inputs (torchscript)" in text


def test_package_round_trip_predict_and_warm_start(package, trained):
    model = load_model(package)
    ref = trained[0]
    assert model.config == ref.config
    for a, b in zip(model.net.state_dict().values(), ref.net.state_dict().values()):
        assert torch.equal(a.cpu(), b.cpu())
    img = trained[1]
    np.testing.assert_allclose(predict(model, img), predict(ref, img), atol=1e-6)
    from napari_unet.core.synthetic import make_nuclei, scribbles

    syn = make_nuclei((64, 64), seed=3, radius=6)
    res = train_blocking(syn.image, scribbles(syn.semantic, seed=4, width=2), init=str(package),
                         train_config=tiny_train(steps=2))
    assert res.steps == 2 and len(res.model.history) == len(ref.history) + 1


def test_foreign_package_is_refused(package, tmp_path):
    foreign = tmp_path / "foreign.zip"
    with zipfile.ZipFile(package) as src, zipfile.ZipFile(foreign, "w") as dst:
        for n in src.namelist():
            if n not in ("model.safetensors", "config.json"):
                dst.writestr(n, src.read(n))
    with pytest.raises(UserError, match="another tool.*bioimageio.core"):
        load_model(foreign)
    fake = tmp_path / "fake.zip"  # ours by name only: a config.json that is not napari-unet's
    with zipfile.ZipFile(package) as src, zipfile.ZipFile(fake, "w") as dst:
        for n in src.namelist():
            dst.writestr(n, json.dumps({"format": "other"}) if n == "config.json" else src.read(n))
    with pytest.raises(UserError, match="not napari-unet's"):
        load_model(fake)
    plain = tmp_path / "plain.zip"
    with zipfile.ZipFile(plain, "w") as z:
        z.writestr("a.txt", "x")
    with pytest.raises(UserError, match="not a bioimage.io model package"):
        load_model(plain)
    assert main(["predict", "--model", str(foreign), "--image", "x.npy", "--out", str(tmp_path / "p.npy")]) == 2


def test_onnx_file_matches_torch(trained, tmp_path):
    pytest.importorskip("onnx", reason="the export extra is not installed")
    ort = pytest.importorskip("onnxruntime", reason="the export extra is not installed")
    model = trained[0]
    path = export_model(model, tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(path))
    x = np.random.default_rng(0).normal(size=(2, 1, 48, 80)).astype(np.float32)  # other size and batch than traced
    got = sess.run(None, {"input": x})[0]
    with torch.no_grad():
        ref = torch.softmax(model.net.cpu().eval()(torch.from_numpy(x)), 1).numpy()
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() < 1e-4


def test_torchscript_file_and_cli(trained, tmp_path, capsys):
    model = trained[0]
    model.save(tmp_path / "m")
    assert main(["export", "--model", str(tmp_path / "m"), "--out", str(tmp_path / "m.pt")]) == 0
    ts = torch.jit.load(str(tmp_path / "m.pt"))
    x = torch.rand(1, 1, 32, 48)
    with torch.no_grad():
        np.testing.assert_allclose(ts(x).numpy(), torch.softmax(model.net.cpu().eval()(x), 1).numpy(), atol=1e-5)
    assert main(["export", "--model", str(tmp_path / "m"), "--out", str(tmp_path / "m.bin")]) == 2
    assert "Cannot tell the export format" in capsys.readouterr().err
    assert main(["export", "--model", str(tmp_path / "m"), "--out", str(tmp_path / "nodir" / "m.zip")]) == 2


def test_expected_output_is_normalised_prediction(trained):
    model = trained[0]
    x = (np.random.default_rng(1).random((1, 1, 32, 32)) * 1000).astype(np.float32)
    out = expected_output(model, x)
    np.testing.assert_allclose(out[0], predict(model, x[0], channel_axis=0), atol=1e-5)


def test_3d_package_validates(tmp_path):
    pytest.importorskip("bioimageio.core", reason="the export extra is not installed")
    from napari_unet.core.checkpoint import Model
    from napari_unet.core.export import test_package

    model = Model.new(TINY.replace(ndim=3, in_channels=2, class_names=("background", "a", "b")), seed=0)
    model.net.eval()
    path = export_model(model, tmp_path / "m3.zip", onnx=False)
    ok, text = test_package(path)
    assert ok, text
    with zipfile.ZipFile(path) as z:
        assert np.load(z.open("test_input.npy")).shape[:2] == (1, 2)
