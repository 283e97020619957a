"""Pytest fixtures for the real services the distributed tests use: PostgreSQL and a one-node Slurm cluster.

Each session-scoped fixture either reuses a running service named by the environment, or starts one with
the project's own scripts (`ci/services/postgres.sh`, `ci/services/slurm.sh`) in a fresh directory of its
own, on free ports of 127.0.0.1, and stops it when the session ends:

- `postgres_url`: a SQLAlchemy URL of database `vae_sweep_test` (reused from `VAE_SWEEP_POSTGRES_URL`);
- `postgres_db_url`: a fresh, empty database for one test on that server, dropped afterwards (an optuna
  storage's schema belongs to one optuna version, and tests must not see each other's studies);
- `slurm_cluster`: a `SlurmCluster` (reused from `SLURM_CONF`); while it lives, `SLURM_CONF` is set in
  `os.environ` so that `srun`/`sbatch`/submitit, in this process or its children, reach that cluster.

A service that cannot be started (not root and the packages missing, no driver, a daemon that fails) makes
the tests that need it skip, with the reason printed, but fail when `CI=true`: CI must run them.
Every wait is bounded (the scripts' own loops, and a timeout on each call).

Use them from a test module with `from helpers.services import postgres_url, ...  # noqa: F401`, or for
every module by `pytest_plugins = ["helpers.services"]` in tests/conftest.py.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "ci" / "services"
# A start may first apt-get install the packages (about 20 s here, minutes on a slow mirror): the scripts
# bound apt-get themselves (600 s); this bounds the whole call.
START_TIMEOUT = 1200
STOP_TIMEOUT = 120


def unavailable(reason: str) -> None:
    """Skip the test for want of a service; under CI (`CI=true`) fail instead: CI must run it."""
    print(f"\n[services] {reason}", file=sys.stderr)
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true, and {reason}", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_script(script: str, action: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """`ci/services/SCRIPT ACTION` under `env`, bounded by `timeout`; stdout/stderr captured as text."""
    try:
        return subprocess.run(
            ["bash", str(SCRIPTS / script), action],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        return subprocess.CompletedProcess(e.cmd, 124, "", f"{script} {action}: timed out after {timeout} s\n{err}")


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _services_dir(kind: str) -> str:
    """A fresh directory for one service of this session (the scripts make it traversable for `postgres`)."""
    base = os.environ.get("VAE_SWEEP_SERVICES_DIR")
    if base:  # a fixed place, given by hand: one service of each kind lives there
        return base
    return tempfile.mkdtemp(prefix=f"vae_sweep_{kind}_")


# --------------------------------------------------------------------------------------------- PostgreSQL


def pg_driver() -> str | None:
    """The SQLAlchemy PostgreSQL driver to use here: psycopg (3) under SQLAlchemy 2, psycopg2 under 1.4.

    SQLAlchemy 1.4 has no `postgresql+psycopg` dialect (it came in 2.0), so there it has to be psycopg2.
    """
    import importlib.util

    import sqlalchemy

    sa2 = int(sqlalchemy.__version__.split(".")[0]) >= 2
    if sa2 and importlib.util.find_spec("psycopg") is not None:
        return "psycopg"
    if importlib.util.find_spec("psycopg2") is not None:
        return "psycopg2"
    return None


@pytest.fixture(scope="session")
def postgres_url():
    """SQLAlchemy URL of a PostgreSQL database on 127.0.0.1: `VAE_SWEEP_POSTGRES_URL`, or one we start."""
    given = os.environ.get("VAE_SWEEP_POSTGRES_URL")
    if given:
        yield given
        return
    driver = pg_driver()
    if driver is None:
        unavailable(
            "no PostgreSQL driver for SQLAlchemy: pip install 'psycopg[binary]' (SQLAlchemy 2) "
            "or psycopg2-binary (SQLAlchemy 1.4)"
        )
    if shutil.which("bash") is None:
        unavailable("bash is needed to start PostgreSQL (ci/services/postgres.sh)")
    svc_dir = _services_dir("pg")
    env = {**os.environ, "VAE_SWEEP_SERVICES_DIR": svc_dir, "VAE_SWEEP_PG_DRIVER": driver}
    env.setdefault("VAE_SWEEP_PG_PORT", str(free_port()))
    res = run_script("postgres.sh", "start", env, START_TIMEOUT)
    url = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""
    if res.returncode != 0 or not url.startswith("postgresql"):
        run_script("postgres.sh", "stop", env, STOP_TIMEOUT)  # whatever part of it came up
        unavailable(
            f"PostgreSQL could not be started (ci/services/postgres.sh start, exit {res.returncode}):\n"
            f"{_tail(res.stderr)}"
        )
    try:
        yield url
    finally:
        res = run_script("postgres.sh", "stop", env, STOP_TIMEOUT)
        if res.returncode != 0:
            print(f"\n[services] postgres.sh stop failed:\n{_tail(res.stderr)}", file=sys.stderr)


@pytest.fixture
def postgres_db_url(postgres_url):
    """A fresh empty database on the `postgres_url` server for one test; dropped after it."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    name = f"vae_sweep_t_{secrets.token_hex(6)}"
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = make_url(postgres_url).set(database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        try:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            admin.dispose()


# -------------------------------------------------------------------------------------------------- Slurm


@dataclass(frozen=True)
class SlurmCluster:
    """A running Slurm cluster: its config file, and the environment that reaches it."""

    conf: Path
    partition: str = "debug"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, args: list[str], timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
        """A Slurm command (`srun ...`, `sbatch ...`) against this cluster, bounded by `timeout`."""
        return subprocess.run(
            args, env=self.env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, **kwargs
        )


@pytest.fixture(scope="session")
def slurm_cluster():
    """A one-node Slurm cluster on 127.0.0.1 (partition `debug`): `SLURM_CONF`'s, or one we start."""
    previous = os.environ.get("SLURM_CONF")
    if previous:
        if not Path(previous).is_file():
            unavailable(f"SLURM_CONF={previous} is not a file")
        yield SlurmCluster(Path(previous))
        return
    missing = [c for c in ("slurmctld", "slurmd", "srun", "munged") if shutil.which(c) is None]
    if os.geteuid() != 0:
        unavailable(
            "a Slurm test cluster needs root (slurmd starts jobs as their user)"
            + (f"; not installed: {', '.join(missing)}" if missing else "")
        )
    svc_dir = _services_dir("slurm")
    env = {**os.environ, "VAE_SWEEP_SERVICES_DIR": svc_dir}
    env.setdefault("VAE_SWEEP_SLURMCTLD_PORT", str(free_port()))
    port = free_port()
    while str(port) == env["VAE_SWEEP_SLURMCTLD_PORT"]:
        port = free_port()
    env.setdefault("VAE_SWEEP_SLURMD_PORT", str(port))
    res = run_script("slurm.sh", "start", env, START_TIMEOUT)
    line = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""
    if res.returncode != 0 or not line.startswith("SLURM_CONF="):
        run_script("slurm.sh", "stop", env, STOP_TIMEOUT)
        unavailable(
            f"Slurm could not be started (ci/services/slurm.sh start, exit {res.returncode}):\n{_tail(res.stderr)}"
        )
    conf = Path(line.split("=", 1)[1])
    os.environ["SLURM_CONF"] = str(conf)
    try:
        yield SlurmCluster(conf)
    finally:
        os.environ.pop("SLURM_CONF", None)
        res = run_script("slurm.sh", "stop", env, STOP_TIMEOUT)
        if res.returncode != 0:
            print(f"\n[services] slurm.sh stop failed:\n{_tail(res.stderr)}", file=sys.stderr)
