"""Pure tiling functions: tile origins, blending weights and weighted stitching.

``tiled_apply`` runs any ``fn`` over overlapping tiles of an array read tile by tile (so the input
can be a dask or zarr array larger than memory) and blends the overlaps with weights that fall
off towards tile borders. It is a generator that yields (done, total) after every batch of tiles
and returns the stitched result, so a caller can stay responsive.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from itertools import product

import numpy as np


def tile_origins(size: int, tile: int, overlap: float) -> list[int]:
    """Start positions of tiles of length ``tile`` covering ``0..size`` with the given overlap."""
    if tile >= size:
        return [0]
    step = max(1, int(round(tile * (1 - overlap))))
    starts = list(range(0, size - tile + 1, step))
    if starts[-1] + tile < size:
        starts.append(size - tile)
    return starts


def tile_slices(shape: tuple[int, ...], tile: tuple[int, ...], overlap: float) -> list[tuple[slice, ...]]:
    """All tile regions (tuples of slices) covering ``shape``."""
    per_axis = [tile_origins(n, t, overlap) for n, t in zip(shape, tile)]
    tile = [min(t, n) for t, n in zip(tile, shape)]
    return [tuple(slice(o, o + t) for o, t in zip(origin, tile)) for origin in product(*per_axis)]


def blend_weights(tile: tuple[int, ...], overlap: float) -> np.ndarray:
    """Separable weights: 1 in the tile centre, a linear ramp over the overlap, never 0."""
    w = np.ones(tile, np.float32)
    for ax, n in enumerate(tile):
        ramp = max(1, int(round(n * overlap / 2)))
        i = np.arange(n, dtype=np.float32)
        prof = np.minimum(1.0, np.minimum(i + 1, n - i) / (ramp + 1))
        shape = [1] * len(tile)
        shape[ax] = n
        w = w * prof.reshape(shape)
    return np.maximum(w, 1e-3)


def as_sink(target) -> Callable[[tuple[slice, ...], np.ndarray], None]:
    """A sink writing finished ``(n_out, *region)`` blocks into an array-like ``(n_out, *shape)``
    (numpy, memmap, zarr), or ``target`` itself when it is already a callable ``(region, block)``."""
    if callable(target) and not hasattr(target, "__setitem__"):
        return target

    def write(region, block):
        target[(slice(None),) + tuple(region)] = block

    return write


def tiled_apply(read: Callable[[tuple[slice, ...]], np.ndarray], shape: tuple[int, ...],
                fn: Callable[[np.ndarray], np.ndarray], n_out: int, tile: tuple[int, ...],
                overlap: float = 0.25, batch_size: int = 1, sink=None
                ) -> Generator[tuple[int, int], None, np.ndarray | None]:
    """Apply ``fn`` (batch (B, C, *tile) -> (B, n_out, *tile)) over tiles and blend the results.

    ``read(slices)`` returns the (C, *tile) input for a region. Without ``sink``, returns float32
    (n_out, *shape). With ``sink`` (an array-like (n_out, *shape) or a callable, see :func:`as_sink`)
    finished regions are written to it as tiles complete and None is returned; a block passed to a
    callable sink is a view of the buffer, valid only during the call.

    Memory stays bounded by one row of tiles: tiles run in row order (first axis outermost), and
    the blended sum lives in a buffer one tile high. Once every tile of a row is done, the rows
    above the next row's start can receive no more contributions: they are divided by their
    weight sum and flushed to the sink, and the buffer slides down. Every pixel sums the same
    tiles in the same order as a whole-image accumulation, so the values are bit-identical to it.
    (A bounded buffer over a row of tiles was chosen over map_overlap-style recomputation, which
    would predict the tiles straddling block borders twice.)
    """
    regions = tile_slices(shape, tile, overlap)
    shape = tuple(shape)
    result = None
    if sink is None:
        result = np.zeros((n_out,) + shape, np.float32)
        sink = result
    write = as_sink(sink)
    height = min(tile[0], shape[0])
    acc = np.zeros((n_out, height) + shape[1:], np.float32)
    wsum = np.zeros((height,) + shape[1:], np.float32)
    lo = 0  # first-axis position of the buffer's first row

    def flush(upto: int):
        nonlocal lo
        d = upto - lo
        if d <= 0:
            return
        final = acc[:, :d]
        final /= wsum[:d]  # in place: these rows are final (the sink must copy what it keeps)
        write((slice(lo, upto),) + tuple(slice(0, n) for n in shape[1:]), final)
        for i in range(0, height - d, d):  # slide down in steps of d: no overlap, no temporary copy
            n = min(d, height - d - i)
            acc[:, i:i + n] = acc[:, i + d:i + d + n]
            wsum[i:i + n] = wsum[i + d:i + d + n]
        acc[:, height - d:] = 0
        wsum[height - d:] = 0
        lo = upto

    weights: dict[tuple[int, ...], np.ndarray] = {}
    for start in range(0, len(regions), batch_size):
        chunk = regions[start:start + batch_size]
        # tiles of one batch share a size: all are min(tile, shape)
        batch = np.stack([read(r) for r in chunk])
        res = fn(batch)
        for r, pred in zip(chunk, res):
            flush(r[0].start)  # tiles come in row order: rows above this one are final
            tshape = pred.shape[1:]
            if tshape not in weights:
                weights[tshape] = blend_weights(tshape, overlap)
            w = weights[tshape]
            local = (slice(r[0].start - lo, r[0].stop - lo),) + r[1:]
            acc[(slice(None),) + local] += pred * w
            wsum[local] += w
        yield min(start + batch_size, len(regions)), len(regions)
    flush(shape[0])
    return result
