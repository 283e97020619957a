"""The training loop: one epoch of shuffled batches, and `fit`, which validates and saves after every epoch.

The loop is plain PyTorch: data sits on the device as one tensor and batches are taken by index from a
seeded permutation, so there is no DataLoader, no per-sample transform and no worker process.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from vae_sweep.checkpoint import save_checkpoint
from vae_sweep.checks import check_fits_in_memory
from vae_sweep.contracts import check_members, check_model
from vae_sweep.data import ImageData, as_float
from vae_sweep.evaluate import validation_terms
from vae_sweep.families import DEFAULT_NODES, OPTION, check_family
from vae_sweep.hydra_api import instantiate_group
from vae_sweep.losses import BetaConditionedLoss, Likelihood, Loss, distortion_and_rate
from vae_sweep.models import VAE, UserVAE, count_parameters
from vae_sweep.preemption import Preempted, StopRequest
from vae_sweep.registry import Status
from vae_sweep.run_files import write_history
from vae_sweep.runtime import autocast_dtype

log = logging.getLogger(__name__)

CHECK_EVERY = 50  # optimiser steps between reads of whether the loss is finite: each read waits for the device


@dataclass
class Parts:
    """Everything built from config for one run."""

    model: VAE
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    loss: Loss  # __call__(distortion (B,), rate (B,), step) -> dict of scalar terms (losses.Loss)
    likelihood: Likelihood  # losses.Bernoulli or losses.Gaussian
    scaler: torch.amp.GradScaler | None = None  # precision=16 only: fp16 gradients need loss scaling


@dataclass
class TrainState:
    """What a checkpoint restores: progress, history and every random stream the loop draws from."""

    epoch: int = 0  # completed epochs
    step: int = 0  # optimiser steps taken
    history: list[dict] = field(default_factory=list)
    shuffle: torch.Generator = field(default_factory=torch.Generator)
    status: Status = Status.COMPLETED  # or Status.DIVERGED, Status.PRUNED
    reason: str | None = None  # why it diverged
    train_seconds: float = 0.0
    batch: int = 0  # batches of epoch `epoch + 1` already done: nonzero only in a checkpoint saved mid-epoch
    partial: dict[str, list[torch.Tensor]] = field(default_factory=dict)  # those batches' loss terms, per step
    stop: StopRequest = field(default_factory=StopRequest)  # set by SIGTERM/SIGUSR2 (vae_sweep/preemption.py)


def build(cfg: DictConfig, input_shape: tuple[int, int, int], device: torch.device) -> Parts:
    """Instantiate model, optimizer, scheduler, loss and likelihood from their config groups. The model is built
    on the `meta` device first, which allocates nothing, so one too large for `device` is refused with its size.
    A loss that conditions the model (loss=multirate) wraps it: one model for every beta, told each example's."""
    with torch.device("meta"):
        sized = instantiate_group(cfg.model, "model", input_shape=input_shape)
    if isinstance(sized, nn.Module):  # not a module: refused below, by the contract
        check_fits_in_memory(cfg, count_parameters(sized), device)
    loss = instantiate_group(cfg.loss, "loss")
    check_members(loss, "loss", str(cfg.loss._target_))
    prior, posterior = build_family(cfg, input_shape, loss)
    model = build_model(cfg, input_shape).use(prior, posterior)
    if isinstance(loss, BetaConditionedLoss):
        model = loss.condition(model)
        model.set_beta(cfg.eval.beta)  # the beta it is validated and pictured at
    model = model.to(device)
    optimizer = instantiate_group(cfg.optimizer, "optimizer")(model.parameters())
    scheduler = instantiate_group(cfg.scheduler, "scheduler")(optimizer) if cfg.get("scheduler") else None
    likelihood = instantiate_group(cfg.likelihood, "likelihood")
    check_members(likelihood, "likelihood", str(cfg.likelihood._target_))
    scaler = torch.amp.GradScaler(device.type) if autocast_dtype(cfg.get("precision", 32)) == torch.float16 else None
    return Parts(model, optimizer, scheduler, loss, likelihood, scaler)


def build_model(cfg: DictConfig, input_shape: tuple[int, int, int]) -> VAE:
    """The model of `cfg.model`: one of vae_sweep's own, or the user's, checked against `contracts.Model` on a tiny
    batch of the data's shape and wrapped as a `VAE` (`models.UserVAE`)."""
    model = instantiate_group(cfg.model, "model", input_shape=input_shape)
    if isinstance(model, VAE):
        return model
    check_model(model, input_shape, str(cfg.model._target_))
    return UserVAE(model)


def build_family(cfg: DictConfig, input_shape: tuple[int, int, int], loss: Loss):
    """The prior and the posterior of conf/prior/ and conf/posterior/ (vae_sweep/families.py), refused in one line
    where the loss cannot use them; a config without the groups gets their defaults."""
    nodes = {g: cfg.get(g) or OmegaConf.create(DEFAULT_NODES[g]) for g in ("prior", "posterior")}
    prior = instantiate_group(nodes["prior"], "prior", input_shape=input_shape)
    posterior = instantiate_group(nodes["posterior"], "posterior")
    for group, part in (("prior", prior), ("posterior", posterior)):
        check_members(part, group, str(nodes[group]._target_))
    check_family(loss, prior, posterior, tuple(OPTION.get(n._target_, n._target_) for n in nodes.values()))
    return prior, posterior


def train_epoch(parts: Parts, data: ImageData, cfg: DictConfig, state: TrainState) -> dict[str, float]:
    """One pass over the training set in shuffled batches. Returns the mean of each loss term, or stops early
    with state.status = "diverged" when the loss stops being finite (and returns no terms).

    The hot loop (benchmarks/bench.py measures it): settings are read from the config once rather than per step
    (a DictConfig lookup costs microseconds), each term's values are kept per step and summed once at the end
    rather than added up step by step, and nothing waits for the device: whether the loss is finite is read from
    the kept values every CHECK_EVERY steps and at the epoch's end (`first_non_finite`). A loss that turns
    non-finite is therefore followed by up to CHECK_EVERY - 1 optimiser steps on NaN or inf gradients, which only
    spoil the weights in memory: the run ends `diverged`, nothing of that epoch is written (`_epoch` writes
    history.csv and model.pt only after a finite epoch), and the reason names the first step whose loss was not
    finite, with state.step set back to it.

    Preemption: when state.stop is set (a signal), it stops after the step in progress and raises `Preempted` with
    its position in state (batch, partial, and the shuffle stream rewound to the epoch's start), for model.pt; a run
    resumed from that checkpoint regenerates the same order and goes on from the next batch. The steps not yet
    checked are checked first, so a checkpoint never holds weights trained on a non-finite loss."""
    model, optimizer, loss, likelihood = parts.model, parts.optimizer, parts.loss, parts.likelihood
    x_all, batch_size, sample = data.train_x, int(cfg.batch_size), loss.stochastic
    multirate = isinstance(loss, BetaConditionedLoss)  # loss=multirate: a beta per example, to model and loss
    samples, dynamic = getattr(loss, "samples", 1), data.binarize == "dynamic"  # loss=iwae: k draws per example
    autocast, scaler = precision_context(cfg, x_all.device), parts.scaler  # precision=bf16|16: forward and loss
    model.train()
    epoch_start, stop = state.shuffle.get_state(), state.stop
    order = torch.randperm(len(x_all), generator=state.shuffle).to(x_all.device)
    n_batches = len(x_all) // batch_size  # drop the last partial batch: BatchNorm needs full batches
    if cfg.max_batches:
        n_batches = min(n_batches, cfg.max_batches)
    values = state.partial  # term -> its scalar value at each step (a mid-epoch checkpoint's steps first)
    first, state.batch, state.partial = state.batch, 0, {}
    checked = len(values.get("loss", ()))  # steps whose loss is known to be finite (a checkpoint's were)
    for b in range(first, n_batches):
        x = as_float(x_all[order[b * batch_size : (b + 1) * batch_size]])  # (B, C, H, W) in [0, 1]
        x = torch.bernoulli(x) if dynamic else x  # dataset.binarize=dynamic: a fresh binary image each time
        cond = {"beta": loss.sample_beta(len(x), x.device)} if multirate else {}  # beta: (B,)
        with autocast:
            t = distortion_and_rate(model, likelihood, x, sample, samples, **cond)
            terms = loss(t.distortion, t.rate, state.step, **cond)
        optimize(optimizer, scaler, terms["loss"])
        state.step += 1
        for k, v in terms.items():
            values.setdefault(k, []).append(v.detach())
        if state.step % CHECK_EVERY == 0 or b == n_batches - 1 or stop.signal is not None:
            if diverged(state, values["loss"], checked):
                return {}
            checked = len(values["loss"])
        if stop.signal is not None:
            state.batch, state.partial = b + 1, values
            state.shuffle.set_state(epoch_start)
            raise Preempted(stop.signal)
    return {k: torch.stack(v).float().sum().item() / len(v) for k, v in values.items()}  # bf16 terms summed in fp32


def optimize(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None, loss: torch.Tensor) -> None:
    """One optimiser step on `loss`. precision=16 scales the loss so that small gradients survive fp16, and the
    scaler skips a step whose gradients overflowed (then lowers the scale)."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()


def diverged(state: TrainState, losses: list[torch.Tensor], checked: int) -> bool:
    """Whether a loss since the first `checked` steps of the epoch is not finite (one read from the device); if so,
    state says diverged, naming the first such step, and state.step goes back to it."""
    bad = first_non_finite(losses[checked:])
    if bad is None:
        return False
    value, at = losses[checked + bad].item(), state.step - (len(losses) - checked - bad)
    state.status, state.reason, state.step = Status.DIVERGED, f"loss is {value} at step {at}", at
    log.warning("%s: stopping, status=diverged", state.reason)
    return True


def first_non_finite(losses: list[torch.Tensor]) -> int | None:
    """The index of the first loss that is NaN or infinite, or None when all are finite. losses: scalar tensors."""
    finite = torch.isfinite(torch.stack(losses))  # (k,), on the device
    if bool(finite.all()):  # the one sync
        return None
    return int((~finite).nonzero()[0, 0])


def precision_context(cfg: DictConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """torch.autocast for precision=bf16 or 16 (the weights, their gradients and Adam's moments stay fp32), and a
    context that does nothing for 32. Evaluation never runs under it: metrics stay fp32 (vae_sweep/evaluate.py)."""
    dtype = autocast_dtype(cfg.get("precision", 32))
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def fit(
    parts: Parts,
    data: ImageData,
    cfg: DictConfig,
    state: TrainState,
    out_dir: Path,
    progress: bool,
    after_epoch: Callable[[dict], bool] | None = None,
) -> TrainState:
    """Train from state.epoch to cfg.epochs; after each epoch validate, append to history.csv and save model.pt.
    `after_epoch(history row)` sees every epoch's row (the loggers, a sweep's intermediate values); returning True
    stops training with status pruned (a sweep's pruner, vae_sweep/sweep/trial.py). The bar shows only on a terminal:
    redirected to a file, tqdm's frames would share lines with the log.
    A stop request (state.stop) raises `Preempted` once model.pt holds every finished step."""
    with logging_redirect_tqdm():  # log lines print above the bar instead of through it
        bar = tqdm(
            range(state.epoch, cfg.epochs), desc="epochs", disable=not (progress and sys.stderr.isatty()), leave=False
        )
        for epoch in bar:
            _epoch(parts, data, cfg, state, out_dir, epoch, bar)
            if state.status == Status.DIVERGED:
                break
            # every epoch goes to the hook (loggers, a sweep's intermediate values); a stop only before the last
            if after_epoch is not None and after_epoch(state.history[-1]) and state.epoch < cfg.epochs:
                state.status = Status.PRUNED
                log.info("pruned after epoch %d/%d", state.epoch, cfg.epochs)
                break
            state.stop.check()  # a signal during validation: model.pt has just been saved
    return state


def _epoch(parts: Parts, data: ImageData, cfg: DictConfig, state: TrainState, out_dir: Path, epoch: int, bar) -> None:
    """Train one epoch, then validate, append to history.csv and save model.pt."""
    start = time.perf_counter()
    try:
        train_terms = train_epoch(parts, data, cfg, state)
    except Preempted:
        state.train_seconds += time.perf_counter() - start
        save_checkpoint(out_dir / "model.pt", parts, state, cfg)  # with the position inside the epoch
        raise
    if state.status == Status.DIVERGED:
        return
    if parts.scheduler is not None:
        parts.scheduler.step()
    val = validation_terms(parts.model, parts.likelihood, data.val_x, parts.loss.stochastic, cfg.eval.batch_size)
    if not all(math.isfinite(val[k]) for k in ("distortion", "rate", "mse")):
        state.status, state.reason = Status.DIVERGED, f"validation terms are not finite after epoch {epoch + 1}"
        log.warning("%s: stopping, status=diverged", state.reason)
        return
    state.train_seconds += time.perf_counter() - start
    state.epoch = epoch + 1
    row = {"epoch": state.epoch, "step": state.step, "lr": parts.optimizer.param_groups[0]["lr"]}
    row |= {f"train_{k}": v for k, v in train_terms.items()}
    keys = ("distortion", "rate", "neg_elbo", "mse") if parts.loss.stochastic else ("distortion", "mse")
    row |= {f"val_{k}": val[k] for k in keys}
    row["seconds"] = state.train_seconds
    state.history.append(row)
    write_history(out_dir / "history.csv", state.history)
    save_checkpoint(out_dir / "model.pt", parts, state, cfg)
    bar.set_postfix(loss=f"{train_terms['loss']:.1f}", val_distortion=f"{val['distortion']:.1f}")
    log.info("epoch %d/%d  %s", state.epoch, cfg.epochs, _fmt(row))


def _fmt(row: dict) -> str:
    return "  ".join(f"{k}={v:.4g}" for k, v in row.items() if k not in ("epoch",) and isinstance(v, float))
