"""3. Review and correct: predict, accept the prediction into the annotations, rounds of correction."""

from __future__ import annotations

import numpy as np
from magicgui.widgets import ComboBox, Container, PushButton
from napari.layers import Image
from napari.utils.notifications import show_info
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget

from ..config import tta_auto_rule
from ..errors import UserError
from . import layers as L
from .objects_layer import accept_objects, object_count, objects_name, write_objects
from .objects_table import ObjectsTable


TTA_CHOICES = {"TTA auto": None, "TTA on": True, "TTA off": False}  # PredictConfig.tta


class ReviewPanel(QWidget):
    objects_shown = Signal(object)  # the objects layer was written (the dock opens the table)

    def __init__(self, viewer, session, annotate):
        super().__init__()
        self.viewer, self.session, self.annotate = viewer, session, annotate
        self.predict_btn = PushButton(text="Predict")
        self.predict_all_btn = PushButton(text="Predict all images")
        self.accept_btn = PushButton(text="Accept prediction into annotations")
        self.accept_btn.tooltip = ("Fills the pixels you have not painted with the prediction (Ctrl+Z undoes); the "
                                   "annotations are then drawn fainter. Fix the prediction's mistakes with the brush "
                                   "and train again.")
        self.accept_objects_btn = PushButton(text="Accept objects into annotations")
        self.accept_objects_btn.tooltip = ("Objects mode: copies each predicted object, with its own value, into the "
                                           "pixels you have not painted (Ctrl+Z undoes). Split an object by painting "
                                           "part of it with 'New object', merge by painting one value over both, "
                                           "then train again.")
        self.accept_objects_btn.visible = False
        # test-time augmentation of Predict (never of the live preview); the core decides "auto" per image
        self.tta = ComboBox(choices=list(TTA_CHOICES), value="TTA auto")
        self.tta.tooltip = ("Test-time augmentation: average the prediction over 8 flipped and rotated views, "
                            f"about 7x the time for a cleaner outline. auto: on for {tta_auto_rule()}.")
        row = Container(widgets=[self.predict_btn, self.predict_all_btn, self.tta], layout="horizontal",
                        labels=False)
        row.margins = (0, 0, 0, 0)
        self.form = Container(widgets=[row, self.accept_btn, self.accept_objects_btn], labels=False)
        self.form.margins = (0, 0, 0, 0)
        self.rounds_label = QLabel()  # a QLabel: magicgui's Label does not wrap words
        self.rounds_label.setWordWrap(True)
        self.rounds_label.setVisible(False)  # shown from the first corrected round on
        self.count_label = QLabel()  # objects mode: how many objects the last prediction found
        self.count_label.setWordWrap(True)  # never widens the dock
        self.count_label.setVisible(False)
        self.table = ObjectsTable(viewer)  # placed by the dock in its own section ("Objects")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.form.native)
        lay.addWidget(self.count_label)
        lay.addWidget(self.rounds_label)
        self.predict_btn.changed.connect(lambda *_: self.predict())
        self.predict_all_btn.changed.connect(lambda *_: self.predict(all_images=True))
        self.accept_btn.changed.connect(lambda *_: self.accept_prediction())
        self.accept_objects_btn.changed.connect(lambda *_: self.accept_objects())
        annotate.objects.changed.connect(self._on_objects_mode)
        session.objects_found.connect(self._on_objects)
        session.predicted.connect(self._on_predicted)
        session.trained.connect(self._on_trained)
        session.rounds_changed.connect(self._on_rounds)
        session.state_changed.connect(self._on_state)
        self._on_state(session.state)

    def _on_state(self, state):
        can = not state.busy and self.session.model is not None
        self.predict_btn.enabled = self.predict_all_btn.enabled = can

    def predict(self, all_images: bool = False, images=None):
        self.session.guard(self._predict, all_images, images)

    def _predict(self, all_images=False, images=None):
        if images is None:
            images = [lay for lay in self.viewer.layers if isinstance(lay, Image) and not L.is_output(lay)] \
                if all_images else [self.annotate.image.value]
        model = self.session.model
        if model is None:
            raise UserError("There is no model yet: train one or load a model folder first.")
        inputs, seen, first_error = [], set(), None
        for img in images:
            if img is None:
                continue
            try:
                item, notice = self.annotate.predict_input(img, model)
            except UserError as e:
                if not all_images:
                    raise
                first_error = first_error or e  # predicting all: skip what does not fit this model
                continue
            if item.name not in seen:  # channel layers of one image are predicted once
                seen.add(item.name)
                inputs.append(item)
                if notice:
                    show_info(notice)
        if not inputs and first_error is not None:
            raise first_error
        self.session.start_prediction(inputs, objects=self.annotate.objects.value, tta=TTA_CHOICES[self.tta.value])

    def _on_trained(self, result):
        name = self.session.preview_name
        if name in self.viewer.layers:  # show the trained model's prediction of the image it learnt from
            self.predict(images=[self.viewer.layers[name]])

    def _on_predicted(self, name, probs, labels):
        if name not in self.viewer.layers or self.session.model is None:
            return
        img = self.viewer.layers[name]
        names = self.session.model.config.class_names
        L.write_probabilities(self.viewer, img, probs, names)
        L.write_prediction(self.viewer, img, labels, names)

    def _on_objects_mode(self, on):
        self.accept_objects_btn.visible = bool(on)
        self.accept_btn.visible = not on  # class labels would merge all objects into one value

    def _on_objects(self, name, instances, measurements):
        """The worker found and measured the objects: the objects layer, its count and its table."""
        if name not in self.viewer.layers:
            return
        layer = write_objects(self.viewer, self.viewer.layers[name], instances, measurements)
        self.table.set_layer(layer)
        n = object_count(layer)
        self.count_label.setText(f"{n} object{'s' if n != 1 else ''} in '{layer.name}' (table: Objects)")
        self.count_label.setVisible(True)
        self.objects_shown.emit(layer)

    def _on_rounds(self, rounds):
        lines = [f"round {i + 1}: prediction vs corrected annotations Dice {r['dice']:.3f}"
                 for i, r in enumerate(rounds[-5:])]
        self.rounds_label.setText("\n".join(lines))
        self.rounds_label.setVisible(bool(lines))

    def accept_prediction(self) -> int | None:
        """Fill the unpainted pixels of the annotations with the prediction; returns how many."""
        return self.session.guard(self._accept)

    def accept_objects(self) -> int | None:
        """Objects mode: fill the unpainted pixels with the predicted objects; returns how many."""
        return self.session.guard(self._accept_objects)

    def _accept_objects(self) -> int:
        img, ann = self.annotate.image.value, self.annotate.labels.value
        if img is None or ann is None:
            raise UserError("Select the image and its annotation layer first.")
        name = objects_name(img.name)
        if name not in self.viewer.layers:
            raise UserError(f"There are no objects for '{img.name}' yet; tick 'objects' and press Predict first.")
        inst = np.asarray(self.viewer.layers[name].data)
        if inst.shape != tuple(ann.data.shape):
            raise UserError(f"The objects have shape {inst.shape} but '{ann.name}' has {tuple(ann.data.shape)}.")
        L.fit_label_values(ann, max(int(np.asarray(ann.data).max(initial=0)), 1) + int(inst.max(initial=0)))
        n = accept_objects(ann, inst)
        ann.contour = L.ACCEPTED_CONTOUR  # outlines: each object's extent shows, the image too
        self.viewer.layers[name].visible = False
        show_info(f"Filled {n} unpainted pixels with the objects (Ctrl+Z undoes). Split or merge by painting "
                  "('New object' for a fresh value), then Train.")
        return n

    def _accept(self) -> int:
        img, ann = self.annotate.image.value, self.annotate.labels.value
        if img is None or ann is None:
            raise UserError("Select the image and its annotation layer first.")
        name = L.prediction_name(img.name)
        if name not in self.viewer.layers:
            raise UserError(f"There is no prediction for '{img.name}' yet; press Predict first.")
        pred = np.asarray(self.viewer.layers[name].data)
        if pred.shape != tuple(ann.data.shape):
            raise UserError(f"The prediction has shape {pred.shape} but '{ann.name}' has {tuple(ann.data.shape)}.")
        n = L.accept_prediction(ann, pred)
        self.viewer.layers[name].visible = False  # now in the annotations: show those, not both
        show_info(f"Filled {n} unpainted pixels from the prediction (Ctrl+Z undoes). Fix mistakes, then Train.")
        return n
