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


# --------------------------------------------------------------------------- realistic benchmark data
def _smooth_noise(rng, shape, sigma) -> np.ndarray:
    """Gaussian-filtered white noise with unit standard deviation."""
    f = ndi.gaussian_filter(rng.normal(0, 1, shape), sigma)
    return (f / (f.std() + 1e-9)).astype(np.float32)


def make_realistic_nuclei(shape=(512, 512), seed: int = 0) -> SyntheticImage:
    """Widefield-like nuclei (2D or 3D) on which a pixel forest is as strong as on real images.

    Nuclei of varied size (log-normal radii) and brightness, about 40 % of them placed against a
    neighbour (touching clusters), with chromatin texture and a soft, rounded intensity profile;
    optical blur (stronger along Z in 3D), out-of-focus haze around bright clusters, an uneven
    background, and mild shot plus read noise. ``instances``/``semantic`` are exact (before blur).
    """
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    nd = len(shape)
    if nd not in (2, 3):
        raise ValueError("shape must be 2D or 3D")
    base_r = 9.0 if nd == 2 else 6.5
    vol = (np.pi if nd == 2 else 4 / 3 * np.pi) * base_r ** nd
    n = max(1, int(0.33 * np.prod(shape) / vol))
    instances = np.zeros(shape, np.int32)
    signal = np.zeros(shape, np.float32)
    placed: list[tuple[np.ndarray, float]] = []
    tex = _smooth_noise(rng, shape, 1.0) + 0.5 * _smooth_noise(rng, shape, 2.5)
    for k in range(1, n + 1):
        r_mean = base_r * float(np.exp(rng.normal(0, 0.25)))
        radii = r_mean * rng.uniform(0.75, 1.25, nd)
        if nd == 3:
            radii[0] *= 0.8
        for _ in range(30):
            if placed and rng.random() < 0.4:  # against a neighbour: touching clusters
                c0, r0 = placed[rng.integers(len(placed))]
                d = rng.normal(0, 1, nd)
                if nd == 3:
                    d[0] *= 0.4
                c = c0 + d / np.linalg.norm(d) * (r0 + r_mean) * rng.uniform(0.85, 1.0)
            else:
                c = np.array([rng.uniform(0, s) for s in shape])
            if all(np.linalg.norm(c - o) > 0.85 * (ro + r_mean) for o, ro in placed):
                break
        placed.append((c, r_mean))
        ext = int(np.ceil(radii.max() * 1.3)) + 1
        box = tuple(slice(max(0, int(ci) - ext), min(s, int(ci) + ext + 1)) for ci, s in zip(c, shape))
        if any(b.stop <= b.start for b in box):
            continue
        grid = np.meshgrid(*[np.arange(b.start, b.stop) - ci for b, ci in zip(box, c)], indexing="ij")
        th = rng.uniform(0, np.pi)
        y, x = grid[-2], grid[-1]
        u, v = np.cos(th) * y + np.sin(th) * x, -np.sin(th) * y + np.cos(th) * x
        dist = (u / radii[-2]) ** 2 + (v / radii[-1]) ** 2 + ((grid[0] / radii[0]) ** 2 if nd == 3 else 0)
        # a wobbly outline: the radius varies smoothly by a few per cent around the nucleus
        ang = np.arctan2(v, u)
        wob = sum(rng.normal(0, 0.04) * np.cos(m * ang + rng.uniform(0, 2 * np.pi)) for m in (2, 3, 5))
        dist = np.sqrt(dist) * (1 + wob)
        inside = (dist <= 1) & (instances[box] == 0)
        instances[box][inside] = k
        bright = float(np.clip(np.exp(rng.normal(0, 0.35)), 0.3, 2.5))
        profile = np.sqrt(np.clip(1 - dist ** 2, 0, 1)) ** 0.5  # rounded: dimmer towards the rim
        signal[box][inside] = (bright * (0.55 + 0.45 * profile) * (1 + 0.22 * tex[box]))[inside]
    semantic = np.where(instances > 0, 2, 1).astype(np.uint8)
    blur = 2.6 if nd == 2 else (3.0, 2.0, 2.0)
    img = ndi.gaussian_filter(signal, blur)
    img += 0.20 * ndi.gaussian_filter(signal, 10.0)  # out-of-focus haze around clusters
    coords = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    g = rng.normal(0, 1, nd)
    background = 0.12 * (1 + 0.6 * sum(gi * ci for gi, ci in zip(g / np.linalg.norm(g), coords)))
    background = background + 0.05 * _smooth_noise(rng, shape, max(shape) / 8)
    photons = 30.0 * np.maximum(img + np.maximum(background, 0.02), 0)
    noisy = rng.poisson(photons).astype(np.float32) + rng.normal(0, 3.0, shape)
    image = (100 + 4 * noisy).astype(np.float32)
    return SyntheticImage(image=image, instances=instances, semantic=semantic)


def _stroke(out, allowed, p, direction, length, value, width):
    d = np.asarray(direction, float)
    d /= np.linalg.norm(d) + 1e-9
    pts = []
    for t in np.arange(-length / 2, length / 2 + 0.5, 0.5):
        q = np.round(p + t * d).astype(int)
        if np.all(q >= 0) and np.all(q < out.shape) and allowed[tuple(q)]:
            pts.append(q)
    if not pts:
        return
    mark = np.zeros(out.shape, bool)
    mark[tuple(np.array(pts).T)] = True
    if width > 1:
        se = np.ones((1,) * (out.ndim - 2) + (width, width), bool)
        mark = ndi.binary_dilation(mark, se) & allowed
    out[mark & (out == 0)] = value


def realistic_strokes(instances: np.ndarray, seed: int = 0, fraction: float = 0.3, width: int | None = None):
    """Annotations the way people draw them on nuclei (label convention, 0 = not annotated).

    A centre line along the long axis of about ``fraction`` of the objects (label 2), and short
    background strokes (label 1) a few pixels outside objects, roughly along their outline, plus
    a few longer ones across empty background. In 3D, lines are drawn in the object's middle plane.
    """
    rng = np.random.default_rng(seed)
    nd = instances.ndim
    width = width or (3 if nd == 2 else 1)
    out = np.zeros(instances.shape, np.uint8)
    ids = np.unique(instances)
    ids = ids[ids > 0]
    if len(ids) == 0:
        return out
    chosen = rng.choice(ids, max(1, int(round(fraction * len(ids)))), replace=False)
    slices = ndi.find_objects(instances)
    for k in chosen:
        sl = slices[k - 1]
        if sl is None:
            continue
        obj = instances[sl] == k
        inner = ndi.binary_erosion(obj, iterations=2) if obj.sum() > 40 else obj
        pts = np.argwhere(inner)
        if len(pts) == 0:
            continue
        centre = pts.mean(0)
        cov = np.cov((pts - centre).T) if len(pts) > nd else np.eye(nd)
        w, v = np.linalg.eigh(np.atleast_2d(cov))
        d = v[:, -1].copy()
        if nd == 3:
            d[0] = 0  # drawn in a plane
            if np.linalg.norm(d) < 1e-6:
                d[-1] = 1
            centre[0] = round(centre[0])
        length = 0.75 * 4 * np.sqrt(max(w[-1], 1))
        full = np.zeros(instances.shape, bool)
        full[sl] = inner
        _stroke(out, full, centre + np.array([s.start for s in sl]), d, length, 2, width)
    dist = ndi.distance_transform_edt(instances == 0)
    near = (dist >= 3) & (dist <= 8)
    far = dist > 10
    cand = np.argwhere(near)
    grad = np.gradient(dist)
    for _ in range(len(chosen)):  # short strokes hugging an object, in the background
        if len(cand) == 0:
            break
        p = cand[rng.integers(len(cand))]
        normal = np.array([g[tuple(p)] for g in grad])
        tangent = rng.normal(0, 1, nd)
        tangent -= normal * (tangent @ normal) / (normal @ normal + 1e-9)
        if nd == 3:
            tangent[0] = 0
        _stroke(out, dist >= 2, p.astype(float), tangent, rng.uniform(8, 20), 1, width)
    cand_far = np.argwhere(far)
    n_long = max(1, int(round(3 * instances.size / 512 ** 2))) if nd == 2 else max(1, int(instances.size / 200_000))
    for _ in range(n_long):  # a few long strokes through empty background
        if len(cand_far) == 0:
            break
        d = rng.normal(0, 1, nd)
        if nd == 3:
            d[0] = 0
        _stroke(out, dist >= 4, cand_far[rng.integers(len(cand_far))].astype(float), d, rng.uniform(30, 60), 1, width)
    return out


HUE = 0.18  # largest colour cast of a texture class (image range 0..1)


def make_textures(shape=(384, 384), seed: int = 0, n_classes: int = 4) -> SyntheticImage:
    """RGB image (Y, X, 3) of regions that differ in texture, not in mean colour or brightness.

    Regions are a warped Voronoi partition; each region takes one of ``n_classes`` textures (fine
    grain, coarse blobs, oriented stripes, smooth with sparse specks). ``semantic`` holds the truth
    in the label convention (1..n_classes; class 1 plays the background); ``instances`` numbers
    the regions.
    """
    rng = np.random.default_rng(seed)
    h, w = shape
    n_regions = max(n_classes * 2, int(h * w / 64 ** 2))
    seeds = rng.uniform(0, 1, (n_regions, 2)) * [h, w]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy = yy + 10 * _smooth_noise(rng, shape, 12)
    xx = xx + 10 * _smooth_noise(rng, shape, 12)
    d2 = (yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2
    regions = np.argmin(d2, axis=-1).astype(np.int32)
    cls_of = np.concatenate([np.arange(n_classes), rng.integers(0, n_classes, n_regions - n_classes)])
    rng.shuffle(cls_of)
    semantic = (cls_of[regions] + 1).astype(np.uint8)
    img = np.zeros((h, w, 3), np.float32)
    for c in range(n_classes):
        kind = c % 4
        t = np.zeros((h, w, 3), np.float32)
        if kind == 0:  # fine grain
            t = np.stack([_smooth_noise(rng, shape, 0.8) for _ in range(3)], -1) * 0.5 + _smooth_noise(rng, shape, 0.8)[..., None] * 0.8
        elif kind == 1:  # coarse blobs
            t = np.stack([_smooth_noise(rng, shape, 4.0) for _ in range(3)], -1) * 0.5 + _smooth_noise(rng, shape, 4.0)[..., None] * 0.8
        elif kind == 2:  # oriented stripes with a wobbly phase
            ang = rng.uniform(0, np.pi)
            phase = (np.cos(ang) * yy + np.sin(ang) * xx) * 2 * np.pi / 7 + 1.5 * _smooth_noise(rng, shape, 6)
            t = np.sin(phase)[..., None] * 1.1 + 0.3 * np.stack([_smooth_noise(rng, shape, 1.5) for _ in range(3)], -1)
        else:  # smooth with sparse bright and dark specks
            sp = rng.random(shape)
            t = np.zeros(shape, np.float32) + 2.5 * (sp > 0.985) - 2.5 * (sp < 0.015)
            t = ndi.gaussian_filter(t, 0.7) * 1.8 + 0.3 * _smooth_noise(rng, shape, 8)
            t = np.repeat(t[..., None], 3, -1)
        t = (t - t.mean()) / (t.std() + 1e-9)
        tint = 1 + 0.15 * rng.normal(0, 1, 3)  # per-class tint of the texture's contrast
        hue = rng.normal(0, 1, 3)
        hue -= hue.mean()  # a colour cast of equal brightness, as regions in a photo have
        hue *= HUE / (np.abs(hue).max() + 1e-9)
        sel = semantic == c + 1
        img[sel] = (0.5 + hue + 0.12 * t * tint)[sel]
    shade = 1 + 0.05 * _smooth_noise(rng, shape, max(shape) / 6)[..., None]
    img = img * shade + rng.normal(0, 0.03, img.shape)
    img = np.clip(ndi.gaussian_filter(img, (0.7, 0.7, 0)), 0, 1)
    return SyntheticImage(image=(img * 255).astype(np.float32), instances=regions + 1, semantic=semantic)


def texture_strokes(semantic: np.ndarray, seed: int = 0, per_region: float = 0.8, width: int = 5) -> np.ndarray:
    """A scribble in about ``per_region`` of the texture regions (at least one per class), with its class."""
    rng = np.random.default_rng(seed)
    out = np.zeros(semantic.shape, np.uint8)
    for c in np.unique(semantic):
        comps, n = ndi.label(semantic == c)
        for comp in range(1, n + 1):
            if rng.random() > per_region and comp > 1:
                continue
            inner = ndi.binary_erosion(comps == comp, iterations=5)
            pts = np.argwhere(inner)
            if len(pts) == 0:
                continue
            _stroke(out, inner, pts[rng.integers(len(pts))].astype(float), rng.normal(0, 1, 2),
                    rng.uniform(30, 70), int(c), width)
    return out
