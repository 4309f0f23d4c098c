"""The one training loop behind the GUI, the CLI and the API.

:func:`train` is a generator: it yields a typed event per step (and per validation, preview,
autosave, notice) and returns a :class:`TrainResult`. The CLI drains it with a progress bar; the
widget runs it in a napari ``thread_worker``. Training stops on ``steps``, on ``time_budget``
seconds or when ``should_stop()`` turns true, and keeps the weights that scored best on held-out
annotations (or the last ones when there was too little annotation to hold any out).
"""

from __future__ import annotations

import copy
import datetime as _dt
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..config import PREVIEW_EVERY, ModelConfig, PredictConfig, TrainConfig, default_presets, default_threads
from .threads import ThreadGovernor, auto_threads
from .weights import class_weights, ema_update
from ..errors import UserError
from . import ddp
from .checkpoint import Model, check_writable_folder, load_model, save_model, save_or_rescue
from .data import PatchSampler, Sample, check_annotations, make_samples, split_validation
from .device import OutOfMemoryError, autocast, describe, get_device, memory_format_for
from .inference import predict_iter
from .losses import unlabelled_terms
from .anisotropy import with_voxel_size
from .alarms import few_painted, image_statistics, merge_statistics, one_class, validation_worsening
from .live import AnnotationsChanged, AnnotationSource, LiveAnnotations
from .metrics import mean_object_iou
from .events import (Notice, Preview, Progress, Saved, Started, Validation,  # noqa: F401 - re-exported
                     budget_fraction)
from .record import data_fingerprints, thin_losses, versions
from .util import drain


GRAD_CLIP = 10.0  # gradient norm clip: a spike cannot wreck the weights
MAX_BAD_STEPS = 20  # consecutive non-finite steps before training gives up
OBJECT_LOSS_WEIGHT = 3.0  # objects head's loss beside the class CE: 3 beat 1 and 6 (docs/benchmarks.md, issue 9)
# held-out IoU at or above this says nothing more: sparse strokes away from edges are all right long
# before the boundaries are; from then on the held-out loss is the signal shown and used for keeping
SATURATED_IOU = 0.99
PLATEAU = 6  # continuous training: validations without improvement before the learning rate halves
MIN_LR_SCALE = 1 / 8  # ... down to this fraction of the learning rate
OPEN_ENDED_STEPS = 1000  # continuous training: the "budget" the unlabelled-pixel terms ramp up over


@dataclass
class TrainResult:
    model: Model
    steps: int
    seconds: float
    device: str
    kept: str  # which weights were kept, in words
    best_iou: float | None
    best_step: int | None
    history: list[dict] = field(default_factory=list)


PreviewSource = Callable[[], "tuple[object, np.ndarray, int | None, np.ndarray | None] | None"]


# --------------------------------------------------------------------------- helpers
def _class_names(n: int, given: tuple[str, ...]) -> tuple[str, ...]:
    if len(given) == n:
        return given
    base = ("background", "object") if n == 2 else ("background",) + tuple(f"class {k}" for k in range(1, n))
    return tuple(given[:n]) + base[len(given):]


def _cap_patch(patch: tuple[int, ...], samples: list[Sample], multiples: tuple[int, ...]) -> tuple[int, ...]:
    """Patch no larger than the largest sample (rounded up to the network's size multiple per axis)."""
    largest = np.max([s.labels.shape for s in samples], axis=0)
    return tuple(int(min(p, -(-int(n) // m) * m)) for p, n, m in zip(patch, largest, multiples))


def _metrics_counts(logits: torch.Tensor, target: torch.Tensor, n_classes: int):
    """CE sum, annotated count and per-class (tp, fp, fn) over annotated pixels (target >= 0)."""
    mask = target >= 0
    loss = F.cross_entropy(logits, target.clamp(min=0), reduction="none")[mask].sum().item()
    pred = logits.argmax(1)[mask]
    gt = target[mask]
    conf = torch.bincount(gt * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    return loss, int(mask.sum()), conf.cpu().numpy()


def _object_loss(logits: torch.Tensor, n_classes: int, target: torch.Tensor, labels: torch.Tensor,
                 reduction: str = "mean") -> torch.Tensor:
    """Objects head: binary cross-entropy against the normalised distance targets, on annotated pixels."""
    mask = (labels >= 0).unsqueeze(1).expand_as(target)
    per_pixel = F.binary_cross_entropy_with_logits(logits[:, n_classes:].float(), target, reduction="none")
    picked = per_pixel[mask]
    if reduction == "sum":
        return picked.sum()
    return picked.mean() if picked.numel() else per_pixel.sum() * 0.0


class _Validator:
    """Scores the network on held-out annotation blocks, with context around each block."""

    def __init__(self, samples: list[Sample], regions, margin: tuple[int, ...], n_classes: int):
        self.items = []
        for si, sl in regions:
            s = samples[si]
            outer = tuple(slice(max(0, r.start - m), min(n, r.stop + m)) for r, m, n in
                          zip(sl, margin, s.labels.shape))
            inner = tuple(slice(r.start - o.start, r.stop - o.start) for r, o in zip(sl, outer))
            img = np.ascontiguousarray(s.image[(slice(None),) + outer])
            target = np.full(img.shape[1:], -1, np.int64)
            target[inner] = s.labels[sl] - 1
            extra = None if s.target is None else np.ascontiguousarray(s.target[(slice(None),) + outer])
            self.items.append((img, target, extra))
        self.n_classes = n_classes

    def __call__(self, net, device, amp_ctx) -> tuple[float, float]:
        was_training = net.training
        net.eval()
        loss, count = 0.0, 0
        conf = np.zeros((self.n_classes, self.n_classes), np.int64)
        with torch.inference_mode(), amp_ctx():
            for img, target, extra in ddp.shard(self.items):  # each process its share, summed below
                logits = net(torch.from_numpy(img)[None].to(device)).float()
                tt = torch.from_numpy(target)[None].to(device)
                lo, n, cf = _metrics_counts(logits[:, :self.n_classes], tt, self.n_classes)
                if extra is not None and logits.shape[1] > self.n_classes:
                    lo += OBJECT_LOSS_WEIGHT * _object_loss(logits, self.n_classes, torch.from_numpy(extra)[None].to(
                        device), tt, reduction="sum").item()
                loss, count, conf = loss + lo, count + n, conf + cf
        net.train(was_training)
        loss, count, conf = ddp.all_sum(loss, count, conf)
        return loss / max(count, 1), mean_object_iou(conf)


# --------------------------------------------------------------------------- the loop
def train(images, labels, *, model_config: ModelConfig | None = None, train_config: TrainConfig | None = None,
          init: Model | str | None = None, channel_axis=None, from_instances: bool = False,
          objects: bool | None = None, out=None,
          preview: PreviewSource | None = None, preview_every: float = PREVIEW_EVERY,
          should_stop: Callable[[], bool] | None = None, record: dict | None = None,
          annotations: AnnotationSource | None = None, poll_every: float = 1.0, percentiles=None,
          voxel_size=None
          ) -> Generator[object, None, TrainResult]:
    """Train a U-Net on images and annotations (0 ignored, 1 background, 2.. classes).

    ``images``/``labels``: lists of arrays (or one of each). ``init``: a Model or model folder to
    continue from (warm start). ``out``: a folder autosaved every ``autosave_every`` seconds and at
    the end. ``preview()`` may return ``(key, image, channel_axis, percentiles)`` every
    ``preview_every`` seconds; the prediction comes back as a :class:`Preview` event.
    ``record``: extra facts for the run's history entry (the CLI gives the file paths); the entry
    also holds the settings as used, versions, seeds, data fingerprints and each step's loss.
    ``objects``: annotations hold one value per object (0 ignored, 1 background, 2.. objects; with
    ``from_instances`` an instance mask) and the model learns to separate them (core/objects.py);
    None: as the initial model or ``model_config`` (``object_head``).
    ``annotations``: an annotation source (:mod:`napari_unet.core.live`) polled every ``poll_every``
    seconds; changed annotations are swapped in (new strokes favoured, validation split redrawn).
    With ``train_config.continuous`` training runs until ``should_stop()`` (or a given budget).
    ``percentiles``: per image, (C, 2) normalisation percentiles or None (computed from the image), for
    images that are crops of a larger one (normalised as the whole, like its prediction).
    ``voxel_size``: the images' voxel size (ZYX in 3D); a new model stores it and pools by it (core/anisotropy.py).
    """
    tc = train_config or TrainConfig()
    if not isinstance(images, (list, tuple)):
        images, labels = [images], [labels]
    device = ddp.local_device(get_device(tc.device))  # cuda:LOCAL_RANK under torchrun
    if not ddp.is_main():
        out = preview = None  # process 0 alone writes and previews

    # --- model and data
    if init is not None:
        model = init if isinstance(init, Model) else load_model(init, device)
        mc = model.config
        if model_config is not None and model_config.ndim != mc.ndim:
            raise UserError(f"The initial model is {mc.ndim}D but a {model_config.ndim}D model was asked for; "
                            "start a new model to change the dimensionality.")
        if objects and not mc.objects:
            raise UserError("The initial model finds no objects (it was trained without objects mode); start a "
                            "new model for objects mode.")
    else:
        model, mc = None, model_config or ModelConfig()
        if model_config is None:
            mc = mc.replace(**default_presets(mc.ndim, device.type)[0])
        if objects:
            mc = mc.replace(object_head="distance", class_names=("background", "object"))
    mc, voxel_note = with_voxel_size(mc, voxel_size, new_model=model is None)
    objects = mc.objects if objects is None else bool(objects)
    in_ch = mc.in_channels if model is not None else None
    samples = make_samples(images, labels, mc.ndim, in_ch, channel_axis, mc.norm_low, mc.norm_high,
                           from_instances=from_instances, objects=objects, percentiles=percentiles)
    if not samples:
        raise UserError("No plane of the images has an annotated pixel; paint some background (label 1) "
                        "and some objects (label 2) first.")
    n_classes = check_annotations([s.labels for s in samples], mc.n_classes if model is not None else None,
                                  declared=len(model_config.class_names) if model_config is not None else 0)
    if out is not None:  # after the data checks, so bad input leaves nothing behind
        check_writable_folder(out)
    if model is None:
        mc = mc.replace(in_channels=samples[0].image.shape[0], class_names=_class_names(n_classes, mc.class_names))
        model = Model.new(mc, seed=tc.seed)
    # intensity statistics of the training images (merged with earlier runs'): prediction warns when an
    # image lies far outside them. A new dict: a Model passed in by the caller is never altered.
    axes = channel_axis if isinstance(channel_axis, (list, tuple)) else [channel_axis] * len(images)
    pcts = list(percentiles) if percentiles is not None else [None] * len(images)
    stats = merge_statistics(model.meta.get("image_stats"), [image_statistics(im, ax, mc.norm_low, mc.norm_high, p)
                                                             for im, ax, p in zip(images, axes, pcts)])
    model = Model(net=model.net, config=mc, patch_size=model.patch_size, history=model.history,
                  meta={**model.meta, "image_stats": stats})
    fmt = memory_format_for(mc.ndim, device)
    net = model.net.to(device, memory_format=fmt).train()
    train_net = ddp.wrap(net, device)  # DDP under torchrun (the forward pass only); else net itself

    preset = default_presets(mc.ndim, device.type)[1]
    # anisotropic voxels keep the preset patch: a patch following the voxel size (fewer planes, larger
    # YX) trained worse and slower at equal steps (docs/benchmarks.md, "Anisotropic stacks")
    patch = tc.patch_size or model.patch_size or preset["patch_size"]
    if len(patch) != mc.ndim:
        raise UserError(f"Patch size {tuple(patch)} has {len(patch)} axes but the model is {mc.ndim}D.")
    batch_size = tc.batch_size or preset["batch_size"]
    patch = _cap_patch(tuple(patch), samples, mc.size_multiples)
    if batch_size == 1 and mc.norm == "batch":  # batch norm needs more than one value per channel at the bottom
        patch = tuple(max(p, 2 * m) for p, m in zip(patch, mc.size_multiples))
    # the patch as used, at least 8 per axis so that the record is a valid TrainConfig (a thin stack caps
    # Z below 8; capping the recorded patch again gives the same patch)
    run_record = {"settings": tc.replace(patch_size=tuple(max(8, int(p)) for p in patch),
                                         batch_size=batch_size).to_dict(),
                  "model": mc.to_dict(), "versions": versions(), "seeds": {"numpy": tc.seed,
                  "torch": tc.seed}, "data": data_fingerprints(images, labels),
                  "inputs": {"channel_axis": channel_axis, "from_instances": from_instances, "objects": objects,
                             "init": None if init is None or isinstance(init, Model) else str(init),
                             **(record or {})},
                  "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    if tc.deterministic:
        old_det = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True, warn_only=True)
    rng = np.random.default_rng(tc.seed)
    torch.manual_seed(tc.seed)
    train_samples, val_regions = split_validation(samples, tc.val_fraction, tuple(max(8, p // 2) for p in patch), rng)
    sampler = PatchSampler(train_samples, patch, tc.annotated_fraction, tc.augment, seed=ddp.rank_seed(tc.seed))
    validator = _Validator(samples, val_regions, tuple(p // 4 for p in patch), mc.n_classes) if val_regions else None

    use_amp = tc.amp and device.type == "cuda"  # float16 needs the gradient scaler
    # cuDNN autotuning (cudnn.benchmark) stays off, torch's default: on an H200 it tuned every new shape
    # (the first 3D step took 4.6 s, the first validation 1.5 s) and bought no steady speed (gpu_check)

    def amp_ctx():
        return autocast(device, tc.amp, cpu=True, ndim=mc.ndim)

    # the averaged weights are the ones validated, previewed and kept: they wobble less step to step
    eval_net = copy.deepcopy(net).eval() if tc.ema_decay > 0 else net
    eval_model = Model(net=eval_net, config=mc)
    class_weight = class_weights([s.labels for s in train_samples], mc.n_classes, tc.class_balance).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    unlabelled = bool(tc.regularizer or tc.consistency or tc.pseudo_labels)
    gen = torch.Generator().manual_seed(tc.seed)  # the teacher's views: seeded runs stay identical
    old_threads = torch.get_num_threads()
    auto = not tc.threads and device.type == "cpu"  # the idle cores, fewer once steps slow down (core/threads.py)
    threads = tc.threads or (ddp.share_threads(auto_threads()) if auto else None)
    if threads:
        torch.set_num_threads(threads)
    governor = ThreadGovernor(threads, ddp.share_threads(default_threads())) if auto else None
    dev_name = describe(device) + ddp.describe_suffix()
    run_record["versions"]["device"] = dev_name
    yield Started(dev_name, mc, patch, batch_size, len(train_samples), len(val_regions), init is not None)
    for msg in few_painted([s.labels for s in samples], mc.class_names) + [voxel_note] * bool(voxel_note):
        yield Notice(msg)  # sample labels are classes (objects too)

    # --- state
    start = time.perf_counter()
    step, last_val_step = 0, -1
    best_score, best_iou, best_step, best_state = None, -1.0, None, None
    best_loss, saturated = float("inf"), False
    loss_avg = None
    history_run: list[dict] = []
    losses: list[float] = []
    last_preview = last_save = start
    warmup = 20
    bad_steps = 0
    stopped = False
    lr_scale, stall, warned, since = 1.0, 0, set(), 0  # since: validations before it used another held-out set
    live = None if annotations is None else LiveAnnotations(
        annotations, images, labels, ndim=mc.ndim, in_channels=mc.in_channels, channel_axis=channel_axis,
        norm_low=mc.norm_low, norm_high=mc.norm_high, from_instances=from_instances, n_classes=mc.n_classes,
        train_config=tc, poll_every=poll_every, objects=objects, percentiles=percentiles)

    def session(n_steps: int, kept: str) -> dict:
        kept_losses, every = thin_losses(losses)
        return {"steps": n_steps, "seconds": round(time.perf_counter() - start, 2), "device": dev_name,
                "kept": kept, "warm_start": init is not None, "runs": list(history_run), **run_record,
                "losses": kept_losses, "losses_every": every}

    def kept_state():
        return best_state if best_state is not None else eval_net.state_dict()

    def do_validation():
        nonlocal best_score, best_iou, best_step, best_state, last_val_step, best_loss, saturated
        vloss, viou = validator(eval_net, device, amp_ctx)
        iou = -1.0 if np.isnan(viou) else viou
        saturated = saturated or iou >= SATURATED_IOU
        # higher IoU wins; IoUs at the saturation level count as equal and the lower loss wins
        score = (min(iou, SATURATED_IOU), -vloss) if tc.keep == "iou" else (-vloss,)
        improved = tc.keep != "last" and (best_score is None or score >= best_score)
        if improved:
            best_score, best_iou, best_step, best_loss = score, iou, step, vloss
            best_state = {k: v.detach().clone() for k, v in eval_net.state_dict().items()}
        last_val_step = step
        history_run.append({"step": step, "time": round(time.perf_counter() - start, 2),
                            "loss": None if loss_avg is None else round(loss_avg, 5), "val_loss": round(vloss, 5),
                            "val_iou": None if np.isnan(viou) else round(viou, 4), "val_saturated": saturated})
        metric = "held-out loss" if saturated else "held-out IoU"
        return Validation(step, vloss, viou, best_iou, best_step, improved, metric=metric, saturated=saturated,
                          score=vloss if saturated else viou)

    try:
        while True:
            # under torchrun all processes take process 0's clock and stop together (a no-op otherwise)
            elapsed, stop_now = ddp.agree(step, time.perf_counter() - start, should_stop is not None and should_stop())
            if (tc.steps is not None and step >= tc.steps) or (tc.time_budget is not None and
                                                               elapsed >= tc.time_budget):
                break
            if stop_now:
                stopped = True
                yield Notice(f"Stopped by the user after {step} steps.")
                break
            changed = live.poll(step, patch) if live is not None else None
            if changed is not None:
                yield changed
                if isinstance(changed, AnnotationsChanged):  # new data, new held-out set: scores start over
                    samples, train_samples, sampler, val_regions = (live.data.samples, live.train_samples,
                                                                    live.sampler, live.val_regions)
                    validator = (_Validator(live.val_samples, val_regions, tuple(p // 4 for p in patch),
                                            mc.n_classes) if val_regions else None)
                    class_weight = class_weights([s.labels for s in train_samples], mc.n_classes,
                                                  tc.class_balance).to(device)
                    best_score, stall, lr_scale, since = None, 0, 1.0, len(history_run)  # earlier best kept until
                    warned.discard("worsening")
                    run_record["inputs"]["annotation_edits"] = run_record["inputs"].get("annotation_edits", 0) + 1
            t_step = time.perf_counter()
            x, y, t = sampler.batch(batch_size)
            xt = torch.from_numpy(x).to(device, non_blocking=True).contiguous(memory_format=fmt)
            yt = torch.from_numpy(y - 1).to(device, non_blocking=True)  # 0 (ignored) -> -1
            lr = tc.lr * (tc.warm_lr if init is not None else 1.0) * min(1.0, (step + 1) / warmup) * lr_scale
            # no cosine over an open-ended run: constant, halved on plateaus (lr_scale) instead
            if tc.schedule == "cosine" and not tc.continuous:  # decays to 5 % by the end of the budget
                frac = budget_fraction(step, tc.steps, elapsed, tc.time_budget)
                lr *= 0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * frac))
            for g in opt.param_groups:
                g["lr"] = lr
            try:
                with amp_ctx():
                    logits = train_net(xt)
                class_logits = logits[:, :mc.n_classes]
                loss = F.cross_entropy(class_logits.float(), yt, weight=class_weight, ignore_index=-1)
                if t is not None and mc.n_extra:
                    tt = torch.from_numpy(t).to(device, non_blocking=True)
                    loss = loss + OBJECT_LOSS_WEIGHT * _object_loss(logits, mc.n_classes, tt, yt)
                if unlabelled:
                    frac = (budget_fraction(step, tc.steps, elapsed, tc.time_budget) if not tc.continuous
                            else min(1.0, step / OPEN_ENDED_STEPS))  # no budget: ramp over a nominal run
                    ramp = min(1.0, frac / tc.unlabelled_rampup) if tc.unlabelled_rampup > 0 else 1.0
                    teacher = eval_net if eval_net is not net else None
                    loss = loss + unlabelled_terms(tc, class_logits, xt, yt, teacher, amp_ctx, ramp, class_weight, gen)
                opt.zero_grad(set_to_none=True)
                finite, lval = ddp.finite_mean(loss)  # all processes step or skip together
                if finite:
                    scaler.scale(loss).backward()
                    scaler.unscale_(opt)
                    norm = torch.nn.utils.clip_grad_norm_(net.parameters(), GRAD_CLIP)
                    finite = use_amp or bool(torch.isfinite(norm))  # the scaler skips inf steps itself
                if finite:
                    scaler.step(opt)
                    scaler.update()
            except OutOfMemoryError:
                opt.zero_grad(set_to_none=True)
                if ddp.active():  # lowering the batch on one process only would desynchronise them
                    raise UserError("Out of GPU memory; lower --batch-size or --patch-size (each process "
                                    "trains on its own batch).") from None
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                if batch_size > 1:
                    batch_size //= 2
                    yield Notice(f"Out of GPU memory: batch size lowered to {batch_size}.")
                    continue
                smaller = tuple(max(m * 2, p // 2) for p, m in zip(patch, mc.size_multiples))
                if smaller == patch:
                    raise UserError("Out of GPU memory even with the smallest batch and patch; use a smaller "
                                    "model or --device cpu.") from None
                patch = smaller
                sampler.patch = patch
                yield Notice(f"Out of GPU memory: patch size lowered to {patch}.")
                continue
            if not finite:  # a rare non-finite loss or gradient (low precision): skip the step, keep going
                bad_steps += 1
                if bad_steps > MAX_BAD_STEPS:
                    raise UserError("Training diverged (the loss stayed NaN or infinite); lower the learning rate "
                                    "or check the image for extreme values.")
                yield Notice(f"Skipped a step with a non-finite loss or gradient ({bad_steps} in a row).")
                continue
            bad_steps = 0
            losses.append(lval)
            loss_avg = lval if loss_avg is None else 0.9 * loss_avg + 0.1 * lval
            if eval_net is not net:
                fresh = live is not None and step < live.fresh_until  # new strokes show in the preview quickly
                ema_update(eval_net, net, min(tc.ema_decay, (1 + step) / (10 + step), 0.9 if fresh else 1.0))
            step += 1
            now = time.perf_counter()
            if governor is not None and (note := governor.step(now - t_step)):
                yield Notice(note)
            yield Progress(step, tc.steps, lval, now - start, tc.time_budget)
            if validator is not None and step % tc.validate_every == 0:
                v = do_validation()
                yield v
                stall = 0 if v.improved else stall + 1
                if tc.continuous and stall >= PLATEAU and lr_scale > MIN_LR_SCALE:
                    lr_scale, stall = lr_scale / 2, 0
                    yield Notice(f"Held-out validation stalled: learning rate lowered to {tc.lr * lr_scale:.2g}.")
                alarm = validation_worsening(history_run[since:], use_loss=v.saturated)
                if alarm and "worsening" not in warned:
                    warned.add("worsening")
                    yield Notice(alarm[0])
            if preview is not None and now - last_preview >= preview_every:
                req = preview()
                if req is not None:
                    key, img, ax, pct = req
                    probs = yield from predict_iter(eval_model, img, channel_axis=ax, percentiles=pct,
                                                    config=PredictConfig(device=str(device), amp=tc.amp, tta=False),
                                                    check_image=False)
                    net.train()  # a no-op with averaged weights; without, the preview switched net to eval
                    yield Preview(step, key, probs)
                    alarm = one_class(probs, mc.class_names) if step >= 4 * warmup else []
                    if alarm and "one class" not in warned:
                        warned.add("one class")
                        yield Notice(alarm[0])
                last_preview = time.perf_counter()
            if out is not None and now - last_save >= tc.autosave_every and step > 0:
                try:
                    save_model(_with_history(model, [session(step, "autosave")], patch), out, state=kept_state())
                    yield Saved(step, str(out))
                except UserError as e:  # e.g. a full disk: keep training, the final save tries again
                    yield Notice(f"Autosave failed: {e} Training goes on; the final save will try again.")
                last_save = time.perf_counter()
        if validator is not None and step > 0 and last_val_step != step:
            yield do_validation()
    finally:
        if threads:
            torch.set_num_threads(old_threads)
        if tc.deterministic:
            torch.use_deterministic_algorithms(old_det)

    seconds = time.perf_counter() - start
    if best_state is not None:
        net.load_state_dict(best_state)
        if saturated:  # never present a saturated 1.000 as quality
            what = (f" (held-out loss {best_loss:.4f}; the held-out IoU saturated, so it says nothing about "
                    "boundaries: check the prediction)")
        else:
            what = f" (held-out IoU {best_iou:.3f})" if best_iou >= 0 else ""
        kept = f"best on held-out annotations: step {best_step} of {step}" + what
    else:
        net.load_state_dict(eval_net.state_dict())
        which = "averaged" if eval_net is not net else "last"
        kept = f"{which} weights (step {step}; too little annotation to hold some out for validation)"
    net.eval()
    ddp.debug_dump(net, sampler_seed=ddp.rank_seed(tc.seed))
    final = _with_history(model, [session(step, kept)], patch)
    if out is not None and not (stopped and step == 0):  # stopped before any step: nothing new to save
        save_or_rescue(final, out)
        yield Saved(step, str(out))
    return TrainResult(model=final, steps=step, seconds=seconds, device=dev_name, kept=kept,
                       best_iou=best_iou if best_state is not None and best_iou >= 0 else None,
                       best_step=best_step, history=final.history)


def _with_history(model: Model, entries: list[dict], patch) -> Model:
    return Model(net=model.net, config=model.config, patch_size=tuple(patch),
                 history=model.history + entries, meta=model.meta)


def train_blocking(*args, on_event: Callable[[object], None] | None = None, **kwargs) -> TrainResult:
    """Blocking form of :func:`train`."""
    return drain(train(*args, **kwargs), on_event)


__all__ = ["train", "train_blocking", "TrainResult", "Started", "Progress", "Validation", "Preview", "Saved",
           "Notice"]
