"""Continuing interrupted trials: the sweep half of surviving preemption (the job half is vae_sweep/preemption.py).

An interrupted trial whose run dir holds a model.pt is continued by a new trial with the same parameters
(`next_resumption`): it trains the epochs left, or, when model.pt holds them all (the stop came during the final
evaluation), only evaluates it. User attributes `resume_of` (the old trial's number) and `resume` (its run dir), and
the job override `resume=<that run dir>`. Each trial is continued at most once, and only the continuing one counts.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from vae_sweep.registry import Status
from vae_sweep.sweep.trial import quoted

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

log = logging.getLogger(__name__)


def resumable(checkpoint: Path) -> tuple[int, int] | None:
    """(epochs done, epochs configured) of a checkpoint a trial can be continued from: fewer epochs than configured
    (training goes on), or all of them (the trial was stopped during its final evaluation, which the continuing trial
    runs); None when it is missing or unreadable. mmap: only the few numbers read are loaded."""
    if not checkpoint.is_file():
        return None
    try:
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
        done, configured = int(ckpt["epoch"]), int(ckpt["config"]["epochs"])
    except Exception:  # a truncated or foreign file: nothing to continue
        return None
    return (done, configured) if done <= configured else None


def next_resumption(trials: list[FrozenTrial]) -> tuple[FrozenTrial, Path] | None:
    """The first interrupted trial whose run dir holds a resumable model.pt and that no trial continues yet,
    with that run dir; None when there is none."""
    from optuna.trial import TrialState

    claimed = {t.user_attrs.get("resume_of") for t in trials}
    for t in trials:
        if t.state != TrialState.FAIL or t.user_attrs.get("status") != Status.INTERRUPTED or t.number in claimed:
            continue
        run_dir = t.user_attrs.get("run_dir") or (t.user_attrs.get("metrics") or {}).get("run_dir")
        if run_dir and (progress := resumable(Path(run_dir) / "model.pt")):
            how = "evaluating" if progress[0] == progress[1] else "continuing"
            log.info("trial %d was interrupted after %d of %d epochs: %s it from %s", t.number, *progress, how, run_dir)
            return t, Path(run_dir)
    return None


def enqueue_resumption(study: optuna.Study, trials: list[FrozenTrial]) -> str | None:
    """Enqueue the next interrupted trial to continue (`next_resumption`) with its parameters and user attributes
    `resume_of` and `resume`, so that `study.ask()` returns it; its job's override `resume=<run dir>`, or None."""
    if (resumed := next_resumption(trials)) is None:
        return None
    old, run_dir = resumed
    study.enqueue_trial(old.params, user_attrs={"resume_of": old.number, "resume": str(run_dir)})
    return f"resume={quoted(str(run_dir))}"
