"""What the config is made of: its groups (one folder of conf/ each), and the typed schema of every setting.

The schema gives each setting its type and the values it accepts, beside its name; `vae_sweep.validate` checks a
composed config against it before any work starts. The defaults stay in conf/*.yaml, with the comments users read:
no schema class holds a default value, so there is one source of truth for each.

A group's node is checked by the class that `SCHEMAS` gives for its `_target_` (so `conv` and `conv64` share one),
which works the same under the command line, a sweep and the Compose API. A node whose `_target_` is not listed
(a user's own model, say) is left to its target. Hydra's own keys (`_target_`, `_partial_`, ...) are not listed.

Types: int, float (an int is accepted, and it must be finite), bool, str, `Literal[...]`, `list[...]`, `X | None`
(null is accepted), a nested schema class, and `Annotated[type, Range | Length | Match | Accepts | SIZE]`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

from vae_sweep.metrics import OBJECTIVES

JOB_GROUPS = ("model", "loss", "likelihood", "optimizer", "scheduler", "dataset")  # each makes part of a job
GROUPS = (*JOB_GROUPS, "sweep", "debug")  # every group a command line may choose an option of
# Settings that change how a run runs or where it reads and writes, not what it computes: they define no experiment
# (vae_sweep/study.py names studies without them) and are no parameter of a trial (vae_sweep/analysis_sources.py).
NEUTRAL = ("progress", "threads", "device", "data_dir", "eval.pictures", "eval.batch_size", "resume")
# The overrides a sweep adds to a trial's job to address its study trial (vae_sweep/trial.py): not parameters either.
TRIAL_HANDLE = "trial."
OPTIONAL_GROUPS = ("scheduler",)  # may be empty (scheduler=none); every other job group must name a `_target_`


# --- what a setting accepts, beyond its type ----------------------------------------------------------------


@dataclass(frozen=True)
class Range:
    """The numbers a setting accepts: `ge`/`gt` bound them below, `le`/`lt` above."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def holds(self, x: float) -> bool:
        return (
            (self.ge is None or x >= self.ge)
            and (self.gt is None or x > self.gt)
            and (self.le is None or x <= self.le)
            and (self.lt is None or x < self.lt)
        )

    def __str__(self) -> str:
        if self.ge is not None and self.le is not None:
            return f"from {self.ge:g} to {self.le:g}"
        bounds = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
        return " and ".join(f"{op} {getattr(self, k):g}" for k, op in bounds if getattr(self, k) is not None)


@dataclass(frozen=True)
class Length:
    """How many items a list setting holds: at least `min`, at most `max`."""

    min: int = 0
    max: int | None = None

    def holds(self, items: list) -> bool:
        return self.min <= len(items) and (self.max is None or len(items) <= self.max)


@dataclass(frozen=True)
class Match:
    """A string setting that must match a regular expression in full; `says` spells out what it accepts."""

    pattern: str
    says: str

    def holds(self, text: str) -> bool:
        return re.fullmatch(self.pattern, text) is not None


@dataclass(frozen=True)
class Accepts:
    """What a setting accepts, in words, where the words built from its type would read badly."""

    says: str


SIZE = "size"  # marks a model setting that sets how many parameters it has (named when it would not fit in memory)

PositiveInt = Annotated[int, Range(ge=1)]
Count = Annotated[int, Range(ge=0)]  # optimiser steps, samples
Seed = Annotated[int, Range(ge=0)]
Positive = Annotated[float, Range(gt=0)]
NonNegative = Annotated[float, Range(ge=0)]
Objective = Literal[OBJECTIVES]  # the metrics a sweep may optimise (vae_sweep/metrics.py)
Direction = Literal["minimize", "maximize"]
DEVICE = Match(r"auto|cpu|mps|cuda(:\d+)?", "auto, cpu, cuda, cuda:N or mps")


# --- the top-level knobs (conf/config.yaml) and the sweep's objectives -----------------------------------------


@dataclass
class Disentanglement:  # eval.disentanglement: the metrics of datasets with factors (vae_sweep/factor_metrics.py)
    samples: Annotated[int, Range(ge=20)]  # MIG, DCI, SAP training points, FactorVAE variance points; tests: half
    batch_points: Annotated[int, Range(ge=20)]  # β-VAE and FactorVAE training points; evaluation: half
    batch_size: Annotated[int, Range(ge=2)]  # factor vectors per β-VAE / FactorVAE point (a variance needs 2)
    dci_model: Literal["hist", "gbt"]
    seed: Seed


@dataclass
class Eval:
    iwae_k: Count  # importance samples for the IWAE bound; 0 skips it
    batch_size: PositiveInt  # validation batch size
    pictures: bool
    beta: Positive  # loss=multirate: the beta the one model is validated and pictured at
    disentanglement: Disentanglement | None  # null: no disentanglement metrics


@dataclass
class Curve:
    betas: Annotated[int, Range(ge=2)]  # loss=multirate: points along the curve


@dataclass
class Root:
    """The top-level knobs. The group nodes and `hydra` have schemas of their own; keys added with `+` pass."""

    open: ClassVar[bool] = True
    beta: NonNegative
    latent_dim: PositiveInt
    lr: Positive
    epochs: PositiveInt
    batch_size: PositiveInt
    seed: Seed
    device: Annotated[str, DEVICE]
    threads: PositiveInt | None
    kl_warmup_steps: Count
    data_dir: str
    resume: str | None
    max_batches: PositiveInt | None
    progress: bool
    eval: Eval
    curve: Curve
    objectives: Annotated[
        Annotated[list[Objective], Length(min=1)] | Objective | None, Accepts(f"one or more of {', '.join(OBJECTIVES)}")
    ]


# --- model (vae_sweep/models.py) --------------------------------------------------------------------------------


@dataclass
class MLP:  # model=mlp
    latent_dim: Annotated[PositiveInt, SIZE]
    hidden: Annotated[list[PositiveInt], SIZE]  # may be empty: a linear encoder and decoder
    split_heads: bool


@dataclass
class Conv:  # model=conv, model=conv64
    name: str
    latent_dim: Annotated[PositiveInt, SIZE]
    channels: Annotated[list[PositiveInt], Length(min=1), SIZE]
    activation: Literal["relu", "leaky_relu"]
    split_heads: bool


@dataclass
class Locatello:  # model=locatello
    name: str
    latent_dim: Annotated[PositiveInt, SIZE]


# --- loss and likelihood (vae_sweep/losses.py) ------------------------------------------------------------------


@dataclass
class BetaLoss:  # loss=beta, loss=elbo
    beta: NonNegative
    warmup_steps: Count


@dataclass
class CapacityLoss:  # loss=capacity
    gamma: NonNegative
    c_max: NonNegative  # nats per example
    c_steps: Count
    warmup_steps: Count


@dataclass
class MultiRateLoss:  # loss=multirate (beta_min < beta_max, and eval.beta between them: validate.check_multirate)
    beta_min: Positive
    beta_max: Positive
    conditioning: Literal["film", "gates", "both"]
    warmup_steps: Count


@dataclass
class NoSettings:  # loss=ae, likelihood=bernoulli
    pass


@dataclass
class Gaussian:  # likelihood=gaussian
    sigma: Positive  # in pixel units, images in [0, 1]


# --- optimizer and scheduler (torch.optim) ------------------------------------------------------------------


@dataclass
class Adam:  # optimizer=adam, optimizer=adamw; betas, eps and amsgrad are torch's, for `+optimizer.eps=...`
    lr: Positive
    weight_decay: NonNegative
    fused: bool | None
    betas: Annotated[list[Annotated[float, Range(ge=0, lt=1)]], Length(2, 2)]
    eps: Positive
    amsgrad: bool


@dataclass
class SGD:  # optimizer=sgd
    lr: Positive
    momentum: NonNegative
    nesterov: bool
    weight_decay: NonNegative
    dampening: NonNegative


@dataclass
class StepLR:  # scheduler=step
    step_size: PositiveInt  # epochs
    gamma: Positive


@dataclass
class ExponentialLR:  # scheduler=exponential
    gamma: Positive


# --- dataset (vae_sweep/data.py) ----------------------------------------------------------------------------------


@dataclass
class Split:  # dataset=mnist_5k, dataset=digits (val_size's upper end depends on the data: checked on loading)
    val_size: PositiveInt
    split_seed: Seed


@dataclass
class TorchvisionMNIST:  # dataset=mnist, dataset=fashion_mnist
    variant: Literal["MNIST", "FashionMNIST"]
    data_dir: str
    download: bool


@dataclass
class CIFAR10:  # dataset=cifar10
    data_dir: str
    download: bool


@dataclass
class CelebA:  # dataset=celeba (label_attribute is one of the 40 in the data: checked on loading)
    data_dir: str
    download: bool
    image_size: PositiveInt  # pixels
    crop: PositiveInt  # pixels
    max_examples: PositiveInt | None
    label_attribute: str


@dataclass
class Stride:  # keep every k-th class of each factor of the dSprites grid
    shape: PositiveInt
    scale: PositiveInt
    orientation: PositiveInt
    posX: PositiveInt
    posY: PositiveInt


@dataclass
class Sprites:  # dataset=sprites (val_size's upper end depends on the grid: checked on loading)
    cache_dir: str
    stride: Stride | None
    val_size: PositiveInt
    split_seed: Seed


@dataclass
class DSprites:  # dataset=dsprites
    data_dir: str
    download: bool
    stride: Stride | None
    val_size: PositiveInt
    split_seed: Seed


# --- the sweeper settings a user sets (hydra.sweeper; its other keys belong to the plugin) ------------------------


@dataclass
class Sampler:
    open: ClassVar[bool] = True
    seed: Seed | None


@dataclass
class OptunaSweeper:
    open: ClassVar[bool] = True
    n_trials: PositiveInt
    n_jobs: Annotated[PositiveInt | Literal[-1], Accepts("an integer >= 1, or -1 for one per core")]
    max_failure_rate: Annotated[float, Range(ge=0, le=1)]
    direction: Annotated[
        Direction | Annotated[list[Direction], Length(min=1)], Accepts("minimize or maximize, or a list of them")
    ]
    study_name: str
    storage: str | None
    sampler: Sampler


SCHEMAS: dict[str, type] = {
    "vae_sweep.models.mlp_vae": MLP,
    "vae_sweep.models.conv_vae": Conv,
    "vae_sweep.models.locatello_vae": Locatello,
    "vae_sweep.losses.BetaVAELoss": BetaLoss,
    "vae_sweep.losses.CapacityLoss": CapacityLoss,
    "vae_sweep.losses.MultiRateLoss": MultiRateLoss,
    "vae_sweep.losses.AutoencoderLoss": NoSettings,
    "vae_sweep.losses.Bernoulli": NoSettings,
    "vae_sweep.losses.Gaussian": Gaussian,
    "torch.optim.Adam": Adam,
    "torch.optim.AdamW": Adam,
    "torch.optim.SGD": SGD,
    "torch.optim.lr_scheduler.StepLR": StepLR,
    "torch.optim.lr_scheduler.ExponentialLR": ExponentialLR,
    "vae_sweep.data.mnist_5k": Split,
    "vae_sweep.data.sklearn_digits": Split,
    "vae_sweep.downloaded.torchvision_mnist": TorchvisionMNIST,
    "vae_sweep.downloaded.cifar10": CIFAR10,
    "vae_sweep.downloaded.celeba": CelebA,
    "vae_sweep.sprites.sprites": Sprites,
    "vae_sweep.sprites.dsprites": DSprites,
    "hydra_plugins.vae_sweep_sweeper.vae_optuna_sweeper.VaeOptunaSweeper": OptunaSweeper,
    "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper": OptunaSweeper,
}
