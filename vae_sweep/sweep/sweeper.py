"""The Optuna sweep behind `python -m vae_sweep --multirun`.

It is hydra-optuna-sweeper 1.4's implementation (search-space parsing, trial configuration, the launcher and its
output format) with vae_sweep's own `sweep` loop, which adds:

- a NaN or infinite objective is a failed trial recorded as `diverged` (metrics.json's status), not an anonymous
  failure, and a trial that raised is `failed` with its error; the sweep goes on;
- `max_failure_rate` is a budget for the whole study (the plugin judges it per batch of n_jobs, so with one trial
  at a time a single failure stops it);
- `n_trials` is the size of the study (the plugin adds n_trials more on every run), so running the same command
  again tops it up, and several processes sharing one study add up to exactly n_trials: counting and asking happen
  under a lock (vae_sweep/sweep/locks.py: an flock beside a SQLite study, PostgreSQL's advisory lock on a server);
- trials whose process died anywhere are found by Optuna's heartbeat (`heartbeat_interval`, `grace_period`):
  this process beats for the trials it launched while their jobs run, so a trial is alive as long as the process
  that will record it is; one that stopped beating is failed with status `interrupted` and does not count;
- the sampler is re-seeded from (seed, trial number) for each trial, so a resumed or shared study never re-draws
  points it already tried, and different seeds give independent streams;
- one study holds one experiment (vae_sweep/sweep/study.py);
- parallel trials (hydra/launcher=joblib) get torch threads so that together they use at most the cores;
- a job that gets SIGTERM or SIGUSR2 (Slurm's warning) saves model.pt and ends `interrupted`; a later trial takes its
  parameters and continues it from there (`resume=<its run dir>`; vae_sweep/preemption.py, resumption.py);
- each job gets a handle on its study trial as overrides (`+trial.storage=... +trial.study=... +trial.number=...`: no
  in-memory object, so any launcher works); in a one-objective sweep it reports its validation objective after every
  epoch (trial.py), which a pruner (`hydra/sweeper/pruner=median|successive_halving|hyperband`) may act on (pruned
  trials are PRUNED), and the loggers name their runs from it (vae_sweep/loggers.py);
- a line per finished trial says how far the sweep is (progress.py), and the study names its objectives with units;
- each trial's metrics.json goes into the study as user attributes, its pictures as Optuna artifacts (shown by
  optuna-dashboard), and a summary is written at the end;
- `hydra/sweeper/sampler=grid` gets the search space it needs;
- a fault every trial would meet (a full disk, an artifact store that cannot be written) is recorded on its trial,
  then stops the sweep in one line (vae_sweep/sweep/record.py); a database outage is outlasted for
  `storage_retry_seconds` (vae_sweep/sweep/outage.py); waiting for other workers' trials lasts `wait_seconds` at most.

Mistakes and stops are raised below as `ConfigError` or `SweepStopped`; `sweep` alone turns them into one line.
"""

from __future__ import annotations

import functools
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from hydra.core.utils import JobReturn
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_params_from_overrides
from vae_sweep.errors import ConfigError, SweepStopped, VaeSweepError, one_line
from vae_sweep.preemption import Preempted, mark_sweeper_process
from vae_sweep.runtime import torch_threads
from vae_sweep.sweep.cluster import InFlight, cluster_parallelism, remote
from vae_sweep.sweep.outage import StorageLost
from vae_sweep.sweep.progress import Progress
from vae_sweep.sweep.record import finish, record, record_lost
from vae_sweep.sweep.resumption import enqueue_resumption
from vae_sweep.sweep.search_space import check_search_space, ends
from vae_sweep.sweep.settings import build
from vae_sweep.sweep.storage import check_storage
from vae_sweep.sweep.study import (
    INTERRUPTED,
    beat,
    counts,
    experiment,
    fail_stale,
    heartbeat,
    named_explicitly,
    open_study,
    shown,
    storage_lock,
    study_name,
)
from vae_sweep.sweep.summary import write_summary
from vae_sweep.sweep.trial import handle_overrides, refusal

log = logging.getLogger(__name__)
WAIT_SECONDS = 2  # between looks at a study that is full only because others' trials still run


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
        custom_search_space: str | None = None,
        pruner: DictConfig | None = None,
        heartbeat_interval: int = 10,
        grace_period: int = 30,
        artifact_dir: str | None = None,
        storage_retry_seconds: float = 60,
        wait_seconds: float = 3600,
    ) -> None:
        # The sampler stays a config (`_recursive_: false`): it is built anew for each trial with its own seed.
        super().__init__(
            sampler, direction, storage, study_name, n_trials, n_jobs, max_failure_rate, custom_search_space, params
        )
        self.pruner_cfg, self.artifact_dir = pruner, artifact_dir
        self.heartbeat = (int(heartbeat_interval), int(grace_period))
        self.retry_seconds, self.wait_seconds = float(storage_retry_seconds), float(wait_seconds)

    def sweep(self, arguments: list[str]) -> None:
        """The sweep's entry point: a mistake or a stop raised below ends it here, in one line."""
        try:
            self._sweep(arguments)
        except VaeSweepError as e:
            raise SystemExit(one_line(e)) from None
        except KeyboardInterrupt:  # Ctrl-C between two trials (one during a trial is handled where it runs)
            raise SystemExit(
                "interrupted between trials: every finished trial is recorded; run the same command again"
            ) from None

    def _sweep(self, arguments: list[str]) -> None:
        self._process_searchspace_config()
        searched = self._parse_sweeper_params_config() + list(arguments)  # the config's params, then the command's
        dists, fixed, fixed_overrides = create_params_from_overrides(searched)
        for key in fixed:
            dists.pop(key, None)
        check_search_space(self.config, {k: ends(d) for k, d in dists.items()}, fixed)
        self._dists = dists
        directions = self._get_directions()
        pruner = self._pruner(len(directions))
        settings, defining = experiment(self.config, arguments)
        explicit = named_explicitly(self.config)
        name = self.study_name if explicit else study_name(self.study_name, defining)
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # our line below names the study, new or not
        check_storage(self.storage)  # before Optuna or Alembic touch it
        objectives = list(self.config.get("objectives") or ())
        sampler = self._sampler(0)
        study = open_study(
            self.storage, name, explicit, settings, directions, sampler, pruner, *self._patience, objectives=objectives
        )
        launcher = self.config.hydra.get("launcher")
        on_slurm = remote(launcher)
        if on_slurm:
            parallel, threads = cluster_parallelism(self.n_jobs, launcher)
        else:
            parallel, threads = parallelism(self.n_jobs, self.config.get("threads"))
        log.info(
            "study %r in %s: %d trials already, %d to finish (failed or interrupted trials do not count; more than %d "
            "failures stop the sweep); %d at a time with %d torch threads each%s",
            study.study_name,
            shown(self.storage),
            len(study.trials),
            self.n_trials,
            self._failure_budget(),
            parallel,
            threads,
            ", each a Slurm job" if on_slurm else "",
        )
        handles = bool(self.storage)  # intermediate values, the pruner and the loggers' trial (sweep/trial.py)

        def job_overrides(trial: optuna.Trial, overrides: list[str]) -> list[str]:
            return [
                *overrides,
                f"threads={threads}",
                "progress=false",
                f"hydra.sweep.subdir={trial.number}",
                *(handle_overrides(self.storage, study.study_name, trial.number) if handles else ()),
            ]

        run = self._stream if on_slurm else self._batches
        self.progress = Progress(
            self.n_trials, objectives or [f"objective {i}" for i in range(len(directions))]
        )  # a line per finished trial (vae_sweep/sweep/progress.py)
        try:
            run(study, (dists, fixed, fixed_overrides), parallel, job_overrides, directions)
        finally:
            self.progress.close()
        self._write_results(study, directions)

    def _batches(self, study: optuna.Study, space: tuple, parallel: int, job_overrides, directions: list[str]) -> None:
        """The basic and joblib launchers: `parallel` trials at a time, each batch recorded when all of it has ended."""
        while batch := self._next_batch(study, *space, parallel):
            trials, overrides = zip(*batch)
            overrides = [job_overrides(t, o) for t, o in zip(trials, overrides)]
            returns = self._launch(study, trials, overrides, directions)
            stops = []
            for trial, ret in zip(trials, returns):  # every trial of the batch is recorded before a fault stops it
                try:
                    record(study, trial, ret, len(directions), self.artifact_dir)
                except SweepStopped as e:
                    stops.append(e)
                self.progress.trial_done(study, trial)
            if stops:
                self._write_results(study, directions)
                raise stops[0]
            self._check_failure_budget(study)

    def _launch(self, study: optuna.Study, trials: tuple, overrides: list, directions: list[str]) -> list[JobReturn]:
        """Run one batch of trials, beating their heartbeats meanwhile; on Ctrl-C mark them interrupted, write the
        results so far, and stop."""
        mark_sweeper_process()  # a job preempted in this process stops the sweep; one in a worker does not
        try:
            with heartbeat(study, [t._trial_id for t in trials]):
                returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM/SIGUSR2 to a job in this process (Preempted)
            how = f"interrupted ({e.signal})" if isinstance(e, Preempted) else "interrupted"
            raise SweepStopped(
                f"{how}: trial(s) {self._interrupted(study, trials, directions)} marked "
                "interrupted; run the same command again to resume the study"
                + (" (they continue from their model.pt)" if isinstance(e, Preempted) else "")
            ) from None
        self.job_idx += len(returns)
        return list(returns)

    def _stream(self, study: optuna.Study, space: tuple, parallel: int, job_overrides, directions: list[str]) -> None:
        """Slurm: keep `parallel` trials' jobs out, record each as it ends and ask the next in its place
        (vae_sweep/sweep/cluster.py); this process beats for them meanwhile. On Ctrl-C, cancel them and mark them
        interrupted."""
        mark_sweeper_process()  # a job preempted on the cluster is a result to record, not the sweep's own end
        out, alive, asked = InFlight(self.launcher), set(), []
        sweep_dir = Path(self.config.hydra.sweep.dir)
        try:
            with heartbeat(study, alive):
                while True:
                    batch = self._ask(study, *space, parallel - len(out)) if len(out) < parallel else []
                    # nothing out, nothing to ask: the study is full, or others' trials still run (wait for them)
                    if not batch and not len(out) and not (batch := self._next_batch(study, *space, parallel)):
                        break
                    asked = [trial for trial, _ in batch]  # until each is out: Ctrl-C marks them too
                    for trial, overrides in batch:
                        alive.add(trial._trial_id)
                        out.submit(trial, job_overrides(trial, overrides))
                    asked = []
                    for trial, ret, error in out.ended(timeout=self.heartbeat[0]):
                        alive.discard(trial._trial_id)
                        if error is None:
                            record(study, trial, ret, len(directions), self.artifact_dir)
                        else:
                            record_lost(study, trial, sweep_dir / str(trial.number), error)
                        self.progress.trial_done(study, trial)
                        self._check_failure_budget(study)
        except KeyboardInterrupt:
            marked, cancelled = self._call_back(study, out, asked, directions)
            raise SweepStopped(
                f"interrupted: trial(s) {marked} marked interrupted and their Slurm job(s) {cancelled} cancelled; "
                "run the same command again to resume"
            ) from None
        except SweepStopped as e:  # a full disk, the failure budget: the jobs still out stop too, and are marked
            if isinstance(e, StorageLost) or not out.jobs:  # (a lost database marks nothing: their trials go stale)
                raise
            marked, cancelled = self._call_back(study, out, [], directions)
            raise SweepStopped(
                f"{e} (trial(s) {marked} still out marked interrupted, Slurm job(s) {cancelled} cancelled)"
            ) from None

    def _call_back(self, study: optuna.Study, out: InFlight, asked: list, directions: list[str]) -> tuple[str, str]:
        """Cancel the Slurm jobs still out and mark their trials, and those `asked` but not yet out, interrupted;
        (the trials' numbers, the jobs' ids), listed."""
        trials = [trial for trial, _ in out.jobs.values()]
        trials += [t for t in asked if t.number not in out.jobs]
        cancelled = out.cancel()
        return self._interrupted(study, trials, directions), ", ".join(cancelled) or "none"

    def _interrupted(self, study: optuna.Study, trials: list, directions: list[str]) -> str:
        """Mark the trials interrupted (they do not count) and write the results so far; their numbers, listed."""
        for trial in trials:
            finish(study, trial, TrialState.FAIL, None, {"status": INTERRUPTED})
        self._write_results(study, directions)
        return ", ".join(str(t.number) for t in trials) or "none"

    def _sampler(self, number: int) -> optuna.samplers.BaseSampler:
        """The configured sampler for trial `number`, seeded from (seed, number) when it has a seed. The pair
        goes through numpy's SeedSequence: `seed + number` would make seed 1's stream seed 0's, one trial on."""
        cfg, seed = self.sampler, {}
        if cfg.get("seed") is not None:
            seed = {"seed": int(np.random.SeedSequence([cfg.seed, number]).generate_state(1)[0])}
        sampler = self._build("sampler", cfg, **seed)
        if isinstance(sampler, functools.partial):  # the grid sampler takes the search space; a study holds it once
            grid = {k: self._to_grid_sampler_choices(d) for k, d in self._dists.items()}
            self.n_trials = min(self.n_trials, int(np.prod([len(v) for v in grid.values()])))
            sampler = sampler(grid)
        return sampler

    def _build(self, group: str, cfg: DictConfig, **kwargs: Any) -> Any:
        """The sampler or pruner that `cfg` names; a mistake in it stops the sweep in one line (check_argv has
        refused it already when the sweep came from `python -m vae_sweep`)."""
        return build(f"hydra/sweeper/{group}", cfg, self.config, **kwargs)

    def _pruner(self, n_objectives: int) -> optuna.pruners.BasePruner:
        """The configured pruner; one that cannot work here stops the sweep before any trial, in one line."""
        pruner = self._build("pruner", self.pruner_cfg) if self.pruner_cfg else optuna.pruners.NopPruner()
        objective = (self.config.get("objectives") or [None])[0]
        if why := refusal(pruner, n_objectives, objective, self.storage):
            choice = self.config.hydra.runtime.choices.get("hydra/sweeper/pruner")
            raise ConfigError(f"hydra/sweeper/pruner={choice}: {why}")
        return pruner

    @property
    def _patience(self) -> tuple[tuple[int, int], float]:
        """open_study's (heartbeat interval, grace period) and storage retry seconds."""
        return self.heartbeat, self.retry_seconds

    def _failure_budget(self) -> int:
        """How many failed trials the study may hold before the sweep stops."""
        return int(self.max_failure_rate * self.n_trials)

    def _next_batch(
        self, study: optuna.Study, dists: dict, fixed: dict, fixed_overrides: list, parallel: int
    ) -> list[tuple]:
        """The next batch of trials; when the study is full only because trials of other processes still run,
        wait for them to finish or go stale (their process died, whether or not it ever beat), then ask again.
        The wait lasts `wait_seconds` at most, then the sweep stops in one line saying what is left."""
        said, deadline = None, time.monotonic() + self.wait_seconds
        while True:
            batch = self._ask(study, dists, fixed, fixed_overrides, parallel)
            running = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
            if batch or not running:
                return batch
            if time.monotonic() > deadline:
                done = sum(map(counts, study.get_trials(deepcopy=False))) - len(running)
                raise SweepStopped(
                    f"error: sweep stopped: waited {self.wait_seconds:g} s (hydra.sweeper.wait_seconds) for trial(s) "
                    f"{running} running elsewhere; the study has {done} of n_trials={self.n_trials} finished: run the "
                    "same command again to wait for them or replace them once they go stale"
                )
            if running != said:
                log.info(
                    "study full but trial(s) %s still running elsewhere: waiting up to %g s for them to end, or to go "
                    "stale %d s after their last heartbeat",
                    running,
                    max(0.0, deadline - time.monotonic()),
                    self.heartbeat[1],
                )
                said = running
            time.sleep(min(self.heartbeat[0], WAIT_SECONDS))

    def _ask(self, study: optuna.Study, dists: dict, fixed: dict, fixed_overrides: list, parallel: int) -> list[tuple]:
        """Up to `parallel` new trials with their overrides, while the study holds fewer than n_trials.
        A trial is `interrupted` from the moment it is asked until its result is recorded, so one whose process dies
        (and whose heartbeat the next sweep finds stale) is already marked, and does not count."""
        batch = []
        for _ in range(parallel):
            with storage_lock(self.storage, study.study_name, self.retry_seconds):
                fail_stale(study)
                trials = study.get_trials(deepcopy=False)
                if sum(map(counts, trials)) >= self.n_trials:
                    break
                start = time.perf_counter()
                study.sampler = self._sampler(len(trials))  # len(trials) is the next trial's number
                resume = enqueue_resumption(study, trials)  # an interrupted trial's, to continue from its model.pt
                # The sampler on one torch thread: GP's tensors are a few hundred numbers. On two threads its
                # suggestions took 0.17 s on an idle 2-core machine but 0.35 s beside one busy process and 1.1 s on a
                # loaded machine; on one, 0.22-0.24 s throughout (benchmarks/RESULTS.md, issue 20)
                with warnings.catch_warnings(), torch_threads(1):
                    warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)  # we beat ourselves
                    trial = study.ask()  # takes the enqueued trial first: its parameters are the old trial's
                    overrides = self._configure_trials([trial], dists, fixed, fixed_overrides)[0]  # the suggestions
                overrides = (*overrides, resume) if resume else overrides
                trial.set_user_attr("sample_seconds", round(time.perf_counter() - start, 4))  # the sampler's cost
                trial.set_user_attr("status", INTERRUPTED)
                if sweep_dir := OmegaConf.select(self.config, "hydra.sweep.dir"):  # where a later sweep finds model.pt
                    trial.set_user_attr("run_dir", str(Path(sweep_dir).resolve() / str(trial.number)))
                beat(study, trial._trial_id)  # alive from the start, before its job's first beat
                batch.append((trial, overrides))
        return batch

    def _check_failure_budget(self, study: optuna.Study) -> None:
        failed = [
            t
            for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
            if t.user_attrs.get("status") != INTERRUPTED and not t.user_attrs.get("everywhere")  # not a full disk
        ]
        if len(failed) > self._failure_budget():
            last = failed[-1]
            self._write_results(study, self._get_directions())
            raise SweepStopped(
                f"error: sweep stopped: {len(failed)} trials failed, more than hydra.sweeper.max_failure_rate="
                f"{self.max_failure_rate} of n_trials={self.n_trials} allows; last: trial {last.number} "
                f"{last.user_attrs.get('status')} ({last.user_attrs.get('error', 'no message')})"
            )

    def _write_results(self, study: optuna.Study, directions: list[str]) -> None:
        """summary.md and optimization_results.yaml; a disk that cannot take them is logged, not raised: the study
        holds every result, and `python scripts/analyze.py` writes them again."""
        try:
            write_summary(study, Path(self.config.hydra.sweep.dir), directions)
        except OSError as e:
            log.error("summary.md not written in %s: %s", self.config.hydra.sweep.dir, e.strerror or e)


def parallelism(n_jobs: int | None, threads: int | None = None) -> tuple[int, int]:
    """(trials at once, torch threads per trial): never more threads in all than cores, nor more per trial than
    the command's own `threads=` (on a busy machine one thread per trial can be far faster than two)."""
    from vae_sweep.runtime import cpu_count

    cores = cpu_count()
    n = cores if n_jobs in (None, -1) else max(1, int(n_jobs))
    parallel = min(n, cores)
    return parallel, max(1, min(cores // parallel, threads or cores))
