"""Checks on user input, run before any work starts. Each failure is one line: `setting=value: what it accepts`.

`check_argv(argv, conf_dir)` runs before Hydra starts anything. It reads the command line with Hydra's own parsers,
composes the config once through Hydra's Compose API with the command line's fixed overrides (a sweep's searched
values are the sweeper's to check, before its first trial), and checks what came out: every setting against the
schema of `vae_sweep.config` (`check_config`), under --multirun the sweeper's settings, and that the output dir can be
written. Hydra's composition errors (an unknown option or setting, a bad override) become one line too.

`check_config(cfg)` refuses any `_target_` that is not trusted (vae_sweep/trust.py), then checks the schema, and a
trusted target of the user's own against its signature; every job runs it again on its own config (`job.prepare`),
so the Compose API and each sweep trial get the same checks. `check_fits_in_memory` refuses a model too large to train.
"""

from __future__ import annotations

import math
import re
import tempfile
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from pathlib import Path
from types import NoneType, UnionType
from typing import TYPE_CHECKING, Annotated, Literal, Union, get_args, get_origin, get_type_hints

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from vae_sweep.config import (
    GROUPS,
    JOB_GROUPS,
    OPTIONAL_GROUPS,
    SCHEMAS,
    SIZE,
    Accepts,
    Length,
    Match,
    Range,
    RootSettings,
)
from vae_sweep.errors import ConfigError, first_line, unknown_setting
from vae_sweep.hydra_api import GONE, compose
from vae_sweep.registry import DISENTANGLEMENT, METRICS, OBJECTIVES
from vae_sweep.trust import check_trusted, is_trusted, locate

if TYPE_CHECKING:
    from vae_sweep.data import ImageData

__all__ = [
    "GROUPS",
    "check_argv",
    "check_config",
    "check_factor_objectives",
    "check_fits_in_memory",
    "check_precision",
    "group_options",
]
INSTANTIATE_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_")  # Hydra's, not the target's
WORDS = {
    int: ("an integer", "integers"),
    float: ("a number", "numbers"),
    str: ("a string", "strings"),
    bool: ("true or false", "true or false"),
    NoneType: ("null", "null"),
}


def group_options(conf_dir: Path, group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))


# --- the composed config against the schema ----------------------------------------------------------------------


def check_config(cfg: DictConfig, choices: Mapping[str, str] | None = None) -> None:
    """Check the top-level knobs, `eval`, every group's settings and the objectives where a sweep names them.
    `choices` (group -> option, as Hydra recorded them) only names the option in messages. First of all, every
    `_target_` must be trusted (vae_sweep/trust.py), and a target of the user's own is imported only then."""
    check_trusted(cfg)
    check_node(cfg, RootSettings, "", "the config")
    for group in JOB_GROUPS:
        node = cfg.get(group)
        if not node:
            if group in OPTIONAL_GROUPS:
                continue
            raise ConfigError(f"{group}=null: choose an option with {group}=<option>")
        if not isinstance(node, DictConfig):  # an option's name where no composition took place (the sweeper's
            continue  # check of its search space sets `optimizer=sgd` as a value); the job checks the node itself
        schema = SCHEMAS.get(node.get("_target_"))
        where = f"{group}={choices[group]}" if choices and choices.get(group) else group
        if schema is not None:
            check_node(node, schema, f"{group}.", where)
        elif "_target_" in node:  # a target of the user's own: its settings against its signature
            check_own(node, group)
    check_loggers(cfg)
    if cfg.get("objectives"):
        check_objectives(cfg)
    if loss_trait(cfg, "draws_curve"):
        check_multirate(cfg)


def check_own(node: DictConfig, group: str) -> None:
    """A group option whose target the user trusted (VAE_SWEEP_TRUSTED_TARGETS): import it, now that it is trusted,
    and check its settings against its signature and type hints (vae_sweep/contracts.py: `check_signature`)."""
    from vae_sweep.contracts import check_signature
    from vae_sweep.hydra_api import TRUSTED_TARGETS

    target = str(node._target_)
    if is_trusted(target, TRUSTED_TARGETS):  # one of vae_sweep's own without a schema: left to it
        return
    check_signature(node, group, locate(target, f"{group}._target_"))


def check_loggers(cfg: DictConfig) -> None:
    """Each chosen logger (`logger=[tensorboard,mlflow]`) against its schema, and its library installed."""
    for name, node in (cfg.get("logger") or {}).items():
        schema = SCHEMAS.get(node.get("_target_")) if isinstance(node, DictConfig) else None
        if schema is None:  # a logger of the user's own is left to its target
            continue
        check_node(node, schema, f"logger.{name}.", f"logger={name}")
        if schema.library:
            from vae_sweep.loggers import require

            require(schema.library)


def loss_trait(cfg: DictConfig, trait: str) -> bool:
    """What the schema of the config's loss says of it (`stochastic`, `draws_curve`), found by its exact `_target_`
    and never by importing it; a loss of the user's own is a plain stochastic one."""
    schema = SCHEMAS.get(OmegaConf.select(cfg, "loss._target_", default=None))
    return bool(getattr(schema, trait, trait == "stochastic"))


def check_multirate(cfg: DictConfig) -> None:
    """loss=multirate: a range beta_min < beta_max, and eval.beta inside it (the model knows no other beta)."""
    lo, hi = cfg.loss.beta_min, cfg.loss.beta_max
    if lo >= hi:
        raise ConfigError(f"loss.beta_max={hi:g}: must be above loss.beta_min={lo:g}")
    if not lo <= cfg.eval.beta <= hi:
        raise ConfigError(
            f"eval.beta={cfg.eval.beta:g}: must lie in the trained range "
            f"[loss.beta_min, loss.beta_max] = [{lo:g}, {hi:g}]"
        )


def check_node(node: DictConfig, schema: type, prefix: str, where: str) -> None:
    """Every key of `node` is a setting of `schema` (unless it is open to more) and every setting is what it accepts."""
    types = get_type_hints(schema, include_extras=True)
    names = [f.name for f in fields(schema)]
    if not getattr(schema, "open", False):
        for key in node:
            if key not in names and key not in INSTANTIATE_KEYS:
                raise unknown_setting(f"{prefix}{key}", where, names, can_add=False)
    for name in names:
        if name in node.keys():  # noqa: SIM118 - `in node` alone skips a mandatory value left missing (???)
            check_setting(node, name, types[name], prefix)


def check_setting(node: DictConfig, key: str, kind: object, prefix: str) -> None:
    setting = source(node, key, prefix)
    try:
        value = node[key]
        block = settings_block(kind)
        if block is not None and isinstance(value, DictConfig):
            return check_node(value, block, f"{prefix}{key}.", f"{prefix}{key}")
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
    except MissingMandatoryValue:
        raise ConfigError(f"{setting}=???: must be {in_words(kind)}") from None
    except OmegaConfBaseException as e:  # an interpolation that does not resolve
        raise ConfigError(f"{prefix}{key}={raw(node, key)}: {first_line(e)}") from None
    if not accepts(kind, value):
        raise ConfigError(f"{setting}={show(value)}: must be {in_words(kind)}")


def settings_block(kind: object) -> type | None:
    """The dataclass a setting holds (`Eval`, or `Stride` of `Stride | None`), if it holds one."""
    if is_dataclass(kind):
        return kind  # type: ignore[return-value]
    if get_origin(kind) in (Union, UnionType):
        return next((a for a in get_args(kind) if is_dataclass(a)), None)
    return None


def accepts(kind: object, value: object) -> bool:
    """Whether `value` (plain Python, from YAML or the command line) is of the schema type `kind`."""
    origin, args = get_origin(kind), get_args(kind)
    if origin is Annotated:
        return accepts(args[0], value) and all(m.holds(value) for m in kind.__metadata__ if hasattr(m, "holds"))
    if origin in (Union, UnionType):
        return any(accepts(a, value) for a in args)
    if origin is Literal:
        return any(type(value) is type(a) and value == a for a in args)
    if origin is list:
        return isinstance(value, list) and all(accepts(args[0], v) for v in value)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind in WORDS:
        return isinstance(value, kind)  # type: ignore[arg-type]
    if is_dataclass(kind):
        return False  # a settings block given a plain value
    raise TypeError(f"vae_sweep.config uses a type the checks do not know: {kind}")


def in_words(kind: object, plural: bool = False) -> str:
    """What a schema type accepts, in words: `an integer >= 1 or null`, `a non-empty list of integers >= 1`."""
    origin, args = get_origin(kind), get_args(kind)
    if origin is Annotated:
        said = [m.says for m in kind.__metadata__ if isinstance(m, (Accepts, Match))]
        if said:
            return said[0]
        length = next((m for m in kind.__metadata__ if isinstance(m, Length)), Length())
        text = list_words(get_args(args[0])[0], length) if get_origin(args[0]) is list else in_words(args[0], plural)
        return " ".join([text, *(str(m) for m in kind.__metadata__ if isinstance(m, Range))])
    if origin in (Union, UnionType, Literal):
        parts = [in_words(a, plural) for a in args] if origin is not Literal else [show(a) for a in args]
        return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} or {parts[-1]}"
    if origin is list:
        return list_words(args[0], Length())
    if is_dataclass(kind):
        return f"settings {', '.join(f.name for f in fields(kind))}"
    return WORDS[kind][plural]  # type: ignore[index]


def list_words(item: object, length: Length) -> str:
    count = ("non-empty " if length.min == 1 and length.max is None else "") + "list of"
    if length.max is not None:
        count = f"list of {length.min}" if length.min == length.max else f"list of {length.min} to {length.max}"
    return f"a {count} {in_words(item, plural=True)}"


def show(value: object) -> str:
    """A value as it is written on the command line: `null`, `true`, `[16,32]`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return f"[{','.join(show(v) for v in value)}]"
    return str(value)


def listed(value: object) -> list:
    """A setting that takes one name or a list of them (`objectives`, `hydra.sweeper.direction`), as a list."""
    return [value] if isinstance(value, str) else list(value)  # type: ignore[arg-type]


def raw(node: DictConfig, key: str) -> object:
    """The value of `node[key]` as written, interpolations unresolved."""
    return OmegaConf.to_container(OmegaConf.masked_copy(node, [key]), resolve=False)[key]


def source(node: DictConfig, key: str, prefix: str) -> str:
    """The setting to name for `node[key]`: the top-level knob it interpolates (`${latent_dim}`), or its own path."""
    match = re.fullmatch(r"\$\{([\w.]+)\}", str(raw(node, key))) if OmegaConf.is_interpolation(node, key) else None
    return match[1] if match else f"{prefix}{key}"


def check_objectives(cfg: DictConfig) -> None:
    """The objectives a sweep optimises exist for this loss and these eval settings."""
    objectives = listed(cfg.objectives)
    if not objectives or any(o not in OBJECTIVES for o in objectives):
        raise ConfigError(f"objectives={show(objectives)}: name one or more of {', '.join(OBJECTIVES)}")
    loss = OmegaConf.select(cfg, "loss._target_", default="")
    if "curve_hypervolume" in objectives and not loss_trait(cfg, "draws_curve"):
        raise ConfigError(
            f"objectives={show(objectives)}: needs loss=multirate, the loss whose run draws the "
            f"whole curve (or use sweep=curve); this loss is {str(loss).rsplit('.', 1)[-1] or 'none'}"
        )
    if not loss_trait(cfg, "stochastic") and any(METRICS[o].needs_rate for o in objectives):
        without_rate = ", ".join(o for o in OBJECTIVES if not METRICS[o].needs_rate)
        raise ConfigError(f"objectives={show(objectives)}: loss=ae has no rate; choose from {without_rate}")
    if "iwae_nll" in objectives and cfg.eval.iwae_k < 1:
        raise ConfigError(f"eval.iwae_k={cfg.eval.iwae_k}: objective iwae_nll needs eval.iwae_k >= 1")


def check_factor_objectives(cfg: DictConfig, data: ImageData) -> None:
    """Refuse, in one line, a sweep objective among the disentanglement metrics that this job cannot compute."""
    named = cfg.get("objectives") or []
    named = [named] if isinstance(named, str) else list(named)
    wanted = [o for o in named if o in DISENTANGLEMENT]
    if not wanted:
        return
    if data.factors is None:
        raise ConfigError(
            f"objectives=[{','.join(named)}]: {', '.join(wanted)} need a dataset with factors "
            f"(dataset=sprites or dataset=dsprites); {data.name} has none"
        )
    if cfg.eval.get("disentanglement") is None:
        raise ConfigError(f"eval.disentanglement=null: objective {wanted[0]} needs its settings block")
    if cfg.latent_dim < 2:
        raise ConfigError(
            f"latent_dim={cfg.latent_dim}: objective {wanted[0]} needs at least 2 latent dims (MIG "
            "takes a gap between the two most informative)"
        )


def check_sweeper(cfg: DictConfig) -> None:
    """`hydra.sweeper`'s settings (for the sweepers vae_sweep.config knows), and one direction per objective, each
    the registry's (`vae_sweep.registry`): a mismatch in count or in sign is refused in one line."""
    sweeper = cfg.hydra.sweeper
    schema = SCHEMAS.get(sweeper.get("_target_"))
    if schema is None:
        return
    check_node(sweeper, schema, "hydra.sweeper.", "hydra.sweeper")
    directions, objectives = listed(sweeper.direction), listed(cfg.get("objectives") or [])
    if len(directions) != len(objectives):
        raise ConfigError(
            f"objectives={show(objectives)}: hydra.sweeper.direction={show(directions)} asks for "
            f"{len(directions)}; give one objective per direction"
        )
    wrong = next((o for o, d in zip(objectives, directions) if o in METRICS and METRICS[o].direction != d), None)
    if wrong is not None:  # maximising a distortion, or minimising MIG, optimises the wrong way
        raise ConfigError(
            f"hydra.sweeper.direction={show(directions)}: {wrong} is {METRICS[wrong].direction}d; give "
            f"hydra.sweeper.direction={show([METRICS[o].direction for o in objectives])}"
        )


# --- the command line, before Hydra starts -------------------------------------------------------------------------


def check_argv(argv: list[str], conf_dir: Path) -> None:
    """Compose the config this command line asks for, once, and check it all before Hydra starts anything; under
    --multirun also the sweep (vae_sweep/sweep/settings.py: the sweeper's settings, its storage, the search space)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = hydra_args(argv)
    if args is None:  # --help, --version, --info, another primary config: Hydra answers those itself
        return
    extra_dir = config_dir(args.config_dir)
    parser = OverridesParser.create()
    overrides = parse(parser, args.overrides)
    multirun = args.multirun or any(o.key_or_group == "hydra.mode" and o.value() == "MULTIRUN" for o in overrides)
    check_overrides(overrides, multirun, conf_dir)
    fixed = [o.input_line for o in overrides if not o.is_sweep_override()]
    name = args.config_name or "config"
    cfg = compose(conf_dir, name, fixed, extra_dir)
    lines: list[str] = []
    if multirun:  # the sweep config's own fixed values come before the command line's, as the sweeper applies them
        params = cfg.hydra.sweeper.get("params") or {}
        lines = [
            o.input_line for o in parse(parser, [f"{k}={v}" for k, v in params.items()]) if not o.is_sweep_override()
        ]
        cfg = compose(conf_dir, name, lines + fixed, extra_dir) if lines else cfg
    check_config(cfg, choices=cfg.hydra.runtime.choices)
    where = "sweep" if multirun else "run"
    check_writable(f"hydra.{where}.dir", str(raw(cfg.hydra[where], "dir")))
    if multirun:  # the sweep wing's checks, imported for a sweep only
        from vae_sweep.sweep.settings import check_sweep

        check_sweep(cfg, overrides, lambda tried: compose(conf_dir, name, lines + fixed + tried, extra_dir))


def check_overrides(overrides: list, multirun: bool, conf_dir: Path) -> None:
    """What the overrides alone show: a sweep without --multirun, a sweep over a hydra.* setting, a group set to
    null, and an option its plugin still registers but that cannot work (`hydra/sweeper/sampler=motpe`: its node
    lacks the `seed` the sweeps set, so Hydra's own error would not say why)."""
    from hydra.core.override_parser.types import OverrideType

    for o in overrides:
        if o.is_sweep_override() and not multirun:
            raise ConfigError(
                f"{o.input_line}: a sweep over values runs only with --multirun "
                f"(for a list, write {o.key_or_group}=[...])"
            )
        if o.is_sweep_override() and o.is_hydra_override():  # Hydra: "Sweeping over Hydra's configuration ..."
            raise ConfigError(hydra_sweep(o))
        if o.key_or_group in GROUPS and o.type == OverrideType.CHANGE and o.value() is None:  # Hydra: a ValueError
            raise ConfigError(
                f"{o.input_line}: choose an option; {o.key_or_group} accepts "
                f"{', '.join(group_options(conf_dir, o.key_or_group))}"
            )
        if not o.is_sweep_override() and (o.key_or_group, str(o.value())) in GONE:
            raise ConfigError(f"{o.input_line}: {GONE[(o.key_or_group, str(o.value()))]}")


def hydra_sweep(o) -> str:
    """Why a sweep over a `hydra.` setting cannot run, and what to write instead."""
    key = o.key_or_group
    if key.startswith("hydra.sweeper.params."):
        name = key.removeprefix("hydra.sweeper.params.")
        return (
            f"{o.input_line}: Hydra searches no hydra.* setting; to search {name}, write {name}={o.get_value_string()}"
        )
    return f"{o.input_line}: Hydra searches no hydra.* setting; give {key} one value"


def config_dir(given: str | None) -> Path | None:
    """The command line's --config-dir, searched after vae_sweep's conf/ as hydra.main searches it."""
    if given is None:
        return None
    path = Path(given).resolve()
    if not path.is_dir():
        raise ConfigError(f"--config-dir={given}: no such folder; give a folder of config groups (model/, sweep/, ...)")
    return path


def hydra_args(argv: list[str]):
    """The command line as hydra.main reads it (its own argparse parser), or None where we leave it to Hydra."""
    from hydra._internal.utils import get_args_parser

    if {"--help", "-h", "--hydra-help", "--version", "--shell-completion", "-sc", "--info", "-i"} & set(argv):
        return None

    def refuse(*args, **kwargs):  # a flag argparse cannot read: leave it to Hydra, which says so in its own words
        raise ValueError

    parser = get_args_parser()
    parser.exit = parser.error = refuse
    try:
        args = parser.parse_intermixed_args(argv)  # as hydra.main reads it
    except ValueError:
        return None
    return None if args.config_path or args.experimental_rerun else args


def parse(parser, lines: list[str]) -> list:
    from hydra.errors import OverrideParseException

    try:
        return parser.parse_overrides(lines)
    except OverrideParseException as e:  # Hydra 1.4 puts "Error when parsing index: ..." before the parser's line
        lines = str(e).splitlines()
        why = lines[1] if lines[0].startswith("Error when parsing") and len(lines) > 1 else first_line(e)
        raise ConfigError(
            f"{e.override}: cannot be parsed ({why}); see https://hydra.cc/docs/advanced/override_grammar/basic/"
        ) from None


def check_writable(setting: str, value: str) -> None:
    """Probe the folder (up to its first `${...}` interpolation), or its nearest existing parent, creating nothing."""
    static = Path(value.split("${", 1)[0] or ".")
    existing = next((p for p in (static, *static.parents) if p.exists() or p.is_symlink()), Path("."))
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise ConfigError(
            f"{setting}={value}: cannot write there ({e.strerror}); give a folder you can write to"
        ) from None


# --- the model against its device ---------------------------------------------------------------------------------


def check_precision(precision: int | str, device) -> None:
    """precision=bf16 or 16 where the device trains in it. bf16: the CPU, and CUDA devices with bf16 arithmetic
    (compute capability 8.0 on; torch would emulate it on older ones, slower than fp32). 16: CUDA, and MPS where
    torch has autocast for it. fp16 on the CPU is refused: torch 2.14 runs it (autocast and GradScaler("cpu")), but
    vae_sweep's train_epoch measured 0.77-0.86x fp32's examples/s on the mlp and 0.03x on conv, on a 2-core AVX-512
    CPU with avx512_fp16 and amx_bf16, where bf16 measured 1.09-1.65x; bf16 is as small and has fp32's range."""
    import torch

    p = str(precision)
    if p == "32":
        return
    if device.type == "cpu" and p == "16":
        raise ConfigError(
            "precision=16: fp16 trains on CUDA only (on the cpu it is slower than fp32); use precision=bf16 or 32"
        )
    if device.type == "cuda" and p == "bf16" and not torch.cuda.is_bf16_supported(including_emulation=False):
        raise ConfigError(
            f"precision=bf16: {torch.cuda.get_device_name(device)} has no bf16 arithmetic (compute capability 8.0 "
            "or later); use precision=16 or 32"
        )
    if not torch.amp.is_autocast_available(device.type):
        raise ConfigError(f"precision={p}: torch has no autocast on {device.type}; use precision=32")


# --- the model against the memory of its device ------------------------------------------------------------------


def check_fits_in_memory(cfg: DictConfig, n_params: int, device) -> None:
    """Refuse a model whose fp32 parameters, gradients and Adam's two moments (16 bytes a parameter) would not fit."""
    need, free = 16 * n_params, available_memory(device)
    if free is not None and need > free:
        where = "the cpu has" if device.type == "cpu" else f"{device} has"
        raise ConfigError(
            f"{size_setting(cfg)}: the model would have {n_params:,} parameters ({need / 1e9:.1f} GB "
            f"with gradients and optimizer state); {where} {free / 1e9:.1f} GB available"
        )


def available_memory(device) -> int | None:
    """Bytes free on `device`: MemAvailable for the CPU (psutil off Linux), the driver's count for CUDA."""
    if device.type == "cuda":
        import torch

        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    try:
        meminfo = Path("/proc/meminfo").read_text()
        return int(re.search(r"^MemAvailable:\s+(\d+) kB", meminfo, re.M)[1]) * 1024
    except (OSError, TypeError):
        try:
            import psutil
        except ImportError:
            return None
        return psutil.virtual_memory().available


def size_setting(cfg: DictConfig) -> str:
    """`setting=value` for the model's size setting (latent_dim, hidden, channels) with the largest value."""
    schema = SCHEMAS.get(cfg.model.get("_target_"))
    types = get_type_hints(schema, include_extras=True) if schema else {}
    model = OmegaConf.to_container(cfg.model, resolve=True)
    sizes = {k: model[k] for k, kind in types.items() if SIZE in getattr(kind, "__metadata__", ()) and k in model}
    if not sizes:
        return f"model._target_={model.get('_target_')}"
    largest = max(sizes, key=lambda k: max(sizes[k], default=0) if isinstance(sizes[k], list) else sizes[k])
    return f"{source(cfg.model, largest, 'model.')}={show(sizes[largest])}"
