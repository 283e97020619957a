"""Training throughput on the GPU in fp32 and bf16, and what a default job costs there.

    python benchmarks/gpu.py                  # device=cuda when present, else the CPU: well under 5 minutes on a GPU
    python benchmarks/gpu.py --device cpu     # the same tables on the CPU: about 7 minutes on 2 cores, --repeats 3
    python benchmarks/gpu.py --quick          # seconds: tiny sizes, proves the script runs (tests/test_benchmarks.py)

Two tables, in markdown on stdout (progress goes to stderr):
- vae_sweep's own `train_epoch` on the default mlp and conv models, built from the real composed config as
  benchmarks/harness.py builds them, at batch 128 and 1024, with `precision=32` and `precision=bf16` (the job's own
  autocast): examples/s, median of the repeats. fp32 and bf16 are taken alternately (harness.alternate: one untimed
  warm-up call each, and torch.cuda.synchronize before and after every timed call), so a slow spell falls on both.
- One default job (`python -m vae_sweep device=... precision=...` in a fresh folder, as a sweep trial runs it):
  the seconds the process took, and metrics.json's wall_seconds and train_seconds.
- A default 3-trial sweep on the device, phase by phase (benchmarks/breakdown.py's table): where a trial's
  seconds go besides training.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness, beside this file
import harness  # noqa: E402
from harness import REPO, alternate, config, ours, table  # noqa: E402

from vae_sweep.runtime import resolve_device, set_threads  # noqa: E402

log = logging.getLogger("gpu")

MODELS = ("mlp", "conv")
BATCHES = (128, 1024)
PRECISIONS = ("32", "bf16")
LOOP_COLUMNS = ["model", "batch", "device", "fp32 examples/s", "bf16 examples/s", "bf16 / fp32"]
JOB_COLUMNS = [
    "precision",
    "status",
    "process s",
    "wall_seconds",
    "train_seconds",
    "rest of the job s",
    "train examples/s",
]
TRAIN_EXAMPLES = 4_500  # mnist_5k's training split: 5,000 less dataset.val_size=500


def steps_per_epoch(batch_size: int, max_batches: int | None) -> int:
    """Optimiser steps in one epoch of mnist_5k: whole batches only, as train_epoch takes them."""
    return min(TRAIN_EXAMPLES // batch_size, max_batches or TRAIN_EXAMPLES)


def loops(device: torch.device, repeats: int, steps: int, tiny: bool) -> list[list]:
    """examples/s of train_epoch for each model and batch, fp32 against bf16; each sample trains about `steps`
    optimiser steps (whole epochs), enough that a GPU's launch latency is not all that is measured."""
    rows = []
    bf16 = device.type != "cuda" or torch.cuda.is_bf16_supported(including_emulation=False)
    for model in MODELS:
        for batch in BATCHES:
            over = [f"model={model}", f"batch_size={batch}", f"device={device}"] + (["max_batches=2"] if tiny else [])
            epochs = max(1, round(steps / steps_per_epoch(batch, 2 if tiny else None)))
            log.info("loops: model=%s batch=%d on %s, %d epoch(s) a sample", model, batch, device, epochs)
            contenders = {
                p: ours(config(*over, f"precision={p}"), device, epochs) for p in PRECISIONS if p == "32" or bf16
            }
            r = alternate(contenders, repeats, device)
            ratio = f"{r['bf16'] / r['32']:.2f}x" if "bf16" in r else "no bf16"
            rows.append([model, batch, str(device), r["32"], r.get("bf16", "-"), ratio])
    return rows


def default_job(device: torch.device, precision: str, folder: Path, tiny: bool) -> list:
    """One default job as a user starts it, in a fresh folder; its row of the job table."""
    run_dir = folder / f"job_{precision}"
    args = [f"device={device}", f"precision={precision}", f"hydra.run.dir={run_dir}", "progress=false"]
    args += ["debug=tiny"] if tiny else []
    log.info("job: python -m vae_sweep %s", " ".join(args))
    start = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-m", "vae_sweep", *args],
        cwd=folder,
        env=os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))},
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    if res.returncode != 0:
        raise RuntimeError(f"the default job failed:\n{res.stderr[-2000:]}")
    m = json.loads((run_dir / "metrics.json").read_text())
    trained = m["steps"] * 128  # examples: the default batch_size
    rest = m["wall_seconds"] - m["train_seconds"]
    return [precision, m["status"], seconds, m["wall_seconds"], m["train_seconds"], rest, trained / m["train_seconds"]]


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        return f"{torch.cuda.get_device_name(device)}, bf16 {'yes' if bf16 else 'no'}, torch {torch.__version__}"
    return f"cpu, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cuda, cuda:N or cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and one repeat: proves the script runs")
    parser.add_argument("--repeats", type=int, default=5, help="alternating rounds behind each median")
    parser.add_argument("--steps", type=int, default=100, help="optimiser steps in each timed sample (whole epochs)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    logging.getLogger("vae_sweep").setLevel(logging.WARNING)
    device = resolve_device(args.device)
    set_threads(None)
    repeats, steps = (1, 2) if args.quick else (args.repeats, args.steps)
    if args.quick:  # seconds, not minutes: no sample re-taken on a busy machine
        harness.RETRIES = 0
    start = time.perf_counter()
    print(f"## vae_sweep on {device} ({'quick' if args.quick else 'full'} run): {machine(device)}")
    table(
        f"train_epoch on {device.type}: examples/s, mnist_5k, median of {repeats}",
        LOOP_COLUMNS,
        loops(device, repeats, steps, args.quick),
        "bf16: precision=bf16, the job's own torch.autocast around the forward pass and the loss; weights, gradients "
        "and Adam's moments stay fp32.",
    )
    with tempfile.TemporaryDirectory(prefix="vae_sweep_gpu_") as tmp:
        rows = [default_job(device, p, Path(tmp), args.quick) for p in PRECISIONS]
    table(
        f"One {'debug=tiny' if args.quick else 'default'} job on {device.type} (model=mlp, batch 128), seconds",
        JOB_COLUMNS,
        rows,
        "process s: the whole command, imports included. train_seconds: the epochs with their validation; rest of "
        "the job: wall_seconds less train_seconds (checks, data, model.pt, the IWAE bound, the pictures). "
        "train examples/s: examples trained on over train_seconds.",
    )
    print(sweep_breakdown(device, args.quick))
    print(f"\n{time.perf_counter() - start:.0f} s in all")


def sweep_breakdown(device: torch.device, tiny: bool) -> str:
    """A default sweep's trials on `device`, phase by phase: benchmarks/breakdown.py's table for a 3-trial sweep
    (2 trials of debug=tiny with --quick)."""
    log.info("breakdown: a default sweep on %s", device)
    command = [sys.executable, str(Path(__file__).resolve().parent / "breakdown.py"), "--no-job", "--repeats", "1"]
    command += ["--tiny", "--sweep", "2"] if tiny else ["--sweep", "3"]
    with tempfile.TemporaryDirectory(prefix="vae_sweep_gpu_") as tmp:
        res = subprocess.run([*command, f"device={device}"], cwd=tmp, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"benchmarks/breakdown.py failed:\n{res.stderr[-2000:]}")
    return "\n" + res.stdout.replace("### default sweep", f"### A default sweep's trials on {device.type}", 1)


if __name__ == "__main__":
    main()
