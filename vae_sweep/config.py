"""What the config is made of: its groups (one folder of conf/ each), and the typed schema of every setting.

The schema gives each setting its type and the values it accepts, beside its name; `vae_sweep.checks` checks a
composed config against it before any work starts. The defaults stay in conf/*.yaml, with the comments users read:
no schema class holds a default value, so there is one source of truth for each.

A group's node is checked by the class that `SCHEMAS` gives for its `_target_` (so `conv` and `conv64` share one),
which works the same under the command line, a sweep and the Compose API. A node whose `_target_` is not listed
(a user's own model, say) is checked against that target's signature and type hints (vae_sweep/contracts.py). Hydra's own keys (`_target_`, `_partial_`, ...) are not listed.

Types: int, float (an int is accepted, and it must be finite), bool, str, `Literal[...]`, `list[...]`, `X | None`
(null is accepted), a nested schema class, and `Annotated[type, Range | Length | Match | Accepts | SIZE]`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

from vae_sweep.registry import OBJECTIVES

JOB_GROUPS = (
    "model",
    "prior",
    "posterior",
    "loss",
    "likelihood",
    "optimizer",
    "scheduler",
    "dataset",
)  # each makes part of a job
GROUPS = (*JOB_GROUPS, "experiment", "sweep", "debug")  # every group a command line may choose an option of
# Job groups added after studies and checkpoints were first recorded, with the option that one without them used:
# a study records these only where they differ, so a study made before them goes on (vae_sweep/sweep/study.py).
ADDED_GROUPS = {"prior": "standard", "posterior": "gaussian"}
# Settings that change how a run runs or where it reads and writes, not what it computes: they define no experiment
# (vae_sweep/sweep/study.py names studies without them) and are no parameter of a trial (vae_sweep/analysis/sources.py).
# `logger` stands for every key under it too (`logger.mlflow.tracking_uri`): `neutral`.
NEUTRAL = ("progress", "threads", "device", "data_dir", "eval.pictures", "eval.batch_size", "resume", "logger")
# The overrides a sweep adds to a trial's job to address its study trial (vae_sweep/sweep/trial.py): not parameters either.
TRIAL_HANDLE = "trial."
LIST_GROUPS = ("logger",)  # a list of options may be chosen (`logger=[tensorboard,mlflow]`), or none
OPTIONAL_GROUPS = ("scheduler",)  # may be empty (scheduler=none); every other job group must name a `_target_`


def neutral(key: str) -> bool:
    """Whether an override of `key` changes only how a run runs, not what it computes (NEUTRAL)."""
    return key in NEUTRAL or key.partition(".")[0] in NEUTRAL


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
Objective = Literal[OBJECTIVES]  # the metrics a sweep may optimise (vae_sweep/registry.py)
Direction = Literal["minimize", "maximize"]
IWAE_K_MAX = 100_000  # importance samples per example: 20x the literature's largest k
# A study's base name names its SQLite file (multirun/<name>.db), so it is a plain file name.
STUDY_NAME = Match(r"(?!\.\.?$)[^/\\\x00]+", "a plain file name: no / or \\, not . or .. (it names multirun/<name>.db)")
DEVICE = Match(r"auto|cpu|mps|cuda(:\d+)?", "auto, cpu, cuda, cuda:N or mps")
# Hydra reads `precision=16` as an integer and `precision=bf16` as a string: both forms (vae_sweep/runtime.py)
Precision = Annotated[Literal[32, 16, "32", "16", "bf16"], Accepts("32, bf16 or 16")]


# --- the top-level knobs (conf/config.yaml) and the sweep's objectives -----------------------------------------


@dataclass
class DisentanglementSettings:  # eval.disentanglement: the metrics of datasets with factors (vae_sweep/disentangle/report.py)
    samples: Annotated[int, Range(ge=20)]  # MIG, DCI, SAP training points, FactorVAE variance points; tests: half
    batch_points: Annotated[int, Range(ge=20)]  # β-VAE and FactorVAE training points; evaluation: half
    batch_size: Annotated[int, Range(ge=2)]  # factor vectors per β-VAE / FactorVAE point (a variance needs 2)
    dci_model: Literal["hist", "gbt"]
    seed: Seed


@dataclass
class EvalSettings:
    # importance samples for the IWAE bound; 0 skips it. The literature's k = 5,000 (Burda et al. 2016) fits well
    # under the bound; beyond it one evaluation takes hours.
    iwae_k: Annotated[int, Range(ge=0, le=IWAE_K_MAX)]
    batch_size: PositiveInt  # validation batch size
    pictures: bool
    beta: Positive  # loss=multirate: the beta the one model is validated and pictured at
    disentanglement: DisentanglementSettings | None  # null: no disentanglement metrics


@dataclass
class CurveSettings:
    betas: Annotated[int, Range(ge=2)]  # loss=multirate: points along the curve


@dataclass
class RootSettings:
    """The top-level knobs. The group nodes and `hydra` have schemas of their own; keys added with `+` pass."""

    open: ClassVar[bool] = True
    beta: NonNegative
    latent_dim: PositiveInt
    lr: Positive
    epochs: PositiveInt
    batch_size: PositiveInt
    seed: Seed
    device: Annotated[str, DEVICE]
    precision: Precision  # what the device can do is checked once it is known (checks.check_precision)
    threads: PositiveInt | None
    kl_warmup_steps: Count
    data_dir: str
    resume: str | None
    max_batches: PositiveInt | None
    progress: bool
    eval: EvalSettings
    curve: CurveSettings
    objectives: Annotated[
        Annotated[list[Objective], Length(min=1)] | Objective | None, Accepts(f"one or more of {', '.join(OBJECTIVES)}")
    ]


# --- model (vae_sweep/models.py) --------------------------------------------------------------------------------


@dataclass
class MLPSettings:  # model=mlp
    latent_dim: Annotated[PositiveInt, SIZE]
    hidden: Annotated[list[PositiveInt], SIZE]  # may be empty: a linear encoder and decoder
    split_heads: bool
    activation: Literal["relu", "leaky_relu", "tanh"]


@dataclass
class ConvSettings:  # model=conv, model=conv64
    name: str
    latent_dim: Annotated[PositiveInt, SIZE]
    channels: Annotated[list[PositiveInt], Length(min=1), SIZE]
    activation: Literal["relu", "leaky_relu"]
    split_heads: bool


@dataclass
class LocatelloSettings:  # model=locatello
    name: str
    latent_dim: Annotated[PositiveInt, SIZE]


# --- prior and posterior (vae_sweep/families.py) -------------------------------------------------------------------


@dataclass
class VampPriorSettings:  # prior=vamp
    components: Annotated[PositiveInt, SIZE]  # pseudo-inputs K


@dataclass
class IAFSettings:  # posterior=iaf
    latent_dim: Annotated[PositiveInt, SIZE]
    steps: Annotated[PositiveInt, SIZE]  # flow steps T
    hidden: Annotated[PositiveInt, SIZE]  # MADE hidden units per step


@dataclass
class TwoLayerSettings:  # prior=two_layer, posterior=two_layer (vae_sweep/stochastic_layers.py)
    latent_dim: Annotated[PositiveInt, SIZE]  # z1, the layer the decoder reads
    top_dim: Annotated[PositiveInt, SIZE]  # z2
    hidden: Annotated[list[PositiveInt], Length(min=1), SIZE]  # tanh units of each conditional Gaussian


# --- loss and likelihood (vae_sweep/losses.py) ------------------------------------------------------------------
# A loss's schema also says what the checks need to know of it, read by exact `_target_`, without importing it:
# `stochastic` (it samples z and has a rate; losses.Loss) and `draws_curve` (one run gives the whole curve).


@dataclass
class BetaLossSettings:  # loss=beta, loss=elbo
    stochastic: ClassVar[bool] = True
    draws_curve: ClassVar[bool] = False
    beta: NonNegative
    warmup_steps: Count


@dataclass
class CapacityLossSettings:  # loss=capacity
    gamma: NonNegative
    c_max: NonNegative  # nats per example
    c_steps: Count
    warmup_steps: Count


@dataclass
class MultiRateLossSettings:  # loss=multirate (beta_min < beta_max, and eval.beta between them: checks.check_multirate)
    draws_curve: ClassVar[bool] = True
    beta_min: Positive
    beta_max: Positive
    conditioning: Literal["film", "gates", "both"]
    warmup_steps: Count


@dataclass
class IWAELossSettings:  # loss=iwae
    k: PositiveInt  # importance samples per example and step
    warmup_steps: Count


@dataclass
class AutoencoderLossSettings:  # loss=ae: no settings, and no rate
    stochastic: ClassVar[bool] = False


@dataclass
class NoSettings:  # likelihood=bernoulli
    pass


@dataclass
class GaussianSettings:  # likelihood=gaussian
    sigma: Positive  # in pixel units, images in [0, 1]


# --- optimizer and scheduler (torch.optim) ------------------------------------------------------------------


@dataclass
class AdamSettings:  # optimizer=adam, optimizer=adamw; betas, eps and amsgrad are torch's, for `+optimizer.eps=...`
    lr: Positive
    weight_decay: NonNegative
    fused: bool | None
    betas: Annotated[list[Annotated[float, Range(ge=0, lt=1)]], Length(2, 2)]
    eps: Positive
    amsgrad: bool


@dataclass
class SGDSettings:  # optimizer=sgd
    lr: Positive
    momentum: NonNegative
    nesterov: bool
    weight_decay: NonNegative
    dampening: NonNegative


@dataclass
class StepLRSettings:  # scheduler=step
    step_size: PositiveInt  # epochs
    gamma: Positive


@dataclass
class ExponentialLRSettings:  # scheduler=exponential
    gamma: Positive


# --- dataset (vae_sweep/data.py) ----------------------------------------------------------------------------------


@dataclass
class SplitSettings:  # dataset=mnist_5k, dataset=digits (val_size's upper end depends on the data: checked on loading)
    val_size: PositiveInt
    split_seed: Seed
    binarize: Literal["none", "static", "dynamic"]  # data.binarized
    binarize_seed: Seed


@dataclass
class TorchvisionMNISTSettings:  # dataset=mnist, dataset=fashion_mnist
    variant: Literal["MNIST", "FashionMNIST"]
    data_dir: str
    download: bool
    binarize: Literal["none", "static", "dynamic"]
    binarize_seed: Seed


@dataclass
class CIFAR10Settings:  # dataset=cifar10
    data_dir: str
    download: bool


@dataclass
class CelebASettings:  # dataset=celeba (label_attribute is one of the 40 in the data: checked on loading)
    data_dir: str
    download: bool
    image_size: PositiveInt  # pixels
    crop: PositiveInt  # pixels
    max_examples: PositiveInt | None
    label_attribute: str


@dataclass
class StrideSettings:  # keep every k-th class of each factor of the dSprites grid
    shape: PositiveInt
    scale: PositiveInt
    orientation: PositiveInt
    posX: PositiveInt
    posY: PositiveInt


@dataclass
class SpritesSettings:  # dataset=sprites (val_size's upper end depends on the grid: checked on loading)
    cache_dir: str
    stride: StrideSettings | None
    val_size: PositiveInt
    split_seed: Seed


@dataclass
class DSpritesSettings:  # dataset=dsprites
    data_dir: str
    download: bool
    stride: StrideSettings | None
    val_size: PositiveInt
    split_seed: Seed


# --- logger (vae_sweep/loggers.py): `library` is the module it needs, and the extra that installs it ---------------


@dataclass
class CSVLoggerSettings:  # logger=csv
    library: ClassVar[str | None] = None


@dataclass
class TensorBoardSettings:  # logger=tensorboard
    library: ClassVar[str | None] = "tensorboard"
    save_dir: str  # relative to the run dir


@dataclass
class MLflowSettings:  # logger=mlflow
    library: ClassVar[str | None] = "mlflow"
    tracking_uri: str | None  # null: MLFLOW_TRACKING_URI, else MLflow's default
    experiment: str  # a single job's experiment; a sweep's trials go to their study's


# --- the sweeper settings a user sets (hydra.sweeper; its other keys belong to the plugin) ------------------------


@dataclass
class SamplerSettings:
    open: ClassVar[bool] = True
    seed: Seed | None


@dataclass
class OptunaSweeperSettings:
    open: ClassVar[bool] = True
    n_trials: PositiveInt
    n_jobs: Annotated[PositiveInt | Literal[-1], Accepts("an integer >= 1, or -1 for one per core")]
    max_failure_rate: Annotated[float, Range(ge=0, le=1)]
    direction: Annotated[
        Direction | Annotated[list[Direction], Length(min=1)], Accepts("minimize or maximize, or a list of them")
    ]
    study_name: Annotated[str, STUDY_NAME]
    storage: str | None  # a database URL: checked by vae_sweep/sweep/storage.py
    sampler: SamplerSettings
    heartbeat_interval: PositiveInt  # seconds (below grace_period: vae_sweep/sweep/settings.py)
    grace_period: PositiveInt  # seconds
    artifact_dir: str | None  # a folder that can be written, or null
    storage_retry_seconds: Annotated[float, Range(ge=0)]  # how long a lost database is tried again (s)
    wait_seconds: Annotated[float, Range(gt=0)]  # how long to wait for other workers' running trials (s)


SCHEMAS: dict[str, type] = {
    "vae_sweep.models.mlp_vae": MLPSettings,
    "vae_sweep.families.StandardNormal": NoSettings,
    "vae_sweep.families.VampPrior": VampPriorSettings,
    "vae_sweep.families.GaussianPosterior": NoSettings,
    "vae_sweep.families.IAFPosterior": IAFSettings,
    "vae_sweep.stochastic_layers.TwoLayerPrior": TwoLayerSettings,
    "vae_sweep.stochastic_layers.TwoLayerPosterior": TwoLayerSettings,
    "vae_sweep.losses.IWAELoss": IWAELossSettings,
    "vae_sweep.models.conv_vae": ConvSettings,
    "vae_sweep.models.locatello_vae": LocatelloSettings,
    "vae_sweep.losses.BetaVAELoss": BetaLossSettings,
    "vae_sweep.losses.CapacityLoss": CapacityLossSettings,
    "vae_sweep.losses.MultiRateLoss": MultiRateLossSettings,
    "vae_sweep.losses.AutoencoderLoss": AutoencoderLossSettings,
    "vae_sweep.losses.Bernoulli": NoSettings,
    "vae_sweep.losses.Gaussian": GaussianSettings,
    "torch.optim.Adam": AdamSettings,
    "torch.optim.AdamW": AdamSettings,
    "torch.optim.SGD": SGDSettings,
    "torch.optim.lr_scheduler.StepLR": StepLRSettings,
    "torch.optim.lr_scheduler.ExponentialLR": ExponentialLRSettings,
    "vae_sweep.data.mnist_5k": SplitSettings,
    "vae_sweep.data.sklearn_digits": SplitSettings,
    "vae_sweep.downloaded.torchvision_mnist": TorchvisionMNISTSettings,
    "vae_sweep.downloaded.cifar10": CIFAR10Settings,
    "vae_sweep.downloaded.celeba": CelebASettings,
    "vae_sweep.sprites.sprites": SpritesSettings,
    "vae_sweep.sprites.dsprites": DSpritesSettings,
    "vae_sweep.loggers.CSVLogger": CSVLoggerSettings,
    "vae_sweep.loggers.TensorBoardLogger": TensorBoardSettings,
    "vae_sweep.loggers.MLflowLogger": MLflowSettings,
    "hydra_plugins.vae_sweep_sweeper.vae_optuna_sweeper.VaeOptunaSweeper": OptunaSweeperSettings,
    "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper": OptunaSweeperSettings,
}
