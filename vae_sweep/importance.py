"""Which searched parameters matter for each objective: a random forest's mean decrease in impurity.

optuna 2.10's fANOVA evaluator fails under numpy 2, so the forest is scikit-learn's, fitted here on the completed
trials of the analysis frame (`vae_sweep.analysis.load_sweep`). `analysis_plots.plot_importance` draws the result.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from vae_sweep.analysis import ELBO_TERMS, completed, searched_params

MIN_IMPORTANCE_TRIALS = 4  # completed trials needed to fit the forest
N_TREES = 200


def param_importance(df: pd.DataFrame) -> pd.DataFrame:
    """Mean-decrease-impurity importance of each searched numeric parameter for each ELBO term (distortion, rate,
    neg_elbo): a random forest (scikit-learn, N_TREES trees, fixed seed) over the completed trials, on log10 of
    each parameter whose completed values are all positive. Rows: parameters; columns: objectives with at least
    MIN_IMPORTANCE_TRIALS usable trials; each column sums to 1 (unitless). Empty when there are too few.
    `attrs["log10"]`: the parameters taken as log10; `attrs["trials"]`: the completed trials with a distortion."""
    from sklearn.ensemble import RandomForestRegressor

    done = completed(df)
    params = [p for p in searched_params(df) if pd.api.types.is_numeric_dtype(df[p]) and done[p].nunique() > 1]
    log10 = [p for p in params if (done[p].dropna() > 0).all()]
    result = {}
    for objective in ELBO_TERMS:
        rows = done[np.isfinite(done[objective]) & done[params].notna().all(axis=1)]
        if not params or len(rows) < MIN_IMPORTANCE_TRIALS:
            continue
        x = rows[params].astype(float)
        x[log10] = np.log10(x[log10])
        forest = RandomForestRegressor(n_estimators=N_TREES, random_state=0).fit(x.to_numpy(), rows[objective])
        result[objective] = forest.feature_importances_
    importance = pd.DataFrame(result, index=params if result else [])
    importance.attrs |= {"log10": log10, "trials": int(done["distortion"].notna().sum())}
    return importance
