"""benchmarks/breakdown.py keeps working: its tiny mode runs a real job and a real 2-trial sweep and prints every
column and the phases that make them up, with the calls each was made; its arithmetic splits a run as it says. No
time is asserted: a benchmark is not a test."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from breakdown import rows  # noqa: E402

PHASES = (
    "interpreter start-up",
    "imports (vae_sweep and what it imports)",
    "data load",
    "build model and optimiser",
    "training (train_epoch)",
    "validation, every epoch",
    "model.pt, every epoch",
    "IWAE bound",
    "picture: reconstructions.png",
    "metrics.json writes",
    "whole command (wall)",
)


def table_rows(text: str, title: str) -> dict[str, list[str]]:
    """The rows of the markdown table under `### title`: phase -> its other cells."""
    lines = text.split(f"### {title}", 1)[1].strip().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["phase", "calls", "seconds", "per call", "share"]
    table = {}
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        phase, *cells = [c.strip() for c in line.strip("|").split("|")]
        table[phase] = cells
    return table


@pytest.mark.slow
def test_tiny_run_prints_a_job_and_a_sweep_trial_broken_down(tmp_path):
    res = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "breakdown.py"), "--tiny", "--repeats", "1", "--sweep", "2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    job = table_rows(res.stdout, "default job: python -m vae_sweep")
    sweep = table_rows(res.stdout, "default sweep: python -m vae_sweep --multirun hydra.sweeper.n_trials=2")
    for phase in PHASES:
        assert phase in job and phase in sweep, phase
    # the work happened: debug=tiny trains one epoch a job, and the sweep ran both its trials to their pictures
    assert job["training (train_epoch)"][0] == "1" and sweep["training (train_epoch)"][0] == "2"
    assert sweep["picture: reconstructions.png"][0] == "2" and sweep["sweep: record (tell, attributes)"][0] == "2"
    assert "sweep: ask (sampler, study.ask)" in sweep and not any(p.startswith("sweep:") for p in job)
    assert float(job["whole command (wall)"][1]) > float(job["training (train_epoch)"][1]) > 0
    assert all(cells[3].endswith("%") for cells in job.values())
    assert "default job: python -m vae_sweep: wall " in res.stdout and "% of it; inside the jobs " in res.stdout


def test_rows_split_a_run_into_leaves_the_rest_and_what_the_parent_saw():
    run = {
        "spawned": 100.0,
        "first": 100.1,  # the child's first line
        "main": [101.0, 109.0],  # main() from 101 to 109
        "exited": 109.2,
        "wall": 9.2,
        "phases": {
            "imports (vae_sweep and what it imports)": [0.8, 1],
            "command-line check": [0.1, 1],
            "job function": [6.0, 2],
            "Hydra run_job": [6.4, 2],
            "training (train_epoch)": [4.0, 40],
            "of which: import torch._dynamo (first use)": [0.7, 1],  # inside build: adds to nothing
            "build model and optimiser": [1.0, 2],
            "sweep: ask (sampler, study.ask)": [0.3, 2],
            "sweep: of which: GP sampler": [0.2, 1],
        },
        "metrics": [{"train_seconds": 2.1}, {"train_seconds": 2.0}],
    }
    out = rows(run)
    assert out["interpreter start-up"] == pytest.approx((0.1, 1))
    assert out["other, in the job function"] == pytest.approx((1.0, 2))  # 6 - (4 + 1)
    assert out["Hydra: each job's bookkeeping (run_job less the job)"] == pytest.approx((0.4, 2))
    rest = "Hydra and the sweeper: the rest (compose, launch, run dirs, study)"
    assert out[rest] == pytest.approx((8.0 - 0.1 - 6.4 - 0.3, 2))  # the GP's time is inside ask's
    assert out["interpreter exit"] == pytest.approx((0.2, 1))
    assert out["of which training (metrics.json train_seconds)"] == pytest.approx((4.1, 2))
