"""Tiled sliding-window prediction with blended overlaps.

Reads any array-like (numpy, dask, zarr) tile by tile; 2D models run stacks plane by plane.
``predict_iter`` is a generator yielding progress at least after every batch of tiles (so a GUI
worker can stop it) and returning float32 probabilities ``(n_classes, *spatial)``.
"""

from __future__ import annotations

from collections.abc import Generator
import numpy as np
import torch

from ..config import TTA_AUTO_PIXELS, PredictConfig
from ..errors import UserError
from .checkpoint import Model
from .data import ImageView, compute_percentiles, normalize
from .device import OutOfMemoryError, autocast, get_device, memory_format_for
from .tiling import as_sink, tiled_apply
from .events import Notice, PredictProgress  # noqa: F401 - re-exported
from .util import drain

DEFAULT_TILE = {2: 512, 3: 96}


def _tile_for(model: Model, spatial: tuple[int, ...], tile_size) -> tuple[int, ...]:
    nd = model.config.ndim
    mult = model.config.size_multiples
    if tile_size is None:
        tile = (DEFAULT_TILE[nd],) * nd
    else:
        if len(tile_size) != nd:
            raise UserError(f"Tile size {tuple(tile_size)} has {len(tile_size)} axes but the model is {nd}D.")
        tile = tuple(tile_size)
    # a multiple of the network's size multiple per axis (2**depth) avoids padding inside every tile
    return tuple(max(m, (t // m) * m) for t, m in zip(tile, mult))


def predict_iter(model: Model, image, *, channel_axis: int | None = None, config: PredictConfig | None = None,
                 percentiles: np.ndarray | None = None, extras: bool = False, sink=None,
                 check_image: bool = True
                 ) -> Generator[PredictProgress, None, np.ndarray]:
    """Predict class probabilities for ``image``; see module docstring.

    ``extras``: also return the objects head's outputs (sigmoid) after the class channels,
    ``(n_classes + n_extra, *spatial)``; see :func:`split_outputs`.
    ``sink``: an array-like ``(n_out, *spatial)`` (e.g. a zarr array) or a callable ``(region, block)``
    receiving finished regions as tiles complete (memory bounded by a row of tiles; see
    :func:`tiling.tiled_apply`); the generator then returns None instead of the whole array.
    ``check_image``: first yield a Notice when the image's statistics lie far from the training
    images' (stored in the model by training); the live preview during training skips it.
    """
    config = config or PredictConfig()
    view = ImageView(image, channel_axis)
    mc = model.config
    if view.n_channels != mc.in_channels:
        raise UserError(f"The image has {view.n_channels} channel(s) but the model was trained on "
                        f"{mc.in_channels}; set the channel axis correctly or use a matching model.")
    sp = view.spatial_shape
    if mc.ndim == 3 and len(sp) != 3:
        raise UserError(f"This 3D model needs a ZYX image; the image has spatial shape {sp}"
                        + (" (a time-lapse: give its time axis, e.g. --time-axis 0)." if len(sp) == 4 else "."))
    if mc.ndim == 2 and len(sp) > 4:
        raise UserError(f"The image has {len(sp)} spatial axes; a 2D model takes at most 4 (e.g. TZYX).")
    if percentiles is None:
        percentiles = compute_percentiles(view, mc.norm_low, mc.norm_high)
    if check_image:
        from .alarms import check_image as far_from_training

        for msg in far_from_training(model, image, channel_axis, percentiles):
            yield Notice(msg)
    device = prediction_device(model, config)
    config = resolve_tta(config, int(np.prod(sp)), device, mc.ndim)
    fmt = memory_format_for(mc.ndim, device)
    net = model.net.to(device, memory_format=fmt).eval()
    plane_shape = sp[-mc.ndim:]
    tile = _tile_for(model, plane_shape, config.tile_size)
    if config.tta and config.tile_size is None and mc.ndim == 3 and device.type == "cpu":
        # 8 views of a 3D tile on a CPU took 2.4 s between two yields (a Stop waits for one): half the tile
        # per axis, 1.3 s, for twice the time (the 2D tile's 8 views take about 1 s: kept)
        tile = _tile_for(model, plane_shape, tuple(max(1, t // 2) for t in tile))
    lead = sp[:-mc.ndim]

    n_out = mc.n_classes + (mc.n_extra if extras else 0)

    def fn(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), autocast(device, config.amp):  # CPU prediction stays float32
            x = torch.from_numpy(batch).to(device)

            def heads(inp):  # class softmax, then the objects head's sigmoid maps (if asked for)
                logits = net(inp.contiguous(memory_format=fmt)).float()
                probs = torch.softmax(logits[:, :mc.n_classes], dim=1)
                if n_out > mc.n_classes:
                    probs = torch.cat([probs, torch.sigmoid(logits[:, mc.n_classes:n_out])], dim=1)
                return probs

            if not config.tta:
                return heads(x).cpu().numpy()
            views = tta_transforms(mc.ndim, tuple(x.shape[2:]))
            acc = None
            for fwd, back in views:  # probabilities per view, then the mean: each view votes
                p = back(heads(fwd(x)))
                acc = p if acc is None else acc + p
            return (acc / len(views)).cpu().numpy()

    out = np.zeros((n_out,) + sp, np.float32) if sink is None else None
    write = as_sink(sink) if sink is not None else None
    planes = list(np.ndindex(*lead)) if lead else [()]
    total_done = 0
    for idx in planes:
        def read(region, idx=idx):
            return normalize(view.read(tuple(int(i) for i in idx) + region), percentiles)

        while True:
            try:
                result = yield from _offset(tiled_apply(read, plane_shape, fn, n_out, tile, config.overlap,
                                                        config.batch_size, _plane_sink(write, idx)), planes, total_done)
                break
            except OutOfMemoryError:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                smaller = tuple(max(m, (t // 2) // m * m) for t, m in zip(tile, mc.size_multiples))
                if smaller == tile:
                    raise UserError("Out of GPU memory even with the smallest tiles; predict on the CPU "
                                    "(--device cpu).") from None
                tile = smaller
                yield Notice(f"Out of GPU memory: retrying with tiles of {tile}.")
        if out is not None:
            out[(slice(None),) + tuple(idx)] = result
        total_done += 1
    return out


def prediction_device(model: Model, config: PredictConfig) -> torch.device:
    """The device ``config`` asks for, or the model's own for ``"auto"``."""
    return get_device(config.device) if config.device != "auto" else model.device


def resolve_tta(config: PredictConfig, n_pixels: int, device, ndim: int = 2) -> PredictConfig:
    """``config`` with ``tta`` decided: kept when set, else on for at most ``TTA_AUTO_PIXELS`` pixels.

    Callers that split an image (time points, cluster blocks) resolve it once for the whole image.
    """
    if config.tta is not None:
        return config
    kind = getattr(device, "type", str(device))
    limit = TTA_AUTO_PIXELS.get(f"{kind}-{ndim}d", TTA_AUTO_PIXELS.get(kind, TTA_AUTO_PIXELS["cpu"]))
    return config.replace(tta=n_pixels <= limit)


def tta_transforms(ndim: int, spatial: tuple[int, ...]):
    """(forward, inverse) pairs on (N, C, *spatial) tensors for test-time augmentation.

    2D: the 8 symmetries of the square (4 rotations by 90 degrees, each with and without a flip);
    on a non-square tile only the 4 flips. 3D: the 8 flips of Z, Y and X (Z is often sampled
    differently from YX, so no rotation mixes it in).
    """
    dims = tuple(range(2, 2 + ndim))
    flips = [tuple(d for d, on in zip(dims, bits) if on) for bits in np.ndindex(*(2,) * ndim)]
    out = []
    for f in flips:
        out.append((lambda t, f=f: torch.flip(t, f) if f else t, lambda t, f=f: torch.flip(t, f) if f else t))
    if ndim == 2 and spatial[0] == spatial[1]:
        out = []
        for k in range(4):
            for flip in (False, True):
                def fwd(t, k=k, flip=flip):
                    t = torch.rot90(t, k, (2, 3))
                    return torch.flip(t, (3,)) if flip else t

                def back(t, k=k, flip=flip):
                    t = torch.flip(t, (3,)) if flip else t
                    return torch.rot90(t, -k, (2, 3))
                out.append((fwd, back))
    return out


def _plane_sink(write, idx: tuple):
    """The sink of one plane ``idx`` of a stack (None: return the plane's array)."""
    if write is None or not idx:
        return write

    def plane_write(region, block):
        lead = tuple(slice(int(i), int(i) + 1) for i in idx)
        write(lead + tuple(region), block.reshape(block.shape[:1] + (1,) * len(idx) + block.shape[1:]))

    return plane_write


def predict_time_iter(model: Model, image, *, time_axis: int, channel_axis: int | None = None,
                      name: str = "the image", **kwargs) -> Generator[PredictProgress, None, np.ndarray]:
    """:func:`predict_iter` on every time point of ``image`` (e.g. a 3D model on TZYX), one after another.

    ``time_axis`` indexes ``image``'s axes (channels included). Returns ``(n_classes, *spatial)`` with T in place;
    progress counts over all time points. Percentiles come from the whole series, so every time point
    is normalised alike (as a 2D model normalises a stack).
    """
    shape = tuple(int(s) for s in image.shape)
    if not -len(shape) <= time_axis < len(shape) or (channel_axis is not None
                                                    and time_axis % len(shape) == channel_axis % len(shape)):
        raise UserError(f"Time axis {time_axis} does not exist in {name} of shape {shape} (channels on axis "
                        f"{channel_axis}); give the axis that holds the time points, or none.")
    t_ax = time_axis % len(shape)
    ax = None if channel_axis is None else channel_axis % len(shape)
    ax_t = None if ax is None else ax - (ax > t_ax)  # the channel axis once a time point is taken
    whole = ImageView(image, ax)
    if kwargs.get("percentiles") is None:
        mc = model.config
        kwargs["percentiles"] = compute_percentiles(whole, mc.norm_low, mc.norm_high)
    cfg = kwargs.get("config") or PredictConfig()  # automatic TTA decided on the whole series
    kwargs["config"] = resolve_tta(cfg, int(np.prod(whole.spatial_shape)), prediction_device(model, cfg),
                                   model.config.ndim)
    n = shape[t_ax]
    out = None
    for t in range(n):
        gen = predict_iter(model, image[(slice(None),) * t_ax + (t,)], channel_axis=ax_t, **kwargs)
        while True:
            try:
                ev = next(gen)
            except StopIteration as stop:
                probs = stop.value
                break
            yield PredictProgress(t * ev.total + ev.done, n * ev.total) if isinstance(ev, PredictProgress) else ev
        if out is None:
            out = np.zeros((probs.shape[0], n) + probs.shape[1:], np.float32)
        out[:, t] = probs
    # the time axis where it sits among the image's spatial axes, so the output matches the annotations
    return np.moveaxis(out, 1, 1 + t_ax - (ax is not None and ax < t_ax))


def _offset(gen, planes, done_planes):
    """Re-express per-plane tile progress as progress over all planes."""
    while True:
        try:
            done, total = next(gen)
        except StopIteration as stop:
            return stop.value
        yield PredictProgress(done_planes * total + done, len(planes) * total)


def predict(model: Model, image, **kwargs) -> np.ndarray:
    """Blocking form of :func:`predict_iter`."""
    return drain(predict_iter(model, image, **kwargs))


def split_outputs(model: Model, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(class probabilities, objects head's distance map or None) from ``predict(..., extras=True)``."""
    n = model.config.n_classes
    return outputs[:n], (outputs[n] if outputs.shape[0] > n else None)


def to_labels(probabilities: np.ndarray) -> np.ndarray:
    """Argmax labels in the convention: channel c -> label value c + 1 (1 = background)."""
    lab = np.argmax(probabilities, axis=0) + 1
    return lab.astype(np.uint8 if probabilities.shape[0] < 255 else np.uint16)
