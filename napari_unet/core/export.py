"""Share a model: a bioimage.io model package (spec 0.5), or a single ONNX / TorchScript file.

The package holds TorchScript weights (and ONNX where the ``onnx`` package is installed) that
ilastik, deepImageJ, QuPath and bioimageio.core can run, plus our own ``model.safetensors`` and
``config.json`` as attachments, so napari-unet loads the package back without executing code
from it (:func:`load_package`). Preprocessing is described with the spec's own operations:
``scale_range`` with the model's percentiles per channel over the spatial axes, then ``clip`` to
[-10, 10] (what :func:`napari_unet.core.data.normalize` does). The network's output is the class
probabilities (a softmax is part of the exported graph); channel ``c`` is label value ``c + 1``.

Building and validating the description uses ``bioimageio.spec`` (the ``export`` extra); the
single-file formats need only torch (and ``onnx`` for ONNX).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .checkpoint import CONFIG, MAX_CONFIG_BYTES, MAX_WEIGHTS_BYTES, WEIGHTS, Model, load_model, save_model
from .data import CLIP, ImageView, compute_percentiles, normalize
from .io import apply_umask

FORMATS = ("bioimageio", "onnx", "torchscript")
SUFFIX_FORMAT = {".zip": "bioimageio", ".onnx": "onnx", ".pt": "torchscript", ".torchscript": "torchscript"}
OPSET = 17
TAG = "napari-unet-loop"  # key under the package's `config` naming our own files
TS_FILE, ONNX_FILE = "weights_torchscript.pt", "weights.onnx"
UNET_CITATION = ("Ronneberger, Fischer and Brox (2015). U-Net: Convolutional Networks for Biomedical Image "
                 "Segmentation. MICCAI.", "10.1007/978-3-319-24574-4_28")
INSTALL_HINT = 'install the export extra: pip install "napari-unet-loop[export]"'


# --------------------------------------------------------------------------- the exported graph
class _Probabilities(torch.nn.Module):
    """The U-Net followed by a softmax over classes: what napari-unet's prediction returns.

    An objects model's extra output (its distance map, after the class channels) is left out.
    """

    def __init__(self, net, n_classes: int):
        super().__init__()
        self.net = net
        self.n_classes = n_classes

    def forward(self, x):
        return torch.softmax(self.net(x)[:, :self.n_classes], dim=1)


def _cpu_float_net(model: Model) -> torch.nn.Module:
    import copy

    net = copy.deepcopy(model.net).to("cpu", dtype=torch.float32, memory_format=torch.contiguous_format).eval()
    return _Probabilities(net, model.config.n_classes).eval()


def _example(model: Model) -> torch.Tensor:
    k = 2 if model.config.ndim == 2 else 1
    return torch.rand((1, model.config.in_channels) + tuple(max(k * m, 16) for m in model.config.size_multiples))


def _trace(model: Model):
    net = _cpu_float_net(model)
    with warnings.catch_warnings():
        # the U-Net's own padding branch is skipped for inputs of a valid size, which is what the
        # package declares (multiples of 2**depth); the tracer warns about that Python branch
        warnings.simplefilter("ignore")
        with torch.no_grad():
            return torch.jit.trace(net, _example(model), check_trace=False)


def _write_torchscript(model: Model, path: Path) -> None:
    _trace(model).save(str(path))


def _write_onnx(model: Model, path: Path) -> None:
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise UserError(f"ONNX export needs the onnx package; {INSTALL_HINT}.") from None
    net = _cpu_float_net(model)
    axes = {0: "batch"} | {i + 2: n for i, n in enumerate("zyx"[-model.config.ndim:])}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:  # the TorchScript-based exporter: fast (1 s vs 10 s), needs no onnxscript, fine for a conv net
            torch.onnx.export(net, (_example(model),), str(path), dynamo=False, opset_version=OPSET,
                              input_names=["input"], output_names=["probabilities"],
                              dynamic_axes={"input": axes, "probabilities": axes})
        except (TypeError, RuntimeError, ImportError):  # a torch without it: the torch.export-based exporter
            from torch.export import Dim

            dims = {k: Dim(v) for k, v in axes.items()}
            prog = torch.onnx.export(net, (_example(model),), dynamo=True, opset_version=OPSET,
                                     dynamic_shapes=(dims,), input_names=["input"], output_names=["probabilities"])
            prog.save(str(path))


# --------------------------------------------------------------------------- test data
def _test_input(model: Model, image=None, channel_axis=None) -> np.ndarray:
    """A raw (unnormalised) float32 test image (1, C, *spatial) of a size the package accepts."""
    mc = model.config
    mult = mc.size_multiples
    want = (256, 256) if mc.ndim == 2 else (32, 64, 64)
    if image is None:
        from .synthetic import make_nuclei

        shape = tuple(max(2 * m, -(-w // 4) // m * m) for w, m in zip(want, mult))  # 64x64 / 8x16x16 at depth 3
        base = make_nuclei(shape, seed=0).image
        chans = [base * (1.0 - 0.2 * c) for c in range(mc.in_channels)]
        return np.stack(chans)[None].astype(np.float32)
    view = ImageView(image, channel_axis)
    if view.n_channels != mc.in_channels:
        raise UserError(f"The test image has {view.n_channels} channel(s) but the model takes {mc.in_channels}; "
                        "set the channel axis or choose another image.")
    sp = view.spatial_shape
    if len(sp) < mc.ndim:
        raise UserError(f"The {mc.ndim}D model needs a test image with {mc.ndim} spatial axes, got {sp}.")
    lead = tuple(s // 2 for s in sp[:len(sp) - mc.ndim])  # a 2D model on a stack: its middle plane
    sp = sp[len(sp) - mc.ndim:]
    size = [min(w, s // m * m) for w, s, m in zip(want, sp, mult)]
    if any(n < m for n, m in zip(size, mult)):
        raise UserError(f"The test image {sp} is smaller than the model's minimum size {mult}; "
                        "choose a larger image.")
    starts = [(s - n) // 2 for s, n in zip(sp, size)]
    block = view.read(lead + tuple(slice(a, a + n) for a, n in zip(starts, size)))
    return np.ascontiguousarray(block[None], dtype=np.float32)


def expected_output(model: Model, test_input: np.ndarray) -> np.ndarray:
    """What napari-unet predicts for ``test_input`` (1, C, *spatial): normalise, run, softmax."""
    pct = compute_percentiles(ImageView(test_input[0], 0), model.config.norm_low, model.config.norm_high)
    x = torch.from_numpy(normalize(test_input[0], pct))[None]
    with torch.no_grad():
        return _cpu_float_net(model)(x).numpy()


def _cover(path: Path, test_input: np.ndarray, output: np.ndarray, class_names) -> None:
    """A 2:1 cover: the test image beside the predicted classes (made with matplotlib)."""
    from matplotlib.figure import Figure

    img = test_input[0, 0]
    prob = output[0]
    if img.ndim == 3:
        img, prob = img[img.shape[0] // 2], prob[:, prob.shape[1] // 2]
    fig = Figure(figsize=(6, 3), dpi=100)
    a, b = fig.subplots(1, 2)
    a.imshow(img, cmap="gray")
    a.set_title("input")
    b.imshow(prob.argmax(0), cmap="tab10", vmin=0, vmax=9, interpolation="nearest")
    b.set_title("prediction: " + ", ".join(class_names[1:4]) + ("..." if len(class_names) > 4 else ""))
    for ax in (a, b):
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path)


def _mult_text(mc) -> str:
    m = mc.size_multiples
    if len(set(m)) == 1:
        return f"{m[0]} (2^depth)"
    return " x ".join(str(v) for v in m) + f" ({'ZYX'[-mc.ndim:]}; anisotropic voxels {mc.voxel_size})"


def _readme(model: Model, name: str) -> str:
    from .record import summary_lines

    mc = model.config
    lines = [f"# {name}", "", "A U-Net trained interactively with napari-unet-loop (napari plugin and CLI).", "",
             "## Inputs and outputs", "",
             f"- input: {mc.in_channels} channel(s), {mc.ndim}D ({'ZYX' if mc.ndim == 3 else 'YX'}); each spatial "
             f"size a multiple of {_mult_text(mc)}.",
             f"- preprocessing: per channel, the {mc.norm_low:g} and {mc.norm_high:g} percentiles of the image map to "
             f"0 and 1 (`scale_range` over the spatial axes), then values are clipped to [-{CLIP:g}, {CLIP:g}].",
             "- output: class probabilities (softmax), one channel per class: "
             + ", ".join(f"{i}: {c}" for i, c in enumerate(mc.class_names)) + ".",
             "  In napari-unet's label convention channel c is label value c+1 (1 = background).", "",
             "## Training", ""]
    lines += summary_lines(model) or ["No training record."]
    lines += ["", "## Validation", "",
              "`test_input.npy` is a raw image and `test_output.npy` what napari-unet predicts for it (its own "
              "percentile normalisation, then the network); `bioimageio test` reproduces the output with the "
              "preprocessing described in `rdf.yaml`. Check the model on your own images with ground truth "
              "(`napari-unet evaluate`) before you rely on it.",
              "", "## Files", "",
              f"- `{TS_FILE}` (TorchScript) and `{ONNX_FILE}` (ONNX, where exported): the network with the softmax.",
              f"- `{WEIGHTS}` + `{CONFIG}`: napari-unet's own model folder (safetensors), loadable with "
              "`napari-unet predict --model PACKAGE.zip` and usable for further training (`--init PACKAGE.zip`).", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- the package
def _descr(model: Model, d: Path, *, name, description, authors, license, with_onnx, test_in, test_out):
    try:
        from bioimageio.spec.model import v0_5 as s
    except ImportError:
        raise UserError(f"A bioimage.io package needs bioimageio.spec; {INSTALL_HINT}.") from None
    mc = model.config
    space = [s.AxisId(a) for a in "zyx"[-mc.ndim:]]
    k = 2 if mc.norm == "instance" else 1
    in_axes = [s.BatchAxis(), s.ChannelAxis(channel_names=[f"channel{c}" for c in range(mc.in_channels)])]
    in_axes += [s.SpaceInputAxis(id=a, size=s.ParameterizedSize(min=k * m, step=m))
                for a, m in zip(space, mc.size_multiples)]
    out_axes = [s.BatchAxis(), s.ChannelAxis(channel_names=list(mc.class_names))]
    out_axes += [s.SpaceOutputAxis(id=a, size=s.SizeReference(tensor_id=s.TensorId("input"), axis_id=a))
                 for a in space]
    if mc.norm_high <= 1:
        raise UserError(f"bioimage.io needs an upper percentile above 1; the model uses {mc.norm_high}.")
    pre = [s.ScaleRangeDescr(kwargs=s.ScaleRangeKwargs(axes=space, min_percentile=mc.norm_low,
                                                       max_percentile=mc.norm_high)),
           s.ClipDescr(kwargs=s.ClipKwargs(min=-CLIP, max=CLIP))]
    np.save(d / "test_input.npy", test_in)
    np.save(d / "test_output.npy", test_out)
    import tifffile  # sample tensors: the same arrays as TIFF, for people and tools that do not read .npy

    tifffile.imwrite(d / "sample_input.tif", test_in)
    tifffile.imwrite(d / "sample_output.tif", test_out)
    inp = s.InputTensorDescr(id=s.TensorId("input"), axes=in_axes, test_tensor=s.FileDescr(source=d / "test_input.npy"),
                             sample_tensor=s.FileDescr(source=d / "sample_input.tif"),
                             data=s.IntervalOrRatioDataDescr(type="float32"), preprocessing=pre,
                             description="raw image; normalised by the preprocessing")
    out = s.OutputTensorDescr(id=s.TensorId("probabilities"), axes=out_axes,
                              test_tensor=s.FileDescr(source=d / "test_output.npy"),
                              sample_tensor=s.FileDescr(source=d / "sample_output.tif"),
                              data=s.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
                              description="class probabilities (softmax over the channel axis)")
    tv = s.Version(torch.__version__.split("+")[0])
    weights = {"torchscript": s.TorchscriptWeightsDescr(source=d / TS_FILE, pytorch_version=tv)}
    if with_onnx:
        weights["onnx"] = s.OnnxWeightsDescr(source=d / ONNX_FILE, opset_version=OPSET, parent="torchscript")
    from .. import __version__

    return s.ModelDescr(
        name=name, description=description,
        authors=[s.Author(name=a) for a in authors],
        cite=[s.CiteEntry(text=UNET_CITATION[0], doi=s.Doi(UNET_CITATION[1]))],
        license=s.LicenseId(license), documentation=s.FileDescr(source=d / "README.md"),
        covers=[s.FileDescr(source=d / "cover.png")],
        tags=["napari-unet", "unet", "segmentation", f"{mc.ndim}d", "pytorch"],
        inputs=[inp], outputs=[out], weights=s.WeightsDescr(**weights),
        attachments=[s.FileDescr(source=d / WEIGHTS), s.FileDescr(source=d / CONFIG)],
        config=s.Config(**{TAG: {"weights": WEIGHTS, "config": CONFIG, "version": __version__,
                                 "class_names": list(mc.class_names)}}),
    )


def _default_name(model: Model) -> str:
    import re

    objs = "-".join(model.config.class_names[1:3])
    name = re.sub(r"[^A-Za-z0-9_+\- ()]", "_", f"napari-unet {model.config.ndim}D U-Net ({objs})")
    return name[:64]


def check_export_path(path, fmt: str | None = None) -> tuple[Path, str]:
    """The output path and format (from the suffix when not given); UserError when unusable."""
    p = Path(path)
    fmt = fmt or SUFFIX_FORMAT.get(p.suffix.lower())
    if fmt not in FORMATS:
        raise UserError(f"Cannot tell the export format from '{p.name}'; end it in .zip (bioimage.io), .onnx or .pt "
                        "(TorchScript), or give --format.")
    if p.is_dir():
        raise UserError(f"Export output '{p}' is a folder; give a file name.")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"The folder of the export output '{p}' does not exist; create it first.")
    if not os.access(parent, os.W_OK):
        raise UserError(f"Cannot write to '{parent}': permission denied; choose a writable location.")
    return p, fmt


def export_model(model: Model | str | os.PathLike, path, format: str | None = None, *, image=None,
                 channel_axis: int | None = None, name: str | None = None, description: str | None = None,
                 authors=("napari-unet user",), license: str = "CC-BY-4.0", onnx: bool | None = None) -> Path:
    """Export ``model`` (a Model or a model folder/package) to ``path``; returns the path written.

    ``format``: "bioimageio" (a .zip package), "onnx" or "torchscript" (one file); by default from
    the suffix. ``image``: an image to cut the package's test input from (default: synthetic
    nuclei). ``onnx``: add ONNX weights to the package (default: when the onnx package is
    installed). The file appears atomically; an existing file of that name is replaced.
    """
    path, fmt = check_export_path(path, format)
    if not isinstance(model, Model):
        model = load_model(model, "cpu")
    with tempfile.TemporaryDirectory(prefix=".napari-unet-export-", dir=path.parent) as tmp:
        d = Path(tmp)
        target = d / "out"
        if fmt == "torchscript":
            _write_torchscript(model, target)
        elif fmt == "onnx":
            _write_onnx(model, target)
        else:
            if onnx is None:
                try:
                    import onnx as _onnx  # noqa: F401

                    onnx = True
                except ImportError:
                    onnx = False
            files = d / "files"
            files.mkdir()
            save_model(model, files)
            test_in = _test_input(model, image, channel_axis)
            test_out = expected_output(model, test_in)
            _write_torchscript(model, files / TS_FILE)
            if onnx:
                _write_onnx(model, files / ONNX_FILE)
            name = name or _default_name(model)
            _cover(files / "cover.png", test_in, test_out, model.config.class_names)
            (files / "README.md").write_text(_readme(model, name), encoding="utf-8")
            desc = description or (f"{model.config.ndim}D U-Net (depth {model.config.depth}, width "
                                   f"{model.config.width}) segmenting {', '.join(model.config.class_names[1:])}; "
                                   "trained with napari-unet-loop.")[:512]
            descr = _descr(model, files, name=name, description=desc, authors=list(authors), license=license,
                           with_onnx=onnx, test_in=test_in, test_out=test_out)
            _save_package(descr, target)  # (bioimageio.spec's zip writer stores every member as mode 0600)
        apply_umask(target)
        try:
            os.replace(target, path)
        except OSError as e:
            raise UserError(f"Could not write '{path}': {e.strerror}; check the space and permissions there.") from None
    return path


def _save_package(descr, target: Path) -> None:
    from bioimageio.spec import save_bioimageio_package
    from bioimageio.spec._internal.validation_context import ValidationContext

    if getattr(descr, "validation_summary", None) is not None and descr.validation_summary.status == "failed":
        raise UserError(f"The bioimage.io description is invalid: {descr.validation_summary}")
    with ValidationContext(perform_io_checks=True), warnings.catch_warnings():
        # bioimageio.spec re-reads its own dump and warns about every file entry it wrote
        warnings.filterwarnings("ignore", message="Found mapping with 'source'")
        save_bioimageio_package(descr, output_path=target)


def test_package(path, devices=("cpu",)) -> tuple[bool, str]:
    """Run bioimageio.core's model test on a package: (passed, the summary as text)."""
    try:
        from bioimageio.core import test_model
    except ImportError:
        raise UserError(f"Testing a package needs bioimageio.core; {INSTALL_HINT}.") from None
    summary = test_model(str(path), devices=list(devices))
    return summary.status == "passed", summary.format()


# --------------------------------------------------------------------------- import
MAX_MEMBERS = 1000


def is_package(path) -> bool:
    p = Path(path)
    return p.is_file() and zipfile.is_zipfile(p)


def load_package(path, device="cpu") -> Model:
    """Load a bioimage.io package that napari-unet exported (its safetensors + config.json attachments).

    Nothing from the package is executed: the TorchScript/ONNX files are not read. A package from
    another tool is refused with a message saying how to run it instead.
    """
    p = Path(path)
    try:
        with zipfile.ZipFile(p) as z:
            infos = {i.filename: i for i in z.infolist()[:MAX_MEMBERS]}
            if "rdf.yaml" not in infos and "bioimageio.yaml" not in infos:
                raise UserError(f"'{p}' is a zip file but not a bioimage.io model package (no rdf.yaml); give a "
                                "model folder or a package exported by napari-unet.")
            if WEIGHTS not in infos or CONFIG not in infos:
                raise UserError(f"'{p}' is a bioimage.io package from another tool, not one exported by napari-unet "
                                f"(it lacks {WEIGHTS} and {CONFIG}); napari-unet can only load its own packages. "
                                "Run it with bioimageio.core, deepImageJ or ilastik instead.")
            if infos[CONFIG].file_size > MAX_CONFIG_BYTES or infos[WEIGHTS].file_size > MAX_WEIGHTS_BYTES:
                raise UserError(f"'{p}': its {WEIGHTS}/{CONFIG} are larger than any napari-unet model; it is not ours.")
            try:
                info = json.loads(z.read(CONFIG).decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                info = None
            if not isinstance(info, dict) or info.get("format") != TAG:
                raise UserError(f"'{p}' holds a {CONFIG} that is not napari-unet's; napari-unet can only load packages "
                                "it exported. Run it with bioimageio.core, deepImageJ or ilastik instead.")
            with tempfile.TemporaryDirectory(prefix="napari-unet-package-") as tmp:
                for member in (WEIGHTS, CONFIG):  # only these two, by exact name: no path from the zip is used
                    with z.open(infos[member]) as src, open(Path(tmp) / member, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                model = load_model(tmp, device)
    except (zipfile.BadZipFile, OSError) as e:
        raise UserError(f"Cannot read the package '{p}' ({e}); is it a complete .zip file?") from None
    model.meta = dict(model.meta, imported_from=str(p))
    return model


__all__ = ["export_model", "load_package", "is_package", "test_package", "expected_output", "FORMATS"]
