"""Surviving preemption: a job that gets SIGTERM or SIGUSR2 saves model.pt and ends `interrupted`; a sweep resumes it.

Slurm sends SIGTERM (through submitit, SIGUSR2) some time before it kills a job, and Ctrl-C sends SIGINT. While a
job trains, the handlers below turn each of them into a request to stop, which the training loop honours after the
optimiser step it is in (vae_sweep/train.py), so no step is cut in half: it raises `Preempted`, the checkpoint is saved with its position
inside the epoch, and metrics.json says `interrupted` with the signal's name. After training (the final metrics,
IWAE, pictures, which may take minutes) the handler raises at once: model.pt already holds every epoch.

`Preempted` is a KeyboardInterrupt, so that a sweep running the job in its own process stops the way Ctrl-C stops
it (vae_sweep/sweep/sweeper.py). A job that runs in another process than its sweep's (joblib, submitit) raises
`PreemptedJob`, an ordinary exception, instead: the launcher hands it back as a failed job, the sweep records the
trial `interrupted` (its metrics.json says so) and goes on.

A sweep continues an interrupted trial from its model.pt (vae_sweep/sweep/resumption.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass

log = logging.getLogger(__name__)
SIGNALS = ("SIGTERM", "SIGUSR2")  # what Slurm, and Slurm through submitit, send before killing a job
STOP_SIGNALS = (*SIGNALS, "SIGINT")  # ... and Ctrl-C, which stops a job the same way: model.pt saved, `interrupted`
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
    """While the block runs, SIGTERM, SIGUSR2 and SIGINT (Ctrl-C) set `request` (or raise `Preempted` when `request.defer` is off);
    the previous handlers come back afterwards. Only the main thread may set handlers: elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handle(signum: int, _frame: object) -> None:
        request.signal = signal.Signals(signum).name
        log.warning("%s received: saving model.pt and stopping", request.signal)
        if not request.defer:
            raise Preempted(request.signal)

    names = [n for n in STOP_SIGNALS if hasattr(signal, n)]  # SIGUSR2 does not exist on Windows
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
