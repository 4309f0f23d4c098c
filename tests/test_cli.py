import subprocess
import sys

import numpy as np
import pytest
import tifffile

from napari_unet.cli import main
from napari_unet.core.synthetic import make_nuclei, scribbles

TINY_ARGS = ["--width", "4", "--depth", "2", "--patch-size", "32", "32", "--batch-size", "2", "--device", "cpu"]


@pytest.fixture
def files(tmp_path):
    syn = make_nuclei((48, 64), seed=0, radius=6)
    tifffile.imwrite(tmp_path / "img.tif", syn.image)
    tifffile.imwrite(tmp_path / "lab.tif", scribbles(syn.semantic, seed=1, width=2))
    return tmp_path


def test_train_then_predict(files, capsys):
    rc = main(["train", "--image", str(files / "img.tif"), "--labels", str(files / "lab.tif"),
               "--out", str(files / "model"), "--steps", "3", "--seed", "1"] + TINY_ARGS)
    assert rc == 0
    assert (files / "model" / "model.safetensors").exists()
    assert "saved model" in capsys.readouterr().out
    rc = main(["predict", "--model", str(files / "model"), "--image", str(files / "img.tif"),
               "--out", str(files / "prob.tif"), "--labels-out", str(files / "pred.tif"), "--device", "cpu"])
    assert rc == 0
    prob = tifffile.imread(files / "prob.tif")
    lab = tifffile.imread(files / "pred.tif")
    assert prob.shape == (2, 48, 64) and prob.dtype == np.float32
    assert lab.shape == (48, 64) and set(np.unique(lab)) <= {1, 2}
    # warm start from the saved model
    rc = main(["train", "--image", str(files / "img.tif"), "--labels", str(files / "lab.tif"),
               "--out", str(files / "model2"), "--steps", "2", "--init", str(files / "model"), "--device", "cpu",
               "--patch-size", "32", "32"])
    assert rc == 0
    assert "continuing from the given model" in capsys.readouterr().err


@pytest.mark.parametrize("args,match", [
    (["predict", "--model", "{d}/missing", "--image", "{d}/img.tif", "--out", "{d}/p.tif"], "does not exist"),
    (["predict", "--model", "{d}", "--image", "{d}/img.tif", "--out", "{d}/p.tif"], "config.json is missing"),
    (["predict", "--model", "{d}", "--image", "{d}/img.tif", "--out", "{d}/nodir/p.tif"], "does not exist"),
    (["predict", "--model", "{d}", "--image", "{d}/img.tif", "--out", "{d}/p.png"], "must end in"),
    (["train", "--image", "{d}/img.tif", "--labels", "{d}/img.tif", "--out", "{d}/m", "--steps", "1"],
     "fractional|at most 255"),
    (["train", "--image", "{d}/img.tif", "--out", "{d}/m", "--labels", "{d}/lab.tif", "--labels", "{d}/lab.tif"],
     "one --labels per --image"),
    (["train", "--image", "{d}/img.tif", "--labels", "{d}/lab.tif", "--out", "{d}/m", "--steps", "0"],
     "positive integer"),
])
def test_errors_exit_nonzero_with_one_line(files, capsys, args, match):
    rc = main([a.format(d=files) for a in args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1].startswith("napari-unet: error:")
    import re
    assert re.search(match, err[-1])
    assert not (files / "p.tif").exists()  # nothing written
    assert not (files / "m").exists()


def test_subprocess_reports_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "napari_unet.cli", "predict", "--model", str(tmp_path / "x"),
                           "--image", "a.tif", "--out", str(tmp_path / "p.tif")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_headless_demo_learns(capsys):
    # steps, not seconds: the same training on a loaded or an idle machine (40 steps scored 0.88)
    assert main(["demo", "--headless", "--steps", "40", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    iou = float(out.split("held-out IoU")[1].split()[0])
    assert iou > 0.7, out


def test_version_class_names_and_help_for_every_option(tmp_path, capsys):
    import napari_unet
    from napari_unet.cli import build_parser
    from napari_unet.core.checkpoint import load_model

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and napari_unet.__version__ in capsys.readouterr().out
    parser = build_parser()
    subs = next(a for a in parser._actions if a.choices and "train" in a.choices).choices
    for name, sub in [("napari-unet", parser), *subs.items()]:
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings} has no help"
    syn = make_nuclei((48, 48), seed=1, radius=6)
    np.save(tmp_path / "i.npy", syn.image)
    np.save(tmp_path / "l.npy", scribbles(syn.semantic, seed=2, width=2))
    base = ["train", "--image", str(tmp_path / "i.npy"), "--labels", str(tmp_path / "l.npy"), "--steps", "2",
            *TINY_ARGS]
    assert main(base + ["--out", str(tmp_path / "m"), "--class-names", "background, nucleus"]) == 0
    assert load_model(tmp_path / "m").config.class_names == ("background", "nucleus")
    assert main(base + ["--out", str(tmp_path / "m3"), "--class-names", "background, nucleus, debris"]) == 2
    assert "lists 3 name(s) but the labels use values 1..2" in capsys.readouterr().err
    assert not (tmp_path / "m3").exists()
