"""The Optuna sweep behind `python -m vae_sweep --multirun`.

It is hydra-optuna-sweeper's own implementation (search-space parsing, trial configuration, the launcher
and its output format) with a different `sweep` loop, which fixes what the plugin's loop gets wrong for us:

- a NaN objective (a diverged run) crashed the whole sweep: here it is a failed trial, and the sweep goes on;
- `max_failure_rate` was judged per batch of n_jobs: here it is a budget for the whole study;
- `n_trials` is the size of the study, so running the same command again tops it up rather than adding
  n_trials more; trials left RUNNING by a killed process on this machine are marked failed (status
  interrupted) and do not count toward n_trials;
- the sampler is re-seeded from (seed, trial number) for each trial, so a resumed or shared study never
  re-draws points it already tried, and different seeds give independent streams;
- one study holds one experiment: it is named after the command's defining settings and records them
  (vae_sweep/study.py), so `model=conv` gets a study of its own instead of joining the MLP one;
- several processes can share one SQLite study: asking for a trial happens under a file lock;
- parallel trials (hydra/launcher=joblib) get torch threads so that together they use at most the cores;
- each trial's metrics.json goes into the study as user attributes, and a summary is written at the end.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import yaml
from hydra.core.utils import JobReturn
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_params_from_overrides
from vae_sweep.errors import ConfigError
from vae_sweep.study import experiment, named_explicitly, open_study, storage_lock, study_name
from vae_sweep.sweep_summary import write_summary

log = logging.getLogger(__name__)
WORKER = f"{socket.gethostname()}:{os.getpid()}"


class VaeOptunaSweeperImpl(OptunaSweeperImpl):
    def __init__(
        self,
        sampler: DictConfig,
        direction: Any,
        storage: str | None,
        study_name: str,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        params: DictConfig | None = None,
        search_space: DictConfig | None = None,
        custom_search_space: str | None = None,
    ) -> None:
        # The sampler stays a config (`_recursive_: false`): it is built anew for each trial with its own seed.
        super().__init__(
            sampler,
            direction,
            storage,
            study_name,
            n_trials,
            n_jobs,
            max_failure_rate,
            search_space,
            custom_search_space,
            params,
        )

    def sweep(self, arguments: list[str]) -> None:
        self._process_searchspace_config()
        dists, fixed = create_params_from_overrides(self._parse_sweeper_params_config() + list(arguments))
        dists = {**(self.search_space_distributions or {}), **dists}
        for key in fixed:
            dists.pop(key, None)
        check_search_space(self.config, dists, fixed)
        directions = self._get_directions()
        settings, defining = experiment(self.config, arguments)
        explicit = named_explicitly(self.config)
        name = self.study_name if explicit else study_name(self.study_name, defining)
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # our line below names the study, new or not
        study = open_study(self.storage, name, explicit, settings, directions, self._sampler(0))
        with storage_lock(self.storage):
            fail_dead_trials(study)
        parallel, threads = parallelism(self.n_jobs)
        log.info(
            "study %r in %s: %d trials already, %d asked in all; %d at a time with %d torch threads each",
            study.study_name,
            self.storage,
            len(study.trials),
            self.n_trials,
            parallel,
            threads,
        )
        while batch := self._ask(study, dists, fixed, parallel):
            trials, overrides = zip(*batch)
            overrides = [
                (*o, f"threads={threads}", "progress=false", f"hydra.sweep.subdir={t.number}")
                for t, o in zip(trials, overrides)
            ]
            returns = self._launch(study, trials, overrides, directions)
            for trial, ret in zip(trials, returns):
                record(study, trial, ret, len(directions))
            self._check_failure_budget(study)
        self._write_results(study, directions)

    def _launch(self, study: optuna.Study, trials: tuple, overrides: list, directions: list[str]) -> list[JobReturn]:
        """Run one batch of trials; on Ctrl-C mark them interrupted, write the results so far, and stop."""
        try:
            returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
        except KeyboardInterrupt:
            for trial in trials:
                finish(study, trial, TrialState.FAIL, None, {"status": "interrupted"})
            self._write_results(study, directions)
            raise SystemExit(
                f"interrupted: trial(s) {', '.join(str(t.number) for t in trials)} marked "
                "interrupted; run the same command again to resume the study"
            ) from None
        self.job_idx += len(returns)
        return list(returns)

    def _sampler(self, number: int) -> optuna.samplers.BaseSampler:
        """The configured sampler for trial `number`, seeded from (seed, number) when it has a seed. The pair
        goes through numpy's SeedSequence: `seed + number` would make seed 1's stream seed 0's, one trial on."""
        cfg = self.sampler
        if cfg.get("seed") is None:
            return instantiate(cfg)
        return instantiate(cfg, seed=int(np.random.SeedSequence([cfg.seed, number]).generate_state(1)[0]))

    def _ask(self, study: optuna.Study, dists: dict, fixed: dict, parallel: int) -> list[tuple]:
        """Up to `parallel` new trials with their overrides, while the study holds fewer than n_trials
        (interrupted trials, which produced nothing, do not count)."""
        batch = []
        for _ in range(parallel):
            with storage_lock(self.storage):
                trials = study.get_trials(deepcopy=False)
                if sum(t.user_attrs.get("status") != "interrupted" for t in trials) >= self.n_trials:
                    break
                study.sampler = self._sampler(len(trials))  # len(trials) is the next trial's number
                trial = study.ask()
                trial.set_user_attr("worker", WORKER)
                batch.append((trial, self._configure_trials([trial], dists, fixed)[0]))
        return batch

    def _check_failure_budget(self, study: optuna.Study) -> None:
        failed = [
            t
            for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
            if t.user_attrs.get("status") != "interrupted"
        ]
        budget = self.max_failure_rate * self.n_trials
        if len(failed) > budget:
            last = failed[-1]
            self._write_results(study, self._get_directions())
            raise SystemExit(
                f"error: sweep stopped: {len(failed)} trials failed, more than hydra.sweeper.max_failure_rate="
                f"{self.max_failure_rate} of n_trials={self.n_trials} allows; last: trial {last.number} "
                f"{last.user_attrs.get('status')} ({last.user_attrs.get('error', 'no message')})"
            )

    def _write_results(self, study: optuna.Study, directions: list[str]) -> None:
        write_summary(study, Path(self.config.hydra.sweep.dir), directions)


def check_search_space(config: DictConfig, dists: dict, fixed: dict) -> None:
    """Both ends of every searched range, every choice, and every fixed value must pass the job's own
    validation, so a sweep that could only fail stops here, before its first trial."""
    from vae_sweep.config import GROUPS
    from vae_sweep.validate import validate

    job_cfg = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
    for name, value in fixed.items():
        OmegaConf.update(job_cfg, name, yaml.safe_load(str(value)), force_add=True)
    for knob in ("beta", "latent_dim", "lr"):  # a searched knob that no group reads would be searched in vain
        if knob in dists and f"${{{knob}}}" not in OmegaConf.to_yaml(
            OmegaConf.masked_copy(config, [g for g in GROUPS if g in config])
        ):
            choices = config.hydra.runtime.choices
            raise SystemExit(
                f"error: hydra.sweeper.params.{knob}: no config group reads it "
                f"(loss={choices.get('loss')}, model={choices.get('model')}); use loss=beta to search beta"
            )
    checks = [("", job_cfg)]  # the fixed values, then each end of each range
    for name, dist in dists.items():
        for value in getattr(dist, "choices", None) or (dist.low, dist.high):
            cfg = job_cfg.copy()
            OmegaConf.update(cfg, name, value, force_add=True)
            checks.append((f"hydra.sweeper.params.{name} reaches {value}: ", cfg))
    for where, cfg in checks:
        try:
            validate(cfg)
        except ConfigError as e:
            raise SystemExit(f"error: {where}{e}") from None


def fail_dead_trials(study: optuna.Study) -> None:
    """A trial still RUNNING whose worker process on this machine is gone (killed) is marked failed."""
    host = socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker_host, _, pid = str(t.user_attrs.get("worker", "")).rpartition(":")
        if worker_host == host and pid.isdigit() and not _alive(int(pid)):
            log.warning("trial %d was left running by a process that is gone: marking it failed", t.number)
            study._storage.set_trial_user_attr(t._trial_id, "status", "interrupted")
            study._storage.set_trial_state(t._trial_id, TrialState.FAIL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def parallelism(n_jobs: int | None) -> tuple[int, int]:
    """(trials at once, torch threads per trial): never more threads in all than cores."""
    from vae_sweep.runtime import cpu_count

    cores = cpu_count()
    n = cores if n_jobs in (None, -1) else max(1, int(n_jobs))
    parallel = min(n, cores)
    return parallel, max(1, cores // parallel)


def record(study: optuna.Study, trial: optuna.Trial, ret: JobReturn, n_objectives: int) -> None:
    """Tell the study how the trial ended, with its metrics.json as user attributes."""
    metrics = read_metrics(Path(ret.hydra_cfg.hydra.runtime.output_dir))
    try:
        value = ret.return_value  # raises the job's exception when it failed
    except Exception as e:
        log.warning("trial %d failed: %s: %s", trial.number, type(e).__name__, e)
        return finish(
            study, trial, TrialState.FAIL, None, metrics | {"status": "failed", "error": f"{type(e).__name__}: {e}"}
        )
    values = [float(v) for v in (value if n_objectives > 1 else [value])]
    if len(values) != n_objectives or any(v != v or v in (float("inf"), float("-inf")) for v in values):
        log.warning("trial %d diverged: objectives %s", trial.number, values)
        return finish(study, trial, TrialState.FAIL, None, metrics | {"status": metrics.get("status", "diverged")})
    finish(study, trial, TrialState.COMPLETE, values, metrics)


def finish(
    study: optuna.Study, trial: optuna.Trial, state: TrialState, values: list[float] | None, attrs: dict
) -> None:
    trial.set_user_attr("status", attrs.get("status", "completed"))
    if attrs.get("error"):
        trial.set_user_attr("error", attrs["error"][:500])
    trial.set_user_attr("metrics", {k: v for k, v in attrs.items() if isinstance(v, (int, float, str)) or v is None})
    study.tell(trial, state=state, values=values)


def read_metrics(run_dir: Path) -> dict:
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        metrics = {}
    return metrics | {"run_dir": str(run_dir)}
