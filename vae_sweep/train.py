"""The training loop, checkpoints, and the small run-output files (history.csv, model.pt).

The loop is plain PyTorch: data sits on the device as one tensor and batches are taken by index from a
seeded permutation, so there is no DataLoader, no per-sample transform and no worker process.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from vae_sweep.data import ImageData, as_float
from vae_sweep.errors import ConfigError, instantiate
from vae_sweep.evaluate import validation_terms
from vae_sweep.losses import rate
from vae_sweep.models import VAE

log = logging.getLogger(__name__)


@dataclass
class Parts:
    """Everything built from config for one run."""

    model: VAE
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    loss: object  # a losses.*Loss: __call__(distortion (B,), rate (B,), step) -> dict of scalar terms
    likelihood: object  # losses.Bernoulli or losses.Gaussian


@dataclass
class TrainState:
    """What a checkpoint restores: progress, history and every random stream the loop draws from."""

    epoch: int = 0  # completed epochs
    step: int = 0  # optimiser steps taken
    history: list[dict] = field(default_factory=list)
    shuffle: torch.Generator = field(default_factory=torch.Generator)
    status: str = "completed"  # or "diverged"
    reason: str | None = None  # why it diverged
    train_seconds: float = 0.0


def build(cfg: DictConfig, input_shape: tuple[int, int, int], device: torch.device) -> Parts:
    """Instantiate model, optimizer, scheduler, loss and likelihood from their config groups."""
    model = instantiate(cfg.model, "model", input_shape=input_shape).to(device)
    optimizer = instantiate(cfg.optimizer, "optimizer")(model.parameters())
    scheduler = instantiate(cfg.scheduler, "scheduler")(optimizer) if cfg.get("scheduler") else None
    return Parts(model, optimizer, scheduler, instantiate(cfg.loss, "loss"), instantiate(cfg.likelihood, "likelihood"))


def train_epoch(parts: Parts, data: ImageData, cfg: DictConfig, state: TrainState) -> dict[str, float]:
    """One pass over the training set in shuffled batches. Returns the mean of each loss term, or stops early
    with state.status = "diverged" when the loss stops being finite.

    The hot loop (benchmarks/bench.py measures it): settings are read from the config once rather than per step
    (a DictConfig lookup costs microseconds), and each term's values are kept per step and summed once at the end
    rather than added up step by step."""
    model, optimizer, loss, likelihood = parts.model, parts.optimizer, parts.loss, parts.likelihood
    x_all, batch_size, sample = data.train_x, int(cfg.batch_size), loss.stochastic
    model.train()
    order = torch.randperm(len(x_all), generator=state.shuffle).to(x_all.device)
    n_batches = len(x_all) // batch_size  # drop the last partial batch: BatchNorm needs full batches
    if cfg.max_batches:
        n_batches = min(n_batches, cfg.max_batches)
    values: dict[str, list[torch.Tensor]] = {}  # term -> its scalar value at each step
    for b in range(n_batches):
        x = as_float(x_all[order[b * batch_size : (b + 1) * batch_size]])  # (B, C, H, W) in [0, 1]
        logits, mu, logvar = model(x, sample=sample)
        terms = loss(likelihood.distortion(logits, x), rate(mu, logvar), state.step)
        if not torch.isfinite(terms["loss"]):
            state.status, state.reason = "diverged", f"loss is {terms['loss'].item()} at step {state.step}"
            log.warning("%s: stopping, status=diverged", state.reason)
            break
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimizer.step()
        state.step += 1
        for k, v in terms.items():
            values.setdefault(k, []).append(v.detach())
    return {k: torch.stack(v).sum().item() / len(v) for k, v in values.items()}


def fit(parts: Parts, data: ImageData, cfg: DictConfig, state: TrainState, out_dir: Path, progress: bool) -> TrainState:
    """Train from state.epoch to cfg.epochs; after each epoch validate, append to history.csv and save model.pt."""
    with logging_redirect_tqdm():  # log lines print above the bar instead of through it
        bar = tqdm(range(state.epoch, cfg.epochs), desc="epochs", disable=not progress, leave=False)
        for epoch in bar:
            _epoch(parts, data, cfg, state, out_dir, epoch, bar)
            if state.status == "diverged":
                break
    return state


def _epoch(parts: Parts, data: ImageData, cfg: DictConfig, state: TrainState, out_dir: Path, epoch: int, bar) -> None:
    """Train one epoch, then validate, append to history.csv and save model.pt."""
    start = time.perf_counter()
    train_terms = train_epoch(parts, data, cfg, state)
    if state.status == "diverged":
        return
    if parts.scheduler is not None:
        parts.scheduler.step()
    val = validation_terms(parts.model, parts.likelihood, data.val_x, parts.loss.stochastic, cfg.eval.batch_size)
    if not all(math.isfinite(val[k]) for k in ("distortion", "rate", "mse")):
        state.status, state.reason = "diverged", f"validation terms are not finite after epoch {epoch + 1}"
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


# --- files ----------------------------------------------------------------------------------------------


def atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder and rename it over `path`, so a reader never sees a
    half-written file and a crash never leaves one. `write(tmp_path)` does the writing."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def write_history(path: Path, rows: list[dict]) -> None:
    fields = list(dict.fromkeys(k for row in rows for k in row))

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)

    atomic_write(path, write)


def save_checkpoint(path: Path, parts: Parts, state: TrainState, cfg: DictConfig) -> None:
    """model.pt: model, optimizer, scheduler, progress, RNG states and the resolved config, all of it
    plain tensors and containers, so that `torch.load(weights_only=True)` reads it back."""
    ckpt = {
        "model": parts.model.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict() if parts.scheduler is not None else None,
        "epoch": state.epoch,
        "step": state.step,
        "history": state.history,
        "train_seconds": state.train_seconds,
        "rng": {"torch": torch.get_rng_state(), "shuffle": state.shuffle.get_state()},
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    if torch.cuda.is_available():
        ckpt["rng"]["cuda"] = torch.cuda.get_rng_state_all()
    atomic_write(path, lambda tmp: torch.save(ckpt, tmp))


def checkpoint_path(resume: str) -> Path:
    """`resume` may name a run dir (holding model.pt) or the model.pt file itself."""
    path = Path(resume)
    path = path / "model.pt" if path.is_dir() else path
    if not path.is_file():
        raise ConfigError(f"resume={resume}: no checkpoint there; give a run dir that holds model.pt, or a model.pt file")
    return path


def load_checkpoint(resume: str, cfg: DictConfig) -> dict:
    """Read a checkpoint safely (weights_only=True: no code runs) and check that it fits this run's config."""
    path = checkpoint_path(resume)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated file, or one holding more than tensors and containers
        raise ConfigError(f"resume={resume}: cannot read {path} as a vae_sweep checkpoint ({type(e).__name__})") from e
    missing = {"model", "optimizer", "epoch", "step", "history", "rng", "config"} - set(ckpt)
    if missing:
        raise ConfigError(f"resume={resume}: {path} is not a vae_sweep checkpoint (no {', '.join(sorted(missing))})")
    now = OmegaConf.to_container(cfg, resolve=True)
    for key in ("latent_dim", "model", "dataset"):
        for (k, a), (_, b) in zip(_leaves(key, ckpt["config"][key]), _leaves(key, now[key])):
            if a != b:
                raise ConfigError(f"resume={resume}: the checkpoint has {k}={a}, this run asks for {k}={b}; they must match")
    if ckpt["epoch"] >= cfg.epochs:
        raise ConfigError(f"epochs={cfg.epochs}: the checkpoint already has {ckpt['epoch']} epochs; set epochs above that to continue")
    return ckpt


def _leaves(prefix: str, node: object) -> list[tuple[str, object]]:
    """('model.hidden', [400]) pairs of a nested config, in a stable order."""
    if not isinstance(node, dict):
        return [(prefix, node)]
    return [leaf for k in sorted(node) for leaf in _leaves(f"{prefix}.{k}", node[k])]


def restore(parts: Parts, ckpt: dict, state: TrainState) -> None:
    """Put model, optimizer, scheduler, progress and RNG streams back where the checkpoint left them."""
    parts.model.load_state_dict(ckpt["model"])
    parts.optimizer.load_state_dict(ckpt["optimizer"])
    if parts.scheduler is not None and ckpt["scheduler"] is not None:
        parts.scheduler.load_state_dict(ckpt["scheduler"])
    state.epoch, state.step, state.history = ckpt["epoch"], ckpt["step"], list(ckpt["history"])
    state.train_seconds = ckpt["train_seconds"]
    torch.set_rng_state(ckpt["rng"]["torch"])
    state.shuffle.set_state(ckpt["rng"]["shuffle"])
    if "cuda" in ckpt["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])


def nan_to_none(x: object) -> object:
    """JSON has no NaN or Infinity: a non-finite number, alone or in a list, is written as null."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    return [nan_to_none(v) for v in x] if isinstance(x, list) else x
