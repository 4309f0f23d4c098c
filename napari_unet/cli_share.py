"""CLI pieces for sharing and repeating work: ``export``, ``report`` and ``train --config``.

A run file (``.json``, ``.toml``, or ``.yaml`` when PyYAML is installed) holds every setting of a
training run; paths in it are relative to the file::

    {"image": ["a.tif"], "labels": ["a_labels.tif"], "out": "model", "channel_axis": null,
     "from_instances": false, "init": null,
     "model": {"ndim": 2, "depth": 3, "width": 16, ...},     # any ModelConfig fields
     "train": {"steps": 500, "time_budget": null, "seed": 0, "lr": 0.002, ...}}   # any TrainConfig fields

A model folder's ``config.json`` (or the folder itself) works as a run file too: it repeats the
model's last training session with the settings, seed and files it recorded (``--out`` is then
required, so the recorded model is never overwritten). Flags given on the command line win over
the file; ``--steps`` or ``--time-budget`` replace the file's stopping rule as a whole.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from .errors import UserError

# CLI dest -> (section, key) in a run file; section None: top level
FLAG_FIELDS = {
    "image": (None, "image"), "labels": (None, "labels"), "out": (None, "out"), "init": (None, "init"),
    "channel_axis": (None, "channel_axis"), "from_instances": (None, "from_instances"), "objects": (None, "objects"),
    "seed": ("train", "seed"), "device": ("train", "device"), "steps": ("train", "steps"),
    "time_budget": ("train", "time_budget"), "patch_size": ("train", "patch_size"),
    "batch_size": ("train", "batch_size"), "threads": ("train", "threads"), "ndim": ("model", "ndim"),
    "width": ("model", "width"), "depth": ("model", "depth"), "class_names": ("model", "class_names"),
    "voxel_size": ("model", "voxel_size"),
}
TOP_KEYS = {k for s, k in FLAG_FIELDS.values() if s is None} | {"model", "train"}


# --------------------------------------------------------------------------- run files
def read_run_file(path) -> tuple[dict, Path, bool]:
    """(run dict, folder that relative paths refer to, whether it came from a model's record)."""
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    if not p.is_file():
        raise UserError(f"The run file '{path}' does not exist; give a .json/.toml/.yaml run file or a model folder.")
    text = p.read_text(encoding="utf-8")
    suffix = p.suffix.lower()
    try:
        if suffix == ".json":
            data = json.loads(text)
        elif suffix == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                raise UserError("Reading .toml run files needs Python 3.11 or later; use a .json run file.") from None
            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise UserError("Reading .yaml run files needs PyYAML (pip install pyyaml); or use .json or "
                                ".toml.") from None
            data = yaml.safe_load(text)
        else:
            raise UserError(f"Run file '{p}' must end in .json, .toml or .yaml.")
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - each parser has its own error type
        raise UserError(f"Cannot parse the run file '{p}': {str(e).splitlines()[0]}; fix its syntax.") from None
    if not isinstance(data, dict):
        raise UserError(f"The run file '{p}' must hold a mapping of settings, not {type(data).__name__}.")
    if data.get("format") == "napari-unet-loop":
        return _run_from_record(data, p), p.parent, True
    return data, p.parent, False


def _run_from_record(info: dict, path: Path) -> dict:
    from .core.record import sessions

    class _M:  # sessions() reads .history only
        history = info.get("history") or []

    runs = [h for h in sessions(_M) if "settings" in h]
    if not runs:
        raise UserError(f"The model config '{path}' records no training settings (it predates run records); give "
                        "a run file with the settings instead.")
    h = runs[-1]
    inputs = h.get("inputs", {})
    run = {"model": h["model"], "train": h["settings"], "channel_axis": inputs.get("channel_axis"),
           "from_instances": inputs.get("from_instances", False), "init": inputs.get("init"),
           "_data": h.get("data", []), "_source": str(path.parent)}
    for k in ("image", "labels", "objects"):
        if inputs.get(k) is not None:
            run[k] = inputs[k]
    return run


def _given(args, parser) -> set[str]:
    """The dests the user typed on the command line (not defaults)."""
    argv = getattr(args, "_argv", None)
    sub = parser._subparsers._group_actions[0].choices["train"]  # noqa: SLF001 - argparse has no public way
    if argv is None:
        return {a.dest for a in sub._actions if getattr(args, a.dest, None) != a.default}  # noqa: SLF001
    saved = [(a, a.default) for a in sub._actions]  # noqa: SLF001
    try:
        for a, _ in saved:
            a.default = argparse.SUPPRESS
        ns, _ = parser.parse_known_args(argv)
    finally:
        for a, d in saved:
            a.default = d
    return set(vars(ns))


def apply_run_config(args, parser) -> None:
    """Fill ``args`` from ``args.config``; flags given on the command line win. Sets
    ``args.train_extra``/``args.model_extra`` (settings without a flag) and ``args.recorded_data``."""
    from .config import ModelConfig, TrainConfig

    run, base, from_record = read_run_file(args.config)
    unknown = set(run) - TOP_KEYS - {"_data", "_source"}
    if unknown:
        raise UserError(f"Run file '{args.config}': unknown setting(s) {sorted(unknown)}; allowed: {sorted(TOP_KEYS)}.")
    for section, cls in (("model", ModelConfig), ("train", TrainConfig)):
        if not isinstance(run.get(section, {}), dict):
            raise UserError(f"Run file '{args.config}': '{section}' must be a mapping of {cls.__name__} fields.")
        bad = set(run.get(section, {})) - {f.name for f in dataclasses.fields(cls)}
        if bad:
            raise UserError(f"Run file '{args.config}': unknown {section} setting(s) {sorted(bad)}.")
    given = _given(args, parser)
    if from_record:
        if "out" not in given:
            raise UserError(f"Repeating the run recorded in '{args.config}' needs --out for the new model (the "
                            "recorded model is never overwritten).")
        if Path(args.out).resolve() == Path(run["_source"]).resolve():
            raise UserError(f"--out '{args.out}' is the model whose record is repeated; choose another folder.")
    stop_given = bool({"steps", "time_budget"} & given)
    for dest, (section, key) in FLAG_FIELDS.items():
        if dest in given or not hasattr(args, dest):
            continue
        if stop_given and dest in ("steps", "time_budget"):
            setattr(args, dest, None)
            continue
        src = run if section is None else run.get(section, {})
        if key not in src:
            continue
        value = src[key]
        if dest in ("image", "labels"):
            value = [str(base / v) for v in ([value] if isinstance(value, str) else value)]
        elif dest in ("out", "init") and value is not None:
            value = str(base / value)
        setattr(args, dest, value)
    flagged = {sk for dest, sk in FLAG_FIELDS.items() if hasattr(args, dest)}  # the rest go to the extras
    args.train_extra = {k: (tuple(v) if isinstance(v, list) else v) for k, v in run.get("train", {}).items()
                        if ("train", k) not in flagged}
    args.model_extra = {k: (tuple(v) if isinstance(v, list) else v) for k, v in run.get("model", {}).items()
                        if ("model", k) not in flagged}
    args.recorded_data = run.get("_data") or None
    if not args.image or not args.labels:
        raise UserError(f"No images to train on: the run file '{args.config}' lists none" +
                        (" (the model was trained in napari or from Python)" if from_record else "") +
                        "; give --image and --labels.")


def check_recorded_data(recorded, images, labels, image_paths) -> list[str]:
    """Warnings for inputs that differ from a recorded run's fingerprints."""
    from .core.record import fingerprint

    if not recorded:
        return []
    out = []
    if len(recorded) != len(images):
        return [f"the recorded run used {len(recorded)} image(s), this one {len(images)}; it will not repeat it"]
    for i, (rec, img, lab, path) in enumerate(zip(recorded, images, labels, image_paths)):
        for what, arr, r in (("image", img, rec.get("image", {})), ("labels", lab, rec.get("labels", {}))):
            if fingerprint(arr)["sha256"] != r.get("sha256"):
                out.append(f"{what} {i + 1} ({path}) differs from the recorded run's (SHA-256 mismatch); the run "
                           "will not repeat the record exactly")
    return out


# --------------------------------------------------------------------------- export and report
def cmd_export(args) -> int:
    from .core.checkpoint import load_model
    from .core.export import check_export_path, export_model, test_package

    out, fmt = check_export_path(args.out, args.format)
    model = load_model(args.model, "cpu")
    image = None
    if args.image:
        from .core.io import read_array

        image = read_array(args.image)
    path = export_model(model, out, fmt, image=image, channel_axis=args.channel_axis, name=args.name,
                        authors=tuple(args.author or ("napari-unet user",)), license=args.license,
                        onnx=False if args.no_onnx else None)
    print(f"wrote {fmt} export of {args.model} to {path}")
    if args.test and fmt == "bioimageio":
        ok, text = test_package(path)
        print(text)
        print(f"bioimageio test: {'passed' if ok else 'FAILED'}")
        return 0 if ok else 1
    return 0


def cmd_report(args) -> int:
    from .core.checkpoint import load_model
    from .core.report import write_report

    model = load_model(args.model, args.device)
    image = truth = None
    if args.truth and not args.image:
        raise UserError("--truth needs --image (the image the truth belongs to).")
    if args.image:
        from .core.io import read_array

        image = read_array(args.image)
    if args.truth:
        from .core.io import read_array
        from .core.data import check_labels, instances_to_classes

        truth = check_labels(read_array(args.truth, "ground truth"), "ground truth")
        if args.truth_instances:
            truth = instances_to_classes(truth)
    path = write_report(model, args.out, image=image, truth=truth, channel_axis=args.channel_axis,
                        model_name=str(args.model))
    print(f"wrote report to {path}")
    return 0


def add_commands(sub, common) -> None:
    from .core.export import FORMATS

    e = sub.add_parser("export", help="export a model as a bioimage.io package (.zip), ONNX or TorchScript")
    e.add_argument("--model", required=True, help="model folder (or a package exported before)")
    e.add_argument("--out", required=True, help="PACKAGE.zip, MODEL.onnx or MODEL.pt")
    e.add_argument("--format", choices=FORMATS, default=None, help="default: from the suffix of --out")
    e.add_argument("--image", default=None, help="image to cut the package's test input from (default: synthetic)")
    e.add_argument("--channel-axis", type=int, default=None, help="axis of --image holding channels")
    e.add_argument("--name", default=None, help="model name (letters, digits, spaces, _-+())")
    e.add_argument("--author", action="append", default=None, help="author name (repeat for several)")
    e.add_argument("--license", default="CC-BY-4.0", help="SPDX license id (default CC-BY-4.0)")
    e.add_argument("--no-onnx", action="store_true", help="package TorchScript weights only")
    e.add_argument("--test", action="store_true", help="run bioimageio.core's test on the package")
    e.set_defaults(func=cmd_export)

    r = sub.add_parser("report", help="write a self-contained HTML methods/QC report for a model")
    r.add_argument("--model", required=True, help="model folder whose training the report describes")
    r.add_argument("--out", required=True, help="report.html")
    r.add_argument("--image", default=None, help="an image to show the prediction on")
    r.add_argument("--truth", default=None, help="ground truth for --image (1 background, 2.. classes)")
    r.add_argument("--truth-instances", action="store_true", help="truth is an instance mask")
    common(r)
    r.set_defaults(func=cmd_report)


def warn(msg: str) -> None:
    print(f"napari-unet: warning: {msg}", file=sys.stderr)
