"""A sweep's search space, checked before its first trial: both ends of every searched range, every choice and every
fixed value must pass the job's own validation, so a sweep that could only fail stops in one line instead."""

from __future__ import annotations

import yaml
from omegaconf import DictConfig, OmegaConf

from vae_sweep.errors import ConfigError


def check_search_space(config: DictConfig, dists: dict, fixed: dict) -> None:
    """Both ends of every searched range, every choice, and every fixed value must pass the job's own
    validation, so a sweep that could only fail stops here, before its first trial."""
    from vae_sweep.checks import check_config
    from vae_sweep.config import GROUPS, neutral

    job_cfg = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
    for name, value in fixed.items():
        if neutral(name):  # how runs run (`logger=[tensorboard,mlflow]`): checked with the command line, searched never
            continue
        OmegaConf.update(job_cfg, name, yaml.safe_load(str(value)), force_add=True)
    for knob in ("beta", "latent_dim", "lr"):  # a searched knob that no group reads would be searched in vain
        groups = OmegaConf.to_yaml(OmegaConf.masked_copy(config, [g for g in GROUPS if g in config]))
        if knob in dists and f"${{{knob}}}" not in groups:
            choices = config.hydra.runtime.choices
            raise ConfigError(
                f"hydra.sweeper.params.{knob}: no config group reads it "
                f"(loss={choices.get('loss')}, model={choices.get('model')}); "
                "use loss=beta to search beta"
            )
    checks = [("", job_cfg)]  # the fixed values, then each end of each range
    for name, dist in dists.items():
        for value in getattr(dist, "choices", None) or (dist.low, dist.high):
            cfg = job_cfg.copy()
            OmegaConf.update(cfg, name, value, force_add=True)
            checks.append((f"hydra.sweeper.params.{name} reaches {value}: ", cfg))
    for where, cfg in checks:
        try:
            check_config(cfg)
        except ConfigError as e:
            raise ConfigError(f"{where}{e}") from None
