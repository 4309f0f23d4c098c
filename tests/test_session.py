"""The widget's session without Qt or a viewer: the same generators run on the calling thread."""

import subprocess
import sys

import numpy as np
import pytest
from conftest import record_tta, tiny_train

from napari_unet.core import events as E
from napari_unet.core.synthetic import make_nuclei, scribbles
from napari_unet.errors import UserError
from napari_unet.widgets.session import PredictInput, Session, State, TrainInput, describe_model


@pytest.fixture
def data():
    syn = make_nuclei((48, 56), seed=1, radius=6, snr=20)
    return syn.image, scribbles(syn.semantic, seed=2, width=2)


def record(session):
    got = {"states": [], "events": [], "trained": [], "predicted": [], "errors": []}
    session.state_changed.connect(got["states"].append)
    session.event.connect(got["events"].append)
    session.trained.connect(got["trained"].append)
    session.predicted.connect(lambda name, p, lab: got["predicted"].append((name, p, lab)))
    session.error.connect(got["errors"].append)
    return got


def small(session):
    session.train_config = lambda budget, device: tiny_train(steps=6)
    return session


def test_session_module_needs_no_qt():
    code = ("import sys, napari_unet.widgets.session\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('qtpy', 'PyQt5', 'PyQt6', 'superqt', 'napari')]\n"
            "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_training_states_preview_model_and_prediction(data):
    image, labels = data
    s = small(Session())
    s.preview_every = 0.0
    got = record(s)
    names = s.start_training([TrainInput("cells", image.copy(), labels.copy(), None)], ("background", "nucleus"),
                             device="cpu")
    assert names == ("background", "nucleus")
    assert got["states"] == [State.TRAINING, State.IDLE]
    previews = [e for e in got["events"] if isinstance(e, E.Preview)]
    assert previews and previews[0].key == () and previews[0].probabilities.shape == (2, 48, 56)
    assert got["trained"] and s.model is got["trained"][0].model
    assert s.model.config.class_names == ("background", "nucleus") and "2=nucleus" in s.model_info
    s.start_prediction([PredictInput("cells", image, None)])
    (name, probs, lab), = got["predicted"]
    assert name == "cells" and probs.shape == (2, 48, 56) and set(np.unique(lab)) <= {1, 2}
    # the next training measures how much the user corrected that prediction
    s.start_training([TrainInput("cells", image, lab, None)], ("background", "nucleus"), device="cpu")
    assert s.rounds and s.rounds[-1]["dice"] == pytest.approx(1.0)


def test_stop_from_an_event_ends_training_early(data):
    image, labels = data
    s = Session()
    s.train_config = lambda budget, device: tiny_train(steps=500)
    got = record(s)
    s.event.connect(lambda ev: s.stop() if isinstance(ev, E.Progress) and ev.step == 3 else None)
    s.start_training([TrainInput("cells", image, labels, None)], ("background", "object"), device="cpu")
    assert got["states"] == [State.TRAINING, State.STOPPING, State.IDLE]
    assert s.model.history[-1]["steps"] == 3


def test_painted_classes_and_names_agree(data):
    image, labels = data
    s = Session()
    lab3 = labels.copy()
    lab3[:3, :3] = 3
    names, notice = s.resolve_classes(("background", "object"), [lab3])
    assert names == ("background", "object", "label 3") and "Label(s) 3" in notice
    assert s.resolve_classes(("background", "object"), [labels]) == (("background", "object"), None)
    names, notice = s.resolve_classes(("background", "object", "debris"), [labels])
    assert names == ("background", "object") and "debris (label 3) named but not painted" in notice


def test_failures_report_and_leave_the_session_ready(data):
    image, labels = data
    s = small(Session())
    got = record(s)
    one_class = np.where(labels > 0, 2, 0).astype(labels.dtype)
    s.start_training([TrainInput("cells", image, one_class, None)], ("background", "object"), device="cpu")
    assert s.state == State.FAILED and not s.state.busy and "Only label 2" in got["errors"][-1]
    assert s.guard(s.start_prediction, [PredictInput("cells", image, None)]) is None
    assert "no model yet" in got["errors"][-1]
    with pytest.raises(UserError, match="does not exist"):
        s.load("/nonexistent/model")


def test_load_refuses_a_malformed_history_before_swapping(data, tmp_path):
    import json

    image, labels = data
    s = small(Session())
    s.start_training([TrainInput("cells", image, labels, None)], ("background", "object"), device="cpu")
    s.save(tmp_path / "m")
    with pytest.raises(UserError, match="already holds a napari-unet model"):
        s.save(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["history"][-1]["steps"] = "many"
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    model, info = s.model, s.model_info
    with pytest.raises(UserError, match="malformed"):
        s.load(tmp_path / "m")
    assert s.model is model and s.model_info == info == describe_model(model)


def test_shutdown_drops_late_events(data):
    image, labels = data
    s = small(Session())
    got = record(s)
    s.event.connect(lambda ev: s.shutdown() if isinstance(ev, E.Started) else None)
    s.start_training([TrainInput("cells", image, labels, None)], ("background", "object"), device="cpu")
    assert s.closed and s.model is None and not got["trained"]
    assert [type(e) for e in got["events"]] == [E.Started]


@pytest.mark.parametrize("choice", [None, True, False])
def test_prediction_passes_the_tta_choice_to_the_core(data, monkeypatch, choice):
    import napari_unet.widgets.workers as W
    from napari_unet.config import ModelConfig
    from napari_unet.core.checkpoint import Model

    seen = record_tta(monkeypatch, W)
    image, _ = data
    s = Session()
    s.model = Model.new(ModelConfig(ndim=2, depth=1, width=2), seed=0)
    got = record(s)
    s.start_prediction([PredictInput("cells", image, None)], tta=choice)
    assert seen == [choice] and got["predicted"][0][1].shape == (2,) + image.shape
