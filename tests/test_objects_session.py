"""Objects mode in the Qt-free session: names kept, objects head, decoding and measuring in the worker body."""

import numpy as np
import pytest
from conftest import tiny_train

from napari_unet.core import events as E
from napari_unet.core.synthetic import make_nuclei
from napari_unet.widgets.session import PredictInput, Session, TrainInput
from napari_unet.widgets.workers import predict_many


@pytest.fixture
def objects_data():
    syn = make_nuclei((48, 56), seed=1, radius=6, snr=20)
    labels = np.where(syn.instances > 0, syn.instances + 1, 1).astype(np.uint16)  # 1 background, 2.. objects
    labels[:, 28:] = 0  # the right half not annotated
    return syn.image, labels


def test_objects_session_trains_objects_head_and_finds_objects(objects_data):
    image, labels = objects_data
    s = Session()
    s.train_config = lambda budget, device: tiny_train(steps=4)
    found = []
    s.objects_found.connect(lambda name, inst, meas: found.append((name, inst, meas)))
    names = s.start_training([TrainInput("cells", image, labels, None)], ("background", "nucleus", "x"),
                             device="cpu", objects=True)
    assert names == ("background", "nucleus")  # object ids are not read as classes
    assert s.model.config.object_head == "distance" and s.model.config.class_names == names
    s.start_prediction([PredictInput("cells", image, None, scale=(0.5, 0.5))])  # an objects model: objects mode
    (name, inst, meas), = found
    assert name == "cells" and inst.shape == image.shape
    assert list(meas["label"]) == list(range(1, int(inst.max()) + 1))
    np.testing.assert_allclose(meas["area"], meas["pixels"] * 0.25)
    # the model continues in objects mode even when not asked
    s.start_training([TrainInput("cells", image, labels, None)], names, device="cpu")
    assert len(s.model.history) == 2 and s.model.history[-1]["inputs"]["objects"] is True
    assert s.model.config.object_head == "distance"


def test_semantic_model_refuses_objects_training_but_predicts_objects(objects_data):
    image, labels = objects_data
    s = Session()
    s.train_config = lambda budget, device: tiny_train(steps=3)
    errors = []
    s.error.connect(errors.append)
    s.start_training([TrainInput("cells", image, np.minimum(labels, 2), None)], ("background", "nucleus"),
                     device="cpu")
    assert s.model.config.object_head == "none"
    before = s.model
    s.start_training([TrainInput("cells", image, labels, None)], ("background", "nucleus"), device="cpu",
                     objects=True)
    assert len(errors) == 1 and "new model" in errors[0] and s.model is before
    # the worker body itself yields the objects: decoding never waits for the GUI thread
    results = [ev for ev in predict_many(s.model, [("cells", image, None)], objects=True, scales={})
               if isinstance(ev, E.PredictResult)]
    (res,) = results
    assert res.probabilities.shape == (2,) + image.shape and res.instances.shape == image.shape
    assert len(res.measurements["label"]) == int(res.instances.max())
