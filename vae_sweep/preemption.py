"""Surviving preemption: a job that gets SIGTERM or SIGUSR2 saves model.pt and ends `interrupted`; a sweep resumes it.

Slurm sends SIGTERM (through submitit, SIGUSR2) some time before it kills a job. While a job trains, the handlers
below turn either signal into a request to stop, which the training loop honours after the optimiser step it is in
(vae_sweep/train.py), so no step is cut in half: it raises `Preempted`, the checkpoint is saved with its position
inside the epoch, and metrics.json says `interrupted` with the signal's name. After training (the final metrics,
IWAE, pictures, which may take minutes) the handler raises at once: model.pt already holds every epoch.

`Preempted` is a KeyboardInterrupt, so that a sweep running the job in its own process stops the way Ctrl-C stops
it (vae_sweep/sweeper.py). A job that runs in another process than its sweep's (joblib, submitit) raises
`PreemptedJob`, an ordinary exception, instead: the launcher hands it back as a failed job, the sweep records the
trial `interrupted` (its metrics.json says so) and goes on.

In the sweep, an interrupted trial whose run dir holds a model.pt with fewer epochs than it was configured for is
continued by a new trial with the same parameters (`next_resumption`): user attributes `resume_of` (the old trial's
number) and `resume` (its run dir), and the job override `resume=<that run dir>`. Each trial is continued at most once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from vae_sweep.metrics import Status

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

log = logging.getLogger(__name__)
SIGNALS = ("SIGTERM", "SIGUSR2")  # what Slurm, and Slurm through submitit, send before killing a job
SWEEPER_PID = "VAE_SWEEP_SWEEPER_PID"  # set by the sweep before it launches jobs: the process that records them


class Preempted(KeyboardInterrupt):
    """A signal asked the job to stop; model.pt holds everything done so far."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal = signal_name
        self.run_dir: str | None = None  # set by the job once metrics.json is written


class PreemptedJob(RuntimeError):
    """`Preempted`, raised by a job in another process than its sweep's: a failed job to the launcher, which the
    sweep records as interrupted (from metrics.json) before going on."""


@dataclass
class StopRequest:
    """Set by a signal handler, read by the training loop after each optimiser step (a plain attribute check)."""

    signal: str | None = None  # the name of the signal received, or None
    defer: bool = True  # True while training: wait for the step to end; False: raise from the handler at once

    def check(self) -> None:
        if self.signal is not None:
            raise Preempted(self.signal)


@contextlib.contextmanager
def stop_on_signals(request: StopRequest) -> Iterator[StopRequest]:
    """While the block runs, SIGTERM and SIGUSR2 set `request` (or raise `Preempted` when `request.defer` is off);
    the previous handlers come back afterwards. Only the main thread may set handlers: elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handle(signum: int, _frame: object) -> None:
        request.signal = signal.Signals(signum).name
        log.warning("%s received: saving model.pt and stopping", request.signal)
        if not request.defer:
            raise Preempted(request.signal)

    names = [n for n in SIGNALS if hasattr(signal, n)]  # SIGUSR2 does not exist on Windows
    previous = {n: signal.signal(getattr(signal, n), handle) for n in names}
    try:
        yield request
    finally:
        for n, old in previous.items():
            signal.signal(getattr(signal, n), old)


def mark_sweeper_process() -> None:
    """Called by the sweep before it launches jobs: a job in this very process stops the sweep when preempted."""
    os.environ[SWEEPER_PID] = str(os.getpid())


def in_worker() -> bool:
    """Whether this job runs in another process than the sweep that records it (joblib, submitit)."""
    pid = os.environ.get(SWEEPER_PID)
    return pid is not None and pid != str(os.getpid())


def unfinished(checkpoint: Path) -> tuple[int, int] | None:
    """(epochs done, epochs configured) of a checkpoint that has fewer epochs than its run was configured for;
    None when it is missing, unreadable or complete. mmap: only the few numbers read are loaded."""
    if not checkpoint.is_file():
        return None
    try:
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
        done, configured = int(ckpt["epoch"]), int(ckpt["config"]["epochs"])
    except Exception:  # a truncated or foreign file: nothing to continue
        return None
    return (done, configured) if done < configured else None


def next_resumption(trials: list[FrozenTrial]) -> tuple[FrozenTrial, Path] | None:
    """The first interrupted trial whose run dir holds an unfinished model.pt and that no trial continues yet,
    with that run dir; None when there is none."""
    from optuna.trial import TrialState

    claimed = {t.user_attrs.get("resume_of") for t in trials}
    for t in trials:
        if t.state != TrialState.FAIL or t.user_attrs.get("status") != Status.INTERRUPTED or t.number in claimed:
            continue
        run_dir = t.user_attrs.get("run_dir") or (t.user_attrs.get("metrics") or {}).get("run_dir")
        if run_dir and (progress := unfinished(Path(run_dir) / "model.pt")):
            log.info(
                "trial %d was interrupted after %d of %d epochs: continuing it from %s", t.number, *progress, run_dir
            )
            return t, Path(run_dir)
    return None


def enqueue_resumption(study: optuna.Study, trials: list[FrozenTrial]) -> str | None:
    """Enqueue the next interrupted trial to continue (`next_resumption`) with its parameters and user attributes
    `resume_of` and `resume`, so that `study.ask()` returns it; its job's override `resume=<run dir>`, or None."""
    from vae_sweep.trial import quoted

    if (resumed := next_resumption(trials)) is None:
        return None
    old, run_dir = resumed
    study.enqueue_trial(old.params, user_attrs={"resume_of": old.number, "resume": str(run_dir)})
    return f"resume={quoted(str(run_dir))}"
