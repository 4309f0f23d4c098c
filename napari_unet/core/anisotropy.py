"""Anisotropic voxels: how a U-Net pools, convolves and samples when Z is coarser than YX.

Light-sheet and confocal stacks often have a Z step several times the XY pixel size. A U-Net that
pools every axis by 2 at every level then halves an already coarse Z from the first level on, and
its first convolutions mix planes that are far apart. nnU-Net's rule (Isensee et al. 2021,
``get_pool_and_conv_props``) is followed here: at each level, pool only the axes whose current
spacing is less than twice the finest one, so the coarse axis waits until the others have caught
up; and use a kernel of 1 along an axis while it is still ``ANISO_KERNEL_RATIO`` times coarser than
the finest (e.g. (1, 3, 3) at the first level of a (4, 1, 1) stack).

Everything here is a pure function of the voxel size (a tuple per spatial axis, or None for
isotropic/unknown); :class:`napari_unet.config.ModelConfig` derives its pooling plan, kernels and
size multiples from them, so there is one source of truth. ``voxel_size=None`` (and any isotropic
voxel size) gives exactly the plain U-Net: 2 on every axis at every level, 3x3(x3) kernels.
"""

from __future__ import annotations

from collections.abc import Sequence

ANISO_KERNEL_RATIO = 3.0  # nnU-Net's ANISO_THRESHOLD: an axis this much coarser than the finest gets kernel 1
POOL_RATIO = 2.0  # pool an axis at a level only if its spacing is below this times the finest one (nnU-Net)
MISMATCH = 0.25  # prediction: a voxel size this far (relative) from the model's on any axis earns a notice


def _spacings(voxel_size: Sequence[float] | None, depth: int, ndim: int):
    """(spacing before level i, pooling factors at level i) for i in 0..depth-1, then the bottom spacing."""
    spacing = [1.0] * ndim if voxel_size is None else [float(v) for v in voxel_size]
    levels = []
    for _ in range(depth):
        finest = min(spacing)
        factors = tuple(2 if s / finest < POOL_RATIO else 1 for s in spacing)
        levels.append((tuple(spacing), factors))
        spacing = [s * f for s, f in zip(spacing, factors)]
    return levels, tuple(spacing)


def pool_plan(voxel_size: Sequence[float] | None, depth: int, ndim: int | None = None) -> tuple[tuple[int, ...], ...]:
    """Pooling factor per axis at each of the ``depth`` levels (2: halve, 1: keep).

    >>> pool_plan(None, 3, 3)
    ((2, 2, 2), (2, 2, 2), (2, 2, 2))
    >>> pool_plan((4, 1, 1), 3)
    ((1, 2, 2), (1, 2, 2), (2, 2, 2))
    """
    nd = len(voxel_size) if voxel_size is not None else ndim
    if nd is None:
        raise ValueError("give the number of axes for an isotropic plan")
    return tuple(f for _, f in _spacings(voxel_size, depth, nd)[0])


def conv_kernels(voxel_size: Sequence[float] | None, depth: int, ndim: int) -> tuple[tuple[int, ...], ...]:
    """Convolution kernel per axis of each encoder level and of the bottom (``depth + 1`` entries).

    The decoder level i uses the kernel of encoder level i (the same resolution)."""
    levels, bottom = _spacings(voxel_size, depth, ndim)
    out = []
    for spacing in [s for s, _ in levels] + [bottom]:
        finest = min(spacing)
        out.append(tuple(1 if s / finest >= ANISO_KERNEL_RATIO else 3 for s in spacing))
    return tuple(out)


def size_multiples(voxel_size: Sequence[float] | None, depth: int, ndim: int) -> tuple[int, ...]:
    """What each spatial size must be a multiple of for the network (the product of its pooling factors)."""
    out = [1] * ndim
    for factors in pool_plan(voxel_size, depth, ndim):
        out = [m * f for m, f in zip(out, factors)]
    return tuple(out)


def is_anisotropic(voxel_size: Sequence[float] | None, depth: int, ndim: int) -> bool:
    """Whether the voxel size changes the network (pooling or kernels) from the isotropic one."""
    return voxel_size is not None and (pool_plan(voxel_size, depth) != pool_plan(None, depth, ndim)
                                       or conv_kernels(voxel_size, depth, ndim) != conv_kernels(None, depth, ndim))


def parse_voxel_size(values, ndim: int, what: str = "--voxel-size") -> tuple[float, ...] | None:
    """The last ``ndim`` positive numbers of ``values`` (a stack's Z, Y, X), or None when none are given."""
    from ..errors import UserError

    if values is None or len(values) == 0:
        return None
    try:
        vals = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise UserError(f"{what} must be numbers (e.g. 4 1 1 for Z Y X), got {values!r}.") from None
    if len(vals) < ndim or not all(0 < v < float("inf") for v in vals):
        raise UserError(f"{what} needs {ndim} positive numbers (one per spatial axis, Z Y X for a 3D model), "
                        f"got {list(values)}.")
    return vals[-ndim:]


def voxel_mismatch(model_voxel: Sequence[float] | None, image_voxel: Sequence[float] | None,
                   name: str = "the image") -> str | None:
    """A one-line notice when ``image_voxel`` differs from the voxel size the model was trained at by more
    than ``MISMATCH`` on any axis (None when either is unknown or they agree)."""
    if model_voxel is None or image_voxel is None or len(image_voxel) < len(model_voxel):
        return None
    image_voxel = tuple(float(v) for v in image_voxel)[-len(model_voxel):]
    if all(abs(i - m) <= MISMATCH * m for i, m in zip(image_voxel, model_voxel)):
        return None
    fmt = lambda v: "(" + ", ".join(f"{x:g}" for x in v) + ")"  # noqa: E731
    return (f"The model was trained at voxel size {fmt(model_voxel)} but {name} has {fmt(image_voxel)}; "
            "objects will look larger or smaller to it than in training: resample the image to the model's "
            "voxel size, or train on such images, if the result is poor.")


def with_voxel_size(config, voxel_size, new_model: bool):
    """(config, notice or None) for training at ``voxel_size``: a new model records it (and pools by it);
    a model trained before keeps its own architecture, with a notice when the voxel sizes differ."""
    vox = parse_voxel_size(voxel_size, config.ndim, "voxel_size")
    if vox is None:
        return config, None
    if new_model:
        return config.replace(voxel_size=vox), None
    return config, voxel_mismatch(config.voxel_size, vox, "the training images")


def voxel_text(config) -> str:
    """The model's voxel size and pooling plan in words (reports, the model panel)."""
    if config.voxel_size is None:
        return "not recorded (isotropic pooling: 2 per axis at every level)"
    plan = " ".join("x".join(map(str, f)) for f in config.pool_plan)
    return f"{', '.join(f'{v:g}' for v in config.voxel_size)}; pooling {plan}"


__all__ = ["with_voxel_size", "voxel_text", "pool_plan", "conv_kernels", "size_multiples", "is_anisotropic",
           "parse_voxel_size", "voxel_mismatch", "ANISO_KERNEL_RATIO", "MISMATCH"]
