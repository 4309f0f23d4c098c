"""The widget's state without Qt widgets: model, state, rounds, configs, preview requests, workers.

The panels listen to its signals (psygnal, which napari ships) and call its methods; it never
touches a layer or a widget, so it is tested without a viewer. Work runs through ``runner``: the
dock passes a Qt thread runner (``workers.run_in_thread``); the default :func:`run_sync` runs the
same generator on the calling thread (tests, scripts).

Thread rule: the worker only reads the copies in :class:`TrainInput` (made on the main thread
by the panel) and the preview request, which points into those copies; prediction reads
:class:`PredictInput`, a copy of in-memory data or a lazy array (see :func:`snapshot`).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from enum import Enum

import numpy as np
from psygnal import Signal

from ..config import PREVIEW_EVERY, ModelConfig, TrainConfig, default_presets, default_threads
from ..core import events as E
from ..core import training as T
from ..core.anisotropy import voxel_mismatch
from ..core.checkpoint import check_model_target, load_model, save_model
from ..core.data import ImageView, compute_percentiles
from ..core.device import get_device
from ..core.inference import to_labels
from ..core.live import AnnotationMailbox
from ..core.metrics import agreement
from ..core.util import drain
from ..errors import UserError
from . import big
from .workers import WorkerError, predict_many

GUI_THREADS = default_threads()  # leave a core to napari's event loop


def default_autosave_dir() -> str:
    """Where GUI training autosaves the model unless the user picks another folder."""
    return os.environ.get("NAPARI_UNET_AUTOSAVE") or os.path.join(os.path.expanduser("~"), ".napari-unet", "autosave")
MAX_3D_PREVIEW_VOXELS = 8_000_000


class State(Enum):
    IDLE = "idle"
    TRAINING = "training"
    STOPPING = "stopping"
    PREDICTING = "predicting"
    FAILED = "failed"  # the last job failed; ready for the next one like IDLE

    @property
    def busy(self) -> bool:
        return self in (State.TRAINING, State.STOPPING, State.PREDICTING)


@dataclass(frozen=True)
class TrainInput:
    """One image and its annotations, copied on the main thread: the worker never reads a layer."""

    name: str
    image: np.ndarray
    labels: np.ndarray
    channel_axis: int | None
    channel_names: tuple[str, ...] = ()  # the layers stacked as channels, in order (none: one layer)
    # a lazy (dask/zarr) image: ``image``/``labels`` are the annotated crop read by big.train_crop, ``source``
    # the whole lazy image (channels as ``image``; its percentiles and the live preview) and ``region`` the crop
    source: object = None
    region: tuple | None = None
    scale: tuple | None = None  # the image layer's pixel size per spatial axis (a 3D model records it)


@dataclass(frozen=True)
class PredictInput:
    name: str
    data: object  # see snapshot()
    channel_axis: int | None
    time_axis: int | None = None  # a 3D model predicts the time points of TZYX one after another
    scale: tuple | None = None  # pixel size per spatial axis (objects mode: areas, anisotropic splitting)


def training_summary(inputs: list[TrainInput], names: tuple[str, ...], from_instances: bool = False) -> str:
    """How many images and annotated pixels per class go into training, in one line.

    Instance masks count as training sees them: 0 background, every id an object (class 2)."""
    counts = np.zeros(1, np.int64)
    for item in inputs:
        lab = np.asarray(item.labels)
        lab = np.where(lab > 0, 2, 1) if from_instances else lab.ravel().astype(np.int64, copy=False)
        c = np.bincount(lab.ravel()) if lab.size else counts
        counts = np.pad(counts, (0, max(0, len(c) - len(counts)))) + np.pad(c, (0, max(0, len(counts) - len(c))))
    parts = [f"{names[v - 1] if v - 1 < len(names) else f'label {v}'} {int(counts[v]):,}"
             for v in range(1, len(counts)) if counts[v]]
    chans = inputs[0].channel_names if inputs else ()
    return (f"Training on {len(inputs)} image(s)" + (f" with channels {', '.join(chans)}" if chans else "")
            + ": annotated pixels " + (", ".join(parts) or "none") + ".")


def snapshot(data):
    """What a prediction worker may read: a copy of in-memory data; lazy arrays (dask, zarr) as they
    are, since copying would load them whole and napari never writes into them."""
    return np.array(data, copy=True) if isinstance(data, np.ndarray) else data


def run_sync(body, *args, on_event, on_return, on_error, on_finished, **kwargs):
    """Run a worker body on the calling thread with the callbacks a thread runner would call."""
    try:
        result = drain(body(*args, **kwargs), on_event)
    except Exception as e:  # noqa: BLE001 - reported like a worker's error
        on_error(e)
    else:
        on_return(result)
    finally:
        on_finished()


def parse_class_names(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if len(names) < 2 or len(set(names)) != len(names):
        raise UserError("Classes must list at least two different names, background first "
                        "(e.g. 'background, nucleus').")
    return names


def describe_model(model) -> str:
    """The model in a few lines; a UserError when its recorded history is malformed."""
    c = model.config
    sessions = [h for h in model.history if isinstance(h, dict) and "steps" in h]
    if any(not isinstance(h["steps"], int) or isinstance(h["steps"], bool) for h in sessions):
        raise UserError("The model's training history is malformed (steps is not a whole number); the "
                        "config.json was edited or damaged, save the model again from its source.")
    last = sessions[-1] if sessions else {}
    chans = f" ({', '.join(c.channel_names)})" if c.channel_names else ""
    vox = "" if c.voxel_size is None else f", voxel size {', '.join(f'{v:g}' for v in c.voxel_size)}"
    return (f"{c.ndim}D U-Net (depth {c.depth}, width {c.width}{vox}), {c.in_channels} channel(s){chans}\n"
            "classes: " + ", ".join(f"{i + 1}={n}" for i, n in enumerate(c.class_names)) + "\n"
            f"{len(sessions)} session(s), {sum(h['steps'] for h in sessions)} steps, last on "
            f"{last.get('device', '?')}\nkept {last.get('kept', '?')}")


def layer_voxel_size(scale, ndim: int) -> tuple[float, ...] | None:
    """A 3D model's voxel size from a layer's scale (its last 3 axes); None for 2D models, unknown scales
    and napari's default scale of 1 on every axis (which says nothing about the voxels)."""
    if ndim != 3 or scale is None or len(scale) < 3 or all(float(v) == 1.0 for v in scale[-3:]):
        return None
    return tuple(float(v) for v in scale[-3:])


class Session:
    state_changed = Signal(object)  # State
    model_changed = Signal(object)  # Model | None
    loaded = Signal(object)  # a Model read from a folder (its training curve is not ours to continue)
    event = Signal(object)  # every core event (napari_unet.core.events), on the main thread
    trained = Signal(object)  # TrainResult, once the worker is gone and the state is idle again
    predicted = Signal(str, object, object)  # image name, probabilities, argmax labels
    objects_found = Signal(str, object, object)  # image name, instances (0, 1..N), measurement columns
    rounds_changed = Signal(list)
    error = Signal(str)

    def __init__(self, runner=run_sync):
        self.runner = runner
        self.state = State.IDLE
        self.model = None
        self.model_info = "No model: Train starts a new one."
        self.rounds: list[dict] = []
        self.round_predictions: dict[str, np.ndarray] = {}
        self.preview_every = PREVIEW_EVERY  # seconds; tests set 0 to preview after every step
        self.preview_name: str | None = None
        self._preview = None  # (source copy, channel axis, percentiles, ndim) while training
        self._request = None  # read by the worker: (key, array, axis, percentiles) or None
        self._stop = threading.Event()
        self.mailbox: AnnotationMailbox | None = None  # continuous training: annotation copies for the worker
        self.training_names: list[str] = []  # image names of the running training, in its order
        self.autosave_dir: str | None = default_autosave_dir()  # None or "": no autosave
        self.outputs_dir: str | None = None  # outputs too big for memory; None: next to the autosave folder
        self._regions: dict[str, tuple] = {}  # image name -> the crop trained on (lazy images)
        self._worker = None
        self._result = None
        self._failed = False
        self.closed = False

    # ------------------------------------------------------------------ state and errors
    def set_state(self, state: State) -> None:
        self.state = state
        self.state_changed.emit(state)

    def report(self, exc: BaseException) -> None:
        msg = str(exc) if isinstance(exc, (UserError, WorkerError)) else f"{type(exc).__name__}: {exc}"
        self.error.emit(msg)

    def guard(self, fn, *args, **kwargs):
        """Call ``fn``; any failure becomes an error message, never an exception into Qt."""
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001
            self.report(e)
            if self.state.busy and self._worker is None:
                self.set_state(State.IDLE)  # failed while starting a job
            return None

    # ------------------------------------------------------------------ configuration
    def resolve_classes(self, names: tuple[str, ...], labels: list[np.ndarray]) -> tuple[tuple[str, ...], str | None]:
        """Class names that match what is painted, and a notice when they had to change."""
        top = max(int(lab.max()) if lab.size else 0 for lab in labels)
        if self.model is not None:
            c = self.model.config
            if top > c.n_classes:
                raise UserError(f"Label {top} is painted but the model knows {c.n_classes} classes "
                                f"({', '.join(c.class_names)}); press New model to add a class, or erase label {top}.")
            if len(names) != c.n_classes:
                raise UserError(f"The model has {c.n_classes} classes ({', '.join(c.class_names)}); list exactly "
                                f"{c.n_classes} names in 'classes', or press New model to change the classes.")
            return names, None
        if top < len(names):
            unused = ", ".join(f"{n} (label {i + 1})" for i, n in enumerate(names) if i >= max(top, 2))
            return names[:max(top, 2)], (f"{unused} named but not painted: the model learns labels 1..{top} only. "
                                         "Paint them, then press New model to add them.")
        if top == len(names):
            return names, None
        extra = tuple(f"label {v}" for v in range(len(names) + 1, top + 1))
        return names + extra, (f"Label(s) {', '.join(str(v) for v in range(len(names) + 1, top + 1))} are painted "
                               f"but not named: training {top} classes, called {', '.join(extra)}. Rename them "
                               "in 'classes'.")

    def model_config(self, names: tuple[str, ...], ndim: int, device: str) -> ModelConfig | None:
        """The architecture of a new model (None when continuing the current one)."""
        if self.model is not None:
            return None
        return ModelConfig(ndim=ndim, class_names=names, **default_presets(ndim, get_device(device).type)[0])

    @staticmethod
    def train_config(time_budget: float, device: str) -> TrainConfig:
        return TrainConfig(time_budget=float(time_budget), device=device, threads=GUI_THREADS)

    # ------------------------------------------------------------------ training
    def start_training(self, inputs: list[TrainInput], names: tuple[str, ...], *, ndim: int = 2, device: str = "auto",
                       time_budget: float = TrainConfig().time_budget, from_instances: bool = False,
                       preview: bool = True, view_step: tuple[int, ...] = (), continuous: bool = False,
                       objects: bool = False) -> tuple[str, ...] | None:
        """Start training on ``inputs``; returns the class names used (None when busy).

        ``continuous``: train until Stop; :meth:`annotations_edited` hands changed annotations to the
        running training. The model is autosaved into ``autosave_dir`` (when set) during training.
        ``objects``: the annotations hold one value per object (a new model learns to separate
        them); a model trained in objects mode always continues in objects mode.
        """
        if self.state.busy:
            return None
        objects = self.objects_mode(objects)
        if objects and self.model is None:  # object ids are not classes: background and one object class
            names = tuple(names[:2])
        if objects or from_instances:
            names, notice = (names if self.model is None else self.model.config.class_names), None
        else:
            names, notice = self.resolve_classes(names, [i.labels for i in inputs])
        chans = inputs[0].channel_names
        if any(i.channel_names != chans for i in inputs):
            raise UserError("The images to train on have different channel layers; train them one at a time.")
        mc = self.model_config(names, ndim, device)
        if mc is not None and chans:  # a new model records the channel layers it learns from, in order
            mc = mc.replace(in_channels=len(chans), channel_names=tuple(chans))
        if mc is not None and objects:
            mc = mc.replace(object_head="distance")  # the objects head (core/objects.py), the user's class names
        if self.model is not None and names != self.model.config.class_names:
            self.model.config = self.model.config.replace(class_names=names)  # a rename, same count
            self.model_info = describe_model(self.model)
            self.model_changed.emit(self.model)
        tc = self.train_config(time_budget, device)
        if continuous:  # open-ended: Stop ends it (a budget would cut the user off mid-stroke)
            tc = tc.replace(continuous=True, time_budget=None)
        self.mailbox = AnnotationMailbox() if continuous else None
        self.training_names = [i.name for i in inputs]
        self.record_rounds(inputs, objects)
        first = inputs[0]
        norm = self.model.config if self.model is not None else mc
        # a crop of a lazy image is normalised as the whole image (a strided sample of it), like its prediction
        pcts = [None if i.source is None else compute_percentiles(ImageView(i.source, i.channel_axis), norm.norm_low,
                                                                   norm.norm_high) for i in inputs]
        self._regions = {i.name: i.region for i in inputs if i.region is not None}
        src = first.image if first.source is None else first.source
        pct = pcts[0] if pcts[0] is not None else compute_percentiles(ImageView(src, first.channel_axis),
                                                                      norm.norm_low, norm.norm_high)
        refusal = None if first.source is None else big.preview_refusal(
            ImageView(src, first.channel_axis).spatial_shape, norm.ndim, norm.n_classes)
        if preview and refusal:
            notice, preview = (notice + " " if notice else "") + refusal, False
        self._preview = (src, first.channel_axis, pct, norm.ndim) if preview else None
        self.preview_name = first.name
        self._request = None
        self._stop.clear()
        self._result, self._failed = None, False
        if notice:
            self.event.emit(E.Notice(notice))
        self.set_state(State.TRAINING)
        self.update_preview(view_step)
        self._run(T.train, [i.image for i in inputs], [i.labels for i in inputs], model_config=mc, train_config=tc,
                  init=self.model, channel_axis=[i.channel_axis for i in inputs], from_instances=from_instances,
                  objects=True if objects and self.model is not None else None,  # None: as the model
                  preview=self.preview_request if preview else None, preview_every=self.preview_every,
                  should_stop=self._stop.is_set, annotations=self.mailbox, out=self.autosave_dir or None,
                  record={"rounds": [dict(r) for r in self.rounds]},  # rounds go into the model's history
                  percentiles=pcts if any(p is not None for p in pcts) else None,
                  voxel_size=layer_voxel_size(first.scale, norm.ndim))
        return names

    def update_preview(self, current_step: tuple[int, ...]) -> None:
        """Point the preview at the plane in view (a view into the training copy, no copy made)."""
        if self._preview is None or self.state != State.TRAINING:
            self._request = None
            return
        img, ax, pct, ndim = self._preview
        sp = ImageView(img, ax).spatial_shape
        if ndim == 3 and int(np.prod(sp[-3:])) > MAX_3D_PREVIEW_VOXELS:
            self._request = None
            return
        if ndim == 3 and len(sp) == 3:
            self._request = (None, img, ax, pct)
            return
        lead = len(sp) - ndim  # stacks and time points: the plane or volume in view (channels are last)
        step = tuple(current_step)[-len(sp):] if len(current_step) >= len(sp) else (0,) * len(sp)
        key = tuple(int(min(max(s, 0), n - 1)) for s, n in zip(step[:lead], sp[:lead]))
        self._request = (key, img[key], ax, pct)

    def annotations_edited(self, name: str, labels) -> bool:
        """The user changed the annotations of image ``name`` (main thread): hand a copy to the running
        continuous training. Returns whether it was handed over."""
        if self.mailbox is None or self.state != State.TRAINING or name not in self.training_names:
            return False
        if name in self._regions:  # a lazy image trains on a crop: the same crop of the annotations
            labels = big.crop(np.asarray(labels), self._regions[name])
        self.mailbox.put(self.training_names.index(name), labels)  # copies, here on the main thread
        return True

    def preview_request(self):
        return self._request  # called by the worker

    def stop(self) -> None:
        if self.state == State.TRAINING:
            self._stop.set()
            self.set_state(State.STOPPING)

    def objects_mode(self, asked: bool = False) -> bool:
        """Objects mode: asked for, or the model in use was trained in it."""
        return bool(asked) or (self.model is not None and self.model.config.objects)

    def record_rounds(self, inputs: list[TrainInput], objects: bool = False) -> None:
        """Dice between the last prediction and the (corrected) annotations: how much the user changed."""
        for item in inputs:
            pred = self.round_predictions.pop(item.name, None)
            if pred is not None and item.region is not None and pred.ndim == len(item.region):
                pred = big.crop(pred, item.region)  # the crop trained on
            if pred is not None and pred.shape == item.labels.shape and item.labels.any():
                pred = np.asarray(pred)
                labels = np.minimum(item.labels, 2) if objects else item.labels  # object ids -> the object class
                self.rounds.append({"image": item.name, "dice": agreement(pred, labels)})
                self.rounds_changed.emit(self.rounds)

    def new_model(self) -> None:
        if self.state.busy:
            return
        self.rounds.clear()
        self.round_predictions.clear()
        self.rounds_changed.emit(self.rounds)
        self._swap(None, "No model: Train starts a new one.")
        self.set_state(State.IDLE)

    # ------------------------------------------------------------------ prediction
    def start_prediction(self, inputs: list[PredictInput], objects: bool = False, tta: bool | None = None) -> None:
        """Predict ``inputs`` in a worker; in objects mode (asked, or an objects model) the worker also
        finds and measures the objects (any model: a semantic one splits its foreground). ``tta``:
        ``PredictConfig.tta`` (None: automatic, by image size)."""
        if self.state.busy:
            return
        if self.model is None:
            raise UserError("There is no model yet: train one or load a model folder first.")
        if not inputs:
            raise UserError("Select an image layer to predict.")
        stores = self.output_stores(inputs)
        if stores and self.objects_mode(objects):
            raise UserError(f"The outputs of '{next(iter(stores))}' do not fit in memory, and objects are found in "
                            "memory; predict objects with `napari-unet predict --instances-out X.zarr`, or crop.")
        if any(i.time_axis is not None for i in inputs if i.name in stores):
            raise UserError("This time-lapse's outputs do not fit in memory; predict it with `napari-unet predict "
                            "--out X.zarr`, or one time point at a time.")
        for i in inputs:  # a notice, not an error: the prediction may still be fine
            note = voxel_mismatch(self.model.config.voxel_size, layer_voxel_size(i.scale, self.model.config.ndim),
                                  f"'{i.name}'")
            if note:
                self.event.emit(E.Notice(note))
        self._failed = False
        self.set_state(State.PREDICTING)
        for name, store in stores.items():
            self.event.emit(E.Notice(f"The outputs of '{name}' do not fit in memory: writing them to {store} "
                                     "(zarr) and showing them from there."))
        extra = {"objects": True, "scales": {i.name: i.scale for i in inputs}} if self.objects_mode(objects) else {}
        self._run(predict_many, self.model, [(i.name, i.data, i.channel_axis, i.time_axis, stores.get(i.name))
                                             for i in inputs], tta=tta, **extra)

    def output_stores(self, inputs: list[PredictInput]) -> dict:
        """Image name -> the folder for outputs that would not fit in memory (see widgets/big.py)."""
        folder = self.outputs_dir or big.outputs_folder(self.autosave_dir)
        n = self.model.config.n_classes
        stores = {i.name: big.store_for(i.name, ImageView(i.data, i.channel_axis).spatial_shape, n, folder)
                  for i in inputs}
        return {k: v for k, v in stores.items() if v is not None}

    # ------------------------------------------------------------------ model folders
    def save(self, folder, overwrite: bool = False):
        """Write the model folder; never into a folder of other files, nor over a model unless ``overwrite``."""
        if self.model is None:
            raise UserError("There is no model to save yet; train one first.")
        check_model_target(folder, overwrite)
        return save_model(self.model, folder)

    def load(self, folder, device: str = "auto"):
        """Load and check everything before the model in use changes; returns the model (None when busy)."""
        if self.state.busy:
            return None
        model = load_model(folder, get_device(device))
        info = describe_model(model)
        self.round_predictions.clear()
        self._swap(model, info)
        self.loaded.emit(model)
        self.set_state(State.IDLE)
        return model

    def _swap(self, model, info: str) -> None:
        self.model, self.model_info = model, info
        self.model_changed.emit(model)

    # ------------------------------------------------------------------ workers
    def _run(self, body, *args, **kwargs) -> None:
        self._worker = self.runner(body, *args, on_event=self._on_event, on_return=self._on_return,
                                   on_error=self._on_error, on_finished=self._on_finished, **kwargs)

    @property
    def worker(self):
        return self._worker

    def _on_event(self, ev) -> None:
        if self.closed:
            return
        if isinstance(ev, E.PredictResult):
            labels = to_labels(ev.probabilities) if ev.labels is None else ev.labels
            self.round_predictions[ev.name] = labels
            self.predicted.emit(ev.name, ev.probabilities, labels)
            if ev.instances is not None:
                self.objects_found.emit(ev.name, ev.instances, ev.measurements)
            return
        self.event.emit(ev)

    def _on_return(self, result) -> None:
        if self.closed or not isinstance(result, T.TrainResult):
            return
        self._result = result
        self._swap(result.model, describe_model(result.model))

    def _on_error(self, exc) -> None:
        self._failed = True
        if not self.closed:
            self.report(exc)

    def _on_finished(self) -> None:
        self._worker = None
        self._preview = self._request = self.mailbox = None
        if self.closed:
            return
        self.set_state(State.FAILED if self._failed else State.IDLE)
        result, self._result = self._result, None
        if result is not None:
            self.trained.emit(result)

    def shutdown(self, *_) -> None:
        """The dock or the viewer is gone: stop at the next yield and drop whatever still arrives."""
        self.closed = True
        self._stop.set()
        quit_ = getattr(self._worker, "quit", None)
        if quit_ is not None:
            quit_()
