"""The simulated user runs end to end on tiny data (few steps, a tiny net, a small forest)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import loop_sim  # noqa: E402

TINY = ["--steps", "3", "--depth", "2", "--width", "4", "--patch", "32", "--trees", "5", "--device", "cpu"]


def test_loop_sim_end_to_end_on_files(tmp_path, capsys):
    from napari_unet.core.synthetic import make_nuclei

    syn = make_nuclei((80, 80), seed=1, radius=6, snr=10)
    tifffile.imwrite(tmp_path / "i.tif", syn.image)
    tifffile.imwrite(tmp_path / "gt.tif", syn.instances.astype(np.uint16))
    out = loop_sim.main(["--image", str(tmp_path / "i.tif"), "--truth", str(tmp_path / "gt.tif"), "--rounds", "3",
                         "--strokes", "4", "--json", str(tmp_path / "o.json")] + TINY)
    saved = json.loads((tmp_path / "o.json").read_text())
    assert saved["unet"] == out["unet"] and len(saved["unet"]) == len(saved["forest"]) == 3
    assert all(0 <= v <= 1 for v in saved["unet"] + saved["forest"])
    px = saved["annotated_pixels"]
    assert px[0] > 0 and px[0] <= px[1] <= px[2]  # corrective strokes only add annotations
    assert saved["forest"][-1] > 0.3  # the forest learns from the simulated strokes
    table = capsys.readouterr().out
    assert table.count("\n| ") >= 4 and "U-Net IoU" in table


def test_annotator_paints_only_the_top_part_and_the_true_class():
    from napari_unet.core.synthetic import make_nuclei

    syn = make_nuclei((96, 96), seed=2, radius=7)
    user = loop_sim.Annotator(syn.instances, top=48, seed=0)
    ann = np.zeros(syn.image.shape, np.uint8)
    user.first(ann, 6)
    assert (ann[48:] == 0).all() and {1, 2} <= set(np.unique(ann))
    painted = ann > 0
    assert (ann[painted] == user.cls[painted]).all()
    wrong = np.ones_like(ann)  # a prediction of all background: the objects are the wrong regions
    n = user.correct(ann, wrong, 3)
    assert n == 3 and (ann[48:] == 0).all() and (ann[ann > 0] == user.cls[ann > 0]).all()


def test_bad_arguments_are_refused():
    with pytest.raises(SystemExit):
        loop_sim.main(["--image", "x.tif"])


def test_train_overrides_reach_the_u_net(tmp_path):
    from napari_unet.core.synthetic import make_nuclei
    from napari_unet.errors import UserError

    syn = make_nuclei((80, 80), seed=1, radius=6, snr=10)
    tifffile.imwrite(tmp_path / "i.tif", syn.image)
    tifffile.imwrite(tmp_path / "gt.tif", syn.instances.astype(np.uint16))
    files = ["--image", str(tmp_path / "i.tif"), "--truth", str(tmp_path / "gt.tif"), "--rounds", "1"]
    out = loop_sim.main(files + TINY + ["--train", "val_fraction=0"])
    assert out["unet_kept_step"] == [None] and out["settings"]["train"] == ["val_fraction=0"]
    with pytest.raises(UserError, match="val_fraction"):
        loop_sim.main(files + TINY + ["--train", "val_fraction=2"])
