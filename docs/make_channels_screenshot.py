"""The channel picker screenshot of the user guide (docs/images/channels.png), at 1366x768.

    xvfb-run -a -s "-screen 0 1366x768x24" python docs/make_channels_screenshot.py

A 2-channel image opened as napari opens a channel_axis file (one layer per channel), both picked
as channels, a few strokes, a short training run: the panel says what went into training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtWidgets import QApplication
from skimage.io import imsave

from make_screenshots import pump  # the sibling script (this folder is on sys.path when run)

OUT = Path(__file__).parent / "images" / "channels.png"


def main():
    import napari

    from napari_unet.core.synthetic import make_nuclei, scribbles
    from napari_unet.widgets.main import UNetWidget

    syn = make_nuclei((256, 256), seed=1, radius=9, snr=8)
    rng = np.random.default_rng(0)
    membrane = (syn.semantic == 2).astype(np.float32)
    membrane = np.abs(np.gradient(membrane)[0]) + np.abs(np.gradient(membrane)[1]) + rng.normal(0, 0.1, membrane.shape)
    viewer = napari.Viewer(title="napari-unet: channels")
    nuclei, mem = viewer.add_image(np.stack([syn.image.astype(np.float32), membrane.astype(np.float32)]),
                                   channel_axis=0, name=["nuclei", "membrane"], colormap=["magenta", "green"])
    w = UNetWidget(viewer)
    viewer.window.add_dock_widget(w, name="U-Net", area="right")
    app = QApplication.instance()
    win = viewer.window._qt_window
    win.resize(1366, 768)
    w.annotate.channels.value = [nuclei, mem]
    ann = w.annotate.new_annotations()
    ann.data[...] = scribbles(syn.semantic, seed=2, width=2)
    ann.refresh()
    w.training.budget.value = 5
    w.training.train()
    pump(app, 60, until=lambda: w.worker is None and "nuclei prediction" in viewer.layers)
    pump(app, 1)
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    viewer.layers["nuclei probabilities"].visible = False
    viewer.layers["nuclei prediction"].visible = False  # the channels and the strokes show
    for toast in win.findChildren(NapariQtNotification):
        toast.close()
    viewer.layers.selection.active = ann
    viewer.reset_view()
    pump(app, 0.5)
    img = viewer.screenshot(canvas_only=False)
    print(f"channels.png: window {win.width()}x{win.height()}, image {img.shape[1]}x{img.shape[0]}")
    imsave(OUT, img, check_contrast=False)
    viewer.close()


if __name__ == "__main__":
    main()
