"""The sweep's Optuna study: what it is (its name and recorded settings) and where it lives (storage, lock).

A study holds one experiment. The settings that define it are recorded on the study (user attribute
`settings`) and, where the user typed them, spelled in its name:

- the group choices `model`, `loss`, `likelihood`, `optimizer`, `scheduler`, `dataset`, and `objectives`;
- every fixed override on the command line that changes what a trial computes (`epochs=1`, `model=conv`,
  `beta=0.5`), and a group searched as a whole (`model=choice(mlp,conv)`).

- the pruner, when there is one (`hydra/sweeper/pruner=median` makes `elbo[pruner=median]`): its trials stop early,
  so they are no trials of the same experiment without it.

Not defining: the searched parameters (a study may widen its search), `n_trials`, everything else under `hydra.`
(sampler, storage, output dirs), the `sweep` option (it names the base: `pareto`, `elbo`) and NEUTRAL (vae_sweep/config.py).

The study's name is the sweep's base name (`hydra.sweeper.study_name`, e.g. `pareto`) when the command
overrides nothing defining, else the base and the defining overrides, sorted by key: `pareto[epochs=1,model=conv]`.
The same command always gets the same study; an explicit `hydra.sweeper.study_name=X` is used as it is.
A study whose recorded settings differ from the command's stops the sweep before its first trial.

Where it lives: any SQLAlchemy URL (SQLite by default) with Optuna's heartbeat on, so that a trial whose process
died, on any machine, is found (`fail_stale`) and failed. Count-then-ask runs under `storage_lock` (vae_sweep/sweep/locks.py):
an flock for SQLite, the server's advisory lock for PostgreSQL.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import warnings
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig
from optuna.trial import FrozenTrial, TrialState

from vae_sweep.config import ADDED_GROUPS, JOB_GROUPS, neutral
from vae_sweep.errors import ConfigError
from vae_sweep.sweep.locks import require_driver, shown, storage_lock
from vae_sweep.sweep.outage import PatientStorage

log = logging.getLogger(__name__)
RECORDED_GROUPS = JOB_GROUPS
PRUNER = "hydra/sweeper/pruner"  # a pruner other than none defines the experiment: `elbo[pruner=median]`
# A trial's `status` user attribute from the moment it is asked until its result is recorded: a trial whose process
# dies keeps it, so the heartbeat's stale check (which may no longer write to the trial) leaves it marked.
INTERRUPTED = "interrupted"
FAILED = "failed"  # a trial whose job raised: recorded, but not counted toward n_trials


def experiment(config: DictConfig, arguments: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """(the settings recorded on the study, the command's defining overrides), values as Hydra spells them."""
    overrides = {}
    for o in OverridesParser.create().parse_overrides(list(arguments)):
        key = o.get_key_element()
        if o.is_hydra_override() or neutral(key) or key == "sweep":
            continue
        if not o.is_sweep_override():
            overrides[key] = o.get_value_element_as_str()
        elif key in RECORDED_GROUPS:  # a searched group is a different experiment; a searched knob is not
            overrides[key] = o.get_value_string()
    choices = config.hydra.runtime.choices
    if choices.get(PRUNER) not in (None, "none"):  # pruned trials stop early: a study of their own
        overrides["pruner"] = str(choices[PRUNER])
    chosen = {g: choices.get(g, ADDED_GROUPS.get(g)) for g in RECORDED_GROUPS}
    settings = {g: str(c) for g, c in chosen.items() if g not in ADDED_GROUPS or c != ADDED_GROUPS[g]}
    settings["objectives"] = "[" + ",".join(config.get("objectives") or []) + "]"
    return settings | overrides, overrides


def study_name(base: str, overrides: dict[str, str]) -> str:
    """`base`, or `base[k=v,...]` with the defining overrides sorted by key."""
    if not overrides:
        return base
    return f"{base}[{','.join(f'{k}={v}' for k, v in sorted(overrides.items()))}]"


def named_explicitly(config: DictConfig) -> bool:
    """Whether the command line sets hydra.sweeper.study_name itself."""
    parsed = OverridesParser.create().parse_overrides(list(config.hydra.overrides.hydra))
    return any(o.key_or_group == "hydra.sweeper.study_name" for o in parsed)


def open_study(
    url: str | None,
    name: str,
    explicit: bool,
    settings: dict[str, str],
    directions: list[str],
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner | None = None,
    beats: tuple[int, int] | None = None,
    retry_seconds: float = 0,
    objectives: list[str] | None = None,
) -> optuna.Study:
    """Create or load study `name` (with heartbeats `beats` = (interval, grace period) in seconds, and calls that
    outlast an outage of `retry_seconds`), and stop (one line, `error: ...`) if it records other settings. Trials that
    a dead process left running are failed first. The `objectives` name the study's values with their units
    (`distortion [nats/example]`), as optuna-dashboard shows them."""
    with storage_lock(url, name):  # two processes starting together would both create the tables
        study = optuna.create_study(
            study_name=name,
            storage=make_storage(url, beats, retry_seconds),
            directions=directions,
            load_if_exists=True,
            sampler=sampler,
            pruner=pruner,
        )
        recorded = study.user_attrs.get("settings")
        if recorded is None:
            if study.trials:
                log.warning(
                    "study %r has %d trials but no recorded settings (an older vae_sweep made it): "
                    "recording this command's",
                    name,
                    len(study.trials),
                )
            study.set_user_attr("settings", settings)
        elif differ := differences(recorded, settings):
            way = (
                "drop the hydra.sweeper.study_name override to get a study of this command's own, or pick another name"
                if explicit
                else "name a new study with hydra.sweeper.study_name=..."
            )
            raise ConfigError(f"study {name!r} in {shown(url)} holds another experiment ({'; '.join(differ)}): {way}")
        fail_stale(study)
        if objectives and len(objectives) == len(directions):
            name_metrics(study, objectives)
    return study


def name_metrics(study: optuna.Study, objectives: list[str]) -> None:
    """The study's metric names: each objective with its unit (`distortion [nats/example]`, `mse [per pixel]`)."""
    from vae_sweep.registry import METRICS

    names = [METRICS[o].label if o in METRICS else o for o in objectives]
    if study.metric_names != names:
        with warnings.catch_warnings():  # "experimental" in optuna since 3.2
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(names)


def differences(recorded: dict[str, str], settings: dict[str, str]) -> list[str]:
    """`key: study has a, this command has b` for each setting that differs."""
    default = "the default"
    return [
        f"{k}: study has {recorded.get(k, default)}, this command has {settings.get(k, default)}"
        for k in sorted(set(recorded) | set(settings))
        if recorded.get(k) != settings.get(k)
    ]


def make_storage(
    url: str | None, heartbeat: tuple[int, int] | None = None, retry_seconds: float = 0
) -> optuna.storages.BaseStorage | None:
    """An RDB storage, with Optuna's heartbeat when `heartbeat` = (interval, grace period) in seconds is given, whose
    calls outlast an outage of the database of up to `retry_seconds` (vae_sweep/sweep/outage.py).
    SQLite gets its folder created, a 60 s lock timeout so processes can share it, and write-ahead logging with
    synchronous=NORMAL: about 8 commits a trial then cost a millisecond each instead of an fsync each, and a crash
    can still lose only the last commit, never corrupt the file. (SQLAlchemy 2 pools file SQLite connections.)"""
    if url is None:
        return None
    require_driver(url)
    interval, grace = heartbeat or (None, None)
    kwargs: dict = {"heartbeat_interval": interval, "grace_period": grace}
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    with warnings.catch_warnings():  # the heartbeat is "experimental" in optuna 5, as it has been since 2.9
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = PatientStorage(url, **kwargs)
    storage.retry_seconds = retry_seconds
    if url.startswith("sqlite:///"):
        sqlalchemy.event.listen(storage.engine, "connect", _sqlite_pragmas)
        storage.engine.dispose()  # the connection optuna opened to create the tables has no pragmas: drop it
    return storage


def counts(trial: FrozenTrial) -> bool:
    """Whether a trial counts toward n_trials: it is running, or it finished (completed, pruned, diverged). An
    interrupted trial does not (a later one continues it), nor a failed one (its job raised: it says nothing of its
    parameters, and the failure budget, max_failure_rate of n_trials, bounds how many there may be)."""
    return trial.state == TrialState.RUNNING or trial.user_attrs.get("status") not in (INTERRUPTED, FAILED)


def fail_stale(study: optuna.Study) -> None:
    """Fail the study's RUNNING trials whose heartbeat is older than the grace period: their process died."""
    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    if not running:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    if stale := [
        t.number
        for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
        if t.number in running and t.user_attrs.get("status") == INTERRUPTED
    ]:
        log.warning("trial(s) %s stopped beating (their process died): marked interrupted", stale)


def beat(study: optuna.Study, trial_id: int) -> None:
    """Record one heartbeat of the trial, where the storage keeps them (not in memory)."""
    if heartbeat_interval(study._storage):
        study._storage.record_heartbeat(trial_id)


def heartbeat_interval(storage: optuna.storages.BaseStorage) -> int | None:
    """The storage's heartbeat interval in seconds; None where it keeps no heartbeats (in memory, or not set)."""
    return getattr(storage, "get_heartbeat_interval", lambda: None)()


@contextlib.contextmanager
def heartbeat(study: optuna.Study, trial_ids: Collection[int]) -> Iterator[None]:
    """Record the trials' heartbeats every heartbeat_interval seconds while the block runs (the trials' jobs), from
    a thread of this process: the one that will record their results. A storage without heartbeat does nothing."""
    storage, stop = study._storage, threading.Event()
    interval = heartbeat_interval(storage)

    def beat() -> None:
        while not stop.wait(interval):
            for trial_id in list(trial_ids):  # a set the sweep adds to and takes from while this runs
                try:
                    storage.record_heartbeat(trial_id)
                except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as e:  # the next may
                    log.warning("heartbeat of trial id %d not recorded: %s", trial_id, type(e).__name__)

    thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
    if interval:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        if interval:
            thread.join()


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
