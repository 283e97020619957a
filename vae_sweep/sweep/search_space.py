"""A sweep's search space, checked before its first trial: its syntax and ranges as Optuna accepts them, its keys
against the composed config, and both ends of every searched range, every choice and every fixed value against
the job's own validation, so a sweep that could only fail stops in one line instead."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import yaml
from omegaconf import DictConfig, OmegaConf

from vae_sweep.errors import ConfigError, first_line

TAGS = ("log",)  # the only tag the Optuna sweeper reads (on an interval: search log(value) uniformly)


def check_searched(cfg: DictConfig, command: list, compose_with: Callable[[list[str]], DictConfig], optuna: bool):
    """The searched keys of the sweep config (`hydra.sweeper.params`) and of the command line (`command`, its parsed
    overrides; a fixed value there replaces a search of the sweep config, as in the sweeper): each parses, exists in
    the config (composed with one value of each), and reaches only values its schema accepts.
    Returns {name: (line, Optuna distribution)} for the Optuna sweeper, else {}."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = cfg.hydra.sweeper.get("params") or {}
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    named = {o.input_line: f"hydra.sweeper.params.{o.input_line}" for o in parsed}
    every = [o for o in [*parsed, *command] if not o.is_hydra_override()]
    said = {id(o): named.get(o.input_line, o.input_line) for o in every}
    made = {id(o): reached(o, said[id(o)], optuna) for o in every if o.is_sweep_override()}  # the sweeper makes each
    last = [o for o in {o.get_key_element(): o for o in every}.values() if o.is_sweep_override()]  # the command wins
    lines = {o.get_key_element(): said[id(o)] for o in last}
    values = {o.get_key_element(): made[id(o)] for o in last}
    check_keys(cfg, values, lines, compose_with)
    check_search_space(cfg, {k: v for k, (v, _) in values.items()}, {}, lines)
    return {k: (lines[k], dist) for k, (_, dist) in values.items() if dist is not None}


def reached(o, line: str, optuna: bool) -> tuple[list, object]:
    """(the values of sweep override `o` to check: each choice, or both ends of a range or interval, and the Optuna
    distribution it becomes under the Optuna sweeper, else None); a sweep Optuna or Hydra refuses is one line."""
    from hydra.core.override_parser.types import Transformer

    sweep = o.value()
    if not optuna:
        if o.is_interval_sweep():
            raise ConfigError(
                f"{line}: Hydra's basic sweeper (sweep=grid) runs lists, choice() and range(), not interval(); "
                "search an interval with an Optuna sweep (sweep=pareto, sweep=elbo)"
            )
        values = list(o.sweep_iterator(transformer=Transformer.encode))
        if not values:
            raise ConfigError(f"{line}: holds no value; range(start, stop, step) runs from start up to stop, excluded")
        return values, None
    if unknown := sorted(set(sweep.tags) - set(TAGS)):
        raise ConfigError(
            f"{line}: unknown tag {unknown[0]}; the Optuna sweeper reads tag(log, interval(low, high)) only"
        )
    if "log" in sweep.tags and not o.is_interval_sweep():
        raise ConfigError(f"{line}: tag log applies to interval(low, high) only")
    if o.is_interval_sweep() and sweep.start > sweep.end:
        raise ConfigError(f"{line}: interval(low, high) needs low <= high")
    if o.is_interval_sweep() and "log" in sweep.tags and sweep.start <= 0:
        raise ConfigError(f"{line}: a log interval needs low > 0 (it searches log(value) uniformly)")
    dist = distribution(o, line)
    return ends(dist), dist


def ends(dist) -> list:
    """The values of an Optuna distribution to check: every choice, or both ends."""
    return list(getattr(dist, "choices", None) or (dist.low, dist.high))


def distribution(o, line: str):
    """The Optuna distribution the plugin makes of `o`, its refusal as one line."""
    from hydra_plugins.hydra_optuna_sweeper._impl import create_optuna_distribution_from_override

    try:
        return create_optuna_distribution_from_override(o)
    except ValueError as e:
        if "at least one value" in str(e):
            raise ConfigError(
                f"{line}: holds no value; range(start, stop, step) runs from start up to stop, excluded"
            ) from None
        raise ConfigError(f"{line}: {first_line(e)}") from None
    except (AssertionError, NotImplementedError) as e:  # a list or dict among the choices
        raise ConfigError(f"{line}: the Optuna sweeper searches numbers, strings and booleans ({e})") from None


def check_keys(cfg: DictConfig, values: dict, lines: dict, compose_with: Callable[[list[str]], DictConfig]) -> None:
    """Compose the config with the first value of every searched key, then once more for each other option of a
    searched group: a key the config lacks, or an option a group lacks, is refused as Hydra would refuse its trial."""
    if not values:
        return
    first = {k: f"{k}={vals[0]}" for k, (vals, _) in values.items()}
    tries = [list(first.values())]
    for key, (vals, _) in values.items():
        if key in cfg.hydra.runtime.choices:  # a group searched as a whole: every option must exist
            tries += [[*(f for k, f in first.items() if k != key), f"{key}={v}"] for v in vals[1:]]
    for tried in tries:
        try:
            compose_with(tried)
        except ConfigError as e:  # an option a group lacks: name the search that reaches it
            said = str(e)
            line = next((line for line in tried if said.startswith(f"{line}:")), None)
            if line is not None:
                key, _, value = line.partition("=")
                said = f"{lines[key]} reaches {value}: {said}"
            raise ConfigError(said) from None


def check_search_space(config: DictConfig, searched: dict[str, Sequence], fixed: dict, lines: dict | None = None):
    """Both ends of every searched range, every choice (`searched`: key -> values), and every fixed value must pass
    the job's own validation, so a sweep that could only fail stops here, before its first trial. `lines` names
    each key's sweep as the user wrote it (by default `hydra.sweeper.params.<key>`)."""
    from vae_sweep.checks import check_config
    from vae_sweep.config import GROUPS, neutral

    job_cfg = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
    for name, value in fixed.items():
        if neutral(name):  # how runs run (`logger=[tensorboard,mlflow]`): checked with the command line, searched never
            continue
        OmegaConf.update(job_cfg, name, yaml.safe_load(str(value)), force_add=True)
    for knob in ("beta", "latent_dim", "lr"):  # a searched knob that no group reads would be searched in vain
        groups = OmegaConf.to_yaml(OmegaConf.masked_copy(config, [g for g in GROUPS if g in config]))
        if knob in searched and f"${{{knob}}}" not in groups:
            choices = config.hydra.runtime.choices
            raise ConfigError(
                f"hydra.sweeper.params.{knob}: no config group reads it "
                f"(loss={choices.get('loss')}, model={choices.get('model')}); "
                "use loss=beta to search beta"
            )
    checks = [("", job_cfg)]  # the fixed values, then each end of each range
    for name, values in searched.items():
        if name in config.hydra.runtime.choices:
            continue  # a group's options are composed by check_keys, not set as values
        for value in values:
            cfg = job_cfg.copy()
            OmegaConf.update(cfg, name.lstrip("+"), value, force_add=True)
            where = (lines or {}).get(name, f"hydra.sweeper.params.{name}")
            checks.append((f"{where} reaches {value}: ", cfg))
    for where, cfg in checks:
        try:
            check_config(cfg)
        except ConfigError as e:
            raise ConfigError(f"{where}{e}") from None
