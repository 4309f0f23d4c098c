"""What a training run records for reproducibility: versions, data fingerprints, a readable summary.

Each training session appends one entry to the model's history (``config.json``); besides the
steps, time and kept weights it holds ``settings`` (every TrainConfig field as used), ``model``
(the ModelConfig), ``versions``, ``seeds``, ``data`` (a fingerprint per image and annotation) and
``losses`` (the loss of each step, exact floats) so a run can be checked and repeated.
"""

from __future__ import annotations

import hashlib
import platform
import sys

import numpy as np

MAX_LOSSES = 20_000  # per session; beyond this the record keeps every k-th loss (and says so)


def versions(device=None) -> dict:
    """Software and hardware the run used."""
    import torch

    from .. import __version__

    out = {"napari_unet": __version__, "torch": torch.__version__, "numpy": np.__version__,
           "python": sys.version.split()[0], "platform": platform.platform(terse=True),
           "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None}
    if device is not None:
        out["device"] = str(device)
    return out


def fingerprint(array, labels: bool = False) -> dict:
    """Shape, dtype and SHA-256 of an array's C-order bytes; for labels also pixels per label value."""
    a = np.ascontiguousarray(np.asarray(array))
    h = hashlib.sha256()
    flat = a.reshape(-1).view(np.uint8) if a.size else np.zeros(0, np.uint8)
    step = 1 << 26
    for i in range(0, flat.size, step):  # chunked: no second copy of a large image
        h.update(flat[i:i + step].data)
    out = {"shape": list(a.shape), "dtype": str(a.dtype), "sha256": h.hexdigest()}
    if labels and a.dtype.kind in "iu":
        counts = np.bincount(a.reshape(-1).astype(np.int64).clip(0), minlength=2)
        out["annotated"] = int(a.size - counts[0])
        out["pixels_per_label"] = {str(v): int(c) for v, c in enumerate(counts) if v > 0 and c > 0}
    return out


def data_fingerprints(images, labels) -> list[dict]:
    return [{"image": fingerprint(i), "labels": fingerprint(lab, labels=True)} for i, lab in zip(images, labels)]


def thin_losses(losses: list[float]) -> tuple[list[float], int]:
    """At most MAX_LOSSES losses: every k-th one (returns the list and k)."""
    k = max(1, -(-len(losses) // MAX_LOSSES))
    return losses[::k], k


def sessions(model) -> list[dict]:
    """The training sessions (rounds) in a model's history, oldest first."""
    return [h for h in model.history if isinstance(h, dict) and "steps" in h]


def summary_lines(model) -> list[str]:
    """Markdown bullet lines describing how the model was trained (for READMEs and reports)."""
    out = []
    for i, h in enumerate(sessions(model), 1):
        line = f"- round {i}: {h.get('steps')} steps in {h.get('seconds')} s on {h.get('device')}"
        line += " (continued from the previous weights)" if h.get("warm_start") else ""
        runs = [r for r in h.get("runs", []) if r.get("val_iou") is not None]
        if runs:
            line += f"; held-out IoU {max(r['val_iou'] for r in runs):.3f}"
        line += f"; kept {h.get('kept')}"
        data = h.get("data")
        if data:
            ann = sum(d["labels"].get("annotated", 0) for d in data)
            line += f"; {len(data)} image(s), {ann} annotated pixels"
        out.append(line)
    return out


__all__ = ["versions", "fingerprint", "data_fingerprints", "sessions", "summary_lines", "thin_losses"]
