"""The objects layer and the objects table in a real viewer (pytest-qt, Xvfb)."""

import csv

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_unet.core.objects import measure
from napari_unet.widgets.objects_layer import accept_objects, object_count, write_objects
from napari_unet.widgets.objects_table import ObjectsTable


@pytest.fixture
def scene(make_napari_viewer):
    viewer = make_napari_viewer()
    img = np.zeros((40, 60), np.float32)
    inst = np.zeros((40, 60), np.uint16)
    inst[5:10, 5:15] = 1  # 50 px
    inst[20:36, 30:50] = 2  # 320 px
    inst[30:32, 2:4] = 3  # 4 px
    img[inst > 0] = inst[inst > 0] * 10.0
    image = viewer.add_image(img, name="cells", scale=(0.5, 0.25), translate=(3.0, -2.0))
    cols = measure(inst, img, scale=image.scale)
    return viewer, image, inst, cols


def test_objects_layer_named_aligned_reused_with_features(scene):
    viewer, image, inst, cols = scene
    layer = write_objects(viewer, image, inst, cols)
    assert layer.name == "cells objects"
    assert tuple(layer.scale) == (0.5, 0.25) and tuple(layer.translate) == (3.0, -2.0)
    assert list(layer.features["index"]) == [1, 2, 3]
    np.testing.assert_allclose(layer.features["area"], [50 * 0.125, 320 * 0.125, 4 * 0.125])
    assert viewer.layers.index(layer) == viewer.layers.index(image) + 1
    # hover shows the object's measurements
    status = layer.get_status(layer.data_to_world((25, 40)), world=True)
    assert "area: 40" in str(status)
    # reused by name on the next prediction
    again = write_objects(viewer, image, inst[::-1].copy(), measure(inst[::-1].copy()))
    assert again is layer and len([lay for lay in viewer.layers if lay.name == "cells objects"]) == 1
    assert object_count(layer) == 3


def test_objects_table_sorts_centres_and_saves(scene, qtbot, tmp_path):
    viewer, image, inst, cols = scene
    layer = write_objects(viewer, image, inst, cols)
    table = ObjectsTable(viewer)
    qtbot.addWidget(table)
    table.set_layer(layer)
    assert table.count_label.text() == "3 objects"
    headers = [table.table.horizontalHeaderItem(c).text() for c in range(table.table.columnCount())]
    assert headers[:3] == ["label", "area", "pixels"]
    # sort by area, largest first: object 2 on top
    table.table.sortItems(headers.index("area"), Qt.DescendingOrder)
    assert table.table.item(0, 0).text() == "2" and table.table.item(2, 0).text() == "3"
    # a click on the top row centres the view on object 2 (centroid y 27.5, x 39.5 in pixels)
    rect = table.table.visualItemRect(table.table.item(0, 1))
    qtbot.mouseClick(table.table.viewport(), Qt.LeftButton, pos=rect.center())
    expected = layer.data_to_world((27.5, 39.5))
    np.testing.assert_allclose(viewer.camera.center[-2:], expected, atol=1e-6)
    assert layer.selected_label == 2
    path = table.save_csv(tmp_path / "objects.csv")
    rows = list(csv.DictReader(open(path)))
    assert [r["label"] for r in rows] == ["1", "2", "3"] and float(rows[1]["area"]) == 40.0


def test_table_centres_on_a_plane_of_a_stack(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    inst = np.zeros((5, 20, 20), np.uint16)
    inst[3, 10:14, 2:6] = 1
    image = viewer.add_image(np.zeros((5, 20, 20), np.float32), name="stack")
    layer = write_objects(viewer, image, inst, measure(inst))
    table = ObjectsTable(viewer)
    qtbot.addWidget(table)
    table.set_layer(layer)
    table.centre_on(0)
    assert viewer.dims.current_step[0] == 3
    np.testing.assert_allclose(viewer.camera.center[-2:], (11.5, 3.5))


def test_accept_objects_fills_unpainted_pixels_only(make_napari_viewer):
    viewer = make_napari_viewer()
    ann_data = np.zeros((10, 10), np.uint8)
    ann_data[0, :] = 1
    ann_data[2:4, 2:4] = 254  # a painted object
    ann = viewer.add_labels(ann_data.copy(), name="cells annotations")
    inst = np.zeros((10, 10), np.uint16)
    inst[2:5, 2:5] = 1  # overlaps the painted object
    inst[6:9, 6:9] = 2
    filled = accept_objects(ann, inst)
    data = np.asarray(ann.data)
    assert filled == 100 - 10 - 4
    assert (data[0] == 1).all() and (data[2:4, 2:4] == 254).all()  # painted pixels untouched
    assert data.dtype == np.uint32  # widened: new values 255 and 256
    assert data[4, 4] == 255 and (data[6:9, 6:9] == 256).all() and data[5, 5] == 1
