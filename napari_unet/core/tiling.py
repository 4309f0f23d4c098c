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


def tiled_apply(read: Callable[[tuple[slice, ...]], np.ndarray], shape: tuple[int, ...],
                fn: Callable[[np.ndarray], np.ndarray], n_out: int, tile: tuple[int, ...],
                overlap: float = 0.25, batch_size: int = 1) -> Generator[tuple[int, int], None, np.ndarray]:
    """Apply ``fn`` (batch (B, C, *tile) -> (B, n_out, *tile)) over tiles and blend the results.

    ``read(slices)`` returns the (C, *tile) input for a region. Returns float32 (n_out, *shape).
    """
    regions = tile_slices(shape, tile, overlap)
    out = np.zeros((n_out,) + tuple(shape), np.float32)
    wsum = np.zeros(tuple(shape), np.float32)
    weights: dict[tuple[int, ...], np.ndarray] = {}
    for start in range(0, len(regions), batch_size):
        chunk = regions[start:start + batch_size]
        # tiles of one batch share a size: all are min(tile, shape)
        batch = np.stack([read(r) for r in chunk])
        res = fn(batch)
        for r, pred in zip(chunk, res):
            tshape = pred.shape[1:]
            if tshape not in weights:
                weights[tshape] = blend_weights(tshape, overlap)
            w = weights[tshape]
            out[(slice(None),) + r] += pred * w
            wsum[r] += w
        yield min(start + batch_size, len(regions)), len(regions)
    out /= wsum
    return out
