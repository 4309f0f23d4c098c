"""`napari-unet demo`: napari with the synthetic sample and the U-Net widget docked."""

from __future__ import annotations

PLUGIN = "napari-unet-loop"
WIDGET = "U-Net (paint, train, predict)"


def open_demo_viewer(show: bool = True):
    import napari

    viewer = napari.Viewer(show=show)
    viewer.open_sample(PLUGIN, "nuclei_2d")
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    image = viewer.layers["nuclei"]
    widget.image_combo.value = image
    widget.labels_combo.value = viewer.layers["nuclei annotations"]
    viewer.layers.selection.active = viewer.layers["nuclei annotations"]
    return viewer, widget


def launch_demo():  # pragma: no cover - opens a window and blocks
    import napari

    open_demo_viewer()
    napari.run()
