"""napari-unet-loop: paint, train a U-Net in the background, review, correct, retrain.

The Python API (no Qt needed)::

    from napari_unet import train_blocking, predict, load_model, to_labels
    result = train_blocking(image, labels, train_config=TrainConfig(time_budget=60))
    probs = predict(result.model, other_image)      # float32 (n_classes, *spatial)
    labels = to_labels(probs)                        # 1 = background, 2.. = classes
"""

__version__ = "0.1.0"

from .config import ModelConfig, PredictConfig, TrainConfig  # noqa: E402
from .errors import UserError  # noqa: E402


def __getattr__(name):
    # the torch-backed API is imported lazily so that `import napari_unet` (e.g. by npe2) stays light
    lazy = {
        "train": "training", "train_blocking": "training", "TrainResult": "training",
        "predict": "inference", "predict_iter": "inference", "to_labels": "inference",
        "Model": "checkpoint", "load_model": "checkpoint", "save_model": "checkpoint",
        "export_model": "export", "write_report": "report",
    }
    if name in lazy:
        import importlib

        return getattr(importlib.import_module(f".core.{lazy[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ModelConfig", "PredictConfig", "TrainConfig", "UserError", "train", "train_blocking", "TrainResult",
           "predict", "predict_iter", "to_labels", "Model", "load_model", "save_model", "export_model", "write_report",
           "__version__"]
