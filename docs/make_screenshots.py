"""Regenerate the user guide's screenshots from a real viewer (needs a display: xvfb-run -a).

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/make_screenshots.py
"""

from __future__ import annotations

import time
from pathlib import Path

from qtpy.QtWidgets import QApplication
from skimage.io import imsave

OUT = Path(__file__).parent / "images"


def pump(app, seconds, until=None):
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds and not (until and until()):
        app.processEvents()
        time.sleep(0.01)


def main():
    from napari_unet.widgets.launch import open_demo_viewer

    viewer, w = open_demo_viewer(show=True)
    app = QApplication.instance()
    viewer.window._qt_window.resize(1400, 900)
    pump(app, 1)
    viewer.reset_view()

    def shot(name):
        pump(app, 0.5)
        imsave(OUT / name, viewer.screenshot(canvas_only=False), check_contrast=False)

    ann = viewer.layers["nuclei annotations"]
    ann.mode = "paint"
    ann.selected_label = 2
    shot("1-annotate.png")
    w.budget_spin.setValue(20)
    w.train()
    pump(app, 9, until=lambda: w.first_preview_seconds is not None and w.plot.val)
    pump(app, 3)
    shot("2-training.png")
    pump(app, 60, until=lambda: w.worker is None and "nuclei prediction" in viewer.layers)
    pump(app, 1)
    viewer.layers["nuclei probabilities"].visible = False
    shot("3-prediction.png")
    w._accept()
    viewer.layers["nuclei prediction"].visible = False
    ann.selected_label = 1
    shot("4-accepted.png")
    viewer.close()


if __name__ == "__main__":
    main()
