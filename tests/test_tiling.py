import numpy as np
import pytest
import torch

from napari_unet.config import ModelConfig, PredictConfig
from napari_unet.core.checkpoint import Model
from napari_unet.core.inference import predict
from napari_unet.core.tiling import blend_weights, tile_origins, tile_slices, tiled_apply
from napari_unet.core.util import drain


@pytest.mark.parametrize("size,tile,overlap", [(100, 32, 0.25), (33, 32, 0.5), (32, 32, 0.25), (10, 32, 0.25),
                                               (257, 64, 0.0)])
def test_tile_origins_cover_exactly(size, tile, overlap):
    starts = tile_origins(size, tile, overlap)
    covered = np.zeros(size, bool)
    for s in starts:
        assert 0 <= s and (s + min(tile, size)) <= size
        covered[s:s + tile] = True
    assert covered.all()
    assert starts == sorted(set(starts))


def test_blend_weights_positive_and_peaked():
    w = blend_weights((16, 20), 0.5)
    assert w.min() > 0 and w.max() == 1.0
    assert w[0, 0] < w[8, 10]


@pytest.mark.parametrize("shape,tile", [((37, 53), (16, 16)), ((9, 17, 23), (8, 8, 8)), ((40, 40), (64, 64))])
def test_tiled_apply_round_trip_is_exact_for_pointwise_fn(shape, tile):
    rng = np.random.default_rng(0)
    img = rng.normal(size=(2,) + shape).astype(np.float32)

    def read(region):
        return img[(slice(None),) + region]

    out = drain(tiled_apply(read, shape, lambda b: b * 3 + 1, 2, tile, overlap=0.3, batch_size=3))
    assert out.shape == (2,) + shape and out.dtype == np.float32
    np.testing.assert_allclose(out, img * 3 + 1, rtol=1e-5, atol=1e-5)


def test_tiled_prediction_matches_untiled_small_net():
    torch.manual_seed(0)
    model = Model.new(ModelConfig(depth=2, width=4))
    model.net.eval()
    img = np.random.default_rng(0).normal(size=(70, 90)).astype(np.float32)
    whole = predict(model, img, config=PredictConfig(tile_size=(128, 128), device="cpu"))
    tiled = predict(model, img, config=PredictConfig(tile_size=(32, 32), overlap=0.5, device="cpu"))
    assert whole.shape == tiled.shape == (2, 70, 90)
    # one tile covering the image is the plain forward pass
    from napari_unet.core.data import ImageView, compute_percentiles, normalize
    x = normalize(img[None], compute_percentiles(ImageView(img), 1.0, 99.8))
    with torch.no_grad():
        direct = torch.softmax(model.net(torch.from_numpy(x)[None]), 1)[0].numpy()
    np.testing.assert_allclose(whole, direct, atol=1e-5)
    # tiles only differ near their borders (zero padding inside the network)
    assert np.abs(whole - tiled).mean() < 0.02
    assert (whole.argmax(0) == tiled.argmax(0)).mean() > 0.97


def test_tile_slices_count():
    assert len(tile_slices((64, 64), (32, 32), 0.0)) == 4


def test_prediction_reads_dask_and_zarr_tile_by_tile(tmp_path):
    import dask.array as da
    import zarr

    torch.manual_seed(0)
    model = Model.new(ModelConfig(depth=2, width=4))
    model.net.eval()
    img = np.random.default_rng(1).normal(size=(3, 40, 50)).astype(np.float32)
    cfg = PredictConfig(tile_size=(32, 32), device="cpu")
    ref = predict(model, img, config=cfg)
    lazy = da.from_array(img, chunks=(1, 20, 25))
    np.testing.assert_allclose(predict(model, lazy, config=cfg), ref, atol=1e-5)
    z = zarr.open(str(tmp_path / "img.zarr"), mode="w", shape=img.shape, chunks=(1, 16, 16), dtype="f4")
    z[:] = img
    reads = []

    class Spy:
        shape, dtype = z.shape, z.dtype

        def __getitem__(self, idx):
            reads.append(idx)
            return z[idx]

    np.testing.assert_allclose(predict(model, Spy(), config=cfg), ref, atol=1e-5)
    # apart from the strided percentile sample, every read is one tile of one plane
    tiles = [r for r in reads if all(not isinstance(s, slice) or s.step is None for s in r)]
    assert tiles and all(isinstance(r[0], int) and r[1].stop - r[1].start <= 32 for r in tiles)
