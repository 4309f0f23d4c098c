"""A self-contained HTML methods/QC report for a model (figures as embedded PNG, made with matplotlib).

It reads everything from the model's record (``config.json`` history): data and annotation
summary, settings, device and time, loss and validation curves, rounds, and writes a methods
paragraph to paste into a paper. Given an image (and its ground truth) it adds the prediction and
an evaluation. matplotlib is used through ``Figure`` objects only (no pyplot, no GUI backend).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import os
from pathlib import Path

import numpy as np

from ..errors import UserError
from .anisotropy import voxel_text
from .checkpoint import Model
from .io import apply_umask, disk_error, temp_path
from .record import sessions

STYLE = """body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1100px;margin:24px auto;
padding:0 16px;color:#222;line-height:1.45}h1{font-size:1.6em;margin-bottom:0}h2{border-bottom:1px solid #ddd;
padding-bottom:4px;margin-top:1.6em}table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;
padding:3px 8px;text-align:left;font-size:.92em}th{background:#f4f4f4}.sub{color:#666}.methods{background:#f7f9fc;
border-left:4px solid #4a7fd4;padding:10px 14px}img{max-width:100%}code{font-size:.9em}"""


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return '<img alt="figure" src="data:image/png;base64,' + base64.b64encode(buf.getvalue()).decode() + '">'


def _figure(w=10.0, h=3.4):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise UserError('The report needs matplotlib; pip install "napari-unet-loop[export]".') from None
    return Figure(figsize=(w, h), dpi=100, layout="constrained")


def _table(rows, header=None) -> str:
    e = html.escape
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{e(str(h))}</th>" for h in header) + "</tr>")
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>")
    return "".join(out) + "</table>"


def _curves(runs: list[dict]):
    """Loss per step over all rounds (with a running mean), validation loss and held-out IoU."""
    fig = _figure()
    a, b = fig.subplots(1, 2)
    offset = 0
    for i, h in enumerate(runs):
        every = h.get("losses_every", 1)
        losses = np.asarray(h.get("losses") or [], float)
        x = offset + every * (np.arange(len(losses)) + 1)
        if len(losses):
            a.plot(x, losses, color="#9ab8e6", lw=0.7, label="loss per step" if i == 0 else None)
            k = max(1, min(25, len(losses) // 10))
            smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
            a.plot(x[k - 1:], smooth, color="#1f4e9c", lw=1.6, label=f"running mean ({k})" if i == 0 else None)
        val = [r for r in h.get("runs", []) if r.get("val_loss") is not None]
        if val:
            a.plot([offset + r["step"] for r in val], [r["val_loss"] for r in val], "o-", color="#d2691e", ms=3,
                   label="held-out loss" if i == 0 else None)
            ious = [(offset + r["step"], r["val_iou"]) for r in val if r.get("val_iou") is not None]
            if ious:
                b.plot(*zip(*ious), "o-", color="#2e8b57", ms=3, label="held-out IoU" if i == 0 else None)
        if i:
            for ax in (a, b):
                ax.axvline(offset, color="#888", ls="--", lw=0.8)
        offset += int(h.get("steps") or 0)
    a.set_xlabel("step (all rounds)")
    a.set_ylabel("cross-entropy")
    a.set_title("training loss")
    a.legend(fontsize=8)
    b.set_xlabel("step (all rounds)")
    b.set_ylabel("mean IoU of classes")
    b.set_ylim(0, 1.02)
    b.set_title("validation on held-out annotations")
    if b.lines:
        b.legend(fontsize=8)
    else:
        b.text(0.5, 0.5, "no held-out annotations\n(too few to spare)", ha="center", va="center",
               transform=b.transAxes, color="#666")
    return fig


def _annotation_chart(data: list[dict], class_names) -> object:
    fig = _figure(4.5, 2.2)
    ax = fig.subplots()
    counts = {}
    for d in data:
        for v, c in d["labels"].get("pixels_per_label", {}).items():
            counts[int(v)] = counts.get(int(v), 0) + c
    values = sorted(counts)
    names = [class_names[v - 1] if 0 < v <= len(class_names) else f"label {v}" for v in values]
    ax.bar(names, [counts[v] for v in values], color="#4a7fd4")
    ax.set_ylabel("annotated pixels")
    ax.set_title("annotations per class (last round)")
    return fig


def _plane(a: np.ndarray) -> np.ndarray:
    while a.ndim > 2:
        a = a[a.shape[0] // 2]
    return a


def _prediction_figure(image2d, pred2d, truth2d=None):
    n = 2 if truth2d is None else 3
    fig = _figure(4.0 * n, 4.0)
    axes = fig.subplots(1, n)
    lo, hi = np.percentile(image2d, [1, 99.8])
    axes[0].imshow(image2d, cmap="gray", vmin=lo, vmax=hi)
    axes[0].set_title("image")
    axes[1].imshow(pred2d - 1, cmap="tab10", vmin=0, vmax=9, interpolation="nearest")
    axes[1].set_title("prediction")
    if truth2d is not None:
        wrong = (truth2d > 0) & (pred2d != truth2d)
        axes[2].imshow(image2d, cmap="gray", vmin=lo, vmax=hi)
        from matplotlib.colors import ListedColormap

        axes[2].imshow(np.ma.masked_where(~wrong, wrong.astype(float)), cmap=ListedColormap(["red"]), alpha=0.8,
                       interpolation="nearest")
        axes[2].set_title(f"errors vs truth (red): {wrong.sum() / max((truth2d > 0).sum(), 1):.1%}")
    for ax in axes:
        ax.set_axis_off()
    return fig


def _evaluation(pred, truth, class_names) -> tuple[list, float]:
    from .metrics import dice, iou_per_class

    ious = iou_per_class(pred, truth, len(class_names))
    rows = []
    for k, (name, iou) in enumerate(zip(class_names[1:], ious), start=2):
        d = dice(pred == k, (truth == k)) if (truth == k).any() or (pred == k).any() else float("nan")
        rows.append((name, f"{iou:.4f}", f"{d:.4f}", int((truth == k).sum())))
    valid = truth > 0
    acc = float((pred[valid] == truth[valid]).mean()) if valid.any() else float("nan")
    return rows, acc


def methods_paragraph(model: Model) -> str:
    """A plain methods paragraph from the model's record."""
    mc = model.config
    runs = sessions(model)
    last = runs[-1] if runs else {}
    s = last.get("settings", {})
    v = last.get("versions", {})
    steps = sum(int(h.get("steps") or 0) for h in runs)
    secs = sum(float(h.get("seconds") or 0) for h in runs)
    data = last.get("data", [])
    per = {}
    for d in data:
        for val, c in d["labels"].get("pixels_per_label", {}).items():
            per[int(val)] = per.get(int(val), 0) + c
    ann = ", ".join(f"{per[k]:,} {mc.class_names[k - 1] if 0 < k <= mc.n_classes else k}" for k in sorted(per))
    text = (f"Pixel classification ({', '.join(mc.class_names)}) used a {mc.ndim}D U-Net (Ronneberger et al., 2015) "
            f"with {mc.depth} down-sampling levels, {mc.width} channels in the first level (doubling per level) and "
            f"{mc.norm} normalisation, trained interactively with napari-unet-loop {v.get('napari_unet', '')} "
            f"(PyTorch {v.get('torch', '')}). Images were normalised per channel by mapping the {mc.norm_low:g} and "
            f"{mc.norm_high:g} intensity percentiles to 0 and 1. ")
    if mc.voxel_size is not None and mc.ndim == 3:
        text += (f"The voxel size ({', '.join(f'{v:g}' for v in mc.voxel_size)}, ZYX) set the pooling per level "
                 f"({voxel_text(mc).split('; ', 1)[-1]}), pooling an axis only while its spacing was less than "
                 "twice the finest (as in nnU-Net, Isensee et al., 2021). ")
    if data:
        text += (f"The network was trained on {len(data)} image(s) with {sum(per.values()):,} annotated pixels "
                 f"({ann}); pixels without annotation were ignored by the loss. ")
    if s:
        aug = "random flips, 90-degree rotations and intensity jitter" if s.get("augment") else "no augmentation"
        text += ("Training minimised a class-weighted cross-entropy (weights = class frequency^-"
                 f"{s.get('class_balance')}) with AdamW (learning rate {s.get('lr')}, weight decay "
                 f"{s.get('weight_decay')}, "
                 f"{s.get('schedule')} schedule after a 20-step warm-up) on batches of {s.get('batch_size')} "
                 "patches of "
                 f"{' x '.join(str(p) for p in s.get('patch_size') or [])} pixels "
                 f"({100 * s.get('annotated_fraction', 0):.0f}% centred on annotated pixels) with {aug}")
        text += (f", and an exponential moving average of the weights (decay {s.get('ema_decay')})" if
                 s.get("ema_decay") else "") + ". "
        text += (f"{len(runs)} training round(s) took {steps:,} steps and {secs:.1f} s in total on "
                 f"{last.get('device', 'an unrecorded device')}; {100 * s.get('val_fraction', 0):.0f}% of the "
                 f"annotated regions were held out for validation and the kept weights were: {last.get('kept', '')}. "
                 f"Random seed {s.get('seed')}.")
    return text


def write_report(model: Model, path, *, image=None, truth=None, channel_axis=None, rounds=None,
                 model_name: str = "") -> Path:
    """Write the HTML report to ``path`` (atomically) and return it.

    ``image``/``truth``: optional image (and ground truth, 1 background, 2.. classes) to show and
    evaluate the prediction on. ``rounds``: the widget's rounds (dicts with ``dice``); by default
    ``model.meta["rounds"]`` when present.
    """
    p = Path(path)
    if p.suffix.lower() not in (".html", ".htm"):
        raise UserError(f"Report output '{p}' must end in .html.")
    if not (p.parent if str(p.parent) else Path(".")).is_dir():
        raise UserError(f"The folder of the report '{p}' does not exist; create it first.")
    mc = model.config
    runs = sessions(model)
    last = runs[-1] if runs else {}
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>napari-unet report</title><style>{STYLE}"
             "</style></head><body>", f"<h1>napari-unet model report</h1><p class='sub'>{e(model_name)} &middot; "
             f"written {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}</p>"]

    parts.append("<h2>Methods</h2><p class='methods'>" + e(methods_paragraph(model)) + "</p>")

    n_params = sum(t.numel() for t in model.net.parameters())
    parts.append("<h2>Model</h2>" + _table([
        ("dimensionality", f"{mc.ndim}D"), ("input channels", mc.in_channels),
        ("classes (label value: name)", ", ".join(f"{i + 1}: {c}" for i, c in enumerate(mc.class_names))),
        ("depth / width / norm", f"{mc.depth} / {mc.width} / {mc.norm}"), ("parameters", f"{n_params:,}"),
        ("normalisation", f"percentiles {mc.norm_low:g}-{mc.norm_high:g} per channel, clipped to [-10, 10]"),
        ("training patch", " x ".join(map(str, model.patch_size)) or "-"),
        ("voxel size (pooling per level)", voxel_text(mc))]))

    parts.append("<h2>Data and annotations</h2>")
    data = last.get("data", [])
    if data:
        rows = []
        for i, d in enumerate(data, 1):
            ppl = d["labels"].get("pixels_per_label", {})
            names = ", ".join(f"{mc.class_names[int(k) - 1] if 0 < int(k) <= mc.n_classes else k}: {c:,}"
                              for k, c in ppl.items())
            path_i = (last.get("inputs", {}).get("image") or [None] * len(data))[i - 1]
            rows.append((i, path_i or "(from napari / Python)", "x".join(map(str, d["image"]["shape"])),
                         d["image"]["dtype"], f"{d['labels'].get('annotated', 0):,}", names,
                         d["image"]["sha256"][:16] + "..."))
        parts.append(_table(rows, ("#", "image", "shape", "dtype", "annotated pixels", "per class", "SHA-256")))
        parts.append(_png(_annotation_chart(data, mc.class_names)))
    else:
        parts.append("<p>The model's record holds no data fingerprints (trained before run records).</p>")

    parts.append("<h2>Training</h2>")
    if runs:
        parts.append(_png(_curves(runs)))
        rows = []
        for i, h in enumerate(runs, 1):
            vals = [r["val_iou"] for r in h.get("runs", []) if r.get("val_iou") is not None]
            best = max(vals) if vals else None
            sat = " (saturated)" if best is not None and best >= 0.999 else ""
            rows.append((i, h.get("started", "-"), h.get("steps"), h.get("seconds"), h.get("device"),
                         "-" if best is None else f"{best:.3f}{sat}",
                         "-" if best is None else f"{2 * best / (1 + best):.3f}", h.get("kept")))
        parts.append(_table(rows, ("round", "started (UTC)", "steps", "seconds", "device", "held-out IoU",
                                   "held-out Dice", "kept weights")))
        parts.append("<p class='sub'>Held-out scores are measured on annotated regions withheld from training; "
                     "sparse strokes are easy pixels, so these scores overstate quality on whole images, and a "
                     "saturated 1.000 says only that every held-out stroke was right. Dice = 2 IoU / (1 + IoU). "
                     "Evaluate against ground truth (below, or <code>napari-unet evaluate</code>) to measure quality."
                     "</p>")
    else:
        parts.append("<p>No training record.</p>")
    rounds = rounds if rounds is not None else model.meta.get("rounds")
    if rounds:
        parts.append("<h3>Correction rounds</h3>" + _table(
            [(i, r.get("image", ""), f"{r['dice']:.3f}") for i, r in enumerate(rounds, 1) if "dice" in r],
            ("round", "image", "Dice: prediction vs corrected annotations")))

    s = last.get("settings")
    if s:
        parts.append("<h2>Settings</h2>" + _table([(k, v) for k, v in s.items()], ("setting", "value")))
    v = last.get("versions")
    if v:
        parts.append("<h2>Software and device</h2>" + _table([(k, v[k]) for k in v], ("", "")))

    if image is not None:
        from .inference import predict, to_labels

        probs = predict(model, image, channel_axis=channel_axis)
        pred = to_labels(probs)
        from .data import ImageView

        view = ImageView(image, channel_axis)
        img2d = _plane(view.read(tuple(slice(None) for _ in view.spatial_shape))[0])
        t2d = None
        parts.append("<h2>Prediction" + (" and evaluation" if truth is not None else "") + "</h2>")
        if truth is not None:
            truth = np.asarray(truth)
            if truth.shape != pred.shape:
                raise UserError(f"Ground truth shape {truth.shape} differs from the image's spatial shape "
                                f"{pred.shape}.")
            rows, acc = _evaluation(pred, truth, mc.class_names)
            parts.append(_table(rows, ("class", "IoU", "Dice", "truth pixels")) +
                         f"<p>Pixel accuracy over pixels with truth: {acc:.4f}</p>")
            t2d = _plane(truth)
        parts.append(_png(_prediction_figure(img2d, _plane(pred), t2d)))

    parts.append("<h2>Reproduce</h2><p>The model folder's <code>config.json</code> records this run; "
                 "<code>napari-unet train --config MODEL/config.json --out NEW_MODEL</code> repeats it with the same "
                 "settings, seed and files.</p></body></html>")
    text = "\n".join(parts)
    tmp = temp_path(p.absolute())
    try:
        tmp.write_text(text, encoding="utf-8")
        apply_umask(tmp)
        os.replace(tmp, p)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise disk_error(e, p, "choose another location") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return p


__all__ = ["write_report", "methods_paragraph"]
