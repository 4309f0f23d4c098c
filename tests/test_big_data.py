"""Issue 13: lazy readers with voxel sizes, tile-by-tile writers (zarr, memmap), folders, a cluster."""

import json

import numpy as np
import pytest
import tifffile
import torch
import zarr

from napari_unet.cli import main
from napari_unet.config import ModelConfig, PredictConfig
from napari_unet.core.checkpoint import Model, save_model
from napari_unet.core.inference import predict, predict_iter, to_labels
from napari_unet.core.io import read_array, read_image
from napari_unet.core.ome import AxisView, create_output
from napari_unet.core.outputs import Outputs
from napari_unet.core.tiling import tiled_apply
from napari_unet.core.util import drain
from napari_unet.errors import UserError

CFG = PredictConfig(tile_size=(32, 32), device="cpu", overlap=0.25)


def _model(ndim=2):
    torch.manual_seed(0)
    m = Model.new(ModelConfig(ndim=ndim, depth=2, width=4))
    m.net.eval()
    return m


@pytest.fixture
def model_dir(tmp_path):
    save_model(_model(), tmp_path / "model")
    return tmp_path / "model"


def _img(shape, seed=1):
    return (np.random.default_rng(seed).random(shape) * 4000).astype(np.uint16)


# --------------------------------------------------------------------------- readers
def test_tiff_read_lazily_with_voxel_size(tmp_path):
    img = _img((3, 60, 70))
    # compressed and tiled: read through tifffile's zarr store, region by region
    tifffile.imwrite(tmp_path / "c.ome.tif", img, compression="zlib", tile=(32, 32),
                     metadata={"axes": "ZYX", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25, "PhysicalSizeZ": 2.0})
    info = read_image(tmp_path / "c.ome.tif", lazy=True)
    assert not isinstance(info.array, np.ndarray) and info.array.shape == img.shape
    np.testing.assert_array_equal(np.asarray(info.array[1, 10:20, 30:45]), img[1, 10:20, 30:45])
    assert info.voxel_size == (2.0, 0.25, 0.25) and info.axes == "zyx"
    # uncompressed: memory-mapped, nothing read until indexed
    tifffile.imwrite(tmp_path / "u.tif", img, imagej=True, resolution=(1 / 0.5, 1 / 0.5),
                     metadata={"spacing": 3.0, "unit": "micron", "axes": "ZYX"})
    info = read_image(tmp_path / "u.tif", lazy=True)
    assert isinstance(info.array, np.memmap)
    np.testing.assert_array_equal(info.array, img)
    assert info.voxel_size == pytest.approx((3.0, 0.5, 0.5)) and info.unit == "micron"
    # small files still load whole by default, and read_array keeps its contract
    assert isinstance(read_array(tmp_path / "u.tif"), np.ndarray)
    tifffile.imwrite(tmp_path / "plain.tif", img[0])
    assert read_image(tmp_path / "plain.tif").voxel_size is None


def _ome_zarr(path, data, axes, scale, version="0.4"):
    fmt = 2 if version == "0.4" else 3
    g = zarr.open_group(str(path), mode="w", zarr_format=fmt)
    ms = [{"version": version, "axes": [{"name": a, "type": {"c": "channel", "t": "time"}.get(a, "space")}
                                        for a in axes],
           "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]},
                        {"path": "1", "coordinateTransformations": [{"type": "scale", "scale": [s * 2 for s in scale]}]}]}]
    if version == "0.4":
        g.attrs["multiscales"] = ms
    else:
        g.attrs["ome"] = {"version": version, "multiscales": ms}
    a = g.create_array("0", shape=data.shape, chunks=data.shape, dtype=data.dtype)
    a[:] = data
    g.create_array("1", shape=data.shape, chunks=data.shape, dtype=data.dtype)  # a lower level, never read
    return g


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_level0_axes_voxel_size(tmp_path, version):
    data = _img((1, 2, 4, 30, 40))
    _ome_zarr(tmp_path / "i.ome.zarr", data, "tczyx", [1.0, 1.0, 3.0, 0.2, 0.2], version)
    info = read_image(tmp_path / "i.ome.zarr")
    assert info.axes == "czyx" and info.channel_axis == 0 and info.voxel_size == (3.0, 0.2, 0.2)
    assert isinstance(info.array, AxisView) and info.array.shape == (2, 4, 30, 40)  # singleton t viewed away
    np.testing.assert_array_equal(info.array[1, 2, 5:9], data[0, 1, 2, 5:9])
    # the level-0 array named directly gets the image's metadata too
    assert read_image(tmp_path / "i.ome.zarr" / "0").voxel_size == (3.0, 0.2, 0.2)


def test_zarr_group_and_non_images_refused(tmp_path):
    g = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    g.create_array("raw", shape=(8, 8), dtype="u1")
    with pytest.raises(UserError, match="zarr group, not an array.*raw"):
        read_image(tmp_path / "g.zarr")
    (tmp_path / "x.png").write_bytes(b"\x89PNG....")
    with pytest.raises(UserError, match="unsupported type"):
        read_image(tmp_path / "x.png")
    np.savez(tmp_path / "a.npy", a=np.zeros(3))
    (tmp_path / "a.npy.npz").rename(tmp_path / "b.npy")
    with pytest.raises(UserError, match="npz archive"):
        read_image(tmp_path / "b.npy")
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(UserError, match="zarr"):
        read_image(tmp_path / "empty.zarr")


# --------------------------------------------------------------------------- writers
def test_streamed_stitching_is_identical_to_whole_image():
    rng = np.random.default_rng(0)
    img = rng.random((2, 150, 97)).astype(np.float32)

    def fn(b):
        return np.concatenate([np.sin(b * 3), np.cos(b * 5 + 1)], axis=1)

    def read(r):
        return img[(slice(None),) + r]

    ref = np.zeros((4, 150, 97), np.float32)
    w = np.zeros((150, 97), np.float32)
    from napari_unet.core.tiling import blend_weights, tile_slices

    for r in tile_slices((150, 97), (40, 32), 0.3):  # the former whole-image accumulation
        bw = blend_weights((40, 32), 0.3)
        ref[(slice(None),) + r] += fn(read(r)[None])[0] * bw
        w[r] += bw
    ref /= w
    writes = []
    sink = np.full((4, 150, 97), np.nan, np.float32)

    def spy(region, block):
        writes.append(region)
        sink[(slice(None),) + region] = block

    assert drain(tiled_apply(read, (150, 97), fn, 4, (40, 32), 0.3, 2, sink=spy)) is None
    np.testing.assert_array_equal(sink, ref)  # bit-identical
    assert max(r[0].stop - r[0].start for r in writes) <= 40 and len(writes) > 3  # row by row


def test_zarr_output_equals_in_memory_with_ome_metadata(tmp_path):
    model = _model()
    img = _img((2, 70, 90))  # a stack: a 2D model predicts plane by plane
    ref = predict(model, img, config=CFG)
    with Outputs(tmp_path / "p.zarr", tmp_path / "l.zarr", n_classes=2, spatial=img.shape,
                 voxel_size=(2.0, 0.5, 0.5), unit="micrometer") as outs:
        assert drain(predict_iter(model, img, config=CFG, sink=outs)) is None
        outs.commit()
    p = zarr.open_group(str(tmp_path / "p.zarr"), mode="r")
    np.testing.assert_array_equal(p["0"][:], ref)
    np.testing.assert_array_equal(zarr.open_group(str(tmp_path / "l.zarr"), mode="r")["0"][:], to_labels(ref))
    ms = p.attrs["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["c", "z", "y", "x"]
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [1.0, 2.0, 0.5, 0.5]
    info = read_image(tmp_path / "p.zarr")  # our outputs read back with their voxel size
    assert info.voxel_size == (2.0, 0.5, 0.5) and info.channel_axis == 0
    assert not list(tmp_path.glob(".*nutmp*"))


def test_3d_zarr_output_equals_in_memory(tmp_path):
    model = _model(ndim=3)
    img = _img((20, 40, 36))
    cfg = PredictConfig(tile_size=(16, 16, 16), device="cpu")
    ref = predict(model, img, config=cfg)
    with Outputs(tmp_path / "p.zarr", tmp_path / "l.zarr", n_classes=2, spatial=img.shape, model_ndim=3,
                 voxel_size=(4.0, 1.0, 1.0)) as outs:
        drain(predict_iter(model, img, config=cfg, sink=outs))
        outs.commit()
    np.testing.assert_array_equal(read_array(tmp_path / "p.zarr"), ref)
    np.testing.assert_array_equal(read_array(tmp_path / "l.zarr"), to_labels(ref))
    assert zarr.open_array(str(tmp_path / "p.zarr" / "0"), mode="r").chunks == (2, 20, 40, 36)
    assert read_image(tmp_path / "l.zarr").voxel_size == (4.0, 1.0, 1.0)


@pytest.mark.parametrize("suffix", [".npy", ".tif"])
def test_large_outputs_are_memory_mapped_and_equal(tmp_path, suffix):
    model = _model()
    img = _img((50, 64))
    ref = predict(model, img, config=CFG)
    with Outputs(tmp_path / f"p{suffix}", tmp_path / "l.tif", n_classes=2, spatial=img.shape, memmap_bytes=0) as outs:
        assert all(isinstance(a, np.memmap) for a in outs.arrays.values())
        drain(predict_iter(model, img, config=CFG, sink=outs))
        outs.commit()
    np.testing.assert_array_equal(read_array(tmp_path / f"p{suffix}"), ref)
    np.testing.assert_array_equal(read_array(tmp_path / "l.tif"), to_labels(ref))


def test_failed_prediction_leaves_no_temporaries_and_keeps_old_output(tmp_path):
    old = create_output(tmp_path / "p.zarr", (2, 8, 8), "f4", has_channel=True)
    old[:] = 7
    with pytest.raises(RuntimeError):
        with Outputs(tmp_path / "p.zarr", n_classes=2, spatial=(8, 8)) as outs:
            outs((slice(0, 8), slice(0, 8)), np.zeros((2, 8, 8), np.float32))
            raise RuntimeError("boom")
    assert zarr.open_group(str(tmp_path / "p.zarr"), mode="r")["0"][0, 0, 0] == 7
    assert [p.name for p in tmp_path.iterdir()] == ["p.zarr"]


def test_cli_zarr_in_zarr_out(tmp_path, model_dir):
    img = _img((1, 1, 1, 70, 90))
    _ome_zarr(tmp_path / "in.zarr", img, "tczyx", [1, 1, 1, 0.3, 0.3])
    rc = main(["predict", "--model", str(model_dir), "--image", str(tmp_path / "in.zarr"), "--out",
               str(tmp_path / "p.zarr"), "--labels-out", str(tmp_path / "l.zarr"), "--tile-size", "32", "32",
               "--device", "cpu"])
    assert rc == 0
    ref = predict(_model(), img[0, 0], config=CFG)  # z=1 stays a plane axis of the 2D model
    np.testing.assert_array_equal(read_array(tmp_path / "p.zarr"), ref)
    assert read_image(tmp_path / "l.zarr").voxel_size == (1.0, 0.3, 0.3)


# --------------------------------------------------------------------------- folders
def test_folder_keeps_going_past_a_bad_file(tmp_path, model_dir, capsys):
    d = tmp_path / "in"
    d.mkdir()
    imgs = {n: _img((40, 48), seed=i) for i, n in enumerate(["a", "c"])}
    for n, im in imgs.items():
        tifffile.imwrite(d / f"{n}.tif", im)
    (d / "b.tif").write_bytes(b"not a tiff")
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    rc = main(["predict", "--model", str(model_dir), "--image", str(d / "*.tif"), "--out", str(tmp_path / "out/"),
               "--labels-out", str(tmp_path / "lab"), "--tile-size", "32", "32", "--device", "cpu"])
    cap = capsys.readouterr()
    assert rc == 1
    assert "predicted 2 of 3" in cap.out and "b.tif" in cap.err and "failed (1)" in cap.err
    for n, im in imgs.items():
        ref = predict(_model(), im, config=CFG)
        np.testing.assert_array_equal(read_array(tmp_path / "out" / f"{n}_probabilities.tif"), ref)
        np.testing.assert_array_equal(read_array(tmp_path / "lab" / f"{n}_labels.tif"), to_labels(ref))
    assert not (tmp_path / "out" / "b_probabilities.tif").exists()
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before  # inputs untouched
    # an output folder that is the input folder would still never overwrite an input
    rc = main(["predict", "--model", str(model_dir), "--image", str(d), "--out", str(d) + "/", "--out-format", "zarr",
               "--tile-size", "32", "32", "--device", "cpu"])
    assert rc == 1 and {p.name: p.read_bytes() for p in d.iterdir() if p.suffix == ".tif"} == before


def test_folder_all_good_exits_zero(tmp_path, model_dir, capsys):
    d = tmp_path / "in"
    d.mkdir()
    for n in "xy":
        np.save(d / f"{n}.npy", _img((36, 40)))
    rc = main(["predict", "--model", str(model_dir), "--image", str(d / "*.npy"), "--out", str(tmp_path / "o"),
               "--out-format", "zarr", "--device", "cpu"])
    assert rc == 0 and sorted(p.name for p in (tmp_path / "o").iterdir()) == ["x_probabilities.zarr",
                                                                              "y_probabilities.zarr"]
    assert main(["predict", "--model", str(model_dir), "--image", str(tmp_path / "nothing*.tif"), "--out",
                 str(tmp_path / "o")]) == 2


# --------------------------------------------------------------------------- a cluster
def test_loopback_cluster_gives_the_local_numbers(tmp_path, model_dir, capsys):
    from distributed import Client, LocalCluster

    img = _img((150, 170))
    np.save(tmp_path / "img.npy", img)
    assert main(["predict", "--model", str(model_dir), "--image", str(tmp_path / "img.npy"), "--out",
                 str(tmp_path / "local.zarr"), "--labels-out", str(tmp_path / "local_l.zarr"), "--tile-size", "32", "32",
                 "--device", "cpu"]) == 0
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        rc = main(["predict", "--model", str(model_dir), "--image", str(tmp_path / "img.npy"), "--out",
                   str(tmp_path / "c.zarr"), "--labels-out", str(tmp_path / "c_l.zarr"), "--tile-size", "32", "32",
                   "--scheduler", cluster.scheduler_address, "--block-size", "64", "--device", "cpu"])
        assert rc == 0, capsys.readouterr().err
        # a worker builds the model once from the broadcast weights, however many blocks it runs
        keys = client.run(lambda: sorted(k for k in __import__("napari_unet.core.distributed",
                                                               fromlist=["_CACHE"])._CACHE if ":" not in k))
        assert len(keys) == 2 and all(len(v) <= 1 for v in keys.values()) and any(keys.values())
    local, dist = read_array(tmp_path / "local.zarr"), read_array(tmp_path / "c.zarr")
    np.testing.assert_array_equal(dist, local)  # same tiles, same order, same weights
    np.testing.assert_array_equal(read_array(tmp_path / "c_l.zarr"), read_array(tmp_path / "local_l.zarr"))
    assert json.loads((tmp_path / "c.zarr" / ".zattrs").read_text())["multiscales"][0]["version"] == "0.4"


def test_scheduler_needs_zarr_outputs_and_a_reachable_address(tmp_path, model_dir, capsys, monkeypatch):
    monkeypatch.setattr("napari_unet.core.distributed.CONNECT_TIMEOUT", "2s")
    np.save(tmp_path / "img.npy", _img((40, 40)))
    base = ["predict", "--model", str(model_dir), "--image", str(tmp_path / "img.npy"), "--device", "cpu"]
    assert main(base + ["--out", str(tmp_path / "p.tif"), "--scheduler", "tcp://127.0.0.1:1"]) == 2
    assert "zarr" in capsys.readouterr().err
    assert main(base + ["--out", str(tmp_path / "p.zarr"), "--scheduler", "tcp://127.0.0.1:1"]) == 2
    assert "Cannot reach the dask scheduler" in capsys.readouterr().err
    assert not (tmp_path / "p.zarr").exists() and not list(tmp_path.glob(".*nutmp*"))
