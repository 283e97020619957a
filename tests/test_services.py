"""The real services for running one study on many hosts: PostgreSQL and Slurm, on 127.0.0.1.

Proves what the distributed sweep will build on: an optuna study on PostgreSQL that a second process reads
and extends; a PostgreSQL advisory lock that serialises a count-then-ask across processes; jobs through a
Slurm cluster (srun, sbatch, and Hydra's submitit launcher where it is installed).

Run as a script, this file is the worker of the lock tests: `python tests/test_services.py lock-worker ...`.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

# Its fixtures (postgres_url, postgres_db_url, slurm_cluster) come from tests/helpers/services.py via conftest.py.
pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve()
WAIT = 60  # seconds: the bound on every wait for another process


# ---------------------------------------------------------------------------------------- advisory lock


@contextlib.contextmanager
def advisory_xact_lock(engine, key: int):
    """A transaction on `engine` that holds PostgreSQL's advisory lock `key` until it commits (or rolls back).

    `pg_advisory_xact_lock` blocks until no other transaction holds `key`, and the lock goes with the
    transaction: a count-then-ask done inside it is serialised across processes and hosts.
    """
    import sqlalchemy as sa

    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
        yield conn


def _lock_worker(argv: list[str]) -> None:
    """Worker process. `hold URL KEY SECONDS`: take the lock, say so, hold it, commit, say so.
    `count URL KEY N`: N times, under the lock, read the counter, pause, write it plus one (a count-then-ask);
    prints the [start, end] of each critical section as JSON."""
    import sqlalchemy as sa

    mode, url, key = argv[0], argv[1], int(argv[2])
    engine = sa.create_engine(url)
    try:
        if mode == "hold":
            t0 = time.time()
            with advisory_xact_lock(engine, key):
                print(json.dumps({"acquired": time.time(), "waited": time.time() - t0}), flush=True)
                time.sleep(float(argv[3]))
            print(json.dumps({"released": time.time()}), flush=True)
        elif mode == "count":
            spans = []
            for _ in range(int(argv[3])):
                with advisory_xact_lock(engine, key) as conn:
                    start = time.time()
                    n = conn.execute(sa.text("SELECT n FROM counter")).scalar_one()
                    time.sleep(0.02)  # the gap in which an unserialised second worker would read the same n
                    conn.execute(sa.text("UPDATE counter SET n = :n"), {"n": n + 1})
                    spans.append([start, time.time()])
            print(json.dumps(spans), flush=True)
        else:
            raise SystemExit(f"unknown mode {mode}")
    finally:
        engine.dispose()


def _worker(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(HERE), "lock-worker", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def _read_json_line(proc: subprocess.Popen, timeout: float = WAIT):
    """The next JSON line the worker prints, waiting at most `timeout` seconds."""
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            proc.kill()
            raise AssertionError(f"worker said nothing in {timeout} s; stderr: {proc.stderr.read()[-2000:]}")
        line = proc.stdout.readline()
    finally:
        sel.close()
    if not line:
        proc.wait(timeout=WAIT)
        raise AssertionError(f"worker exited {proc.returncode}: {proc.stderr.read()[-2000:]}")
    return json.loads(line)


def test_advisory_lock_second_process_blocks_until_first_commits(postgres_db_url):
    key = 7_000_001
    first = _worker("hold", postgres_db_url, str(key), "2.0")
    try:
        got = _read_json_line(first)  # the first holds the lock now, for 2 s
        second = _worker("hold", postgres_db_url, str(key), "0")
        try:
            second_got = _read_json_line(second)
            released = _read_json_line(first)["released"]
        finally:
            for p in (first, second):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.communicate(timeout=WAIT)
                if p.poll() is None:
                    p.kill()
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0 and second.returncode == 0
    # The second got the lock only once the first had committed, not while it held it.
    assert second_got["acquired"] >= got["acquired"] + 1.9, (got, second_got)
    assert second_got["acquired"] >= released - 0.05, (released, second_got)


def test_advisory_lock_serialises_count_then_ask(postgres_db_url):
    import sqlalchemy as sa

    engine = sa.create_engine(postgres_db_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE counter (n integer NOT NULL)"))
            conn.execute(sa.text("INSERT INTO counter VALUES (0)"))
        n_each = 15
        procs = [_worker("count", postgres_db_url, "7000002", str(n_each)) for _ in range(2)]
        outs = []
        for p in procs:
            try:
                out, err = p.communicate(timeout=WAIT)
            finally:
                if p.poll() is None:
                    p.kill()
            assert p.returncode == 0, err[-2000:]
            outs.append(json.loads(out.strip().splitlines()[-1]))
        with engine.connect() as conn:
            n = conn.execute(sa.text("SELECT n FROM counter")).scalar_one()
    finally:
        engine.dispose()
    assert n == 2 * n_each  # no lost update: every read-then-write saw the one before it
    spans = sorted((s, e, i) for i, out in enumerate(outs) for s, e in out)
    for (_, e1, _), (s2, _, _) in zip(spans, spans[1:]):
        assert s2 >= e1 - 0.01, "two critical sections overlapped"


# ------------------------------------------------------------------------------------------ optuna study


def test_optuna_study_on_postgres_read_back_from_a_second_process(postgres_db_url):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="shared", storage=postgres_db_url, direction="minimize")
    study.optimize(lambda t: (t.suggest_float("x", -2.0, 2.0) - 1.0) ** 2, n_trials=3)
    mine = [t.params["x"] for t in study.trials]

    child = textwrap.dedent("""
        import json, sys, optuna
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.load_study(study_name="shared", storage=sys.argv[1])
        seen = [t.params["x"] for t in study.trials]
        study.optimize(lambda t: (t.suggest_float("x", -2.0, 2.0) - 1.0) ** 2, n_trials=2)
        print(json.dumps({"seen": seen, "n_after": len(study.trials)}))
    """)
    res = subprocess.run(
        [sys.executable, "-c", child, postgres_db_url],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["seen"] == mine  # the child read our three trials
    assert out["n_after"] == 5
    again = optuna.load_study(study_name="shared", storage=postgres_db_url)
    assert len(again.trials) == 5  # and we read its two
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in again.trials)


# ------------------------------------------------------------------------------------------------ Slurm


def test_srun_hostname_through_slurm(slurm_cluster):
    res = slurm_cluster.run(["srun", "-N1", "-n1", "--time=1", "hostname"], timeout=WAIT)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == socket.gethostname().split(".")[0]


def test_sbatch_job_runs_and_writes_its_output(slurm_cluster, tmp_path):
    out = tmp_path / "job.out"
    script = tmp_path / "job.sh"
    script.write_text('#!/bin/bash\necho "job $SLURM_JOB_ID on $(hostname) in $SLURM_JOB_PARTITION"\n')
    res = slurm_cluster.run(
        ["sbatch", "--wait", "--parsable", "--time=1", "-c1", f"--output={out}", str(script)],
        timeout=WAIT,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    job_id = res.stdout.strip().split(";")[0]
    assert out.read_text().strip() == f"job {job_id} on {socket.gethostname().split('.')[0]} in debug"


APP = """
import os
import hydra
from omegaconf import DictConfig


@hydra.main(config_path=None, config_name=None)
def main(cfg: DictConfig) -> int:
    print(f"x={cfg.x} slurm_job={os.environ.get('SLURM_JOB_ID')}")
    return cfg.x * 10


if __name__ == "__main__":
    main()
"""


def test_hydra_submitit_launcher_runs_each_job_through_slurm(slurm_cluster, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="hydra-submitit-launcher not installed")
    (tmp_path / "app.py").write_text(APP)
    args = [
        sys.executable,
        "app.py",
        "--multirun",
        "hydra/launcher=submitit_slurm",
        f"hydra.launcher.partition={slurm_cluster.partition}",
        "hydra.launcher.timeout_min=5",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=1",
        "hydra.launcher.tasks_per_node=1",
        "hydra.sweep.dir=multirun",
        "+x=1,2",
    ]
    res = slurm_cluster.run(args, timeout=180, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    logs = sorted((tmp_path / "multirun" / ".submitit").glob("*/*_log.out"))
    text = "\n".join(p.read_text() for p in logs)
    for x in (1, 2):
        assert f"x={x} slurm_job=" in text, text
    assert "slurm_job=None" not in text  # each ran as a Slurm job, not in this process
    results = sorted((tmp_path / "multirun" / ".submitit").glob("*/*_result.pkl"))
    assert len(results) == 2


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "lock-worker":
    _lock_worker(sys.argv[2:])
