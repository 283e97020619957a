"""model.pt: the checkpoint format, saving it, reading it back safely, and checking it fits a run's config.

A checkpoint holds plain tensors and containers only (model, optimizer and scheduler state dicts, progress, every
RNG stream, the history and the resolved config), so `torch.load(weights_only=True)` reads it and no code runs.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from omegaconf import DictConfig, OmegaConf

from vae_sweep.errors import ConfigError
from vae_sweep.run_files import atomic_write

if TYPE_CHECKING:
    from vae_sweep.train import Parts, TrainState


def save_checkpoint(path: Path, parts: Parts, state: TrainState, cfg: DictConfig) -> None:
    """model.pt: model, optimizer, scheduler, precision=16's loss scaler, progress (inside an epoch, for a preempted
    run), RNG states and the resolved config, all of it plain tensors and containers, so that
    `torch.load(weights_only=True)` reads it back."""
    ckpt = {
        "model": parts.model.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict() if parts.scheduler is not None else None,
        "scaler": parts.scaler.state_dict() if parts.scaler is not None else None,  # precision=16's loss scale
        "epoch": state.epoch,
        "step": state.step,
        "history": state.history,
        "train_seconds": state.train_seconds,
        # inside epoch `epoch + 1` (a preempted run): batches done and their loss terms, one value per step
        "position": {"batch": state.batch, "partial": {k: torch.stack(v).cpu() for k, v in state.partial.items()}},
        "rng": {"torch": torch.get_rng_state(), "shuffle": state.shuffle.get_state()},
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    if torch.cuda.is_available():
        ckpt["rng"]["cuda"] = torch.cuda.get_rng_state_all()
    buffer = io.BytesIO()  # torch writes a full disk's error as a RuntimeError: Python's own write names it
    torch.save(ckpt, buffer)
    atomic_write(path, lambda tmp: tmp.write_bytes(buffer.getbuffer()))


def saved_epochs(path: Path) -> int:
    """The epochs a model.pt holds; 0 when it is missing or unreadable. mmap: only that number is read."""
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["epoch"])
    except Exception:  # missing, truncated, or not a checkpoint
        return 0


def checkpoint_path(resume: str) -> Path:
    """`resume` may name a run dir (holding model.pt) or the model.pt file itself."""
    path = Path(resume)
    path = path / "model.pt" if path.is_dir() else path
    if not path.is_file():
        raise ConfigError(
            f"resume={resume}: no checkpoint there; give a run dir that holds model.pt, or a model.pt file"
        )
    return path


def load_checkpoint(resume: str, cfg: DictConfig) -> dict:
    """Read a checkpoint safely (weights_only=True: no code runs) and check that it fits this run's config. One that
    holds every configured epoch is accepted: the run then only evaluates it."""
    path = checkpoint_path(resume)
    try:
        with warnings.catch_warnings():  # torch warns of a pickle protocol it may not read; the line below says so
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated file, or one holding more than tensors and containers
        raise ConfigError(f"resume={resume}: cannot read {path} as a vae_sweep checkpoint ({type(e).__name__})") from e
    missing = {"model", "optimizer", "epoch", "step", "history", "rng", "config"} - set(ckpt)
    if missing:
        raise ConfigError(f"resume={resume}: {path} is not a vae_sweep checkpoint (no {', '.join(sorted(missing))})")
    check_same_settings(resume, ckpt["config"], OmegaConf.to_container(cfg, resolve=True))
    if ckpt["epoch"] > cfg.epochs:  # as many: training is done, and the run evaluates the checkpoint
        raise ConfigError(
            f"epochs={cfg.epochs}: the checkpoint already has {ckpt['epoch']} epochs; set epochs to at least that"
        )
    return ckpt


MUST_MATCH = ("latent_dim", "model", "prior", "posterior", "dataset")  # what the weights and the data depend on
# Settings added after checkpoints were first written, with the value a checkpoint without them was trained with.
# A setting missing from a checkpoint and not listed here is refused, since nobody can say what it was.
ADDED_LATER = {
    "prior._target_": "vae_sweep.families.StandardNormal",
    "posterior._target_": "vae_sweep.families.GaussianPosterior",
    "model.activation": "relu",
    "dataset.binarize": "none",
    "dataset.binarize_seed": 0,
}


def check_same_settings(resume: str, saved: dict, now: dict) -> None:
    """The checkpoint's settings of MUST_MATCH equal this run's, compared by name (never by position, so a new
    setting in one of them is read as its ADDED_LATER value, not paired with its neighbour's)."""
    before = dict(_leaves("", {k: saved[k] for k in MUST_MATCH if k in saved}))
    after = dict(_leaves("", {k: now[k] for k in MUST_MATCH if k in now}))
    missing = object()
    for key in sorted(before.keys() | after.keys()):
        a, b = before.get(key, ADDED_LATER.get(key, missing)), after.get(key, ADDED_LATER.get(key, missing))
        if a != b:
            shown = ["(not set)" if v is missing else v for v in (a, b)]
            raise ConfigError(
                f"resume={resume}: the checkpoint has {key}={shown[0]}, this run asks for {key}={shown[1]}; "
                "they must match"
            )


def _leaves(prefix: str, node: object) -> list[tuple[str, object]]:
    """('model.hidden', [400]) pairs of a nested config, in a stable order."""
    if not isinstance(node, dict) or not node:
        return [(prefix, node)]
    return [leaf for k in sorted(node) for leaf in _leaves(f"{prefix}.{k}".lstrip("."), node[k])]


def restore(parts: Parts, ckpt: dict, state: TrainState) -> None:
    """Put model, optimizer, scheduler, loss scaler, progress and RNG streams back where the checkpoint left them."""
    parts.model.load_state_dict(ckpt["model"])
    parts.optimizer.load_state_dict(ckpt["optimizer"])
    if parts.scheduler is not None and ckpt["scheduler"] is not None:
        parts.scheduler.load_state_dict(ckpt["scheduler"])
    if parts.scaler is not None and ckpt.get("scaler"):  # older checkpoints, and runs in 32 or bf16, have none
        parts.scaler.load_state_dict(ckpt["scaler"])
    state.epoch, state.step, state.history = ckpt["epoch"], ckpt["step"], list(ckpt["history"])
    state.train_seconds = ckpt["train_seconds"]
    position = ckpt.get("position") or {"batch": 0, "partial": {}}  # older checkpoints end at an epoch's end
    device = next(parts.model.parameters()).device
    state.batch = int(position["batch"])
    state.partial = {k: list(v.to(device).unbind()) for k, v in position["partial"].items()}
    torch.set_rng_state(ckpt["rng"]["torch"])
    state.shuffle.set_state(ckpt["rng"]["shuffle"])
    if "cuda" in ckpt["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
