"""Channels from several layers, time-lapses with a 3D model, several annotated images, Export/Report (issue 15)."""

import numpy as np
import pytest

from napari_unet.config import ModelConfig
from napari_unet.core.checkpoint import Model
from napari_unet.core.inference import predict, predict_time_iter
from napari_unet.core.synthetic import make_nuclei, scribbles
from napari_unet.core.util import drain
from napari_unet.errors import UserError
from napari_unet.widgets.main import State, UNetWidget
from napari_unet.widgets.session import TrainInput, training_summary


def wait_idle(qtbot, widget, timeout=60_000):
    qtbot.waitUntil(lambda: not widget.state.busy and widget.worker is None, timeout=timeout)


@pytest.fixture
def two_channels(make_napari_viewer):
    """A 2-channel image opened as napari opens a channel_axis file: one Image layer per channel."""
    viewer = make_napari_viewer()
    syn = make_nuclei((48, 56), seed=1, radius=6, snr=20)
    nuclei = syn.image.astype(np.float32)
    membrane = np.random.default_rng(0).normal(0, 1, nuclei.shape).astype(np.float32)  # noise channel
    layers = viewer.add_image(np.stack([nuclei, membrane]), channel_axis=0, name=["nuclei", "membrane"],
                              scale=(0.5, 0.5))
    widget = UNetWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.training.budget.value = 1
    return viewer, widget, layers, syn


def test_two_channel_layers_train_predict_save_load_predict(two_channels, qtbot, tmp_path, notes):
    viewer, widget, (nuc, mem), syn = two_channels
    assert {nuc, mem} <= set(widget.annotate.channels.choices)
    widget.annotate.channels.value = [mem, nuc]
    assert [c.name for c in widget.annotate.channel_layers()] == ["nuclei", "membrane"]  # layer-list order
    assert widget.annotate.image.value is nuc  # the first channel holds the annotations
    ann = widget.annotate.new_annotations()
    ann.data[...] = scribbles(syn.semantic, seed=2, width=2)
    widget.training.train()
    assert "Training on 1 image(s) with channels nuclei, membrane" in widget.annotate.summary.text()
    wait_idle(qtbot, widget)
    cfg = widget.model.config
    assert cfg.in_channels == 2 and cfg.channel_names == ("nuclei", "membrane")
    qtbot.waitUntil(lambda: "nuclei prediction" in viewer.layers, timeout=30_000)
    wait_idle(qtbot, widget)
    first = np.asarray(viewer.layers["nuclei probabilities"].data).copy()  # probabilities: no argmax ties
    assert first.shape == (48, 56)
    np.testing.assert_allclose(viewer.layers["nuclei prediction"].scale, nuc.scale)
    assert widget.model_panel.save_model(str(tmp_path / "m"))
    # a fresh session: load the folder, nothing selected; the channels are found by their names
    widget.training.new_model()
    widget.annotate.channels.value = []
    viewer.layers.remove("nuclei prediction")
    viewer.layers.remove("nuclei probabilities")
    assert widget.model_panel.load_model(str(tmp_path / "m"))
    assert widget.model.config.channel_names == ("nuclei", "membrane")
    widget.review.predict()
    wait_idle(qtbot, widget)
    np.testing.assert_allclose(viewer.layers["nuclei probabilities"].data, first, atol=1e-5)
    viewer.layers.remove("nuclei prediction")
    widget.review.predict(all_images=True)  # the channel layers make one image, predicted once
    wait_idle(qtbot, widget)
    assert "nuclei prediction" in viewer.layers and "membrane prediction" not in viewer.layers
    # retraining from the membrane alone: refused, naming the layer
    widget.annotate.image.value = mem
    widget.annotate.labels.value = ann
    widget.training.train()
    assert "The model takes 2 channel(s) but 'membrane' gives 1; select 2 layers" in notes[-1]
    widget.annotate.image.value = nuc
    # other names: matched by the picked order, with a notice
    nuc.name, mem.name = "dapi", "wga"
    widget.review.predict()
    assert "takes 2 channels (nuclei, membrane) but 'dapi' alone is picked; select 2 layers" in notes[-1]  # 2 channels needed, 1 given
    widget.annotate.reset_choices()
    widget.annotate.channels.value = [nuc, mem]
    widget.review.predict()
    wait_idle(qtbot, widget)
    assert any("matched by order: dapi as nuclei, wga as membrane" in n for n in notes)
    np.testing.assert_allclose(viewer.layers["dapi probabilities"].data, first, atol=1e-5)


def test_channel_layers_of_different_shape_or_scale_are_refused(two_channels, qtbot, notes):
    viewer, widget, (nuc, mem), syn = two_channels
    small = viewer.add_image(np.zeros((40, 56), np.float32), name="small", scale=(0.5, 0.5))
    widget.annotate.channels.value = [nuc, small]
    ann = widget.annotate.new_annotations()
    ann.data[...] = scribbles(syn.semantic, seed=2, width=2)
    widget.training.train()
    assert widget.state == State.IDLE
    assert "Channel layers 'nuclei' (48, 56) and 'small' (40, 56) differ in shape" in notes[-1]
    mem.scale = (1.0, 1.0)
    widget.annotate.channels.value = [nuc, mem]
    widget.training.train()
    assert "'nuclei' and 'membrane' differ in scale" in notes[-1]
    assert widget.model is None


def test_a_time_lapse_with_a_3d_model(make_napari_viewer, qtbot):
    from napari_unet.core import events as E

    viewer = make_napari_viewer()
    vol = make_nuclei((8, 32, 32), seed=3, radius=4, snr=20)
    tl = np.stack([vol.image, vol.image[:, ::-1], vol.image[:, :, ::-1]]).astype(np.float32)  # TZYX
    movie = viewer.add_image(tl, name="movie", axis_labels=("t", "z", "y", "x"))
    widget = UNetWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.annotate.image.value = movie
    assert widget.training.ndim.choices == ("2D", "3D")
    widget.training.ndim.value = "3D"
    widget.training.budget.value = 2
    widget.session.preview_every = 0.0
    ann = widget.annotate.new_annotations()
    assert ann.data.shape == (3, 8, 32, 32)
    ann.data[1] = scribbles(vol.semantic, seed=2, width=1)[:, ::-1]  # time point 1 annotated
    viewer.dims.set_current_step(0, 2)  # the user looks at time point 2
    keys, progress = [], []
    widget.session.event.connect(lambda ev: keys.append(ev.key) if isinstance(ev, E.Preview) else None)
    widget.training.train()
    wait_idle(qtbot, widget)
    assert widget.model.config.ndim == 3
    assert keys and set(keys) == {(2,)}  # the live preview follows the time point in view
    widget.session.event.connect(lambda ev: progress.append((ev.done, ev.total))
                                 if isinstance(ev, E.PredictProgress) else None)
    widget.review.predict(images=[movie])
    qtbot.waitUntil(lambda: "movie prediction" in viewer.layers, timeout=30_000)
    wait_idle(qtbot, widget)
    pred = viewer.layers["movie prediction"].data
    assert pred.shape == (3, 8, 32, 32)
    assert progress and progress[-1][0] == progress[-1][1] and len({t for _, t in progress}) == 1
    # each time point predicted as its own volume (probabilities: an untrained-ish model has argmax ties)
    probs = viewer.layers["movie probabilities"].data
    for t in (0, 2):
        np.testing.assert_allclose(probs[t], predict(widget.model, tl[t])[1], atol=1e-4)


def test_predict_time_iter_checks_the_axis_and_keeps_order():
    model = Model.new(ModelConfig(ndim=3, depth=1, width=2, in_channels=2), seed=0)
    img = np.random.default_rng(0).random((4, 2, 3, 8, 8)).astype(np.float32)  # Z C T Y X: odd on purpose
    with pytest.raises(UserError, match=r"Time axis 5 does not exist in 'x.tif' of shape \(4, 2, 3, 8, 8\)"):
        drain(predict_time_iter(model, img, time_axis=5, channel_axis=1, name="'x.tif'"))
    with pytest.raises(UserError, match="Time axis 1 does not exist"):
        drain(predict_time_iter(model, img, time_axis=1, channel_axis=1))
    out = drain(predict_time_iter(model, img, time_axis=2, channel_axis=1))
    assert out.shape == (2, 4, 3, 8, 8)  # classes, then Z T Y X as in the image


def test_two_annotated_images_with_their_own_annotation_layers(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    a, b = make_nuclei((40, 40), seed=1, radius=5, snr=20), make_nuclei((48, 32), seed=2, radius=5, snr=20)
    img_a = viewer.add_image(a.image, name="first")
    img_b = viewer.add_image(b.image, name="second")
    # any names: one linked through metadata, one through the pickers
    ann_a = viewer.add_labels(scribbles(a.semantic, seed=1, width=2), name="my strokes",
                              metadata={"napari_unet_image": "first"})
    ann_b = viewer.add_labels(scribbles(b.semantic, seed=2, width=2), name="corrections")
    widget = UNetWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.training.budget.value = 1
    widget.annotate.image.value = img_b
    widget.annotate.labels.value = ann_b
    assert widget.annotate.pairs() == [(img_b, ann_b)]
    assert ann_b.metadata["napari_unet_image"] == "second"  # linked by the pick
    widget.annotate.all_pairs.value = True
    assert widget.annotate.pairs() == [(img_a, ann_a), (img_b, ann_b)]
    widget.training.train()
    counts = [np.count_nonzero(np.concatenate([ann_a.data.ravel(), ann_b.data.ravel()]) == v) for v in (1, 2)]
    assert widget.annotate.summary.text() == (f"Training on 2 image(s): annotated pixels background {counts[0]:,}, "
                                              f"object {counts[1]:,}.")
    wait_idle(qtbot, widget)
    assert widget.state == State.IDLE and len(widget.model.history[-1]["data"]) == 2  # both images trained


def test_training_summary_counts_per_class():
    lab = np.array([[0, 1, 2], [2, 3, 0]], np.uint8)
    item = TrainInput("a", np.zeros((2, 3), np.float32), lab, None)
    assert training_summary([item, item], ("bg", "cell")) == \
        "Training on 2 image(s): annotated pixels bg 2, cell 4, label 3 2."
    ids = TrainInput("m", np.zeros((2, 3), np.float32), np.array([[0, 0, 7], [70000, 7, 0]], np.uint32), None)
    assert training_summary([ids], ("bg", "cell"), from_instances=True) == \
        "Training on 1 image(s): annotated pixels bg 3, cell 3."


def test_export_and_report_buttons(make_napari_viewer, qtbot, tmp_path, monkeypatch, notes):
    from qtpy.QtWidgets import QFileDialog

    viewer = make_napari_viewer()
    widget = UNetWidget(viewer)
    panel = widget.model_panel
    assert not panel.export_btn.enabled and not panel.report_btn.enabled
    assert panel.export_model(str(tmp_path / "none.zip")) is None and "no model yet" in notes[-1]
    assert not (tmp_path / "none.zip").exists()
    widget.session._swap(Model.new(ModelConfig(depth=1, width=2), seed=0), "tiny")
    widget.session.set_state(State.IDLE)
    assert panel.export_btn.enabled and panel.report_btn.enabled
    widget.session.rounds.append({"image": "x", "dice": 0.5})
    targets = iter([str(tmp_path / "model.zip"), str(tmp_path / "report.html")])
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (next(targets), "")))
    panel.export_btn.changed.emit(True)
    assert (tmp_path / "model.zip").stat().st_size > 0
    panel.report_btn.changed.emit(True)
    assert (tmp_path / "report.html").exists() and "report.html" in panel.info.text()
    assert "0.5" in (tmp_path / "report.html").read_text()


def test_cli_predict_time_axis(tmp_path, capsys):
    from napari_unet.cli import main
    from napari_unet.core.checkpoint import save_model

    model = Model.new(ModelConfig(ndim=3, depth=1, width=2), seed=0)
    save_model(model, tmp_path / "m")
    movie = np.random.default_rng(0).random((2, 4, 16, 16)).astype(np.float32)
    np.save(tmp_path / "movie.npy", movie)
    base = ["predict", "--model", str(tmp_path / "m"), "--image", str(tmp_path / "movie.npy"), "--device", "cpu"]
    assert main(base + ["--out", str(tmp_path / "no.npy")]) == 2
    assert "give its time axis, e.g. --time-axis 0" in capsys.readouterr().err
    assert main(base + ["--out", str(tmp_path / "no.npy"), "--time-axis", "4"]) == 2
    assert "Time axis 4 does not exist in" in capsys.readouterr().err
    assert not (tmp_path / "no.npy").exists()
    assert main(base + ["--out", str(tmp_path / "p.npy"), "--time-axis", "0"]) == 0
    probs = np.load(tmp_path / "p.npy")
    assert probs.shape == (2, 2, 4, 16, 16)
    np.testing.assert_allclose(probs[:, 1], predict(model, movie[1], percentiles=None), atol=0.05)


def test_channel_names_in_the_config_and_old_folders():
    old = ModelConfig().to_dict()
    del old["channel_names"]  # a model folder written before the field existed
    assert ModelConfig.from_dict(old).channel_names == ()
    named = ModelConfig(in_channels=2, channel_names=("dapi", "wga"))
    assert ModelConfig.from_dict(named.to_dict()) == named
    with pytest.raises(UserError, match="channel_names must name each of the 2 input channel"):
        ModelConfig(in_channels=2, channel_names=("dapi",))


def test_a_layer_with_a_c_axis_keeps_its_channels(make_napari_viewer):
    viewer = make_napari_viewer()
    data = np.random.default_rng(0).random((2, 5, 16, 20)).astype(np.float32)  # C Z Y X
    img = viewer.add_image(data, name="czyx", axis_labels=("c", "z", "y", "x"), scale=(1, 2, 0.5, 0.5))
    widget = UNetWidget(viewer)
    widget.annotate.image.value = img
    ann = widget.annotate.new_annotations()
    assert ann.data.shape == (5, 16, 20)
    np.testing.assert_allclose(ann.scale, (2, 0.5, 0.5))
    (item,) = widget.annotate.train_inputs([(img, ann)])
    assert item.image.shape == (5, 16, 20, 2) and item.channel_axis == -1  # channels last in the copy
    np.testing.assert_array_equal(item.image[..., 1], data[1])
    model = Model.new(ModelConfig(in_channels=3, depth=1, width=2), seed=0)
    with pytest.raises(UserError, match="The model takes 3 channel.s. but 'czyx' has 2; use a matching model"):
        widget.annotate.predict_input(img, model)
