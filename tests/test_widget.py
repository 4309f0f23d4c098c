"""The napari loop end to end, in a real viewer under Xvfb (pytest-xvfb), with tiny images."""

import time

import numpy as np
import pytest

from napari_unet.core.synthetic import make_nuclei, scribbles
from napari_unet.widgets.main import State, UNetWidget


@pytest.fixture
def setup(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    syn = make_nuclei((64, 72), seed=1, radius=6, snr=20)
    image = viewer.add_image(syn.image, name="cells", scale=(0.5, 0.25), translate=(3.0, -2.0))
    widget = UNetWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.image_combo.value = image
    widget.budget_spin.setValue(1)
    return viewer, widget, image, syn


def wait_idle(qtbot, widget, timeout=30_000):
    qtbot.waitUntil(lambda: widget.state == State.IDLE and widget.worker is None, timeout=timeout)


def paint(widget, syn):
    ann = widget.new_annotations()
    strokes = scribbles(syn.semantic, seed=2, width=2)
    ann.data[...] = strokes
    ann.refresh()
    return ann, strokes


def test_annotation_layer_is_aligned_and_named(setup):
    viewer, widget, image, syn = setup
    ann = widget.new_annotations()
    assert ann.name == "cells annotations"
    assert ann.data.shape == (64, 72) and not ann.data.any()
    np.testing.assert_allclose(ann.scale, image.scale)
    np.testing.assert_allclose(ann.translate, image.translate)
    assert widget.labels_combo.value is ann
    assert widget.new_annotations() is ann  # reused, not duplicated


def test_train_preview_predict_loop(setup, qtbot):
    viewer, widget, image, syn = setup
    ann, strokes = paint(widget, syn)
    widget.train()
    assert widget.state == State.TRAINING and not widget.train_btn.isEnabled()
    wait_idle(qtbot, widget)
    # training ended, then the prediction of the image was written
    qtbot.waitUntil(lambda: "cells prediction" in viewer.layers, timeout=10_000)
    wait_idle(qtbot, widget)
    prob = viewer.layers["cells probabilities"]
    pred = viewer.layers["cells prediction"]
    assert prob.data.shape == (64, 72) and prob.data.dtype == np.float32
    assert 0 <= prob.data.min() and prob.data.max() <= 1
    assert set(np.unique(pred.data)) <= {1, 2}
    for lay in (prob, pred):
        np.testing.assert_allclose(lay.scale, image.scale)
        np.testing.assert_allclose(lay.translate, image.translate)
    np.testing.assert_array_equal(ann.data, strokes)  # annotations untouched by training
    assert viewer.layers.index(ann) > viewer.layers.index(pred)  # annotations stay on top
    assert widget.model is not None and "kept best" in widget.model_label.text()
    assert widget.plot.loss  # the live curve received points
    assert widget.first_preview_seconds is None or widget.first_preview_seconds > 0


def test_stop_keeps_weights_and_retrain_continues(setup, qtbot):
    viewer, widget, image, syn = setup
    paint(widget, syn)
    widget.budget_spin.setValue(120)
    widget.train()
    qtbot.waitUntil(lambda: len(widget.plot.loss) >= 2, timeout=20_000)
    t0 = time.perf_counter()
    widget.stop()
    assert widget.state == State.STOPPING
    qtbot.waitUntil(lambda: widget.model is not None, timeout=5_000)
    assert time.perf_counter() - t0 < 2.0
    wait_idle(qtbot, widget)
    first_steps = widget.model.history[-1]["steps"]
    assert first_steps < 1000
    # retrain: continues from the current weights
    widget.budget_spin.setValue(1)
    weights = {k: v.clone() for k, v in widget.model.net.state_dict().items()}
    widget.train()
    wait_idle(qtbot, widget)
    assert len(widget.model.history) == 2 and widget.model.history[-1]["warm_start"]
    assert any(not np.allclose(weights[k], v) for k, v in widget.model.net.state_dict().items())
    # "New model" starts over
    widget.new_model()
    assert widget.model is None


def test_accept_prediction_fills_only_unpainted_and_undoes(setup, qtbot):
    viewer, widget, image, syn = setup
    ann, strokes = paint(widget, syn)
    widget.train()
    qtbot.waitUntil(lambda: "cells prediction" in viewer.layers, timeout=30_000)
    wait_idle(qtbot, widget)
    pred = np.asarray(viewer.layers["cells prediction"].data).copy()
    n = widget._accept()
    data = np.asarray(ann.data)
    painted = strokes > 0
    np.testing.assert_array_equal(data[painted], strokes[painted])
    np.testing.assert_array_equal(data[~painted], pred[~painted])
    assert n == np.count_nonzero(~painted)
    ann.undo()
    np.testing.assert_array_equal(ann.data, strokes)
    # a corrected round is measured against the prediction
    widget._accept()
    ann.data[:5] = 1
    widget.train()
    wait_idle(qtbot, widget)
    assert widget.rounds and 0 < widget.rounds[-1]["dice"] <= 1
    assert "round 1" in widget.rounds_label.text()


def test_bad_input_notifies_and_returns_to_idle(setup, qtbot, notes):
    viewer, widget, image, syn = setup
    widget.train()  # no annotation layer yet
    assert widget.state == State.IDLE
    assert any("annotation layer" in n for n in notes)
    ann = widget.new_annotations()
    ann.data[10:20, 10:20] = 2  # one class only: refused inside the worker
    before = np.array(ann.data, copy=True)
    widget.train()
    wait_idle(qtbot, widget)
    assert any("Only label 2" in n for n in notes)
    np.testing.assert_array_equal(ann.data, before)
    assert widget.train_btn.isEnabled()
    widget.predict()
    assert any("no model yet" in n for n in notes)
    widget.classes_edit.setText("background")
    widget.new_annotations()
    assert any("at least two" in n for n in notes)
    widget.load_model("/nonexistent/model")
    assert any("does not exist" in n for n in notes)


def test_save_and_load_model(setup, qtbot, tmp_path):
    viewer, widget, image, syn = setup
    paint(widget, syn)
    widget.classes_edit.setText("background, nucleus")
    widget.train()
    wait_idle(qtbot, widget)
    qtbot.waitUntil(lambda: widget.worker is None and "cells prediction" in viewer.layers, timeout=10_000)
    widget.save_model(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").exists()
    widget.new_model()
    widget.classes_edit.setText("x, y")
    widget.load_model(tmp_path / "m")
    assert widget.model.config.class_names == ("background", "nucleus")
    assert widget.classes_edit.text() == "background, nucleus"
    assert "2=nucleus" in widget.model_label.text()


def test_closing_viewer_mid_training_stops_worker(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    syn = make_nuclei((64, 64), seed=1, radius=6)
    viewer.add_image(syn.image, name="cells")
    widget = UNetWidget(viewer)
    viewer.window.add_dock_widget(widget)
    ann = widget.new_annotations()
    ann.data[...] = scribbles(syn.semantic, seed=2, width=2)
    widget.budget_spin.setValue(300)
    widget.train()
    qtbot.waitUntil(lambda: len(widget.plot.loss) >= 1, timeout=20_000)
    worker = widget.worker
    t0 = time.perf_counter()
    viewer.close()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=5_000)
    assert time.perf_counter() - t0 < 5


def test_3d_stack_with_2d_model_uses_annotated_planes(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    syn = make_nuclei((4, 48, 48), seed=3, radius=6)
    image = viewer.add_image(syn.image, name="stack")
    widget = UNetWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.image_combo.value = image
    widget.budget_spin.setValue(1)
    ann = widget.new_annotations()
    ann.data[2] = scribbles(syn.semantic[2], seed=0, width=2)
    viewer.dims.set_current_step(0, 2)
    widget.train()
    wait_idle(qtbot, widget)
    qtbot.waitUntil(lambda: "stack prediction" in viewer.layers, timeout=20_000)
    wait_idle(qtbot, widget)
    assert viewer.layers["stack probabilities"].data.shape == (4, 48, 48)
    assert viewer.layers["stack prediction"].data.shape == (4, 48, 48)


def test_worker_exceptions_notify_and_widget_recovers(setup, qtbot, notes, monkeypatch):
    import napari_unet.widgets.main as main_mod

    viewer, widget, image, syn = setup
    ann, strokes = paint(widget, syn)
    real_train = main_mod.T.train

    def broken_train(*a, **k):
        yield main_mod.T.Notice("about to fail")
        raise RuntimeError("simulated crash inside training")

    monkeypatch.setattr(main_mod.T, "train", broken_train)
    widget.train()
    wait_idle(qtbot, widget)
    assert any("simulated crash inside training" in n for n in notes)
    assert widget.train_btn.isEnabled() and widget.model is None
    monkeypatch.setattr(main_mod.T, "train", real_train)
    widget.train()  # ready to train again
    wait_idle(qtbot, widget)
    qtbot.waitUntil(lambda: widget.worker is None and "cells prediction" in viewer.layers, timeout=20_000)
    assert widget.model is not None

    def broken_predict(model, jobs):
        yield main_mod.PredictProgress(0, 1)
        raise MemoryError("simulated failure inside prediction")

    monkeypatch.setattr(main_mod, "predict_many", broken_predict)
    widget.predict()
    wait_idle(qtbot, widget)
    assert any("simulated failure inside prediction" in n for n in notes)
    assert widget.predict_btn.isEnabled()
    np.testing.assert_array_equal(ann.data, strokes)
