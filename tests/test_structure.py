import subprocess
import sys

import numpy as np

from napari_unet.core.synthetic import demo_pair, make_nuclei, scribbles


def test_core_and_cli_import_no_gui():
    code = ("import sys, napari_unet, napari_unet.cli, napari_unet.config\n"
            "import napari_unet.core.training, napari_unet.core.inference, napari_unet.core.checkpoint\n"
            "import napari_unet.core.synthetic, napari_unet.core.metrics, napari_unet._sample_data\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'napari', 'magicgui', 'superqt', 'vispy')]\n"
            "print(bad); assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_synthetic_ground_truth_is_exact():
    syn = make_nuclei((64, 80), seed=3)
    assert syn.image.shape == (64, 80) and syn.image.dtype == np.float32
    np.testing.assert_array_equal(syn.semantic == 2, syn.instances > 0)
    assert len(np.unique(syn.instances)) > 5
    # nuclei are brighter than background on average
    assert syn.image[syn.semantic == 2].mean() > syn.image[syn.semantic == 1].mean()


def test_scribbles_are_sparse_and_correct():
    syn = make_nuclei((96, 96), seed=4)
    ann = scribbles(syn.semantic, seed=0, width=3)
    annotated = ann > 0
    assert 0.005 < annotated.mean() < 0.2
    np.testing.assert_array_equal(ann[annotated], syn.semantic[annotated])
    assert set(np.unique(ann)) == {0, 1, 2}


def test_3d_sample():
    img, ann, syn = demo_pair(3, seed=0)
    assert img.ndim == 3 and ann.shape == img.shape
    assert set(np.unique(ann)) == {0, 1, 2}
