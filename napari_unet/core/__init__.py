"""Headless core: model, data, training, prediction, model folders. Never imports Qt or napari."""
