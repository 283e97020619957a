"""The sweep loop's pieces in process, against real SQLite studies: recording a trial, per-trial seeding, threads per
parallel trial, exact counts, and the heartbeat. The subprocess tests in test_sweep.py run them together."""

from __future__ import annotations

import json
import time
from pathlib import Path

import optuna
import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from optuna.trial import TrialState

from vae_sweep import runtime
from vae_sweep.sweep.record import record
from vae_sweep.sweep.study import INTERRUPTED, counts, fail_stale, heartbeat, make_storage
from vae_sweep.sweep.sweeper import VaeOptunaSweeperImpl, parallelism
from vae_sweep.sweep.trial import handle_overrides, refusal


def study_at(tmp_path, directions=("minimize", "minimize")) -> optuna.Study:
    storage = make_storage(f"sqlite:///{tmp_path}/s.db")
    return optuna.create_study(study_name="s", storage=storage, directions=list(directions), load_if_exists=True)


def job_return(run_dir, value=None, error: Exception | None = None, metrics: dict | None = None) -> JobReturn:
    run_dir.mkdir(parents=True, exist_ok=True)
    if metrics is not None:
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
    cfg = OmegaConf.create({"hydra": {"runtime": {"output_dir": str(run_dir)}}})
    if error is not None:
        return JobReturn(hydra_cfg=cfg, status=JobStatus.FAILED, _return_value=error)
    return JobReturn(hydra_cfg=cfg, status=JobStatus.COMPLETED, _return_value=value)


def sweeper(sampler: dict, n_trials: int = 3, storage: str | None = None) -> VaeOptunaSweeperImpl:
    impl = VaeOptunaSweeperImpl(
        sampler=OmegaConf.create(sampler),
        direction=["minimize", "minimize"],
        storage=storage,
        study_name="s",
        n_trials=n_trials,
        n_jobs=1,
        max_failure_rate=0.0,
    )
    impl.config = OmegaConf.create({})
    impl._dists = {}
    return impl


@pytest.mark.parametrize("how", ["completed", "diverged", "failed", "pruned", "wrong_arity", "not_a_number"])
def test_record_tells_the_study_how_the_trial_ended(tmp_path, how):
    study = study_at(tmp_path, ("minimize",) if how == "pruned" else ("minimize", "minimize"))
    trial = study.ask()
    run = tmp_path / "run"
    if how == "completed":
        ret = job_return(run, (2.0, 3.0), metrics={"status": "completed", "neg_elbo": 5.0, "kl_per_dim": [1.0]})
    elif how == "diverged":
        ret = job_return(run, (float("nan"), 3.0), metrics={"status": "diverged"})
    elif how == "failed":
        ret = job_return(run, error=RuntimeError("out of memory"), metrics={"status": "failed"})
    elif how == "pruned":
        trial.report(7.0, step=1)
        ret = job_return(run, 7.0, metrics={"status": "pruned", "epochs": 1, "neg_elbo": 7.0})
    else:
        ret = job_return(run, 2.0 if how == "wrong_arity" else "abc", metrics={"status": "completed"})
    state = record(study, trial, ret, len(study.directions))
    (frozen,) = study.trials
    expected = {"completed": TrialState.COMPLETE, "pruned": TrialState.PRUNED}.get(how, TrialState.FAIL)
    assert state == frozen.state == expected
    # the run said completed, with objectives the sweeper cannot use: it failed the trial
    status = {"wrong_arity": "completed", "not_a_number": "completed"}.get(how, how)
    assert frozen.user_attrs["status"] == status and frozen.user_attrs["metrics"]["run_dir"] == str(run)
    if how == "completed":
        assert frozen.values == [2.0, 3.0] and frozen.user_attrs["metrics"]["neg_elbo"] == 5.0
        assert "kl_per_dim" not in frozen.user_attrs["metrics"]  # lists stay in metrics.json
    if how == "failed":
        assert frozen.user_attrs["error"] == "RuntimeError: out of memory"
    if how == "pruned":
        assert frozen.value == 7.0  # optuna takes the last reported value


def test_each_trial_reseeds_the_sampler_from_seed_and_trial_number():
    def draws(seed: int, numbers: range) -> list[float]:
        impl = sweeper({"_target_": "optuna.samplers.RandomSampler", "seed": seed})
        study = optuna.create_study()
        out = []
        for n in numbers:
            study.sampler = impl._sampler(n)
            out.append(study.ask().suggest_float("x", 0, 1))
        return out

    assert draws(0, range(4)) == draws(0, range(4))  # a resumed study draws what it would have drawn
    assert len(set(draws(0, range(4)))) == 4
    assert draws(1, range(0, 3))[:2] != draws(0, range(1, 4))[:2]  # seed 1 is not seed 0 one trial on
    unseeded = sweeper({"_target_": "optuna.samplers.RandomSampler", "seed": None})._sampler(0)
    assert isinstance(unseeded, optuna.samplers.RandomSampler)


@pytest.mark.parametrize(
    ("cores", "n_jobs", "threads", "expected"),
    [
        (2, 1, None, (1, 2)),
        (2, 2, None, (2, 1)),
        (2, 8, None, (2, 1)),
        (8, 3, None, (3, 2)),
        (4, -1, None, (4, 1)),
        (4, None, None, (4, 1)),
        (2, 1, 1, (1, 1)),
        (8, 2, 2, (2, 2)),
        (8, 2, 16, (2, 4)),
    ],
)
def test_parallel_trials_share_the_cores(monkeypatch, cores, n_jobs, threads, expected):
    monkeypatch.setattr(runtime, "cpu_count", lambda: cores)
    assert parallelism(n_jobs, threads) == expected


def test_ask_counts_exactly_and_interrupted_trials_do_not_count(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    impl = sweeper({"_target_": "optuna.samplers.RandomSampler", "seed": 0}, n_trials=3, storage=url)
    study = optuna.create_study(study_name="s", storage=make_storage(url, (60, 120)), directions=["minimize"] * 2)
    first = impl._ask(study, {}, {}, [], parallel=5)
    assert len(first) == 3  # the study's size, not the batch's
    assert all(t.user_attrs["status"] == INTERRUPTED for t in study.trials)  # until recorded
    assert all(counts(t) for t in study.trials)  # running trials count
    assert impl._ask(study, {}, {}, [], parallel=5) == []
    trial, _ = first[0]
    study.tell(trial, state=TrialState.FAIL)  # as Ctrl-C or a stale heartbeat leaves it: still `interrupted`
    assert not counts(study.trials[0])
    (again,) = impl._ask(study, {}, {}, [], parallel=5)
    assert again[0].number == 3


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])  # slow: starts a server
def storage_url(request, tmp_path) -> str:
    """A fresh study database: a SQLite file, or a PostgreSQL database (the one that several hosts share)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/s.db"
    return request.getfixturevalue("postgres_db_url")


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")  # the sweeper asks under the same filter
def test_a_trial_that_stops_beating_is_failed_as_interrupted_and_one_that_beats_is_not(storage_url):
    storage = make_storage(storage_url, (1, 2))
    study = optuna.create_study(study_name="s", storage=storage, directions=["minimize", "minimize"])
    dead, alive = study.ask(), study.ask()
    for t in (dead, alive):
        t.set_user_attr("status", INTERRUPTED)
        storage.record_heartbeat(t._trial_id)
    with heartbeat(study, [alive._trial_id]):
        time.sleep(3.5)
        other_host = optuna.load_study(study_name="s", storage=make_storage(storage_url, (1, 2)))
        fail_stale(other_host)  # as the next sweep, on any machine, would
    states = {t.number: (t.state, t.user_attrs["status"]) for t in study.trials}
    assert states == {0: (TrialState.FAIL, INTERRUPTED), 1: (TrialState.RUNNING, INTERRUPTED)}
    assert [counts(t) for t in study.trials] == [False, True]


def test_recording_a_trial_that_a_peer_failed_as_stale_keeps_it_interrupted(tmp_path):
    """Heartbeats held up beyond the grace period (a very busy database): a peer failed the live trial. Recording
    its result must not crash the sweep; the trial stays interrupted and does not count."""
    study = study_at(tmp_path)
    trial = study.ask()
    trial.set_user_attr("status", INTERRUPTED)
    study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)  # as fail_stale_trials does
    ret = job_return(tmp_path / "run", (2.0, 3.0), metrics={"status": "completed"})
    assert record(study, trial, ret, 2) == TrialState.FAIL
    (frozen,) = study.trials
    assert frozen.state == TrialState.FAIL and frozen.user_attrs["status"] == INTERRUPTED and not counts(frozen)


@pytest.mark.parametrize(
    ("pruner", "n_objectives", "objective", "storage", "refused"),
    [
        (optuna.pruners.NopPruner(), 2, "distortion", None, None),  # pruner=none works anywhere
        (optuna.pruners.MedianPruner(), 1, "neg_elbo", "sqlite:///s.db", None),
        (optuna.pruners.MedianPruner(), 1, "iwae_nll", "sqlite:///s.db", None),  # reports the ELBO, its bound
        (optuna.pruners.HyperbandPruner(), 2, "distortion", "sqlite:///s.db", "single-objective studies only"),
        (optuna.pruners.MedianPruner(), 1, "curve_hypervolume", "sqlite:///s.db", "no value after each epoch"),
        (optuna.pruners.MedianPruner(), 1, "neg_elbo", None, "hydra.sweeper.storage is null"),
    ],
)
def test_a_pruner_that_cannot_work_is_refused_with_the_reason(pruner, n_objectives, objective, storage, refused):
    why = refusal(pruner, n_objectives, objective, storage)
    assert why is None if refused is None else refused in why


def test_the_job_handle_is_overrides_that_hydra_parses_back(tmp_path):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    name = "elbo[debug=tiny,objectives=[iwae_nll]]"
    parsed = OverridesParser.create().parse_overrides(list(handle_overrides("sqlite:///multirun/elbo.db", name, 7)))
    values = {o.key_or_group: o.value() for o in parsed}
    assert values["trial.study"] == name and values["trial.number"] == 7
    assert values["trial.storage"] == f"sqlite:///{Path('multirun/elbo.db').resolve()}"  # absolute: any cwd


def test_the_grid_sampler_gets_the_search_space_and_caps_n_trials():
    impl = sweeper({"_target_": "optuna.samplers.GridSampler", "_partial_": True, "seed": 0}, n_trials=30)
    impl._dists = {
        "latent_dim": optuna.distributions.CategoricalDistribution([2, 4, 8]),
        "lr": optuna.distributions.CategoricalDistribution([1e-3, 3e-3]),
    }
    assert isinstance(impl._sampler(0), optuna.samplers.GridSampler) and impl.n_trials == 6
