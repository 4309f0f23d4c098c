"""Reproducible runs: run files, the run record in the model folder, repeating a recorded run."""

import json

import numpy as np
import pytest

from napari_unet.cli import main
from napari_unet.core.record import fingerprint
from napari_unet.core.synthetic import make_nuclei, scribbles

RUN = {"model": {"depth": 2, "width": 4, "norm_high": 99.5},
       "train": {"steps": 20, "time_budget": None, "threads": 1, "patch_size": [32, 32], "batch_size": 2,
                 "device": "cpu", "validate_every": 10, "lr": 0.003, "seed": 7}}


@pytest.fixture
def data(tmp_path):
    syn = make_nuclei((64, 64), seed=0, radius=6)
    np.save(tmp_path / "img.npy", syn.image)
    np.save(tmp_path / "lab.npy", scribbles(syn.semantic, seed=1, width=2))
    return tmp_path


def _write_run(folder, fmt="json", **extra):
    run = {"image": ["img.npy"], "labels": ["lab.npy"], "out": "m1", **RUN, **extra}
    path = folder / f"run.{fmt}"
    if fmt == "json":
        path.write_text(json.dumps(run))
    elif fmt == "yaml":
        yaml = pytest.importorskip("yaml")
        path.write_text(yaml.safe_dump(run))
    else:
        tr = "\n".join(f"{k} = {json.dumps(v)}" for k, v in run["train"].items() if v is not None)
        path.write_text(f'image = ["img.npy"]\nlabels = ["lab.npy"]\nout = "m1"\n[model]\ndepth = 2\nwidth = 4\n'
                        f"norm_high = 99.5\n[train]\n{tr}\n")
    return path


def _last(folder):
    return json.loads((folder / "config.json").read_text())["history"][-1]


def test_run_file_records_everything_and_retrain_repeats_losses(data, capsys):
    assert main(["train", "--config", str(_write_run(data))]) == 0
    rec = _last(data / "m1")
    s = rec["settings"]
    assert (s["lr"], s["seed"], s["steps"], s["threads"], s["patch_size"], s["batch_size"]) == (
        0.003, 7, 20, 1, [32, 32], 2)
    assert set(s) >= {"weight_decay", "augment", "ema_decay", "class_balance", "schedule", "keep", "deterministic"}
    assert rec["model"]["norm_high"] == 99.5 and rec["model"]["width"] == 4
    assert set(rec["versions"]) >= {"napari_unet", "torch", "numpy", "python", "cuda", "device"}
    assert rec["seeds"] == {"numpy": 7, "torch": 7}
    assert rec["inputs"]["image"] == [str((data / "img.npy").resolve())]
    assert len(rec["losses"]) == 20 and rec["losses_every"] == 1
    # repeat the run from the model's own record: the same 20 losses, exactly
    assert main(["train", "--config", str(data / "m1" / "config.json"), "--out", str(data / "m2")]) == 0
    again = _last(data / "m2")
    assert again["losses"] == rec["losses"]
    assert again["settings"] == rec["settings"] and again["data"] == rec["data"]
    assert "warning" not in capsys.readouterr().err


def test_fingerprints_of_images_and_annotations(data):
    lab = np.load(data / "lab.npy")
    fp = fingerprint(lab, labels=True)
    assert fp["shape"] == [64, 64] and fp["dtype"] == str(lab.dtype)
    assert fp["annotated"] == int((lab > 0).sum())
    assert fp["pixels_per_label"] == {str(v): int((lab == v).sum()) for v in (1, 2)}
    changed = lab.copy()
    changed[0, 0] = 2 if changed[0, 0] != 2 else 1
    assert fingerprint(changed)["sha256"] != fp["sha256"]
    import hashlib

    assert fp["sha256"] == hashlib.sha256(np.ascontiguousarray(lab).tobytes()).hexdigest()


def test_flags_override_the_run_file(data):
    run = _write_run(data)
    assert main(["train", "--config", str(run), "--steps", "3", "--seed", "2", "--out", str(data / "mx")]) == 0
    rec = _last(data / "mx")
    assert rec["settings"]["steps"] == 3 and rec["settings"]["seed"] == 2
    assert rec["settings"]["time_budget"] is None and rec["settings"]["lr"] == 0.003  # the rest from the file
    assert not (data / "m1").exists()


@pytest.mark.parametrize("fmt", ["toml", "yaml"])
def test_toml_and_yaml_run_files(data, fmt):
    assert main(["train", "--config", str(_write_run(data, fmt)), "--steps", "2"]) == 0
    assert _last(data / "m1")["model"]["norm_high"] == 99.5


def test_changed_data_is_reported_when_repeating(data, capsys):
    assert main(["train", "--config", str(_write_run(data)), "--steps", "2"]) == 0
    lab = np.load(data / "lab.npy")
    lab[0, :4] = 1
    np.save(data / "lab.npy", lab)
    assert main(["train", "--config", str(data / "m1"), "--out", str(data / "m2"), "--steps", "2"]) == 0
    assert "labels 1" in capsys.readouterr().err


@pytest.mark.parametrize("args,match", [
    (["--config", "{d}/m1/config.json"], "needs --out"),
    (["--config", "{d}/m1", "--out", "{d}/m1"], "is the model whose record"),
    (["--config", "{d}/nope.json"], "does not exist"),
    (["--config", "{d}/bad.json"], "unknown setting"),
    (["--config", "{d}/badtrain.json"], "unknown train setting"),
    (["--config", "{d}/run.txt"], "must end in"),
])
def test_run_file_errors(data, capsys, args, match):
    assert main(["train", "--config", str(_write_run(data)), "--steps", "1"]) == 0
    (data / "bad.json").write_text(json.dumps({"images": ["img.npy"]}))
    (data / "badtrain.json").write_text(json.dumps({"image": "img.npy", "labels": "lab.npy", "train": {"lr0": 1}}))
    (data / "run.txt").write_text("{}")
    before = (data / "m1" / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert main(["train"] + [a.format(d=data) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("napari-unet: error:") and match in err
    assert (data / "m1" / "model.safetensors").read_bytes() == before


def test_train_without_inputs_names_the_fix(capsys):
    assert main(["train", "--steps", "1"]) == 2
    assert "--config" in capsys.readouterr().err


def test_deterministic_setting_is_recorded_and_restored():
    import torch
    from conftest import TINY, tiny_train

    from napari_unet.core.training import train_blocking

    syn = make_nuclei((48, 48), seed=0, radius=6)
    ann = scribbles(syn.semantic, seed=1, width=2)
    before = torch.are_deterministic_algorithms_enabled()
    res = [train_blocking(syn.image, ann, model_config=TINY, train_config=tiny_train(steps=4, deterministic=True,
                                                                                      threads=1))
           for _ in range(2)]
    assert torch.are_deterministic_algorithms_enabled() == before
    assert res[0].history[-1]["settings"]["deterministic"] is True
    assert res[0].history[-1]["losses"] == res[1].history[-1]["losses"]
