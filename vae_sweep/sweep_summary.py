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
        lines += ["## Best trials", ""] + _table(top, [f"objective_{0}"])
        log.info("best trial %d: value %.4g, params %s", best.number, best.value, best.params)
    else:
        front = sorted(study.best_trials, key=lambda t: t.values[-1])
        results = {"name": "optuna", "solutions": [{"params": t.params, "values": t.values} for t in front]}
        lines += [f"## Pareto set ({len(front)} of {len(complete)} completed trials)", ""]
        lines += _table(front, [f"objective_{i}" for i in range(len(directions))])
        log.info("Pareto set: %d trials of %d completed", len(front), len(complete))
    OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")
    (sweep_dir / "summary.md").write_text("\n".join(lines) + "\n")


def _table(trials: list[optuna.trial.FrozenTrial], objective_names: list[str]) -> list[str]:
    params = sorted({k for t in trials for k in t.params})
    metrics = ["distortion", "rate", "neg_elbo", "iwae_nll", "active_units"]
    names = [(m, m) for m in metrics] if trials[0].user_attrs.get("metrics") else []
    header = ["trial", *params, *(n for n, _ in names)] or objective_names
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for t in trials:
        m = t.user_attrs.get("metrics", {})
        cells = [str(t.number), *(_fmt(t.params.get(p)) for p in params), *(_fmt(m.get(k)) for _, k in names)]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _fmt(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v))
