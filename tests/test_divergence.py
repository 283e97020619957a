"""A loss that stops being finite ends the run `diverged`, naming the first such step, though the loop reads the
losses back from the device only every CHECK_EVERY steps; and nothing trained on it reaches history.csv or model.pt."""

from __future__ import annotations

import csv
import json
import math
import os
import signal

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from helpers import compose_config
from vae_sweep import train
from vae_sweep.job import run
from vae_sweep.losses import BetaVAELoss
from vae_sweep.preemption import SWEEPER_PID, Preempted

SMALL = ["debug=tiny", "epochs=3", "max_batches=5", "eval.iwae_k=2", "eval.pictures=false", "threads=1"]
BAD_STEP = 7  # epoch 2's third step, of 5 an epoch


@pytest.fixture(autouse=True)
def inf_at_bad_step(monkeypatch):
    """loss=beta's loss is +inf at step BAD_STEP: its gradients are inf and NaN, so every later loss is NaN."""
    monkeypatch.delenv(SWEEPER_PID, raising=False)  # these jobs are not a sweep's
    beta_loss = BetaVAELoss.__call__

    def call(self, distortion, rate, step, **cond):
        terms = beta_loss(self, distortion, rate, step, **cond)
        if step == BAD_STEP:
            terms["loss"] = terms["loss"] * math.inf
        return terms

    monkeypatch.setattr(BetaVAELoss, "__call__", call)


def metrics(run_dir) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def only_epoch_one_was_kept(run_dir) -> None:
    rows = list(csv.DictReader(open(run_dir / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [1] and math.isfinite(float(rows[0]["train_loss"]))
    ckpt = torch.load(run_dir / "model.pt", weights_only=True)
    assert (ckpt["epoch"], ckpt["step"], ckpt["position"]["batch"]) == (1, 5, 0)
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def optimizer_steps() -> tuple[list[int], object]:
    """A count of optimiser steps taken, and the hook's handle."""
    steps = [0]

    def hook(_optimizer, _args, _kwargs) -> None:
        steps[0] += 1

    return steps, register_optimizer_step_post_hook(hook)


# CHECK_EVERY -> optimiser steps taken: the losses are read at epoch 2's end (step 10), or after step 8
@pytest.mark.parametrize("check_every, taken", [(train.CHECK_EVERY, 10), (4, 8)])
def test_an_inf_loss_ends_the_run_diverged_naming_its_step(tmp_path, monkeypatch, check_every, taken):
    monkeypatch.setattr(train, "CHECK_EVERY", check_every)
    steps, handle = optimizer_steps()
    try:
        run(compose_config(SMALL), tmp_path)
    finally:
        handle.remove()
    assert steps[0] == taken  # the steps after the inf loss cost no device sync each, and were spent
    m = metrics(tmp_path)
    assert m["status"] == "diverged" and m["error"] == f"loss is inf at step {BAD_STEP}"
    assert (m["epochs"], m["steps"]) == (1, BAD_STEP)  # the steps taken on finite losses
    assert "distortion" not in m
    only_epoch_one_was_kept(tmp_path)


def test_a_stop_request_after_an_unchecked_inf_loss_saves_no_spoiled_weights(tmp_path):
    """SIGTERM after step 9, two steps on NaN weights later and before any read: the loop checks before it would save
    its position, finds step 7, and stops as diverged; the job still ends for the signal, and model.pt is epoch 1's."""
    steps = [0]

    def hook(_optimizer, _args, _kwargs) -> None:
        steps[0] += 1
        if steps[0] == BAD_STEP + 2:
            os.kill(os.getpid(), signal.SIGTERM)

    handle = register_optimizer_step_post_hook(hook)
    try:
        with pytest.raises(Preempted):
            run(compose_config(SMALL), tmp_path)
    finally:
        handle.remove()
    m = metrics(tmp_path)
    assert (m["status"], m["signal"], m["epochs"], m["steps"]) == ("interrupted", "SIGTERM", 1, BAD_STEP)
    only_epoch_one_was_kept(tmp_path)


def test_first_non_finite_finds_the_first_of_several():
    values = [torch.tensor(v) for v in (1.0, 2.0, math.nan, math.inf, 3.0)]
    assert train.first_non_finite(values) == 2
    assert train.first_non_finite(values[:2]) is None
