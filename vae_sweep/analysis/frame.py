"""Sweep analysis: sweep dirs or an Optuna study -> one DataFrame of trials -> tables.

`load_sweep(sources)` reads one or more sweep dirs (`multirun/<date>/<time>`, one folder per trial) or study
storage URLs (`sqlite:///multirun/pareto.db`) and returns one row per trial (`study_frame(study)` does the same
for a study object, as the sweeper holds it). Columns:

- `source`, `trial` (Optuna trial number, or Hydra job number for a grid sweep), `run_dir`, `status`, `error`
- parameters, from the run's `.hydra/` or the study's trial params: `beta`, `latent_dim`, `lr`, `batch_size`,
  `seed`, `epochs` (asked), the group choices `model`, `loss`, ..., and any other task override (`eval.iwae_k`)
- metrics, from metrics.json (or the study's user attributes), named and in the units of `vae_sweep.registry`
  (`kl_per_dim` a list, one entry per latent dim; every other metric a float, NaN when absent), and the run's
  bookkeeping: `epochs_done`, `steps`, `wall_seconds`, ...
- `pareto`: on the Pareto front of the completed trials' (distortion, rate), both minimised.

Status is one of STATUSES (see `vae_sweep.analysis.sources`): `missing` when the run dir has no readable
metrics.json (not started, still loading data, or truncated); `interrupted` (a signal or Ctrl-C stopped it; a sweep
continues it) is no failure; `running` as the files say, so a run killed hard stays `running`: nothing tells it from a live one.
Tables (trials.csv, summary.md) name each metric's unit in its column name (`distortion_nats`); summary.md is
written by `write_summary_md` alone, for the analysis and at the end of every sweep. Figures: `plots`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from vae_sweep.analysis.sources import PARAMS, STATUSES, finite, is_run_dir, source_rows, study_rows
from vae_sweep.config import ADDED_GROUPS, JOB_GROUPS
from vae_sweep.errors import ConfigError
from vae_sweep.pareto import hypervolume_2d, pareto_mask, running_hypervolume
from vae_sweep.registry import METRICS, OBJECTIVES, Status

log = logging.getLogger(__name__)

PER_DIM = next(name for name, m in METRICS.items() if m.per_dim)  # the one metric that is a list, not a number
SCALARS = tuple(name for name, m in METRICS.items() if not m.per_dim)  # the metric columns, floats
FRONT = ("distortion", "rate")  # the trade-off of the Pareto flag and the hypervolume
ELBO_TERMS = ("distortion", "rate", "neg_elbo")  # D, R and D + R: the objectives of the history and importance
FRAME = ("source", "trial", "status", "pareto", "error", "run_dir")  # the frame's own columns
# metrics.json's bookkeeping, neither parameter nor metric
RUN_FIELDS = (
    *("iwae_k", "params", "steps", "epochs_done", "train_seconds", "wall_seconds", "threads", "device"),
    *("rate_estimator", "undefined"),  # how the rate was estimated; the per-dim metrics that are not defined, and why
)


def load_sweep(
    sources: str | Path | Iterable[str | Path], study: str | list[str] | tuple[str, ...] | None = None
) -> pd.DataFrame:
    """One row per trial of every source: a sweep dir, a single run dir, or a storage URL (`sqlite:///...`).
    `study` names the study of each storage URL: one name for all of them, or a list with one per URL in order;
    a storage given none is read at its newest study. Raises ConfigError for a wrong source."""
    sources = [sources] if isinstance(sources, (str, Path)) else list(sources)
    if not sources:
        raise ConfigError("no sweep given: pass a sweep dir or a study storage URL")
    urls = [str(s) for s in sources if "://" in str(s)]
    names = [study] if isinstance(study, str) or study is None else list(study)
    if len(names) > 1 and len(names) != len(urls):
        raise ConfigError(f"--study given {len(names)} times for {len(urls)} storage URL(s): give one, or one per URL")
    named = {url: names[i] if len(names) > 1 else names[0] if names else None for i, url in enumerate(urls)}
    rows = [row for source in sources for row in source_rows(str(source), named.get(str(source)))]
    return _frame(rows, ", ".join(map(str, sources)))


def study_frame(study) -> pd.DataFrame:
    """`load_sweep`'s frame of an `optuna.Study` object (in any storage, in memory too): source `study=<name>`."""
    return _frame(study_rows(study, f"study={study.study_name}"), f"study {study.study_name}")


def _frame(rows: list[dict], described: str) -> pd.DataFrame:
    df = _tidy(pd.DataFrame(rows))
    log.info("%s: %s", described, status_line(df))
    return df


def _tidy(df: pd.DataFrame) -> pd.DataFrame:
    """Fixed leading columns, every metric column present (NaN when absent), and the Pareto flag."""
    for col in ("source", "trial", "status", "error", "run_dir", *SCALARS):
        if col not in df:
            df[col] = np.nan if col in SCALARS else None
    for col in SCALARS:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    df["trial"] = df["trial"].astype("Int64")
    df["pareto"] = pareto_mask(front_points(df), [METRICS[m].direction for m in FRONT])
    first = ["source", "trial", "status", "pareto", *PARAMS, *JOB_GROUPS, *SCALARS]
    order = [c for c in first if c in df] + [c for c in df if c not in first and c not in ("run_dir", "error")]
    return df[order + ["error", "run_dir"]].reset_index(drop=True)


def front_points(df: pd.DataFrame) -> np.ndarray:
    """Shape (len(df), 2): each trial's (distortion, rate) in nats per example; NaN unless it completed."""
    points = df[list(FRONT)].to_numpy(dtype=float, na_value=np.nan, copy=True)
    points[~df["status"].eq(Status.COMPLETED).to_numpy()] = np.nan
    return points


def completed(df: pd.DataFrame, *cols: str) -> pd.DataFrame:
    """The completed trials with a finite value in every one of `cols`."""
    done = df[df["status"].eq(Status.COMPLETED)]
    return done[np.isfinite(done[list(cols)]).all(axis=1)] if cols else done


def families(df: pd.DataFrame) -> pd.Series:
    """Each trial's model family, `<prior>+<posterior>` (a run from before those groups: `standard+gaussian`)."""
    parts = [df[g].fillna(d) if g in df else pd.Series(d, index=df.index) for g, d in ADDED_GROUPS.items()]
    return parts[0].astype(str) + "+" + parts[1].astype(str)


def family_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per model family among the completed trials, best first: `family`, `trials`, `front` (points on the
    family's own Pareto front of distortion and rate) and `hypervolume` of that front in nats², all against one
    reference, the worst distortion and the worst rate of any completed trial, so that families compare (Alemi et
    al. 2018 drew families' fronts on one plane). Empty unless the sweep holds two families or more."""
    ok = completed(df, *FRONT)
    family = families(ok)
    if family.nunique() < 2:
        return pd.DataFrame(columns=["family", "trials", "front", "hypervolume"])
    directions = [METRICS[m].direction for m in FRONT]
    reference = ok[list(FRONT)].max().to_numpy()  # (D, R) in nats: both minimised
    rows = []
    for name, group in ok.groupby(family):
        points = group[list(FRONT)].to_numpy()  # (n, 2): distortion, rate
        rows.append(
            {
                "family": name,
                "trials": len(group),
                "front": int(pareto_mask(points, directions).sum()),
                "hypervolume": hypervolume_2d(points, reference, directions),
            }
        )
    table = pd.DataFrame(rows).sort_values("hypervolume", ascending=False, ignore_index=True)
    table.attrs["reference"] = tuple(reference)
    return table


def status_counts(df: pd.DataFrame) -> dict[str, int]:
    """{status: number of trials} for every one of STATUSES, zeros included."""
    counts = df["status"].value_counts()
    return {s: int(counts.get(s, 0)) for s in STATUSES}


def status_line(df: pd.DataFrame) -> str:
    """`8 trials: 5 completed, 1 diverged, 2 missing` (zero counts left out)."""
    counts = ", ".join(f"{n} {s}" for s, n in status_counts(df).items() if n)
    return f"{len(df)} trial{'s' if len(df) != 1 else ''}: {counts or 'none'}"


def searched_params(df: pd.DataFrame) -> list[str]:
    """The parameter columns whose value differs between trials (what the sweep searched)."""
    known = {*METRICS, *FRAME, *RUN_FIELDS, "eval_beta", "curve_reference", "curve_betas"}  # curve_*: multirate
    cols = [c for c in df if c not in known]
    return [c for c in cols if df[c].map(repr).nunique() > 1] or [c for c in ("beta", "latent_dim", "lr") if c in df]


def latest_sweep(root: str | Path = "multirun") -> Path:
    """The newest sweep dir under Hydra's default `multirun/<date>/<time>`."""
    sweeps = sorted(p for p in Path(root).glob("*/*") if p.is_dir() and any(is_run_dir(d) for d in p.iterdir()))
    if not sweeps:
        raise ConfigError(f"{root}: no sweep in it (make one with `python -m vae_sweep --multirun`)")
    return sweeps[-1]


def default_out_dir(sources: list[str | Path], df: pd.DataFrame) -> Path:
    """`<first sweep dir>/analysis`; for a study, beside its first run dir."""
    first = str(sources[0])
    if "://" not in first:
        return Path(first) / "analysis"
    dirs = df["run_dir"].dropna()
    if dirs.empty:
        raise ConfigError(f"{first}: no run dir recorded to write beside: choose a folder with --out")
    return Path(dirs.iloc[0]).parent / "analysis"


def history_table(df: pd.DataFrame) -> pd.DataFrame:
    """The sweep trial by trial, as the history figure draws it; one row per row of `df`, same index. Columns:
    `trial` (the trial number; `order`, 0, 1, ... as collected, when there are several sources), `failed`
    (diverged or failed), and for each ELBO term that some completed trial has finite: `<term>` (NaN unless
    completed) and `<term>_best`, the best so far, in the metric's units; with both distortion and rate,
    `hypervolume`: the running hypervolume of their Pareto front (`vae_sweep.pareto`), in nats², up to the worst
    completed distortion and rate."""
    several = df["source"].nunique() > 1
    x = np.arange(len(df)) if several else df["trial"].to_numpy(dtype=float, na_value=np.nan)
    out = pd.DataFrame(
        {"order" if several else "trial": x, "failed": df["status"].isin([Status.DIVERGED, Status.FAILED])},
        index=df.index,
    )
    done = df["status"].eq(Status.COMPLETED)
    for term in ELBO_TERMS:
        y = df[term].where(done)
        if np.isfinite(y).any():
            out[term] = y
            out[f"{term}_best"] = (y.cummin() if METRICS[term].direction == "minimize" else y.cummax()).ffill()
    if set(FRONT) <= set(out):
        out["hypervolume"] = running_hypervolume(front_points(df), [METRICS[m].direction for m in FRONT])
    return out


def column_name(name: str) -> str:
    """A table's name for a column: a metric's carries its unit (`distortion_nats`, `mse_per_pixel`; a count
    says its unit already: `active_units`), any other stays as it is."""
    return METRICS[name].column if name in METRICS else name


def trials_table(df: pd.DataFrame) -> pd.DataFrame:
    """The trials with units in the column names (`column_name`); kl_per_dim as a JSON list (non-finite entries
    as null)."""
    out = df.rename(columns=column_name)
    per_dim = column_name(PER_DIM)
    if per_dim in out:
        out[per_dim] = out[per_dim].map(
            lambda v: json.dumps([x if finite(x) else None for x in v]) if isinstance(v, list) else None
        )
    return out


def summary_markdown(df: pd.DataFrame, top: int = 5) -> str:
    """The status counts, the Pareto set, the best `top` trials by each objective a sweep may optimise, and all
    trials (Pareto members starred), each metric in the unit its column name carries."""
    done = completed(df)
    front = done[done["pareto"]].sort_values(FRONT[0])
    sources = ", ".join(f"`{s}`" for s in df["source"].unique())
    lines = [
        "# Sweep analysis",
        "",
        f"{sources}: {status_line(df)}." if sources else f"{status_line(df)}.",
        "",
        f"## Pareto set: {len(front)} of {len(done)} completed trials",
        "",
        f"Minimising {' and '.join(FRONT)} together: no other completed trial is at least as good in both.",
        "",
    ]
    lines += _md_table(front, df) if len(front) else [f"No completed trial has a finite {' and '.join(FRONT)}."]
    for objective in OBJECTIVES:
        pick = pd.DataFrame.nsmallest if METRICS[objective].direction == "minimize" else pd.DataFrame.nlargest
        ranked = pick(done.dropna(subset=[objective]), top, objective)
        if len(ranked):
            lines += ["", f"## Best {len(ranked)} by {objective}", ""] + _md_table(ranked, df)
    lines += _families_markdown(df)
    lines += _families_markdown(df)
    lines += ["", "## All trials (\\* = on the Pareto front)", ""] + _md_table(df, df)
    return "\n".join(lines) + "\n"


def _families_markdown(df: pd.DataFrame) -> list[str]:
    """The model families' table (`family_table`), for a sweep of two families or more."""
    table = family_table(df)
    if table.empty:
        return []
    d, r = table.attrs["reference"]
    lines = ["", "## Model families: each one's own front", ""]
    lines += [f"Hypervolume in nats² against (distortion, rate) = ({d:.1f}, {r:.1f}) nats, larger is better.", ""]
    lines += ["| family | completed trials | on its front | hypervolume (nats²) |", "|---|---|---|---|"]
    lines += [f"| {f} | {n} | {k} | {h:,.0f} |" for f, n, k, h in table.itertuples(index=False)]
    return lines


def _md_table(rows: pd.DataFrame, df: pd.DataFrame) -> list[str]:
    """Markdown rows: (source), trial, status, Pareto star, the searched parameters, the metrics, any error."""
    cols = (["source"] if df["source"].nunique() > 1 else []) + ["trial", "status", "pareto"] + searched_params(df)
    cols += [m for m in SCALARS if df[m].notna().any()] + (["error"] if df["error"].notna().any() else [])
    lines = ["| " + " | ".join(map(column_name, cols)) + " |", "|" + "---|" * len(cols)]
    for _, row in rows.iterrows():
        lines.append("| " + " | ".join(_cell(c, row[c]) for c in cols) + " |")
    return lines


def _cell(col: str, value: object) -> str:
    if col == "pareto":
        return "\\*" if value else ""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


def write_summary_md(df: pd.DataFrame, out: Path, top: int = 5) -> Path:
    """`out/summary.md` (`summary_markdown`): the one writer of that file, for the analysis and the sweeper."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "summary.md"
    path.write_text(summary_markdown(df, top))
    return path


def write_tables(df: pd.DataFrame, out: Path, top: int = 5) -> dict[str, Path]:
    """trials.csv (every trial, units in the column names) and summary.md, in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"trials": out / "trials.csv"}
    trials_table(df).to_csv(paths["trials"], index=False)
    return paths | {"summary": write_summary_md(df, out, top)}
