"""Qt/napari widgets. Thin: the work happens in :mod:`napari_unet.core`."""
