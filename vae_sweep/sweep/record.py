"""How a trial ended, told to its study: its status and metrics.json as user attributes, its pictures as Optuna
artifacts, and the state Optuna keeps (COMPLETE, PRUNED, or FAIL for failed, diverged and interrupted trials).
The sweep loop (vae_sweep/sweep/sweeper.py) calls `record` for each job that returned and `record_lost` for each Slurm job
that ended with no result."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import optuna
from hydra.core.utils import JobReturn
from optuna.trial import TrialState

from vae_sweep.run_files import read_metrics
from vae_sweep.sweep.study import INTERRUPTED
from vae_sweep.sweep.trial import upload_pictures

log = logging.getLogger(__name__)


def record(
    study: optuna.Study, trial: optuna.Trial, ret: JobReturn, n_objectives: int, artifact_dir: str | None = None
) -> TrialState:
    """Tell the study how the trial ended, with its metrics.json as user attributes and its pictures as artifacts."""
    run_dir = Path(ret.hydra_cfg.hydra.runtime.output_dir)
    metrics = read_metrics(run_dir) | {"run_dir": str(run_dir)}
    upload_pictures(study, trial, run_dir, artifact_dir)
    try:
        value = ret.return_value  # raises the job's exception when it failed
    except Exception as e:
        return _raised(study, trial, metrics, f"{type(e).__name__}: {e}")
    if metrics.get("status") == "pruned":
        log.info("trial %d pruned after %s epoch(s)", trial.number, metrics.get("epochs"))
        return finish(study, trial, TrialState.PRUNED, None, metrics)
    try:
        values = np.atleast_1d(np.asarray(value, dtype=float)).tolist()  # a float, or a tuple of them
    except (TypeError, ValueError):
        values = []
    if len(values) != n_objectives or not all(np.isfinite(values)):
        log.warning("trial %d diverged: objectives %s", trial.number, values)
        return finish(study, trial, TrialState.FAIL, None, metrics | {"status": metrics.get("status", "diverged")})
    return finish(study, trial, TrialState.COMPLETE, values, metrics)


def record_lost(study: optuna.Study, trial: optuna.Trial, run_dir: Path, error: BaseException) -> TrialState:
    """A trial whose job ended with no result to return: Slurm killed it (time limit, memory, node failure,
    preemption, scancel) or its process died. What its metrics.json says goes into the study, with the first line of
    submitit's error (the rest is the job's traceback)."""
    metrics = read_metrics(run_dir) | {"run_dir": str(run_dir)}
    first = (str(error).strip().splitlines() or [""])[0]
    return _raised(study, trial, metrics, f"{type(error).__name__}: {first}")


def _raised(study: optuna.Study, trial: optuna.Trial, metrics: dict, error: str) -> TrialState:
    """A job that raised `error`, or died: `interrupted` when its metrics.json says so (it saved itself on a signal,
    in a worker process: it does not count, and a later trial continues it), else `failed` with the error."""
    if metrics.get("status") == INTERRUPTED:
        log.warning("trial %d interrupted (%s): a later trial continues it", trial.number, metrics.get("signal"))
        return finish(study, trial, TrialState.FAIL, None, metrics)
    log.warning("trial %d failed: %s", trial.number, error)
    return finish(study, trial, TrialState.FAIL, None, metrics | {"status": "failed", "error": error})


def finish(
    study: optuna.Study, trial: optuna.Trial, state: TrialState, values: list[float] | None, attrs: dict
) -> TrialState:
    """Record the trial's status and metrics and tell the study. A trial that another process already failed as
    stale (its heartbeats were held up for longer than the grace period) stays so: its result is in its run dir."""
    if study._storage.get_trial(trial._trial_id).state.is_finished():
        why = "heartbeats held up beyond hydra.sweeper.grace_period"
        log.warning("trial %d was failed as stale while it ran (%s): it stays interrupted", trial.number, why)
        return TrialState.FAIL
    trial.set_user_attr("status", attrs.get("status", "completed"))
    if attrs.get("error"):
        trial.set_user_attr("error", attrs["error"][:500])
    trial.set_user_attr("metrics", {k: v for k, v in attrs.items() if isinstance(v, (int, float, str)) or v is None})
    try:
        study.tell(trial, state=state, values=values)
    except RuntimeError as e:  # the grid sampler stops "the optimize loop" once its grid is done: there is none
        if "Study.stop" not in str(e):
            raise
    return state
