"""What a model, a loss, a prior, a posterior and a dataset of your own must offer, as `typing.Protocol`s: nothing
to inherit. Name yours in a config (`conf/model/my_vae.yaml: _target_: my_vae.Net`), trust its package
(`VAE_SWEEP_TRUSTED_TARGETS=my_vae.*`, vae_sweep/trust.py), and training, evaluation, the pictures, the curve, a
sweep and the disentanglement metrics use it as they use vae_sweep's own.

- **Model** (`model` group): built as `Net(input_shape=(C, H, W), **settings)`, an `nn.Module` with `latent_dim`,
  `encode` and `decode` (below). vae_sweep wraps it (`models.UserVAE`) and adds the config's prior and posterior,
  so `forward` is not called in training; it is checked, when present, to return (logits, mu, logvar).
  loss=multirate conditions every Linear/Conv2d/ConvTranspose2d of its `encoder` and `decoder` submodules on β
  (all but the decoder's last layer, its output): a model without both submodules trains with every other loss.
- **Prior**, **Posterior** (`prior`, `posterior`): `vae_sweep.families.Prior` and `Posterior`; a prior is built
  with `input_shape=`, and one with `bind(model)` is given the model.
- **Loss** (`loss`): `vae_sweep.losses.Loss`, or `BetaConditionedLoss` for one model of every β.
  **Likelihood** (`likelihood`): `vae_sweep.losses.Likelihood`.
- **Dataset** (`dataset`): a callable whose settings are the node's, returning a `vae_sweep.data.ImageData`
  (train and validation images (N, C, H, W), uint8 in 0..255 or float in [0, 1], labels (N,) int64, and for the
  disentanglement metrics `Factors`: the images form a complete grid over known factors).

A class that breaks its contract is refused before training in one line naming what is missing (`check_model`,
`check_data`); the settings of a user's option are checked against its signature and type hints
(`check_signature`), since vae_sweep.config's schema cannot know them.
"""

from __future__ import annotations

import difflib
import inspect
import typing
from collections.abc import Sequence
from typing import Protocol, get_args, get_origin, runtime_checkable

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from vae_sweep.data import Factors, ImageData
from vae_sweep.errors import ConfigError, first_line
from vae_sweep.families import Posterior, Prior
from vae_sweep.losses import BetaConditionedLoss, Likelihood, Loss

__all__ = [
    "BetaConditionedLoss",
    "Dataset",
    "Factors",
    "ImageData",
    "Likelihood",
    "Loss",
    "Model",
    "Posterior",
    "Prior",
    "check_data",
    "check_members",
    "check_model",
    "check_signature",
]


@runtime_checkable
class Model(Protocol):
    """A VAE's networks: the encoder's Gaussian q(z|x) and the decoder's logits of p(x|z)."""

    latent_dim: int  # L

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, H, W) in [0, 1] -> mu, logvar (B, L) each: q(z|x) = N(mu, diag(exp(logvar)))."""
        ...

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, L) -> logits (B, C, H, W); the image mean is their sigmoid."""
        ...


class Dataset(Protocol):
    """A dataset builder: `dataset.<setting>` are its keyword arguments."""

    def __call__(self, **settings: object) -> ImageData: ...


MODEL_MEMBERS = ("latent_dim", "encode", "decode")
PROBE = 2  # images in the batch a model is tried on


# --- a model of the user's own -----------------------------------------------------------------------------------


def check_model(net: object, input_shape: tuple[int, int, int], target: str) -> None:
    """Refuse, in one line, a model that is not an `nn.Module` meeting `Model`: by inspection, then on PROBE random
    images of the data's shape (C, H, W), in eval mode, without gradients or touching the random streams."""
    where = f"model._target_={target}"
    missing = [m for m in MODEL_MEMBERS if not hasattr(net, m)]
    if not isinstance(net, nn.Module) or missing:
        what = f"lacks {', '.join(missing)}" if missing else f"builds a {type(net).__name__}, not a torch.nn.Module"
        raise ConfigError(
            f"{where}: {what}; a model is an nn.Module with latent_dim, encode(x) -> (mu, logvar) and "
            "decode(z) -> logits (vae_sweep/contracts.py: Model)"
        )
    if not isinstance(net.latent_dim, int) or net.latent_dim < 1:
        raise ConfigError(f"{where}: latent_dim={net.latent_dim!r}; must be an integer >= 1")
    training = net.training
    net.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            probe(net, input_shape, where)
    finally:
        net.train(training)


def probe(net: nn.Module, input_shape: tuple[int, int, int], where: str) -> None:
    """Call encode, decode and (if defined) forward on a tiny batch, and check what each returns against `Model`."""
    b, dim = PROBE, net.latent_dim
    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    x = torch.rand(b, *input_shape, device=device)  # (B, C, H, W) in [0, 1]
    out = call(net.encode, x, f"{where}: encode(x {shape(x)})")
    if not (isinstance(out, tuple) and len(out) == 2 and all(is_shaped(t, (b, dim)) for t in out)):
        raise ConfigError(
            f"{where}: encode(x {shape(x)}) returned {describe(out)}; must be (mu, logvar), {(b, dim)} each"
        )
    z = out[0]
    logits = call(net.decode, z, f"{where}: decode(z {shape(z)})")
    if not is_shaped(logits, (b, *input_shape)):
        raise ConfigError(
            f"{where}: decode(z {shape(z)}) returned {describe(logits)}; must be logits {(b, *input_shape)}"
        )
    if type(net).forward is not nn.Module.forward:
        out = call(lambda t: net(t, sample=False), x, f"{where}: forward(x {shape(x)}, sample=False)")
        if not (isinstance(out, tuple) and len(out) == 3 and is_shaped(out[0], (b, *input_shape))):
            raise ConfigError(
                f"{where}: forward(x, sample=False) returned {describe(out)}; must be (logits, mu, logvar)"
            )


def call(method, arg: torch.Tensor, what: str):
    try:
        return method(arg)
    except Exception as e:  # the user's code: its error, as one line naming the call
        raise ConfigError(f"{what} raised {type(e).__name__}: {first_line(e)}") from None


def shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def is_shaped(t: object, want: tuple[int, ...]) -> bool:
    return isinstance(t, torch.Tensor) and t.is_floating_point() and tuple(t.shape) == want


def describe(out: object) -> str:
    """What a call returned, in shapes: `a tensor (2, 8)`, `(tensor (2, 8), tensor (2, 8))`."""
    if isinstance(out, torch.Tensor):
        return f"a {out.dtype} tensor {shape(out)}"
    if isinstance(out, tuple):
        return (
            "("
            + ", ".join(f"tensor {shape(t)}" if isinstance(t, torch.Tensor) else type(t).__name__ for t in out)
            + ")"
        )
    return f"a {type(out).__name__}"


# --- a loss, a likelihood, a prior or a posterior of the user's own --------------------------------------------

MEMBERS = {  # group -> what its object must have, and the protocol that says so
    "loss": (("stochastic", "__call__"), "vae_sweep.losses.Loss"),
    "likelihood": (("distortion",), "vae_sweep.losses.Likelihood"),
    "prior": (("standard", "log_prob", "sample"), "vae_sweep.families.Prior"),
    "posterior": (("gaussian", "__call__"), "vae_sweep.families.Posterior"),
}


def check_members(obj: object, group: str, target: str) -> None:
    """Refuse, in one line, an object of `group` that lacks a member its protocol asks for (by inspection)."""
    members, protocol = MEMBERS[group]
    missing = [m for m in members if not hasattr(obj, m)]
    if missing:
        raise ConfigError(
            f"{group}._target_={target}: lacks {', '.join(missing)}; see {protocol} (vae_sweep/contracts.py)"
        )


# --- a dataset of the user's own ---------------------------------------------------------------------------------


def check_data(data: object, target: str) -> None:
    """A dataset builder returned an `ImageData` whose images lie in [0, 1] (float) or 0..255 (uint8)."""
    where = f"dataset._target_={target}"
    if not isinstance(data, ImageData):
        raise ConfigError(
            f"{where}: returned a {type(data).__name__}; a dataset returns vae_sweep.data.ImageData "
            "(vae_sweep/contracts.py: Dataset)"
        )
    for name in ("train_x", "val_x"):
        x = getattr(data, name)
        if x.dtype != torch.uint8 and (not x.is_floating_point() or x.min() < 0 or x.max() > 1):
            raise ConfigError(f"{where}: {name} must be uint8 in 0..255 or floats in [0, 1]; it is {x.dtype}")


# --- the settings of a user's option against its signature ----------------------------------------------------

INSTANTIATE_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_")
GIVEN_BY_VAE_SWEEP = {  # keyword arguments the job passes itself when it builds the group's object
    "model": ("input_shape",),
    "prior": ("input_shape",),
    "optimizer": ("params",),
    "scheduler": ("optimizer",),
}


def check_signature(node: DictConfig, group: str, target: object) -> None:
    """Every setting of `node` is a parameter of `target` (a class or function) and of its hinted type, and every
    parameter without a default is set. One line per mistake: `model.widht=3: my_vae.Net takes no setting 'widht';
    did you mean width?`."""
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):  # a builtin without a signature: left to the target
        return
    name = node._target_
    open_ = any(p.kind == p.VAR_KEYWORD for p in params.values())
    named = [k for k, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    given = [str(k) for k in node if k not in INSTANTIATE_KEYS]
    passed = GIVEN_BY_VAE_SWEEP.get(group, ())
    for key in given:
        if key not in params and not open_:
            raise no_setting(node, group, key, [k for k in named if k not in passed])
    for key in named:
        p = params[key]
        if p.default is p.empty and key not in given and key not in passed and not node.get("_partial_"):
            raise ConfigError(f"{group}: {name} needs setting {key!r}; add +{group}.{key}=... (or give it a default)")
    check_types(node, group, target, [k for k in given if k in params])


def no_setting(node: DictConfig, group: str, key: str, named: list[str]) -> ConfigError:
    """`model.widht=3: my_vae.Net takes no setting 'widht'; did you mean width?`"""
    from vae_sweep.checks import raw, show

    near = difflib.get_close_matches(key, named, n=1)
    hint = f"did you mean {near[0]}?" if near else f"it takes {', '.join(named) or 'none'}"
    return ConfigError(f"{group}.{key}={show(raw(node, key))}: {node._target_} takes no setting {key!r}; {hint}")


def check_types(node: DictConfig, group: str, target: object, keys: list[str]) -> None:
    """Each setting against its type hint, where vae_sweep.checks knows the hint's kind (int, float, str, bool,
    Literal, unions, lists and sequences of those); other hints are left to the target."""
    from vae_sweep.checks import accepts, in_words, show

    try:
        hints = typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
    except Exception:  # a hint that does not resolve: left to the target
        return
    for key in keys:
        kind = as_list(hints.get(key))
        if kind is None:
            continue
        value = node[key]
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
        try:
            ok, words = accepts(kind, value), in_words(kind)
        except (TypeError, KeyError):
            continue
        if not ok:
            raise ConfigError(f"{group}.{key}={show(value)}: {node._target_} takes {words}")


def as_list(kind: object) -> object:
    """`Sequence[int]` and `tuple[int, ...]` as `list[int]`: YAML and the command line give lists."""
    origin, args = get_origin(kind), get_args(kind)
    if origin in (Sequence, tuple) and args and (origin is Sequence or args[-1] is Ellipsis):
        return list[args[0]]  # type: ignore[valid-type]
    return kind
