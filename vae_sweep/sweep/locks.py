"""The lock that makes a shared study's count-then-ask exact: one process at a time counts the study's trials and
asks for the next, so processes sharing a study add up to exactly n_trials, on one host or many.

- SQLite (`sqlite:///path`): an flock on `path.lock`, beside the file (one machine).
- PostgreSQL (`postgresql+psycopg://...`): the server's advisory lock, `pg_advisory_xact_lock(key)` with `key` the
  first 8 bytes of sha256(study name) as a signed int64, taken in a transaction of its own on a connection from one
  engine per storage URL (cached). It is released when that transaction ends (commit, or rollback on an error), so a
  pooled connection never keeps it; and the server releases it when a killed process's connection drops.
- Any other database (MySQL, ...): no lock, logged once per URL: processes may then ask a trial or two too many.

The driver: psycopg 3, through SQLAlchemy 2's `postgresql+psycopg` dialect (psycopg2 is in maintenance; psycopg 3
ships binary wheels as `psycopg[binary]`, the `postgres` extra). A storage URL whose driver is not installed stops
the sweep in one line naming `hydra.sweeper.storage` and the pip command (`require_driver`).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy
from sqlalchemy.engine import make_url

from vae_sweep.errors import ConfigError

log = logging.getLogger(__name__)
# The pip command that installs each SQLAlchemy driver a user is likely to name.
PIP = {
    "psycopg": "pip install 'vae_sweep[postgres]' (psycopg 3)",
    "psycopg2": "pip install psycopg2-binary, or write postgresql+psycopg://... and pip install 'vae_sweep[postgres]'",
    "pymysql": "pip install PyMySQL",
    "mysqldb": "pip install mysqlclient",
}
_unlocked: set[str] = set()  # storage URLs already logged as having no lock


def lock_key(study: str) -> int:
    """PostgreSQL advisory lock key of a study: the first 8 bytes of sha256(name), a signed int64 (a `bigint`)."""
    return int.from_bytes(hashlib.sha256(study.encode()).digest()[:8], "big", signed=True)


def shown(url: str | None) -> str | None:
    """The storage URL as logs and messages show it: its password, if any, as ***."""
    return url and make_url(url).render_as_string(hide_password=True)


def require_driver(url: str) -> None:
    """Refuse, in one line, a storage URL that names a database or driver that is not installed."""
    try:
        dialect = make_url(url).get_dialect()
        dialect.import_dbapi()
    except sqlalchemy.exc.NoSuchModuleError:
        raise ConfigError(f"hydra.sweeper.storage={shown(url)}: SQLAlchemy knows no such database or driver") from None
    except ImportError as e:
        how = PIP.get(dialect.driver, f"install the {dialect.driver} driver")
        raise ConfigError(f"hydra.sweeper.storage={shown(url)} needs {dialect.driver} ({e}): {how}") from None


@functools.cache
def _engine(url: str) -> sqlalchemy.Engine:
    """One engine per storage URL for this process's locks; pre-ping replaces a connection the server dropped."""
    require_driver(url)
    return sqlalchemy.create_engine(url, pool_size=1, max_overflow=4, pool_pre_ping=True)


@contextlib.contextmanager
def storage_lock(url: str | None, study: str, retry_seconds: float = 0) -> Iterator[None]:
    """Hold study `study`'s lock in storage `url` while the block runs (see the module's docstring); no URL: none.
    A server that does not answer is tried again for up to `retry_seconds` (vae_sweep/sweep/outage.py)."""
    if not url:
        yield
        return
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        with _file_lock(url):
            yield
    elif backend == "postgresql":
        from vae_sweep.sweep.outage import retrying

        conn = retrying(lambda: _advisory_lock(url, study), url, retry_seconds)
        try:
            yield
        finally:
            _release(conn)
    else:
        if url not in _unlocked:
            _unlocked.add(url)
            log.warning(
                "%s: count-then-ask is not serialised on %s: processes may overshoot n_trials", shown(url), backend
            )
        yield


def _advisory_lock(url: str, study: str) -> sqlalchemy.Connection:
    """A connection in a transaction that holds the study's transaction-level advisory lock. Ending the transaction
    ends the lock; a process killed while holding it loses its connection, and the server releases the lock."""
    conn = _engine(url).connect()
    try:
        conn.begin()
        conn.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key(study)})
    except BaseException:
        conn.close()
        raise
    return conn


def _release(conn: sqlalchemy.Connection) -> None:
    """End the lock's transaction. A connection the server dropped meanwhile took the lock with it: nothing to do."""
    try:
        conn.commit()
        conn.close()
    except sqlalchemy.exc.SQLAlchemyError as e:
        log.warning("the study's lock was lost with its connection (%s): the server released it", type(e).__name__)


@contextlib.contextmanager
def _file_lock(url: str) -> Iterator[None]:
    """An flock beside a SQLite file, whose folder it creates (on a fresh clone `multirun/` does not exist yet);
    an in-memory SQLite database is one process's own and gets none."""
    database = make_url(url).database
    if not database or database == ":memory:":
        yield
        return
    path = Path(database + ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
