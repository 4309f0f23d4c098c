"""The dock widget: annotate, train in the background, review, correct, retrain, save.

Thread rules: layer data is copied on the main thread before a worker starts; the worker never
touches a layer or a widget; results come back through the worker's signals.
"""

from __future__ import annotations

import os
import threading
import time
from enum import Enum
from functools import partial

import numpy as np
from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt
from superqt.utils import create_worker
from qtpy.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QLabel,
                            QLineEdit, QProgressBar, QPushButton, QSpinBox, QVBoxLayout, QWidget)

from ..config import ModelConfig, TrainConfig, default_presets
from ..core import training as T
from ..core.checkpoint import load_model, save_model
from ..core.data import ImageView, compute_percentiles
from ..core.device import available_devices, get_device
from ..core.inference import PredictProgress, to_labels
from ..core.metrics import agreement
from ..core.util import Notice
from ..errors import UserError
from . import layers as L
from .combos import LayerCombo
from .plot import LossPlot
from .workers import WorkerError, on_viewer_closed, predict_many, shielded

GUI_THREADS = max(1, (os.cpu_count() or 2) - 1)  # leave a core to napari's event loop
MAX_3D_PREVIEW_VOXELS = 8_000_000


class State(Enum):
    IDLE = "idle"
    TRAINING = "training"
    STOPPING = "stopping"
    PREDICTING = "predicting"


def _button_row(form: QFormLayout, *specs) -> list[QPushButton]:
    """A row of buttons, each (text, handler), added to ``form``."""
    row = QHBoxLayout()
    buttons = []
    for text, handler in specs:
        button = QPushButton(text)
        button.clicked.connect(handler)
        row.addWidget(button)
        buttons.append(button)
    form.addRow(row)
    return buttons


class UNetWidget(QWidget):
    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.model = None
        self.state = State.IDLE
        self.worker = None
        self._worker_box = [None]
        self._stop = threading.Event()
        self._preview_request = None
        self._preview_image = None
        self._train_started = 0.0
        self.first_preview_seconds = None
        self._device_text = ""
        self._chain_predict: list = []
        self._round_predictions: dict[str, np.ndarray] = {}
        self.rounds: list[dict] = []
        self._build()
        for ev in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed,
                   self.viewer.layers.events.moved):
            ev.connect(self.reset_choices)
        self.viewer.dims.events.current_step.connect(self._update_preview_request)
        self.destroyed.connect(partial(on_viewer_closed, self._stop, self._worker_box))
        self._set_state(State.IDLE)
        self._show_model_info()

    # ------------------------------------------------------------------ UI
    def _build(self):
        lay = QVBoxLayout(self)
        data = QGroupBox("1. Annotate")
        f = QFormLayout(data)
        self.image_combo = LayerCombo(self.viewer, Image)
        self.labels_combo = LayerCombo(self.viewer, Labels)
        self.image_combo.currentIndexChanged.connect(self._on_image_changed)
        self.new_annotations_btn = QPushButton("New annotation layer")
        self.new_annotations_btn.clicked.connect(self.new_annotations)
        self.classes_edit = QLineEdit("background, object")
        self.classes_edit.setToolTip("Class names in label order: label 1 = first name (background), label 2 = "
                                     "second, ... Paint with label 0 to erase (0 = not annotated).")
        self.instances_check = QCheckBox("annotations are instance masks (0 = background)")
        self.all_pairs_check = QCheckBox("train on every annotated image")
        f.addRow("image", self.image_combo)
        f.addRow("annotations", self.labels_combo)
        f.addRow(self.new_annotations_btn)
        f.addRow("classes", self.classes_edit)
        f.addRow(self.instances_check)
        f.addRow(self.all_pairs_check)
        lay.addWidget(data)

        tr = QGroupBox("2. Train")
        f = QFormLayout(tr)
        self.ndim_combo = QComboBox()
        self.ndim_combo.addItems(["2D", "3D"])
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto"] + available_devices())
        self.budget_spin = QSpinBox()
        self.budget_spin.setRange(1, 24 * 3600)
        self.budget_spin.setValue(60)
        self.budget_spin.setSuffix(" s")
        self.preview_check = QCheckBox("live preview of the plane in view")
        self.preview_check.setChecked(True)
        f.addRow("model", self.ndim_combo)
        f.addRow("device", self.device_combo)
        f.addRow("time budget", self.budget_spin)
        f.addRow(self.preview_check)
        self.train_btn, self.stop_btn, self.new_model_btn = _button_row(
            f, ("Train", self.train), ("Stop", self.stop), ("New model", self.new_model))
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.plot = LossPlot()
        f.addRow(self.progress)
        f.addRow(self.status_label)
        f.addRow(self.plot)
        lay.addWidget(tr)

        rv = QGroupBox("3. Review and correct")
        f = QFormLayout(rv)
        self.predict_btn, self.predict_all_btn = _button_row(
            f, ("Predict", lambda: self.predict()), ("Predict all images", lambda: self.predict(all_images=True)))
        self.accept_btn = QPushButton("Accept prediction into annotations")
        self.accept_btn.setToolTip("Fills the pixels you have not painted with the prediction (Ctrl+Z undoes). "
                                   "Then fix its mistakes with the brush and train again.")
        self.accept_btn.clicked.connect(self.accept_prediction)
        self.rounds_label = QLabel("Rounds: none yet")
        self.rounds_label.setWordWrap(True)
        f.addRow(self.accept_btn)
        f.addRow(self.rounds_label)
        lay.addWidget(rv)

        md = QGroupBox("4. Model")
        f = QFormLayout(md)
        self.save_btn, self.load_btn = _button_row(f, ("Save model...", self._save_dialog),
                                                   ("Load model...", self._load_dialog))
        self.model_label = QLabel()
        self.model_label.setWordWrap(True)
        self.model_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        f.addRow(self.model_label)
        lay.addWidget(md)
        lay.addStretch(1)

    def reset_choices(self, *_):
        self.image_combo.refresh()
        self.labels_combo.refresh()

    def _on_image_changed(self, *_):
        img = self.image_combo.value
        if img is None:
            return
        ann = L.find_annotations(self.viewer, img)
        if ann is not None:
            self.labels_combo.value = ann
        self.ndim_combo.model().item(1).setEnabled(len(L.spatial_shape(img)) >= 3)

    def _set_state(self, state: State):
        self.state = state
        busy = state != State.IDLE
        for b in (self.train_btn, self.new_model_btn, self.predict_btn, self.predict_all_btn, self.load_btn,
                  self.save_btn, self.ndim_combo, self.device_combo):
            b.setEnabled(not busy)
        self.stop_btn.setEnabled(state == State.TRAINING)
        if state == State.IDLE:
            self.save_btn.setEnabled(self.model is not None)
            self.predict_btn.setEnabled(self.model is not None)
            self.predict_all_btn.setEnabled(self.model is not None)

    def notify_error(self, exc: BaseException):
        msg = str(exc) if isinstance(exc, (UserError, WorkerError)) else f"{type(exc).__name__}: {exc}"
        self.status_label.setText(f"Error: {msg}")
        show_error(msg)

    def _guarded(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - any failure becomes a notification, never a crash
            self.notify_error(e)
            self._set_state(State.IDLE)
            return None

    # ------------------------------------------------------------------ annotate
    def class_names(self) -> tuple[str, ...]:
        names = tuple(n.strip() for n in self.classes_edit.text().split(",") if n.strip())
        if len(names) < 2 or len(set(names)) != len(names):
            raise UserError("Classes must list at least two different names, background first "
                            "(e.g. 'background, nucleus').")
        return names

    def new_annotations(self):
        return self._guarded(self._new_annotations)

    def _new_annotations(self):
        img = self.image_combo.value
        if img is None:
            raise UserError("Open or select an image layer first.")
        layer = L.add_annotation_layer(self.viewer, img, self.class_names())
        self.reset_choices()
        self.labels_combo.value = layer
        self.viewer.layers.selection.active = layer
        show_info(f"Paint with label 1 for {self.class_names()[0]}, 2 for {self.class_names()[1]}; "
                  "a few strokes are enough to start.")
        return layer

    def _pairs(self) -> list[tuple[Image, Labels]]:
        if self.all_pairs_check.isChecked():
            pairs = L.annotated_pairs(self.viewer)
            if not pairs:
                raise UserError("No image has an annotation layer with painted pixels; paint first.")
            return pairs
        img, ann = self.image_combo.value, self.labels_combo.value
        if img is None:
            raise UserError("Select the image to train on.")
        if ann is None:
            raise UserError("Select an annotation layer, or press 'New annotation layer' and paint.")
        if tuple(ann.data.shape) != L.spatial_shape(img):
            raise UserError(f"The annotations '{ann.name}' have shape {tuple(ann.data.shape)} but the image "
                            f"'{img.name}' has {L.spatial_shape(img)}; pick matching layers.")
        return [(img, ann)]

    # ------------------------------------------------------------------ train
    def train(self):
        self._guarded(self._train)

    def _train(self):
        if self.state != State.IDLE:
            return
        pairs = self._pairs()
        images = [np.array(img.data[0] if img.multiscale else img.data, copy=True) for img, _ in pairs]
        labels = [np.array(ann.data, copy=True) for _, ann in pairs]
        axes = [L.channel_axis(img) for img, _ in pairs]
        self._record_rounds(pairs, labels)
        ndim = 3 if self.ndim_combo.currentText() == "3D" else 2
        device = self.device_combo.currentText()
        names = self.class_names()
        if self.model is not None:
            mc = None
            if len(names) == self.model.config.n_classes and names != self.model.config.class_names:
                self.model.config = self.model.config.replace(class_names=names)  # a rename
        else:
            mc = ModelConfig(ndim=ndim, class_names=names, **default_presets(ndim, get_device(device).type)[0])
        tc = TrainConfig(time_budget=float(self.budget_spin.value()), device=device, threads=GUI_THREADS)
        self._preview_image = pairs[0][0]
        norm = (self.model.config if self.model is not None else mc)
        self._preview_pct = compute_percentiles(ImageView(images[0], axes[0]), norm.norm_low, norm.norm_high)
        self._preview_ndim = self.model.config.ndim if self.model is not None else ndim
        self._update_preview_request()
        self._stop.clear()
        if self.model is None:
            self.plot.clear()
        worker = create_worker(shielded, T.train, images, labels, model_config=mc, train_config=tc, init=self.model,
                               channel_axis=axes, from_instances=self.instances_check.isChecked(),
                               preview=self._preview_source if self.preview_check.isChecked() else None,
                               should_stop=self._stop.is_set, _start_thread=False, _ignore_errors=True)
        worker.yielded.connect(self._on_train_event)
        worker.returned.connect(self._on_train_done)
        self._start(worker, State.TRAINING)
        self._train_started = time.perf_counter()
        self.first_preview_seconds = None
        self.status_label.setText("Starting training...")

    def _start(self, worker, state):
        worker.errored.connect(self._on_worker_error)
        worker.finished.connect(self._on_worker_finished)
        self.worker = self._worker_box[0] = worker
        self._set_state(state)
        worker.start()

    def _record_rounds(self, pairs, labels):
        """Dice between the last prediction and the (corrected) annotations: how much the user changed."""
        for (img, _), lab in zip(pairs, labels):
            pred = self._round_predictions.pop(img.name, None)
            if pred is not None and pred.shape == lab.shape and lab.any():
                self.rounds.append({"image": img.name, "dice": agreement(pred, lab)})
        if self.rounds:
            lines = [f"round {i + 1}: prediction vs corrected annotations Dice {r['dice']:.3f}"
                     for i, r in enumerate(self.rounds[-5:])]
            self.rounds_label.setText("\n".join(lines))

    def _update_preview_request(self, *_):
        img = self._preview_image
        if img is None or img not in self.viewer.layers:
            self._preview_request = None
            return
        ax = L.channel_axis(img)
        sp = L.spatial_shape(img)
        data = img.data[0] if img.multiscale else img.data
        if self._preview_ndim == 3:
            if np.prod(sp) > MAX_3D_PREVIEW_VOXELS:
                self._preview_request = None
                return
            self._preview_request = (None, data, ax, self._preview_pct)
            return
        lead = len(sp) - 2
        step = self.viewer.dims.current_step
        key = tuple(int(min(max(s, 0), n - 1)) for s, n in zip(step[-len(sp):][:lead], sp[:lead]))
        plane = np.array(data[key], copy=True)
        self._preview_request = (key, plane, ax, self._preview_pct)

    def _preview_source(self):
        return self._preview_request  # read by the worker: a tuple of copies, no layer access

    def _on_train_event(self, ev):
        if isinstance(ev, T.Started):
            self.status_label.setText(f"Training on {ev.device}" + (" (continuing)" if ev.warm_start else ""))
            self._device_text = ev.device
        elif isinstance(ev, T.Progress):
            self.progress.setValue(int(ev.fraction * 1000))
            self.plot.add_loss(ev.step, ev.loss)
            self.status_label.setText(f"{self._device_text}: step {ev.step}, {ev.elapsed:.0f} / "
                                      f"{ev.time_budget:.0f} s, loss {ev.loss:.3f}")
        elif isinstance(ev, T.Validation):
            self.plot.add_val(ev.step, ev.iou)
        elif isinstance(ev, T.Preview):
            if self._preview_image is not None and self._preview_image in self.viewer.layers:
                L.write_probabilities(self.viewer, self._preview_image, ev.probabilities,
                                      self._class_names_for_output(), key=ev.key)
                if self.first_preview_seconds is None:
                    self.first_preview_seconds = time.perf_counter() - self._train_started
        elif isinstance(ev, Notice):
            show_info(ev.message)

    def _class_names_for_output(self):
        if self.model is not None:
            return self.model.config.class_names
        return self.class_names()

    def _on_train_done(self, result):
        self.model = result.model
        self.progress.setValue(1000)
        self.status_label.setText(f"Trained {result.steps} steps in {result.seconds:.0f} s on {result.device}; "
                                  f"kept {result.kept}.")
        self._show_model_info()
        self._chain_predict = [self._preview_image] if self._preview_image in self.viewer.layers else []

    def stop(self):
        if self.state == State.TRAINING:
            self._stop.set()
            self._set_state(State.STOPPING)
            self.status_label.setText("Stopping after this step; the weights are kept.")

    def new_model(self):
        if self.state != State.IDLE:
            return
        self.model = None
        self._round_predictions.clear()
        self.rounds.clear()
        self.rounds_label.setText("Rounds: none yet")
        self.plot.clear()
        self._show_model_info()
        self._set_state(State.IDLE)

    # ------------------------------------------------------------------ predict / accept
    def predict(self, all_images: bool = False, images=None):
        self._guarded(self._predict, all_images, images)

    def _predict(self, all_images=False, images=None):
        if self.state != State.IDLE:
            return
        if self.model is None:
            raise UserError("There is no model yet: train one or load a model folder first.")
        if images is None:
            images = [lay for lay in self.viewer.layers if isinstance(lay, Image) and not self._is_output(lay)] \
                if all_images else [self.image_combo.value]
        images = [img for img in images if img is not None]
        if not images:
            raise UserError("Select an image layer to predict.")
        jobs = [(img.name, img.data[0] if img.multiscale else img.data, L.channel_axis(img)) for img in images]
        worker = create_worker(shielded, predict_many, self.model, jobs, _start_thread=False, _ignore_errors=True)
        worker.yielded.connect(self._on_predict_event)
        self._start(worker, State.PREDICTING)
        self.status_label.setText(f"Predicting {len(jobs)} image(s)...")

    def _is_output(self, layer) -> bool:
        return " probabilities" in layer.name

    def _on_predict_event(self, ev):
        if isinstance(ev, PredictProgress):
            self.progress.setValue(int(1000 * ev.done / max(ev.total, 1)))
            return
        if isinstance(ev, Notice):
            show_info(ev.message)
            return
        _, name, probs = ev
        if name not in self.viewer.layers:
            return
        img = self.viewer.layers[name]
        names = self.model.config.class_names
        L.write_probabilities(self.viewer, img, probs, names)
        labels = to_labels(probs)
        L.write_prediction(self.viewer, img, labels, len(names))
        self._round_predictions[name] = labels
        self.status_label.setText(f"Prediction of '{name}' written.")

    def accept_prediction(self):
        self._guarded(self._accept)

    def _accept(self):
        img, ann = self.image_combo.value, self.labels_combo.value
        if img is None or ann is None:
            raise UserError("Select the image and its annotation layer first.")
        name = L.prediction_name(img.name)
        if name not in self.viewer.layers:
            raise UserError(f"There is no prediction for '{img.name}' yet; press Predict first.")
        pred = np.asarray(self.viewer.layers[name].data)
        if pred.shape != tuple(ann.data.shape):
            raise UserError(f"The prediction has shape {pred.shape} but '{ann.name}' has {tuple(ann.data.shape)}.")
        n = L.accept_prediction(ann, pred)
        show_info(f"Filled {n} unpainted pixels from the prediction (Ctrl+Z undoes). Fix mistakes, then Train.")
        return n

    # ------------------------------------------------------------------ worker end
    def _on_worker_error(self, exc):
        self.notify_error(exc)

    def _on_worker_finished(self):
        self.worker = self._worker_box[0] = None
        self._set_state(State.IDLE)
        chain, self._chain_predict = self._chain_predict, []
        if chain and self.model is not None:
            self.predict(images=chain)

    # ------------------------------------------------------------------ save / load
    def save_model(self, folder):
        self._guarded(self._save, folder)

    def _save(self, folder):
        if self.model is None:
            raise UserError("There is no model to save yet; train one first.")
        save_model(self.model, folder)
        show_info(f"Model saved to {folder}")

    def load_model(self, folder):
        self._guarded(self._load, folder)

    def _load(self, folder):
        if self.state != State.IDLE:
            return
        self.model = load_model(folder, get_device(self.device_combo.currentText()))
        self.classes_edit.setText(", ".join(self.model.config.class_names))
        self.ndim_combo.setCurrentIndex(self.model.config.ndim - 2)
        self._round_predictions.clear()
        self._show_model_info()
        self._set_state(State.IDLE)
        show_info(f"Loaded model from {folder}")

    def _save_dialog(self):
        folder = QFileDialog.getExistingDirectory(self, "Save model to folder")
        if folder:
            self.save_model(folder)

    def _load_dialog(self):
        folder = QFileDialog.getExistingDirectory(self, "Load model folder")
        if folder:
            self.load_model(folder)

    def _show_model_info(self):
        m = self.model
        if m is None:
            self.model_label.setText("No model: Train starts a new one.")
            return
        c = m.config
        sessions = [h for h in m.history if "steps" in h]
        steps = sum(h.get("steps", 0) for h in sessions)
        last = sessions[-1] if sessions else {}
        self.model_label.setText(
            f"{c.ndim}D U-Net (depth {c.depth}, width {c.width}), {c.in_channels} channel(s)\n"
            f"classes: " + ", ".join(f"{i + 1}={n}" for i, n in enumerate(c.class_names)) + "\n"
            f"trained {len(sessions)} session(s), {steps} steps; last on {last.get('device', '?')}, "
            f"kept {last.get('kept', '?')}")
