"""The one registry of what a run measures and how a run ends.

Every metric's name, unit, meaning, whether it needs a rate (the deterministic autoencoder has none), whether a
sweep may optimise it, and its direction live here, once. Validation (which objectives exist), metrics.json's
`units` block, the sweep summary, the analysis columns (`distortion_nats`) and the plot labels all read them.

Units (README, "Units"): distortion and rate are summed over pixels and latent dims respectively and averaged over
examples, in nats per example.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True)
class Unit:
    """A unit, written once: `text` for people and metrics.json, `slug` for column names, `axis` for plot labels."""

    text: str
    slug: str
    axis: str


NATS = Unit("nats per example", "nats", "nats/example")
PER_PIXEL = Unit("per pixel", "per_pixel", "per pixel")
COUNT = Unit("count", "", "count")  # a count's name says what it counts: column `active_units`
NATS2 = Unit("nats² (distortion x rate, nats per example each)", "nats2", "nats²")
FRACTION = Unit("fraction in [0, 1]", "fraction", "fraction")  # a disentanglement score: 1 is perfect
SECONDS = Unit("seconds", "", "s")  # wall time; the name says of what: column `disentanglement_seconds`


@dataclass(frozen=True)
class Metric:
    name: str
    unit: Unit
    meaning: str
    needs_rate: bool = False  # undefined for loss=ae, which has no posterior variance and so no KL
    objective: bool = False  # a sweep may name it in `objectives`
    direction: str = "minimize"
    per_dim: bool = False  # a list with one entry per latent dim, not a number

    @property
    def column(self) -> str:
        """The analysis table's column name, unit included: `distortion_nats`, `mse_per_pixel`."""
        return f"{self.name}_{self.unit.slug}" if self.unit.slug else self.name

    @property
    def label(self) -> str:
        """An axis label: `distortion [nats/example]`."""
        return f"{self.name} [{self.unit.axis}]"

    @property
    def described(self) -> str:
        """metrics.json's `units` entry: the unit, then what the number is."""
        return f"{self.unit.text}: {self.meaning}"


_ALL = (
    Metric("distortion", NATS, "-log p(x|z) summed over pixels, averaged over validation examples", objective=True),
    Metric(
        "rate",
        NATS,
        "KL(q(z|x) || p(z)) = E_q[log q(z|x) - log p(z)], averaged over validation examples: in closed form, summed "
        "over latent dims, for prior=standard posterior=gaussian (p = N(0, I)); else a one-draw Monte Carlo estimate "
        "(rate_estimator says which)",
        needs_rate=True,
        objective=True,
    ),
    Metric("neg_elbo", NATS, "distortion + rate", needs_rate=True, objective=True),
    Metric(
        "iwae_nll",
        NATS,
        "importance-weighted bound on -log p(x) with iwae_k samples (Burda et al. 2016)",
        needs_rate=True,
        objective=True,
    ),
    Metric("mse", PER_PIXEL, "squared error of the decoded mean, averaged over pixels and examples", objective=True),
    Metric("kl_per_dim", NATS, "the rate split by latent dim, one entry per dim", needs_rate=True, per_dim=True),
    Metric("active_units", COUNT, "latent dims with Var_x(E_q[z_i]) > 0.01 (Burda et al. 2016)", needs_rate=True),
    Metric(
        "curve_hypervolume",
        NATS2,
        "loss=multirate: area of the (distortion, rate) plane its curve dominates, "
        "against (P ln 2, P ln 2) nats, P = pixel values per image (vae_sweep/curve.py)",
        needs_rate=True,
        objective=True,
        direction="maximize",
    ),
    # Disentanglement (vae_sweep/disentangle/scores.py), on datasets with factors: posterior means of images sampled from
    # the factor grid as each metric prescribes. Scores higher is better; a random code scores near 0 (β-VAE and
    # FactorVAE: near chance, 1 / number of factors).
    *(
        Metric(name, FRACTION, meaning, objective=True, direction="maximize")
        for name, meaning in (
            (
                "beta_vae",
                "accuracy of a logistic regression telling which factor two batches share from the mean "
                "|z_a - z_b| per latent dim (Higgins et al. 2017)",
            ),
            (
                "factor_vae",
                "accuracy of the majority vote from the latent dim of least normalised variance to the factor "
                "held fixed (Kim & Mnih 2018)",
            ),
            (
                "mig",
                "mean over factors of the gap between the two largest mutual informations with one latent dim "
                "(posterior means in 20 bins), over the factor's entropy (Chen et al. 2018, disentanglement_lib's "
                "estimator)",
            ),
            (
                "dci_disentanglement",
                "1 - entropy (base K) of each latent dim's tree importances over the K factors, "
                "weighted by the dim's share (Eastwood & Williams 2018)",
            ),
            (
                "dci_completeness",
                "1 - entropy (base L) of each factor's tree importances over the L latent dims, "
                "weighted by the factor's share (Eastwood & Williams 2018)",
            ),
            (
                "dci_informativeness",
                "test accuracy of gradient-boosted trees predicting a factor from all latent dims, "
                "averaged over factors (Eastwood & Williams 2018)",
            ),
            (
                "sap",
                "mean over factors of the gap between the two best test accuracies of a linear SVM predicting the "
                "factor from one latent dim (Kumar et al. 2018)",
            ),
        )
    ),
    Metric("disentanglement_seconds", SECONDS, "wall time to sample, encode and score the disentanglement metrics"),
)
METRICS: dict[str, Metric] = {m.name: m for m in _ALL}
OBJECTIVES: tuple[str, ...] = tuple(m.name for m in _ALL if m.objective)
DISENTANGLEMENT: tuple[str, ...] = tuple(m.name for m in _ALL if m.unit is FRACTION)  # the scores, in this order


def units_block() -> dict[str, str]:
    """metrics.json's `units`: each metric's unit and meaning."""
    return {m.name: m.described for m in _ALL}


def in_units(values: dict, names: list[str] | tuple[str, ...]) -> str:
    """`distortion=95.31 nats  mse=0.02132 per pixel`: the metrics `names` of `values` at 4 significant digits."""
    parts = []
    for name in names:
        value, metric = values.get(name), METRICS.get(name)
        unit = f" {metric.unit.slug.replace('_', ' ')}" if metric and metric.unit.slug else ""
        parts.append(f"{name}={value:.4g}{unit}" if isinstance(value, (int, float)) else f"{name}={value}")
    return "  ".join(parts)


class Status(str, Enum):
    """How a run ended, as metrics.json, the study's `status` user attribute and the analysis say it."""

    COMPLETED = "completed"
    DIVERGED = "diverged"  # the loss or a validation term stopped being finite
    FAILED = "failed"  # the job raised
    PRUNED = "pruned"  # a sweep's pruner stopped it early: metrics.json holds its last epoch's validation metrics
    INTERRUPTED = "interrupted"  # Ctrl-C, or its sweep process was killed: does not count toward n_trials
    RUNNING = "running"  # metrics.json written at the start; a run killed hard stays so
    MISSING = "missing"  # the analysis found no readable metrics.json

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__


COUNTED: tuple[Status, ...] = tuple(Status)  # the statuses the analysis reports: interrupted is no failure
