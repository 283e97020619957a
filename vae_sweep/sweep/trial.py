"""A sweep trial as its job sees it: a handle on the study trial, for pruning; and its pictures as Optuna artifacts.

hydra-optuna-sweeper gives a job no trial object (hydra issues #1710, #1954, #3201), and a job may run in another
process or on another machine (joblib, submitit), so no in-memory object can cross. When the study has a storage, the
sweeper adds the trial's address to the job's overrides instead:

    +trial.storage=<the study's storage URL, a SQLite path made absolute> +trial.study=<study name> +trial.number=<n>

and they land in the run's config (`.hydra/config.yaml`, key `trial`). The job reopens the trial from them and,
after every epoch, reports its validation objective (`val_<objective>` of history.csv; for `iwae_nll`, the negative
ELBO, its upper bound, since an IWAE pass every epoch would cost iwae_k times the validation) at step = the epoch,
and stops when the sweep's pruner (`hydra/sweeper/pruner=...`, read from the job's Hydra config) says so; one-objective
sweeps report whether a pruner is set or not, so that optuna-dashboard draws each trial's learning curve. A job of a
sweep with several objectives opens no connection to the study: its loggers use the study name and trial number.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from vae_sweep.sweep.locks import shown

log = logging.getLogger(__name__)
STORAGE_ENV = "VAE_SWEEP_STORAGE"  # the study's whole URL, password included, for the jobs a sweep launches
PICTURES = "*.png"  # what goes into the study as artifacts, from each trial's run dir
# objective -> the history.csv column reported after each epoch (an IWAE pass every epoch would cost iwae_k times the
# validation, so iwae_nll reports its upper bound); an objective not listed has no per-epoch value and cannot be pruned
EPOCH_VALUE = {
    "distortion": "val_distortion",
    "rate": "val_rate",
    "neg_elbo": "val_neg_elbo",
    "mse": "val_mse",
    "iwae_nll": "val_neg_elbo",
}


def pruning(pruner: Any) -> bool:
    """Whether `pruner` can prune at all (optuna's NopPruner, `hydra/sweeper/pruner=none`, cannot)."""
    import optuna

    return pruner is not None and not isinstance(pruner, optuna.pruners.NopPruner)


def refusal(pruner: Any, n_objectives: int, objective: str | None, storage: str | None) -> str | None:
    """Why `pruner` cannot work in this sweep, or None when it can (or prunes nothing)."""
    if not pruning(pruner):
        return None
    if n_objectives > 1:  # a trial's place on a front has no median, and optuna's Trial.report refuses
        return (
            f"Optuna prunes single-objective studies only (there is no median of {n_objectives} objectives); "
            "use hydra/sweeper/pruner=none, or one objective (sweep=elbo)"
        )
    if objective not in EPOCH_VALUE:
        return (
            f"objectives=[{objective}] has no value after each epoch to prune on (those that do: "
            f"{', '.join(EPOCH_VALUE)}); use hydra/sweeper/pruner=none"
        )
    if not storage:
        return (
            "jobs reach their trial through the study's storage, and hydra.sweeper.storage is null; give a "
            "database URL (the default is sqlite:///multirun/<name>.db)"
        )
    return None


def handle_overrides(storage: str, study: str, number: int) -> tuple[str, ...]:
    """The job overrides that address trial `number` of `study` in `storage`. Overrides are logged and saved in the
    run's .hydra/, so a password never goes into them: the handle shows it as ***, and the whole URL goes to the jobs
    in the environment (STORAGE_ENV), which local processes, joblib's workers and Slurm jobs (sbatch exports the
    submitting environment) inherit."""
    if storage.startswith("sqlite:///"):  # a job under submitit may start in another folder
        storage = "sqlite:///" + str(Path(storage.removeprefix("sqlite:///")).resolve())
    if (hidden := shown(storage)) != storage:
        os.environ[STORAGE_ENV] = storage
    return f"+trial.storage={quoted(hidden)}", f"+trial.study={quoted(study)}", f"+trial.number={number}"


def storage_url(handle_storage: str) -> str:
    """The URL a job reaches its study at: the handle's own, or, where the handle hides a password, the sweep's."""
    full = os.environ.get(STORAGE_ENV)
    return full if full and shown(full) == handle_storage else handle_storage


def quoted(text: str) -> str:
    """`text` as a quoted Hydra override value (study names hold `[`, `,` and `=`)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def epoch_reporter(cfg: DictConfig) -> Callable[[dict], bool] | None:
    """For a one-objective sweep trial: a function of an epoch's history row that reports its validation objective
    to the trial as an intermediate value (optuna-dashboard draws them as learning curves) and says whether the
    pruner, if any, stops it. None otherwise: Optuna has no intermediate values for several objectives (the loggers
    show those per epoch, vae_sweep/loggers.py)."""
    handle, objectives = cfg.get("trial"), cfg.get("objectives") or ()
    if not handle or len(objectives) != 1 or objectives[0] not in EPOCH_VALUE:
        return None
    try:
        trial = open_trial(handle)
    except Exception as e:  # without a pruner the curve is a nicety: a job that cannot reach the study trains on
        if prunes():
            raise
        log.warning("no intermediate values for trial %s: its study is out of reach (%s)", handle.number, e)
        return None
    key, pruning_here = EPOCH_VALUE[cfg.objectives[0]], prunes()
    reachable = [True]

    def report(row: dict) -> bool:
        if not reachable[0]:
            return False
        try:
            trial.report(float(row[key]), step=int(row["epoch"]))
            return trial.should_prune()
        except Exception as e:  # the database went away for longer than the storage retries
            if pruning_here:
                raise
            log.warning("trial %s: no more intermediate values, its study is out of reach (%s)", handle.number, e)
            reachable[0] = False
            return False

    return report


def prunes() -> bool:
    """Whether the sweep that launched this job has a pruner that can prune (not `hydra/sweeper/pruner=none`)."""
    from hydra.core.hydra_config import HydraConfig

    pruner = HydraConfig.get().sweeper.get("pruner") if HydraConfig.initialized() else None
    return bool(pruner) and pruner.get("_target_") != "optuna.pruners.NopPruner"


def open_trial(handle: DictConfig):
    """The study trial that `handle` (storage, study, number) addresses, under the sweep's pruner."""
    import optuna
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate

    from vae_sweep.sweep.study import make_storage
    from vae_sweep.trust import sweeper_targets

    sweeper = HydraConfig.get().sweeper
    pruner = instantiate(sweeper.pruner, _execution_whitelist_=list(sweeper_targets()))
    storage = make_storage(storage_url(handle.storage), retry_seconds=float(sweeper.get("storage_retry_seconds") or 0))
    study = optuna.load_study(
        study_name=handle.study, storage=storage, pruner=pruner, sampler=optuna.samplers.RandomSampler()
    )  # the job samples nothing: the cheapest
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(handle.study), int(handle.number)
    )
    return optuna.trial.Trial(study, trial_id)


def upload_pictures(study, trial, run_dir: Path, artifact_dir: str | None) -> list[str]:
    """Store the run's pictures as the trial's artifacts in a file store at `artifact_dir` (created; None: none),
    where optuna-dashboard shows them beside the trial (`--artifact-dir`). Returns the artifact ids."""
    if not artifact_dir:
        return []
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    pictures = sorted(run_dir.glob(PICTURES))
    if not pictures:
        return []
    Path(artifact_dir).mkdir(parents=True, exist_ok=True)
    store = FileSystemArtifactStore(artifact_dir)
    return [upload_artifact(artifact_store=store, file_path=str(p), study_or_trial=trial) for p in pictures]
