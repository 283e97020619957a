"""What a sweep leaves in its folder at the end: optimization_results.yaml and summary.md.

optimization_results.yaml keeps hydra-optuna-sweeper's format (`best_params`/`best_value` for one objective,
`solutions: [{params, values}]` for several), so tools written for the plugin read it unchanged.
summary.md is the analysis's (`vae_sweep.analysis.frame.write_summary_md`), made from the study's trials joined to their
run dirs: the same file `scripts/analyze.py` writes for the sweep, in the same format.
"""

from __future__ import annotations

import logging
from pathlib import Path

import optuna
from omegaconf import OmegaConf
from optuna.trial import TrialState

from vae_sweep.sweep.progress import params_line

log = logging.getLogger(__name__)


def write_summary(study: optuna.Study, sweep_dir: Path, directions: list[str]) -> None:
    """summary.md, and optimization_results.yaml when some trial completed, in `sweep_dir`. `directions`: the
    study's, one "minimize" or "maximize" per objective."""
    from vae_sweep.analysis.frame import study_frame, write_summary_md  # pandas and the analysis: at the end only

    write_summary_md(study_frame(study), sweep_dir)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        interrupted = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("status") == "interrupted"]
        if interrupted:  # Ctrl-C or a signal during the first trials: the next run continues them
            log.info("no trial completed yet (%d interrupted, continued by the next run)", len(interrupted))
        else:
            log.warning("no trial completed: nothing to summarise")
        return
    if len(directions) == 1:
        best = study.best_trial
        results = {"name": "optuna", "best_params": best.params, "best_value": best.value}
        log.info("best trial %d: value %.4g, %s", best.number, best.value, params_line(best.params))
    else:
        front = sorted(study.best_trials, key=lambda t: t.values[-1])
        results = {"name": "optuna", "solutions": [{"params": t.params, "values": t.values} for t in front]}
        log.info("Pareto set: %d trials of %d completed", len(front), len(complete))
    OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")
