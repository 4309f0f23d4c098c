"""Regenerate the objects-mode screenshots (docs/images/objects.png, laptop-objects.png) from a real viewer.

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/make_objects_screenshot.py

Synthetic touching nuclei, the left half annotated object by object (background 1, each nucleus its
own value), trained in objects mode, predicted: the "<image> objects" layer and its table in view.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import QApplication, QScrollArea
from skimage.io import imsave

from make_screenshots import OUT, SIZES, pump

BUDGET = 150  # seconds of training


def main():
    import napari

    from napari_unet.core.synthetic import make_nuclei
    from napari_unet.widgets.launch import PLUGIN, WIDGET, quiet_qt5_notice

    quiet_qt5_notice()
    syn = make_nuclei((192, 192), seed=4, radius=9, snr=10)
    viewer = napari.Viewer(show=True)
    image = viewer.add_image(syn.image, name="nuclei", scale=(0.5, 0.5))  # 0.5 um pixels: areas in um^2
    _, w = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    app = QApplication.instance()
    win = viewer.window._qt_window
    w.annotate.image.value = image
    w.annotate.objects.value = True
    ann = w.annotate.new_annotations()
    half = syn.instances.shape[1] // 2
    left = syn.instances[:, :half]
    data = np.zeros(syn.instances.shape, np.uint8)
    data[:, :half][left == 0] = 1
    for value, i in enumerate(np.unique(left[left > 0]), start=2):  # one value per object, as 'New object' gives
        data[:, :half][left == i] = value
    ann.data = data
    w.training.budget.value = BUDGET
    w.training.train()
    pump(app, BUDGET + 120, until=lambda: w.worker is None and "nuclei objects" in viewer.layers)
    pump(app, 1)
    for name in ("nuclei probabilities", "nuclei prediction"):
        if name in viewer.layers:
            viewer.layers[name].visible = False
    ann.visible = False
    layer = viewer.layers["nuclei objects"]
    viewer.layers.selection.active = layer
    table = w.review.table
    table.table.selectRow(0)
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    for toast in win.findChildren(NapariQtNotification):  # the hints shown while setting up
        toast.close()
    scroll = w.findChild(QScrollArea)
    for prefix, size in SIZES.items():
        win.resize(*size)
        pump(app, 0.6)
        viewer.reset_view()
        # the table in view, on a small screen too (scrolled down only: the dock is as wide as it needs)
        scroll.verticalScrollBar().setValue(w.sections["objects"].y())
        print("dock", w.width(), "needs", w.minimumWidth(), "content", scroll.widget().width(),
              "viewport", scroll.viewport().width())
        pump(app, 0.3)
        img = viewer.screenshot(canvas_only=False)
        print(f"{prefix}objects.png: window {win.width()}x{win.height()}, {table.table.rowCount()} objects, "
              f"truth {int(syn.instances.max())}")
        imsave(OUT / f"{prefix}objects.png", img, check_contrast=False)
    viewer.close()


if __name__ == "__main__":
    main()
