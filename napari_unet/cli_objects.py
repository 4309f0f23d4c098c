"""The objects parts of the ``napari-unet`` command: options and outputs (kept apart from cli.py).

``train --objects``; ``predict --instances-out INST.tif --measurements-out objects.csv
[--voxel-size ...]``; ``evaluate --truth-instances`` adds object AP at IoU 0.5..0.9, F1 at 0.5
and the count error beside the pixel IoU.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from .errors import UserError


def add_train_options(parser) -> None:
    parser.add_argument("--objects", action="store_true",
                        help="objects mode: labels hold one value per object (0 not annotated, 1 background, 2.. "
                             "objects; with --from-instances an instance mask); the model learns to separate "
                             "touching objects")


def add_predict_options(parser) -> None:
    parser.add_argument("--instances-out", default=None,
                        help="objects (0 background, 1..N; uint16, or uint32 above 65535 objects) as .tif, .npy "
                             "or .zarr (OME-Zarr)")
    parser.add_argument("--measurements-out", default=None,
                        help="one CSV row per object: id, area/volume, centroid, bounding box, intensity")
    add_voxel_option(parser)


def _numbers(text: str) -> list[float]:
    """One --voxel-size word: a number, or several separated by commas ("4,1,1")."""
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number or comma-separated numbers: {text!r}") from None


class _Flatten(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, [v for word in values for v in word])


VOXEL_HELP = ("pixel/voxel size per spatial axis (Z Y X, e.g. 4 1 1 or 4,1,1, in um): areas and volumes in these "
              "units, anisotropic distances for splitting objects; a model trained at another voxel size gets a "
              "notice (default: from the image's metadata)")


def add_voxel_option(parser, help: str = VOXEL_HELP) -> None:
    parser.add_argument("--voxel-size", type=_numbers, nargs="+", action=_Flatten, default=None, help=help)


def check_predict_outputs(args) -> tuple[Path | None, Path | None]:
    """Fail before any work on unusable objects outputs; never write over an input or another output."""
    from .core.io import check_distinct
    from .core.outputs import check_output_target

    inst = check_output_target(args.instances_out, "--instances-out") if args.instances_out else None
    meas = None
    if args.measurements_out:
        meas = Path(args.measurements_out)
        if meas.suffix.lower() != ".csv":
            raise UserError(f"Measurements output '{meas}' must end in .csv.")
        parent = meas.parent if str(meas.parent) else Path(".")
        if not parent.is_dir():
            raise UserError(f"The folder of the output '{meas}' does not exist; create it first.")
        if not os.access(parent, os.W_OK) or meas.is_dir():
            raise UserError(f"Cannot write '{meas}'; choose a writable file path.")
    model_files = {f"--model's {n}": os.path.join(args.model, n) for n in ("model.safetensors", "config.json")}
    check_distinct({"--image": args.image, **model_files},
                   {"--out": args.out, "--labels-out": args.labels_out, "--instances-out": inst,
                    "--measurements-out": meas})
    return inst, meas


def _sampling(args, ndim: int):
    if not args.voxel_size:
        return None
    if len(args.voxel_size) < ndim or any(v <= 0 for v in args.voxel_size):
        raise UserError(f"--voxel-size needs {ndim} positive numbers (one per spatial axis, the last ones), "
                        f"got {args.voxel_size}.")
    return tuple(args.voxel_size)


def instances_for(model, outputs: np.ndarray, sampling=None) -> np.ndarray:
    """Objects from ``predict(..., extras=True)`` (a semantic model: distance watershed on its foreground)."""
    from .core.inference import split_outputs
    from .core.objects import instances_from_output

    probs, dist = split_outputs(model, outputs)
    return instances_from_output(probs, dist, ndim=model.config.ndim, sampling=sampling)


def write_object_outputs(args, model, outputs: np.ndarray, image, paths, voxel_size=None, unit=None) -> str:
    """Write instances and measurements; return what was written, for the summary line.

    ``voxel_size``/``unit``: the image's, for a .zarr instances output's metadata (``--voxel-size``
    wins when given).
    """
    from .core.objects import measure, write_csv
    from .core.outputs import write_label_image

    inst_path, meas_path = paths
    spatial = outputs.shape[1:]
    sampling = _sampling(args, len(spatial))
    inst = instances_for(model, outputs, sampling)
    n = int(inst.max())
    msg = f"; {n} objects"
    if model.config.ndim == 2 and len(spatial) > 2:
        msg += " (found plane by plane by a 2D model)"
    if not model.config.objects:
        msg += " (distance-transform watershed: this model was trained without --objects)"
    if inst_path is not None:
        voxel = tuple(sampling)[-len(spatial):] if sampling else voxel_size
        write_label_image(inst_path, inst, voxel_size=voxel, unit=unit,
                          model_ndim=model.config.ndim)
        msg += f", instances to {inst_path}"
    if meas_path is not None:
        if inst.ndim > 3:
            raise UserError("Measurements need a 2D or 3D image; predict each time point separately.")
        write_csv(meas_path, measure(inst, np.asarray(image), args.channel_axis, scale=sampling))
        msg += f", measurements to {meas_path}"
    return msg


def evaluate_objects(args, model, outputs: np.ndarray, truth_raw) -> list[str]:
    """Object AP at IoU 0.5..0.9, F1 at 0.5 and the count error against an instance mask."""
    from .core.metrics import AP_THRESHOLDS, match_objects
    from .core.objects import _integer_labels

    truth = _integer_labels(truth_raw, "ground truth")
    if truth.shape != outputs.shape[1:]:
        raise UserError(f"Ground truth shape {truth.shape} differs from the image's spatial shape {outputs.shape[1:]}.")
    pred = instances_for(model, outputs, _sampling(args, truth.ndim))
    m = match_objects(truth, pred, AP_THRESHOLDS)
    lines = [f"object AP@{t:g}: {m['ap'][t]:.4f}" for t in AP_THRESHOLDS]
    lines.append(f"object F1@0.5: {m['f1'][0.5]:.4f}")
    lines.append(f"objects: {m['n_pred']} predicted, {m['n_true']} true, count error {m['count_error']:+d} "
                 f"({100 * m['relative_count_error']:.1f} %)")
    return lines
