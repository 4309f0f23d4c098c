"""Continuous training: annotation edits reach a running train() and change what it predicts."""

import numpy as np
import pytest

from conftest import TINY, tiny_train
from napari_unet.config import TrainConfig
from napari_unet.core.data import Sample
from napari_unet.core.inference import to_labels
from napari_unet.core.live import AnnotationMailbox, AnnotationsChanged, split_keeping_fresh
from napari_unet.core.training import Preview, Progress, train
from napari_unet.errors import UserError
from napari_unet.core.util import Notice


def _run(img, lab, box, on_progress, steps, **kw):
    previews, events = [], []
    gen = train(img, lab, model_config=TINY, annotations=box, poll_every=0.0, preview_every=0.0,
                preview=lambda: ("img", img, None, None),
                train_config=tiny_train(steps=steps, lr=1e-2, val_fraction=0, continuous=True, **kw))
    while True:
        try:
            ev = next(gen)
        except StopIteration as stop:
            return stop.value, events, previews
        events.append(ev)
        if isinstance(ev, Progress):
            on_progress(ev.step)
        if isinstance(ev, Preview):
            previews.append((ev.step, to_labels(ev.probabilities)))


def test_a_new_label_mid_run_flips_the_prediction(bands):
    img, lab = bands
    box = AnnotationMailbox()
    flipped = lab.copy()
    flipped[4:28, 20:28] = 2  # the user now calls the medium band object
    result, events, previews = _run(img, lab, box, lambda s: s == 60 and box.put(0, flipped), steps=160)
    medium = (slice(None), slice(18, 30))
    before = dict(previews)[60]
    assert (before[medium] == 1).mean() > 0.9, "the medium band should first be background"
    changed = [e for e in events if isinstance(e, AnnotationsChanged)]
    assert len(changed) == 1 and changed[0].step == 60 and changed[0].new_pixels == 24 * 8
    after = previews[-1][1]
    assert (after[medium] == 2).mean() > 0.9, "the new label did not flip the prediction"
    assert (after[:, :14] == 1).mean() > 0.9 and (after[:, 34:] == 2).mean() > 0.9
    # within 40 steps of the edit the preview has followed (the new strokes are favoured)
    soon = dict(previews)[100]
    assert (soon[medium] == 2).mean() > 0.5
    assert (lab[4:28, 20:28] == 1).all(), "the caller's annotations were changed"
    assert result.history[-1]["inputs"]["annotation_edits"] == 1


def test_a_bad_edit_is_a_notice_and_training_goes_on(bands):
    img, lab = bands
    box = AnnotationMailbox()
    bad = lab.copy()
    bad[0, 0] = 9  # a class the model does not have
    result, events, _ = _run(img, lab, box, lambda s: s == 3 and box.put(0, bad), steps=8)
    notes = [e.message for e in events if isinstance(e, Notice)]
    assert any("New annotations not used" in m and "label 9" in m for m in notes), notes
    assert result.steps == 8 and not any(isinstance(e, AnnotationsChanged) for e in events)


def test_open_ended_run_ends_when_stopped(bands):
    with pytest.raises(UserError, match="continuous"):
        TrainConfig(steps=None, time_budget=None)
    cfg = TrainConfig(steps=None, time_budget=None, continuous=True)
    assert cfg.continuous and TrainConfig.from_dict(cfg.to_dict()) == cfg
    img, lab = bands
    seen = []
    gen = train(img, lab, model_config=TINY, should_stop=lambda: len(seen) >= 12,
                train_config=tiny_train(steps=None, time_budget=None, continuous=True, val_fraction=0))
    while True:
        try:
            ev = next(gen)
        except StopIteration as stop:
            result = stop.value
            break
        if isinstance(ev, Progress):
            seen.append(ev)
            assert ev.fraction == 0.0  # no budget: no fraction of it
    assert result.steps == 12 and "averaged" in result.kept


def test_mailbox_keeps_a_private_copy_of_the_latest_state_per_image():
    box = AnnotationMailbox()
    assert box() is None and not box.pending
    a = np.zeros((4, 4), np.uint8)
    box.put(0, a)
    a[0, 0] = 2  # the GUI keeps painting: the copy handed over does not change
    box.put(1, a)
    box.put(0, a)
    got = box()
    assert [u.index for u in got] == [1, 0] and got[1].labels[0, 0] == 2 and got[1].version == 3
    assert box() is None


def test_new_strokes_are_never_held_out():
    rng = np.random.default_rng(0)
    lab = np.zeros((64, 64), np.int64)
    lab[::4, :] = 1
    lab[2::8, :] = 2
    fresh = np.zeros(lab.shape, bool)
    fresh[:, 40:] = lab[:, 40:] > 0
    s = Sample(np.zeros((1, 64, 64), np.float32), lab)
    train_s, val_s, regions = split_keeping_fresh([s], [fresh], 0.3, (16, 16), rng)
    assert regions
    assert (train_s[0].labels[fresh] == lab[fresh]).all()
    assert (val_s[0].labels[fresh] == 0).all()
    held = np.zeros(lab.shape, bool)
    for _, sl in regions:
        held[sl] = True
    assert (train_s[0].labels[held & ~fresh] == 0).all()


def test_live_data_rebuilds_a_stack_and_marks_the_new_plane():
    from napari_unet.core.live import AnnotationUpdate, LiveData

    rng = np.random.default_rng(1)
    img = rng.normal(0, 1, (3, 16, 16)).astype(np.float32)
    lab = np.zeros(img.shape, np.uint8)
    lab[0, :4] = 1
    lab[0, 8:12] = 2
    data = LiveData([img], [lab], 2, None, None, 1.0, 99.8)
    assert len(data.samples) == 1 and data.fresh == [None]
    new = lab.copy()
    new[2, 2:6, 2:6] = 2  # a stroke on another plane
    assert data.update([AnnotationUpdate(0, new, 1)]) == 16
    assert len(data.samples) == 2 and data.fresh[0] is None and data.fresh[1].sum() == 16
    np.testing.assert_array_equal(data.samples[1].labels, new[2])
    with pytest.raises(UserError, match="shape"):
        data.update([AnnotationUpdate(0, new[:, :8], 2)])
    assert len(data.samples) == 2 and data.annotated == int(np.count_nonzero(new))  # unchanged after a bad edit
