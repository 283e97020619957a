"""benchmarks/: the script's smallest mode still runs end to end, and its sweep-overhead and CPU-share arithmetic
is right. No timing is asserted here: a benchmark is not a test."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from harness import others_share  # noqa: E402
from sweeps import SweepRun, overhead, trials_per_minute  # noqa: E402


@pytest.mark.slow
def test_smoke_run_prints_every_table():
    res = subprocess.run(
        [sys.executable, "benchmarks/bench.py", "--smoke"], cwd=REPO, capture_output=True, text=True, timeout=180
    )
    assert res.returncode == 0, res.stderr[-3000:]
    for title in (
        "### Machine",
        "### Training loop on cpu",
        "### mlp on cpu against the measured matmul peak",
        "### Evaluation on cpu",
    ):
        assert title in res.stdout
    rows = [line for line in res.stdout.splitlines() if line.startswith(("| mlp | cpu", "| conv | cpu"))]
    assert len(rows) == 2 and all(line.count("x |") == 2 for line in rows)  # both ratios printed per model


@pytest.mark.slow
def test_gpu_script_prints_its_tables_on_the_cpu():
    """benchmarks/gpu.py --device cpu --quick: every model x batch row with fp32, bf16 and their ratio, both jobs,
    and a sweep's trials broken down."""
    res = subprocess.run(
        [sys.executable, "benchmarks/gpu.py", "--device", "cpu", "--quick"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.splitlines()
    header = "| model | batch | device | fp32 examples/s | bf16 examples/s | bf16 / fp32 |"
    rows = [line.split(" | ") for line in lines if line.startswith(("| mlp | ", "| conv | "))]
    assert header in lines and [r[:3] for r in rows] == [
        ["| mlp", "128", "cpu"],
        ["| mlp", "1024", "cpu"],
        ["| conv", "128", "cpu"],
        ["| conv", "1024", "cpu"],
    ]
    assert all(r[-1].endswith("x |") for r in rows)  # the ratio, where both ran
    job = "| precision | status | process s | wall_seconds | train_seconds | rest of the job s | train examples/s |"
    jobs = [line.split(" | ")[:2] for line in lines if line.startswith(("| 32 | ", "| bf16 | "))]
    assert job in lines and jobs == [["| 32", "completed"], ["| bf16", "completed"]]
    # the sweep's trials phase by phase (benchmarks/breakdown.py): both tiny trials trained
    assert "### A default sweep's trials on cpu: python -m vae_sweep --multirun hydra.sweeper.n_trials=2" in lines
    assert any(line.startswith("| training (train_epoch) | 2 |") for line in lines)


def _trial(end: float, wall: float, train: float, epochs: int) -> dict:
    return {"end": end, "wall_seconds": wall, "train_seconds": train, "epochs": epochs}


def test_overhead_subtracts_each_job_from_the_gap_between_launches():
    # launches at 10, 15, 21; jobs of 4 s and 5 s start 0.25 s after their launch; the command ran 100 -> 130
    trials = [_trial(14.25, 4.0, 3.0, 2), _trial(20.25, 5.0, 3.0, 2), _trial(25.25, 4.0, 3.0, 2)]
    run = SweepRun(seconds=30.0, started=0.0, launches=[10.0, 15.0, 21.0], trials=trials)
    o = overhead(run, default_epochs=10)
    assert o["per_trial"] == pytest.approx(1.0)  # median of (15 - 10 - 4, 21 - 15 - 5)
    assert o["before_job"] == pytest.approx(0.25) and o["after_job"] == pytest.approx(0.75)
    assert o["startup"] == pytest.approx(10.0) and o["shutdown"] == pytest.approx(4.75)
    # 2-epoch trials scaled to 10 epochs: wall + train * (10 / 2 - 1) = 4 + 12 (or 5 + 12)
    assert o["trial"] == pytest.approx(16.0) and o["trial_estimated"]
    whole, in_sweep, steady = trials_per_minute(run)
    assert whole == pytest.approx(6.0) and in_sweep == pytest.approx(60 * 3 / 15.25)
    assert steady == pytest.approx(60 * 2 / (25.25 - 15.0))  # trials 1 and 2, from their first launch on


def test_others_share_is_the_machines_busy_time_less_our_own():
    # (busy CPU s of the machine, all CPU s, this process's CPU s): 10 s busy of 20, 3 of them ours
    assert others_share((10.0, 100.0, 2.0), (20.0, 120.0, 5.0)) == pytest.approx(7 / 20)
    assert others_share((10.0, 100.0, 2.0), (12.0, 120.0, 5.0)) == 0.0  # never negative (our time counts children)
    assert others_share(None, (20.0, 120.0, 5.0)) == 0.0  # no /proc/stat: nothing known, nothing re-taken


@pytest.mark.slow
def test_fidelity_compares_both_loops_trained_from_the_same_weights():
    res = subprocess.run(
        [sys.executable, "benchmarks/fidelity.py", "--epochs", "1", "--seeds", "0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    header, _, row = [line for line in res.stdout.splitlines() if line.startswith("|")]
    assert header.startswith("| seed | neg-ELBO, vae_sweep (nats) | neg-ELBO, plain loop | difference |")
    seed, ours, plain, diff, *_ = [c.strip() for c in row.strip("|").split("|")]
    # one epoch from the same weights: both near the same bound, between an untrained model's and a good one's
    assert seed == "0" and 120 < float(ours) < 400 and 120 < float(plain) < 400 and diff.endswith("%")
