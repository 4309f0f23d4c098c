"""napari sample data: synthetic nuclei with scribble annotations (no downloads)."""

from __future__ import annotations

from ._colors import label_color_dict
from .core.synthetic import demo_pair

ANNOTATION_SUFFIX = " annotations"
CLASSES = ("background", "object")


def _layers(ndim: int, name: str):
    image, ann, _ = demo_pair(ndim, seed=0)
    return [
        (image, {"name": name}, "image"),
        (ann, {"name": name + ANNOTATION_SUFFIX, "opacity": 0.8, "colormap": label_color_dict(),
               "features": {"index": [0, 1, 2], "class": ["not annotated", *CLASSES]},
               "metadata": {"napari_unet_image": name, "class_names": list(CLASSES)}}, "labels"),
    ]


def sample_2d():
    return _layers(2, "nuclei")


def sample_3d():
    return _layers(3, "nuclei 3D")
