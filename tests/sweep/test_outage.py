"""A storage outage and dead workers, in process against real SQLite studies: every call outlasts a short outage,
a long one ends in one line naming the storage (password hidden), a trial that never beat goes stale after the grace
period, and every wait for others' trials has a limit. The restart of a real PostgreSQL server is the last test."""

from __future__ import annotations

import time

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState
from test_sweeper_units import sweeper

from vae_sweep.errors import SweepStopped
from vae_sweep.sweep.outage import StorageLost, retrying
from vae_sweep.sweep.study import INTERRUPTED, fail_stale, heartbeat, make_storage


def outage(failures: int):
    """A call that finds the database away `failures` times, then answers 42."""
    calls = []

    def call() -> int:
        calls.append(time.monotonic())
        if len(calls) <= failures:
            raise sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection"))
        return 42

    return call, calls


def test_a_short_outage_is_outlasted_with_backoff():
    call, calls = outage(2)
    assert retrying(call, "sqlite:///x.db", retry_seconds=10) == 42
    waits = [b - a for a, b in zip(calls, calls[1:])]
    assert len(calls) == 3 and 0.4 < waits[0] < waits[1]  # 0.5 s, then 1 s


def test_a_long_outage_ends_in_one_line_naming_the_storage_without_its_password():
    call, calls = outage(10**6)
    url = "postgresql+psycopg://vae:secret@db.example:5432/vae"
    start = time.monotonic()
    with pytest.raises(StorageLost) as e:
        retrying(call, url, retry_seconds=2)
    assert time.monotonic() - start < 4 and 2 <= len(calls) <= 4
    message = str(e.value)
    assert message.startswith("error: sweep stopped: the study's storage postgresql+psycopg://vae:***@db.example:5432")
    assert "secret" not in message and "\n" not in message and "storage_retry_seconds" in message
    assert isinstance(e.value, SweepStopped)  # the sweeper's entry point prints it as it is


def test_a_wrong_request_is_not_retried():
    def wrong() -> None:
        raise ValueError("no such study")

    with pytest.raises(ValueError):
        retrying(wrong, "sqlite:///x.db", retry_seconds=10)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_a_trial_that_never_beat_goes_stale_after_the_grace_period(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(study_name="s", storage=make_storage(url, (1, 1)))
    never = study.ask()  # its process died before its first beat
    never.set_user_attr("status", INTERRUPTED)
    fail_stale(study)
    assert study.trials[0].state == TrialState.RUNNING  # too young to call dead
    time.sleep(1.5)
    fresh = study.ask()
    fail_stale(optuna.load_study(study_name="s", storage=make_storage(url, (1, 1))))  # as the next run would
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.RUNNING]
    assert study.trials[0].user_attrs["status"] == INTERRUPTED and fresh.number == 1


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_waiting_for_others_trials_has_a_limit_and_says_what_is_left(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    impl = sweeper({"_target_": "optuna.samplers.RandomSampler", "seed": 0}, n_trials=1, storage=url)
    impl.wait_seconds = 1.0
    study = optuna.create_study(study_name="s", storage=make_storage(url, (1, 30)), directions=["minimize"] * 2)
    (other, _), *_ = impl._ask(study, {}, {}, [], parallel=1)  # another worker's trial, alive: it beats
    start = time.monotonic()
    with heartbeat(study, [other._trial_id]), pytest.raises(SweepStopped) as e:
        impl._next_batch(study, {}, {}, [], parallel=1)
    assert 1 <= time.monotonic() - start < 5
    assert str(e.value).startswith(
        "error: sweep stopped: waited 1 s (hydra.sweeper.wait_seconds) for trial(s) [0] running elsewhere; "
        "the study has 0 of n_trials=1 finished"
    )
