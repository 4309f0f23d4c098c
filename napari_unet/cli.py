"""The ``napari-unet`` command: train, predict, evaluate, demo.

Exit code 0 on success; otherwise non-zero with a one-line reason on stderr (no traceback unless
``--debug``).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from .errors import UserError

from .core.io import IMAGE_SUFFIXES, check_distinct, check_output_file, read_array, write_array  # noqa: F401

EXIT_SIGINT, EXIT_SIGTERM = 130, 143  # 128 + signal number, the shell convention


class Terminated(BaseException):
    """Raised by the SIGTERM handler so temporary files are cleaned up on the way out."""


def _raise_terminated(signum, frame):
    raise Terminated()


class _StopOnSignal:
    """While training: the first SIGINT/SIGTERM asks the loop to stop (like the widget's Stop); the loop
    then keeps the best weights and saves them. A second SIGINT interrupts at once."""

    def __init__(self, quit_on_second: bool = True):
        self.signum = None
        self.old = {}
        # under torchrun a Ctrl+C reaches each process twice (from the terminal, then from torchrun): there
        # the second one must not quit at once; torchrun kills the processes after its --shutdown-timeout
        self.quit_on_second = quit_on_second

    def __call__(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT and self.quit_on_second:
            raise KeyboardInterrupt
        self.signum = signum
        print(f"\nnapari-unet: {signal.Signals(signum).name} received: stopping after this step and saving "
              "(Ctrl+C again to quit at once)", file=sys.stderr)

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.old[sig] = signal.signal(sig, self)
        return self

    def __exit__(self, *exc):
        for sig, h in self.old.items():
            signal.signal(sig, h)

    def should_stop(self) -> bool:
        return self.signum is not None


# --------------------------------------------------------------------------- commands
def _progress_printer(total_steps, time_budget, quiet: bool = False):
    from tqdm import tqdm

    from .core.training import Progress, Started, Validation
    from .core.util import Notice

    by_steps = total_steps is not None and (time_budget is None)
    bar = tqdm(total=total_steps if by_steps else time_budget, unit="step" if by_steps else "s", disable=quiet,
               file=sys.stderr, dynamic_ncols=True, mininterval=0.5, bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} {unit} {postfix}")
    state = {"val": ""}

    def on_event(ev):
        if quiet:  # the other processes of a torchrun: process 0 reports
            return
        if isinstance(ev, Started):
            vox = ev.model_config.voxel_size
            bar.write(f"training on {ev.device}: patch {ev.patch_size}, batch {ev.batch_size}, "
                      + (f"voxel size {tuple(vox)} (pooling {ev.model_config.pool_plan}), " if vox else "") +
                      f"{ev.n_train_samples} image(s)/plane(s), {ev.n_val_regions} held-out region(s)"
                      + (", continuing from the given model" if ev.warm_start else ""), file=sys.stderr)
        elif isinstance(ev, Progress):
            bar.n = ev.step if by_steps else min(ev.elapsed, time_budget)
            bar.set_postfix_str(f"step {ev.step} loss {ev.loss:.4f}{state['val']}", refresh=False)
            bar.update(0)  # redraws at most every mininterval
        elif isinstance(ev, Validation):
            state["val"] = " " + ev.describe()  # says when the held-out IoU saturated
        elif isinstance(ev, Notice):
            bar.write(ev.message, file=sys.stderr)

    return bar, on_event


def cmd_train(args) -> int:
    from .config import ModelConfig, TrainConfig
    from .core.training import train_blocking

    if getattr(args, "config", None):
        from .cli_share import apply_run_config

        apply_run_config(args, build_parser())
    if not args.image or not args.labels or not args.out:
        raise UserError("Give --image, --labels and --out (or a --config run file that holds them).")
    if len(args.image) != len(args.labels):
        raise UserError(f"Give one --labels per --image (got {len(args.image)} image(s) and "
                        f"{len(args.labels)} label file(s)).")
    from .core.checkpoint import check_model_target

    check_distinct({"--image": p for p in args.image} | {"--labels": p for p in args.labels},
                   {"--out": args.out})
    check_model_target(args.out, args.overwrite, flag="--overwrite")
    tc_kwargs = dict(seed=args.seed, device=args.device)
    if args.steps is not None or args.time_budget is not None:
        tc_kwargs.update(steps=args.steps, time_budget=args.time_budget)
    if args.patch_size:
        tc_kwargs["patch_size"] = tuple(args.patch_size)
    if args.batch_size:
        tc_kwargs["batch_size"] = args.batch_size
    if args.threads:
        tc_kwargs["threads"] = args.threads
    if args.no_amp:
        tc_kwargs["amp"] = False
    tc = TrainConfig(**{**getattr(args, "train_extra", {}), **tc_kwargs})
    model_extra = getattr(args, "model_extra", {})
    mc = None
    names = _class_names_arg(args.class_names, args.init)
    if args.ndim != 2 or args.width or args.depth or model_extra or names:
        from .config import default_presets
        from .core.device import get_device

        arch = default_presets(args.ndim, get_device(args.device).type)[0]
        arch.update({k: v for k, v in (("width", args.width), ("depth", args.depth)) if v})
        mc = ModelConfig(**{**arch, **model_extra, "ndim": args.ndim, **({"class_names": names} if names else {})})
    from .core.io import read_image

    infos = [read_image(p) for p in args.image]
    images = [i.array for i in infos]
    voxel = args.voxel_size or _metadata_voxel(infos, args.image, 3 if args.init else args.ndim)
    labels = [np.asarray(read_array(p, "labels")) for p in args.labels]
    if names:
        _check_names_match(names, labels, args.from_instances)
    if getattr(args, "recorded_data", None):
        from .cli_share import check_recorded_data, warn

        for msg in check_recorded_data(args.recorded_data, images, labels, args.image):
            warn(msg)
    record = {"image": [str(Path(p).resolve()) for p in args.image],
              "labels": [str(Path(p).resolve()) for p in args.labels], "config_file": getattr(args, "config", None)}
    from .core import ddp

    with ddp.session(args.device) as backend, _StopOnSignal(quit_on_second=backend is None) as stop:
        if backend is not None and ddp.is_main():
            print(f"data-parallel training on {ddp.world_size()} processes ({backend}); each trains on its own batch "
                  "(global batch = processes x batch); process 0 writes the model", file=sys.stderr)
        bar, on_event = _progress_printer(tc.steps, tc.time_budget, quiet=not ddp.is_main())
        try:
            result = train_blocking(images, labels, model_config=mc, train_config=tc, init=args.init,
                                    channel_axis=args.channel_axis, from_instances=args.from_instances,
                                    out=args.out, objects=True if args.objects else None, on_event=on_event,
                                    should_stop=stop.should_stop, record=record, voxel_size=voxel)
        finally:
            bar.close()
        main_process = ddp.is_main()
    if not main_process:
        return EXIT_SIGINT if stop.signum == signal.SIGINT else EXIT_SIGTERM if stop.signum else 0
    if stop.signum is not None and result.steps == 0:
        print("interrupted before the first training step; nothing saved", file=sys.stderr)
    elif stop.signum is not None:
        print(f"interrupted, model saved to {args.out}: {result.steps} steps in {result.seconds:.1f} s; "
              f"kept {result.kept}", file=sys.stderr)
    if stop.signum is not None:
        return EXIT_SIGINT if stop.signum == signal.SIGINT else EXIT_SIGTERM
    print(f"saved model to {args.out}: {result.steps} steps in {result.seconds:.1f} s on {result.device}; "
          f"kept {result.kept}")
    return 0


def _metadata_voxel(infos, paths, need: int):
    """The first image's voxel size from its metadata (with at least ``need`` axes), or None; a warning
    when another image's differs (training uses the first)."""
    from .core.anisotropy import MISMATCH

    first = infos[0].voxel_size
    if not first or len(first) < need:
        return None
    for info, p in zip(infos[1:], paths[1:]):
        other = info.voxel_size
        if other and len(other) == len(first) and any(abs(o - f) > MISMATCH * f for o, f in zip(other, first)):
            print(f"napari-unet: warning: '{p}' has voxel size {tuple(other)} but '{paths[0]}' {tuple(first)}; "
                  "the model records the first (give --voxel-size to choose)", file=sys.stderr)
    return list(first)


def _class_names_arg(text, init) -> tuple[str, ...] | None:
    """``--class-names "background, nucleus"`` as a tuple (None when not given). A run file (``--config``)
    gives a list; with ``--init`` the initial model's names rule."""
    if text is None:
        return None
    if not isinstance(text, str):
        return None if init is not None else tuple(str(n) for n in text)
    if init is not None:
        raise UserError("--class-names names the classes of a new model; a model given with --init keeps its own "
                        "class names (drop one of the two options).")
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if len(names) < 2 or len(set(names)) != len(names):
        raise UserError(f"--class-names must list at least two different names, background first (e.g. "
                        f"'background, nucleus'); got {text!r}.")
    return names


def _check_names_match(names: tuple[str, ...], labels, from_instances: bool) -> None:
    """One name per label value 1..K+1, so no class is left unnamed or named but absent."""
    top = 2 if from_instances else max(int(lab.max()) if lab.size else 0 for lab in labels)
    if top != len(names):
        raise UserError(f"--class-names lists {len(names)} name(s) but the labels use values 1..{top}; give one "
                        "name per label value, background (label 1) first.")


def cmd_predict(args) -> int:
    from .cli_predict import cmd_predict as run

    return run(args)


def cmd_evaluate(args) -> int:
    from .core.checkpoint import load_model
    from .core.data import check_labels, instances_to_classes
    from .core.inference import predict, to_labels
    from .core.metrics import iou_per_class

    from .cli_objects import evaluate_objects

    model = load_model(args.model, args.device)
    truth_raw = read_array(args.truth, "ground truth")
    # instance ids may be of any size: convert before any value-range check
    if args.truth_instances:
        from .core.objects import _integer_labels

        truth_raw = _integer_labels(truth_raw, "ground truth")
        truth = instances_to_classes(truth_raw, "ground truth")
    else:
        truth = check_labels(truth_raw, "ground truth")
    outputs = predict(model, read_array(args.image), channel_axis=args.channel_axis, extras=args.truth_instances)
    pred = to_labels(outputs[:model.config.n_classes])
    if pred.shape != truth.shape:
        raise UserError(f"Ground truth shape {truth.shape} differs from the image's spatial shape {pred.shape}.")
    for name, value in zip(model.config.class_names[1:], iou_per_class(pred, truth, model.config.n_classes)):
        print(f"IoU {name}: {value:.4f}")
    if args.truth_instances:
        print("\n".join(evaluate_objects(args, model, outputs, truth_raw)))
    return 0


def cmd_demo(args) -> int:
    if not args.headless:
        from .widgets.launch import launch_demo

        launch_demo(args.time_budget)
        return 0
    from .config import TrainConfig
    from .core.inference import predict, to_labels
    from .core.metrics import iou_per_class
    from .core.synthetic import demo_pair, make_nuclei
    from .core.checkpoint import check_model_target
    from .core.training import train_blocking

    if args.out:
        check_model_target(args.out, args.overwrite, flag="--overwrite")
    image, ann, _ = demo_pair(2, seed=0)
    test = make_nuclei(image.shape, seed=100)
    print(f"demo: synthetic nuclei {image.shape}, {int((ann > 0).sum())} annotated pixels (sparse strokes); "
          + (f"training for {args.steps} steps" if args.steps else f"training for {args.time_budget:g} s"),
          file=sys.stderr)
    tc = TrainConfig(time_budget=None if args.steps else args.time_budget, steps=args.steps, device=args.device,
                     seed=args.seed)
    bar, on_event = _progress_printer(tc.steps, tc.time_budget)
    try:
        result = train_blocking(image, ann, train_config=tc, out=args.out, on_event=on_event)
    finally:
        bar.close()
    t0 = time.perf_counter()
    pred = to_labels(predict(result.model, test.image))
    t_pred = time.perf_counter() - t0
    iou = iou_per_class(pred, test.semantic, 2)[0]
    print(f"held-out IoU {iou:.3f} after {result.seconds:.1f} s of training ({result.steps} steps on "
          f"{result.device}); prediction of {test.image.shape} took {t_pred:.2f} s")
    return 0


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .config import DEMO_TIME_BUDGET, PredictConfig, TrainConfig, tta_auto_rule
    from .core.device import DEVICE_CHOICES

    p = argparse.ArgumentParser(prog="napari-unet", description="Train and apply U-Nets on microscopy images. "
                                "Labels: 0 = not annotated, 1 = background, 2.. = object classes.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True,
                           help="what to do (napari-unet COMMAND --help lists its options)")

    def common(sp):
        sp.add_argument("--device", default="auto", choices=DEVICE_CHOICES,
                        help="where to compute; auto picks cuda, then mps, then cpu (default auto)")
        sp.add_argument("--channel-axis", type=int, default=None, help="axis of the image holding channels")

    t = sub.add_parser("train", help="train a model on images and annotations")
    t.add_argument("--image", action="append", help="image file (repeat for several)")
    t.add_argument("--labels", action="append", help="annotation file, one per --image")
    t.add_argument("--out", help="model folder to write (autosaved during training)")
    t.add_argument("--overwrite", action="store_true", help="replace the model already in --out")
    t.add_argument("--config", default=None, help="run file (.json/.toml/.yaml) with every setting, or a model "
                   "folder / its config.json to repeat its recorded run; flags given here win")
    t.add_argument("--time-budget", type=float, default=None,
                   help=f"seconds of training (default {TrainConfig().time_budget:g})")
    t.add_argument("--steps", type=int, default=None, help="number of training steps")
    t.add_argument("--ndim", type=int, choices=(2, 3), default=2, help="2D (plane by plane) or 3D model")
    t.add_argument("--init", default=None, help="model folder to continue training from")
    t.add_argument("--seed", type=int, default=0, help="random seed for weights, patches and augmentation")
    t.add_argument("--class-names", default=None, metavar="NAMES",
                   help="comma-separated class names, one per label value, background first "
                        "(e.g. 'background, nucleus'); stored in the model")
    t.add_argument("--from-instances", action="store_true",
                   help="labels are instance/binary masks (0 background, >0 objects), fully annotated")
    t.add_argument("--patch-size", type=int, nargs="+", default=None,
                   help="training patch size, one integer per spatial axis (default: a preset for the device)")
    t.add_argument("--batch-size", type=int, default=None, help="patches per step (default: a preset for the device)")
    t.add_argument("--width", type=int, default=None, help="channels of the first U-Net level (default: preset)")
    t.add_argument("--depth", type=int, default=None, help="number of U-Net down-sampling levels (default: preset)")
    from .cli_objects import add_predict_options, add_train_options, add_voxel_option

    add_train_options(t)
    add_voxel_option(t, "voxel size of the images (Z Y X for --ndim 3, e.g. 4 1 1 or 4,1,1): a 3D model pools a "
                        "coarse Z less (stored in the model; default: from the first image's metadata)")
    t.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads for training (default: the idle cores, lowered to all cores but one "
                        "if training slows down because another program takes a core)")
    t.add_argument("--no-amp", action="store_true",
                   help="train in float32 (no float16 on CUDA, no bfloat16 on CPU)")
    common(t)
    t.set_defaults(func=cmd_train)

    pr = sub.add_parser("predict", help="predict probabilities (and labels) for an image or a folder of images")
    pr.add_argument("--model", required=True, help="model folder (model.safetensors + config.json)")
    pr.add_argument("--image", required=True, help="an image (.tif, .npy, .zarr, OME-Zarr), a folder or a quoted glob")
    pr.add_argument("--out", required=True, help="probabilities (n_classes, *spatial) as .tif, .npy or .zarr "
                    "(written tile by tile); a folder (ending in /) for several images")
    pr.add_argument("--labels-out", default=None, help="argmax labels (1 = background, 2.. classes) as .tif, .npy "
                    "or .zarr; a folder for several images")
    pr.add_argument("--tile-size", type=int, nargs="+", default=None,
                    help="tile size, one integer per model axis (default: automatic)")
    pr.add_argument("--overlap", type=float, default=PredictConfig().overlap,
                    help=f"fraction of overlap between tiles (default {PredictConfig().overlap:g})")
    from .cli_predict import add_big_options

    add_big_options(pr)
    add_predict_options(pr)
    pr.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                    help="test-time augmentation: average over flips and 90-degree rotations (default: on for "
                    f"{tta_auto_rule()})")
    pr.add_argument("--time-axis", type=int, default=None,
                    help="axis of the image holding time points, predicted one after another (e.g. 0 for TZYX "
                         "with a 3D model)")
    common(pr)
    pr.set_defaults(func=cmd_predict)

    ev = sub.add_parser("evaluate", help="IoU of a model's prediction against ground truth")
    ev.add_argument("--model", required=True, help="model folder (model.safetensors + config.json)")
    ev.add_argument("--image", required=True, help="image file: .tif, .npy or .zarr")
    ev.add_argument("--truth", required=True, help="ground-truth labels (1 = background, 2.. classes)")
    ev.add_argument("--truth-instances", action="store_true",
                    help="truth is an instance mask (0 background, any ids): also object AP, F1 and count error")
    add_voxel_option(ev)
    common(ev)
    ev.set_defaults(func=cmd_evaluate)

    d = sub.add_parser("demo", help="train on built-in synthetic nuclei (opens napari unless --headless)")
    d.add_argument("--headless", action="store_true", help="no GUI: train, predict, print IoU and seconds")
    d.add_argument("--time-budget", type=float, default=DEMO_TIME_BUDGET,
                   help=f"seconds of training (default {DEMO_TIME_BUDGET:g})")
    d.add_argument("--steps", type=int, default=None,
                   help="train exactly this many steps instead of for a time budget (reproducible)")
    d.add_argument("--out", default=None, help="also save the model folder here")
    d.add_argument("--overwrite", action="store_true", help="replace the model already in --out")
    d.add_argument("--seed", type=int, default=0, help="random seed")
    d.add_argument("--device", default="auto", choices=DEVICE_CHOICES,
                   help="where to compute; auto picks cuda, then mps, then cpu (default auto)")
    d.set_defaults(func=cmd_demo)

    from .cli_share import add_commands

    add_commands(sub, common)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args._argv = list(sys.argv[1:] if argv is None else argv)  # which flags were typed (for --config)
    main_thread = threading.current_thread() is threading.main_thread()  # signals: main thread only
    old_term = signal.signal(signal.SIGTERM, _raise_terminated) if main_thread else None  # temp files go too
    try:
        return args.func(args)
    except UserError as e:
        print(f"napari-unet: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("napari-unet: interrupted", file=sys.stderr)
        return EXIT_SIGINT
    except Terminated:
        print("napari-unet: terminated", file=sys.stderr)
        return EXIT_SIGTERM
    except MemoryError:
        print("napari-unet: error: out of memory; use a smaller image, tile size or batch size", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - one line, not a traceback, unless --debug
        if args.debug:
            raise
        msg = str(e).splitlines()[0] if str(e) else ""
        print(f"napari-unet: unexpected error: {type(e).__name__}: {msg} (rerun with --debug for details)",
              file=sys.stderr)
        return 1
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
