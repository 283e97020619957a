"""Sweep analysis: sweep dirs or an Optuna study -> one DataFrame of trials -> tables.

`load_sweep(sources)` reads one or more sweep dirs (`multirun/<date>/<time>`, one folder per trial) or study
storage URLs (`sqlite:///multirun/pareto.db`) and returns one row per trial. Columns:

- `source`, `trial` (Optuna trial number, or Hydra job number for a grid sweep), `run_dir`, `status`, `error`
- parameters, from the run's `.hydra/` (config knobs, group choices, and any other task override such as
  `eval.iwae_k`) or from the study's trial params: `beta`, `latent_dim`, `lr`, `batch_size`, `seed`,
  `epochs` (asked), `model`, `loss`, ...
- metrics, from metrics.json (or the study's user attributes): `distortion`, `rate`, `neg_elbo`, `iwae_nll`
  in nats per example, `mse` per pixel, `active_units` (count), `kl_per_dim` (list, nats), `epochs_done`, ...
- `pareto`: on the Pareto front of the completed trials, minimising distortion and rate together.

Status is one of STATUSES. `missing`: the run dir has no readable metrics.json (not started, still loading
data, or truncated). `diverged`: the run said so, or it says `completed` but an objective is NaN or infinite.
`failed`: the run raised, or was interrupted (Ctrl-C: `interrupted` in metrics.json and the study); the
`error` column says how. `running`: the run (or trial) says so. A run killed hard also stays `running`:
nothing tells it from a live one, so the analysis reports what the files say and the status line counts it.
Tables name their units in the column names (`distortion_nats`, `mse_per_pixel`); see `trials_table`.
Figures live in `vae_sweep.analysis_plots`.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from vae_sweep.errors import ConfigError

log = logging.getLogger(__name__)

STATUSES = ("completed", "diverged", "failed", "running", "missing")
PARAMS = ("beta", "latent_dim", "lr", "batch_size", "seed", "epochs", "kl_warmup_steps")  # config knobs
GROUPS = ("model", "loss", "likelihood", "optimizer", "scheduler", "dataset")  # config group choices
METRICS = ("distortion", "rate", "neg_elbo", "iwae_nll", "mse", "active_units")
OBJECTIVES = ("distortion", "rate", "neg_elbo", "iwae_nll")  # all minimised; the summary ranks by each
UNITS = {"distortion": "nats", "rate": "nats", "neg_elbo": "nats", "iwae_nll": "nats",  # per example
         "kl_per_dim": "nats", "mse": "per_pixel"}
NOT_PARAMS = {"threads", "progress", "device", "data_dir", "resume", "objectives"}  # overrides that change no result


def load_sweep(sources: str | Path | Iterable[str | Path], study: str | None = None) -> pd.DataFrame:
    """One row per trial of every source: a sweep dir, a single run dir, or a storage URL (`sqlite:///...`,
    with `study` naming the study when the storage holds several). Raises ConfigError for a wrong source."""
    sources = [sources] if isinstance(sources, (str, Path)) else list(sources)
    if not sources:
        raise ConfigError("no sweep given: pass a sweep dir or a study storage URL")
    rows = [row for source in sources for row in _source_rows(str(source), study)]
    df = _tidy(pd.DataFrame(rows))
    log.info("%s: %s", ", ".join(map(str, sources)), status_line(df))
    return df


def _source_rows(source: str, study: str | None) -> list[dict]:
    if "://" in source:
        return _study_rows(source, study)
    path = Path(source)
    if not path.is_dir():
        raise ConfigError(f"{source}: no such sweep dir")
    if (path / ".hydra").is_dir():  # a single run dir
        return [{"source": source, "trial": 0, **read_run(path)}]
    runs = sorted((d for d in path.iterdir() if _is_run_dir(d)), key=lambda d: (_number(d.name) is None,
                                                                               _number(d.name) or 0, d.name))
    if not runs:
        raise ConfigError(f"{source}: no trial dirs in it (a sweep dir holds one folder per trial, each with .hydra/)")
    return [{"source": source, "trial": _number(d.name), **read_run(d)} for d in runs]


def _is_run_dir(d: Path) -> bool:
    return d.is_dir() and ((d / ".hydra").is_dir() or (d / "metrics.json").exists())


def _number(name: str) -> int | None:
    return int(name) if name.isdigit() else None


def read_run(run_dir: Path) -> dict:
    """One run dir -> {run_dir, parameters..., metrics..., status}; never raises on a damaged run."""
    row = {"run_dir": str(run_dir)} | hydra_params(run_dir / ".hydra")
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except FileNotFoundError:
        return row | {"status": "missing", "error": "no metrics.json"}
    except (OSError, ValueError) as e:
        return row | {"status": "missing", "error": f"metrics.json unreadable: {e}"}
    if not isinstance(metrics, dict):
        return row | {"status": "missing", "error": "metrics.json is not a JSON object"}
    metrics = _from_metrics(metrics)
    return row | metrics | {"status": _status(metrics)}


def hydra_params(hydra_dir: Path) -> dict:
    """The run's parameters from Hydra's saved config.yaml, hydra.yaml (group choices) and overrides.yaml."""
    cfg = _yaml(hydra_dir / "config.yaml")
    row = {k: cfg[k] for k in PARAMS if k in cfg}
    choices = _yaml(hydra_dir / "hydra.yaml").get("hydra", {}).get("runtime", {}).get("choices", {})
    row |= {g: choices[g] for g in GROUPS if g in choices}
    overrides = _yaml(hydra_dir / "overrides.yaml", default=[])
    for line in overrides if isinstance(overrides, list) else []:
        key, _, value = str(line).partition("=")
        key = key.lstrip("+~")
        if key not in NOT_PARAMS and not key.startswith("hydra.") and key not in row:
            row[key] = _scalar(value)
    return row


def _yaml(path: Path, default=None):
    try:
        value = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        value = None
    if value is None:
        return {} if default is None else default
    return value


def _scalar(text: str) -> object:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"null": None, "true": True, "false": False}.get(text, text)


def _from_metrics(metrics: dict) -> dict:
    """metrics.json (or the study's copy of it) -> row entries: no units dict, `epochs` -> `epochs_done`."""
    out = {k: v for k, v in metrics.items() if k not in ("units", "epochs")}
    if "epochs" in metrics:
        out["epochs_done"] = metrics["epochs"]
    return out


def _finite(x: object) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _status(metrics: dict) -> str:
    status = metrics.get("status")
    needed = ["distortion"] + (["rate"] if "rate" in metrics else [])  # an autoencoder has no rate
    if status == "completed" and not all(_finite(metrics.get(k)) for k in needed):
        return "diverged"  # it finished, but with NaN or infinite objectives
    if status == "interrupted":
        return "failed"
    return status if status in STATUSES else "missing"


def _study_rows(url: str, name: str | None) -> list[dict]:
    """The trials of one study, joined to their run dirs where those still exist."""
    import optuna
    import sqlalchemy.exc

    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        raise ConfigError(f"{url}: no such database file")
    try:
        storage = optuna.storages.RDBStorage(url)
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    except (sqlalchemy.exc.SQLAlchemyError, ValueError, ImportError) as e:
        raise ConfigError(f"{url}: not a readable Optuna storage ({type(e).__name__})") from None
    if name is None and len(names) != 1:
        raise ConfigError(f"{url} holds {len(names)} studies ({', '.join(names) or 'none'}): name one with --study")
    if name is not None and name not in names:
        raise ConfigError(f"study={name}: not in {url}, which holds: {', '.join(names) or 'no study'}")
    name = name or names[0]
    trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    if not trials:
        raise ConfigError(f"study={name} in {url}: no trials yet")
    return [_study_row(t, f"{url} study={name}") for t in trials]


def _study_row(trial, source: str) -> dict:
    metrics = _from_metrics(trial.user_attrs.get("metrics") or {})
    run_dir = metrics.get("run_dir")
    row = read_run(Path(run_dir)) if run_dir and Path(run_dir).is_dir() else {"run_dir": run_dir}
    row |= {k: v for k, v in metrics.items() if row.get(k) is None}  # the study's copy fills the gaps
    row |= dict(trial.params) | {"source": source, "trial": trial.number, "status": _trial_status(trial)}
    row["error"] = trial.user_attrs.get("error") or (row.get("error") if row["status"] != "completed" else None)
    return row


def _trial_status(trial) -> str:
    state = trial.state.name
    if state in ("RUNNING", "WAITING"):
        return "running"
    if state == "COMPLETE":
        return "completed"
    status = trial.user_attrs.get("status")
    if status == "completed":  # the run finished with NaN/inf objectives, so the sweeper failed the trial
        return "diverged"
    return status if status in ("diverged", "failed") else "failed"  # interrupted, pruned, never reported


def _tidy(df: pd.DataFrame) -> pd.DataFrame:
    """Fixed leading columns, every metric column present (NaN when absent), and the Pareto flag."""
    for col in ("error", "run_dir", *METRICS):
        if col not in df:
            df[col] = np.nan if col in METRICS else None
    for col in METRICS:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    df["trial"] = df["trial"].astype("Int64")
    done = df["status"].eq("completed")
    df["pareto"] = pareto_mask(df["distortion"].where(done), df["rate"].where(done))
    first = ["source", "trial", "status", "pareto", *PARAMS, *GROUPS, *METRICS]
    order = [c for c in first if c in df] + [c for c in df if c not in first and c not in ("run_dir", "error")]
    return df[order + ["error", "run_dir"]].reset_index(drop=True)


def pareto_mask(distortion: Iterable[float], rate: Iterable[float]) -> np.ndarray:
    """True where no other point has distortion <= and rate <= with one of them strictly less.
    NaN entries are never on the front. O(n log n): sort by distortion, keep the running least rate."""
    d, r = np.asarray(distortion, dtype=float), np.asarray(rate, dtype=float)
    front = np.zeros(len(d), dtype=bool)
    ok = np.flatnonzero(np.isfinite(d) & np.isfinite(r))
    order = ok[np.lexsort((r[ok], d[ok]))]  # by distortion, then rate
    best_rate = math.inf  # least rate among points with strictly smaller distortion
    i = 0
    while i < len(order):
        j = i
        while j < len(order) and d[order[j]] == d[order[i]]:
            j += 1
        group = order[i:j]  # equal distortion, rate ascending: only the least rate (and its ties) can be on it
        least = r[group[0]]
        front[group] = (r[group] == least) & (least < best_rate)
        best_rate = min(best_rate, least)
        i = j
    return front


def status_counts(df: pd.DataFrame) -> dict[str, int]:
    counts = df["status"].value_counts()
    return {s: int(counts.get(s, 0)) for s in STATUSES}


def status_line(df: pd.DataFrame) -> str:
    """`8 trials: 5 completed, 1 diverged, 2 missing` (zero counts left out)."""
    counts = ", ".join(f"{n} {s}" for s, n in status_counts(df).items() if n)
    return f"{len(df)} trial{'s' if len(df) != 1 else ''}: {counts or 'none'}"


def searched_params(df: pd.DataFrame) -> list[str]:
    """The parameter columns whose value differs between trials (what the sweep searched)."""
    known = set(METRICS) | {"source", "trial", "status", "pareto", "error", "run_dir", "kl_per_dim", "iwae_k",
                            "params", "steps", "epochs_done", "train_seconds", "wall_seconds", "threads", "device",
                            "curve_hypervolume", "curve_reference", "curve_betas"}  # loss=multirate's results
    cols = [c for c in df if c not in known]
    return [c for c in cols if df[c].map(repr).nunique() > 1] or [c for c in ("beta", "latent_dim", "lr") if c in df]


def latest_sweep(root: str | Path = "multirun") -> Path:
    """The newest sweep dir under Hydra's default `multirun/<date>/<time>`."""
    sweeps = sorted(p for p in Path(root).glob("*/*") if p.is_dir() and any(_is_run_dir(d) for d in p.iterdir()))
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


def trials_table(df: pd.DataFrame) -> pd.DataFrame:
    """The trials with units in the column names (`distortion_nats`, `mse_per_pixel`); kl_per_dim as a JSON
    list (non-finite entries as null)."""
    out = df.rename(columns={k: f"{k}_{unit}" for k, unit in UNITS.items()})
    if "kl_per_dim_nats" in out:
        out["kl_per_dim_nats"] = out["kl_per_dim_nats"].map(
            lambda v: json.dumps([x if _finite(x) else None for x in v]) if isinstance(v, list) else None)
    return out


def summary_markdown(df: pd.DataFrame, top: int = 5) -> str:
    """The status counts, the Pareto set, the best `top` trials by each objective, and all trials
    (Pareto members starred). Metrics are per example (mse per pixel) in the units their names carry."""
    done = df[df["status"].eq("completed")]
    front = done[done["pareto"]].sort_values("distortion")
    sources = ", ".join(f"`{s}`" for s in df["source"].unique())
    lines = ["# Sweep analysis", "", f"{sources}: {status_line(df)}.", "",
             f"## Pareto set: {len(front)} of {len(done)} completed trials", "",
             "Minimising distortion and rate together: no other completed trial is at least as good in both.", ""]
    lines += _md_table(front, df) if len(front) else ["No completed trial has a finite distortion and rate."]
    for objective in OBJECTIVES:
        ranked = done.dropna(subset=[objective]).nsmallest(top, objective)
        if len(ranked):
            lines += ["", f"## Best {len(ranked)} by {objective}", ""] + _md_table(ranked, df)
    lines += ["", "## All trials (\\* = on the Pareto front)", ""] + _md_table(df, df)
    return "\n".join(lines) + "\n"


def _md_table(rows: pd.DataFrame, df: pd.DataFrame) -> list[str]:
    """Markdown rows: (source), trial, status, Pareto star, the searched parameters, the metrics, any error."""
    cols = (["source"] if df["source"].nunique() > 1 else []) + ["trial", "status", "pareto"] + searched_params(df)
    cols += [m for m in METRICS if df[m].notna().any()] + (["error"] if df["error"].notna().any() else [])
    header = [f"{c}_{UNITS[c]}" if c in UNITS else c for c in cols]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(cols)]
    for _, row in rows.iterrows():
        lines.append("| " + " | ".join(_cell(c, row[c]) for c in cols) + " |")
    return lines


def _cell(col: str, value: object) -> str:
    if col == "pareto":
        return "\\*" if value else ""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


def write_tables(df: pd.DataFrame, out: Path, top: int = 5) -> dict[str, Path]:
    """trials.csv (every trial, units in the column names) and summary.md, in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"trials": out / "trials.csv", "summary": out / "summary.md"}
    trials_table(df).to_csv(paths["trials"], index=False)
    paths["summary"].write_text(summary_markdown(df, top))
    return paths
