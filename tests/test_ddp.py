"""Data-parallel training under torchrun (core/ddp.py): 2 CPU processes over gloo.

nccl (CUDA) is not exercised here: the machine that runs the suite has no GPU.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.distributed as dist

from napari_unet.cli import main
from napari_unet.core import ddp
from napari_unet.core.checkpoint import load_model
from napari_unet.core.inference import predict

TRAIN = ["train", "--device", "cpu", "--threads", "1", "--width", "8", "--depth", "2", "--batch-size", "2",
         "--patch-size", "32", "32"]


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.normal(size=(48, 48)).astype(np.float32)
    lab = np.zeros((48, 48), np.uint8)
    img[10:30, 10:30] += 3
    lab[12:28, 12:28] = 2
    lab[35:45, 35:45] = 1
    lab[:5] = 1
    np.save(tmp_path / "img.npy", img)
    np.save(tmp_path / "lab.npy", lab)
    (tmp_path / "debug").mkdir()
    return tmp_path


def _torchrun(folder, *args, env=None, **kw):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "napari_unet.cli", *TRAIN, "--image", "img.npy", "--labels", "lab.npy", "--out", "model", *args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), ddp.DEBUG_ENV: str(folder / "debug"), **(env or {})}
    return subprocess.Popen(cmd, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kw)


def _ranks(folder):
    return [json.loads((folder / "debug" / f"rank{r}.json").read_text()) for r in (0, 1)]


def _loads_and_predicts(folder):
    model = load_model(folder / "model")  # a plain single-process load: no "module." prefix in the weights
    probs = predict(model, np.load(folder / "img.npy"))
    assert probs.shape == (2, 48, 48) and np.allclose(probs.sum(0), 1, atol=1e-4)
    return model


def test_torchrun_two_processes_train_one_model(data):
    proc = _torchrun(data, "--steps", "6")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    # one model folder, written by process 0 alone; nothing else in the working folder
    assert sorted(p.name for p in data.iterdir()) == ["debug", "img.npy", "lab.npy", "model"]
    assert sorted(p.name for p in (data / "model").iterdir()) == ["config.json", "model.safetensors"]
    assert "data-parallel training on 2 processes (gloo)" in err
    assert err.count("training on CPU (1 thread) x 2 processes (DDP over gloo)") == 1  # process 0 reports
    assert out.count("saved model to model: 6 steps") == 1
    model = _loads_and_predicts(data)
    assert model.history[-1]["versions"]["device"].endswith("x 2 processes (DDP over gloo)")
    r0, r1 = _ranks(data)
    assert (r0["world_size"], r1["world_size"]) == (2, 2)
    assert r0["params_sha256"] == r1["params_sha256"]  # DDP kept the weights identical
    assert r0["sampler_seed"] == 0 and r1["sampler_seed"] != 0  # each process samples its own patches
    # the saved weights are the ones every process ended with
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted(model.net.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().contiguous().numpy().tobytes())
    assert h.hexdigest() == r0["params_sha256"]


def test_torchrun_one_process_failing_ends_all(data):
    proc = _torchrun(data, "--steps", "50", env={ddp.FAIL_ENV: "1:3"})
    out, err = proc.communicate(timeout=120)  # ends (no hang) well within the timeout
    assert proc.returncode != 0
    assert "simulated failure of process 1 at step 3" in err
    assert "training process 0 of 2 lost contact with the others" in err  # process 0: a clear message
    assert "saved model" not in out and not (data / "model" / "model.safetensors").exists()


def test_torchrun_ctrl_c_stops_all_and_saves(data):
    proc = _torchrun(data, "--time-budget", "120")
    deadline = time.monotonic() + 60
    seen = ""
    while " loss " not in seen and time.monotonic() < deadline:  # the progress bar shows training steps
        seen += proc.stderr.read(1) if proc.poll() is None else ""
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl+C in the terminal sends (torchrun passes it on)
    out, err = proc.communicate(timeout=60)
    assert " loss " in seen
    model = _loads_and_predicts(data)
    steps = model.history[-1]["steps"]
    r0, r1 = _ranks(data)
    assert r0["params_sha256"] == r1["params_sha256"]  # stopped at the same step, weights identical
    assert steps >= 1 and model.history[-1]["seconds"] < 100  # stopped long before the 120 s budget


def test_plain_run_creates_no_process_group(data, monkeypatch, capsys):
    monkeypatch.delenv("WORLD_SIZE", raising=False)

    def refuse(*a, **k):
        raise AssertionError("a plain run must not start a process group")

    monkeypatch.setattr(dist, "init_process_group", refuse)
    monkeypatch.setattr(dist, "barrier", refuse)
    monkeypatch.chdir(data)
    assert main([*TRAIN, "--image", "img.npy", "--labels", "lab.npy", "--out", "model", "--steps", "3"]) == 0
    assert not dist.is_initialized()
    assert "data-parallel" not in capsys.readouterr().err
    assert not list((data / "debug").iterdir())  # the debug hook is inert without a process group
    model = load_model(data / "model")
    assert model.history[-1]["versions"]["device"] == "CPU (1 thread)"
    # every helper is the identity without a process group
    net = torch.nn.Linear(2, 2)
    assert ddp.wrap(net, torch.device("cpu")) is net
    assert ddp.rank_seed(7) == 7 and ddp.share_threads(5) == 5 and ddp.describe_suffix() == ""
    assert ddp.agree(3, 1.5, True) == (1.5, True)
    assert ddp.finite_mean(torch.tensor(float("nan")))[0] is False
    assert ddp.shard([1, 2, 3]) == [1, 2, 3] and ddp.all_sum(1.0, 2) == (1.0, 2)
    with ddp.session("cpu") as backend:
        assert backend is None


def test_rank_seeds_differ():
    seeds = {ddp.rank_seed(0, r) for r in range(8)}
    assert len(seeds) == 8 and ddp.rank_seed(0, 0) == 0 and ddp.rank_seed(1, 1) != ddp.rank_seed(0, 1)


def _worker(r, store, results):
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=r, world_size=2,
                            timeout=__import__("datetime").timedelta(seconds=2))
    try:
        out = {"agree": ddp.agree(0, 10.0 + r, stop=(r == 1)),
               "sum": ddp.all_sum(1.5 * (r + 1), r + 1, np.full((2, 2), r + 1, np.int64)),
               "finite": ddp.finite_mean(torch.tensor(float("inf") if r else 1.0)),
               "shard": ddp.shard(list(range(5)))}
        if r == 1:
            time.sleep(5)  # stuck: process 0's next collective must time out, not hang
            out["late"] = None
        else:
            t0 = time.monotonic()
            try:
                ddp.agree(1, 0.0, False)
                out["late"] = "no error"
            except ddp.DistributedError as e:
                out["late"] = (str(e), time.monotonic() - t0)
        results.put((r, out))
    finally:
        dist.destroy_process_group()


def test_helpers_agree_across_two_processes(tmp_path):
    ctx = torch.multiprocessing.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, tmp_path / "store", results)) for r in (0, 1)]
    for p in procs:
        p.start()
    got = dict(results.get(timeout=90) for _ in procs)
    for p in procs:
        p.join(30)
    for r in (0, 1):
        o = got[r]
        assert o["agree"] == (10.0, True)  # process 0's clock; a stop asked on any process stops all
        assert o["sum"][0] == 4.5 and o["sum"][1] == 3 and (o["sum"][2] == 3).all() and o["sum"][2].dtype == np.int64
        assert o["finite"][0] is False  # one non-finite loss: every process skips the step
    assert got[0]["shard"] == [0, 2, 4] and got[1]["shard"] == [1, 3]
    message, waited = got[0]["late"]
    assert "training process 0 of 2 lost contact with the others" in message and waited < 4.5
