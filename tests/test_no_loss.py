"""Nothing lost, nothing silent (issue 10): signals, concurrent writers, full disks, temp files,
permissions and oversized files, each exercised the way a user would meet them."""

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tifffile

from conftest import TINY, tiny_train
from napari_unet.core import checkpoint as ckpt
from napari_unet.core.checkpoint import Model, load_model, save_model
from napari_unet.core.io import TMP_TAG, _host, remove_stale_temps, write_array
from napari_unet.core.synthetic import make_nuclei, scribbles
from napari_unet.core.training import Notice, train, train_blocking
from napari_unet.core.util import drain
from napari_unet.errors import UserError

import napari_unet  # noqa: E402

# subprocesses import the same napari_unet as this test
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(napari_unet.__file__))] + sys.path))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _temps(folder):
    return sorted(p.name for p in folder.iterdir() if f".{TMP_TAG}-" in p.name)


@pytest.fixture
def files(tmp_path):
    syn = make_nuclei((64, 64), seed=1, radius=6)
    tifffile.imwrite(tmp_path / "img.tif", syn.image)
    tifffile.imwrite(tmp_path / "lab.tif", scribbles(syn.semantic, seed=2, width=2))
    return tmp_path


# --------------------------------------------------------------------------- item 3: concurrent saves
SAVER = textwrap.dedent("""
    import sys
    from napari_unet.config import ModelConfig
    from napari_unet.core.checkpoint import Model, save_model
    model = Model.new(ModelConfig(depth=2, width=4), seed=int(sys.argv[2]))
    for i in range(int(sys.argv[3])):
        model.history = [{"steps": i, "device": "writer " + sys.argv[2]}]
        save_model(model, sys.argv[1])
    print("done", flush=True)
""")


def test_two_processes_saving_one_folder_both_finish(tmp_path):
    folder = tmp_path / "model"
    procs = [subprocess.Popen([sys.executable, "-c", SAVER, str(folder), str(k), "150"], env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in (1, 2)]
    loads = 0
    while any(p.poll() is None for p in procs):
        if (folder / "model.safetensors").exists():
            m = load_model(folder)  # the folder always loads, mid-write too
            assert m.history[0]["device"] in ("writer 1", "writer 2")
            loads += 1
    outs = [p.communicate() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-500:] for o in outs]
    m = load_model(folder)
    assert m.history[0]["steps"] == 149  # the last complete write wins
    assert _temps(folder) == [] and loads > 0


def test_only_own_or_stale_temp_files_are_removed(tmp_path):
    folder = save_model(Model.new(TINY, seed=0), tmp_path / "m")
    live = folder / f".model.safetensors.{TMP_TAG}-{_host()}-{os.getppid()}-aaaa.tmp"  # a live process's
    dead = folder / f".model.safetensors.{TMP_TAG}-{_host()}-{_dead_pid()}-bbbb.tmp"
    old = folder / f".config.json.{TMP_TAG}-ffffffff-{os.getppid()}-cccc.tmp"  # another host, two hours old
    other = folder / ".model.safetensors.user.tmp"  # not ours
    for p in (live, dead, old, other):
        p.write_bytes(b"partial")
    os.utime(old, (time.time() - 7200,) * 2)
    save_model(Model.new(TINY, seed=1), folder)
    assert live.exists() and other.exists() and not dead.exists() and not old.exists()
    load_model(folder)


# --------------------------------------------------------------------------- item 4: Ctrl+C and SIGTERM in training
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_during_training_keeps_and_saves_the_model(files, sig, code):
    out = files / "model"
    proc = subprocess.Popen([sys.executable, "-m", "napari_unet.cli", "train", "--image", str(files / "img.tif"),
                             "--labels", str(files / "lab.tif"), "--out", str(out), "--time-budget", "60",
                             "--width", "4", "--depth", "2", "--patch-size", "32", "32", "--device", "cpu"],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = ""
    for _ in range(20):  # tqdm may print an empty line first
        seen += proc.stderr.readline()
        if "training on" in seen:
            break
    if "training on" not in seen:
        proc.kill()
        pytest.fail(seen + proc.communicate()[1][-800:])
    time.sleep(2.0)  # some steps, far before the 30 s autosave
    assert not (out / "model.safetensors").exists()
    t0 = time.perf_counter()
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == code, stderr[-800:]
    assert time.perf_counter() - t0 < 20
    assert f"interrupted, model saved to {out}" in stderr
    model = load_model(out)
    assert model.history[-1]["steps"] > 0 and model.config.width == 4


def _no_space_in(folder):
    real = ckpt._atomic_write

    def write(path, data):
        if path.parent == folder:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data)

    return write


def test_full_disk_after_training_says_where_and_rescues_the_weights(files, monkeypatch):
    out = files / "model"
    syn = make_nuclei((64, 64), seed=1, radius=6)
    ann = scribbles(syn.semantic, seed=2, width=2)
    monkeypatch.setattr(ckpt, "_atomic_write", _no_space_in(out))
    events = []
    with pytest.raises(UserError) as info:
        drain(train(syn.image, ann, model_config=TINY, out=out,
                    train_config=tiny_train(steps=3, autosave_every=0.0)), events.append)
    msg = str(info.value)
    assert "No space left on device writing" in msg and str(out) in msg and "\n" not in msg
    assert any(isinstance(e, Notice) and "Autosave failed" in e.message for e in events)  # training went on
    rescue = msg.split("saved to '")[1].split("'")[0]
    assert load_model(rescue).history[-1]["steps"] == 3


# --------------------------------------------------------------------------- item 5: predict temp files
KILLED_PREDICT = textwrap.dedent("""
    import sys, time, tifffile
    from napari_unet import cli
    real = tifffile.imwrite
    def slow(path, data, **kw):
        with open(path, "wb") as f:
            f.write(b"partial")
        print("writing", flush=True)
        time.sleep(60)
    tifffile.imwrite = slow
    sys.exit(cli.main(sys.argv[1:]))
""")


def test_sigterm_during_predict_removes_its_temp_file(files):
    save_model(Model.new(TINY, seed=0), files / "model")
    proc = subprocess.Popen([sys.executable, "-c", KILLED_PREDICT, "predict", "--model", str(files / "model"),
                             "--image", str(files / "img.tif"), "--out", str(files / "p.tif"), "--device", "cpu"],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    assert len(_temps(files)) == 1
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 143 and "terminated" in err
    assert _temps(files) == [] and not (files / "p.tif").exists()


def test_next_write_removes_stale_temp_files(tmp_path):
    stale = tmp_path / f".p.tif.{TMP_TAG}-{_host()}-{_dead_pid()}-0123.tif"
    live = tmp_path / f".p.tif.{TMP_TAG}-{_host()}-{os.getppid()}-4567.tif"
    stale.write_bytes(b"partial")
    live.write_bytes(b"partial")
    write_array(tmp_path / "p.tif", np.zeros((4, 4), np.float32))
    assert not stale.exists() and live.exists()
    assert remove_stale_temps(tmp_path) == []


# --------------------------------------------------------------------------- item 7: header before data
HUGE_WEIGHTS = textwrap.dedent("""
    import json, resource, struct, sys
    from napari_unet.config import ModelConfig
    from napari_unet.core.checkpoint import EMBEDDED, FORMAT, load_model
    from napari_unet.errors import UserError
    folder, kind = sys.argv[1], sys.argv[2]
    n = 150_000_000  # 600 MB of float32
    if kind == "header":
        info = {"format": FORMAT, "format_version": 1, "model": ModelConfig(depth=2, width=4).to_dict(),
                "patch_size": [], "history": [], "meta": {}}
        head = json.dumps({"__metadata__": {"format": FORMAT, EMBEDDED: json.dumps(info)},
                           "w": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}}).encode()
        head += b" " * (-len(head) % 8)
        blob = struct.pack("<Q", len(head)) + head
    else:
        blob = b"garbage!" * 8
    with open(folder + "/model.safetensors", "wb") as f:
        f.write(blob)
        f.truncate(len(blob) + 4 * n)  # sparse: costs no disk
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        load_model(folder)
        print("loaded")
    except UserError as e:
        print(str(e))
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
""")


@pytest.mark.parametrize("kind,match", [("header", "far larger"), ("garbage", "not a valid safetensors")])
def test_weights_without_config_are_checked_before_reading(tmp_path, kind, match):
    proc = subprocess.run([sys.executable, "-c", HUGE_WEIGHTS, str(tmp_path), kind], env=ENV, capture_output=True,
                          text=True, timeout=120)
    msg, grown_mb = proc.stdout.strip().splitlines()
    assert match in msg, proc.stdout + proc.stderr
    assert int(grown_mb) < 100  # the 600 MB file was never read whole


# --------------------------------------------------------------------------- item 8 (core part)
def test_check_model_target(tmp_path):
    from napari_unet.core.checkpoint import check_model_target

    assert check_model_target(tmp_path / "new") == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    check_model_target(tmp_path / "empty")
    model = save_model(Model.new(TINY, seed=0), tmp_path / "model")
    with pytest.raises(UserError, match=r"already holds a napari-unet model; confirm replacing it \(overwrite=True\)"):
        check_model_target(model)
    with pytest.raises(UserError, match="pass --overwrite to replace it"):
        check_model_target(model, flag="--overwrite")
    assert check_model_target(model, overwrite=True) == model
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "config.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(UserError, match="not a napari-unet model folder.*config.json"):
        check_model_target(tmp_path / "mine", overwrite=True)  # never replaces the user's files
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        check_model_target(tmp_path / "f", overwrite=True)


def test_train_overwrite_flag_replaces_a_model(files, capsys):
    from napari_unet.cli import main

    args = ["train", "--image", str(files / "img.tif"), "--labels", str(files / "lab.tif"), "--out",
            str(files / "model"), "--steps", "1", "--width", "4", "--depth", "2", "--device", "cpu"]
    assert main(args) == 0
    first = (files / "model" / "model.safetensors").read_bytes()
    assert main(args + ["--seed", "3"]) == 2 and "--overwrite" in capsys.readouterr().err
    assert (files / "model" / "model.safetensors").read_bytes() == first
    assert main(args + ["--seed", "3", "--overwrite"]) == 0
    assert (files / "model" / "model.safetensors").read_bytes() != first


# --------------------------------------------------------------------------- item 9: permissions
@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_outputs_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        write_array(tmp_path / "p.tif", np.zeros((4, 4), np.float32))
        write_array(tmp_path / "p.npy", np.zeros((4, 4), np.float32))
        folder = save_model(Model.new(TINY, seed=0), tmp_path / "m")
    finally:
        os.umask(old)
    for p in (tmp_path / "p.tif", tmp_path / "p.npy", folder / "model.safetensors", folder / "config.json"):
        assert stat.S_IMODE(p.stat().st_mode) == mode, p


def test_trained_model_via_api_is_readable_by_the_group(files):
    old = os.umask(0o002)
    try:
        syn = make_nuclei((64, 64), seed=1, radius=6)
        train_blocking(syn.image, scribbles(syn.semantic, seed=2, width=2), model_config=TINY,
                       train_config=tiny_train(steps=1), out=files / "m")
    finally:
        os.umask(old)
    assert stat.S_IMODE((files / "m" / "model.safetensors").stat().st_mode) == 0o664


def test_stop_before_the_first_step_saves_nothing(files):
    """Ctrl+C while the data is prepared must not replace a model with an untrained one."""
    syn = make_nuclei((64, 64), seed=1, radius=6)
    result = train_blocking(syn.image, scribbles(syn.semantic, seed=2, width=2), model_config=TINY,
                            train_config=tiny_train(steps=5), out=files / "m", should_stop=lambda: True)
    assert result.steps == 0 and not (files / "m" / "model.safetensors").exists()
