"""Trials as Slurm jobs (hydra/launcher=submitit_slurm) through a real one-node Slurm cluster on 127.0.0.1.

The cluster comes from the `slurm_cluster` fixture (tests/helpers/services.py: ci/services/slurm.sh).
"""

from __future__ import annotations

import json
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf

from helpers import REPO, cli
from vae_sweep.sweep import cluster
from vae_sweep.sweep.cluster import cluster_parallelism, remote

SLURM = cluster.SLURM_LAUNCHER


@pytest.mark.parametrize(
    ("n_jobs", "cpus", "expected"),
    [(1, None, (1, 1)), (4, 2, (4, 2)), (None, 3, (1, 3)), (-1, None, (1, 1)), (16, 8, (16, 8))],
)
def test_slurm_trials_at_once_and_threads_come_from_the_sweeper_and_the_launcher(n_jobs, cpus, expected):
    """On Slurm this machine's cores bound nothing: n_jobs trials at once, cpus_per_task threads each."""
    launcher = OmegaConf.create({"_target_": SLURM, "cpus_per_task": cpus})
    assert cluster_parallelism(n_jobs, launcher) == expected


def test_only_the_slurm_launcher_counts_as_remote():
    assert remote(OmegaConf.create({"_target_": SLURM}))
    local = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
    assert not remote(OmegaConf.create({"_target_": local}))
    assert not remote(OmegaConf.create({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}))
    assert not remote(None)


@pytest.mark.slow
def test_a_sweep_through_slurm_runs_each_trial_as_a_job_and_fills_the_study(slurm_cluster, tmp_path):
    """Three trials, two at a time, each a Slurm job with cpus_per_task threads: every trial's metrics.json sits
    in the sweep dir, the study holds three completed trials, and each ran under its own Slurm job id."""
    args = [
        sys.executable, "-m", "vae_sweep", "--multirun", "debug=tiny", "eval.pictures=false",
        "hydra/launcher=submitit_slurm", f"hydra.launcher.partition={slurm_cluster.partition}",
        "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2", "hydra.launcher.timeout_min=5",
        "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=2", "hydra.sweep.dir=multirun/slurm",
    ]  # fmt: skip
    res = slurm_cluster.run(args, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    log = res.stdout + res.stderr
    assert "2 at a time with 1 torch threads each, each a Slurm job" in log
    submitted = re.findall(r"trial (\d+): Slurm job (\d+):", log)
    assert sorted(int(n) for n, _ in submitted) == [0, 1, 2]
    assert len({job for _, job in submitted}) == 3

    storage = f"sqlite:///{tmp_path}/multirun/pareto.db"
    (name,) = optuna.get_all_study_names(storage)
    study = optuna.load_study(study_name=name, storage=storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    for t in study.trials:
        metrics = json.loads((tmp_path / "multirun" / "slurm" / str(t.number) / "metrics.json").read_text())
        assert metrics["status"] == "completed"
        assert metrics["threads"] == 1
        assert t.values == [metrics["distortion"], metrics["rate"]]
    logs = "\n".join(p.read_text() for p in (tmp_path / "multirun" / "slurm" / ".submitit").glob("*/*_log.out"))
    assert "- completed: distortion=" in logs  # the jobs' own final lines, written on the cluster's side


@pytest.mark.slow
def test_a_slurm_sweep_interrupted_cancels_its_jobs(slurm_cluster, tmp_path):
    """Ctrl-C while trials are out: their jobs are cancelled (squeue shows none), they are marked interrupted,
    and the same command then fills the study."""
    args = [
        sys.executable, "-m", "vae_sweep", "--multirun", "debug=tiny", "epochs=50", "max_batches=20",
        "eval.pictures=false", "hydra/launcher=submitit_slurm", f"hydra.launcher.partition={slurm_cluster.partition}",
        "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=5", "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2", "hydra.sweep.dir=multirun/slurm",
    ]  # fmt: skip
    proc = subprocess.Popen(
        args, cwd=tmp_path, env=slurm_cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        lines = []
        for line in proc.stdout:  # bounded: the sweep prints a few lines a second and ends by itself
            lines.append(line)
            if len(re.findall(r"Slurm job \d+", "".join(lines))) == 2:
                break
        proc.send_signal(2)  # SIGINT, as Ctrl-C
        rest, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    text = "".join(lines) + rest
    assert proc.returncode == 1, text[-2000:]
    assert re.search(
        r"interrupted: trial\(s\) 0, 1 marked interrupted and their Slurm job\(s\) \d+, \d+ cancelled", text
    )
    for _ in range(30):  # a cancelled job may show as completing (CG) for a moment
        if not (queue := slurm_cluster.run(["squeue", "-h", "-o", "%i %t"], timeout=30).stdout.strip()):
            break
        time.sleep(1)
    assert queue == ""
    storage = f"sqlite:///{tmp_path}/multirun/pareto.db"
    name = optuna.get_all_study_names(storage)[0]
    assert [t.user_attrs["status"] for t in optuna.load_study(study_name=name, storage=storage).trials] == [
        "interrupted"
    ] * 2


@pytest.mark.slow
def test_submitit_local_runs_the_trials_as_local_processes(tmp_path):
    """hydra/launcher=submitit_local: each trial a process of its own on this machine, sharing its cores as the
    joblib launcher's do (here, two at once with cores / 2 threads each); the study fills."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="hydra-submitit-launcher not installed")
    from vae_sweep.runtime import cpu_count

    res = cli(
        ["--multirun", "debug=tiny", "eval.pictures=false", "hydra/launcher=submitit_local",
         "hydra.launcher.timeout_min=5", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2",
         "hydra.sweep.dir=multirun/local"],
        tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    storage = f"sqlite:///{tmp_path}/multirun/pareto.db"
    (name,) = optuna.get_all_study_names(storage)
    trials = optuna.load_study(study_name=name, storage=storage).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    threads = max(1, cpu_count() // 2)
    for t in trials:
        metrics = json.loads((tmp_path / "multirun" / "local" / str(t.number) / "metrics.json").read_text())
        assert metrics["threads"] == threads
    logs = list((tmp_path / "multirun" / "local" / ".submitit").glob("*/*_log.out"))
    assert len(logs) == 2  # a submitit job each


@pytest.mark.slow
@pytest.mark.parametrize("signal_name", ["TERM", "USR2"])
def test_a_preempted_slurm_trial_continues_from_its_checkpoint_in_the_same_sweep(slurm_cluster, tmp_path, signal_name):
    """Slurm signals a trial's job (as before preempting it, or submitit's USR2 before its time limit): the job
    saves model.pt and ends interrupted, and the sweep, still running, continues that trial in a new job from its
    model.pt, to the configured epochs, each epoch once."""
    epochs = 5
    args = [
        sys.executable, "-m", "vae_sweep", "--multirun", "sweep=elbo", "debug=tiny", f"epochs={epochs}",
        "max_batches=30", "eval.pictures=false", "hydra/launcher=submitit_slurm",
        f"hydra.launcher.partition={slurm_cluster.partition}", "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.timeout_min=5", "hydra.sweeper.n_trials=1", "hydra.sweep.dir=multirun/slurm",
    ]  # fmt: skip
    proc = subprocess.Popen(
        args, cwd=tmp_path, env=slurm_cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    history = tmp_path / "multirun" / "slurm" / "0" / "history.csv"
    try:
        for _ in range(240):  # until trial 0 has an epoch behind it: at most 120 s
            if history.is_file() and len(history.read_text().splitlines()) >= 2:
                break
            time.sleep(0.5)
        job = json.loads((tmp_path / "multirun" / "slurm" / "0" / "metrics.json").read_text())
        assert job["status"] == "running"
        jobs = slurm_cluster.run(["squeue", "-h", "-o", "%i"], timeout=30).stdout.split()
        assert len(jobs) == 1
        slurm_cluster.run(["scancel", f"--signal={signal_name}", jobs[0]], timeout=30)
        out, _ = proc.communicate(timeout=240)
    finally:
        proc.kill()
    assert proc.returncode == 0, out[-3000:]
    storage = f"sqlite:///{tmp_path}/multirun/elbo.db"
    (name,) = optuna.get_all_study_names(storage)
    first, second = optuna.load_study(study_name=name, storage=storage).trials
    assert first.user_attrs["status"] == "interrupted"
    assert second.state == optuna.trial.TrialState.COMPLETE
    assert second.user_attrs["resume_of"] == 0 and second.params == first.params
    stopped = json.loads((tmp_path / "multirun" / "slurm" / "0" / "metrics.json").read_text())
    assert stopped["status"] == "interrupted" and stopped["signal"] == f"SIG{signal_name}"
    done = tmp_path / "multirun" / "slurm" / "1"
    final = json.loads((done / "metrics.json").read_text())
    assert final["status"] == "completed" and final["epochs"] == epochs
    assert Path(final["resumed_from"]).resolve() == (tmp_path / "multirun" / "slurm" / "0").resolve()
    rows = (done / "history.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(1, epochs + 1))


def cluster_commands() -> list[str]:
    """The `python -m vae_sweep` lines of the README's "On a cluster" console blocks, continuations joined."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## On a cluster\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```console\n(.*?)```", section, re.S)
    lines = [" ".join(b.replace("\\\n", " ").split()) for b in blocks]
    return [line for line in lines if line.startswith("python -m vae_sweep")]


@pytest.mark.slow
def test_the_readme_cluster_commands_run_as_written_on_this_cluster(slurm_cluster, postgres_db_url, tmp_path):
    """Each command of "On a cluster", with only what a user fills in replaced (the server's URL, the partition, a
    job's size to fit this one-node cluster) and the trials made small, fills its PostgreSQL study."""
    from sqlalchemy.engine import make_url
    from test_readme import SHRINK

    commands = cluster_commands()
    assert len(commands) == 2, commands
    filled = {
        "postgresql+psycopg://user:password@dbhost/vae": postgres_db_url,
        "$(hostname)": socket.gethostname(),
        "partition=cpu": f"partition={slurm_cluster.partition}",
        "cpus_per_task=4": "cpus_per_task=1",
        "mem_gb=8": "mem_gb=2",
    }
    logs = []
    for i, line in enumerate(commands):  # the second tops the study up by two trials, as Slurm jobs
        for placeholder, value in filled.items():
            line = line.replace(placeholder, value)
        assert "user:password" not in line and "$(" not in line, line
        args = [sys.executable, *shlex.split(line)[1:], *SHRINK, f"hydra.sweeper.n_trials={2 * (i + 1)}"]
        res = slurm_cluster.run(args, timeout=300, cwd=tmp_path)
        assert res.returncode == 0, f"{line}\n{res.stderr[-3000:]}"
        logs.append(res.stdout + res.stderr)
    password = make_url(postgres_db_url).password
    assert password and f":{password}@" not in "".join(logs) and ":***@" in logs[0]  # printed with *** for it
    (name,) = optuna.get_all_study_names(postgres_db_url)
    study = optuna.load_study(study_name=name, storage=postgres_db_url)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 4
    assert sorted(map(int, re.findall(r"trial (\d+): Slurm job \d+:", logs[1]))) == [2, 3]
