import importlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

import napari_unet

ROOT = Path(__file__).resolve().parents[1]


def _manifest():
    return yaml.safe_load((ROOT / "napari.yaml").read_text())


def test_every_python_name_imports():
    commands = _manifest()["contributions"]["commands"]
    assert commands
    for cmd in commands:
        module, attr = cmd["python_name"].split(":")
        assert callable(getattr(importlib.import_module(module), attr)), cmd["python_name"]


def test_package_manifest_is_the_root_manifest():
    packaged = Path(napari_unet.__file__).parent / "napari.yaml"
    assert packaged.read_text() == (ROOT / "napari.yaml").read_text()


def test_npe2_validates_installed_plugin():
    proc = subprocess.run([sys.executable, "-m", "npe2", "validate", "napari-unet-loop"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "valid" in proc.stdout


def test_sample_data_opens_in_viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-unet-loop", "nuclei_2d")
    names = [lay.name for lay in viewer.layers]
    assert names == ["nuclei", "nuclei annotations"]
    ann = viewer.layers["nuclei annotations"]
    assert set(np.unique(ann.data)) == {0, 1, 2}


def test_demo_viewer_docks_widget(make_napari_viewer):
    from napari_unet.widgets.launch import open_demo_viewer

    viewer, widget = open_demo_viewer(show=False)
    try:
        assert widget.annotate.image.value.name == "nuclei"
        assert widget.annotate.labels.value.name == "nuclei annotations"
    finally:
        viewer.close()

