"""Where to annotate next: uncertainty maps, TTA disagreement, ranked regions, suspect strokes."""

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from conftest import TINY
from napari_unet.config import ModelConfig, PredictConfig
from napari_unet.core.checkpoint import Model
from napari_unet.core.inference import predict
from napari_unet.core.synthetic import make_nuclei, scribbles
from napari_unet.core.uncertainty import rank_regions, suspect_strokes, tta_predict, uncertainty_map


def _mixed_probs():
    """Object probability 0.02 left, 0.98 right, and a band in the middle where the classes mix."""
    p1 = np.full((64, 96), 0.02, np.float32)
    p1[:, 64:] = 0.98
    rng = np.random.default_rng(0)
    p1[:, 40:56] = rng.uniform(0.35, 0.65, (64, 16))
    return np.stack([1 - p1, p1]), (slice(None), slice(40, 56))


@pytest.mark.parametrize("kind", ["entropy", "margin"])
def test_uncertainty_high_where_classes_mix_low_elsewhere(kind):
    probs, band = _mixed_probs()
    u = uncertainty_map(probs, kind)
    assert u.shape == (64, 96) and u.dtype == np.float32
    assert u[band].mean() > 0.8
    outside = np.ones(u.shape, bool)
    outside[band] = False
    assert u[outside].max() < 0.2


def test_ranked_tiles_put_the_mixed_band_first_with_centres_in_it():
    probs, _ = _mixed_probs()
    regions = rank_regions(uncertainty_map(probs), tile=32, top=4)
    assert len(regions) == 4
    assert [r.score for r in regions] == sorted((r.score for r in regions), reverse=True)
    for r in regions[:2]:  # the two tiles holding the band (x 32..63)
        assert r.slices[1] == slice(32, 64) and r.kind == "tile"
        assert 40 <= r.centre[1] <= 56
    assert regions[0].score > 3 * regions[-1].score


def test_ranked_planes_in_a_stack_and_painted_pixels_count_as_sure():
    probs, _ = _mixed_probs()
    sure = np.stack([np.full((64, 96), 0.99, np.float32), np.full((64, 96), 0.01, np.float32)])
    stack = np.stack([sure, probs, sure], axis=1)  # (classes, Z, Y, X): the middle plane is unsure
    u = uncertainty_map(stack)
    regions = rank_regions(u)
    assert [r.kind for r in regions] == ["plane"] * 3
    assert regions[0].centre[0] == 1 and 40 <= regions[0].centre[2] <= 56
    painted = np.zeros(u.shape, np.uint8)
    painted[1] = 1  # the user painted the whole middle plane: nothing left to ask there
    assert rank_regions(u, annotated=painted)[0].centre[0] != 1


def _truth_probs(semantic):
    p1 = np.clip(ndi.gaussian_filter((semantic == 2).astype(np.float32), 1.0), 0.01, 0.99)
    return np.stack([1 - p1, p1])


def test_suspect_strokes_find_a_planted_wrong_stroke_only():
    syn = make_nuclei((96, 96), seed=3, radius=8, snr=20)
    ann = scribbles(syn.semantic, seed=4, width=2).astype(np.int64)
    ids, n = ndi.label(syn.semantic == 2)
    big = np.argmax(np.bincount(ids.ravel())[1:]) + 1
    inner = ndi.binary_erosion(ids == big, iterations=3)
    cy, cx = np.argwhere(inner)[len(np.argwhere(inner)) // 2]
    planted = np.zeros_like(inner)
    planted[cy, max(0, cx - 3):cx + 4] = True
    planted &= inner
    ann[ndi.binary_dilation(planted)] = 0  # on its own, not touching another stroke
    ann[planted] = 1  # "background" painted inside a nucleus: a slipped brush
    found = suspect_strokes(_truth_probs(syn.semantic), ann, confidence=0.9)
    assert len(found) == 1, [s.describe() for s in found]
    s = found[0]
    assert s.label == 1 and s.predicted == 2 and s.contradicted == s.pixels == planted.sum()
    assert s.slices[0].start <= cy < s.slices[0].stop and abs(s.centre[0] - cy) < 1
    # correct strokes over the true boundary are not suspect: only the planted one was found


class _Pointwise(torch.nn.Module):
    """Logits (x, -x) from channel 0: flip-equivariant, so the views agree exactly once flipped back."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return torch.cat([x[:, :1], -x[:, :1]], 1) * 4 + self.dummy


@pytest.mark.parametrize("channel_axis", [None, -1, 0])
def test_tta_views_are_flipped_back(channel_axis):
    rng = np.random.default_rng(0)
    img = ndi.gaussian_filter(rng.normal(0, 1, (40, 56)), 2)  # asymmetric
    img[:10, :20] += 3
    if channel_axis is not None:
        img = np.stack([img, rng.normal(0, 1, img.shape)], axis=channel_axis)
    model = Model(net=_Pointwise(), config=ModelConfig(depth=1, width=2, in_channels=1 if channel_axis is None
                                                       else 2))
    cfg = PredictConfig(device="cpu", tile_size=(32, 32))
    mean, dis = tta_predict(model, img, channel_axis=channel_axis, config=cfg)
    plain = predict(model, img, channel_axis=channel_axis, config=cfg)
    assert mean.shape == plain.shape == (2, 40, 56)
    np.testing.assert_allclose(mean, plain, atol=1e-5)
    assert dis.max() < 1e-5


def test_tta_disagreement_of_a_real_net_is_in_range():
    syn = make_nuclei((48, 48), seed=2, radius=6)
    model = Model.new(TINY, seed=0)
    mean, dis = tta_predict(model, syn.image, config=PredictConfig(device="cpu"))
    assert mean.shape == (2, 48, 48) and dis.shape == (48, 48)
    np.testing.assert_allclose(mean.sum(0), 1, atol=1e-4)
    assert 0 <= dis.min() and dis.max() <= 1 and dis.mean() > 0
