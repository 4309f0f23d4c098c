"""The napari loop end to end, in a real viewer under Xvfb (pytest-xvfb), with tiny images."""

import time

import numpy as np
import pytest

from napari_unet.core import events as E
from napari_unet.core.synthetic import make_nuclei, scribbles
from napari_unet.widgets.main import State, UNetWidget


@pytest.fixture
def setup(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    syn = make_nuclei((64, 72), seed=1, radius=6, snr=20)
    image = viewer.add_image(syn.image, name="cells", scale=(0.5, 0.25), translate=(3.0, -2.0))
    widget = UNetWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.annotate.image.value = image
    widget.training.budget.value = 1
    return viewer, widget, image, syn


def wait_idle(qtbot, widget, timeout=30_000):
    qtbot.waitUntil(lambda: not widget.state.busy and widget.worker is None, timeout=timeout)


def paint(widget, syn):
    ann = widget.annotate.new_annotations()
    strokes = scribbles(syn.semantic, seed=2, width=2)
    ann.data[...] = strokes
    ann.refresh()
    return ann, strokes


def test_annotation_layer_is_aligned_named_and_coloured(setup):
    viewer, widget, image, syn = setup
    ann = widget.annotate.new_annotations()
    assert ann.name == "cells annotations"
    assert ann.data.shape == (64, 72) and not ann.data.any()
    np.testing.assert_allclose(ann.scale, image.scale)
    np.testing.assert_allclose(ann.translate, image.translate)
    assert widget.annotate.labels.value is ann  # the magicgui picker follows
    assert widget.annotate.new_annotations() is ann  # reused, not duplicated
    # a third class painted with 3 is visible, and hovering names the classes
    colors = ann.colormap.color_dict
    assert colors[3][3] > 0 and not np.allclose(colors[3], colors[2])
    assert list(ann.features["class"][:3]) == ["not annotated", "background", "object"]
    widget.annotate.classes.value = "background, nucleus, debris"
    assert list(ann.features["class"]) == ["not annotated", "background", "nucleus", "debris"]
    # the pickers list new layers by themselves
    other = viewer.add_image(np.zeros((8, 8), np.float32), name="other")
    assert other in widget.annotate.image.choices


def test_train_with_live_preview_then_predict(setup, qtbot):
    viewer, widget, image, syn = setup
    ann, strokes = paint(widget, syn)
    widget.session.preview_every = 0.0  # preview after every step, so the live preview runs in the test
    widget.training.budget.value = 2
    seen = []
    widget.session.event.connect(
        lambda ev: seen.append((widget.state, "cells probabilities" in viewer.layers))
        if isinstance(ev, E.Preview) else None)
    widget.training.train()
    assert widget.state == State.TRAINING and not widget.training.train_btn.enabled
    assert widget.status.activity is not None  # progress in napari's activity dock too
    wait_idle(qtbot, widget)
    assert seen and seen[0] == (State.TRAINING, True)  # probabilities written while training ran
    qtbot.waitUntil(lambda: "cells prediction" in viewer.layers, timeout=10_000)
    wait_idle(qtbot, widget)
    assert widget.status.activity is None
    prob = viewer.layers["cells probabilities"]
    pred = viewer.layers["cells prediction"]
    assert prob.data.shape == (64, 72) and prob.data.dtype == np.float32
    assert 0 <= prob.data.min() and prob.data.max() <= 1
    assert prob.blending == "translucent" and prob.colormap.name.startswith("magma")
    assert prob.colormap.map(np.array([0.0]))[0, 3] == 0 and prob.colormap.map(np.array([1.0]))[0, 3] == 1
    assert set(np.unique(pred.data)) <= {1, 2}
    assert not np.allclose(pred.colormap.color_dict[2], ann.colormap.color_dict[2])  # not the strokes' colour
    for lay in (prob, pred):
        np.testing.assert_allclose(lay.scale, image.scale)
        np.testing.assert_allclose(lay.translate, image.translate)
    np.testing.assert_array_equal(ann.data, strokes)  # annotations untouched by training
    assert viewer.layers.index(ann) > viewer.layers.index(pred)  # annotations stay on top
    assert widget.model is not None and "kept best" in widget.model_panel.info.text()
    assert widget.training.plot.loss  # the live curve received points


def test_a_saturated_score_is_shown_as_saturated(setup):
    viewer, widget, image, syn = setup
    widget.session.event.emit(E.Validation(25, 0.031, 1.0, 1.0, 25, True, "held-out loss", True, 0.031))
    widget.session.event.emit(E.Progress(26, None, 0.2, 3.0, 10.0))
    plot = widget.training.plot
    assert plot.val[-1] == (25, 1.0, True) and plot.val_text == "held-out loss 0.031 (IoU saturated)"
    assert "held-out IoU saturated" in widget.status.label.text()


def test_stop_keeps_weights_and_retrain_continues_the_curve(setup, qtbot):
    viewer, widget, image, syn = setup
    paint(widget, syn)
    widget.training.budget.value = 120
    widget.training.train()
    plot = widget.training.plot
    qtbot.waitUntil(lambda: len(plot.loss) >= 2, timeout=20_000)
    t0 = time.perf_counter()
    widget.session.stop()
    assert widget.state == State.STOPPING
    qtbot.waitUntil(lambda: widget.model is not None, timeout=5_000)
    assert time.perf_counter() - t0 < 2.0
    wait_idle(qtbot, widget)
    first_steps = widget.model.history[-1]["steps"]
    assert first_steps < 1000
    last_step = plot.loss[-1][0]
    # retrain: continues from the current weights; the curve goes on after the first session's steps
    widget.training.budget.value = 1
    weights = {k: v.clone() for k, v in widget.model.net.state_dict().items()}
    widget.training.train()
    wait_idle(qtbot, widget)
    assert len(widget.model.history) == 2 and widget.model.history[-1]["warm_start"]
    assert any(not np.allclose(weights[k], v) for k, v in widget.model.net.state_dict().items())
    assert plot.session_starts == [last_step] and plot.loss[-1][0] > last_step
    # "New model" starts over
    widget.training.new_model()
    assert widget.model is None and not plot.loss


def test_accept_prediction_fills_only_unpainted_and_undoes(setup, qtbot):
    viewer, widget, image, syn = setup
    ann, strokes = paint(widget, syn)
    widget.training.train()
    qtbot.waitUntil(lambda: "cells prediction" in viewer.layers, timeout=30_000)
    wait_idle(qtbot, widget)
    pred = np.asarray(viewer.layers["cells prediction"].data).copy()
    n = widget.review.accept_prediction()
    data = np.asarray(ann.data)
    painted = strokes > 0
    np.testing.assert_array_equal(data[painted], strokes[painted])
    np.testing.assert_array_equal(data[~painted], pred[~painted])
    assert n == np.count_nonzero(~painted)
    assert ann.contour > 0 and not viewer.layers["cells prediction"].visible  # errors stay visible
    ann.undo()
    np.testing.assert_array_equal(ann.data, strokes)
    # a corrected round is measured against the prediction
    widget.review.accept_prediction()
    ann.data[:5] = 1
    widget.training.train()
    wait_idle(qtbot, widget)
    assert widget.session.rounds and 0 < widget.session.rounds[-1]["dice"] <= 1
    assert "round 1" in widget.review.rounds_label.text()


def test_third_class_is_named_with_a_notice(setup, qtbot, notes):
    viewer, widget, image, syn = setup
    ann, strokes = paint(widget, syn)
    ann.data[:4, :4] = 3
    widget.training.train()
    assert any("Label(s) 3 are painted but not named" in n for n in notes)
    assert widget.annotate.classes.value == "background, object, label 3"
    assert ann.features["class"][3] == "label 3"
    wait_idle(qtbot, widget)
    assert widget.model.config.class_names == ("background", "object", "label 3")
    # with a model, the class list must match it
    widget.annotate.classes.value = "background, object"
    widget.training.train()
    assert "list exactly 3 names" in notes[-1]


def test_bad_input_notifies_and_returns_to_idle(setup, qtbot, notes):
    viewer, widget, image, syn = setup
    widget.training.train()  # no annotation layer yet
    assert widget.state == State.IDLE
    assert any("annotation layer" in n for n in notes)
    ann = widget.annotate.new_annotations()
    ann.data[10:20, 10:20] = 2  # one class only: refused inside the worker
    before = np.array(ann.data, copy=True)
    widget.training.train()
    wait_idle(qtbot, widget)
    assert widget.state == State.FAILED
    assert any("Only label 2" in n for n in notes)
    np.testing.assert_array_equal(ann.data, before)
    assert widget.training.train_btn.enabled
    widget.review.predict()
    assert any("no model yet" in n for n in notes)
    widget.annotate.classes.value = "background"
    widget.session.guard(widget.annotate.new_annotations)
    assert any("at least two" in n for n in notes)
    assert not widget.model_panel.load_model("/nonexistent/model")
    assert any("does not exist" in n for n in notes)


def test_save_asks_before_replacing_and_load_swaps_only_valid_models(setup, qtbot, tmp_path, notes):
    import json

    viewer, widget, image, syn = setup
    paint(widget, syn)
    widget.annotate.classes.value = "background, nucleus"
    widget.training.train()
    wait_idle(qtbot, widget)
    qtbot.waitUntil(lambda: widget.worker is None and "cells prediction" in viewer.layers, timeout=10_000)
    panel = widget.model_panel
    assert panel.save_model(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").exists()
    # the user's own folder is refused, a model is replaced only when the user agrees
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert not panel.save_model(tmp_path / "mine") and "not a napari-unet model folder" in notes[-1]
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]
    asked = []
    panel.ask_replace = lambda parent, folder: asked.append(folder) or False
    before = (tmp_path / "m" / "config.json").read_bytes()
    assert not panel.save_model(tmp_path / "m") and asked
    assert (tmp_path / "m" / "config.json").read_bytes() == before
    panel.ask_replace = lambda parent, folder: True
    assert panel.save_model(tmp_path / "m")
    # load: the model, the classes field and the info on screen agree
    widget.training.new_model()
    widget.annotate.classes.value = "x, y"
    assert panel.load_model(tmp_path / "m")
    assert widget.model.config.class_names == ("background", "nucleus")
    assert widget.annotate.classes.value == "background, nucleus"
    assert "2=nucleus" in panel.info.text()
    # a model with a malformed history is refused before it replaces the one in use
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["history"][-1]["steps"] = "many"
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    model, info = widget.model, panel.info.text()
    assert not panel.load_model(tmp_path / "m")
    assert widget.model is model and panel.info.text() == info == widget.session.model_info


def test_closing_viewer_mid_training_stops_worker(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    syn = make_nuclei((64, 64), seed=1, radius=6)
    viewer.add_image(syn.image, name="cells")
    widget = UNetWidget(viewer)
    viewer.window.add_dock_widget(widget)
    ann = widget.annotate.new_annotations()
    ann.data[...] = scribbles(syn.semantic, seed=2, width=2)
    widget.training.budget.value = 300
    widget.training.train()
    qtbot.waitUntil(lambda: len(widget.training.plot.loss) >= 1, timeout=20_000)
    worker = widget.worker
    t0 = time.perf_counter()
    viewer.close()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=5_000)
    assert time.perf_counter() - t0 < 5


def test_closing_the_dock_stops_training_and_writes_no_layer(setup, qtbot):
    viewer, widget, image, syn = setup
    paint(widget, syn)
    widget.session.preview_every = 0.0
    widget.training.budget.value = 300
    widget.training.train()
    qtbot.waitUntil(lambda: len(widget.training.plot.loss) >= 1, timeout=20_000)
    worker = widget.worker
    names = {lay.name for lay in viewer.layers} - {"cells probabilities"}
    viewer.window.remove_dock_widget(widget)  # what the dock's close button does
    assert widget.session.closed
    t0 = time.perf_counter()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=5_000)
    assert time.perf_counter() - t0 < 5
    qtbot.wait(300)
    assert {lay.name for lay in viewer.layers} - {"cells probabilities"} == names  # no prediction layer
    assert "cells prediction" not in viewer.layers


def test_3d_stack_with_2d_model_uses_annotated_planes(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    syn = make_nuclei((4, 48, 48), seed=3, radius=6)
    image = viewer.add_image(syn.image, name="stack")
    widget = UNetWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.annotate.image.value = image
    assert widget.training.ndim.choices == ("2D", "3D")
    widget.training.budget.value = 1
    widget.session.preview_every = 0.0
    ann = widget.annotate.new_annotations()
    ann.data[2] = scribbles(syn.semantic[2], seed=0, width=2)
    viewer.dims.set_current_step(0, 2)
    keys = []
    widget.session.event.connect(lambda ev: keys.append(ev.key) if isinstance(ev, E.Preview) else None)
    widget.training.train()
    wait_idle(qtbot, widget)
    assert keys and keys[0] == (2,)  # the plane in view was previewed
    qtbot.waitUntil(lambda: "stack prediction" in viewer.layers, timeout=20_000)
    wait_idle(qtbot, widget)
    assert viewer.layers["stack probabilities"].data.shape == (4, 48, 48)
    assert viewer.layers["stack prediction"].data.shape == (4, 48, 48)


def test_worker_exceptions_notify_and_widget_recovers(setup, qtbot, notes, monkeypatch):
    import napari_unet.widgets.session as session_mod

    viewer, widget, image, syn = setup
    ann, strokes = paint(widget, syn)
    real_train = session_mod.T.train

    def broken_train(*a, **k):
        yield E.Notice("about to fail")
        raise RuntimeError("simulated crash inside training")

    monkeypatch.setattr(session_mod.T, "train", broken_train)
    widget.training.train()
    wait_idle(qtbot, widget)
    assert any("simulated crash inside training" in n for n in notes)
    assert widget.training.train_btn.enabled and widget.model is None and widget.state == State.FAILED
    monkeypatch.setattr(session_mod.T, "train", real_train)
    widget.training.train()  # ready to train again
    wait_idle(qtbot, widget)
    qtbot.waitUntil(lambda: widget.worker is None and "cells prediction" in viewer.layers, timeout=20_000)
    assert widget.model is not None

    asked = []

    def broken_predict(model, jobs, **kwargs):
        asked.append(kwargs.get("tta"))
        yield E.PredictProgress(0, 1)
        raise MemoryError("simulated failure inside prediction")

    monkeypatch.setattr(session_mod, "predict_many", broken_predict)
    assert widget.review.tta.value == "TTA auto"
    widget.review.tta.value = "TTA off"  # the review panel's choice reaches the prediction worker
    widget.review.predict()
    wait_idle(qtbot, widget)
    assert asked == [False]
    assert any("simulated failure inside prediction" in n for n in notes)
    assert widget.review.predict_btn.enabled
    np.testing.assert_array_equal(ann.data, strokes)


def test_plot_keeps_axes_and_legend_in_a_narrow_dock(qtbot):
    from napari_unet.widgets.plot import LossPlot

    plot = LossPlot()
    qtbot.addWidget(plot)
    plot.resize(170, plot.sizeHint().height())
    for step in range(1, 30):
        plot.add_loss(step, 1.0 / step)
    plot.add_val(25, 1.0, saturated=True, text="held-out loss 0.031 (IoU saturated)")
    plot.start_session()
    plot.add_loss(1, 0.1)
    assert plot.session_starts == [29] and plot.loss[-1][0] == 30
    assert not plot.grab().isNull()  # paints (axes, legend on two rows at this width, session mark) without error

