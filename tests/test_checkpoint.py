import json
import pickle

import numpy as np
import pytest

from conftest import TINY
from napari_unet.core.checkpoint import Model, load_model, save_model
from napari_unet.core.inference import predict
from napari_unet.errors import UserError


@pytest.fixture
def saved(tmp_path):
    model = Model.new(TINY, seed=0)
    model.history = [{"steps": 3}]
    folder = save_model(model, tmp_path / "model")
    return model, folder


def test_round_trip_gives_identical_predictions(saved):
    model, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_model(folder)
    img = np.random.default_rng(0).random((20, 30)).astype(np.float32)
    model.net.eval()
    np.testing.assert_array_equal(predict(model, img), predict(loaded, img))
    assert loaded.config == model.config and loaded.history == [{"steps": 3}]


def test_missing_and_foreign_folders(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="config.json is missing"):
        load_model(tmp_path / "empty")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    with pytest.raises(UserError, match="not a napari-unet model"):
        load_model(tmp_path / "foreign")


@pytest.mark.parametrize("edit,match", [
    (lambda c: c.update(model={**c["model"], "depth": 99}), "depth"),
    (lambda c: c.update(model={**c["model"], "class_names": ["only"]}), "class_names"),
    (lambda c: c.update(model={**c["model"], "evil": 1}), "unknown field"),
    (lambda c: c.update(history="x"), "history"),
    (lambda c: c.update(format_version=99), "newer"),
])
def test_invalid_config_is_refused(saved, edit, match):
    _, folder = saved
    cfg = json.loads((folder / "config.json").read_text())
    edit(cfg)
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match=match):
        load_model(folder)


def test_corrupt_json_and_missing_weights(saved):
    _, folder = saved
    (folder / "model.safetensors").unlink()
    with pytest.raises(UserError, match="no model.safetensors"):
        load_model(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        load_model(folder)


class _Payload:
    def __reduce__(self):
        import os
        return (os.system, ("touch PWNED",))


def test_pickled_weights_never_execute(saved, monkeypatch, tmp_path):
    _, folder = saved
    monkeypatch.chdir(tmp_path)
    blob = pickle.dumps(_Payload())
    (folder / "model.safetensors").write_bytes(blob)
    cfg = json.loads((folder / "config.json").read_text())
    import hashlib
    cfg["weights_sha256"] = hashlib.sha256(blob).hexdigest()  # even a matching checksum does not help
    (folder / "config.json").write_text(json.dumps(cfg))
    for name in ("pytorch_model.bin", "model.pt", "model.pth"):
        (folder / name).write_bytes(blob)
    with pytest.raises(UserError, match="not a valid safetensors"):
        load_model(folder)
    assert not (tmp_path / "PWNED").exists()


def test_stale_config_falls_back_to_the_description_inside_the_weights(saved, tmp_path):
    """What a save killed between its two renames leaves: new weights, the old config.json."""
    _, folder = saved
    other = save_model(Model.new(TINY.replace(width=8, class_names=("bg", "a", "b"))), tmp_path / "other")
    (folder / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    loaded = load_model(folder)
    assert loaded.config.width == 8 and loaded.config.class_names == ("bg", "a", "b")


def test_weights_without_description_and_wrong_checksum_are_refused(saved):
    from safetensors.torch import save
    import torch
    _, folder = saved
    (folder / "model.safetensors").write_bytes(save({"x": torch.zeros(2)}))
    with pytest.raises(UserError, match="checksum"):
        load_model(folder)


def test_weights_for_other_architecture(saved, tmp_path):
    from safetensors.torch import save
    import hashlib
    import torch
    _, folder = saved
    other = Model.new(TINY.replace(width=8))
    blob = save({k: v.contiguous() for k, v in other.net.state_dict().items()})
    (folder / "model.safetensors").write_bytes(blob)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["weights_sha256"] = hashlib.sha256(blob).hexdigest()
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="shape"):
        load_model(folder)


def test_oversized_weights_file_is_refused_before_reading(saved):
    _, folder = saved
    with open(folder / "model.safetensors", "wb") as f:
        f.truncate(50_000_000)
    with pytest.raises(UserError, match="far larger"):
        load_model(folder)


def test_hostile_architecture_is_refused_without_allocating(saved):
    _, folder = saved
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model"]["width"], cfg["model"]["depth"] = 256, 6
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="at most 1024 channels"):
        load_model(folder)


def test_save_leaves_no_temp_files(saved):
    model, folder = saved
    save_model(model, folder)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]


def test_weights_without_config_json_load_from_their_own_description(saved):
    """What a kill before the first config.json leaves: a self-describing weights file."""
    model, folder = saved
    (folder / "config.json").unlink()
    loaded = load_model(folder)
    assert loaded.config == model.config and loaded.history == model.history
