"""model.pt: the checkpoint format, saving it, reading it back safely, and checking it fits a run's config.

A checkpoint holds plain tensors and containers only (model, optimizer and scheduler state dicts, progress, every
RNG stream, the history and the resolved config), so `torch.load(weights_only=True)` reads it and no code runs.
"""

from __future__ import annotations

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
    """model.pt: model, optimizer, scheduler, progress (inside an epoch, for a preempted run), RNG states and the
    resolved config, all of it plain tensors and containers, so that `torch.load(weights_only=True)` reads it back."""
    ckpt = {
        "model": parts.model.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict() if parts.scheduler is not None else None,
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
    atomic_write(path, lambda tmp: torch.save(ckpt, tmp))


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
    """Read a checkpoint safely (weights_only=True: no code runs) and check that it fits this run's config."""
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
    now = OmegaConf.to_container(cfg, resolve=True)
    for key in ("latent_dim", "model", "dataset"):
        for (k, a), (_, b) in zip(_leaves(key, ckpt["config"][key]), _leaves(key, now[key])):
            if a != b:
                raise ConfigError(
                    f"resume={resume}: the checkpoint has {k}={a}, this run asks for {k}={b}; they must match"
                )
    if ckpt["epoch"] >= cfg.epochs:
        raise ConfigError(
            f"epochs={cfg.epochs}: the checkpoint already has {ckpt['epoch']} epochs; set epochs above that to continue"
        )
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
    position = ckpt.get("position") or {"batch": 0, "partial": {}}  # older checkpoints end at an epoch's end
    device = next(parts.model.parameters()).device
    state.batch = int(position["batch"])
    state.partial = {k: list(v.to(device).unbind()) for k, v in position["partial"].items()}
    torch.set_rng_state(ckpt["rng"]["torch"])
    state.shuffle.set_state(ckpt["rng"]["shuffle"])
    if "cuda" in ckpt["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
