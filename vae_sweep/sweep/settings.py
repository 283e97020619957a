"""A sweep's settings, checked before its first trial and before any folder or study exists (`check_argv` calls
`check_sweep` on the composed config): the sweeper's own settings, its sampler and pruner, its storage, and the
search space (vae_sweep/sweep/search_space.py). Each mistake is one `ConfigError`: `setting=value: what it accepts`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from vae_sweep.checks import check_sweeper, check_writable, listed
from vae_sweep.config import SCHEMAS
from vae_sweep.errors import ConfigError, first_line
from vae_sweep.hydra_api import GONE
from vae_sweep.sweep.search_space import check_searched
from vae_sweep.sweep.storage import check_storage
from vae_sweep.trust import sweeper_targets

SAMPLER, PRUNER = "hydra/sweeper/sampler", "hydra/sweeper/pruner"


def check_sweep(cfg: DictConfig, overrides: list, compose_with: Callable[[list[str]], DictConfig]) -> None:
    """Everything a --multirun command gives its sweeper. `overrides` are the command line's, parsed;
    `compose_with(lines)` composes the command's config with `lines` added (to try one value of each searched key)."""
    optuna = SCHEMAS.get(cfg.hydra.sweeper.get("_target_")) is not None
    if optuna:
        check_sweeper(cfg)
        check_heartbeat(cfg.hydra.sweeper)
        if (artifact_dir := cfg.hydra.sweeper.get("artifact_dir")) is not None:
            check_writable("hydra.sweeper.artifact_dir", str(artifact_dir))
    dists = check_searched(cfg, overrides, compose_with, optuna)
    if optuna:
        sampler = build(SAMPLER, cfg.hydra.sweeper.sampler, cfg)
        if dists and getattr(sampler, "func", None) is not None:  # the grid sampler: discrete values only
            check_grid(dists)
        check_pruner(cfg)
        check_storage(cfg.hydra.sweeper.storage)


def check_heartbeat(sweeper: DictConfig) -> None:
    """A grace period longer than the heartbeat interval, or a live trial would be taken for a dead one."""
    interval, grace = sweeper.heartbeat_interval, sweeper.grace_period
    if grace <= interval:
        raise ConfigError(
            f"hydra.sweeper.grace_period={grace}: must be above hydra.sweeper.heartbeat_interval={interval} "
            "(seconds; a trial silent that long counts as dead), e.g. three heartbeats"
        )


def build(group: str, node: DictConfig, cfg: DictConfig, **kwargs: Any) -> Any:
    """The sampler or pruner that `node` names; a mistake in it (a bad setting, a gone option) is one line."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node, **kwargs, _execution_whitelist_=list(sweeper_targets()))
    except (InstantiationException, TypeError, ValueError) as e:  # Hydra 1.4 passes the target's own errors on
        choice = cfg.hydra.runtime.choices.get(group)
        why = GONE.get((group, choice)) or first_line(e.__cause__ or e)
        raise ConfigError(f"{group}={choice}: {why}") from None


def check_pruner(cfg: DictConfig) -> None:
    """A pruner that cannot work in this sweep (several objectives, no value per epoch, no storage) is refused."""
    from vae_sweep.sweep.trial import refusal

    node = cfg.hydra.sweeper.get("pruner")
    if not node:
        return
    objectives = listed(cfg.get("objectives") or [])
    pruner = build(PRUNER, node, cfg)
    n_objectives = len(listed(cfg.hydra.sweeper.direction))
    if why := refusal(pruner, n_objectives, (objectives or [None])[0], cfg.hydra.sweeper.storage):
        raise ConfigError(f"{PRUNER}={cfg.hydra.runtime.choices.get(PRUNER)}: {why}")


def check_grid(dists: dict) -> None:
    """The grid sampler enumerates its search space: each searched key needs a finite set of values."""
    for name, (line, dist) in dists.items():
        if not hasattr(dist, "choices") and getattr(dist, "step", None) is None:
            raise ConfigError(
                f"{line}: {SAMPLER}=grid tries every value, and an interval has endless ones; "
                f"search {name} with choice(...) or range(...)"
            )
