"""vae_sweep/sweep/locks.py without a server: what a missing driver or an unlocked database tells the user, and the
SQLite file lock. The PostgreSQL lock itself is tested on a real server in tests/sweep/test_postgres_sweep.py."""

from __future__ import annotations

import logging
import sys
import threading
import time

import pytest

from vae_sweep.errors import ConfigError
from vae_sweep.sweep.locks import storage_lock
from vae_sweep.sweep.study import make_storage


def test_a_missing_postgres_driver_stops_in_one_line_with_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # `import psycopg` now fails, as where it is not installed
    with pytest.raises(ConfigError) as e:
        make_storage("postgresql+psycopg://vae:secret@db.example:5432/sweeps")
    message = str(e.value)
    assert message.startswith("hydra.sweeper.storage=postgresql+psycopg://vae:***@db.example:5432/sweeps ")
    assert message.endswith("pip install 'vae_sweep[postgres]' (psycopg 3)")
    assert "secret" not in message and "\n" not in message


def test_a_database_without_a_lock_is_logged_once(caplog):
    url = "mysql+pymysql://u@db.example/sweeps"  # no connection is made: there is no lock to take
    with caplog.at_level(logging.WARNING, logger="vae_sweep.sweep.locks"):
        for _ in range(3):
            with storage_lock(url, "s"):
                pass
    assert [r.getMessage() for r in caplog.records] == [
        "mysql+pymysql://u@db.example/sweeps: count-then-ask is not serialised on mysql: processes may overshoot "
        "n_trials"
    ]


def test_the_sqlite_lock_is_a_file_beside_the_study_and_holds_off_a_second_holder(tmp_path):
    url = f"sqlite:///{tmp_path}/new/s.db"  # its folder does not exist yet
    entered = threading.Event()

    def second() -> None:
        with storage_lock(url, "s"):
            entered.set()

    with storage_lock(url, "s"):
        assert (tmp_path / "new" / "s.db.lock").exists()
        thread = threading.Thread(target=second, daemon=True)
        thread.start()
        time.sleep(0.3)
        assert not entered.is_set()  # flock is per open file: a second open in this process waits too
    assert entered.wait(10)
    thread.join(10)
