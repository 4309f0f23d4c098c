"""The objects CLI contract end to end: train --objects, predict --instances-out, evaluate --truth-instances."""

import csv

import numpy as np
import pytest
import tifffile

from napari_unet.cli import main
from napari_unet.core.synthetic import make_nuclei

TINY_ARGS = ["--width", "4", "--depth", "2", "--patch-size", "32", "32", "--batch-size", "2", "--device", "cpu"]


@pytest.fixture
def files(tmp_path):
    syn = make_nuclei((48, 64), seed=0, radius=6)
    inst = syn.instances.astype(np.uint32) * 1000  # ids above 256, as other tools write them
    tifffile.imwrite(tmp_path / "img.tif", syn.image)
    tifffile.imwrite(tmp_path / "inst.tif", inst)
    painted = np.zeros(inst.shape, np.uint16)  # objects painted one by one, background strokes
    painted[:, :2] = 1
    for k, i in enumerate(np.unique(syn.instances[syn.instances > 0])[:4]):
        painted[syn.instances == i] = 2 + k
    tifffile.imwrite(tmp_path / "painted.tif", painted)
    return tmp_path


def run(args, d):
    return main([a.format(d=d) for a in args])


def test_objects_contract_end_to_end(files, capsys):
    d = files
    assert run(["train", "--image", "{d}/img.tif", "--labels", "{d}/inst.tif", "--out", "{d}/m", "--steps", "3",
                "--objects", "--from-instances"] + TINY_ARGS, d) == 0
    assert "saved model" in capsys.readouterr().out
    assert run(["predict", "--model", "{d}/m", "--image", "{d}/img.tif", "--out", "{d}/p.tif",
                "--instances-out", "{d}/objects.tif", "--measurements-out", "{d}/objects.csv",
                "--voxel-size", "0.5", "0.5", "--device", "cpu"], d) == 0
    out = capsys.readouterr().out
    assert "objects" in out and "instances to" in out
    prob = tifffile.imread(d / "p.tif")
    inst = tifffile.imread(d / "objects.tif")
    assert prob.shape == (2, 48, 64) and prob.dtype == np.float32
    assert inst.shape == (48, 64) and inst.dtype == np.uint16
    n = int(inst.max())
    assert set(np.unique(inst)) == set(range(n + 1))  # 0 background, 1..N
    rows = list(csv.DictReader(open(d / "objects.csv")))
    assert len(rows) == n
    if n:
        first = rows[0]
        assert int(first["label"]) == 1
        assert float(first["area"]) == pytest.approx(int(first["pixels"]) * 0.25)
        assert "mean_intensity" in first and "bbox_x_max" in first
    assert run(["evaluate", "--model", "{d}/m", "--image", "{d}/img.tif", "--truth", "{d}/inst.tif",
                "--truth-instances", "--device", "cpu"], d) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("IoU object:")
    assert [ln.split(":")[0] for ln in lines[1:7]] == [f"object AP@{t}" for t in (0.5, 0.6, 0.7, 0.8, 0.9)] + [
        "object F1@0.5"]
    assert "count error" in lines[7]
    # warm start on painted objects (0 ignored, 1 background, 2.. one value per object), objects kept
    assert run(["train", "--image", "{d}/img.tif", "--labels", "{d}/painted.tif", "--out", "{d}/m2", "--steps", "2",
                "--init", "{d}/m", "--objects", "--device", "cpu", "--patch-size", "32", "32"], d) == 0


def test_semantic_model_gives_instances_too(files, capsys):
    d = files
    sem = np.where(tifffile.imread(d / "inst.tif") > 0, 2, 1).astype(np.uint8)
    tifffile.imwrite(d / "sem.tif", sem)
    assert run(["train", "--image", "{d}/img.tif", "--labels", "{d}/sem.tif", "--out", "{d}/s", "--steps", "2"]
               + TINY_ARGS, d) == 0
    assert run(["predict", "--model", "{d}/s", "--image", "{d}/img.tif", "--out", "{d}/p.npy",
                "--instances-out", "{d}/o.npy", "--device", "cpu"], d) == 0
    assert "trained without --objects" in capsys.readouterr().out
    assert np.load(d / "p.npy").shape == (2, 48, 64) and np.load(d / "o.npy").shape == (48, 64)


@pytest.mark.parametrize("args,match", [
    (["train", "--image", "{d}/img.tif", "--labels", "{d}/sem.tif", "--out", "{d}/m", "--objects", "--steps", "1"],
     "look semantic"),
    (["predict", "--model", "{d}/m", "--image", "{d}/img.tif", "--out", "{d}/p.tif", "--instances-out",
      "{d}/img.tif"], "would destroy the input"),
    (["predict", "--model", "{d}/m", "--image", "{d}/img.tif", "--out", "{d}/p.tif", "--measurements-out",
      "{d}/o.txt"], "must end in .csv"),
])
def test_objects_cli_errors(files, capsys, args, match):
    d = files
    sem = np.where(tifffile.imread(d / "inst.tif") > 0, 2, 1).astype(np.uint8)
    tifffile.imwrite(d / "sem.tif", sem)
    before = (d / "img.tif").read_bytes()
    assert run(args + ["--device", "cpu"], d) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("napari-unet: error:") and match in err[-1]
    assert (d / "img.tif").read_bytes() == before
    assert not (d / "m" / "config.json").exists()  # no model left behind


def test_instances_out_zarr_round_trip(files, capsys):
    """--instances-out X.zarr: an OME-Zarr label image equal to the .npy output, voxel size kept."""
    from napari_unet.core.io import read_image

    d = files
    assert run(["train", "--image", "{d}/img.tif", "--labels", "{d}/inst.tif", "--out", "{d}/m", "--steps", "2",
                "--objects", "--from-instances"] + TINY_ARGS, d) == 0
    common = ["predict", "--model", "{d}/m", "--image", "{d}/img.tif", "--voxel-size", "0.5", "0.25", "--device", "cpu"]
    assert run(common + ["--out", "{d}/p.npy", "--instances-out", "{d}/o.npy"], d) == 0
    from napari_unet.core.outputs import write_label_image

    write_label_image(d / "o.zarr", np.zeros((4, 4), np.uint16))  # an older output of that name: replaced
    assert run(common + ["--out", "{d}/p.zarr", "--instances-out", "{d}/o.zarr"], d) == 0
    assert "instances to" in capsys.readouterr().out
    info = read_image(d / "o.zarr")
    arr = np.asarray(info.array)
    ref = np.load(d / "o.npy")
    assert arr.shape == (48, 64) and arr.dtype == ref.dtype == np.uint16
    np.testing.assert_array_equal(arr, ref)
    assert tuple(info.voxel_size) == (0.5, 0.25)
    assert not [p for p in d.iterdir() if "nutmp" in p.name]  # no temporaries left
