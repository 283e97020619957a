"""Disentanglement metrics, as google-research/disentanglement_lib defines them: β-VAE, FactorVAE, MIG, DCI and SAP.

Every score is a fraction in [0, 1]; mutual informations are in nats. Codes are posterior means, (N, L) float; factors
are class indices, (N, K) int. Each metric's math takes numpy arrays arranged as that metric prescribes; the samplers
that arrange them from a factor grid live in `disentanglement_sampling`, and `evaluate` runs them all on a caller's
`represent(factors) -> codes`. Defaults follow disentanglement_lib's gin configs (sample counts in `SampleCounts`).
MIG is disentanglement_lib's estimator (20 equal-width bins per dim, plug-in discrete MI), not Chen et al.'s.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC

from vae_sweep.disentangle import sampling

_FRACTION = "fraction in [0, 1]"
DESCRIPTIONS: dict[str, str] = {
    "beta_vae": f"{_FRACTION}: evaluation accuracy of a logistic regression telling which factor two batches share "
    "from the mean |z_a - z_b| per latent dim (Higgins et al. 2017)",
    "beta_vae_train": f"{_FRACTION}: the β-VAE score's logistic regression on its training points",
    "factor_vae": f"{_FRACTION}: evaluation accuracy of the majority vote from the latent dim of least normalised "
    "variance to the factor held fixed (Kim & Mnih 2018)",
    "factor_vae_train": f"{_FRACTION}: the FactorVAE score's majority vote on its training points",
    "mig": f"{_FRACTION}: mean over factors of the gap between the two largest mutual informations (nats, posterior "
    "means in 20 equal-width bins) with one latent dim, over the factor's entropy (Chen et al. 2018, "
    "disentanglement_lib's estimator)",
    "dci_disentanglement": f"{_FRACTION}: 1 - entropy (base K) of each latent dim's tree importances over the K "
    "factors, weighted by the dim's share of importance (Eastwood & Williams 2018)",
    "dci_completeness": f"{_FRACTION}: 1 - entropy (base L) of each factor's tree importances over the L latent dims, "
    "weighted by the factor's share of importance (Eastwood & Williams 2018)",
    "dci_informativeness": f"{_FRACTION}: test accuracy of gradient-boosted trees predicting a factor from all "
    "latent dims, averaged over factors (Eastwood & Williams 2018)",
    "dci_informativeness_train": f"{_FRACTION}: the DCI trees' accuracy on their training points",
    "sap": f"{_FRACTION}: mean over factors of the gap between the two best test accuracies of a linear SVM "
    "predicting the factor from one latent dim (Kumar et al. 2018)",
    **{
        f"{name}_seconds": f"seconds: wall time to sample, encode and score {name}"
        for name in ("beta_vae", "factor_vae", "mig", "dci", "sap")
    },
}


# --- β-VAE score (Higgins et al. 2017, ICLR; disentanglement_lib beta_vae.py) ---------------------------------------


def beta_vae_features(codes_a: np.ndarray, codes_b: np.ndarray) -> np.ndarray:
    """The β-VAE score's feature: mean over a batch's pairs of |z_a - z_b|, per latent dim. (P, B, L) x2 -> (P, L)."""
    return np.abs(codes_a - codes_b).mean(axis=1)


def beta_vae(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    eval_features: np.ndarray,
    eval_labels: np.ndarray,
    *,
    seed: int = 0,
) -> dict[str, float]:
    """β-VAE score: accuracy of scikit-learn's default logistic regression predicting the shared factor k (P,) from the
    features (P, L) of `beta_vae_features`. disentanglement_lib: 10,000 training and 5,000 evaluation points, batches of
    64; its sklearn's default was liblinear one-vs-rest, today's is lbfgs multinomial, given 1,000 iterations here since
    100 leave the unscaled features of a perfect code unconverged. Returns fractions in [0, 1]: `train_accuracy` and
    `eval_accuracy` (the score)."""
    model = LogisticRegression(max_iter=1000, random_state=seed).fit(train_features, train_labels)
    return {
        "train_accuracy": float(model.score(train_features, train_labels)),
        "eval_accuracy": float(model.score(eval_features, eval_labels)),
    }


# --- FactorVAE score (Kim & Mnih 2018, ICML; disentanglement_lib factor_vae.py) -------------------------------------


def factor_vae_argmins(
    batch_codes: np.ndarray, global_variances: np.ndarray, *, std_threshold: float = 0.05
) -> np.ndarray:
    """Per batch (P, B, L), the latent dim with the least local variance (ddof 1) over global variance (L,), among
    active dims (global std >= `std_threshold`, disentanglement_lib's prune_dims.threshold = 0.05). Returns (P,) int
    dim indices, -1 for every batch when no dim is active."""
    active = np.sqrt(global_variances) >= std_threshold  # (L,)
    if not active.any():
        return np.full(len(batch_codes), -1)
    ratios = batch_codes[..., active].var(axis=1, ddof=1) / global_variances[active]  # (P, L_active)
    return np.flatnonzero(active)[ratios.argmin(axis=1)]


def factor_vae_votes(labels: np.ndarray, argmins: np.ndarray, n_factors: int, n_dims: int) -> np.ndarray:
    """Vote counts (K, L): entry (k, d) counts batches with factor k fixed whose argmin dim was d (-1s cast none)."""
    cast = argmins >= 0
    votes = np.zeros((n_factors, n_dims), dtype=np.int64)
    np.add.at(votes, (labels[cast], argmins[cast]), 1)
    return votes


def factor_vae(train_votes: np.ndarray, eval_votes: np.ndarray) -> dict[str, float]:
    """FactorVAE score from vote counts (K, L): each latent dim predicts the factor with most training votes (ties to
    the lowest index), and the score is the fraction of evaluation votes it gets right. No vote cast (no active dim):
    0. disentanglement_lib: 10,000 points for the global variance, 10,000 training and 5,000 evaluation batches of 64.
    Returns fractions in [0, 1]: `train_accuracy`, `eval_accuracy` (the score)."""
    classifier = train_votes.argmax(axis=0)  # (L,): the factor each dim votes for
    dims = np.arange(train_votes.shape[1])

    def accuracy(votes):
        return float(votes[classifier, dims].sum() / votes.sum()) if votes.sum() else 0.0

    return {"train_accuracy": accuracy(train_votes), "eval_accuracy": accuracy(eval_votes)}


# --- MIG (Chen et al. 2018, NeurIPS; disentanglement_lib mig.py) ----------------------------------------------------


def discretize(codes: np.ndarray, n_bins: int = 20) -> np.ndarray:
    """Each latent dim on its own into `n_bins` equal-width bins between its min and max: (N, L) -> (N, L) int in
    [0, n_bins). A constant dim falls in one bin. (disentanglement_lib's histogram_discretize.)"""
    out = np.empty(codes.shape, dtype=np.int64)
    for i, column in enumerate(codes.T):
        edges = np.histogram_bin_edges(column, n_bins)
        out[:, i] = np.digitize(column, edges[1:-1])  # the max lands in the last bin, as np.histogram counts it
    return out


def discrete_mutual_info(a: np.ndarray, b: np.ndarray) -> float:
    """Plug-in mutual information I(a; b) in nats of two discrete (N,) int samples (sklearn's mutual_info_score)."""
    _, a = np.unique(a, return_inverse=True)
    _, b = np.unique(b, return_inverse=True)
    joint = np.bincount(a * (b.max() + 1) + b, minlength=(a.max() + 1) * (b.max() + 1))
    joint = joint.reshape(a.max() + 1, b.max() + 1) / len(a)  # p(a, b)
    outer = joint.sum(axis=1, keepdims=True) * joint.sum(axis=0, keepdims=True)  # p(a) p(b)
    nz = joint > 0
    return float(np.sum(joint[nz] * np.log(joint[nz] / outer[nz])))


def mig(codes: np.ndarray, factors: np.ndarray, *, n_bins: int = 20) -> dict:
    """Mutual information gap with disentanglement_lib's estimator, not Chen et al.'s: posterior means (N, L) binned by
    `discretize` (20 equal-width bins per dim), plug-in discrete MI in nats with each factor (N, K), and
    MIG = mean over factors of (largest MI - second largest MI) / H(v_k), with H(v_k) = I(v_k; v_k) in nats.
    disentanglement_lib: 10,000 points. Returns `mig` (fraction in [0, 1]), `per_factor` (K,), `mutual_info` (L, K)
    and `factor_entropy` (K,) in nats."""
    if codes.shape[1] < 2:
        raise ValueError("MIG needs at least 2 latent dims (it takes a gap between the two most informative)")
    binned = discretize(codes, n_bins)
    info = np.array([[discrete_mutual_info(z, v) for v in factors.T] for z in binned.T])  # (L, K)
    entropy = np.array([discrete_mutual_info(v, v) for v in factors.T])  # (K,)
    top = np.sort(info, axis=0)[::-1]
    per_factor = (top[0] - top[1]) / entropy
    return {"mig": float(per_factor.mean()), "per_factor": per_factor, "mutual_info": info, "factor_entropy": entropy}


# --- DCI (Eastwood & Williams 2018, ICLR; disentanglement_lib dci.py) -----------------------------------------------


def _gain_importances(model: HistGradientBoostingClassifier, n_features: int) -> np.ndarray:
    """Split-gain importance of a fitted histogram GBT (n_features,), summing to 1: the total loss reduction of the
    splits on each feature, the histogram counterpart of GradientBoostingClassifier's impurity importances.
    Reads sklearn's private `_predictors`, since HistGradientBoostingClassifier has no `feature_importances_`."""
    gains = np.zeros(n_features)
    for tree in (t for iteration in model._predictors for t in iteration):
        splits = tree.nodes[~tree.nodes["is_leaf"].astype(bool)]
        np.add.at(gains, splits["feature_idx"], splits["gain"])
    return gains / gains.sum() if gains.sum() > 0 else gains


def _fit_importances(model_name: str, x: np.ndarray, y: np.ndarray, seed: int):
    """One factor's classifier, fitted, and its feature importances (L,)."""
    if model_name == "gbt":  # disentanglement_lib's choice: sklearn's default GradientBoostingClassifier
        model = GradientBoostingClassifier(random_state=seed).fit(x, y)
        return model, np.abs(model.feature_importances_)
    if model_name == "hist":  # histogram trees of GBT's default depth 3 (at most 8 leaves), 100 rounds, rate 0.1
        model = HistGradientBoostingClassifier(max_depth=3, random_state=seed).fit(x, y)
        return model, _gain_importances(model, x.shape[1])
    raise ValueError(f"dci model={model_name!r}: 'hist' or 'gbt'")


def dci_importances(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    *,
    model: str = "hist",
    seed: int = 0,
):
    """Fit one gradient-boosted tree classifier per factor on all latent dims. Returns the importance matrix R (L, K),
    each column summing to 1 (or 0 when no tree split), and the train and test accuracies (K,) as fractions."""
    columns, train, test = [], [], []
    for y_train, y_test in zip(factors_train.T, factors_test.T):
        fitted, importance = _fit_importances(model, codes_train, y_train, seed)
        columns.append(importance)
        train.append(fitted.score(codes_train, y_train))
        test.append(fitted.score(codes_test, y_test))
    return np.stack(columns, axis=1), np.array(train), np.array(test)


def _weighted_one_minus_entropy(p: np.ndarray) -> float:
    """Σ_i ρ_i (1 - H(p_i·)) over rows i of a non-negative (I, J) matrix, entropy in base J of each row normalised
    after adding 1e-11, ρ_i = row sum / total (uniform when all is zero), as disentanglement_lib computes it."""
    rows = p + 1e-11
    rows = rows / rows.sum(axis=1, keepdims=True)
    one_minus_h = 1.0 + np.sum(rows * np.log(rows), axis=1) / np.log(p.shape[1])
    weight = p if p.sum() > 0 else np.ones_like(p)
    return float(np.sum(one_minus_h * weight.sum(axis=1) / weight.sum()))


def dci_disentanglement(importances: np.ndarray) -> float:
    """DCI disentanglement from R (L, K): Σ_i ρ_i (1 - H_K(R_i· / Σ_k R_ik)), ρ_i = Σ_k R_ik / Σ R. In [0, 1]."""
    return _weighted_one_minus_entropy(importances)


def dci_completeness(importances: np.ndarray) -> float:
    """DCI completeness from R (L, K): Σ_k ρ_k (1 - H_L(R_·k / Σ_i R_ik)), ρ_k = Σ_i R_ik / Σ R. In [0, 1]."""
    return _weighted_one_minus_entropy(importances.T)


def dci(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    *,
    model: str = "hist",
    seed: int = 0,
) -> dict:
    """DCI (Eastwood & Williams 2018) from (N, L) codes and (N, K) factors, train and test. `model="gbt"` is
    disentanglement_lib's sklearn default GradientBoostingClassifier; "hist" (default) is HistGradientBoostingClassifier
    at GBT's depth 3 with split-gain importances, about 17x faster (10 CPU seconds on 10,000 dSprites codes). Measured
    (benchmarks/disentanglement_metrics.py): equal on a perfect and a random code; on a code with two factors rotated
    45 degrees, D 0.818 vs 0.813 but C 0.845 vs 0.787 and I 0.914 vs 0.877, so use "gbt" to compare with published
    disentanglement_lib numbers. disentanglement_lib: 10,000 training and 5,000 test points. Returns fractions in
    [0, 1]: `disentanglement`, `completeness`, `informativeness` (mean test accuracy), `informativeness_train`, and
    `importances` (L, K)."""
    importances, train, test = dci_importances(
        codes_train, factors_train, codes_test, factors_test, model=model, seed=seed
    )
    return {
        "disentanglement": dci_disentanglement(importances),
        "completeness": dci_completeness(importances),
        "informativeness": float(test.mean()),
        "informativeness_train": float(train.mean()),
        "importances": importances,
    }


# --- SAP (Kumar et al. 2018, ICLR; disentanglement_lib sap_score.py, discrete factors) ------------------------------


def sap_scores(
    codes_train: np.ndarray, factors_train: np.ndarray, codes_test: np.ndarray, factors_test: np.ndarray
) -> np.ndarray:
    """SAP's score matrix S (L, K): test accuracy of a linear SVM (C = 0.01, balanced class weights) fitted on the
    single latent dim i to predict factor k, from (N, L) codes and (N, K) factors, train and test."""
    scores = np.empty((codes_train.shape[1], factors_train.shape[1]))
    for i, k in np.ndindex(scores.shape):
        svm = LinearSVC(C=0.01, class_weight="balanced").fit(codes_train[:, i : i + 1], factors_train[:, k])
        scores[i, k] = svm.score(codes_test[:, i : i + 1], factors_test[:, k])
    return scores


def sap_from_scores(scores: np.ndarray) -> float:
    """SAP from S (L, K): mean over factors of (largest - second largest) score over latent dims. In [0, 1]."""
    top = np.sort(scores, axis=0)
    return float(np.mean(top[-1] - top[-2]))


def sap(codes_train: np.ndarray, factors_train: np.ndarray, codes_test: np.ndarray, factors_test: np.ndarray) -> dict:
    """Separated attribute predictability for discrete factors (Kumar et al. 2018). disentanglement_lib: 10,000
    training and 5,000 test points. Returns `sap` (fraction in [0, 1]) and `scores` (L, K) test accuracies."""
    scores = sap_scores(codes_train, factors_train, codes_test, factors_test)
    return {"sap": sap_from_scores(scores), "scores": scores}


# --- all of them on a factor grid -----------------------------------------------------------------------------------

SampleCounts = sampling.SampleCounts


def _beta_vae(represent, sizes, n: SampleCounts, rng, seed) -> dict:
    def points(count):
        a, b, labels = sampling.beta_vae_batches(sizes, count, rng, n.batch_size)
        return sampling.encode_in_chunks(represent, (a, b), beta_vae_features), labels

    result = beta_vae(*points(n.beta_vae_train), *points(n.beta_vae_eval), seed=seed)
    return {"beta_vae": result["eval_accuracy"], "beta_vae_train": result["train_accuracy"]}


def _factor_vae(represent, sizes, n: SampleCounts, rng) -> dict:
    codes = sampling.encode(represent, sampling.sample_factors(sizes, n.factor_vae_variance, rng))
    global_variances = codes.var(axis=0, ddof=1)  # (L,)

    def votes(count):
        batches, labels = sampling.factor_vae_batches(sizes, count, rng, n.batch_size)
        argmins = sampling.encode_in_chunks(represent, (batches,), lambda c: factor_vae_argmins(c, global_variances))
        return factor_vae_votes(labels, argmins, len(sizes), codes.shape[1])

    result = factor_vae(votes(n.factor_vae_train), votes(n.factor_vae_eval))
    return {"factor_vae": result["eval_accuracy"], "factor_vae_train": result["train_accuracy"]}


def _mig(represent, sizes, n: SampleCounts, rng) -> dict:
    return {"mig": mig(*sampling.independent_codes(represent, sizes, n.mig, rng))["mig"]}


def _dci(represent, sizes, n: SampleCounts, rng, model, seed) -> dict:
    train = sampling.independent_codes(represent, sizes, n.dci_train, rng)
    result = dci(*train, *sampling.independent_codes(represent, sizes, n.dci_test, rng), model=model, seed=seed)
    return {
        f"dci_{key}": result[key]
        for key in ("disentanglement", "completeness", "informativeness", "informativeness_train")
    }


def _sap(represent, sizes, n: SampleCounts, rng) -> dict:
    train = sampling.independent_codes(represent, sizes, n.sap_train, rng)
    return {"sap": sap(*train, *sampling.independent_codes(represent, sizes, n.sap_test, rng))["sap"]}


def evaluate(
    represent: sampling.Represent,
    factor_sizes: Sequence[int],
    *,
    seed: int = 0,
    dci_model: str = "hist",
    **sample_counts: int,
) -> dict[str, float]:
    """Every metric of DESCRIPTIONS on `represent(factors (N, K) int) -> codes (N, L) float` (posterior means), with
    factor classes sampled from the grid `factor_sizes` as each metric prescribes. Each metric draws from its own
    generator spawned from `seed`, so skipping or reordering one changes no other. `sample_counts` override
    `SampleCounts` (disentanglement_lib's defaults) by name; `dci_model` is "hist" or "gbt" (see `dci`).
    Returns plain floats: the scores (fractions in [0, 1]) and each metric's wall time `<name>_seconds`."""
    sizes = tuple(int(s) for s in sampling.factor_sizes_array(factor_sizes))
    n = SampleCounts(**sample_counts)
    rng = {
        name: np.random.default_rng(child)
        for name, child in zip(("beta_vae", "factor_vae", "mig", "dci", "sap"), np.random.SeedSequence(seed).spawn(5))
    }
    steps = {
        "beta_vae": lambda: _beta_vae(represent, sizes, n, rng["beta_vae"], seed),
        "factor_vae": lambda: _factor_vae(represent, sizes, n, rng["factor_vae"]),
        "mig": lambda: _mig(represent, sizes, n, rng["mig"]),
        "dci": lambda: _dci(represent, sizes, n, rng["dci"], dci_model, seed),
        "sap": lambda: _sap(represent, sizes, n, rng["sap"]),
    }
    out = {}
    for name, step in steps.items():
        start = time.perf_counter()
        out.update({key: float(value) for key, value in step().items()})
        out[f"{name}_seconds"] = time.perf_counter() - start
    return out
