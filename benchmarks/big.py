"""Seconds and peak memory of ``napari-unet predict`` on large images, zarr -> zarr.

Each size runs the real CLI in its own subprocess; its peak RSS comes from ``os.wait4`` (the
child's own rusage, not the benchmark's). Inputs are uint16 OME-Zarr images written chunk by chunk
(so making them needs no memory either); the model is the CPU preset's architecture (untrained:
speed and memory do not depend on the weights).

    python benchmarks/big.py --sizes 256 1024 2048 4096            # quick, what we ran on 2 shared cores
    python benchmarks/big.py --sizes 256 8192 16384 --volume 512   # the targets (minutes to an hour on CPU)
    python benchmarks/big.py --sizes 256 8192 --modes zarr memory  # zarr vs in-memory (.npy) throughput

Target (issue 13): 8192^2 zarr -> zarr (probabilities and labels) with a peak RSS within +350 MiB
of the same command on 256^2; throughput within 20 % of the in-memory path.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_model(folder: Path, ndim: int) -> Path:
    from napari_unet.config import ModelConfig, default_presets
    from napari_unet.core.checkpoint import Model, save_model

    arch = default_presets(ndim, "cpu")[0]
    path = folder / f"model{ndim}d"
    if not path.exists():
        save_model(Model.new(ModelConfig(ndim=ndim, **arch), seed=0), path)
    return path


def make_image(folder: Path, shape: tuple[int, ...]) -> Path:
    """A uint16 OME-Zarr image with blobs on noise, written one chunk row at a time."""
    from napari_unet.core.ome import create_output

    path = folder / ("img_" + "x".join(map(str, shape)) + ".zarr")
    if path.exists():
        return path
    arr = create_output(path, shape, np.uint16, has_channel=False, model_ndim=len(shape))
    step = arr.chunks[0]
    rng = np.random.default_rng(0)
    for a in range(0, shape[0], step):
        b = min(shape[0], a + step)
        grid = np.indices((b - a,) + shape[1:], dtype=np.float32)
        grid[0] += a
        blobs = np.prod([np.sin(g / 9.0) for g in grid], axis=0) > 0.3
        arr[a:b] = (blobs * 800 + 300 + rng.normal(0, 60, blobs.shape)).clip(0, 65535).astype(np.uint16)
    return path


def run_one(model: Path, image: Path, folder: Path, mode: str, threads: int | None) -> dict:
    ext = {"zarr": ".zarr", "memory": ".npy"}[mode]
    out, lab = folder / f"p{ext}", folder / f"l{'.zarr' if mode == 'zarr' else '.tif'}"
    cmd = [sys.executable, "-m", "napari_unet.cli", "predict", "--model", str(model), "--image", str(image),
           "--out", str(out), "--labels-out", str(lab), "--device", "cpu"]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage (peak RSS in KiB on Linux)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - t0
        if proc.returncode:
            log.seek(0)
            raise SystemExit(f"{' '.join(cmd)} failed:\n{log.read().decode()[-2000:]}")
    for p in (out, lab):
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    return {"seconds": seconds, "peak_rss_mib": usage.ru_maxrss / 1024}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 1024, 2048, 4096, 8192, 16384],
                    help="edge lengths of the 2D images")
    ap.add_argument("--volume", type=int, nargs="*", default=[], help="edge lengths of 3D volumes (e.g. 512)")
    ap.add_argument("--modes", nargs="+", choices=("zarr", "memory"), default=["zarr"],
                    help="zarr: --out p.zarr --labels-out l.zarr; memory: --out p.npy --labels-out l.tif")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--workdir", default=None, help="where inputs are kept (default: a temporary folder)")
    args = ap.parse_args(argv)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="nu-big-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    cases = [(2, (s, s)) for s in args.sizes] + [(3, (s, s, s)) for s in args.volume]
    print(f"{'image':>16} {'mode':>7} {'seconds':>9} {'Mpx/s':>7} {'peak RSS MiB':>13}", flush=True)
    for ndim, shape in cases:
        model, image = make_model(work, ndim), make_image(work, shape)
        for mode in args.modes:
            r = run_one(model, image, work, mode, args.threads)
            mpx = np.prod(shape) / 1e6
            rows.append({"shape": shape, "mode": mode, **r})
            print(f"{'x'.join(map(str, shape)):>16} {mode:>7} {r['seconds']:9.1f} {mpx / r['seconds']:7.2f} "
                  f"{r['peak_rss_mib']:13.0f}", flush=True)
    base = {r["mode"]: r["peak_rss_mib"] for r in rows if r["shape"] == (256, 256)}
    for r in rows:
        if r["mode"] in base and r["shape"] != (256, 256) and len(r["shape"]) == 2:
            print(f"{r['shape'][0]}^2 {r['mode']}: peak RSS {r['peak_rss_mib'] - base[r['mode']]:+.0f} MiB vs 256^2"
                  + ("  (target for 8192^2: +350 MiB at most)" if r["shape"][0] == 8192 else ""))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
