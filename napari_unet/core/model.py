"""U-Net for 2D and 3D images with configurable depth, width and normalisation.

Any input size works: the input is padded (replicate) to a multiple of ``config.size_multiples`` per
axis (``2**depth`` unless the voxels are anisotropic) and the output cropped back, so the caller never
has to think about sizes. Anisotropic voxels (``config.voxel_size``) pool each axis per
``config.pool_plan`` and use the kernels of ``config.conv_kernels`` (core/anisotropy.py); isotropic
ones build exactly the plain U-Net (same modules, same weight names and shapes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig


def _norm(kind: str, ndim: int, ch: int) -> nn.Module:
    if kind == "batch":
        return (nn.BatchNorm2d if ndim == 2 else nn.BatchNorm3d)(ch)
    if kind == "instance":
        return (nn.InstanceNorm2d if ndim == 2 else nn.InstanceNorm3d)(ch, affine=True)
    if kind == "group":
        return nn.GroupNorm(min(8, ch), ch)
    return nn.Identity()


def _k(kernel: tuple[int, ...]):
    """A kernel/stride argument: an int when it is the same on every axis (the plain U-Net's modules)."""
    return kernel[0] if len(set(kernel)) == 1 else tuple(kernel)


class ConvBlock(nn.Sequential):
    def __init__(self, ndim: int, cin: int, cout: int, norm: str, kernel: tuple[int, ...] | None = None):
        conv = nn.Conv2d if ndim == 2 else nn.Conv3d
        bias = norm == "none"
        kernel = kernel or (3,) * ndim
        k, pad = _k(kernel), _k(tuple(s // 2 for s in kernel))
        super().__init__(
            conv(cin, cout, k, padding=pad, bias=bias), _norm(norm, ndim, cout), nn.ReLU(inplace=True),
            conv(cout, cout, k, padding=pad, bias=bias), _norm(norm, ndim, cout), nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """Encoder/decoder with skip connections; outputs logits (N, n_classes + n_extra, *spatial).

    The extra channels (objects head) follow the class channels.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        nd, w, norm = config.ndim, config.width, config.norm
        conv = nn.Conv2d if nd == 2 else nn.Conv3d
        up = nn.ConvTranspose2d if nd == 2 else nn.ConvTranspose3d
        pool = nn.MaxPool2d if nd == 2 else nn.MaxPool3d
        plan, kernels = config.pool_plan, config.conv_kernels
        # one pooling module per level (parameter-free: no weights, so the state dict is the plain U-Net's)
        self.pools = nn.ModuleList(pool(_k(f), stride=_k(f)) for f in plan)
        chans = [w * 2 ** i for i in range(config.depth + 1)]
        self.down = nn.ModuleList()
        cin = config.in_channels
        for c, kern in zip(chans[:-1], kernels):
            self.down.append(ConvBlock(nd, cin, c, norm, kern))
            cin = c
        self.bottom = ConvBlock(nd, chans[-2], chans[-1], norm, kernels[-1])
        self.ups = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for c_hi, c_lo, f, kern in zip(chans[:0:-1], chans[-2::-1], plan[::-1], kernels[-2::-1]):
            self.ups.append(up(c_hi, c_lo, _k(f), stride=_k(f)))
            self.up_blocks.append(ConvBlock(nd, 2 * c_lo, c_lo, norm, kern))
        self.head = conv(chans[0], config.n_classes + config.n_extra, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nd = self.config.ndim
        if x.ndim != nd + 2:
            raise ValueError(f"expected a {nd + 2}D tensor (N, C, *spatial), got shape {tuple(x.shape)}")
        spatial = x.shape[2:]
        mult = self.config.size_multiples
        pads = [(-s) % m for s, m in zip(spatial, mult)]
        if self.config.norm == "instance":  # instance norm needs more than one element at the bottom
            pads = [max(p, 2 * m - s) for p, s, m in zip(pads, spatial, mult)]
        if any(pads):
            # F.pad wants pairs from the last axis backwards
            pad_arg = []
            for p in reversed(pads):
                pad_arg += [0, p]
            x = F.pad(x, pad_arg, mode="replicate")
        skips = []
        for block, pool in zip(self.down, self.pools):
            x = block(x)
            skips.append(x)
            x = pool(x)
        x = self.bottom(x)
        for upc, block, skip in zip(self.ups, self.up_blocks, reversed(skips)):
            x = block(torch.cat([upc(x), skip], dim=1))
        x = self.head(x)
        if any(pads):
            x = x[(slice(None), slice(None)) + tuple(slice(0, s) for s in spatial)]
        return x
