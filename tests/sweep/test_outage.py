"""A storage outage and dead workers, in process against real SQLite studies: every call outlasts a short outage,
a long one ends in one line naming the storage (password hidden), a trial that never beat goes stale after the grace
period, and every wait for others' trials has a limit. A real PostgreSQL server going away is the last test."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState
from test_sweeper_units import sweeper

from vae_sweep.errors import SweepStopped
from vae_sweep.sweep.outage import StorageLost, retrying, unreachable
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


def test_a_lost_connection_found_inside_optunas_fallback_query_is_retried():
    """optuna's `_get_trials` catches an OperationalError and queries again in the same session: the second query
    raises PendingRollbackError, wrapped in StorageInternalError. That is the database going away, not a wrong
    request (a CI run once stopped a worker on it)."""
    try:
        raise sqlalchemy.exc.OperationalError("SELECT", {}, Exception("terminating connection"))
    except sqlalchemy.exc.OperationalError:
        try:
            try:
                raise sqlalchemy.exc.PendingRollbackError("Can't reconnect until invalid transaction is rolled back")
            except sqlalchemy.exc.PendingRollbackError as second:
                raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from second
        except optuna.exceptions.StorageInternalError as e:
            lost = e
    try:
        raise optuna.exceptions.StorageInternalError("commit") from sqlalchemy.exc.IntegrityError("INSERT", {}, None)
    except optuna.exceptions.StorageInternalError as e:
        wrong = e
    assert unreachable(lost) and not unreachable(wrong)


@pytest.mark.slow
def test_a_storage_whose_connection_the_server_ends_mid_query_answers_on_a_retry(postgres_db_url):
    """A real PostgreSQL server ends the study's connection just as optuna's `_get_trials` queries (as a server
    shutting down does): its fallback query then fails too, and the call is answered on a retry."""
    storage = make_storage(postgres_db_url, retry_seconds=30)
    study = optuna.create_study(study_name="s", storage=storage)
    first, second = study.ask(), study.ask()
    killer = sqlalchemy.create_engine(postgres_db_url, isolation_level="AUTOCOMMIT")
    armed = []

    def end_connections_once(conn, cursor, statement, *args) -> None:
        if armed and statement.lstrip().startswith("SELECT trials.trial_id"):
            armed.clear()
            with killer.connect() as k:
                k.execute(
                    sqlalchemy.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                )

    sqlalchemy.event.listen(storage.engine, "before_cursor_execute", end_connections_once)
    try:
        armed.append(True)
        trials = storage._get_trials(study._study_id, None, {first._trial_id}, second._trial_id - 1)
    finally:
        killer.dispose()
        storage.engine.dispose()
    assert not armed  # the connection was ended mid-call
    assert [t.number for t in trials] == [0, 1]


@pytest.fixture
def own_postgres():
    """A PostgreSQL server of this test's own (never the shared one: this test stops it): (URL, its data dir)."""
    from helpers.services import free_port, pg_driver, run_script

    if pg_driver() is None or os.geteuid() != 0 or not glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"):
        pytest.skip("needs root, an installed PostgreSQL and its driver (as CI has)")
    svc_dir = tempfile.mkdtemp(prefix="vae_sweep_pg_restart_")
    env = {**os.environ, "VAE_SWEEP_SERVICES_DIR": svc_dir, "VAE_SWEEP_PG_PORT": str(free_port())}
    env["VAE_SWEEP_PG_DRIVER"] = pg_driver()
    try:
        res = run_script("postgres.sh", "start", env, 180)
        assert res.returncode == 0, res.stderr
        yield res.stdout.strip().splitlines()[-1], Path(svc_dir) / "pg" / "data"
    finally:
        run_script("postgres.sh", "stop", env, 120)


def stop_for(data: Path, port: int, seconds: float) -> None:
    """Stop the server (`pg_ctl stop -m fast`: every connection is dropped), wait `seconds`, start it again."""
    (pg_ctl,) = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))[-1:]
    as_pg = ["runuser", "-u", "postgres", "--", pg_ctl, "-D", str(data), "-w", "-t", "60"]
    quiet = {"check": True, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "timeout": 90}
    subprocess.run([*as_pg, "stop", "-m", "fast"], **quiet)
    time.sleep(seconds)
    # the server's output goes to its log: a pipe would be held open by the postmaster
    subprocess.run([*as_pg, "start", "-l", str(data.parent / "postgres.log"), "-o", f"-p {port}"], **quiet)


@pytest.mark.slow
def test_two_workers_outlast_their_postgresql_server_going_away_for_seconds(tmp_path, own_postgres):
    url, data = own_postgres
    n_trials = 10
    args = [
        "--multirun",
        "sweep=elbo",
        "debug=tiny",
        "epochs=2",
        "max_batches=5",
        "eval.pictures=false",
        "eval.iwae_k=2",
        "threads=1",
        f"hydra.sweeper.storage={url}",
        f"hydra.sweeper.n_trials={n_trials}",
        "hydra.sweeper.heartbeat_interval=1",
        "hydra.sweeper.grace_period=10",
        "hydra.sweeper.storage_retry_seconds=60",
        "hydra.sweeper.artifact_dir=null",
    ]
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "vae_sweep", *args, f"hydra.sweep.dir={tmp_path / name}"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    try:
        end = time.monotonic() + 300
        while len(list(tmp_path.glob("*/*/history.csv"))) < 3:  # a few trials in: both workers are at work
            assert time.monotonic() < end and all(w.poll() is None for w in workers), "the workers did not start"
            time.sleep(0.1)
        stop_for(data, sqlalchemy.engine.make_url(url).port, seconds=4)
        results = [w.communicate(timeout=300) for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    for w, (_, err) in zip(workers, results):
        assert w.returncode == 0 and "Traceback" not in err, err
    logs = "".join(out + err for out, err in results)
    assert "does not answer" in logs and "answers again" in logs  # the outage was met, and outlasted
    (summary,) = optuna.get_all_study_summaries(url)
    trials = optuna.load_study(study_name=summary.study_name, storage=url).trials
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    finished = [t for t in trials if t.user_attrs.get("status") != INTERRUPTED]
    assert len(finished) == n_trials and all(t.state == TrialState.COMPLETE for t in finished)
    assert len(trials) - n_trials <= 2  # an outage that a retry survives is not recorded as a failure
