"""Where "Save model..." may write: never over the user's own files, a model only when asked.

Uses the core's check when it has one (``core.checkpoint.check_model_target``); until then a
small equivalent, same signature, so the widget's behaviour does not wait for it.
"""

from __future__ import annotations

try:
    from ..core.checkpoint import check_model_target, is_model_folder
except ImportError:  # pragma: no cover - replaced by the core check when it lands
    import json
    import os
    from pathlib import Path

    from ..core.checkpoint import CONFIG, FORMAT, WEIGHTS
    from ..errors import UserError

    def is_model_folder(folder) -> bool:
        """True when ``folder`` holds a napari-unet model (its config.json says so, or it has weights)."""
        folder = Path(folder)
        try:
            info = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
            return isinstance(info, dict) and info.get("format") == FORMAT
        except (OSError, ValueError, RecursionError):
            return (folder / WEIGHTS).is_file() and not (folder / CONFIG).exists()

    def check_model_target(folder, overwrite: bool = False, flag: str = "overwrite"):
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise UserError(f"Model output '{folder}' is a file, not a folder; choose a folder path.")
        if not folder.exists() or not any(os.scandir(folder)):
            return folder
        if is_model_folder(folder):
            if not overwrite:
                raise UserError(f"'{folder}' already holds a napari-unet model; pass {flag} to replace it, or "
                                "choose another folder.")
            return folder
        shown = ", ".join(sorted(e.name for e in os.scandir(folder))[:5])
        raise UserError(f"'{folder}' is not empty and not a napari-unet model folder (it holds {shown}); choose "
                        "an empty or new folder so nothing of yours is replaced.")

__all__ = ["check_model_target", "is_model_folder"]
