"""Regenerate the user guide's screenshots from a real viewer (needs a display: xvfb-run -a).

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/make_screenshots.py [--live]

``--live``: only the keep-training shot (5-keep-training.png: continuous training with the
uncertainty layer and the ranked lists, after a stroke painted while it trains).

Each state is shot at 1600x1000 (the guide's pictures) and at 1366x768 (a small laptop screen:
the whole dock must stay usable there).
"""

from __future__ import annotations

import time
from pathlib import Path

from qtpy.QtWidgets import QApplication
from skimage.io import imsave

OUT = Path(__file__).parent / "images"
SIZES = {"": (1600, 1000), "laptop-": (1366, 768)}


def pump(app, seconds, until=None):
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds and not (until and until()):
        app.processEvents()
        time.sleep(0.01)


def live():
    """Keep training with the uncertainty layer and lists; a stroke is painted while it trains."""
    import tempfile

    from napari_unet.core.events import AnnotationsChanged, Preview
    from napari_unet.widgets.launch import open_demo_viewer

    viewer, w = open_demo_viewer(show=True)
    app = QApplication.instance()
    win = viewer.window._qt_window
    win.resize(*SIZES[""])
    w.training.autosave.value = tempfile.mkdtemp(prefix="screenshot-")
    w.sections["train"].collapse(animate=False)
    w.sections["review"].collapse(animate=False)
    w.sections["model"].collapse(animate=False)
    w.sections["where"].expand(animate=False)
    w.where.enabled.value = True
    w.training.keep.value = True
    seen = []
    w.session.event.connect(lambda ev: seen.append(ev) if isinstance(ev, (Preview, AnnotationsChanged)) else None)
    w.training.train()
    pump(app, 120, until=lambda: sum(isinstance(e, Preview) for e in seen) >= 10)  # a model with some opinion
    ann = viewer.layers["nuclei annotations"]
    ann.brush_size = 5
    for x in range(60, 110, 2):  # a background stroke, as a user paints while it trains
        ann.paint((40, x), 1, refresh=True)
    pump(app, 30, until=lambda: any(isinstance(e, AnnotationsChanged) for e in seen)
         and isinstance(seen[-1], Preview))
    viewer.layers["nuclei probabilities"].visible = False
    pump(app, 0.6)
    viewer.reset_view()
    pump(app, 0.3)
    imsave(OUT / "5-keep-training.png", viewer.screenshot(canvas_only=False), check_contrast=False)
    print("5-keep-training.png")
    w.session.stop()
    pump(app, 30, until=lambda: w.worker is None)
    viewer.close()


def main():
    import sys

    if "--live" in sys.argv:
        return live()
    from napari_unet.core.events import Preview
    from napari_unet.widgets.launch import open_demo_viewer

    viewer, w = open_demo_viewer(show=True, time_budget=20)
    app = QApplication.instance()
    win = viewer.window._qt_window

    def shot(name, sizes=SIZES):
        for prefix, size in sizes.items():
            win.resize(*size)
            pump(app, 0.6)
            viewer.reset_view()
            pump(app, 0.3)
            img = viewer.screenshot(canvas_only=False)
            print(f"{prefix}{name}: window {win.width()}x{win.height()}, image {img.shape[1]}x{img.shape[0]}")
            imsave(OUT / f"{prefix}{name}", img, check_contrast=False)

    ann = viewer.layers["nuclei annotations"]
    ann.mode = "paint"
    ann.selected_label = 2
    shot("1-annotate.png", {"": SIZES[""]})
    previews = []
    w.session.event.connect(lambda ev: previews.append(ev) if isinstance(ev, Preview) else None)
    w.training.train()
    pump(app, 15, until=lambda: len(previews) >= 2 and len(w.training.plot.val) >= 2)
    shot("2-training.png")
    pump(app, 90, until=lambda: w.worker is None and "nuclei prediction" in viewer.layers)
    pump(app, 1)
    viewer.layers["nuclei probabilities"].visible = False
    shot("3-prediction.png", {"": SIZES[""]})
    w.review.accept_prediction()
    ann.selected_label = 1
    shot("4-accepted.png")
    viewer.close()


if __name__ == "__main__":
    main()
