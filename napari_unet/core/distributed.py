"""Prediction on a dask.distributed cluster: blocks with halos, weights sent once per worker, workers
write the zarr output.

The output is cut into blocks aligned with its zarr chunks (so no two tasks write the same chunk
and no lock is needed). A block's task reads the *halo* around it: the union of the tiles of the
whole-image tile grid that touch the block (the same idea as ``dask.array.map_overlap`` with a depth
of one tile, but the halo follows the tile grid rather than a fixed depth). Within that crop the
tile grid is the same as the whole image's, so every pixel of the block blends the same tiles in the
same order as a local run: the numbers are the same. The price is that tiles straddling a block
border are predicted by both blocks (about one extra tile row per block border and axis).

The model travels once per worker: its weights as safetensors bytes plus its config, scattered with
``broadcast=True``; each worker process builds the network once and caches it. Nothing is unpickled
from a file. The image is read by the workers from its path (a shared file system, as for the
output), or scattered when it is an in-memory array.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Generator
from itertools import product
from pathlib import Path

import numpy as np

from ..config import ModelConfig, PredictConfig
from ..errors import UserError
from .checkpoint import Model
from .data import ImageView, compute_percentiles
from .inference import PredictProgress, _tile_for, prediction_device, resolve_tta
from .tiling import tile_origins

DEFAULT_BLOCK = {2: 4096, 3: 384}
CONNECT_TIMEOUT = "30s"
_CACHE: dict[str, object] = {}
_LOCK = threading.Lock()


def model_payload(model: Model) -> dict:
    """What a worker needs to rebuild the model: config (JSON-able) and safetensors bytes."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in model.net.state_dict().items()}
    blob = save(state)
    return {"key": hashlib.sha256(blob).hexdigest(), "config": model.config.to_dict(), "weights": blob,
            "patch_size": list(model.patch_size)}


def _worker_model(payload: dict) -> Model:
    with _LOCK:
        m = _CACHE.get(payload["key"])
        if m is None:
            from safetensors.torch import load

            from .model import UNet

            config = ModelConfig.from_dict(payload["config"])
            net = UNet(config)
            net.load_state_dict(load(payload["weights"]))
            m = _CACHE[payload["key"]] = Model(net=net.eval(), config=config,
                                                patch_size=tuple(payload["patch_size"]))
        return m


def _worker_image(source):
    if isinstance(source, tuple) and source and source[0] == "path":
        with _LOCK:
            key = "image:" + source[1]
            if key not in _CACHE:
                from .io import read_image

                _CACHE[key] = read_image(source[1], lazy=True).array
            return _CACHE[key]
    return source


def _halo(start: int, stop: int, size: int, tile: int, overlap: float) -> tuple[int, int]:
    """The span of the whole-image tiles that touch [start, stop) along one axis."""
    tile = min(tile, size)
    touching = [o for o in tile_origins(size, tile, overlap) if o < stop and o + tile > start]
    return touching[0], touching[-1] + tile


def block_regions(spatial: tuple[int, ...], ndim: int, block: tuple[int, ...]) -> list[tuple[slice, ...]]:
    """Blocks over the spatial shape: one plane along a 2D model's stack axes, ``block`` on the rest."""
    lead = spatial[:-ndim]
    per_axis = [[(i, i + 1) for i in range(n)] for n in lead]
    per_axis += [[(s, min(s + b, n)) for s in range(0, n, b)] for n, b in zip(spatial[-ndim:], block)]
    return [tuple(slice(a, b) for a, b in combo) for combo in product(*per_axis)]


def predict_block(region: tuple[slice, ...], payload: dict, source, channel_axis, config: dict,
                  percentiles: np.ndarray, outputs: dict[str, str]) -> tuple[int, ...]:
    """One task: predict ``region`` (with its halo) and write it to the zarr outputs. Runs on a worker."""
    from .inference import predict
    from .ome import open_output_array
    from .outputs import to_labels_block

    model = _worker_model(payload)
    cfg = PredictConfig.from_dict(config)
    view = ImageView(_worker_image(source), channel_axis)
    nd = model.config.ndim
    sp = view.spatial_shape
    tile = _tile_for(model, sp[-nd:], cfg.tile_size)
    lead = tuple(r.start for r in region[:-nd])
    halo = [_halo(r.start, r.stop, n, t, cfg.overlap) for r, n, t in zip(region[-nd:], sp[-nd:], tile)]
    crop = view.read(lead + tuple(slice(a, b) for a, b in halo))  # (C, *halo), as the local path reads it
    probs = predict(model, crop, channel_axis=0, config=cfg, percentiles=percentiles)
    inner = (slice(None),) + tuple(slice(r.start - a, r.stop - a) for r, (a, _) in zip(region[-nd:], halo))
    block = probs[inner]
    block = block.reshape(block.shape[:1] + (1,) * len(lead) + block.shape[1:])
    if outputs.get("probabilities"):
        open_output_array(outputs["probabilities"])[(slice(None),) + tuple(region)] = block
    if outputs.get("labels"):
        open_output_array(outputs["labels"])[tuple(region)] = to_labels_block(block)
    return tuple(r.start for r in region)


def get_client(scheduler):
    """A ``distributed.Client`` for an address (``tcp://host:8786``, a scheduler file) or a Client."""
    try:
        from distributed import Client
    except ImportError:
        raise UserError("--scheduler needs dask.distributed; install it with: pip install distributed") from None
    if isinstance(scheduler, Client):
        return scheduler, False
    try:
        if str(scheduler).endswith(".json") and Path(scheduler).is_file():
            return Client(scheduler_file=str(scheduler), timeout=CONNECT_TIMEOUT), True
        return Client(str(scheduler), timeout=CONNECT_TIMEOUT), True
    except (OSError, TimeoutError, ValueError) as e:
        raise UserError(f"Cannot reach the dask scheduler at '{scheduler}' ({e}); start it (dask scheduler) or "
                        "check the address (tcp://HOST:8786).") from None


def predict_distributed(model: Model, image, outputs, scheduler, *, channel_axis: int | None = None,
                        config: PredictConfig | None = None, block_size: int | None = None
                        ) -> Generator[PredictProgress, None, None]:
    """Predict on a dask.distributed cluster into the zarr targets of ``outputs`` (:class:`Outputs`).

    ``image``: a path (read by the workers; the cluster must see the same file system) or an array.
    Yields progress per finished block.
    """
    config = config or PredictConfig()
    bad = [str(t) for n, t in outputs.targets.items() if outputs.kind.get(n) != "zarr"]
    if bad:
        raise UserError(f"On a cluster the workers write zarr outputs; name the output(s) {', '.join(bad)} "
                        "with .zarr (convert afterwards if you need TIFF).")
    if isinstance(image, (str, Path)):
        from .io import read_image

        source = ("path", str(Path(image).resolve()))
        local = read_image(image, lazy=True).array
    else:
        source, local = image, image
    view = ImageView(local, channel_axis)
    mc = model.config
    percentiles = compute_percentiles(view, mc.norm_low, mc.norm_high)  # whole-image, once, as locally
    # automatic TTA decided for the whole image, as locally, not per block
    config = resolve_tta(config, int(np.prod(view.spatial_shape)), prediction_device(model, config), mc.ndim)
    client, own = get_client(scheduler)
    try:
        if not isinstance(source, tuple):
            source = client.scatter(source, hash=False)
        payload = client.scatter(model_payload(model), broadcast=True, hash=False)
        chunks = outputs.arrays[next(iter(outputs.arrays))].chunks[-mc.ndim:]
        want = block_size or DEFAULT_BLOCK[mc.ndim]
        block = tuple(max(c, (want // c) * c) for c in chunks)  # whole chunks: no two tasks share one
        regions = block_regions(view.spatial_shape, mc.ndim, block)
        targets = {n: str(outputs.tmp[n]) for n in outputs.targets}
        futures = client.map(predict_block, regions, payload=payload, source=source, channel_axis=channel_axis,
                             config=config.to_dict(), percentiles=percentiles, outputs=targets, pure=False)
        from distributed import as_completed

        done = 0
        yield PredictProgress(0, len(regions))
        try:
            for fut in as_completed(futures):
                fut.result()  # re-raises a worker's error here
                done += 1
                yield PredictProgress(done, len(regions))
        except BaseException:
            client.cancel(futures)
            raise
    finally:
        if own:
            client.close()
