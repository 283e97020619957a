"""The whole rate-distortion curve of one β-conditioned model (loss=multirate), and its hypervolume.

After training, the one model is fixed at each β of a log-spaced grid and evaluated there with vae_sweep's own
validation functions, as if it were a β-VAE trained at that β. Files (beside metrics.json):

- `curve.csv`: one row per β, ascending: `beta`, then `distortion_nats`, `rate_nats`, `neg_elbo_nats`,
  `mse_per_pixel`, `iwae_nll_nats` (when eval.iwae_k > 0) and `active_units` (names and units from
  vae_sweep/registry.py; nats per example, averaged over the validation set).
- `curve.png`: distortion against rate along β (the rate-distortion curve), each point labelled with its β.
- `curve_strip.png`: the same validation images (top row) reconstructed from their posterior means at each β
  of the grid, one row per β, smallest β (most rate) first.

The curve's **hypervolume** (nats²) is the area of the (distortion, rate) plane that its points dominate, both
minimised, bounded by the fixed reference point (D_ref, R_ref) = (P ln 2, P ln 2) nats, P = pixel values per image
(C·H·W; 543.4 nats for 28x28): D_ref is the Bernoulli distortion of a decoder that ignores z and says 1/2 for every
pixel; R_ref is as many nats as P binary pixels can hold. It depends on the dataset's shape only, so every run and
trial on one dataset is measured against the same point, and larger is better.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vae_sweep.conditioning import ConditionedVAE
from vae_sweep.evaluate import active_units, eval_mode, iwae_nll, validation_terms
from vae_sweep.pareto import MINIMIZE, hypervolume_2d
from vae_sweep.pictures import posterior_means
from vae_sweep.registry import METRICS

log = logging.getLogger(__name__)

COLUMNS = ("distortion", "rate", "neg_elbo", "mse", "iwae_nll", "active_units")  # metrics.py names, in order
STRIP_IMAGES = 8  # validation images per row of curve_strip.png


def beta_grid(beta_min: float, beta_max: float, n: int) -> list[float]:
    """n values of β evenly spaced in log β from beta_min to beta_max (both included), ascending."""
    if n < 2:
        raise ValueError(f"curve.betas={n}: need at least 2 points")
    lo, hi = math.log(beta_min), math.log(beta_max)
    inner = [math.exp(lo + (hi - lo) * i / (n - 1)) for i in range(1, n - 1)]
    return [beta_min, *inner, beta_max]  # the ends exactly, not exp(log(.)) of them


def reference_point(input_shape: Sequence[int]) -> tuple[float, float]:
    """(D_ref, R_ref) = (P ln 2, P ln 2) nats, P = C·H·W pixel values: see the module docstring."""
    p_ln2 = math.prod(input_shape) * math.log(2)
    return p_ln2, p_ln2


def curve_hypervolume(points: Sequence[tuple[float, float]], reference: tuple[float, float]) -> float:
    """Area (nats²) of the (distortion, rate) plane the curve dominates up to `reference`, both minimised:
    vae_sweep.pareto's one hypervolume."""
    return hypervolume_2d(np.asarray(points, dtype=float).reshape(-1, 2), reference, MINIMIZE)


def curve_rows(
    model: ConditionedVAE, likelihood, x: torch.Tensor, betas: Sequence[float], iwae_k: int = 0, batch_size: int = 500
) -> list[dict[str, float]]:
    """The model fixed at each β, evaluated on x (N, C, H, W) with evaluate.py's functions: one dict per β with
    `beta` and the COLUMNS under their metrics.py column names (iwae_nll only when iwae_k > 0)."""
    rows = []
    for beta in betas:
        with model.at_beta(beta):
            val = validation_terms(model, likelihood, x, stochastic=True, batch_size=batch_size)
            values = {k: val[k] for k in ("distortion", "rate", "neg_elbo", "mse")}
            if iwae_k:
                values["iwae_nll"] = iwae_nll(model, likelihood, x, iwae_k)
            values["active_units"] = active_units(val["mu"])
        rows.append({"beta": beta} | {METRICS[k].column: values[k] for k in COLUMNS if k in values})
    return rows


def write_curve_csv(path: Path, rows: list[dict[str, float]]) -> None:
    """curve.csv: a header of `beta` and the metric columns, then one row per β."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def points(rows: list[dict[str, float]]) -> list[tuple[float, float]]:
    """(distortion, rate) in nats of each row of `curve_rows`."""
    return [(r[METRICS["distortion"].column], r[METRICS["rate"].column]) for r in rows]


def save_curve_plot(
    rows: list[dict[str, float]], path: Path, reference: tuple[float, float] | None = None, title: str = ""
) -> Path:
    """curve.png: rate against distortion (the axes of the analysis's rate_distortion.png), one marker per β, labelled
    with its β; the legend below the axes, where no label can fall under it."""
    from matplotlib.figure import Figure

    d, r = zip(*points(rows))
    fig = Figure(figsize=(6, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(d, r, "o-", color="C0", label="one model, conditioned on β")
    for row, ri, di in zip(rows, r, d):
        ax.annotate(f"β={row['beta']:.3g}", (di, ri), textcoords="offset points", xytext=(5, 4), fontsize="small")
    ax.margins(x=0.15, y=0.1)  # room for the labels of the end points
    if reference is not None:
        ax.set_title(
            f"{title}hypervolume {curve_hypervolume(points(rows), reference):,.0f} nats² "
            f"against (D, R) = ({reference[0]:.1f}, {reference[1]:.1f})",
            fontsize="medium",
        )
    ax.set_xlabel(METRICS["distortion"].label)
    ax.set_ylabel(METRICS["rate"].label)
    fig.legend(loc="outside lower center", fontsize="small")
    fig.savefig(path, dpi=100, bbox_inches="tight", pad_inches=0.1)
    return path


def save_curve_strip(
    model: ConditionedVAE, x: torch.Tensor, betas: Sequence[float], path: Path, n: int = STRIP_IMAGES
) -> Path:
    """curve_strip.png: x[:n] (N, C, H, W) in [0, 1] in the top row, then their reconstructions (decoded
    posterior means) at each β, one row per β, each row labelled."""
    from matplotlib.figure import Figure
    from torchvision.utils import make_grid

    x = x[:n]
    rows = [x]
    with eval_mode(model):
        for beta in betas:
            with model.at_beta(beta):
                rows.append(torch.sigmoid(model.decode(posterior_means(model, x))))  # (n, C, H, W)
    grid = make_grid(torch.cat(rows).float().cpu(), nrow=len(x), padding=2, pad_value=1.0)  # (3, H', W')
    fig = Figure(figsize=(1.0 + 0.6 * len(x), 0.6 * len(rows)), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(grid.permute(1, 2, 0).numpy())
    side = x.shape[-2] + 2
    ax.set_yticks([side * (i + 0.5) for i in range(len(rows))], ["input"] + [f"β={b:.3g}" for b in betas])
    ax.set_xticks([])
    fig.savefig(path, dpi=100)
    return path


def write_curve(
    model: ConditionedVAE,
    likelihood,
    x: torch.Tensor,
    betas: Sequence[float],
    out_dir: Path,
    iwae_k: int = 0,
    batch_size: int = 500,
) -> dict:
    """Evaluate the curve on x (N, C, H, W) in [0, 1] and write curve.csv, curve.png and curve_strip.png into
    out_dir. Returns metrics.json's curve entries: the hypervolume (nats²), its reference point and the grid."""
    out_dir = Path(out_dir)
    rows = curve_rows(model, likelihood, x, betas, iwae_k, batch_size)
    write_curve_csv(out_dir / "curve.csv", rows)
    reference = reference_point(x.shape[1:])
    save_curve_plot(rows, out_dir / "curve.png", reference)
    save_curve_strip(model, x, betas, out_dir / "curve_strip.png")
    hv = curve_hypervolume(points(rows), reference)
    log.info("curve over %d betas: hypervolume %.1f nats^2", len(rows), hv)
    return {"curve_hypervolume": hv, "curve_reference": list(reference), "curve_betas": list(betas)}
