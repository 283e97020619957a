"""Figures of a sweep: they draw what the analysis computed, and compute nothing themselves.

Each `plot_*` function takes a frame: the sweep's (`vae_sweep.analysis.load_sweep`, Pareto flags included),
its history (`analysis.history_table`), its parameter importance (`importance.param_importance`) or its curves
(`curves.curve_table`). It returns a `matplotlib.figure.Figure` (no pyplot, so it runs headless), or None
after logging a warning `<name>: no figure: <why>` when there is nothing to draw. FIGURES makes each figure from
the sweep's frame, and `save_figures` writes the ones that exist. Axis labels are the registry's
(`vae_sweep.registry`), units included.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from vae_sweep.analysis.curves import curve_table
from vae_sweep.analysis.frame import FRONT, SCALARS, completed, families, family_table, history_table
from vae_sweep.analysis.importance import MIN_IMPORTANCE_TRIALS, param_importance
from vae_sweep.errors import ConfigError
from vae_sweep.pareto import pareto_mask
from vae_sweep.registry import DISENTANGLEMENT, METRICS

log = logging.getLogger(__name__)

FORMATS = ("png", "svg", "pdf")
MARKERS = "osD^vP*Xph<>"  # one per latent_dim, in increasing order
MAX_PICTURE_COLUMNS = 8  # Pareto trials shown side by side in pareto_pictures


def save_figures(df: pd.DataFrame, out: Path, fmt: str = "png", dpi: int = 150) -> dict[str, Path]:
    """Write every figure that has data to `out/<name>.<fmt>`; returns {name: path}."""
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt}: must be one of {', '.join(FORMATS)}")
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, plot in FIGURES.items():
        fig = plot(df)
        if fig is not None:
            paths[name] = out / f"{name}.{fmt}"
            fig.savefig(paths[name], dpi=dpi, bbox_inches="tight", pad_inches=0.1)  # no label clipped at an edge
    return paths


def _no_data(name: str, why: str, expected: bool = False) -> None:
    """Say why a figure is not drawn: a warning, or only an info line where the sweep is not of its kind."""
    log.log(logging.INFO if expected else logging.WARNING, "%s: no figure: %s", name, why)


def _markers(df: pd.DataFrame) -> dict:
    dims = sorted(df["latent_dim"].dropna().unique())
    return {d: MARKERS[i % len(MARKERS)] for i, d in enumerate(dims)}


def _auto_scale(ax, axis: str, values: pd.Series) -> None:
    """Log scale when the positive values span more than two decades."""
    v = values[values > 0]
    if len(v) == len(values) and len(v) and v.max() / v.min() > 100:
        getattr(ax, f"set_{axis}scale")("log")


def _beta_norm(beta: pd.Series) -> Normalize:
    lo, hi = float(beta.min()), float(beta.max())
    if lo <= 0:
        return Normalize(lo, hi if hi > lo else lo + 1)
    return LogNorm(lo, hi) if hi > lo else LogNorm(lo / 2, hi * 2)


def plot_rate_distortion(df: pd.DataFrame) -> Figure | None:
    """Rate against distortion for every completed trial: colour = beta (log scale), marker = latent_dim, marker
    area = MIG when the sweep has it, the Pareto front as a step line, faint lines of equal neg_elbo (D + R = const)."""
    ok = completed(df, "distortion", "rate", "beta")
    if ok.empty:
        return _no_data("rate_distortion", "no completed trial with a finite distortion and rate")
    fig = Figure(figsize=(7.5, 5.5), layout="constrained")
    ax = fig.add_subplot()
    norm, markers = _beta_norm(ok["beta"]), _markers(ok)
    by_mig = bool(np.isfinite(ok["mig"]).any())  # a sweep on a dataset with factors: marker area grows with MIG
    for dim, group in ok.groupby("latent_dim"):
        ax.scatter(
            group["distortion"],
            group["rate"],
            c=group["beta"],
            norm=norm,
            cmap="viridis",
            marker=markers[dim],
            s=_mig_sizes(group["mig"]) if by_mig else 45,
            edgecolors="0.2",
            linewidths=0.5,
            zorder=3,
        )
    front = ok[ok["pareto"]].sort_values("distortion")
    ax.step(front["distortion"], front["rate"], where="post", color="crimson", lw=1.5, zorder=2)
    ax.scatter(front["distortion"], front["rate"], s=130, facecolors="none", edgecolors="crimson", zorder=2)
    _auto_scale(ax, "x", ok["distortion"])
    _auto_scale(ax, "y", ok["rate"])
    ax.margins(0.08)
    _iso_elbo(ax, ok["distortion"] + ok["rate"])
    fig.colorbar(
        ScalarMappable(norm=norm, cmap="viridis"), ax=ax, label="β (log scale)" if isinstance(norm, LogNorm) else "β"
    )
    handles = [Line2D([], [], ls="", marker=m, color="0.5", label=f"{int(d)}") for d, m in markers.items()]
    handles += [
        Line2D([], [], color="crimson", marker="o", mfc="none", label="Pareto front"),
        Line2D([], [], color="0.6", lw=0.8, ls="--", label="equal neg_elbo\n(D + R, labelled)"),
    ]
    if by_mig:
        handles += [
            Line2D(
                [],
                [],
                ls="",
                marker="o",
                color="0.5",
                ms=float(np.sqrt(_mig_sizes(pd.Series([v]))[0])),
                label=f"MIG {v:g}",
            )
            for v in (0.0, 0.25, 0.5)
        ]
    fig.legend(handles=handles, title="latent_dim", fontsize=8, title_fontsize=8, loc="outside right upper")
    ax.set(
        xlabel=METRICS["distortion"].label,
        ylabel=METRICS["rate"].label,
        title=f"Rate-distortion: {len(ok)} completed trials, {len(front)} on the Pareto front",
    )
    return fig


def _mig_sizes(mig: pd.Series) -> np.ndarray:
    """Marker areas (points²) for MIG values (fractions in [0, 1]): 20 at 0, 45 at 0.1, 270 at 1; NaN as 0."""
    return 20 + 250 * np.clip(mig.fillna(0).to_numpy(dtype=float), 0, 1)


def _iso_elbo(ax, totals: pd.Series) -> None:
    """Lines D + R = c for a few round c inside the data's range, labelled where they leave the top."""
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    grid = {"log": np.geomspace, "linear": np.linspace}
    xs, ys = grid[ax.get_xscale()](x0, x1, 200), grid[ax.get_yscale()](y0, y1, 200)
    top = y0 + 0.97 * (y1 - y0) if ax.get_yscale() == "linear" else y0 * (y1 / y0) ** 0.97
    for c in MaxNLocator(nbins=5).tick_values(totals.min(), totals.max()):
        px = np.concatenate([xs, c - ys])  # sampled along both axes, so the line is smooth on any scale
        order = np.argsort(px)
        px, py = px[order], c - px[order]
        inside = (px > x0) & (px < x1) & (py > y0) & (py < y1)
        if c <= 0 or not inside.any():
            continue
        ax.plot(px[inside], py[inside], color="0.6", lw=0.8, ls="--", zorder=1)
        x_at = min(max(c - top, px[inside][0]), px[inside][-1])  # near the top, or where it enters
        right = (ax.transScale + ax.transLimits).transform((x_at, c - x_at))[
            0
        ] > 0.85  # near the right edge: the label goes left
        ax.annotate(
            f"{c:g}",
            (x_at, c - x_at),
            fontsize=7,
            color="0.35",
            ha="right" if right else "left",
            va="top",
            xytext=(-2 if right else 2, -1),
            textcoords="offset points",
        )
    ax.set(xlim=(x0, x1), ylim=(y0, y1))


def plot_metrics_vs_beta(df: pd.DataFrame) -> Figure | None:
    """Each metric against beta (log x), one line per latent_dim; the disentanglement scores have their own figure."""
    ok = completed(df, "beta")
    ok = ok[ok["beta"] > 0]
    own_figure = (*DISENTANGLEMENT, "disentanglement_seconds")
    metrics = [m for m in SCALARS if m not in own_figure and np.isfinite(ok[m]).any()]
    if ok.empty or not metrics or ok["beta"].nunique() < 2:
        return _no_data("metrics_vs_beta", "fewer than two values of beta among the completed trials")
    return _against_beta(ok, metrics, f"Metrics against β ({len(ok)} completed trials)")


def plot_disentanglement_vs_beta(df: pd.DataFrame) -> Figure | None:
    """Each disentanglement score (a fraction in [0, 1], 1 perfect) against beta (log x), one line per latent_dim."""
    ok = completed(df, "beta")
    ok = ok[ok["beta"] > 0]
    metrics = [m for m in DISENTANGLEMENT if np.isfinite(ok[m]).any()]
    if ok.empty or not metrics or ok["beta"].nunique() < 2:
        scored = any(m in df and np.isfinite(df[m]).any() for m in DISENTANGLEMENT)
        return _no_data(
            "disentanglement_vs_beta",
            "no two values of beta among completed trials with "
            "disentanglement scores (a dataset with factors: sprites, dsprites)",
            expected=not scored,  # no trial was scored: not a sweep on a dataset with factors
        )
    return _against_beta(
        ok, metrics, f"Disentanglement against β ({len(ok)} completed trials; 1 is perfect)", ylim=(0, 1.02)
    )


def _against_beta(ok: pd.DataFrame, metrics: list[str], title: str, ylim: tuple | None = None) -> Figure:
    """One panel per metric against beta (log x), one line per latent_dim: the body of the *_vs_beta figures."""
    ncols = min(3, len(metrics))
    nrows = -(-len(metrics) // ncols)
    fig = Figure(figsize=(4.2 * ncols + 1.2, 3.3 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    markers = _markers(ok)
    colors = {d: f"C{i % 10}" for i, d in enumerate(markers)}
    for ax, metric in zip(axes, metrics):
        for dim, group in ok.groupby("latent_dim"):
            group = group[np.isfinite(group[metric])].sort_values("beta")
            ax.plot(
                group["beta"], group[metric], marker=markers[dim], color=colors[dim], ms=5, lw=1, label=f"{int(dim)}"
            )
        ax.set_xscale("log")
        if ylim is None:
            _auto_scale(ax, "y", ok[metric].dropna())
        else:
            ax.set_ylim(*ylim)
        ax.set(xlabel="β (log scale)", ylabel=METRICS[metric].label)
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    fig.legend(*axes[0].get_legend_handles_labels(), title="latent_dim", loc="outside right upper", fontsize=8)
    fig.suptitle(title)
    return fig


def plot_history(history: pd.DataFrame) -> Figure | None:
    """Each objective of `analysis.history_table` against trial number with its best-so-far, and the running
    Pareto hypervolume."""
    objectives = [m for m in METRICS if f"{m}_best" in history]
    if not objectives:
        return _no_data("history", "no completed trial with a finite objective")
    x = history.iloc[:, 0]  # `trial`, or `order` when the sweep has several sources
    panels = objectives + (["hypervolume"] if "hypervolume" in history else [])
    fig = Figure(figsize=(6.5, 2.2 * len(panels) + 0.6), layout="constrained")
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False).ravel()
    for ax, metric in zip(axes, objectives):
        ax.plot(x, history[metric], "o", ms=4, color="0.55", label="completed trial")
        ax.step(x, history[f"{metric}_best"], where="post", color="C0", lw=1.5, label="best so far")
        failed = x[history["failed"]]
        if len(failed):
            ax.plot(
                failed,
                np.full(len(failed), 0.03),
                "x",
                color="crimson",
                transform=ax.get_xaxis_transform(),
                label="diverged / failed",
            )
        _auto_scale(ax, "y", history[metric].dropna())
        ax.set_ylabel(METRICS[metric].label)
    if "hypervolume" in panels:
        axes[-1].step(x, history["hypervolume"], where="post", color="C2", lw=1.5)
        unit = METRICS[FRONT[0]].unit.slug  # distortion and rate share it
        axes[-1].set_ylabel(f"Pareto hypervolume\n[{unit}², ref: worst D, R]")
    fig.legend(*axes[0].get_legend_handles_labels(), fontsize=8, ncols=3, loc="outside lower center")
    axes[-1].set_xlabel("trial number" if x.name == "trial" else "trial (in the order collected)")
    fig.suptitle(f"Sweep history ({len(history)} trials)")
    return fig


def plot_importance(importance: pd.DataFrame) -> Figure | None:
    """Bar chart of `importance.param_importance`: one group of bars per parameter, one bar per objective."""
    if importance.empty:
        return _no_data(
            "importance", f"needs at least {MIN_IMPORTANCE_TRIALS} completed trials and a searched numeric parameter"
        )
    fig = Figure(figsize=(6.5, 1.0 + 0.7 * len(importance) * max(1, len(importance.columns) / 2)), layout="constrained")
    ax = fig.add_subplot()
    height = 0.8 / len(importance.columns)
    pos = np.arange(len(importance))
    for i, objective in enumerate(importance.columns):
        ax.barh(pos + i * height, importance[objective], height, label=objective, color=f"C{i}")
    log10 = importance.attrs.get("log10", [])
    ax.set_yticks(
        pos + height * (len(importance.columns) - 1) / 2, [f"log10 {p}" if p in log10 else p for p in importance.index]
    )
    ax.invert_yaxis()
    ax.set(
        xlabel="importance (fANOVA: share of the objective's variance,\nsums to 1 per objective)",
        xlim=(0, 1),
        title=f"Parameter importance (fANOVA on {importance.attrs.get('trials', '?')} completed trials)",
    )
    ax.legend(title="objective", fontsize=8)
    return fig


def plot_pareto_pictures(df: pd.DataFrame) -> Figure | None:
    """Reconstructions and prior samples of the Pareto-front trials side by side, ordered by beta."""
    from PIL import Image

    done = completed(df)
    front = done[done["pareto"]].sort_values("beta")
    if len(front) > MAX_PICTURE_COLUMNS:  # evenly spaced in beta order
        front = front.iloc[np.linspace(0, len(front) - 1, MAX_PICTURE_COLUMNS).round().astype(int)]
    kinds = {"reconstructions": "originals / reconstructions\n(alternating rows)", "samples": "prior samples"}
    files = {(i, k): Path(str(run)) / f"{k}.png" for i, run in enumerate(front["run_dir"]) for k in kinds}
    if not any(p.is_file() for p in files.values()):
        return _no_data("pareto_pictures", "no Pareto-front trial has reconstructions.png or samples.png")
    fig = Figure(figsize=(2.1 * len(front) + 0.8, 5.0), layout="constrained")
    axes = fig.subplots(len(kinds), len(front), squeeze=False)
    for col, (_, trial) in enumerate(front.iterrows()):
        for row, kind in enumerate(kinds):
            ax, path = axes[row, col], files[(col, kind)]
            if path.is_file():
                with Image.open(path) as im:
                    ax.imshow(np.asarray(im.convert("RGB")), interpolation="nearest")
            else:
                ax.text(0.5, 0.5, "no picture", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([]), ax.set_yticks([])
            ax.spines[:].set_visible(False)
        axes[0, col].set_title(
            f"β={trial['beta']:.3g}  L={int(trial['latent_dim'])}\nD={trial['distortion']:.4g}  R={trial['rate']:.3g}",
            fontsize=8,
        )
    for row, label in enumerate(kinds.values()):
        axes[row, 0].set_ylabel(label, fontsize=8)
    fig.suptitle(f"Pareto-front trials by β (D, R in {METRICS['distortion'].unit.axis})", fontsize=10)
    return fig


def plot_curves(curves: pd.DataFrame) -> Figure | None:
    """Every trial's curve (`curves.curve_table`: rate against distortion along β, thin, one colour per latent_dim,
    on the axes of rate_distortion.png) and the Pareto front of all their points together (thick), its hypervolume
    in the title."""
    if curves.empty:
        return _no_data("curves", curves.attrs.get("why", "no curve points"), curves.attrs.get("expected", False))
    fig = Figure(figsize=(7.5, 5.5), layout="constrained")
    ax = fig.add_subplot()
    dims = sorted(curves["latent_dim"].dropna().unique())
    colors = {d: f"C{i % 10}" for i, d in enumerate(dims)}
    for (_, dim), curve in curves.groupby(["trial", "latent_dim"], dropna=False, sort=True):
        curve = curve.sort_values("beta")
        ax.plot(curve["distortion"], curve["rate"], "o-", ms=3, lw=0.9, alpha=0.8, color=colors.get(dim, "0.5"))
    front = curves[curves["front"]].sort_values("distortion")
    ax.step(front["distortion"], front["rate"], where="post", color="crimson", lw=2.5, zorder=3)
    ax.plot(front["distortion"], front["rate"], "o", ms=6, color="crimson", zorder=3)
    handles = [Line2D([], [], color=c, lw=0.9, marker="o", ms=3, label=f"{int(d)}") for d, c in colors.items()]
    handles.append(Line2D([], [], color="crimson", lw=2.5, marker="o", label="front of all curves"))
    ax.legend(handles=handles, title="latent_dim", fontsize=8, title_fontsize=8, loc="upper right")
    ax.set(xlabel=METRICS["distortion"].label, ylabel=METRICS["rate"].label)  # as in rate_distortion.png
    reference, n = curves.attrs.get("reference"), curves["trial"].nunique()
    title = f"{n} curve{'s' if n != 1 else ''} (one per trial), {len(front)} points on their front"
    if reference is not None:
        title += (
            f"\nfront's hypervolume {curves.attrs['hypervolume']:,.0f} {METRICS['curve_hypervolume'].unit.axis}"
            f" against (D, R) = ({reference[0]:.1f}, {reference[1]:.1f})"
        )
    ax.set_title(title, fontsize="medium")
    return fig


def plot_families(df: pd.DataFrame) -> Figure | None:
    """Each model family's completed trials and its own Pareto front in its own colour, on the axes of
    rate_distortion.png; the legend gives each front's hypervolume (`frame.family_table`)."""
    table = family_table(df)
    if table.empty:
        return _no_data("families", "the sweep holds one model family (prior+posterior)", expected=True)
    ok = completed(df, *FRONT)
    family = families(ok)
    fig = Figure(figsize=(7.5, 5.5), layout="constrained")
    ax = fig.add_subplot()
    for i, row in enumerate(table.itertuples(index=False)):
        group, color = ok[family == row.family], f"C{i % 10}"
        points = group[list(FRONT)].to_numpy()  # (n, 2): distortion, rate in nats
        front = group[pareto_mask(points, [METRICS[m].direction for m in FRONT])].sort_values("distortion")
        ax.scatter(group["distortion"], group["rate"], s=25, color=color, alpha=0.45, linewidths=0)
        label = f"{row.family}: {row.front} on its front, {row.hypervolume:,.0f} nats²"
        ax.step(front["distortion"], front["rate"], where="post", color=color, lw=1.8, marker="o", ms=5, label=label)
    d, r = table.attrs["reference"]
    ax.legend(title=f"family (hypervolume against D={d:.0f}, R={r:.0f})", fontsize=8, title_fontsize=8)
    ax.set(xlabel=METRICS["distortion"].label, ylabel=METRICS["rate"].label)  # as in rate_distortion.png
    ax.set_title(f"Model families: {len(table)} fronts from {len(ok)} completed trials", fontsize="medium")
    return fig


FIGURES = {  # name -> the figure of a sweep's frame: what it needs computed by the analysis, then drawn
    "rate_distortion": plot_rate_distortion,
    "metrics_vs_beta": plot_metrics_vs_beta,
    "disentanglement_vs_beta": plot_disentanglement_vs_beta,
    "history": lambda df: plot_history(history_table(df)),
    "importance": lambda df: plot_importance(param_importance(df)),
    "pareto_pictures": plot_pareto_pictures,
    "curves": lambda df: plot_curves(curve_table(df)),
    "families": plot_families,
}
