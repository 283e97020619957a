"""What a sweep leaves in its folder at the end: optimization_results.yaml and summary.md.

optimization_results.yaml keeps hydra-optuna-sweeper's format (`best_params`/`best_value` for one objective,
`solutions: [{params, values}]` for several), so tools written for the plugin read it unchanged.
summary.md is for people: the Pareto set (or the best trials) as a table, and the trial counts by state.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import optuna
from omegaconf import OmegaConf
from optuna.trial import TrialState

log = logging.getLogger(__name__)
METRIC_COLUMNS = {"distortion": "nats", "rate": "nats", "neg_elbo": "nats", "iwae_nll": "nats", "active_units": "count"}


def write_summary(study: optuna.Study, sweep_dir: Path, directions: list[str]) -> None:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    counts = Counter(t.user_attrs.get("status", t.state.name.lower()) for t in trials)
    lines = [f"# Study {study.study_name}", "",
             f"{len(trials)} trials: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), ""]
    if not complete:
        log.warning("no trial completed: nothing to summarise")
        (sweep_dir / "summary.md").write_text("\n".join(lines + ["No trial completed."]) + "\n")
        return
    if len(directions) == 1:
        best = study.best_trial
        results = {"name": "optuna", "best_params": best.params, "best_value": best.value}
        sign = 1 if directions[0] == "minimize" else -1
        top = sorted(complete, key=lambda t: sign * t.value)[:10]
        lines += ["## Best trials", ""] + _table(top)
        log.info("best trial %d: value %.4g, params %s", best.number, best.value, best.params)
    else:
        front = sorted(study.best_trials, key=lambda t: t.values[-1])
        results = {"name": "optuna", "solutions": [{"params": t.params, "values": t.values} for t in front]}
        lines += [f"## Pareto set ({len(front)} of {len(complete)} completed trials)", ""]
        lines += _table(front)
        log.info("Pareto set: %d trials of %d completed", len(front), len(complete))
    OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")
    (sweep_dir / "summary.md").write_text("\n".join(lines) + "\n")


def _table(trials: list[optuna.trial.FrozenTrial]) -> list[str]:
    """Markdown rows: trial number, searched parameters, and the metrics each trial recorded."""
    params = sorted({k for t in trials for k in t.params})
    header = ["trial", *params, *(f"{m} [{unit}]" for m, unit in METRIC_COLUMNS.items())]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for t in trials:
        m = t.user_attrs.get("metrics", {})
        cells = [str(t.number), *(_fmt(t.params.get(p)) for p in params), *(_fmt(m.get(k)) for k in METRIC_COLUMNS)]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _fmt(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v))
