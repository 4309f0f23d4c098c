"""`napari-unet demo`: napari with the synthetic sample and the U-Net widget docked."""

from __future__ import annotations

from ..config import DEMO_TIME_BUDGET

PLUGIN = "napari-unet-loop"
WIDGET = "U-Net (paint, train, predict)"


def quiet_qt5_notice() -> None:
    """napari 0.9 shows "PyQt5 support is deprecated" at each start. napari offers no setting for it;
    its own test fixture turns the module flag off, and so does our demo. Other users see it once
    per start; installing PyQt6 (`pip install pyqt6`) instead of PyQt5 also works and shows nothing."""
    try:
        from napari._qt import qt_main_window
    except ImportError:  # pragma: no cover - napari moved it: the notice simply shows
        return
    if hasattr(qt_main_window, "SHOW_QT_WARNING"):
        qt_main_window.SHOW_QT_WARNING = False


def open_demo_viewer(show: bool = True, time_budget: float = DEMO_TIME_BUDGET):
    import napari

    quiet_qt5_notice()
    viewer = napari.Viewer(show=show)
    viewer.open_sample(PLUGIN, "nuclei_2d")
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    widget.annotate.image.value = viewer.layers["nuclei"]
    widget.annotate.labels.value = viewer.layers["nuclei annotations"]
    widget.training.budget.value = int(time_budget)
    viewer.layers.selection.active = viewer.layers["nuclei annotations"]
    return viewer, widget


def launch_demo(time_budget: float = DEMO_TIME_BUDGET):  # pragma: no cover - opens a window and blocks
    import napari

    open_demo_viewer(time_budget=time_budget)
    napari.run()
