"""Which searched parameters matter for each objective: optuna's fANOVA (functional ANOVA, Hutter et al. 2014).

Optuna 5's `FanovaImportanceEvaluator` works again under numpy 2, and on repeated sweeps of one experiment it agrees
with itself as well as the random forest's mean decrease in impurity that vae_sweep used meanwhile
(benchmarks/importance.py on 15 default sweeps, spread between studies on a scale of 0 to 2: distortion 0.28 against
0.46, rate 0.28 against 0.27, neg_elbo 0.41 against 0.27; mean 0.32 against 0.33), and it is the library's own
variance decomposition rather than an impurity count, so the home-made forest is gone. The frame may come from sweep
dirs as well as a study, so the completed trials of the analysis frame (`vae_sweep.analysis.load_sweep`) are put into
an in-memory study per objective, each parameter on a log scale when all its values are positive.
`plots.plot_importance` draws the result.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from vae_sweep.analysis.frame import ELBO_TERMS, completed, searched_params

MIN_IMPORTANCE_TRIALS = 4  # completed trials needed to fit fANOVA's forest
N_TREES = 64  # fANOVA's forest (optuna's default)


def param_importance(df: pd.DataFrame) -> pd.DataFrame:
    """fANOVA importance of each searched numeric parameter for each ELBO term (distortion, rate, neg_elbo): the share
    of the objective's variance over the search space that the parameter explains alone, over the completed trials
    (fixed seed). Rows: parameters; columns: objectives with at least MIN_IMPORTANCE_TRIALS usable trials; each column
    sums to 1 (unitless). Empty when there are too few. `attrs["log10"]`: the parameters searched on a log scale;
    `attrs["trials"]`: the completed trials with a distortion."""
    done = completed(df)
    params = [p for p in searched_params(df) if pd.api.types.is_numeric_dtype(df[p]) and done[p].nunique() > 1]
    log10 = [p for p in params if (done[p].dropna() > 0).all()]
    result = {}
    for objective in ELBO_TERMS:
        rows = done[np.isfinite(done[objective]) & done[params].notna().all(axis=1)]
        if params and len(rows) >= MIN_IMPORTANCE_TRIALS:
            result[objective] = fanova(rows, params, log10, objective)
    importance = pd.DataFrame(result, index=params if result else [])
    importance.attrs |= {"log10": log10, "trials": int(done["distortion"].notna().sum())}
    return importance


def fanova(rows: pd.DataFrame, params: list[str], log10: list[str], objective: str) -> np.ndarray:
    """fANOVA importances of `params` for column `objective` of `rows`, as an array that sums to 1."""
    import optuna
    from optuna.distributions import FloatDistribution

    dists = {p: FloatDistribution(float(rows[p].min()), float(rows[p].max()), log=p in log10) for p in params}
    trials = [
        optuna.trial.create_trial(
            params={p: float(r[p]) for p in params}, distributions=dists, value=float(r[objective])
        )
        for _, r in rows.iterrows()
    ]
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created in memory" line
    try:
        study = optuna.create_study()
        study.add_trials(trials)
        found = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(n_trees=N_TREES, seed=0), normalize=True
        )
    finally:
        optuna.logging.set_verbosity(verbosity)
    return np.array([found.get(p, 0.0) for p in params])
