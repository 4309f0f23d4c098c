"""Continuous training through the widget's session and panels: edits reach the running training,
the preview follows, the model is autosaved, rounds are stored, the uncertainty layer and lists."""

import numpy as np
import pytest
from conftest import TINY, tiny_train

from napari_unet.core import events as E
from napari_unet.core.checkpoint import load_model
from napari_unet.core.inference import to_labels
from napari_unet.widgets.session import PredictInput, Session, State, TrainInput


def _tiny(session, steps):
    session.model_config = lambda names, ndim, device: None if session.model else TINY.replace(class_names=names)
    session.train_config = lambda budget, device: tiny_train(steps=steps, lr=1e-2, val_fraction=0)
    session.preview_every = 0.0
    return session


def test_session_hands_a_stroke_to_continuous_training_and_autosaves(bands, tmp_path):
    img, lab = bands
    s = _tiny(Session(), steps=160)
    s.autosave_dir = str(tmp_path / "auto")
    flipped = lab.copy()
    flipped[4:28, 20:28] = 2
    previews, handed = {}, []

    def on_event(ev):
        if isinstance(ev, E.Progress) and ev.step == 60:
            handed.append(s.annotations_edited("bands", flipped))
        if isinstance(ev, E.Preview):
            previews[ev.step] = to_labels(ev.probabilities)
    s.event.connect(on_event)
    assert not s.annotations_edited("bands", flipped)  # nothing running: nothing handed over
    s.start_training([TrainInput("bands", img, lab.copy(), None)], ("background", "object"), device="cpu",
                     continuous=True)
    assert handed == [True] and s.state == State.IDLE and s.mailbox is None
    medium = (slice(None), slice(18, 30))
    assert (previews[60][medium] == 1).mean() > 0.9 and (previews[160][medium] == 2).mean() > 0.9
    saved = load_model(tmp_path / "auto")  # autosaved (and saved at the end) into the folder shown
    assert saved.history[-1]["inputs"]["annotation_edits"] == 1
    # a round: predict, correct, train again: its Dice is stored in the model folder's history
    s.start_prediction([PredictInput("bands", img, None)])
    s.train_config = lambda budget, device: tiny_train(steps=2, val_fraction=0)
    s.start_training([TrainInput("bands", img, flipped, None)], ("background", "object"), device="cpu")
    assert len(s.rounds) == 1
    rounds = load_model(tmp_path / "auto").history[-1]["inputs"]["rounds"]
    assert rounds == [{"image": "bands", "dice": pytest.approx(s.rounds[0]["dice"])}] and rounds[0]["dice"] > 0.5


@pytest.fixture
def live(make_napari_viewer, tmp_path, bands):
    from napari_unet.widgets.main import UNetWidget

    viewer = make_napari_viewer()
    img, lab = bands
    image = viewer.add_image(img, name="bands")
    widget = UNetWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.annotate.image.value = image
    ann = widget.annotate.new_annotations()
    ann.data[...] = lab
    ann.refresh()
    _tiny(widget.session, steps=100_000)
    widget.training.autosave.value = str(tmp_path / "auto")
    return viewer, widget, image, ann


def test_widget_keep_training_paint_hands_over_and_autosaves(live, qtbot, tmp_path):
    viewer, widget, image, ann = live
    widget.where.enabled.value = True
    widget.session.train_config = lambda budget, device: tiny_train(steps=100_000, lr=1e-2, val_fraction=0,
                                                                    autosave_every=0.5)
    widget.training.keep.value = True
    assert not widget.training.budget.enabled
    changed = []
    widget.session.event.connect(lambda ev: changed.append(ev) if isinstance(ev, E.AnnotationsChanged) else None)
    widget.training.train()
    assert widget.state == State.TRAINING and widget.session.mailbox is not None
    qtbot.waitUntil(lambda: "bands uncertainty" in viewer.layers, timeout=60_000)
    ann.brush_size = 3
    ann.paint((16, 24), 2, refresh=True)  # a brush dab of label 2 in the medium band
    assert not changed  # debounced: handed over only after the brush rests
    qtbot.waitUntil(lambda: bool(changed), timeout=30_000)
    assert changed[0].new_pixels > 0
    qtbot.waitUntil(lambda: (tmp_path / "auto" / "model.safetensors").exists(), timeout=30_000)
    assert widget.where.regions.count() > 0
    widget.session.stop()
    qtbot.waitUntil(lambda: not widget.state.busy and widget.worker is None, timeout=60_000)
    assert widget.training.budget.enabled is False and not widget.training._watched  # edits no longer watched
    u = viewer.layers["bands uncertainty"].data
    assert u.shape == (32, 48) and 0 <= u.min() and u.max() <= 1
    item = widget.where.regions.item(0)
    widget.where._go(item)
    centre = item.data(256)
    np.testing.assert_allclose(viewer.camera.center[-2:], centre[-2:], atol=1e-6)
