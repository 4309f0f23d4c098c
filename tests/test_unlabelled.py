"""Losses on unannotated pixels, validation that says when it saturates, and test-time augmentation."""

import numpy as np
import pytest
import torch

from conftest import TINY, tiny_train
from napari_unet.config import ModelConfig, PredictConfig, TrainConfig
from napari_unet.core.checkpoint import Model
from napari_unet.core.inference import predict
from napari_unet.core.losses import consistency_loss, potts_loss, pseudo_label_loss
from napari_unet.core.training import SATURATED_IOU, Validation, train
from napari_unet.core.util import drain
from napari_unet.errors import UserError


def _edge_image(n=32, edge=16):
    img = torch.zeros(1, 1, n, n)
    img[..., edge:] = 1.0  # a vertical step edge at column ``edge``
    return img


def _hard_probs(n, edge):
    fg = torch.zeros(1, 1, n, n)
    fg[..., edge:] = 1.0
    return torch.cat([1 - fg, fg], 1)


def test_potts_prefers_segmentation_aligned_with_the_image_edge():
    img = _edge_image()
    mask = torch.ones(1, 32, 32, dtype=torch.bool)
    aligned = potts_loss(_hard_probs(32, 16), img, mask)
    shifted = potts_loss(_hard_probs(32, 20), img, mask)
    assert float(aligned) < 0.1 * float(shifted), (float(aligned), float(shifted))
    # and a confident segmentation with no boundary at all costs nothing
    assert float(potts_loss(_hard_probs(32, 0), img, mask)) == pytest.approx(0.0, abs=1e-6)


def test_potts_ignores_annotated_pixels():
    img = _edge_image()
    mask = torch.ones(1, 32, 32, dtype=torch.bool)
    mask[:, :, :24] = False  # columns 0..23 annotated: the cross-entropy's business
    base = potts_loss(_hard_probs(32, 16), img, mask)
    # move the boundary about inside the annotated block, more than the largest offset (8) from
    # any unannotated pixel: the regulariser does not change
    other = _hard_probs(32, 16).clone()
    other[..., 4:10] = torch.tensor([0.3, 0.7]).view(1, 2, 1, 1)
    assert float(potts_loss(other, img, mask)) == pytest.approx(float(base), abs=1e-7)
    # everything annotated: nothing to regularise
    assert float(potts_loss(_hard_probs(32, 20), img, torch.zeros(1, 32, 32, dtype=torch.bool))) == 0.0
    # its gradient reaches unannotated pixels only (those within reach of an unannotated one)
    p = _hard_probs(32, 20).requires_grad_(True)
    potts_loss(p, img, mask).backward()
    assert float(p.grad[..., :8].abs().max()) == 0.0
    assert float(p.grad[..., 24:].abs().max()) > 0.0


def test_consistency_and_pseudo_labels_use_unannotated_pixels_only():
    s = torch.softmax(torch.randn(1, 2, 8, 8), 1)
    t = torch.softmax(torch.randn(1, 2, 8, 8), 1)
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    assert float(consistency_loss(s, t, mask)) == 0.0
    mask[..., :4] = True
    assert float(consistency_loss(s, t, mask)) > 0.0
    logits = torch.randn(1, 2, 8, 8)
    sure = torch.zeros(1, 2, 8, 8)
    sure[:, 1] = 1.0
    assert float(pseudo_label_loss(logits, sure, mask, 0.9)) == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits, torch.ones(1, 8, 8, dtype=torch.long),
                                                reduction="none")[mask].mean()), rel=1e-5)
    unsure = torch.full((1, 2, 8, 8), 0.5)
    assert float(pseudo_label_loss(logits, unsure, mask, 0.9)) == 0.0


@pytest.mark.parametrize("terms", [dict(regularizer=1.0), dict(consistency=1.0, pseudo_labels=1.0)])
def test_training_with_unlabelled_terms_runs_and_is_seeded(easy2d, terms):
    syn, ann = easy2d
    tc = tiny_train(steps=6, unlabelled_rampup=0.0, **terms)
    a = drain(train(syn.image, ann, model_config=TINY, train_config=tc))
    b = drain(train(syn.image, ann, model_config=TINY, train_config=tc))
    plain = drain(train(syn.image, ann, model_config=TINY, train_config=tiny_train(steps=6)))
    wa, wb, wp = (next(iter(r.model.net.state_dict().values())) for r in (a, b, plain))
    assert torch.equal(wa, wb)
    assert not torch.equal(wa, wp)  # the extra terms changed the training


def test_bad_unlabelled_settings_are_user_errors():
    with pytest.raises(UserError, match="regularizer"):
        TrainConfig(regularizer=-1)
    with pytest.raises(UserError, match="pseudo_threshold"):
        TrainConfig(pseudo_threshold=1.5)


def test_saturated_validation_switches_to_the_loss(easy2d):
    syn, ann = easy2d
    # strokes away from edges on a clean image: all held-out stroke pixels are right within a few dozen steps
    # (seed 1: its held-out blocks hold both classes, so the IoU is defined)
    events = []
    result = drain(train(syn.image, ann, model_config=ModelConfig(depth=2, width=8),
                         train_config=tiny_train(steps=60, batch_size=4, lr=5e-3, validate_every=10, seed=1)), events.append)
    vals = [e for e in events if isinstance(e, Validation)]
    assert vals and vals[0].metric == "held-out IoU" and not vals[0].saturated
    sat = [v for v in vals if v.saturated]
    assert sat, [round(v.iou, 3) for v in vals]
    assert all(v.metric == "held-out loss" and v.score == v.loss for v in sat)
    assert max(v.iou for v in vals) >= SATURATED_IOU
    assert "saturated" in result.kept and "IoU 1.000" not in result.kept
    assert "val-loss" in sat[-1].describe()


class _Equivariant(torch.nn.Module):
    """A pointwise net (1x1 convolution): equivariant to every flip and rotation."""

    def __init__(self, ndim):
        super().__init__()
        self.conv = (torch.nn.Conv2d if ndim == 2 else torch.nn.Conv3d)(1, 2, 1)

    def forward(self, x):
        return self.conv(x)


@pytest.mark.parametrize("ndim,shape", [(2, (40, 40)), (2, (24, 40)), (3, (8, 16, 24))])
def test_tta_equals_plain_prediction_for_an_equivariant_net(ndim, shape):
    model = Model.new(ModelConfig(ndim=ndim, depth=1, width=2), seed=0)
    model.net = _Equivariant(ndim)
    img = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    tile = (16,) * ndim
    plain = predict(model, img, config=PredictConfig(device="cpu", tile_size=tile, tta=False))
    tta = predict(model, img, config=PredictConfig(device="cpu", tile_size=tile, tta=True))
    np.testing.assert_allclose(tta, plain, atol=1e-5)


def test_tta_differs_for_a_net_that_is_not_equivariant():
    model = Model.new(ModelConfig(ndim=2, depth=1, width=2), seed=0)
    img = np.random.default_rng(0).normal(size=(32, 32)).astype(np.float32)
    plain = predict(model, img, config=PredictConfig(device="cpu", tta=False))
    tta = predict(model, img, config=PredictConfig(device="cpu", tta=True))
    assert np.abs(tta - plain).max() > 1e-3
