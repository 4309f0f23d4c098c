"""1. Annotate: the image, its annotation layer, the class names, and how to read the annotations."""

from __future__ import annotations

import numpy as np
from magicgui.widgets import CheckBox, Container, LineEdit, PushButton, create_widget
from napari.layers import Image, Labels
from napari.utils.notifications import show_info
from qtpy.QtWidgets import QVBoxLayout, QWidget

from ..config import ModelConfig
from ..errors import UserError
from . import layers as L
from .session import TrainInput, parse_class_names


class AnnotatePanel(QWidget):
    def __init__(self, viewer, session):
        super().__init__()
        self.viewer, self.session = viewer, session
        # layer pickers as napari users know them: napari keeps their choices in sync with the layer list
        self.image = create_widget(annotation="napari.layers.Image", label="image")
        self.labels = create_widget(annotation="napari.layers.Labels", label="annotations")
        self.new_layer = PushButton(text="New annotation layer")
        self.classes = LineEdit(value=", ".join(ModelConfig().class_names), label="classes")
        self.classes.tooltip = ("Class names in label order: label 1 = first name (background), label 2 = second, "
                                "... Label 0 erases (0 = not annotated). Hover a pixel to see its class.")
        self.instances = CheckBox(text="instance masks")
        self.instances.tooltip = ("The annotations are instance or binary masks from another tool: 0 = background, "
                                  "every id > 0 = an object (class 2); the whole image counts as annotated.")
        self.all_pairs = CheckBox(text="all annotated images")
        self.all_pairs.tooltip = "Train on every open image that has an annotation layer with painted pixels."
        self.objects = CheckBox(text="objects")
        self.objects.tooltip = ("Objects mode: paint background with 1 and each object with its own value (2, 3, ...; "
                                "'New object' or M gives a fresh one); the model learns to separate touching "
                                "objects, Predict counts and measures them.")
        self.new_object = PushButton(text="New object")
        self.new_object.tooltip = "A fresh label value for the next object (napari's M key does the same)."
        self.new_object.enabled = False  # disabled, not hidden: the dock's width is set once, with it in
        layer_row = Container(widgets=[self.new_layer, self.new_object], layout="horizontal", labels=False)
        options = Container(widgets=[self.objects, self.instances, self.all_pairs], layout="horizontal", labels=False)
        for row in (layer_row, options):
            row.margins = (0, 0, 0, 0)
        self.form = Container(widgets=[self.image, self.labels, layer_row, self.classes, options])
        self.form.margins = (0, 0, 0, 0)
        QVBoxLayout(self).addWidget(self.form.native)
        self.layout().setContentsMargins(0, 0, 0, 0)
        self.image.changed.connect(self._on_image_changed)
        self.classes.changed.connect(self._on_classes)
        self.new_layer.changed.connect(lambda *_: session.guard(self.new_annotations))
        self.new_object.changed.connect(lambda *_: session.guard(self.next_object))
        self.objects.changed.connect(self._on_objects)
        session.model_changed.connect(self._on_model)

    def reset_choices(self, *_):
        self.form.reset_choices()

    def _on_image_changed(self, img):
        ann = L.find_annotations(self.viewer, img) if img is not None else None
        if ann is not None:
            self.labels.value = ann

    def _on_classes(self, text):
        """Hovering the annotations shows the names as typed (an invalid list waits for the next action)."""
        try:
            names = parse_class_names(text)
        except UserError:
            return
        if isinstance(self.labels.value, Labels):
            L.name_classes(self.labels.value, names)

    def _on_model(self, model):
        if model is not None:  # the field always names the classes of the model in use
            self.classes.value = ", ".join(model.config.class_names)
            if model.config.objects:  # an objects model continues in objects mode
                self.objects.value = True

    def _on_objects(self, on):
        self.new_object.enabled = bool(on)
        if on:
            show_info("Objects mode: paint background with label 1; before each object press 'New object' (or M) "
                      "so that it gets its own value.")

    def next_object(self) -> int:
        """Select a label value no object uses yet (at least 2) on the annotation layer, brush ready."""
        ann = self.labels.value
        if not isinstance(ann, Labels):
            raise UserError("Select an annotation layer, or press 'New annotation layer' first.")
        value = max(int(np.asarray(ann.data).max(initial=0)) + 1, 2)
        L.fit_label_values(ann, value)
        ann.selected_label = value
        ann.mode = "paint"
        self.viewer.layers.selection.active = ann
        return value

    def class_names(self) -> tuple[str, ...]:
        return parse_class_names(self.classes.value)

    def new_annotations(self) -> Labels:
        img = self.image.value
        if img is None:
            raise UserError("Open or select an image layer first.")
        names = self.class_names()
        layer = L.add_annotation_layer(self.viewer, img, names)
        self.reset_choices()
        self.labels.value = layer
        self.viewer.layers.selection.active = layer
        if self.objects.value:
            show_info(f"Paint {names[0]} with label 1; press 'New object' (or M) before each object so that it "
                      "gets its own value.")
        else:
            show_info(f"Paint with label 1 for {names[0]}, 2 for {names[1]}; a few strokes are enough to start.")
        return layer

    def pairs(self) -> list[tuple[Image, Labels]]:
        if self.all_pairs.value:
            pairs = L.annotated_pairs(self.viewer)
            if not pairs:
                raise UserError("No image has an annotation layer with painted pixels; paint first.")
            return pairs
        img, ann = self.image.value, self.labels.value
        if img is None:
            raise UserError("Select the image to train on.")
        if ann is None:
            raise UserError("Select an annotation layer, or press 'New annotation layer' and paint.")
        if tuple(ann.data.shape) != L.spatial_shape(img):
            raise UserError(f"The annotations '{ann.name}' have shape {tuple(ann.data.shape)} but the image "
                            f"'{img.name}' has {L.spatial_shape(img)}; pick matching layers.")
        return [(img, ann)]

    @staticmethod
    def train_inputs(pairs) -> list[TrainInput]:
        """Copies of the images and annotations, made here on the main thread for the worker."""
        return [TrainInput(img.name, np.array(L.image_data(img), copy=True), np.array(ann.data, copy=True),
                           L.channel_axis(img)) for img, ann in pairs]

    def show_class_names(self, names, pairs=None) -> None:
        """The names in use, in the field and on the annotation layers (hover shows them)."""
        self.classes.value = ", ".join(names)
        for _, ann in pairs or []:
            L.name_classes(ann, names)
