"""Trials as Slurm jobs (`hydra/launcher=submitit_slurm`): how many at once, with how many threads, and the jobs in
flight, each recorded as soon as it ends so that its slot takes the next trial.

Hydra's launchers take a batch of jobs and return when all of them have ended: right for the basic and joblib
launchers, whose jobs run here side by side, but on a cluster one job still queued would hold every free slot. So
for Slurm the sweeper submits each trial as its own job through the launcher's executor, with the launcher itself as
the job's callable (what `SlurmLauncher.launch` submits, one job at a time instead of an array), and polls the jobs.
That reaches past the launcher's `launch` into how it builds its executor: hydra-submitit-launcher is pinned to 1.4.x
and tests/test_plugin_surface.py fails the day that changes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

SLURM_LAUNCHER = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
POLL_SECONDS = 2.0  # between looks at the queue (submitit caches squeue/sacct answers itself)


def remote(launcher: DictConfig | None) -> bool:
    """Whether the launcher runs each job on the cluster's machines, so that this machine's cores do not bound it."""
    return launcher is not None and launcher.get("_target_") == SLURM_LAUNCHER


def cluster_parallelism(n_jobs: int | None, launcher: DictConfig) -> tuple[int, int]:
    """(trials at once, torch threads per trial) on Slurm: hydra.sweeper.n_jobs trials, each a job with
    hydra.launcher.cpus_per_task threads (Slurm gives a task one CPU when that is unset)."""
    parallel = 1 if n_jobs in (None, -1) else max(1, int(n_jobs))
    return parallel, int(launcher.get("cpus_per_task") or 1)


def executor(launcher: Any) -> Any:
    """A submitit Slurm executor set up from the launcher's parameters, as `BaseSubmititLauncher.launch` sets one."""
    import submitit

    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    kind, params = launcher._EXECUTOR, dict(launcher.params)
    init = {"folder": params.pop("submitit_folder")}
    for key in ("max_num_timeout", "python"):
        if key in params:
            init[f"{kind}_{key}"] = params.pop(key)
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    ex = submitit.AutoExecutor(cluster=kind, **init)
    ex.update_parameters(**{k if k in base else f"{kind}_{k}": v for k, v in params.items()})
    return ex


@dataclass
class InFlight:
    """The trials whose Slurm jobs are out."""

    launcher: Any
    jobs: dict[int, tuple[Any, Any]] = field(default_factory=dict)  # trial number -> (optuna trial, submitit job)
    _executor: Any = None

    def __len__(self) -> int:
        return len(self.jobs)

    def submit(self, trial: Any, overrides: list[str]) -> None:
        """One Slurm job that runs the trial: the launcher's own job callable, with the trial's overrides."""
        from hydra.core.singleton import Singleton

        if self._executor is None:
            self._executor = executor(self.launcher)
        job = self._executor.submit(
            self.launcher, list(overrides), "hydra.sweep.dir", trial.number, f"job_id_for_{trial.number}",
            Singleton.get_state(),
        )  # fmt: skip
        self.jobs[trial.number] = (trial, job)
        log.info("trial %d: Slurm job %s: %s", trial.number, job.job_id, " ".join(overrides))

    def ended(self, timeout: float) -> list[tuple[Any, Any, BaseException | None]]:
        """The trials whose jobs have ended, waiting up to `timeout` seconds for one: (trial, JobReturn or None,
        the error that the job's result raised: it failed on the cluster, or was cancelled)."""
        deadline = time.monotonic() + timeout
        while True:
            done = [n for n, (_, job) in self.jobs.items() if job.done()]
            if done or time.monotonic() >= deadline:
                break
            time.sleep(POLL_SECONDS)
        out = []
        for n in done:
            trial, job = self.jobs.pop(n)
            try:
                out.append((trial, job.result(), None))
            except Exception as e:  # submitit's FailedJobError / UncompletedJobError, with the job's traceback
                out.append((trial, None, e))
        return out

    def cancel(self) -> list[str]:
        """scancel every job still out; their ids."""
        ids = []
        for _, job in self.jobs.values():
            job.cancel(check=False)
            ids.append(str(job.job_id))
        return ids
