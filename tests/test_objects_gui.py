"""Objects mode in the dock, in a real viewer (pytest-qt, Xvfb): train -> predict -> objects layer,
count and table -> accept objects -> train again (warm start, objects head kept)."""

import numpy as np
from scipy import ndimage as ndi
from test_widget import setup as dock  # noqa: F401 - the same viewer, image and dock as the widget tests
from test_widget import wait_idle

from napari_unet.core import events as E
from napari_unet.widgets.objects_layer import objects_name


def object_strokes(syn, ann_widget, ann):
    """Left half annotated object by object: background 1, each nucleus its own value via 'New object'."""
    half = syn.instances.shape[1] // 2
    data = np.zeros(syn.instances.shape, np.uint8)
    data[:, :half][syn.instances[:, :half] == 0] = 1
    ann.data[...] = data
    ids = [i for i in np.unique(syn.instances[:, :half]) if i > 0]
    for i in ids:
        value = ann_widget.next_object()  # a fresh value, as the button gives
        assert value == int(ann.data.max()) + 1 and ann.selected_label == value and value >= 2
        ann.data[:, :half][syn.instances[:, :half] == i] = value
    ann.refresh()
    return len(ids)


def test_objects_mode_train_predict_table_accept_retrain(dock, qtbot):
    viewer, widget, image, syn = dock
    events = []
    widget.session.event.connect(events.append)
    widget.annotate.objects.value = True
    shown = lambda w: not w.native.isHidden()  # noqa: E731 - the viewer window itself is not shown in tests
    assert widget.annotate.new_object.enabled and shown(widget.review.accept_objects_btn)
    assert not shown(widget.review.accept_btn)
    ann = widget.annotate.new_annotations()
    n_painted = object_strokes(syn, widget.annotate, ann)
    assert n_painted >= 2

    widget.training.train()
    wait_idle(qtbot, widget)  # training, then the prediction of the trained image
    model = widget.model
    assert model is not None and model.config.object_head == "distance"
    assert model.config.class_names == ("background", "object")  # the names in the field, not object ids
    name = objects_name("cells")
    qtbot.waitUntil(lambda: name in viewer.layers, timeout=30_000)
    layer = viewer.layers[name]
    assert layer.data.shape == image.data.shape and tuple(layer.scale) == (0.5, 0.25)
    n = int(layer.data.max())
    assert n >= 1 and list(layer.features["index"]) == list(range(1, n + 1))
    np.testing.assert_allclose(layer.features["area"], np.bincount(layer.data.ravel())[1:] * 0.125)
    # the count in the review panel and the table agree with the layer
    table = widget.review.table
    assert table.table.rowCount() == n
    assert widget.review.count_label.text().startswith(f"{n} object")
    assert table.count_label.text().startswith(f"{n} object")
    assert widget.sections["objects"].isExpanded()  # opened when the objects came
    # a click centres the view on the object of that row
    table.centre_on(0)
    np.testing.assert_allclose(viewer.camera.center[-2:], layer.data_to_world(
        (table.columns["centroid_y"][0], table.columns["centroid_x"][0])), atol=1e-6)

    # accept objects: only unpainted pixels change, each object keeps its own value; Ctrl+Z undoes
    before = np.array(ann.data, copy=True)
    filled = widget.review.accept_objects()
    after = np.asarray(ann.data)
    painted = before > 0
    np.testing.assert_array_equal(after[painted], before[painted])
    assert filled == int((~painted).sum()) and (after > 0).all()
    new_ids = np.unique(after[~painted & (after >= 2)])
    assert new_ids.size and new_ids.min() > before.max()  # accepted objects never reuse a painted value
    ann.undo()
    np.testing.assert_array_equal(np.asarray(ann.data), before)
    widget.review.accept_objects()

    # split one accepted object by painting part of it with a fresh value, then train again: warm start
    data = np.asarray(ann.data)
    def halves(v):  # an object's upper and lower halves, when each is one region (a split the core accepts)
        mask = data == v
        top = mask & (np.arange(mask.shape[0])[:, None] < np.median(np.nonzero(mask)[0]))
        whole = all(ndi.label(part)[1] == 1 for part in (top, mask & ~top))
        return top if whole else None

    ids = sorted(np.unique(data[data >= 2]), key=lambda v: -int((data == v).sum()))  # largest first
    top = next(t for t in map(halves, ids) if t is not None)
    fresh = widget.annotate.next_object()
    ann.data[top] = fresh
    events.clear()
    widget.training.train()
    wait_idle(qtbot, widget)
    started = [e for e in events if isinstance(e, E.Started)]
    assert started and started[0].warm_start
    assert widget.model.config.object_head == "distance" and len(widget.model.history) == 2
    assert widget.model.history[-1]["inputs"]["objects"] is True


def test_loaded_objects_model_turns_objects_mode_on(dock, qtbot, tmp_path):
    viewer, widget, image, syn = dock
    widget.annotate.objects.value = True
    ann = widget.annotate.new_annotations()
    object_strokes(syn, widget.annotate, ann)
    widget.training.train()
    wait_idle(qtbot, widget)
    widget.session.save(tmp_path / "m")
    widget.annotate.objects.value = False
    widget.training.new_model()
    widget.session.load(tmp_path / "m")
    assert widget.annotate.objects.value and not widget.review.accept_objects_btn.native.isHidden()


def test_semantic_model_objects_by_fallback(dock, qtbot):
    """Objects mode off while training: a semantic model; ticking objects then predicts objects from its
    foreground (distance watershed), and training on asks for a new model."""
    viewer, widget, image, syn = dock
    ann = widget.annotate.new_annotations()
    ann.data[...] = syn.semantic
    widget.training.train()
    wait_idle(qtbot, widget)
    assert widget.model.config.object_head == "none"
    assert objects_name("cells") not in viewer.layers  # semantic mode writes no objects layer
    widget.annotate.objects.value = True
    widget.review.predict()
    wait_idle(qtbot, widget)
    layer = viewer.layers[objects_name("cells")]
    assert widget.review.table.table.rowCount() == int(layer.data.max())
