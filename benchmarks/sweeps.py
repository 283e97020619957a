"""Real sweeps run as subprocesses (`python -m vae_sweep --multirun ...`), and the time they spend outside the jobs.

Clocks: the parent notes the wall-clock time when it starts the command; Hydra stamps each of its log lines
(`[2026-01-01 12:00:00,123][HYDRA] Launching 1 jobs locally`) to the millisecond; each trial's metrics.json holds
`wall_seconds`, the job function's own time, and its modification time marks the job's end. All three are
wall-clock times on this machine, so they can be subtracted from one another.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from harness import REPO, cpu_seconds, others_share

# A trial's launch: the launcher's "Launching N jobs" line, or the Slurm loop's "trial N: Slurm job J: ..." line.
LAUNCH = re.compile(r"Launching|trial \d+: Slurm job \d+:")
HYDRA_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]\[HYDRA\] (.*)$", re.M)


@dataclass
class SweepRun:
    seconds: float  # the whole command, from start to exit
    started: float  # wall-clock time (epoch seconds) at which the command was started
    launches: list[float]  # wall-clock time of each "Launching" line of the launcher (one per batch of trials)
    trials: list[dict]  # each trial's metrics.json by trial number, plus "end": the file's modification time
    others: float = 0.0  # share of the machine's CPU time that other processes used meanwhile


def named_sweep(
    out: Path, database: str, name: str, n_trials: int, threads: int, settings: list[str], extra: list[str]
) -> list[str]:
    """The command of a benchmark's sweep: the contender's `settings`, into study `name` of out/<database> with its
    trials in out/<name>, `threads` torch threads a trial and no artifacts, then the user's `extra` (the last word)."""
    return [
        sys.executable,
        "-m",
        "vae_sweep",
        "--multirun",
        *settings,
        f"hydra.sweeper.study_name={name}",
        f"hydra.sweeper.storage=sqlite:///{out}/{database}",
        f"hydra.sweep.dir={out}/{name}",
        f"hydra.sweeper.n_trials={n_trials}",
        f"threads={threads}",
        "hydra.sweeper.artifact_dir=null",
        *extra,
    ]


def run_sweep(
    folder: Path,
    n_trials: int,
    overrides: list[str],
    storage: str | None = None,
    python: Path | None = None,
    source: Path | None = None,
) -> SweepRun:
    """Run a sweep of `n_trials` into `folder` (its own SQLite study, or `storage`) and collect its timings.
    `python` and `source` (a checkout, put first on PYTHONPATH) run another install, such as the stack before an
    upgrade (stack.py)."""
    env = {**os.environ, "PYTHONPATH": str(source)} if source else None
    cmd = [
        str(python or sys.executable),
        "-m",
        "vae_sweep",
        "--multirun",
        f"hydra.sweep.dir={folder}",
        f"hydra.sweeper.storage={storage or f'sqlite:///{folder}/s.db'}",
        f"hydra.sweeper.n_trials={n_trials}",
        *overrides,
    ]
    cpu, started, start = cpu_seconds(), time.time(), time.perf_counter()
    proc = subprocess.run(cmd, cwd=folder.parent if source else REPO, env=env, capture_output=True, text=True)
    seconds, others = time.perf_counter() - start, others_share(cpu, cpu_seconds())
    if proc.returncode != 0:
        raise RuntimeError(f"sweep failed: {' '.join(cmd)}\n{proc.stdout[-1500:]}\n{proc.stderr[-1500:]}")
    launches = [_stamp(t) for t, msg in HYDRA_LINE.findall(proc.stdout + proc.stderr) if LAUNCH.match(msg)]
    trials = []
    for run_dir in sorted((p for p in folder.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)):
        path = run_dir / "metrics.json"
        metrics = json.loads(path.read_text()) | {"end": path.stat().st_mtime}
        if metrics["status"] != "completed":
            raise RuntimeError(f"{run_dir}: status {metrics['status']} {metrics.get('error', '')}")
        trials.append(metrics)
    if len(trials) != n_trials:
        raise RuntimeError(f"{folder}: {len(trials)} trials written, {n_trials} asked")
    return SweepRun(seconds, started, launches, trials, others)


def _stamp(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def overhead(run: SweepRun, default_epochs: int) -> dict[str, float]:
    """Where a serial sweep's time goes, in seconds (medians over consecutive pairs of trials):

    - `per_trial`: launch of trial i to launch of trial i + 1, less trial i's `wall_seconds`;
    - `before_job`: launch -> job function start (Hydra composes the trial's config, makes its dir, saves .hydra/);
    - `after_job`: job end (metrics.json written) -> next launch (the sweeper records the trial, asks the next);
    - `startup`: command start -> first launch (interpreter, imports, study), and `shutdown`: last job end -> exit;
    - `trial`: a default trial's wall_seconds (median); when the sweep ran fewer epochs than `default_epochs`,
      estimated as its time outside training plus its train_seconds scaled up to `default_epochs`.
    """
    trials, launches = run.trials, run.launches
    if len(launches) != len(trials) or len(trials) < 2:
        raise RuntimeError(f"need one launch line per trial and two trials at least: {len(launches)}, {len(trials)}")
    per_trial, before, after = [], [], []
    for t, launch, nxt in zip(trials, launches, launches[1:]):
        start = t["end"] - t["wall_seconds"]
        per_trial.append(nxt - launch - t["wall_seconds"])
        before.append(start - launch)
        after.append(nxt - t["end"])
    scale = [default_epochs / t["epochs"] for t in trials]
    trial = [t["wall_seconds"] + t["train_seconds"] * (s - 1) for t, s in zip(trials, scale)]
    return {
        "per_trial": statistics.median(per_trial),
        "before_job": statistics.median(before),
        "after_job": statistics.median(after),
        "startup": launches[0] - run.started,
        "shutdown": run.started + run.seconds - trials[-1]["end"],
        "trial": statistics.median(trial),
        "trial_estimated": any(s != 1 for s in scale),
        "job_seconds_first": trials[0]["wall_seconds"],  # includes loading the dataset into this process
    }


def trials_per_minute(run: SweepRun) -> tuple[float, float, float]:
    """Trials per minute three ways: over the whole command; from the first launch to the last job's end; and
    after the first batch (second launch -> last job end), where the launcher's workers and each process's
    one-time costs (imports, loading the data) are behind it: the rate a long sweep approaches."""
    n, end = len(run.trials), max(t["end"] for t in run.trials)
    first_batch = n // len(run.launches)  # the launcher logs one "Launching" line per batch of trials
    steady = 60 * (n - first_batch) / (end - run.launches[1]) if len(run.launches) > 1 else float("nan")
    return 60 * n / run.seconds, 60 * n / (end - run.launches[0]), steady
