"""Does optuna.importance measure parameter importance as well as a plain random forest's impurity decrease?

Importance has no ground truth on a real sweep, but repeated sweeps of one experiment should agree: a method whose
answer changes from one seed's sweep to the next measures the sampler's luck more than the parameters. So this
reads several studies of the same experiment (benchmarks/sampler_choice.py leaves 5 samplers x 3 seeds of the
default sweep in multirun/sampler_choice/samplers.db), computes each parameter's importance for distortion, rate
and neg_elbo with each method on each study's completed trials, and reports for each method and objective the mean
importance of each parameter over the studies and its spread (mean absolute difference between two studies'
importance vectors, which sum to 1: 0 = every study agrees, 2 = they disagree completely). Lower spread is better.

Methods: `forest` (scikit-learn's random forest, mean decrease in impurity, on log10 of positive parameters: the
home-made method vae_sweep had while optuna 2.10's fANOVA failed under numpy 2), `fanova` (optuna 5's functional
ANOVA, Hutter et al. 2014, as vae_sweep/analysis/importance.py now runs it) and `ped_anova` (optuna's PED-ANOVA, Watanabe et
al. 2023, which measures what matters within the top 10% of trials: another question).

    python benchmarks/importance.py [--storage sqlite:///multirun/sampler_choice/samplers.db]
"""

from __future__ import annotations

import argparse
import warnings
from itertools import combinations

import numpy as np
import optuna
import pandas as pd

from vae_sweep.analysis.frame import ELBO_TERMS, completed, searched_params, study_frame
from vae_sweep.analysis.importance import fanova


def forest(done: pd.DataFrame, params: list[str], objective: str) -> np.ndarray:
    from sklearn.ensemble import RandomForestRegressor

    x = done[params].astype(float)
    log10 = [p for p in params if (x[p] > 0).all()]
    x[log10] = np.log10(x[log10])
    fitted = RandomForestRegressor(n_estimators=200, random_state=0).fit(x.to_numpy(), done[objective])
    return fitted.feature_importances_


def with_optuna(evaluator: optuna.importance.BaseImportanceEvaluator):
    def importance(done: pd.DataFrame, params: list[str], objective: str) -> np.ndarray:
        dists = {
            p: optuna.distributions.FloatDistribution(done[p].min(), done[p].max(), log=bool((done[p] > 0).all()))
            for p in params
        }
        study = optuna.create_study()
        study.add_trials(
            [
                optuna.trial.create_trial(
                    params={p: float(row[p]) for p in params}, distributions=dists, value=float(row[objective])
                )
                for _, row in done.iterrows()
            ]
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            found = optuna.importance.get_param_importances(study, evaluator=evaluator, normalize=True)
        return np.array([found.get(p, 0.0) for p in params])

    return importance


def shipped(done: pd.DataFrame, params: list[str], objective: str) -> np.ndarray:
    """vae_sweep.analysis.importance's fANOVA, as the analysis runs it."""
    return fanova(done, params, [p for p in params if (done[p] > 0).all()], objective)


METHODS = {
    "forest": forest,
    "fanova": shipped,
    "ped_anova": with_optuna(optuna.importance.PedAnovaImportanceEvaluator()),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--storage", default="sqlite:///multirun/sampler_choice/samplers.db")
    opts = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    frames = [
        completed(study_frame(optuna.load_study(study_name=s.study_name, storage=opts.storage)))
        for s in optuna.get_all_study_summaries(opts.storage)
    ]
    params = sorted(set.intersection(*(set(searched_params(f)) for f in frames)))
    print(
        f"{len(frames)} studies, {min(map(len, frames))}-{max(map(len, frames))} completed trials each; "
        f"parameters {', '.join(params)}\n"
    )
    print(
        "| method | objective | "
        + " | ".join(f"mean importance of {p}" for p in params)
        + " | spread between studies |"
    )
    print("|---|---|" + "---|" * (len(params) + 1))
    for name, method in METHODS.items():
        for objective in ELBO_TERMS:
            vectors = np.array([method(f, params, objective) for f in frames])
            spread = np.mean([np.abs(a - b).sum() for a, b in combinations(vectors, 2)])
            means = " | ".join(f"{v:.2f}" for v in vectors.mean(axis=0))
            print(f"| {name} | {objective} | {means} | {spread:.2f} |")


if __name__ == "__main__":
    main()
