"""Objects mode: separation targets, instances by watershed, measurements, object AP, training."""

import numpy as np
import pytest
from conftest import TINY, tiny_train

from napari_unet.config import ModelConfig
from napari_unet.core import objects as obj_mod
from napari_unet.core.checkpoint import load_model, save_model
from napari_unet.core.inference import predict, split_outputs
from napari_unet.core.metrics import match_objects
from napari_unet.core.objects import (check_objects, distance_targets, instances_from_foreground,
                                      instances_from_output, measure, object_labels, table_csv, write_csv)
from napari_unet.core.synthetic import make_nuclei
from napari_unet.core.training import train_blocking
from napari_unet.errors import UserError


def two_touching_squares():
    obj = np.ones((9, 14), np.int64)
    obj[2:7, 2:7] = 2
    obj[2:7, 7:12] = 3
    obj[0, :] = 0  # a row not annotated
    return obj


def test_distance_targets_rim_includes_the_touching_neighbour():
    t = distance_targets(two_touching_squares())
    assert t.dtype == np.float32
    # a 5x5 object: distances 1 (rim), 2, 3 (centre) -> 1/3, 2/3, 1
    assert t[4, 4] == pytest.approx(1.0) and t[4, 9] == pytest.approx(1.0)
    assert t[4, 6] == pytest.approx(1 / 3) and t[4, 7] == pytest.approx(1 / 3)  # where the two touch
    assert t[2, 4] == pytest.approx(1 / 3) and t[3, 4] == pytest.approx(2 / 3)
    assert (t[two_touching_squares() <= 1] == 0).all()  # background and unannotated


def test_distance_targets_image_edge_is_not_a_rim_and_sampling_counts():
    obj = np.ones((5, 8), np.int64)
    obj[:, :4] = 2  # touches the top, bottom and left edges
    t = distance_targets(obj)
    assert t[2, 0] == pytest.approx(1.0) and t[2, 3] == pytest.approx(0.25)
    obj3 = np.ones((5, 9, 9), np.int64)
    obj3[1:4, 1:8, 1:8] = 2
    iso = distance_targets(obj3)
    aniso = distance_targets(obj3, sampling=(4.0, 1.0, 1.0))
    assert iso[2, 2, 4] == pytest.approx(2 / 2)  # z limits at distance 2 voxels
    assert aniso[2, 2, 4] == pytest.approx(2 / 4)  # z voxels are 4 units deep: y/x now limit


def discs(shape=(40, 60), centres=((20, 20), (20, 37)), r=10):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    inst = np.zeros(shape, np.int32)
    for k, (cy, cx) in enumerate(centres, start=1):
        inst[((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (inst == 0)] = k
    return inst


def test_watershed_splits_two_touching_discs():
    inst = discs()
    fg = inst > 0
    from scipy import ndimage as ndi

    assert ndi.label(fg)[1] == 1  # one blob for connected components
    by_edt = instances_from_foreground(fg)  # a semantic model's fallback
    assert by_edt.max() == 2 and by_edt.dtype == np.uint16
    assert match_objects(inst, by_edt)["ap"][0.7] == 1.0
    # with an objects head's distance map (here: the exact targets)
    dist = distance_targets(np.where(inst > 0, inst + 1, 1))
    probs = np.stack([1.0 - fg, fg.astype(float)]).astype(np.float32)
    by_head = instances_from_output(probs, dist)
    assert by_head.max() == 2
    assert match_objects(inst, by_head)["ap"][0.9] == 1.0


def test_head_decoding_splits_a_faint_touching_pair_of_unequal_size_and_keeps_a_dim_object():
    """Seeds are the distance map's h-maxima: an under-confident map (peaks ~0.4, below any fixed
    core threshold of 0.5) still splits a big and a small touching disc; a dim object whose map
    stays under the seed floor is kept (an unseeded foreground region), and map noise does not
    split a single disc."""
    from scipy import ndimage as ndi

    from napari_unet.core.objects import SEED_THRESHOLD

    yy, xx = np.mgrid[:40, :90]
    inst = np.zeros((40, 90), np.int32)
    inst[(yy - 20) ** 2 + (xx - 18) ** 2 <= 100] = 1  # r 10
    inst[((yy - 20) ** 2 + (xx - 33.5) ** 2 <= 36) & (inst == 0)] = 2  # r 6, touching
    inst[(yy - 20) ** 2 + (xx - 70) ** 2 <= 49] = 3  # apart, dim
    fg = inst > 0
    assert ndi.label(fg)[1] == 2
    target = distance_targets(np.where(inst > 0, inst + 1, 1))
    dist = ndi.gaussian_filter(0.45 * target, 1.5)
    dist[inst == 3] *= 0.1
    assert dist.max() < 0.5 and dist[inst == 3].max() < SEED_THRESHOLD
    probs = np.stack([1.0 - fg, fg.astype(float)]).astype(np.float32)
    lab = instances_from_output(probs, dist)
    assert lab.max() == 3
    assert match_objects(inst, lab)["ap"][0.7] == 1.0
    # a fixed core threshold (no h-maxima) merges the pair: what the test guards against
    assert instances_from_output(probs, dist, seed_h=1.0, seed_threshold=0.5).max() == 2
    noisy = ndi.gaussian_filter(0.8 * target, 1.0) + np.random.default_rng(0).normal(0, 0.02, fg.shape)
    one = instances_from_output(np.stack([1.0 - (inst == 1), (inst == 1) * 1.0]).astype(np.float32), noisy)
    assert one.max() == 1


def test_watershed_3d_and_stack_plane_by_plane():
    z, y, x = np.mgrid[:20, :30, :44]
    r2 = (z - 10) ** 2 + (y - 15) ** 2
    balls = (r2 + (x - 13) ** 2 <= 64) | (r2 + (x - 28) ** 2 <= 64)
    assert instances_from_foreground(balls, ndim=3, sampling=(1, 1, 1)).max() == 2
    stack = np.stack([discs() > 0] * 3)  # a 2D model on a stack: objects per plane, ids unique
    lab = instances_from_foreground(stack, ndim=2)
    assert lab.max() == 6 and len(np.unique(lab[1])) == 3


def test_measurements_against_hand_computed_values():
    inst = np.zeros((6, 8), np.uint16)
    inst[1:3, 1:4] = 1  # 6 pixels
    inst[4:6, 5:8] = 7  # 6 pixels
    img = np.arange(48, dtype=np.float32).reshape(6, 8)
    cols = measure(inst, img, scale=(0.5, 2.0))
    np.testing.assert_array_equal(cols["label"], [1, 7])
    np.testing.assert_allclose(cols["area"], [6.0, 6.0])  # 6 pixels x 0.5 x 2.0
    np.testing.assert_allclose(cols["centroid_y"], [1.5, 4.5])
    np.testing.assert_allclose(cols["centroid_x"], [2.0, 6.0])
    np.testing.assert_array_equal(cols["bbox_y_min"], [1, 4])
    np.testing.assert_array_equal(cols["bbox_x_max"], [4, 8])
    np.testing.assert_allclose(cols["mean_intensity"], [(9 + 10 + 11 + 17 + 18 + 19) / 6,
                                                        (37 + 38 + 39 + 45 + 46 + 47) / 6])
    np.testing.assert_allclose(cols["max_intensity"], [19, 47])
    two = measure(inst, np.stack([img, 2 * img], -1), channel_axis=-1)
    np.testing.assert_allclose(two["max_intensity_c1"], [38, 94])
    assert two["area"][0] == 6  # no scale: pixels
    vol = measure(np.ones((2, 3, 4), np.uint8), scale=(2, 1, 1))
    assert vol["volume"][0] == 48 and vol["centroid_z"][0] == 0.5
    text = table_csv(cols)
    assert text.splitlines()[0].startswith("label,area,pixels,centroid_y,centroid_x")
    assert text.splitlines()[2].startswith("7,6.0,6,4.5,6.0")


def test_write_csv_is_atomic(tmp_path):
    path = write_csv(tmp_path / "o.csv", {"label": np.array([1, 2]), "area": np.array([3.0, 4.5])})
    assert path.read_text() == "label,area\n1,3.0\n2,4.5\n"
    assert [p.name for p in tmp_path.iterdir()] == ["o.csv"]


def test_object_ap_hand_worked_example():
    truth = np.zeros((10, 12), np.int32)
    pred = np.zeros((10, 12), np.int32)
    truth[0:4, 0:4] = 1
    pred[0:4, 0:4] = 5  # exact: IoU 1
    truth[0:4, 6:10] = 2
    pred[0:4, 6:9] = 6  # 12 / 16 = IoU 0.75
    truth[6:8, 0:5] = 3  # missed
    pred[6:8, 7:10] = 9  # false positive
    m = match_objects(truth, pred, (0.5, 0.8, 0.9))
    assert m["tp"] == {0.5: 2, 0.8: 1, 0.9: 1}
    assert m["ap"][0.5] == pytest.approx(2 / 4)  # TP 2, FP 1, FN 1
    assert m["ap"][0.8] == pytest.approx(1 / 5)  # TP 1, FP 2, FN 2
    assert m["f1"][0.5] == pytest.approx(4 / 6)
    assert m["count_error"] == 0 and m["n_true"] == 3
    assert match_objects(truth, np.zeros_like(pred))["ap"][0.5] == 0.0


def test_object_labels_from_instances_any_ids_many_objects():
    inst = np.zeros((30, 30), np.uint64)
    inst.ravel()[::2] = np.arange(1, 451, dtype=np.uint64) * 2**40  # 450 one-pixel objects with huge ids
    before = inst.copy()
    lab, originals = object_labels(inst, from_instances=True)
    assert lab.max() == 451 and lab.min() == 1 and len(np.unique(lab)) == 451
    assert originals[2] == 2**40
    np.testing.assert_array_equal(inst, before)


def make_bad(kind):
    lab = np.zeros((3, 20, 20), np.uint16)
    lab[1, :, :2] = 1
    if kind == "semantic":
        lab[1, 3:6, 3:6] = lab[1, 10:13, 10:13] = lab[1, 15:18, 3:6] = 2
    elif kind == "same id":
        lab[1, 3:6, 3:6] = lab[1, 10:13, 10:13] = 2
        lab[1, 15:18, 3:6] = 3
    elif kind == "3d":
        lab[1, 3:6, 3:6] = lab[2, 3:6, 3:6] = 2
    return lab


@pytest.mark.parametrize("kind,ndim,match", [
    ("semantic", 2, "look semantic"), ("same id", 2, "value 2 marks 2 separate regions"),
    ("3d", 2, "spans several planes"),
])
def test_bad_object_annotations_refused_untouched(kind, ndim, match, rng):
    lab = make_bad(kind)
    before = lab.copy()
    img = rng.random(lab.shape).astype(np.float32)
    with pytest.raises(UserError, match=match) as e:
        train_blocking(img, lab, model_config=TINY, train_config=tiny_train(), objects=True)
    assert "\n" not in str(e.value)
    np.testing.assert_array_equal(lab, before)


def test_binary_mask_as_instances_and_too_many_objects(monkeypatch):
    binary = np.zeros((20, 20), np.uint8)
    binary[2:5, 2:5] = binary[10:13, 10:13] = binary[15:18, 2:5] = 1
    obj, orig = object_labels(binary, from_instances=True)
    with pytest.raises(UserError, match="binary mask"):
        check_objects(obj, 2, originals=orig, from_instances=True)
    monkeypatch.setattr(obj_mod, "MAX_OBJECTS", 3)
    with pytest.raises(UserError, match="at most 2 are supported"):
        object_labels(np.arange(16).reshape(4, 4), from_instances=True)


def test_3d_objects_in_3d_model_are_fine_and_touching_same_id_not_flagged():
    lab = make_bad("3d")
    check_objects(object_labels(lab)[0], 3)
    touching = np.ones((10, 10), np.int64)
    touching[2:5, 2:8] = 2  # two objects painted with one value, touching: one region, not detectable
    check_objects(touching, 2)


@pytest.fixture(scope="module")
def crowded():
    syn = make_nuclei((64, 64), seed=3, radius=6, snr=20)
    return syn


def test_objects_training_predict_warm_start_and_save(crowded, tmp_path):
    syn = crowded
    res = train_blocking(syn.image, syn.instances, model_config=TINY, train_config=tiny_train(steps=4),
                         from_instances=True, objects=True)
    mc = res.model.config
    assert mc.object_head == "distance" and mc.class_names == ("background", "object")
    assert res.history[-1]["inputs"]["objects"] is True  # recorded with the run
    assert predict(res.model, syn.image).shape == (2, 64, 64)  # the probability map, as always
    out = predict(res.model, syn.image, extras=True)
    probs, dist = split_outputs(res.model, out)
    assert out.shape == (3, 64, 64) and dist.shape == (64, 64) and 0 <= dist.min() and dist.max() <= 1
    np.testing.assert_allclose(probs.sum(0), 1, atol=1e-5)
    inst = instances_from_output(probs, dist)
    assert inst.dtype == np.uint16
    save_model(res.model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.config.object_head == "distance"
    # warm start: objects mode follows the initial model; painted sparse objects (values 2..)
    sparse = np.zeros((64, 64), np.uint16)
    sparse[:, :3] = 1
    ids = np.unique(syn.instances[syn.instances > 0])[:3]
    for k, i in enumerate(ids):
        sparse[syn.instances == i] = 10 + k
    res2 = train_blocking(syn.image, sparse, train_config=tiny_train(steps=2), init=loaded)
    assert res2.model.config.object_head == "distance" and res2.steps == 2


def test_old_model_config_without_object_head_loads():
    d = ModelConfig().to_dict()
    d.pop("object_head")
    assert ModelConfig.from_dict(d).object_head == "none"
    assert ModelConfig(object_head="distance").n_extra == 1


def test_objects_mode_needs_an_objects_model(crowded):
    syn = crowded
    sem = train_blocking(syn.image, syn.semantic, model_config=TINY, train_config=tiny_train(steps=1))
    with pytest.raises(UserError, match="start a new model for objects mode"):
        train_blocking(syn.image, syn.instances, train_config=tiny_train(steps=1), init=sem.model,
                       from_instances=True, objects=True)
    # a semantic model still gives objects (distance-transform watershed on its foreground)
    inst = instances_from_output(predict(sem.model, syn.image))
    assert inst.shape == (64, 64)


def test_3d_objects_training():
    syn = make_nuclei((16, 32, 32), seed=2, radius=5, snr=20)
    res = train_blocking(syn.image, syn.instances, model_config=ModelConfig(ndim=3, depth=2, width=4),
                         train_config=tiny_train(steps=2, patch_size=(16, 32, 32)), from_instances=True, objects=True)
    probs, dist = split_outputs(res.model, predict(res.model, syn.image, extras=True))
    assert dist.shape == (16, 32, 32)
    assert instances_from_output(probs, dist, ndim=3, sampling=(2, 1, 1)).shape == (16, 32, 32)


def test_export_of_an_objects_model_gives_class_probabilities():
    from napari_unet.core.checkpoint import Model
    from napari_unet.core.export import expected_output

    model = Model.new(TINY.replace(object_head="distance"), seed=0)
    model.net.eval()
    x = (np.random.default_rng(1).random((1, 1, 32, 32)) * 100).astype(np.float32)
    out = expected_output(model, x)
    assert out.shape == (1, 2, 32, 32)  # the distance channel is not part of the exported softmax
    np.testing.assert_allclose(out[0], predict(model, x[0], channel_axis=0), atol=1e-5)
