"""How a trial ended, told to its study: its status and metrics.json as user attributes, its pictures as Optuna
artifacts, and the state Optuna keeps (COMPLETE, PRUNED, or FAIL for failed, diverged and interrupted trials).
The sweep loop (vae_sweep/sweep/sweeper.py) calls `record` for each job that returned and `record_lost` for each Slurm job
that ended with no result. A write error that every trial would meet (a full disk, an artifact store that cannot be
written) is recorded on the trial first, then stops the sweep (`SweepStopped`); any other error is the trial's own."""

from __future__ import annotations

import errno
import logging
from pathlib import Path

import numpy as np
import optuna
from hydra.core.utils import JobReturn
from optuna.trial import TrialState

from vae_sweep.errors import SweepStopped
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
    upload_error = _upload(study, trial, run_dir, artifact_dir)
    state = _outcome(study, trial, ret, n_objectives, metrics)
    if upload_error is not None and everywhere(upload_error):
        raise SweepStopped(
            f"error: sweep stopped: the artifact store hydra.sweeper.artifact_dir={artifact_dir} cannot be written "
            f"({_oserror(upload_error)}), as every trial would find; trial {trial.number} is recorded {state.name} "
            "without its pictures; fix it, or set hydra.sweeper.artifact_dir=null, and run the same command again"
        )
    return state


def _upload(study: optuna.Study, trial: optuna.Trial, run_dir: Path, artifact_dir: str | None) -> OSError | None:
    """Upload the run's pictures (before the trial is told: a finished trial takes no artifact); the store's error,
    logged, or None."""
    if study._storage.get_trial(trial._trial_id).state.is_finished():  # failed as stale meanwhile: `finish` says so
        return None
    try:
        upload_pictures(study, trial, run_dir, artifact_dir)
    except OSError as e:
        log.warning("trial %d: its pictures were not stored in %s: %s", trial.number, artifact_dir, _oserror(e))
        trial.set_user_attr("artifact_error", _oserror(e)[:500])
        return e
    return None


def _outcome(study: optuna.Study, trial: optuna.Trial, ret: JobReturn, n_objectives: int, metrics: dict) -> TrialState:
    """Tell the study how the job ended: its exception, its status, or its objective values."""
    try:
        value = ret.return_value  # raises the job's exception when it failed
    except Exception as e:
        surroundings = isinstance(e, OSError) and everywhere(e)
        if surroundings:  # not the parameters' failure: the failure budget leaves it out
            trial.set_user_attr("everywhere", True)
        state = _raised(study, trial, metrics, f"{type(e).__name__}: {e}")
        if surroundings:
            raise SweepStopped(
                f"error: sweep stopped: trial {trial.number} failed: {_oserror(e)}, as every trial would; "
                "its metrics.json and the study say failed; free space (or fix the folder) and run the same "
                "command again"
            ) from None
        return state
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


def everywhere(e: OSError) -> bool:
    """Whether a write error is the surroundings' (a full disk or quota, a read-only or forbidden folder), which
    every later trial would meet too, rather than this trial's alone."""
    return e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def _oserror(e: OSError) -> str:
    """`No space left on device: /path` (or the exception's own words when it has no errno)."""
    return f"{e.strerror}: {e.filename}" if e.strerror and e.filename else f"{type(e).__name__}: {e}"


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
