"""A sweep's progress: one log line per finished trial, and a bar over the trials when the output is a terminal.

    trial 7 (8/30) completed: distortion=95.31 nats  rate=24.12 nats  on the front (5 trials)  beta=0.1388
    latent_dim=8  elapsed 1m12s, ETA 3m40s

`k/n` counts the study's finished trials (those of earlier or other processes too) against n_trials; the ETA is this
process's mean time per trial times the trials left. The line is a plain log line (no tqdm frame, no carriage return),
so a log file holds one line per trial; on a terminal a tqdm bar over trials sits below the lines. While a sweep runs,
the per-job lines that repeat what this line says (the launcher's `#0 : overrides`, each epoch, the job's last line)
are quieted to warnings in the sweep's process.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time

import optuna
from optuna.trial import TrialState

from vae_sweep.registry import in_units

log = logging.getLogger(__name__)
# the sweep process's loggers whose INFO lines each trial's progress line replaces
QUIETED = (
    "hydra._internal.core_plugins.basic_launcher",  # `Launching 1 jobs locally`, `#0 : beta=0.13880253392729852 ...`
    "hydra_plugins.hydra_joblib_launcher._core",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher",
    "vae_sweep.train",
    "vae_sweep.pictures",
    "vae_sweep.job",
)


WORDS = {TrialState.COMPLETE: "completed", TrialState.FAIL: "failed", TrialState.PRUNED: "pruned"}  # metrics.json's


def duration(seconds: float) -> str:
    """`42s`, `3m05s`, `2h07m`."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def params_line(params: dict) -> str:
    """A trial's parameters at 4 significant digits: `beta=0.1388 latent_dim=8 model=conv`."""
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items()))


class Progress:
    """Says after each recorded trial how far the sweep is; `close` when the sweep ends."""

    def __init__(self, n_trials: int, objectives: list[str], bar: bool | None = None) -> None:
        self.n_trials, self.objectives = n_trials, list(objectives)
        self.start, self.done = time.monotonic(), 0
        self.quieted = {name: logging.getLogger(name).level for name in QUIETED}
        for name in QUIETED:
            logging.getLogger(name).setLevel(logging.WARNING)
        self.stack, self.bar = contextlib.ExitStack(), None
        if sys.stderr.isatty() if bar is None else bar:
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self.stack.enter_context(logging_redirect_tqdm())  # log lines print above the bar, not through it
            self.bar = self.stack.enter_context(tqdm(total=n_trials, desc="trials", unit="trial", leave=False))

    def trial_done(self, study: optuna.Study, trial: optuna.Trial) -> None:
        """Log the line of `trial`, just recorded in `study`."""
        from vae_sweep.sweep.study import counts

        self.done += 1
        trials = study.get_trials(deepcopy=False)
        k = sum(1 for t in trials if counts(t) and t.state != TrialState.RUNNING)
        frozen = next(t for t in trials if t.number == trial.number)
        elapsed = time.monotonic() - self.start
        left = max(0, self.n_trials - k)
        eta = f"ETA {duration(elapsed / self.done * left)}" if left else "done"
        status = frozen.user_attrs.get("status", WORDS.get(frozen.state, frozen.state.name.lower()))
        values = dict(zip(self.objectives, frozen.values)) if frozen.values and frozen.state.is_finished() else {}
        parts = [
            f"trial {trial.number} ({k}/{self.n_trials}) {status}:"
            + (f" {in_units(values, self.objectives)}" if values else ""),
            self.front(study, trials, frozen) if values else "",
            params_line(frozen.params),
            f"elapsed {duration(elapsed)}, {eta}",
        ]
        log.info("%s", "  ".join(p for p in parts if p))
        if self.bar is not None:
            self.bar.n = min(k, self.n_trials)
            self.bar.refresh()

    def front(self, study: optuna.Study, trials: list, trial) -> str:
        """Whether the trial joined the Pareto front (several objectives) or is the best so far (one), from the
        trials already fetched (a second fetch, `study.best_trials`, would double the cost on a large study)."""
        from vae_sweep.pareto import pareto_mask

        done = [t for t in trials if t.state == TrialState.COMPLETE]
        if not done:
            return "no trial completed yet"
        directions = [d.name.lower() for d in study.directions]
        if len(directions) == 1:
            sign = 1 if directions[0] == "minimize" else -1
            best = [min(done, key=lambda t: sign * t.value)]
        elif len(directions) == 2:
            best = [t for t, on in zip(done, pareto_mask([t.values for t in done], directions)) if on]
        else:
            best = study.best_trials
        on = any(t.number == trial.number for t in best)
        if len(self.objectives) > 1:
            return f"{'on' if on else 'off'} the front ({len(best)} trial{'s' if len(best) != 1 else ''})"
        return "best so far" if on else f"best: trial {best[0].number}"

    def close(self) -> None:
        self.stack.close()
        for name, level in self.quieted.items():
            logging.getLogger(name).setLevel(level)
