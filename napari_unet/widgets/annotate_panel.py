"""1. Annotate: the image, its annotation layer, the class names, and how to read the annotations."""

from __future__ import annotations

import numpy as np
from magicgui.widgets import CheckBox, Container, LineEdit, PushButton, Select, create_widget
from napari.layers import Image, Labels
from napari.utils.notifications import show_info
from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget

from ..config import ModelConfig
from ..errors import UserError
from . import big
from . import layers as L
from .session import PredictInput, TrainInput, parse_class_names, snapshot, training_summary


class AnnotatePanel(QWidget):
    def __init__(self, viewer, session):
        super().__init__()
        self.viewer, self.session = viewer, session
        # layer pickers as napari users know them: napari keeps their choices in sync with the layer list
        self.image = create_widget(annotation="napari.layers.Image", label="image")
        self.labels = create_widget(annotation="napari.layers.Labels", label="annotations")
        # several single-channel layers (napari opens a channel_axis file as one layer per channel) as one input
        self.channels = Select(choices=self._channel_choices, label="channels", allow_multiple=True)
        self.channels.tooltip = ("Ctrl+click two or more image layers to use them together as channels, in the "
                                 "order of the layer list (the first one holds the annotations). None or one: the "
                                 "image alone (RGB, or a layer with a 'c' axis, keeps its own channels).")
        self.channels.native.setMaximumHeight(64)  # a few rows, scrolling: the dock fits a 768 px screen
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
        self.form = Container(widgets=[self.image, self.channels, self.labels, layer_row, self.classes, options])
        self.form.margins = (0, 0, 0, 0)
        self.summary = QLabel()  # what the last Train used: images and annotated pixels per class
        self.summary.setWordWrap(True)
        self.summary.setVisible(False)
        QVBoxLayout(self).addWidget(self.form.native)
        self.layout().addWidget(self.summary)
        self.layout().setContentsMargins(0, 0, 0, 0)
        self.image.changed.connect(self._on_image_changed)
        self.channels.changed.connect(self._on_channels)
        self.classes.changed.connect(self._on_classes)
        self.new_layer.changed.connect(lambda *_: session.guard(self.new_annotations))
        self.new_object.changed.connect(lambda *_: session.guard(self.next_object))
        self.objects.changed.connect(self._on_objects)
        session.model_changed.connect(self._on_model)

    def reset_choices(self, *_):
        self.form.reset_choices()

    def _on_image_changed(self, img):
        if img is not None and self.channel_layers() and img not in self.channel_layers():
            self.channels.value = []  # another image: its own channels, not those picked for the last one
        ann = L.find_annotations(self.viewer, img) if img is not None else None
        if ann is not None:
            self.labels.value = ann

    def _channel_choices(self, _widget=None):
        viewer = getattr(self, "viewer", None)
        if viewer is None:
            return []
        return [(lay.name, lay) for lay in viewer.layers if isinstance(lay, Image) and not L.is_output(lay)]

    def _on_channels(self, chans):
        chans = self.channel_layers()
        if len(chans) > 1 and self.image.value is not chans[0]:
            self.image.value = chans[0]  # the first channel carries the annotations and the outputs

    def channel_layers(self) -> list[Image]:
        """The picked channel layers in layer-list order; [] when fewer than two (the image alone)."""
        picked = [lay for lay in self.channels.value if lay in self.viewer.layers]
        picked.sort(key=self.viewer.layers.index)
        return picked if len(picked) > 1 else []

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
            if self.channel_layers():
                raise UserError("'all annotated images' takes each image alone; clear the channels selection, "
                                "or train the multi-channel image without 'all annotated images'.")
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
        ann.metadata.setdefault(L.LINK_KEY, img.name)  # picked together: linked for 'all annotated images'
        return [(img, ann)]

    def train_inputs(self, pairs, ndim: int = 2) -> list[TrainInput]:
        """Copies of the images (channels last) and annotations, made here on the main thread for the worker.

        A lazy (dask, zarr, multiscale) image is not copied whole: only its annotated crop for a ``ndim``
        model (widgets/big.py)."""
        chans = self.channel_layers()
        out = []
        for img, ann in pairs:
            if chans and img is chans[0]:
                data, ax, names = L.stack_channels(chans), -1, tuple(c.name for c in chans)
            else:
                data, ax, names = L.image_data(img), L.channel_axis(img), ()
                data = big.as_dask(data) if big.is_lazy(data) else np.array(data, copy=True)
                if ax is not None:  # channels last: planes and time points index the leading axes
                    data, ax = np.moveaxis(data, ax, -1), -1
            labels, lazy = np.array(ann.data, copy=True), {}
            if big.is_lazy(data):
                model = self.session.model
                margin = big.patch_margin(model.config.ndim if model is not None else ndim, model)
                crop, labels, region = big.train_crop(data, labels, len(margin), margin, self.instances.value)
                data, lazy = crop, {"source": data, "region": region}
            need = self.session.model.config.in_channels if self.session.model is not None else None
            have = 1 if ax is None else data.shape[-1]
            if need and have != need:
                raise UserError(f"The model takes {need} channel(s) but '{img.name}' gives {have}; select {need} "
                                "layers under 'channels', or press New model.")
            out.append(TrainInput(img.name, data, labels, ax, names, scale=pixel_size(img), **lazy))
        self.summary.setText(training_summary(out, self.class_names(), self.instances.value))
        self.summary.setVisible(True)
        return out

    def predict_input(self, img: Image, model) -> tuple[PredictInput, str | None]:
        """What the model reads for ``img``, and a notice when the channels were matched by order."""
        need, names = model.config.in_channels, model.config.channel_names
        own = L.channel_axis(img)
        if need == 1 or own is not None:
            have = 1 if own is None else img.data.shape[own]
            if have != need:
                raise UserError(f"The model takes {need} channel(s) but '{img.name}' has {have}; "
                                + (f"pick {need} layers under 'channels'." if have == 1 else "use a matching model."))
            data = snapshot(L.image_data(img))
            return PredictInput(img.name, data, own, self._time_axis(img, model), pixel_size(img)), None
        layers = {lay.name: lay for lay in self.viewer.layers if isinstance(lay, Image)}
        notice = None
        if names and all(n in layers for n in names) and img.name in names:
            chans = [layers[n] for n in names]  # by name: the layers the model learnt from
        else:
            chans = self.channel_layers()
            if img not in chans or len(chans) != need:
                picked = ", ".join(f"'{c.name}'" for c in chans) or f"'{img.name}' alone"
                raise UserError(f"The model takes {need} channels ({', '.join(names) or 'unnamed'}) but {picked} "
                                f"{'is' if not chans else 'are'} picked; select {need} layers under 'channels'.")
            if names:
                notice = ("Channels matched by order: " + ", ".join(f"{c.name} as {n}" for c, n in zip(chans, names))
                          + ".")
        return (PredictInput(chans[0].name, L.stack_channels(chans), -1, self._time_axis(chans[0], model),
                             pixel_size(chans[0])), notice)

    @staticmethod
    def _time_axis(img: Image, model) -> int | None:
        """A 3D model takes a time series one time point after another (the axis labelled t, else the first)."""
        if model.config.ndim != 3 or len(L.spatial_shape(img)) != 4:
            return None
        t = L.time_axis(img)
        if t is None:
            ax = L.channel_axis(img)
            t = 1 if ax is not None and ax % img.data.ndim == 0 else 0
        return t

    def show_class_names(self, names, pairs=None) -> None:
        """The names in use, in the field and on the annotation layers (hover shows them)."""
        self.classes.value = ", ".join(names)
        for _, ann in pairs or []:
            L.name_classes(ann, names)


def pixel_size(img: Image) -> tuple[float, ...]:
    """The layer's pixel size per spatial axis (napari keeps no scale for an RGB axis; a channel axis is left out)."""
    scale = list(img.scale)
    ax = L.channel_axis(img)
    if ax is not None and not img.rgb:
        del scale[ax]
    return tuple(float(v) for v in scale[-len(L.spatial_shape(img)):])
