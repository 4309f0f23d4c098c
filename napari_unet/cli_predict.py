"""``napari-unet predict``: one image or a folder/glob of images, locally or on a dask cluster.

Outputs are written as tiles finish (see :mod:`napari_unet.core.outputs`): a ``.zarr`` output keeps
memory bounded by a row of tiles whatever the image size.
"""

from __future__ import annotations

import glob
import os
import sys
import time
from pathlib import Path

from .errors import UserError

GLOB_CHARS = "*?["


def add_big_options(pr) -> None:
    pr.add_argument("--scheduler", default=None, metavar="ADDRESS",
                    help="dask.distributed scheduler (tcp://HOST:8786 or a scheduler JSON file): predict on that "
                         "cluster; outputs must be .zarr on a file system the workers share")
    pr.add_argument("--block-size", type=int, default=None,
                    help="with --scheduler: block edge in pixels per task (default 4096 in 2D, 384 in 3D)")
    pr.add_argument("--out-format", choices=("tif", "npy", "zarr"), default=None,
                    help="for a folder or glob of images: output format (default: zarr for zarr inputs, else tif)")


# --------------------------------------------------------------------------- inputs and names
def is_batch(image: str) -> bool:
    """A glob or a folder of images (a single image with a folder as --out is refused, as before)."""
    return (any(c in image for c in GLOB_CHARS) and not Path(image).exists()) or \
        (Path(image).is_dir() and Path(image).suffix.lower() != ".zarr" and not _inside_zarr(Path(image)))


def _inside_zarr(p: Path) -> bool:
    return any(q.suffix.lower() == ".zarr" for q in p.parents) or (p / ".zattrs").exists() \
        or (p / "zarr.json").exists() or (p / ".zarray").exists()


def expand_images(image: str) -> list[Path]:
    from .core.io import IMAGE_SUFFIXES

    p = Path(image)
    if p.is_dir() and p.suffix.lower() != ".zarr":
        found = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES and not q.name.startswith("."))
    else:
        found = sorted(Path(q) for q in glob.glob(image))
    if not found:
        raise UserError(f"No image matches '{image}'; check the pattern (quote it so the shell leaves it to us).")
    return found


def stem(p: Path) -> str:
    name = p.name
    for suffix in (".ome.tiff", ".ome.tif", ".ome.zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return p.stem


def output_folder(path: str, flag: str) -> Path:
    d = Path(path)
    if d.suffix.lower() in (".tif", ".tiff", ".npy", ".zarr") or (d.exists() and not d.is_dir()):
        raise UserError(f"{flag} '{d}' names a file; for several images give a folder (e.g. {d.with_suffix('')}/).")
    if not d.parent.is_dir():
        raise UserError(f"The folder above {flag} '{d}' does not exist; create it first.")
    d.mkdir(exist_ok=True)
    return d


# --------------------------------------------------------------------------- one image
def predict_file(model, image_path, out, labels_out, args, on_event, object_paths=(None, None)) -> str:
    """Predict one image into its outputs; returns a one-line description.

    Objects outputs (``--instances-out``/``--measurements-out``) need the whole prediction for the
    watershed: that path keeps it in memory (as before); probabilities and labels then go through the
    same writers.
    """
    from .config import PredictConfig
    from .core.inference import predict_iter
    from .core.io import read_image
    from .core.outputs import Outputs
    from .core.util import drain

    info = read_image(image_path)
    channel_axis = args.channel_axis if args.channel_axis is not None else info.channel_axis
    cfg = PredictConfig(device=args.device, overlap=args.overlap,
                        tile_size=tuple(args.tile_size) if args.tile_size else None,
                        **({} if getattr(args, "tta", None) is None else {"tta": args.tta}))
    from .core.data import ImageView

    spatial = ImageView(info.array, channel_axis).spatial_shape
    voxel = info.voxel_size if info.voxel_size and len(info.voxel_size) == len(spatial) else None
    from .core.anisotropy import voxel_mismatch
    from .core.util import Notice

    note = voxel_mismatch(model.config.voxel_size, getattr(args, "voxel_size", None) or voxel, f"'{image_path}'")
    if note:  # a notice, not an error: the prediction may still be fine (see docs/big-data.md)
        on_event(Notice(note))
    with Outputs(out, labels_out, n_classes=model.config.n_classes, spatial=spatial, voxel_size=voxel,
                 unit=info.unit, model_ndim=model.config.ndim) as outputs:
        if getattr(args, "time_axis", None) is not None:  # a 3D model on TZYX: time point after time point
            from .core.inference import predict_time_iter

            if args.scheduler:
                raise UserError("--time-axis runs on one machine; drop --scheduler for it.")
            probs = drain(predict_time_iter(model, info.array, time_axis=args.time_axis, channel_axis=channel_axis,
                                            config=cfg, name=f"'{image_path}'"), on_event)
            outputs(tuple(slice(0, n) for n in spatial), probs)
            outputs.commit()
            return f"wrote {outputs.describe()}"
        if any(p is not None for p in object_paths):
            if args.scheduler:
                raise UserError("--instances-out/--measurements-out run on one machine; drop --scheduler for them.")
            from .cli_objects import write_object_outputs

            full = drain(predict_iter(model, info.array, channel_axis=channel_axis, config=cfg, extras=True), on_event)
            outputs(tuple(slice(0, n) for n in spatial), full[:model.config.n_classes])
            outputs.commit()
            return f"wrote {outputs.describe()}" + write_object_outputs(args, model, full, info.array, object_paths,
                                                                         voxel, info.unit)
        if args.scheduler:
            from .core.distributed import predict_distributed

            drain(predict_distributed(model, image_path, outputs, args.scheduler, channel_axis=channel_axis,
                                      config=cfg, block_size=args.block_size), on_event)
        else:
            drain(predict_iter(model, info.array, channel_axis=channel_axis, config=cfg, sink=outputs), on_event)
        outputs.commit()
    return f"wrote {outputs.describe()}"


def _bar(total, unit):
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, file=sys.stderr, dynamic_ncols=True, mininterval=0.5)


def cmd_predict(args) -> int:
    from .core.checkpoint import load_model
    from .core.io import check_distinct
    from .core.outputs import check_output_target
    from .core.util import Notice

    model_files = {f"--model's {n}": os.path.join(args.model, n) for n in ("model.safetensors", "config.json")}
    if is_batch(args.image):
        return _predict_folder(args, model_files)
    check_distinct({"--image": args.image, **model_files}, {"--out": args.out, "--labels-out": args.labels_out})
    object_paths = (None, None)
    if getattr(args, "instances_out", None) or getattr(args, "measurements_out", None):
        from .cli_objects import check_predict_outputs

        object_paths = check_predict_outputs(args)
    out = check_output_target(args.out)
    labels_out = check_output_target(args.labels_out, "--labels-out") if args.labels_out else None
    model = load_model(args.model, args.device)
    t0 = time.perf_counter()
    with _bar(1, "tile") as bar:
        def on_event(ev):
            if isinstance(ev, Notice):
                bar.write(ev.message, file=sys.stderr)
                return
            bar.total, bar.n = ev.total, ev.done
            bar.update(0)

        msg = predict_file(model, args.image, out, labels_out, args, on_event, object_paths)
    print(f"{msg} ({time.perf_counter() - t0:.1f} s)")
    return 0


def _predict_folder(args, model_files) -> int:
    """Each image of a folder/glob with one progress bar; a bad file is reported and skipped."""
    from .core.checkpoint import load_model
    from .core.io import check_distinct
    from .core.util import Notice

    if getattr(args, "instances_out", None) or getattr(args, "measurements_out", None):
        raise UserError("--instances-out/--measurements-out take one image; predict a folder without them, or "
                        "image by image.")
    images = expand_images(args.image)
    out_dir = output_folder(args.out, "--out")
    labels_dir = output_folder(args.labels_out, "--labels-out") if args.labels_out else None
    stems = {}
    for p in images:
        if stem(p) in stems:
            raise UserError(f"'{p}' and '{stems[stem(p)]}' would write the same outputs (same name); rename one or "
                            "predict them separately.")
        stems[stem(p)] = p
    inputs = {f"--image '{p}'": p for p in images} | model_files
    plans = []
    for p in images:
        fmt = args.out_format or ("zarr" if p.suffix.lower() == ".zarr" else "tif")
        out = out_dir / f"{stem(p)}_probabilities.{fmt}"
        lab = labels_dir / f"{stem(p)}_labels.{fmt}" if labels_dir else None
        check_distinct(inputs, {"--out": out, "--labels-out": lab})  # never overwrite an input
        plans.append((p, out, lab))
    model = load_model(args.model, args.device)
    failed, t0 = [], time.perf_counter()
    with _bar(len(plans), "image") as bar:
        for i, (p, out, lab) in enumerate(plans):
            def on_event(ev, name=p.name, i=i):
                if isinstance(ev, Notice):
                    bar.write(ev.message, file=sys.stderr)
                    return
                bar.n = i + (ev.done / ev.total if ev.total else 0)
                bar.set_postfix_str(f"{name} {ev.done}/{ev.total} tiles", refresh=False)
                bar.update(0)

            try:
                predict_file(model, p, out, lab, args, on_event)
            except UserError as e:
                failed.append((p, str(e)))
                bar.write(f"napari-unet: {p}: error: {e}", file=sys.stderr)
            except (KeyboardInterrupt, SystemExit, MemoryError):
                raise
            except Exception as e:  # noqa: BLE001 - one bad file must not stop the batch
                failed.append((p, f"{type(e).__name__}: {e}"))
                bar.write(f"napari-unet: {p}: unexpected error: {type(e).__name__}: {e}", file=sys.stderr)
            bar.n = i + 1
            bar.update(0)
    ok = len(plans) - len(failed)
    print(f"predicted {ok} of {len(plans)} image(s) into {out_dir}"
          + (f" (labels in {labels_dir})" if labels_dir else "") + f" in {time.perf_counter() - t0:.1f} s")
    if failed:
        print(f"failed ({len(failed)}): " + "; ".join(f"{p.name}: {m.splitlines()[0]}" for p, m in failed),
              file=sys.stderr)
        return 1
    return 0
