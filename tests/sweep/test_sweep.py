"""Sweeps as a user runs them: subprocesses into a temporary folder, checked through their files and the study."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from helpers import cli
from vae_sweep.runtime import cpu_count
from vae_sweep.sweep.resumption import resumable

FAST = ["debug=tiny", "eval.pictures=false"]


def sweep_args(tmp_path: Path, name: str, n_trials: int, *extra: str) -> list[str]:
    return [
        "--multirun",
        f"hydra.sweep.dir={tmp_path}/{name}",
        f"hydra.sweeper.storage=sqlite:///{tmp_path}/study.db",
        f"hydra.sweeper.n_trials={n_trials}",
        *FAST,
        *extra,
    ]


def load_trials(tmp_path: Path) -> list[optuna.trial.FrozenTrial]:
    """The trials of the one study in tmp_path/study.db (each test runs one experiment, so one study)."""
    url = f"sqlite:///{tmp_path}/study.db"
    names = [s.study_name for s in optuna.get_all_study_summaries(url)]
    assert len(names) == 1, names
    return optuna.load_study(study_name=names[0], storage=url).trials


def param_sets(trials) -> list[tuple]:
    return [tuple(sorted(t.params.items())) for t in trials]


def test_default_sweep_samples_with_gp_and_prunes_nothing():
    """The pareto sweep's sampler is the one benchmarks/sampler_choice.py measured best: optuna 5's GPSampler
    (log expected hypervolume improvement for two objectives)."""
    from hydra import compose, initialize_config_dir

    from helpers import CONF

    with initialize_config_dir(config_dir=str(CONF)):
        sweeper = compose(config_name="config", overrides=["sweep=pareto"], return_hydra_config=True).hydra.sweeper
    assert sweeper.sampler._target_ == "optuna.samplers.GPSampler"
    assert (sweeper.sampler.seed, sweeper.sampler.n_startup_trials) == (0, 10)
    assert sweeper.pruner._target_ == "optuna.pruners.NopPruner"
    assert (sweeper.heartbeat_interval, sweeper.grace_period) == (10, 30)


@pytest.mark.slow
def test_tiny_sweep(tmp_path):
    res = cli(sweep_args(tmp_path, "s", 4, "eval.pictures=true"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "Warning" not in res.stderr  # e.g. an experimental or deprecated sampler, from a default we chose
    sweep_dir = tmp_path / "s"
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert results["name"] == "optuna" and len(results["solutions"]) >= 1
    assert set(results["solutions"][0]["params"]) == {"beta", "latent_dim", "lr"}
    trials = load_trials(tmp_path)
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    for t in trials:
        metrics = json.loads((sweep_dir / str(t.number) / "metrics.json").read_text())
        assert metrics["status"] == "completed" and metrics["threads"] == cpu_count()
        assert t.values == [metrics["distortion"], metrics["rate"]]
        assert t.user_attrs["metrics"]["neg_elbo"] == metrics["neg_elbo"]
        assert t.user_attrs["metrics"]["run_dir"] == str(sweep_dir / str(t.number))
        assert metrics["beta"] == t.params["beta"] and 1e-3 <= t.params["beta"] <= 10
        assert (sweep_dir / str(t.number) / "reconstructions.png").exists()
    assert "## Pareto set" in (sweep_dir / "summary.md").read_text()


@pytest.mark.slow
def test_diverging_trials_are_failed_and_the_sweep_goes_on(tmp_path):
    args = sweep_args(tmp_path, "s", 6, "optimizer=sgd", "lr=choice(1e-3,1e6)", "hydra.sweeper.max_failure_rate=1.0")
    res = cli(args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    trials = load_trials(tmp_path)
    assert len(trials) == 6
    for t in trials:
        metrics = json.loads((tmp_path / "s" / str(t.number) / "metrics.json").read_text())
        if t.params["lr"] == 1e6:
            assert t.state == TrialState.FAIL and t.user_attrs["status"] == metrics["status"] == "diverged"
        else:
            assert t.state == TrialState.COMPLETE and metrics["status"] == "completed"
    assert {t.state for t in trials} == {TrialState.FAIL, TrialState.COMPLETE}


@pytest.mark.slow
def test_failure_budget_stops_the_sweep_with_a_reason(tmp_path):
    args = sweep_args(tmp_path, "s", 10, "optimizer=sgd", "lr=choice(1e6)", "hydra.sweeper.max_failure_rate=0.2")
    res = cli(args, cwd=tmp_path)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert (
        res.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "error: sweep stopped: 3 trials failed, more than hydra.sweeper.max_failure_rate=0.2 of n_trials=10 allows"
        )
    )
    assert len(load_trials(tmp_path)) == 3


@pytest.mark.slow
def test_bad_search_space_is_refused_before_any_trial(tmp_path):
    res = cli(sweep_args(tmp_path, "s", 3, "beta=interval(-1.0,1.0)"), cwd=tmp_path)
    assert res.returncode != 0
    assert res.stderr.strip().splitlines()[-1] == (
        "error: beta=interval(-1.0,1.0) reaches -1.0: beta=-1.0: must be a number >= 0"
    )
    assert not (tmp_path / "s").exists() and not (tmp_path / "study.db").exists()  # refused before Hydra started


def wait_for(predicate, timeout: float = 600.0) -> None:
    end = time.time() + timeout
    while not predicate():
        assert time.time() < end, "timed out"
        time.sleep(0.2)


def completed_runs(sweep_dir: Path) -> int:
    return sum('"completed"' in p.read_text() for p in sweep_dir.glob("*/metrics.json"))


def mid_trial(tmp_path: Path, sweep_dir: Path) -> bool:
    """Two trials done, and the study holds a RUNNING trial whose job has started (its metrics.json says running):
    a signal now lands inside a trial, not between two. The files are checked first, the study only then."""
    runs = {p.parent.name: p.read_text() for p in sweep_dir.glob("*/metrics.json")}
    started = {int(n) for n, text in runs.items() if '"running"' in text}
    if sum('"completed"' in text for text in runs.values()) < 2 or not started:
        return False
    return any(t.state == TrialState.RUNNING and t.number in started for t in load_trials(tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_killed_sweep_resumes_to_exactly_n_trials(tmp_path, sig):
    """A SIGKILL leaves the trial RUNNING: the rerun finds its heartbeat stale and marks it interrupted."""
    # a few seconds a trial, so the wait below sees one running
    slow = ["max_batches=30", "epochs=8", "hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=3"]
    args = [sys.executable, "-m", "vae_sweep", *sweep_args(tmp_path, "first", 5, *slow)]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: mid_trial(tmp_path, tmp_path / "first"))
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    before = {t.number: t for t in load_trials(tmp_path) if t.state == TrialState.COMPLETE}
    assert len(before) >= 2

    res = cli(sweep_args(tmp_path, "second", 5, *slow), cwd=tmp_path)  # the same command, run again
    assert res.returncode == 0, res.stderr
    trials = load_trials(tmp_path)
    finished = [t for t in trials if t.user_attrs.get("status") != "interrupted"]
    interrupted = [t for t in trials if t.user_attrs.get("status") == "interrupted"]
    assert len(finished) == 5 and all(t.state == TrialState.COMPLETE for t in finished)
    assert len(interrupted) == 1 and interrupted[0].state == TrialState.FAIL
    for number, t in before.items():  # no completed trial lost or changed
        assert trials[number].state == TrialState.COMPLETE and trials[number].values == t.values
    # the seeded sampler drew no point twice; a trial that continues the interrupted one (from its model.pt, when it
    # had finished an epoch) takes its parameters
    continued = [t for t in finished if t.user_attrs.get("resume_of") == interrupted[0].number]
    assert len(set(param_sets(finished))) == len(finished) and len(set(param_sets(trials))) == 6 - len(continued)
    assert len(continued) == (resumable(tmp_path / "first" / str(interrupted[0].number) / "model.pt") is not None)
    assert len(list((tmp_path / "second").glob("*/metrics.json"))) == 5 - len(before)  # nothing ran twice
    if sig == signal.SIGKILL:
        assert "stopped beating (their process died): marked interrupted" in res.stderr + res.stdout


@pytest.mark.slow
def test_rerun_tops_up_and_a_full_study_runs_nothing(tmp_path):
    assert cli(sweep_args(tmp_path, "a", 2), cwd=tmp_path).returncode == 0
    assert cli(sweep_args(tmp_path, "b", 4), cwd=tmp_path).returncode == 0
    assert cli(sweep_args(tmp_path, "c", 4), cwd=tmp_path).returncode == 0
    trials = load_trials(tmp_path)
    assert len(trials) == 4 and len(set(param_sets(trials))) == 4
    assert sorted(p.name for p in (tmp_path / "b").iterdir() if p.is_dir()) == ["2", "3"]
    assert not [p for p in (tmp_path / "c").iterdir() if p.is_dir()]


@pytest.mark.slow
def test_two_processes_share_one_study(tmp_path):
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "vae_sweep", *sweep_args(tmp_path, name, 8, "max_batches=10")],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    trials = load_trials(tmp_path)
    runs = {name: sorted(int(p.name) for p in (tmp_path / name).glob("*") if p.is_dir()) for name in ("a", "b")}
    assert len(trials) == 8 and all(t.state == TrialState.COMPLETE for t in trials)
    assert sorted(runs["a"] + runs["b"]) == list(range(8))  # every trial ran exactly once, in one process
    assert len(set(param_sets(trials))) == 8


@pytest.mark.slow
def test_parallel_trials_share_the_cores(tmp_path):
    res = cli(sweep_args(tmp_path, "s", 2, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    threads = [json.loads(p.read_text())["threads"] for p in (tmp_path / "s").glob("*/metrics.json")]
    parallel = min(2, cpu_count())
    assert threads == [max(1, cpu_count() // parallel)] * 2
    assert len(load_trials(tmp_path)) == 2


@pytest.mark.slow
def test_grid_sweep_with_the_basic_sweeper(tmp_path):
    res = cli(["--multirun", "sweep=grid", f"hydra.sweep.dir={tmp_path}/g", "beta=0.1,4", *FAST], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    betas = sorted(json.loads(p.read_text())["beta"] for p in (tmp_path / "g").glob("*/metrics.json"))
    assert betas == [0.1, 4.0]


@pytest.mark.slow
def test_searching_beta_with_a_loss_that_ignores_it_is_refused(tmp_path):
    res = cli(sweep_args(tmp_path, "s", 3, "loss=elbo"), cwd=tmp_path)
    assert res.returncode != 0
    assert res.stderr.strip().splitlines()[-1] == (
        "error: hydra.sweeper.params.beta: no config group reads it "
        "(loss=elbo, model=mlp); use loss=beta to search beta"
    )
