"""Which `_target_`s a config may build: vae_sweep's own list (`hydra_api.TRUSTED_TARGETS`) and the import prefixes
that the person running the command names in the environment, `VAE_SWEEP_TRUSTED_TARGETS=my_vae.*` (several
separated by commas).

The variable is read once, when the process starts (`read_environment`, the first thing `__main__.main` does),
before Hydra composes anything: a config can set environment variables inside its job (`hydra.job.env_set`), so a
config that names the variable there is refused (`check_trusted`). A config file alone never widens trust.

Patterns follow Hydra's execution whitelist: `pkg.*` trusts every name under `pkg`, `pkg.mod.Class` that one name.
"""

from __future__ import annotations

import importlib
import os
import re

from omegaconf import DictConfig, ListConfig, OmegaConf

from vae_sweep.errors import ConfigError, first_line
from vae_sweep.hydra_api import SWEEPER_TARGETS, TRUSTED_TARGETS

VARIABLE = "VAE_SWEEP_TRUSTED_TARGETS"
PATTERN = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(\.\*)?")  # `pkg.mod.*` or `pkg.mod.Name`
_USER: tuple[str, ...] | None = None  # the prefixes read from the environment, once per process


def read_environment(environ: dict[str, str] | None = None) -> tuple[str, ...]:
    """Read VAE_SWEEP_TRUSTED_TARGETS now (the process's first action) and keep it: later changes to the
    environment, such as a job's `hydra.job.env_set`, change nothing. A malformed entry is a ConfigError."""
    global _USER
    raw = (os.environ if environ is None else environ).get(VARIABLE, "")
    entries = tuple(e.strip() for e in raw.split(",") if e.strip())
    bad = next((e for e in entries if not PATTERN.fullmatch(e)), None)
    if bad is not None:
        raise ConfigError(
            f"{VARIABLE}={raw}: {bad!r} is no import prefix; give names like my_vae.* or my_vae.nets.Net, "
            "separated by commas"
        )
    _USER = entries
    return _USER


def user_targets() -> tuple[str, ...]:
    """The prefixes the user trusted: read on first use where no entry point read them (a sweep's worker
    process inherits the variable from the command that started it)."""
    return _USER if _USER is not None else read_environment()


def trusted_targets() -> tuple[str, ...]:
    """Every pattern instantiate may build: vae_sweep's own, then the user's."""
    return (*TRUSTED_TARGETS, *user_targets())


def sweeper_targets() -> tuple[str, ...]:
    """What the sweeper's sampler and pruner may be: optuna's, and the user's own."""
    return (*SWEEPER_TARGETS, *user_targets())


def is_trusted(target: str, patterns: tuple[str, ...]) -> bool:
    """`target` matches one of `patterns`, as Hydra matches its execution whitelist."""
    return any(target.startswith(p[:-1]) if p.endswith(".*") else target == p for p in patterns)


# --- the composed config ----------------------------------------------------------------------------------------


def check_trusted(cfg: DictConfig) -> None:
    """Every `_target_` of the job's config, and the sweeper's sampler and pruner where the config has a `hydra`
    node, is trusted; and no config sets VAE_SWEEP_TRUSTED_TARGETS for its job. One line for the first that is not."""
    hydra = cfg.get("hydra") if "hydra" in cfg else None
    if isinstance(hydra, DictConfig):
        env = OmegaConf.select(cfg, "hydra.job.env_set", default=None) or {}
        if VARIABLE in env:
            raise ConfigError(
                f"hydra.job.env_set.{VARIABLE}: a config cannot trust targets; trust is given only in the "
                f"environment of the command: {VARIABLE}=my_vae.* python -m vae_sweep ..."
            )
        for part in ("sampler", "pruner"):
            node = OmegaConf.select(cfg, f"hydra.sweeper.{part}", default=None)
            check_targets(node, f"hydra.sweeper.{part}", sweeper_targets())
    for key in cfg:
        if key != "hydra":
            check_targets(cfg._get_node(key), str(key), trusted_targets())


def check_targets(node, path: str, patterns: tuple[str, ...]) -> None:
    """`node` and everything below it: each `_target_` must match `patterns`."""
    if isinstance(node, DictConfig):
        if "_target_" in node:
            target = target_of(node, path)
            if not is_trusted(target, patterns):
                raise ConfigError(untrusted(f"{path}._target_", target))
        for key in node:
            check_targets(node._get_node(key), f"{path}.{key}", patterns)
    elif isinstance(node, ListConfig):
        for i in range(len(node)):
            check_targets(node._get_node(i), f"{path}[{i}]", patterns)


def target_of(node: DictConfig, path: str) -> str:
    try:
        return str(node._target_)
    except Exception as e:  # an interpolation that does not resolve: refused, since it names nothing we can check
        raise ConfigError(f"{path}._target_: {first_line(e)}") from None


COMMANDS = ("os", "subprocess", "builtins", "sys", "shutil", "pty", "runpy", "importlib", "ctypes", "socket")


def untrusted(setting: str, target: str) -> str:
    """The one line for an untrusted target: how to trust it, or, for one that runs commands, that no config should."""
    module = target.split(".", 1)[0]
    if module in COMMANDS:
        return f"{setting}={target}: not trusted; {module} runs commands or touches files, never part of a VAE job"
    prefix = target.rsplit(".", 1)[0] if "." in target else target
    return f"{setting}={target}: not trusted; run with {VARIABLE}={prefix.split('.')[0]}.* to allow it"


def locate(target: str, setting: str) -> object:
    """Import a trusted target (never an untrusted one: importing runs its module's code)."""
    if not is_trusted(target, trusted_targets()):
        raise ConfigError(untrusted(setting, target))
    parts = target.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError as e:
            if e.name and ".".join(parts[:cut]).startswith(e.name):
                continue
            raise ConfigError(f"{setting}={target}: cannot be imported ({first_line(e)})") from None
        except Exception as e:
            raise ConfigError(f"{setting}={target}: importing it raised {type(e).__name__}: {first_line(e)}") from None
        try:
            for name in parts[cut:]:
                obj = getattr(obj, name)
        except AttributeError:
            break
        return obj
    raise ConfigError(f"{setting}={target}: cannot be imported; put the folder that holds {parts[0]}/ on PYTHONPATH")
