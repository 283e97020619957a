"""The study's database going away and coming back: a storage that retries, and stale trials that never beat.

`PatientStorage` is Optuna's RDB storage with two changes:

- every call made from the sweep's main thread that fails because the database does not answer (a server restart,
  a dropped connection, a busy SQLite file) is retried with exponential backoff (0.5 s doubling to 8 s) for up to
  `retry_seconds` (`hydra.sweeper.storage_retry_seconds`); an outage that outlasts them raises `StorageLost`, one
  line naming the storage (password hidden). The heartbeat thread is not held up: its next beat is the retry.
- a RUNNING trial with no heartbeat at all (its process died before its first beat, or while the database was
  away) is stale once it started more than the grace period ago, as a trial whose last beat is that old is.
"""

from __future__ import annotations

import datetime
import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import RDBStorage
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import TrialState

from vae_sweep.errors import SweepStopped, first_line
from vae_sweep.sweep.locks import shown

log = logging.getLogger(__name__)
FIRST_WAIT_SECONDS, LONGEST_WAIT_SECONDS = 0.5, 8.0  # the backoff between tries


class StorageLost(SweepStopped):
    """The study's database did not answer for longer than the sweep may wait."""


def unreachable(e: BaseException) -> bool:
    """Whether `e` says the database did not answer (rather than that a request was wrong).

    The lost connection may be one or two links down the chain: optuna wraps SQLAlchemy's error in a
    StorageInternalError, and where it catches an OperationalError and queries again in the same session (its
    `_get_trials` does), the second query raises PendingRollbackError during the handling of the first."""
    seen: set[int] = set()
    link: BaseException | None = e
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if isinstance(link, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
            return True
        if isinstance(link, sqlalchemy.exc.DBAPIError) and link.connection_invalidated:
            return True
        if not isinstance(link, (optuna.exceptions.StorageInternalError, sqlalchemy.exc.PendingRollbackError)):
            return False  # a wrong request, whatever happened before it
        link = link.__cause__ or link.__context__
    return False


def retrying(call: Callable[[], Any], url: str | None, retry_seconds: float) -> Any:
    """`call()`, tried again with backoff while the database does not answer, for up to `retry_seconds`."""
    deadline, wait, said = time.monotonic() + retry_seconds, FIRST_WAIT_SECONDS, False
    while True:
        try:
            result = call()
        except Exception as e:
            if not unreachable(e):
                raise
            if time.monotonic() + wait > deadline:
                raise StorageLost(
                    f"error: sweep stopped: the study's storage {shown(url)} did not answer for "
                    f"{retry_seconds:g} s (hydra.sweeper.storage_retry_seconds; {first_line(e)}); a trial it was "
                    "running is marked interrupted once it answers: run the same command again then"
                ) from None
            if not said:
                log.warning(
                    "storage %s does not answer (%s): retrying for %g s", shown(url), first_line(e), retry_seconds
                )
                said = True
            time.sleep(wait)
            wait = min(2 * wait, LONGEST_WAIT_SECONDS)
            continue
        if said:
            log.info("storage %s answers again", shown(url))
        return result


def _patient(method: Callable) -> Callable:
    @functools.wraps(method)
    def call(self: PatientStorage, *args: Any, **kwargs: Any) -> Any:
        if not self.retry_seconds or threading.current_thread() is not threading.main_thread():
            return method(self, *args, **kwargs)
        return retrying(lambda: method(self, *args, **kwargs), self.url, self.retry_seconds)

    return call


class PatientStorage(RDBStorage):
    """RDBStorage whose calls outlast a database outage of up to `retry_seconds`, and whose stale trials include
    those that never beat (see the module's docstring)."""

    retry_seconds: float = 0.0

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = super()._get_stale_trial_ids(study_id)
        grace = self.grace_period if self.grace_period is not None else 2 * (self.heartbeat_interval or 0)
        started_before = datetime.datetime.now() - datetime.timedelta(seconds=grace)
        with _create_scoped_session(self.scoped_session, True) as session:
            running = (
                session.query(models.TrialModel)
                .filter(models.TrialModel.state == TrialState.RUNNING, models.TrialModel.study_id == study_id)
                .all()
            )
            never_beat = [
                t.trial_id
                for t in running
                if not t.heartbeats and t.datetime_start is not None and t.datetime_start < started_before
            ]
        return stale + never_beat


# Every public method, and the private ones that optuna's cache in front of an RDB storage calls.
PRIVATE_CALLS = ("_get_stale_trial_ids", "_create_new_trial", "_get_best_trial_id", "_get_trials", "_set_trial_param")
for _name in [n for n in dir(optuna.storages.BaseStorage) if not n.startswith("_")] + list(PRIVATE_CALLS):
    if callable(getattr(PatientStorage, _name, None)):
        setattr(PatientStorage, _name, _patient(getattr(PatientStorage, _name)))
