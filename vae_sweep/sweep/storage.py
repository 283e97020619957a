"""The study's storage, checked before the first trial and before Optuna or Alembic touch it, in one line each:

- a URL that SQLAlchemy cannot read, or whose driver is not installed (`locks.require_driver`);
- SQLite: a file outside the working folder whose folder does not exist (nothing is created there), and a file that
  is not a healthy SQLite database (read only: its header, then `PRAGMA quick_check` on a read-only connection; the
  file is never modified, and no file is created beside it);
- a server (PostgreSQL, MySQL): one connection, given `CONNECT_TIMEOUT_S`, naming host and port, never the password.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from urllib.parse import quote

import sqlalchemy
from sqlalchemy.engine import URL, make_url

from vae_sweep.errors import ConfigError, first_line
from vae_sweep.sweep.locks import require_driver, shown

SETTING = "hydra.sweeper.storage"
CONNECT_TIMEOUT_S = 5  # libpq's connect_timeout: an unreachable server is named within seconds, not minutes
SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file
WRITE_VERSION, HEADER_BYTES = 18, 20  # the header's "file format write version" byte: 1 rollback journal, 2 WAL
BUSY_TIMEOUT_S = 10  # how long the read-only check waits for another process's write lock


def check_storage(url: str | None) -> None:
    """Refuse, in one line, a storage URL that cannot hold the study; None (in memory) is fine."""
    if url is None:
        return
    parsed = parse_url(url)
    require_driver(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
            check_sqlite_file(url, Path(parsed.database))
    else:
        check_reachable(url, parsed)


def parse_url(url: str) -> URL:
    try:
        return make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        raise ConfigError(
            f"{SETTING}={url}: not a database URL; give sqlite:///path/to/file.db or "
            "postgresql+psycopg://user:password@host:port/database"
        ) from None


def check_sqlite_file(url: str, path: Path) -> None:
    """The file is a healthy SQLite database, or can be made: its folder exists, or lies inside the working folder."""
    if not path.exists():
        folder = path.parent.resolve()
        if not folder.exists() and not folder.is_relative_to(Path.cwd().resolve()):
            raise ConfigError(
                f"{SETTING}={url}: folder {folder} does not exist; create it first, "
                "or give a path inside the working folder (sqlite:///multirun/<name>.db)"
            )
        return
    if why := sqlite_damage(path):
        raise ConfigError(
            f"{SETTING}={url}: {path} {why}; it was left as it is: move it aside (or restore a copy) and run "
            f"again, or give another file with {SETTING}=sqlite:///<path>"
        )


def sqlite_damage(path: Path) -> str | None:
    """What is wrong with the SQLite file at `path`, read without writing to it; None if nothing is (or if it is
    busy or locked in a way SQLite itself will sort out: that is Optuna's to meet, not a damage)."""
    if path.is_dir():
        return "is a folder, not a database file"
    try:
        with open(path, "rb") as f:
            header = f.read(HEADER_BYTES)
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    if not header:
        return None  # an empty file: SQLite makes a database of it
    if not header.startswith(SQLITE_HEADER):
        return "is not an SQLite database (it lacks SQLite's header)"
    try:
        connection = sqlite3.connect(read_only_uri(path, header), uri=True, timeout=BUSY_TIMEOUT_S)
        try:
            problems = [row[0] for row in connection.execute("PRAGMA quick_check")]
        finally:
            connection.close()
    except sqlite3.OperationalError:  # locked, busy, a journal to roll back first
        return None
    except sqlite3.DatabaseError as e:  # "file is not a database", "database disk image is malformed"
        return f"is damaged ({e})"
    return None if problems == ["ok"] else f"is damaged (SQLite's quick_check: {problems[0]})"


def read_only_uri(path: Path, header: bytes) -> str:
    """A URI that opens `path` without writing to it. A WAL-mode file (its header's write version 2) that no process
    has open (no `-wal` beside it) is opened `immutable=1`, since SQLite would otherwise create `-wal` and `-shm`
    files to read it; any other file with `mode=ro` alone, whose locks wait for a process that is writing it."""
    wal_mode = len(header) > WRITE_VERSION and header[WRITE_VERSION] == 2
    idle = wal_mode and not path.with_name(path.name + "-wal").exists()
    return f"file:{quote(str(path.resolve()))}?mode=ro" + ("&immutable=1" if idle else "")


def check_reachable(url: str, parsed: URL) -> None:
    """Connect once, waiting CONNECT_TIMEOUT_S at most; a refusal names host and port, never the password."""
    engine = sqlalchemy.create_engine(url, connect_args=connect_args(parsed), poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect():
            pass
    except sqlalchemy.exc.SQLAlchemyError as e:
        why = first_line(getattr(e, "orig", None) or e)
        if parsed.password:  # drivers do not echo it; should one, it is hidden as a whole word
            why = re.sub(rf"(?<!\w){re.escape(str(parsed.password))}(?!\w)", "***", why)
        where = f"{parsed.host or 'localhost'}:{parsed.port or 'default port'}"
        raise ConfigError(f"{SETTING}={shown(url)}: cannot connect to {where} ({why})") from None
    finally:
        engine.dispose()


def connect_args(parsed: URL) -> dict:
    """The driver's connect timeout, for the drivers that take one by that name (libpq's, PyMySQL's)."""
    if parsed.get_backend_name() in ("postgresql", "mysql"):
        return {"connect_timeout": CONNECT_TIMEOUT_S}
    return {}
