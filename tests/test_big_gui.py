"""The widget with big layers (issue 13 item 6): dask, zarr and multiscale image layers predict and
train without being read whole; outputs too big for memory go to zarr stores on disk."""

import threading

import dask
import dask.array as da
import numpy as np
import pytest

from napari_unet import config as C
from napari_unet.core import alarms, data as D, inference
from napari_unet.core.inference import predict, to_labels
from napari_unet.core.synthetic import make_nuclei, scribbles
from napari_unet.core.training import train_blocking
from napari_unet.widgets import big
from napari_unet.widgets.main import UNetWidget
from napari_unet.widgets.session import PredictInput, Session, TrainInput

from conftest import TINY, tiny_train

SHAPE = (4, 256, 256)
PLANE = SHAPE[1] * SHAPE[2]
WHOLE = int(np.prod(SHAPE))


class Reads:
    """A dask scheduler that records how many elements each compute materialises: a whole-array
    read (np.asarray of the layer) shows as one compute of every element."""

    def __init__(self):
        self.sizes: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, dsk, keys, **kwargs):
        out = dask.get(dsk, keys, **kwargs)
        with self.lock:
            self.sizes.append(_count(out))
        return out

    @property
    def largest(self) -> int:
        return max(self.sizes, default=0)


def _count(x) -> int:
    if isinstance(x, (list, tuple)):
        return sum(_count(v) for v in x)
    return int(getattr(x, "size", 0))


@pytest.fixture
def reads(monkeypatch):
    """Count dask computes; tiles of 64 and statistics samples of ~4k pixels, so that a 4x256x256
    image is far bigger than any read the widget path should make (as a real big image is)."""
    monkeypatch.setattr(inference, "DEFAULT_TILE", {2: 64, 3: 32})
    monkeypatch.setattr(D, "MAX_PERCENTILE_SAMPLES", 4096)
    monkeypatch.setattr(alarms, "MAX_STAT_SAMPLES", 4096)
    r = Reads()
    with dask.config.set(scheduler=r):
        yield r


@pytest.fixture(scope="module")
def stack():
    syn = make_nuclei(SHAPE, seed=3, radius=8, snr=15)
    return syn.image.astype(np.float32), syn.semantic


@pytest.fixture(scope="module")
def model(stack):
    """A tiny trained model (with the image statistics training stores, so prediction's alarms run)."""
    img, sem = stack
    lab = np.zeros(sem.shape, np.uint8)
    lab[1] = scribbles(sem[1], seed=0, width=2)
    return train_blocking(img[1], lab[1], model_config=TINY, train_config=tiny_train(steps=3)).model


def dask_layer_data(img):
    return da.from_array(img, chunks=(1, 64, 64))


def make_widget(make_napari_viewer, data, model, tmp_path, **kw):
    viewer = make_napari_viewer()
    layer = viewer.add_image(data, name="big", contrast_limits=(0.0, 1.0), **kw)
    widget = UNetWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.annotate.image.value = layer
    widget.session._swap(model, "test model")
    widget.session.set_state(widget.session.state)  # the Predict buttons follow the model
    widget.session.outputs_dir = str(tmp_path / "outputs")
    return viewer, widget, layer


def wait_idle(qtbot, widget, timeout=60_000):
    qtbot.waitUntil(lambda: not widget.state.busy and widget.worker is None, timeout=timeout)


def test_predict_dask_layer_reads_tiles_not_the_whole_image(make_napari_viewer, qtbot, tmp_path, stack, model, reads):
    img, _ = stack
    viewer, widget, layer = make_widget(make_napari_viewer, dask_layer_data(img), model, tmp_path)
    reads.sizes.clear()
    widget.review.predict()
    qtbot.waitUntil(lambda: "big prediction" in viewer.layers, timeout=60_000)
    wait_idle(qtbot, widget)
    assert reads.sizes, "the prediction read the dask layer"
    assert reads.largest <= PLANE < WHOLE  # tiles, samples and napari's plane in view; never the whole image
    probs = viewer.layers["big probabilities"].data
    assert probs.shape == SHAPE and isinstance(probs, np.ndarray)  # small outputs stay in memory, as before
    expected = predict(model, img)  # the same tiles and (sampled) percentiles on the in-memory array
    np.testing.assert_allclose(probs, expected[1], atol=1e-6)
    np.testing.assert_array_equal(viewer.layers["big prediction"].data, to_labels(expected))


def test_multiscale_layer_predicts_level_0(make_napari_viewer, qtbot, tmp_path, stack, model, reads):
    import zarr

    img, _ = stack
    level0 = zarr.create_array(store=str(tmp_path / "in.zarr"), shape=SHAPE, chunks=(1, 64, 64), dtype="f4")
    level0[:] = img
    level1 = dask_layer_data(img)[:, ::2, ::2]
    viewer, widget, layer = make_widget(make_napari_viewer, [level0, level1], model, tmp_path, multiscale=True)
    assert layer.multiscale
    widget.review.predict()
    qtbot.waitUntil(lambda: "big prediction" in viewer.layers, timeout=60_000)
    wait_idle(qtbot, widget)
    pred = viewer.layers["big prediction"]
    assert pred.data.shape == SHAPE  # level 0's shape, not a coarser level's
    np.testing.assert_array_equal(pred.data, to_labels(predict(model, img)))


def test_outputs_too_big_for_memory_go_to_zarr_on_disk(make_napari_viewer, qtbot, tmp_path, stack, model, reads,
                                                       monkeypatch):
    img, sem = stack
    monkeypatch.setattr(C, "GUI_OUTPUT_MEMORY_BYTES", 100_000)  # far below 4x256x256 x (2 x 4 + 1) bytes
    viewer, widget, layer = make_widget(make_napari_viewer, dask_layer_data(img), model, tmp_path)
    texts = []
    widget.session.event.connect(lambda ev: texts.append(widget.status.label.text()))
    widget.review.predict()
    qtbot.waitUntil(lambda: "big prediction" in viewer.layers, timeout=60_000)
    wait_idle(qtbot, widget)
    store = tmp_path / "outputs" / "big"
    assert any(str(store) in t for t in texts)  # the status line said where the outputs go
    assert (store / "probabilities.zarr" / "0").is_dir() and (store / "prediction.zarr" / "0").is_dir()
    probs, pred = viewer.layers["big probabilities"], viewer.layers["big prediction"]
    assert isinstance(probs.data, da.Array) and isinstance(pred.data, da.Array)  # lazy, over the stores
    assert probs.data.shape == SHAPE and pred.data.shape == SHAPE
    assert reads.largest <= PLANE  # writing the stores never gathered a whole output or the image
    expected = predict(model, img)
    with dask.config.set(scheduler="sync"):
        np.testing.assert_allclose(np.asarray(probs.data), expected[1], atol=1e-6)  # as the in-memory path
        np.testing.assert_array_equal(np.asarray(pred.data), to_labels(expected))
    # the prediction on disk is accepted into the annotations like one in memory
    ann = widget.annotate.new_annotations()
    ann.data[0, :4, :4] = 1
    filled = widget.review.accept_prediction()
    assert filled == WHOLE - 16 and (ann.data[0, :4, :4] == 1).all()


def test_training_on_a_lazy_layer_reads_only_the_annotated_crop(make_napari_viewer, qtbot, tmp_path, stack, model,
                                                                reads):
    img, sem = stack
    viewer, widget, layer = make_widget(make_napari_viewer, dask_layer_data(img), model, tmp_path)
    ann = widget.annotate.new_annotations()
    box = (slice(100, 140), slice(90, 150))
    for z in (1, 3):  # two annotated planes, strokes inside a 40x60 box
        ann.data[(z,) + box] = scribbles(sem[z], seed=z, width=2)[box]
    painted = np.array(ann.data)
    (item,) = widget.annotate.train_inputs(widget.annotate.pairs(), ndim=2)
    margin = big.patch_margin(2, model)[0]  # a patch of the model in use (32)
    assert margin == 32
    ys, xs = np.nonzero(painted.any(axis=0))  # the strokes' bounding box, inside the 40x60 box
    y0, y1, x0, x1 = max(ys.min() - margin, 0), min(ys.max() + 1 + margin, 256), max(xs.min() - margin, 0), \
        min(xs.max() + 1 + margin, 256)
    rows, cols = y1 - y0, x1 - x0
    assert rows <= 40 + 2 * margin and cols <= 60 + 2 * margin
    assert item.image.shape == (2, rows, cols) and item.labels.shape == (2, rows, cols)  # planes 1 and 3, the box
    np.testing.assert_array_equal(item.image[1], img[3, y0:y1, x0:x1])
    np.testing.assert_array_equal(item.labels, painted[[1, 3], y0:y1, x0:x1])
    assert item.source is not None and item.region is not None
    # training through the widget: the crop, the whole image's (sampled) percentiles, the preview of the plane in view
    viewer.dims.set_current_step(0, 3)
    widget.session.preview_every = 0.0
    widget.training.budget.value = 1
    previews = []
    widget.session.event.connect(lambda ev: previews.append(ev.key) if type(ev).__name__ == "Preview" else None)
    reads.sizes.clear()
    widget.training.train()
    wait_idle(qtbot, widget)
    assert widget.model is not None and widget.model is not model
    assert previews and previews[0] == (3,)
    crop_size = 2 * rows * cols
    assert reads.largest <= max(crop_size, PLANE) < WHOLE  # the crop, previewed planes' tiles, samples
    assert sum(s for s in reads.sizes if s > 64 * 64) <= 2 * crop_size  # no full pass beyond the crop
    np.testing.assert_array_equal(ann.data, painted)  # the annotations stay as painted


def test_train_crop_keeps_planes_and_a_margin_and_crops_later_annotations():
    image = da.from_array(np.arange(5 * 40 * 50, dtype=np.float32).reshape(5, 40, 50), chunks=(1, 10, 10))
    labels = np.zeros((5, 40, 50), np.uint8)
    labels[0, 10, 20] = 1
    labels[3, 15:18, 22] = 2
    data, lab, region = big.train_crop(image, labels, ndim=2, margin=(4, 30))
    assert list(region[0]) == [0, 3] and region[1] == slice(6, 22) and region[2] == slice(0, 50)
    np.testing.assert_array_equal(data, np.asarray(image)[[0, 3], 6:22, :])
    np.testing.assert_array_equal(lab, labels[[0, 3], 6:22, :])
    later = labels.copy()
    later[3, 7, 1] = 1  # painted inside the crop while training continues
    assert big.crop(later, region)[1, 1, 1] == 1
    # an instance mask annotates every pixel: the whole image
    data, _, _ = big.train_crop(image, labels, ndim=2, margin=(4, 4), everything=True)
    assert data.shape == (5, 40, 50)


def test_session_refuses_objects_and_keeps_continuous_edits_cropped(tmp_path, stack, model, monkeypatch):
    img, sem = stack
    s = Session(runner=lambda body, *a, **k: None)  # nothing runs: the session's decisions only
    s._swap(model, "test")
    s.outputs_dir = str(tmp_path)
    monkeypatch.setattr(C, "GUI_OUTPUT_MEMORY_BYTES", 1000)
    item = PredictInput("big", dask_layer_data(img), None)
    assert s.output_stores([item]) == {"big": tmp_path / "big"}
    with pytest.raises(Exception, match="do not fit in memory"):
        s.start_prediction([item], objects=True)
    # keep training on a crop: later edits reach the worker cropped the same way
    labels = np.zeros(SHAPE, np.uint8)
    labels[2, 50:60, 50:60] = 2
    labels[2, 70, 70] = 1
    data, lab, region = big.train_crop(dask_layer_data(img), labels, 2, (8, 8))
    s.start_training([TrainInput("big", data, lab, None, source=dask_layer_data(img), region=region)],
                     ("background", "object"), continuous=True, preview=False)
    later = labels.copy()
    later[2, 52, 52] = 1
    assert s.annotations_edited("big", later)
    (update,) = s.mailbox()
    np.testing.assert_array_equal(update.labels, big.crop(later, region))


def test_a_lazy_image_too_big_for_a_preview_gets_none_with_a_notice():
    assert big.preview_refusal((256, 256), 2, 2) is None
    assert "plane" in big.preview_refusal((1, 8192, 8192), 2, 2)
    assert big.is_lazy(da.zeros((2, 2))) and not big.is_lazy(np.zeros((2, 2)))
