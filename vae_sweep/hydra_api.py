"""Hydra's Compose and instantiate APIs as vae_sweep calls them: only trusted `_target_`s are built, and the
libraries' errors come back as one-line `ConfigError`s."""

import difflib
from pathlib import Path

from vae_sweep.errors import ConfigError, first_line, unknown_setting

# The `_target_`s that configs may build: the project's own, torch's optimisers and schedulers, and optuna's samplers
# and pruners, and those the user names in VAE_SWEEP_TRUSTED_TARGETS (vae_sweep/trust.py: `trusted_targets`). Hydra
# 1.4 refuses any other once a list is given, and warns (an error from Hydra 1.5) without one, so every instantiate
# here passes the whole list, and so does `hydra.main` in __main__.py. A model of your own needs no entry here.
TRUSTED_TARGETS = (
    "vae_sweep.*",
    "torch.optim.*",
    "optuna.samplers.*",
    "optuna.pruners.*",
    "hydra_plugins.hydra_optuna_sweeper.*",
)
SWEEPER_TARGETS = tuple(
    t for t in TRUSTED_TARGETS if t.startswith(("optuna.", "hydra_plugins."))
)  # its sampler, pruner
# Options that a plugin still registers but that cannot work, and why: never offered, refused by name.
GONE = {
    ("hydra/sweeper/sampler", "motpe"): "removed in optuna 4 (TPE handles several objectives itself); "
    "use hydra/sweeper/sampler=tpe, or gp as sweep=pareto does",
}


def instantiate_group(node, key: str, **kwargs):
    """`hydra.utils.instantiate` for the config group `key`, with user mistakes kept to one line.

    Hydra wraps whatever the target raises in an InstantiationException: a ConfigError from inside comes
    back out as itself, and a bad keyword (`model.foo=1`) or value type becomes a ConfigError naming the group.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from vae_sweep.trust import trusted_targets

    try:
        return instantiate(node, **kwargs, _execution_whitelist_=list(trusted_targets()))
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, ConfigError):
            raise cause from None
        if isinstance(cause, (TypeError, ValueError)):
            raise ConfigError(f"{key}: {cause}") from None
        raise


def compose(conf_dir, config_name: str, overrides: list[str], extra_dir=None):
    """Hydra's Compose API with the hydra node (`return_hydra_config`), its composition errors as one line each.
    `extra_dir` (the command line's --config-dir) is searched after `conf_dir`, as hydra.main searches it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_search_path
    from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException
    from omegaconf.errors import OmegaConfBaseException

    dirs = [conf_dir, *([extra_dir] if extra_dir else [])]
    try:
        with initialize_config_search_path([f"file://{Path(d).resolve()}" for d in dirs]):
            return hydra_compose(config_name, overrides=overrides, return_hydra_config=True)
    except MissingConfigException as e:
        if not e.options or not e.missing_cfg_file:
            raise ConfigError(first_line(e)) from None
        group, _, option = e.missing_cfg_file.rpartition("/")
        offered = [o for o in e.options if (group, o) not in GONE]
        near = difflib.get_close_matches(option, offered, n=1)
        hint = f"did you mean {near[0]}? " if near else ""
        raise ConfigError(f"{group}={option}: no such option; {hint}{group} accepts {', '.join(offered)}") from None
    except ConfigCompositionException as e:
        cause, line = e.__cause__, culprit(e, overrides)
        full_key = getattr(cause, "full_key", None)
        if full_key and line in overrides and "not in struct" in str(cause):  # recomposed without it for the hint
            others = [o for o in overrides if o != line]
            raise no_such_setting(full_key, conf_dir, config_name, others, extra_dir) from None
        raise ConfigError(f"{line}: {first_line(cause or e)}") from None
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        raise ConfigError(f"{culprit(e, overrides)}: {first_line(e)}") from None


def culprit(e: BaseException, overrides: list[str]) -> str:
    """The override that Hydra's message names (`'model.hiden'`), or else the whole command line."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    keys = [o.key_or_group for o in OverridesParser.create().parse_overrides(overrides)]
    return next((line for line, key in zip(overrides, keys) if f"'{key}'" in str(e)), " ".join(overrides) or "config")


def no_such_setting(full_key: str, conf_dir, config_name: str, others: list[str], extra_dir=None) -> ConfigError:
    """Hydra refused `full_key`: name the node it is missing from and the nearest setting it has. Settings may be
    added (with +) only to a node without a `_target_`, since the target would refuse an unknown keyword."""
    from omegaconf import DictConfig, OmegaConf

    cfg = compose(conf_dir, config_name, others, extra_dir)  # the command line without the culprit
    parent = full_key.rpartition(".")[0]
    while parent and not isinstance(OmegaConf.select(cfg, parent), DictConfig):
        parent = parent.rpartition(".")[0]
    node = OmegaConf.select(cfg, parent) if parent else cfg
    known = [k for k in node if k != "defaults" and not (k.startswith("_") and k.endswith("_"))]
    choices = cfg.hydra.runtime.choices
    where = f"{parent}={choices[parent]}" if parent in choices else parent or "the config"
    name = full_key[len(parent) + 1 if parent else 0 :].split(".")[0]
    return unknown_setting(full_key, where, known, can_add="_target_" not in node, name=name)
