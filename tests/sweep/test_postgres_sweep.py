"""One study shared through PostgreSQL by several sweep processes, as on several hosts: each has its own sweep dir
and nothing in common but the storage URL. The advisory lock makes count-then-ask exact, and Optuna's heartbeat
finds a killed worker's trial from the other processes."""

from __future__ import annotations

import hashlib
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

from vae_sweep.sweep.locks import lock_key, storage_lock
from vae_sweep.sweep.study import INTERRUPTED

pytestmark = pytest.mark.slow  # starts PostgreSQL (tests/helpers/services.py) and sweep processes
WAIT = 300  # seconds: the bound on every wait for a sweep process
N_TRIALS = 12


def test_two_holders_of_one_study_lock_serialise_and_other_studies_pass(postgres_db_url):
    """Threads (each on its own connection, as processes would be) do a slow count-then-write under the lock of
    study `s`: no update is lost. A holder of another study's lock is not held up meanwhile."""
    engine = sa.create_engine(postgres_db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE counter (n integer NOT NULL)"))
        conn.execute(sa.text("INSERT INTO counter VALUES (0)"))

    def count(times: int) -> None:
        for _ in range(times):
            with storage_lock(postgres_db_url, "s"), engine.begin() as conn:
                n = conn.execute(sa.text("SELECT n FROM counter")).scalar_one()
                time.sleep(0.02)  # the gap in which an unserialised second holder would read the same n
                conn.execute(sa.text("UPDATE counter SET n = :n"), {"n": n + 1})

    threads = [threading.Thread(target=count, args=(10,)) for _ in range(3)]
    with storage_lock(postgres_db_url, "s"):  # held: the threads wait, and another study's lock does not
        for t in threads:
            t.start()
        start = time.perf_counter()
        with storage_lock(postgres_db_url, "other"):
            other = time.perf_counter() - start
        time.sleep(0.3)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT n FROM counter")).scalar_one() == 0  # nobody got past the lock
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive()
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT n FROM counter")).scalar_one() == 30
    engine.dispose()
    assert other < 1.0


HOLD = """
import sys, time
from vae_sweep.sweep.locks import storage_lock
with storage_lock(sys.argv[1], "s"):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_killed_holders_lock_is_released_by_the_server(postgres_db_url):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, postgres_db_url], stdout=subprocess.PIPE, text=True)
    got = threading.Event()

    def wait_for_lock() -> None:
        with storage_lock(postgres_db_url, "s"):
            got.set()

    try:
        assert holder.stdout.readline().strip() == "held"  # bounded: the child exits after 120 s in any case
        waiter = threading.Thread(target=wait_for_lock, daemon=True)
        waiter.start()
        assert not got.wait(0.5)  # the child holds it
        holder.send_signal(signal.SIGKILL)
        assert got.wait(30), "the lock of a SIGKILLed process was not released"
        waiter.join(30)  # its transaction ends before the fixture drops the database
        assert not waiter.is_alive()
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait(timeout=30)


def test_lock_key_is_stable_the_first_8_bytes_of_the_names_sha256():
    # Every process and host must derive the same key from the same name, today and in later versions.
    assert lock_key("elbo") == -6011419094671550172
    assert lock_key("pareto[epochs=1,model=conv]") == 5800416800610019351
    assert lock_key("shared") == int.from_bytes(hashlib.sha256(b"shared").digest()[:8], "big", signed=True)


# ------------------------------------------------------------------------------------- three sweep processes


def start_sweep(url: str, cwd: Path, name: str, *extra: str) -> subprocess.Popen:
    """`python -m vae_sweep --multirun` on the shared study, with its own sweep dir `cwd/name`; output to a file."""
    args = [
        sys.executable,
        "-m",
        "vae_sweep",
        "--multirun",
        "sweep=elbo",
        "debug=tiny",
        "threads=1",
        f"hydra.sweep.dir={cwd / name}",
        f"hydra.sweeper.storage={url}",
        "hydra.sweeper.study_name=shared",
        f"hydra.sweeper.n_trials={N_TRIALS}",
        "hydra.sweeper.heartbeat_interval=1",
        "hydra.sweeper.grace_period=5",
        *extra,
    ]
    out = open(cwd / f"{name}.log", "w")
    return subprocess.Popen(args, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def running_trials(url: str) -> set[int]:
    try:
        study = optuna.load_study(study_name="shared", storage=url)
    except KeyError:  # not created yet
        return set()
    return {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}


def mid_trial(url: str, sweep_dir: Path) -> int | None:
    """A trial of this sweep dir whose job is running (its metrics.json says so) and which the study holds RUNNING."""
    started = {int(p.parent.name) for p in sweep_dir.glob("*/metrics.json") if '"running"' in p.read_text()}
    return min(started & running_trials(url), default=None) if started else None


def test_three_processes_fill_one_postgres_study_exactly_and_a_killed_ones_trial_is_interrupted(
    postgres_db_url, tmp_path
):
    procs = {
        "a": start_sweep(postgres_db_url, tmp_path, "a"),
        "b": start_sweep(postgres_db_url, tmp_path, "b", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"),
        "victim": start_sweep(postgres_db_url, tmp_path, "victim"),
    }
    try:
        deadline, killed = time.time() + WAIT, None
        while killed is None:
            assert time.time() < deadline, "the victim never had a running trial"
            assert procs["victim"].poll() is None, (tmp_path / "victim.log").read_text()[-3000:]
            killed = mid_trial(postgres_db_url, tmp_path / "victim")
            time.sleep(0.1)
        procs["victim"].send_signal(signal.SIGKILL)
        for name in ("a", "b"):
            assert procs[name].wait(timeout=WAIT) == 0, (tmp_path / f"{name}.log").read_text()[-3000:]
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
            p.wait(timeout=60)

    trials = optuna.load_study(study_name="shared", storage=postgres_db_url).trials
    finished = [t for t in trials if t.state.is_finished() and t.user_attrs.get("status") != INTERRUPTED]
    interrupted = [t for t in trials if t.state == TrialState.FAIL and t.user_attrs.get("status") == INTERRUPTED]
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    assert len(finished) == N_TRIALS
    assert len(trials) == N_TRIALS + len(interrupted)  # no trial asked beyond n_trials
    assert len({tuple(sorted(t.params.items())) for t in finished}) == N_TRIALS  # no parameter set twice
    assert killed in {t.number for t in interrupted}  # found dead by the other processes' heartbeat check
    # Every trial ran in one process only: its number is a run dir in exactly one sweep dir.
    runs = [int(p.name) for d in ("a", "b", "victim") for p in (tmp_path / d).iterdir() if p.name.isdigit()]
    assert len(runs) == len(set(runs)) == len(trials)
    for t in finished:
        assert Path(t.user_attrs["metrics"]["run_dir"]).parent.name in ("a", "b")
    logs = (tmp_path / "a.log").read_text() + (tmp_path / "b.log").read_text()
    stale = [
        int(n) for found in re.findall(r"trial\(s\) \[([\d, ]+)\] stopped beating", logs) for n in found.split(",")
    ]
    assert killed in stale, logs[-3000:]  # the warning of fail_stale in a surviving process
    assert "; 2 at a time with" in (tmp_path / "b.log").read_text()  # b ran its trials two at a time (joblib)
