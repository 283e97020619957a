"""Pruning (hydra/sweeper/pruner=...): jobs report their validation objective after each epoch to their study trial,
through the handle the sweeper passes as overrides, and stop when the pruner says so. Run as a user runs them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from helpers import cli

FAST = ["epochs=4", "max_batches=3", "eval.iwae_k=2", "eval.pictures=false"]
# Prune from the third trial on, from the first epoch: a tiny sweep then prunes some trials.
MEDIAN = [
    "hydra/sweeper/pruner=median",
    "hydra.sweeper.pruner.n_startup_trials=2",
    "hydra.sweeper.pruner.n_warmup_steps=0",
]

pytestmark = pytest.mark.slow


def elbo_sweep(tmp_path: Path, n_trials: int, *extra: str):
    res = cli(
        [
            "--multirun",
            "sweep=elbo",
            f"hydra.sweep.dir={tmp_path}/s",
            f"hydra.sweeper.n_trials={n_trials}",
            f"hydra.sweeper.storage=sqlite:///{tmp_path}/study.db",
            *FAST,
            *MEDIAN,
            *extra,
        ],
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    (summary,) = optuna.get_all_study_summaries(f"sqlite:///{tmp_path}/study.db")
    return optuna.load_study(study_name=summary.study_name, storage=f"sqlite:///{tmp_path}/study.db").trials


def check_study_and_run_dirs_agree(tmp_path: Path, trials: list) -> None:
    for t in trials:
        run_dir = tmp_path / "s" / str(t.number)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        with open(run_dir / "history.csv") as f:
            history = list(csv.DictReader(f))
        assert metrics["status"] == t.user_attrs["status"] == {TrialState.PRUNED: "pruned"}.get(t.state, "completed")
        assert metrics["epochs"] == len(history)
        if t.state == TrialState.PRUNED:
            last = max(t.intermediate_values)
            assert last == metrics["epochs"] < 4  # it stopped early, right after the epoch it last reported
            assert t.value == t.intermediate_values[last] == metrics["neg_elbo"] == float(history[-1]["val_neg_elbo"])
            assert {"distortion", "rate", "mse"} <= set(metrics) and "iwae_nll" not in metrics
        else:
            assert metrics["epochs"] == 4 and t.value == metrics["neg_elbo"]
            assert sorted(t.intermediate_values) == [1, 2, 3, 4]  # every epoch, the last too: the learning curve


def test_an_elbo_sweep_with_a_pruner_prunes_and_the_study_and_run_dirs_agree(tmp_path):
    trials = elbo_sweep(tmp_path, 8)
    states = [t.state for t in trials]
    assert len(trials) == 8 and TrialState.PRUNED in states and TrialState.COMPLETE in states, states
    assert set(states) <= {TrialState.PRUNED, TrialState.COMPLETE}
    check_study_and_run_dirs_agree(tmp_path, trials)
    from vae_sweep.analysis.frame import load_sweep, status_counts

    pruned = states.count(TrialState.PRUNED)
    for source in (tmp_path / "s", f"sqlite:///{tmp_path}/study.db"):  # the analysis counts them, from either side
        assert status_counts(load_sweep(source))["pruned"] == pruned
    config = (tmp_path / "s" / "0" / ".hydra" / "config.yaml").read_text()
    assert "trial:" in config and f"storage: sqlite:///{tmp_path}/study.db" in config  # the handle, for the record


def test_pruning_under_the_joblib_launcher(tmp_path):
    """Trials in other processes: the handle is overrides, not an object, so it crosses."""
    trials = elbo_sweep(tmp_path, 6, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert len(trials) == 6 and TrialState.PRUNED in {t.state for t in trials}
    check_study_and_run_dirs_agree(tmp_path, trials)


def test_a_pruner_with_two_objectives_is_refused_before_any_trial(tmp_path):
    res = cli(["--multirun", "hydra/sweeper/pruner=hyperband", f"hydra.sweep.dir={tmp_path}/s", *FAST], cwd=tmp_path)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1] == (
        "error: hydra/sweeper/pruner=hyperband: Optuna prunes single-objective studies only (there is no median of 2 "
        "objectives); use hydra/sweeper/pruner=none, or one objective (sweep=elbo)"
    )
    assert not list(tmp_path.glob("s/*/metrics.json"))


def test_a_bad_pruner_setting_is_refused_in_one_line(tmp_path):
    res = cli(
        [
            "--multirun",
            "sweep=elbo",
            "hydra/sweeper/pruner=median",
            "+hydra.sweeper.pruner.patience=3",
            f"hydra.sweep.dir={tmp_path}/s",
            *FAST,
        ],
        cwd=tmp_path,
    )
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1] == (
        "error: hydra/sweeper/pruner=median: MedianPruner.__init__() got an unexpected keyword argument 'patience'"
    )
