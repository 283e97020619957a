"""Checks on user input, run before any work starts. Each failure is one line: `setting=value: what it accepts`.

Two stages: `check_argv` looks at the command line before Hydra composes anything (unknown group options,
an output dir that cannot be written); `validate` looks at the composed config.
"""

from __future__ import annotations

import difflib
import os
import tempfile
from numbers import Integral, Real
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from vae_sweep.config import GROUPS
from vae_sweep.errors import ConfigError
from vae_sweep.metrics import METRICS, OBJECTIVES



def group_options(conf_dir: Path, group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))


def check_argv(argv: list[str], conf_dir: Path) -> None:
    """Reject `group=option` overrides naming an option that does not exist, a misspelt setting, and an
    output dir we cannot write."""
    multirun = any(a in ("-m", "--multirun") for a in argv)
    chosen = _chosen_options(argv, conf_dir)
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key.startswith("hydra") or key.startswith("+") or key.startswith("~"):
            if key.startswith("hydra.") and key == ("hydra.sweep.dir" if multirun else "hydra.run.dir"):
                check_writable(key, value)
            continue
        if key in GROUPS:
            options = group_options(conf_dir, key)
            if "," not in value and value != "null" and value not in options:
                raise ConfigError(f"{key}={value}: no such option; {key} accepts {', '.join(options)}")
        else:
            _check_key(key, conf_dir, chosen)
    if not any(a.partition("=")[0] in ("hydra.run.dir", "hydra.sweep.dir") for a in argv):
        check_writable("hydra.run.dir" if not multirun else "hydra.sweep.dir", os.getcwd())


def _chosen_options(argv: list[str], conf_dir: Path) -> dict[str, str]:
    """group -> option for this command line: the root defaults list, then `group=option` overrides."""
    defaults = OmegaConf.load(conf_dir / "config.yaml").get("defaults", [])
    chosen = {k: v for d in defaults if isinstance(d, DictConfig) for k, v in d.items()}
    chosen |= {k: v for k, _, v in (a.partition("=") for a in argv) if k in GROUPS and "," not in v}
    return chosen


def _check_key(key: str, conf_dir: Path, chosen: dict[str, str]) -> None:
    """A plain `a.b=v` override must name a setting that exists (Hydra would say so over five lines)."""
    head, _, rest = key.partition(".")
    if head in GROUPS and rest and chosen.get(head) not in (None, "null"):
        node, where = OmegaConf.load(conf_dir / head / f"{chosen[head]}.yaml"), f"{head}={chosen[head]}"
        name = rest.split(".")[0]
    else:  # the root config, and what the chosen sweep option (a `_global_` package) adds to it
        node, where, name = OmegaConf.load(conf_dir / "config.yaml"), "the config", head
        if chosen.get("sweep") not in (None, "null"):
            node = OmegaConf.merge(node, OmegaConf.load(conf_dir / "sweep" / f"{chosen['sweep']}.yaml"))
    if head in ("sweep",) or name in node or name == "defaults":
        return
    known = [k for k in node if k not in ("defaults", "_target_", "_partial_")]
    near = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {near[0]}? " if near else ""
    raise ConfigError(f"{key}: {where} has no setting {name!r}; {hint}(add a new key with +{key}=...)")


def check_writable(setting: str, value: str) -> None:
    """Create the folder (up to its first `${...}` interpolation) and write a probe file into it."""
    static = Path(value.split("${", 1)[0] or ".")
    try:
        static.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=static):
            pass
    except OSError as e:
        raise ConfigError(f"{setting}={value}: cannot write there ({e.strerror}); give a folder you can write to") from None


def _number(cfg: DictConfig, key: str, *, integer: bool = False, low: float | None = None, strict: bool = False) -> None:
    value = cfg.get(key)
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, Integral if integer else Real) and not isinstance(value, bool)
    if not ok_type or (low is not None and (value <= low if strict else value < low)):
        bound = "" if low is None else f" {'>' if strict else '>='} {low:g}"
        raise ConfigError(f"{key}={value}: must be {kind}{bound}")


def validate(cfg: DictConfig, objectives: bool = True) -> None:
    """Check the top-level knobs, the loss and likelihood settings and (for sweeps) the objectives."""
    _number(cfg, "beta", low=0)
    _number(cfg, "latent_dim", integer=True, low=1)
    _number(cfg, "lr", low=0, strict=True)
    _number(cfg, "epochs", integer=True, low=1)
    _number(cfg, "batch_size", integer=True, low=1)
    _number(cfg, "seed", integer=True)
    _number(cfg, "kl_warmup_steps", integer=True, low=0)
    for key in ("threads", "max_batches"):
        if cfg.get(key) is not None:
            _number(cfg, key, integer=True, low=1)
    _number(cfg.eval, "iwae_k", integer=True, low=0)
    for key, low, strict in (("gamma", 0, False), ("c_max", 0, False), ("c_steps", 0, False)):
        if key in cfg.loss:
            _number(cfg.loss, key, low=low, strict=strict)
    if "beta_min" in cfg.loss:  # loss=multirate
        check_multirate(cfg)
    if "sigma" in cfg.likelihood:
        _number(cfg.likelihood, "sigma", low=0, strict=True)
    if objectives:
        check_objectives(cfg)


def check_objectives(cfg: DictConfig) -> None:
    objectives = list(cfg.objectives) if not isinstance(cfg.objectives, str) else [cfg.objectives]
    if not objectives or any(o not in OBJECTIVES for o in objectives):
        raise ConfigError(f"objectives={objectives}: name one or more of {', '.join(OBJECTIVES)}")
    stochastic = cfg.loss._target_.rsplit(".", 1)[-1] != "AutoencoderLoss"
    if not stochastic and any(METRICS[o].needs_rate for o in objectives):
        without_rate = ", ".join(o for o in OBJECTIVES if not METRICS[o].needs_rate)
        raise ConfigError(f"objectives={objectives}: loss=ae has no rate; choose from {without_rate}")
    if "iwae_nll" in objectives and cfg.eval.iwae_k < 1:
        raise ConfigError(f"eval.iwae_k={cfg.eval.iwae_k}: objective iwae_nll needs eval.iwae_k >= 1")


def check_multirate(cfg: DictConfig) -> None:
    """loss=multirate: a range 0 < beta_min < beta_max, eval.beta inside it, and a curve of at least 2 points."""
    _number(cfg.loss, "beta_min", low=0, strict=True)
    _number(cfg.loss, "beta_max", low=cfg.loss.beta_min, strict=True)
    lo, hi = cfg.loss.beta_min, cfg.loss.beta_max
    if not (isinstance(cfg.eval.beta, Real) and lo <= cfg.eval.beta <= hi):
        raise ConfigError(f"eval.beta={cfg.eval.beta}: must lie in the trained range "
                          f"[loss.beta_min, loss.beta_max] = [{lo:g}, {hi:g}]")
    _number(cfg.curve, "betas", integer=True, low=2)
