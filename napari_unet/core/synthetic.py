"""Synthetic fluorescence nuclei with exact ground truth, in 2D and 3D. No downloads.

Nuclei are ellipses/ellipsoids of varied size and brightness, many of them touching, with
texture, optical blur, uneven illumination, background offset and shot (Poisson) plus read noise.
``scribbles`` turns the ground truth into brush-stroke annotations like a user would paint.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi


@dataclass
class SyntheticImage:
    image: np.ndarray  # float32, spatial
    instances: np.ndarray  # int32: 0 background, 1.. nucleus ids
    semantic: np.ndarray  # uint8 in the label convention: 1 background, 2 nucleus


def make_nuclei(shape=(256, 256), n: int | None = None, radius: float = 9.0, seed: int = 0,
                snr: float = 8.0, dimmest: float = 0.5, blur: float = 1.2, debris: float = 0.0) -> SyntheticImage:
    """Nuclei image of ``shape`` (2D or 3D). ``n`` defaults to a crowded but not packed density.

    Harder images: lower ``snr``, lower ``dimmest`` (relative brightness of the dimmest nuclei),
    more ``blur`` (sigma, pixels), and ``debris`` (bright specks per nucleus, not in the truth).
    """
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    nd = len(shape)
    if nd not in (2, 3):
        raise ValueError("shape must be 2D or 3D")
    if n is None:
        n = int(0.35 * np.prod(shape) / ((4 / 3 * np.pi if nd == 3 else np.pi) * radius ** nd))
    instances = np.zeros(shape, np.int32)
    brightness = np.zeros(shape, np.float32)
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    centres = []
    for k in range(1, n + 1):
        r = radius * rng.uniform(0.7, 1.3, size=nd)
        for _ in range(20):  # allow touching, forbid deep overlap
            c = np.array([rng.uniform(0, s) for s in shape])
            if all(np.linalg.norm(c - o) > 0.8 * (radius + rr) for o, rr in centres):
                break
        centres.append((c, float(r.mean())))
        # random orientation in the last two axes
        th = rng.uniform(0, np.pi)
        d = [g - ci for g, ci in zip(grids, c)]
        y, x = d[-2], d[-1]
        u, v = np.cos(th) * y + np.sin(th) * x, -np.sin(th) * y + np.cos(th) * x
        dist = (u / r[-2]) ** 2 + (v / r[-1]) ** 2
        if nd == 3:
            dist = dist + (d[0] / r[0]) ** 2
        inside = dist <= 1
        instances[inside] = k
        brightness[inside] = rng.uniform(dimmest, 1.0)
    semantic = np.where(instances > 0, 2, 1).astype(np.uint8)
    texture = ndi.gaussian_filter(rng.normal(0, 1, shape), 1.5)
    texture /= texture.std() + 1e-9
    signal = brightness * (1 + 0.15 * texture) * (instances > 0)
    if debris > 0:  # small bright specks outside nuclei: clutter a pixel classifier confuses with nuclei
        specks = np.zeros(shape, np.float32)
        n_specks = int(debris * n)
        idx = tuple(rng.integers(0, s_, n_specks) for s_ in shape)
        specks[idx] = rng.uniform(0.5, 1.0, n_specks)
        specks = ndi.grey_dilation(specks, size=(3,) * nd)
        signal = signal + specks * (instances == 0)
    signal = ndi.gaussian_filter(signal, blur)
    # uneven illumination: a smooth gradient with a bright spot
    coords = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    g = rng.normal(0, 1, nd)
    illum = 1 + 0.35 * sum(gi * ci for gi, ci in zip(g / np.linalg.norm(g), coords))
    illum = illum * (1 + 0.3 * np.exp(-sum((ci - rng.uniform(-0.5, 0.5)) ** 2 for ci in coords) / 0.3))
    photons = snr ** 2 * (signal * illum + 0.08 * illum)
    noisy = rng.poisson(np.maximum(photons, 0)).astype(np.float32) + rng.normal(0, 2, shape)
    image = (100 + 20 * noisy / snr).astype(np.float32)
    return SyntheticImage(image=image, instances=instances, semantic=semantic)


def scribbles(semantic: np.ndarray, seed: int = 0, fraction_objects: float = 0.3, n_background: int | None = None,
              width: int = 1) -> np.ndarray:
    """Sparse brush strokes: lines inside some objects and across the background, away from edges.

    ``n_background`` defaults to 12 strokes per 256x256 pixels (the same density on any size).
    Returns an annotation array (0 unannotated, 1 background, 2.. classes) of ``semantic``'s shape.
    """
    rng = np.random.default_rng(seed)
    if n_background is None:
        n_background = max(1, int(round(12 * semantic.size / 256 ** 2)))
    nd = semantic.ndim
    out = np.zeros(semantic.shape, np.uint8)
    struct = ndi.generate_binary_structure(nd, 1)
    for cls in np.unique(semantic):
        if cls == 0:
            continue
        region = ndi.binary_erosion(semantic == cls, struct, iterations=3 if cls == 1 else 2)
        comps, ncomp = ndi.label(region)
        if ncomp == 0:
            continue
        if cls == 1:
            # long strokes through the background
            for _ in range(n_background):
                _draw_line(out, region, rng, cls, length=rng.integers(20, 80))
        else:
            picks = rng.choice(np.arange(1, ncomp + 1), max(1, int(fraction_objects * ncomp)), replace=False)
            for comp in picks:
                _draw_line(out, comps == comp, rng, cls, length=rng.integers(6, 20))
    if width > 1:
        grown = ndi.grey_dilation(out, size=(width,) * nd)
        ok = np.zeros_like(out, bool)
        for cls in np.unique(out[out > 0]):
            ok |= (grown == cls) & (semantic == cls)
        out = np.where(out > 0, out, np.where(ok, grown, 0)).astype(np.uint8)
    return out


def _draw_line(out, region, rng, value, length):
    pts = np.argwhere(region)
    if len(pts) == 0:
        return
    p = pts[rng.integers(len(pts))].astype(float)
    d = rng.normal(0, 1, out.ndim)
    if out.ndim == 3:
        d[0] *= 0.2  # mostly in-plane, as painted
    d /= np.linalg.norm(d) + 1e-9
    for t in np.arange(-length / 2, length / 2, 0.5):
        q = np.round(p + t * d).astype(int)
        if np.all(q >= 0) and np.all(q < out.shape) and region[tuple(q)]:
            out[tuple(q)] = value


def demo_pair(ndim: int = 2, size: int | None = None, seed: int = 0, sparse: bool = True):
    """(image, annotations, ground truth) for the demo, tests and napari's sample menu."""
    if ndim == 2:
        shape = (size or 256,) * 2
    else:
        shape = (size,) * 3 if size else (48, 96, 96)
    syn = make_nuclei(shape, seed=seed, radius=9.0 if ndim == 2 else 7.0)
    ann = scribbles(syn.semantic, seed=seed + 1, width=3 if ndim == 2 else 1) if sparse else syn.semantic.copy()
    return syn.image, ann, syn
