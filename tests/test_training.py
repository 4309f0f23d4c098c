import numpy as np
import pytest
import torch

from conftest import TINY, tiny_train
from napari_unet.config import ModelConfig
from napari_unet.core.checkpoint import load_model
from napari_unet.core.inference import predict, to_labels
from napari_unet.core.metrics import iou_per_class
from napari_unet.core.synthetic import make_nuclei
from napari_unet.core.training import Preview, Progress, Started, Validation, train, train_blocking
from napari_unet.core.util import drain
from napari_unet.errors import UserError


def _events(gen):
    events = []
    result = drain(gen, events.append)
    return events, result


def test_loss_falls_and_heldout_iou_passes(easy2d):
    syn, ann = easy2d
    events, result = _events(train(syn.image, syn.semantic, model_config=ModelConfig(depth=2, width=8),
                                   train_config=tiny_train(steps=120, batch_size=4, validate_every=20, lr=5e-3)))
    losses = [e.loss for e in events if isinstance(e, Progress)]
    assert len(losses) == 120
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:10])
    assert any(isinstance(e, Validation) for e in events)
    test = make_nuclei((64, 64), seed=9, radius=6, snr=20)
    iou = iou_per_class(to_labels(predict(result.model, test.image)), test.semantic, 2)[0]
    assert iou > 0.6, iou
    assert "best on held-out" in result.kept


def test_sparse_strokes_train(easy2d):
    syn, ann = easy2d
    result = train_blocking(syn.image, ann, model_config=ModelConfig(depth=2, width=8),
                            train_config=tiny_train(steps=100, batch_size=4, lr=5e-3, validate_every=25))
    pred = to_labels(predict(result.model, syn.image))
    assert iou_per_class(pred, syn.semantic, 2)[0] > 0.5


def test_seeded_runs_are_identical(easy2d):
    syn, ann = easy2d
    a = train_blocking(syn.image, ann, model_config=TINY, train_config=tiny_train(seed=3))
    b = train_blocking(syn.image, ann, model_config=TINY, train_config=tiny_train(seed=3))
    for (k, va), vb in zip(a.model.net.state_dict().items(), b.model.net.state_dict().values()):
        assert torch.equal(va, vb), k


def test_warm_start_continues_from_saved_weights(easy2d, tmp_path):
    syn, ann = easy2d
    first = train_blocking(syn.image, syn.semantic, model_config=TINY,
                           train_config=tiny_train(steps=40, lr=5e-3), out=tmp_path / "m")
    saved = load_model(tmp_path / "m")
    events, second = _events(train(syn.image, syn.semantic, init=tmp_path / "m",
                                   train_config=tiny_train(steps=1, lr=1e-12, val_fraction=0)))
    assert next(e for e in events if isinstance(e, Started)).warm_start
    params = dict(second.model.net.named_parameters())  # BN running stats move in one step; weights don't
    for k, v in saved.net.named_parameters():
        torch.testing.assert_close(params[k], v, atol=1e-6, rtol=1e-5)
    assert len(second.history) == len(first.history) + 1
    # a fresh model starts far worse than the warm one
    fresh_first = _events(train(syn.image, syn.semantic, model_config=TINY, train_config=tiny_train(steps=1)))[0]
    warm_first = [e for e in events if isinstance(e, Progress)][0]
    assert warm_first.loss < [e for e in fresh_first if isinstance(e, Progress)][0].loss


def test_stop_request_ends_training_and_keeps_weights(easy2d):
    syn, ann = easy2d
    steps = []
    result = train_blocking(syn.image, ann, model_config=TINY, train_config=tiny_train(steps=1000),
                            should_stop=lambda: len(steps) >= 3,
                            on_event=lambda e: steps.append(e) if isinstance(e, Progress) else None)
    assert result.steps == 3


def test_time_budget_stops(easy2d):
    syn, ann = easy2d
    result = train_blocking(syn.image, ann, model_config=TINY,
                            train_config=tiny_train(steps=None, time_budget=1.0))
    # the budget ends training (a generous bound: a loaded CI machine slows the last step and validation)
    assert 1.0 <= result.seconds < 10.0


def test_preview_events(easy2d):
    syn, ann = easy2d
    calls = []

    def source():
        calls.append(1)
        return ("plane-0", syn.image, None, None)

    events, _ = _events(train(syn.image, ann, model_config=TINY, train_config=tiny_train(steps=4),
                              preview=source, preview_every=0.0))
    previews = [e for e in events if isinstance(e, Preview)]
    assert len(previews) == 4 and previews[0].key == "plane-0"
    assert previews[0].probabilities.shape == (2, 64, 64)
    np.testing.assert_allclose(previews[0].probabilities.sum(0), 1, atol=1e-4)


def test_3d_training_and_prediction():
    syn = make_nuclei((16, 32, 32), seed=0, radius=5, snr=20)
    result = train_blocking(syn.image, syn.semantic, model_config=ModelConfig(ndim=3, depth=2, width=4),
                            train_config=tiny_train(steps=3, patch_size=(16, 16, 16)))
    probs = predict(result.model, syn.image)
    assert probs.shape == (2, 16, 32, 32) and np.isfinite(probs).all()


def test_2d_model_on_stack_predicts_plane_by_plane(easy2d):
    syn, ann = easy2d
    result = train_blocking(syn.image, ann, model_config=TINY, train_config=tiny_train(steps=2))
    stack = np.stack([syn.image, syn.image[::-1]])
    probs = predict(result.model, stack)
    assert probs.shape == (2, 2, 64, 64)
    np.testing.assert_allclose(probs[:, 1], predict(result.model, syn.image[::-1]), atol=1e-4)


def test_multichannel_training(easy2d):
    syn, ann = easy2d
    img = np.stack([syn.image, syn.image * 0.5], axis=-1)  # YXC
    result = train_blocking(img, ann, model_config=TINY, train_config=tiny_train(steps=2), channel_axis=-1)
    assert result.model.config.in_channels == 2
    with pytest.raises(UserError, match="trained on 2"):
        predict(result.model, syn.image)


def test_three_classes(easy2d):
    syn, ann = easy2d
    lab = syn.semantic.astype(np.uint8).copy()
    lab[:, :10][lab[:, :10] == 2] = 3
    result = train_blocking(syn.image, lab, model_config=TINY, train_config=tiny_train(steps=2))
    assert result.model.config.n_classes == 3
    assert predict(result.model, syn.image).shape == (3, 64, 64)


def test_tiny_image_is_padded(rng):
    img = rng.random((10, 12)).astype(np.float32)
    lab = np.ones((10, 12), np.uint8)
    lab[3:6, 3:6] = 2
    result = train_blocking(img, lab, model_config=TINY, train_config=tiny_train(steps=2))
    assert predict(result.model, img).shape == (2, 10, 12)


def test_nan_and_constant_images_never_give_nan(easy2d):
    syn, ann = easy2d
    img = syn.image.copy()
    img[:5, :5] = np.nan
    img[10, 10] = np.inf
    result = train_blocking(img, ann, model_config=TINY, train_config=tiny_train(steps=2))
    assert np.isfinite(predict(result.model, img)).all()
    const = np.full((32, 32), 3.0, np.float32)
    assert np.isfinite(predict(result.model, const)).all()


@pytest.mark.parametrize("make,match", [
    (lambda s, a: (s.image, a[:32]), "must match"),
    (lambda s, a: (s.image, np.zeros_like(a)), "no annotated pixel|No plane"),
    (lambda s, a: (s.image, np.where(a > 0, 2, 0)), "Only label 2"),
    (lambda s, a: (s.image, a.astype(float) + 0.5 * (a > 0)), "fractional"),
    (lambda s, a: (s.image, a.astype(np.int16) - 1), "negative"),
    (lambda s, a: (s.image[None, None, None, None], a[None, None, None, None]), "at most 4"),
])
def test_bad_training_input_is_refused_and_labels_untouched(easy2d, make, match):
    syn, ann = easy2d
    img, lab = make(syn, ann)
    before = np.array(lab, copy=True)
    with pytest.raises(UserError, match=match):
        train_blocking(img, lab, model_config=TINY, train_config=tiny_train(steps=2))
    np.testing.assert_array_equal(lab, before)


def test_missing_device_is_an_error(easy2d):
    syn, ann = easy2d
    name = "cuda:99" if torch.cuda.is_available() else "cuda"
    with pytest.raises(UserError, match="not available|does not exist"):
        train_blocking(syn.image, ann, model_config=TINY, train_config=tiny_train(device=name))


def test_unwritable_output_is_refused_before_training(easy2d, tmp_path):
    syn, ann = easy2d
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="is a file|Cannot create"):
        train_blocking(syn.image, ann, model_config=TINY, train_config=tiny_train(), out=blocker)
    with pytest.raises(UserError, match="Cannot create"):
        train_blocking(syn.image, ann, model_config=TINY, train_config=tiny_train(), out=blocker / "sub")


def test_warm_start_trains_at_a_share_of_the_learning_rate(monkeypatch, bands):
    """A retrain from a model adjusts it (lr x warm_lr) instead of restarting at the full rate."""
    seen = []
    real_step = torch.optim.AdamW.step

    def step(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    image, labels = bands
    tc = tiny_train(steps=30, lr=1e-3, schedule="constant", val_fraction=0.0)
    first = train_blocking(image, labels, model_config=TINY, train_config=tc)
    fresh = max(seen)
    seen.clear()
    train_blocking(image, labels, train_config=tc.replace(warm_lr=0.25), init=first.model)
    assert fresh == pytest.approx(1e-3) and max(seen) == pytest.approx(2.5e-4)
    with pytest.raises(UserError, match="warm_lr"):
        tc.replace(warm_lr=0.0)
