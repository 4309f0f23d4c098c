import numpy as np
import pytest
import torch

from napari_unet.config import ModelConfig, TrainConfig
from napari_unet.core.synthetic import make_nuclei, scribbles

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _plain_prediction_unless_marked(request, monkeypatch):
    """Automatic TTA (8 views) is off in tests: predictions stay comparable with a plain forward pass and
    the suite stays quick. Tests of the automatic choice itself are marked ``auto_tta``."""
    if request.node.get_closest_marker("auto_tta") is None:
        from napari_unet.config import TTA_AUTO_PIXELS

        for kind in list(TTA_AUTO_PIXELS):
            monkeypatch.setitem(TTA_AUTO_PIXELS, kind, 0)
    yield


@pytest.fixture(autouse=True, scope="session")
def _autosave_in_a_temp_folder(tmp_path_factory):
    """GUI training autosaves the model; in tests into a temporary folder, never the user's home."""
    import os

    old = os.environ.get("NAPARI_UNET_AUTOSAVE")
    os.environ["NAPARI_UNET_AUTOSAVE"] = str(tmp_path_factory.mktemp("autosave"))
    yield
    if old is None:
        os.environ.pop("NAPARI_UNET_AUTOSAVE", None)
    else:
        os.environ["NAPARI_UNET_AUTOSAVE"] = old

TINY = ModelConfig(depth=2, width=4)


def pytest_report_header(config):
    try:
        import qtpy

        return f"Qt binding: {qtpy.API_NAME} (QT_API selects it)"
    except Exception as e:  # noqa: BLE001 - a header, not a test
        return f"Qt binding: none ({e})"


@pytest.fixture
def tiny_config():
    return TINY


def record_tta(monkeypatch, *modules) -> list:
    """Replace ``predict_iter`` in ``modules`` (and in core.inference) with a spy; returns the list that
    collects the ``PredictConfig.tta`` of every call."""
    import napari_unet.core.inference as inf

    seen, real = [], inf.predict_iter

    def spy(*a, **kw):
        seen.append(kw["config"].tta)
        return real(*a, **kw)

    for mod in (inf, *modules):
        monkeypatch.setattr(mod, "predict_iter", spy)
    return seen


def tiny_train(**kw):
    base = dict(steps=5, time_budget=None, patch_size=(32, 32), batch_size=2, device="cpu", validate_every=5)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture
def easy2d():
    """A small, clean synthetic nuclei image with dense and sparse annotations."""
    syn = make_nuclei((64, 64), seed=1, radius=6, snr=20)
    return syn, scribbles(syn.semantic, seed=2, width=2)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def notes():
    """Messages of the napari notifications shown during a test."""
    from napari.utils.notifications import notification_manager

    got = []

    def grab(n):
        got.append(str(n.message))

    notification_manager.notification_ready.connect(grab)
    yield got
    notification_manager.notification_ready.disconnect(grab)


@pytest.fixture
def bands():
    """Dark | medium | bright vertical bands (48x48) and strokes: dark and medium background, bright object."""
    rng = np.random.default_rng(0)
    img = np.repeat(np.repeat([[0.0, 0.5, 1.0]], 32, 0), 16, 1).astype(np.float32)
    img += rng.normal(0, 0.02, img.shape).astype(np.float32)
    lab = np.zeros(img.shape, np.uint8)
    lab[4:28, 4:12] = 1
    lab[4:28, 20:28] = 1
    lab[4:28, 36:44] = 2
    return img, lab
