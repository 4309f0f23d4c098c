import numpy as np
import pytest

from napari_unet.core.data import (ImageView, PatchSampler, Sample, augment, check_annotations, check_labels,
                                   compute_percentiles, instances_to_classes, make_samples, normalize,
                                   split_validation)
from napari_unet.errors import UserError


def test_percentile_normalisation_maps_to_unit_range(rng):
    img = rng.normal(100, 10, (64, 64)).astype(np.float32)
    view = ImageView(img)
    pct = compute_percentiles(view, 1, 99)
    out = normalize(view.read((slice(None), slice(None))), pct)
    assert out.shape == (1, 64, 64) and out.dtype == np.float32
    assert abs(np.percentile(out, 1)) < 0.05 and abs(np.percentile(out, 99) - 1) < 0.05


def test_constant_and_nan_images_give_finite_values():
    const = np.full((16, 16), 7.0, np.float32)
    pct = compute_percentiles(ImageView(const), 1, 99.8)
    assert np.isfinite(normalize(const[None], pct)).all()
    bad = np.ones((16, 16), np.float32)
    bad[0, 0], bad[1, 1], bad[2, 2] = np.nan, np.inf, -np.inf
    out = normalize(bad[None], compute_percentiles(ImageView(bad), 1, 99.8))
    assert np.isfinite(out).all()
    with pytest.raises(UserError, match="no finite value"):
        compute_percentiles(ImageView(np.full((4, 4), np.nan)), 1, 99)


def test_channel_axis_view_reads_channels_first(rng):
    img = rng.random((5, 6, 3)).astype(np.float32)  # YXC
    view = ImageView(img, channel_axis=-1)
    assert view.n_channels == 3 and view.spatial_shape == (5, 6)
    np.testing.assert_array_equal(view.read((2, slice(None))), img[2].T)
    stack = rng.random((4, 2, 5, 6)).astype(np.float32)  # ZCYX
    v2 = ImageView(stack, channel_axis=1)
    np.testing.assert_array_equal(v2.read((3, slice(None), slice(None))), stack[3])


@pytest.mark.parametrize("labels,match", [
    (np.array([[0, 1.5]]), "fractional"),
    (np.array([[0, -1]]), "negative"),
    (np.array([[True, False]]), "boolean"),
    (np.array([["a", "b"]]), "integers"),
    (np.array([[0, np.nan]]), "NaN"),
])
def test_bad_label_values_are_refused(labels, match):
    with pytest.raises(UserError, match=match):
        check_labels(labels)


def test_check_labels_copies_and_never_alters_input():
    lab = np.array([[0, 1], [2, 2]], np.uint8)
    before = lab.copy()
    out = check_labels(lab)
    out[0, 0] = 5
    np.testing.assert_array_equal(lab, before)


def test_annotation_content_checks():
    with pytest.raises(UserError, match="no annotated pixel"):
        check_annotations([np.zeros((4, 4), np.int64)])
    with pytest.raises(UserError, match="Only label 2"):
        check_annotations([np.array([[0, 2]])])
    assert check_annotations([np.array([[1, 3]])]) == 3
    with pytest.raises(UserError, match="start a new model"):
        check_annotations([np.array([[1, 3]])], n_classes=2)


def test_instances_to_classes():
    inst = np.array([[0, 5], [17, 0]])
    np.testing.assert_array_equal(instances_to_classes(inst), [[1, 2], [2, 1]])


def test_make_samples_keeps_annotated_planes_only(rng):
    stack = rng.random((5, 16, 16)).astype(np.float32)
    lab = np.zeros((5, 16, 16), np.uint8)
    lab[1, :2] = 1
    lab[3, 5:7] = 2
    samples = make_samples([stack], [lab], 2, None, None, 1, 99.8)
    assert len(samples) == 2
    assert samples[0].labels[:2].min() == 1 and samples[1].labels[5:7].min() == 2


def test_make_samples_shape_and_dimension_errors(rng):
    with pytest.raises(UserError, match="must match"):
        make_samples([rng.random((8, 8))], [np.ones((8, 9), np.uint8)], 2, None, None, 1, 99)
    with pytest.raises(UserError, match="3D model needs ZYX"):
        make_samples([rng.random((8, 8))], [np.ones((8, 8), np.uint8)], 3, None, None, 1, 99)
    with pytest.raises(UserError, match="fewer than 2 spatial axes"):
        make_samples([rng.random(8)], [np.ones(8, np.uint8)], 2, None, None, 1, 99)
    with pytest.raises(UserError, match="expects 2"):
        make_samples([rng.random((8, 8))], [np.ones((8, 8), np.uint8)], 2, 2, None, 1, 99)


def test_validation_split_holds_out_blocks(easy2d):
    syn, _ = easy2d
    s = Sample(np.zeros((1, 64, 64), np.float32), syn.semantic.astype(np.int64))
    train, regions = split_validation([s], 0.2, (16, 16), np.random.default_rng(0))
    assert regions
    for si, sl in regions:
        assert (train[si].labels[sl] == 0).all()  # held out of training
        assert (s.labels[sl] > 0).all()  # the original is untouched
    held = sum(np.count_nonzero(s.labels[sl]) for _, sl in regions)
    assert 0.1 < held / s.labels.size < 0.5


def test_sampler_centres_patches_on_sparse_strokes(easy2d):
    syn, ann = easy2d
    big = np.zeros((256, 256), np.int64)
    big[:64, :64] = ann  # strokes in one corner of a large image
    s = Sample(np.zeros((1, 256, 256), np.float32), big)
    sampler = PatchSampler([s], (32, 32), annotated_fraction=0.9, augment=False, seed=0)
    hits = [np.count_nonzero(sampler.draw()[1]) > 0 for _ in range(100)]
    assert np.mean(hits) > 0.8  # uniform sampling would hit about 10%


def test_augment_keeps_image_and_labels_aligned():
    rng = np.random.default_rng(3)
    lab = np.zeros((8, 12, 12), np.int64)
    lab[2:5, 1:4, 6:11] = 2
    img = (lab == 2).astype(np.float32)[None]
    for _ in range(10):
        a_img, a_lab = augment(img, lab, rng)
        assert a_img.shape == (1, 8, 12, 12)
        np.testing.assert_array_equal(a_img[0] > a_img[0].mean(), a_lab == 2)


def test_validation_split_is_stable_when_annotations_grow():
    """A retrain on more strokes holds out the same places: never scores what it trained on before."""
    rng = np.random.default_rng(5)
    lab = np.zeros((128, 128), np.int64)
    lab[rng.random(lab.shape) < 0.02] = 1
    lab[rng.random(lab.shape) < 0.02] = 2
    grown = lab.copy()
    grown[rng.random(lab.shape) < 0.02] = 2  # a correction round: more strokes, old ones kept
    img = np.zeros((1, 128, 128), np.float32)

    def held(labels, seed):
        _, regions = split_validation([Sample(img, labels)], 0.2, (16, 16), np.random.default_rng(seed))
        return {(sl[0].start, sl[1].start) for _, sl in regions}

    before, after = held(lab, 0), held(grown, 0)
    assert before and before <= after  # what was held out stays held out (more may join as strokes grow)
    assert len(after - before) <= 1
    assert held(lab, 0) == before  # the same seed, the same split
    assert any(held(lab, s) != before for s in (1, 2, 3))  # the seed moves it
