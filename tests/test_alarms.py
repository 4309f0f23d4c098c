"""Sanity alarms: notices for few painted pixels, worsening validation, one-class predictions, odd images."""

import numpy as np

from napari_unet.config import ModelConfig
from napari_unet.core.alarms import (few_painted, far_from_training, image_statistics, one_class,
                                     summarise_statistics, validation_worsening, check_image)
from napari_unet.core.checkpoint import Model
from napari_unet.core.synthetic import make_nuclei


def test_few_painted_names_the_thin_class_only():
    lab = np.zeros((64, 64), np.uint8)
    lab[:20, :20] = 1  # 400 px background
    lab[30, 30:40] = 2  # 10 px of the object class
    msgs = few_painted([lab], ("background", "nucleus"))
    assert len(msgs) == 1 and "'nucleus' (label 2)" in msgs[0] and "10 painted" in msgs[0]
    lab[30:40, 30:40] = 2
    assert few_painted([lab], ("background", "nucleus")) == []
    # objects mode: ids 2.. are one class, counted together
    obj = np.zeros((64, 64), np.uint16)
    obj[:20, :20] = 1
    for k in range(2, 12):
        obj[40 + k, 10:16] = k  # 6 px each, 60 in all
    assert few_painted([obj], objects=True) == []
    assert len(few_painted([obj])) == 10


def test_validation_worsening_after_a_long_stretch_only():
    rising = [{"val_iou": 0.5 + 0.01 * i, "val_loss": 1 - 0.01 * i} for i in range(10)]
    assert validation_worsening(rising) == []
    falling = rising + [{"val_iou": 0.55 - 0.01 * i, "val_loss": 0.95 + 0.01 * i} for i in range(8)]
    msg = validation_worsening(falling, patience=8)
    assert len(msg) == 1 and "last 8 validations" in msg[0]
    assert validation_worsening(falling[:-1], patience=8) == []  # one recent validation was still the best
    assert len(validation_worsening(falling, patience=8, use_loss=True)) == 1
    assert validation_worsening(falling[:5], patience=8) == []  # too short to tell


def test_one_class_from_labels_and_probabilities():
    lab = np.ones((32, 32), np.uint8)
    assert "all 'background'" in one_class(lab, ("background", "cell"))[0]
    lab[5:10, 5:10] = 2
    assert one_class(lab) == []
    p = np.zeros((2, 32, 32), np.float32)
    p[1] = 0.9
    p[0] = 0.1
    assert "all 'label 2'" in one_class(p)[0]


def test_image_far_from_training_statistics():
    train = [make_nuclei((96, 96), seed=s, radius=7).image for s in range(3)]
    stats = [image_statistics(im) for im in train]
    summary = summarise_statistics(stats)
    assert summary["n_images"] == 3 and set(summary["channels"][0]) >= {"mean", "noise", "p50"}
    like = make_nuclei((128, 128), seed=7, radius=7).image
    assert far_from_training(summary, image_statistics(like)) == []
    # a dense, bright, noisy image (an inverted one, say brightfield) is flagged
    odd = -make_nuclei((96, 96), seed=8, radius=7, snr=2).image
    msgs = far_from_training(summary, image_statistics(odd))
    assert len(msgs) == 1 and "unlike the training images" in msgs[0]
    # through the model's stored summary
    model = Model.new(ModelConfig(depth=1, width=2))
    assert check_image(model, odd) == []  # no statistics stored: no opinion
    model.meta["image_stats"] = summary
    assert check_image(model, odd) == msgs
    assert check_image(model, like) == []


def test_statistics_per_channel():
    rng = np.random.default_rng(0)
    img = np.stack([make_nuclei((64, 64), seed=1).image, rng.normal(0, 1, (64, 64))], axis=-1)
    stats = image_statistics(img, channel_axis=-1)
    assert len(stats) == 2 and stats[0] != stats[1]


def test_training_stores_statistics_and_prediction_warns_on_an_odd_image(tmp_path):
    from conftest import TINY, tiny_train
    from napari_unet.core.checkpoint import load_model
    from napari_unet.core.inference import predict_iter
    from napari_unet.core.synthetic import scribbles
    from napari_unet.core.training import train_blocking
    from napari_unet.core.util import Notice, drain

    syn = make_nuclei((64, 64), seed=1, radius=6)
    result = train_blocking(syn.image, scribbles(syn.semantic, seed=2, width=2), model_config=TINY,
                            train_config=tiny_train(steps=2), out=tmp_path / "m")
    model = load_model(tmp_path / "m")
    assert model.meta["image_stats"]["n_images"] == 1 == result.model.meta["image_stats"]["n_images"]

    def notices(image):
        got = []
        drain(predict_iter(model, image), lambda e: got.append(e.message) if isinstance(e, Notice) else None)
        return got

    assert notices(make_nuclei((64, 64), seed=5, radius=6).image) == []
    odd = notices(-make_nuclei((64, 64), seed=8, radius=6, snr=2).image)
    assert len(odd) == 1 and "unlike the training images" in odd[0]
    # a warm start adds its images to the stored range
    again = train_blocking(syn.image, scribbles(syn.semantic, seed=2, width=2), init=model,
                           train_config=tiny_train(steps=1))
    assert again.model.meta["image_stats"]["n_images"] == 2
    assert model.meta["image_stats"]["n_images"] == 1  # the model passed in is not altered
