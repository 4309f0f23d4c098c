"""Small pieces of the training loop: class weights for the loss and the averaged (EMA) weights."""

from __future__ import annotations

import numpy as np
import torch

from .data import class_counts


def class_weights(labels_list, n_classes: int, power: float) -> torch.Tensor:
    """Loss weight per class, frequency ** -power over the training annotations (mean 1)."""
    counts = np.zeros(n_classes, np.float64)
    present = class_counts(labels_list)[1:n_classes + 1]
    counts[:len(present)] = present
    freq = counts / max(counts.sum(), 1)
    w = np.where(counts > 0, np.maximum(freq, 1e-6) ** -power, 1.0)
    return torch.tensor(w / w.mean(), dtype=torch.float32)


@torch.no_grad()
def ema_update(avg: torch.nn.Module, net: torch.nn.Module, decay: float) -> None:
    avg_p = [p for p in avg.parameters()]
    torch._foreach_lerp_(avg_p, [p.detach() for p in net.parameters()], 1 - decay)
    for a, b in zip(avg.buffers(), net.buffers()):
        a.copy_(b)  # batch-norm statistics: already running averages


__all__ = ["class_weights", "ema_update"]
