"""Disentanglement metrics: hand calculations on tiny cases, and the known answers of DISENTANGLEMENT.md for a perfect
and a random code, sampled through the real samplers on dSprites' factor sizes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import mutual_info_score
from threadpoolctl import threadpool_limits

from vae_sweep.disentangle import sampling
from vae_sweep.disentangle import scores as dis

DSPRITES = (3, 6, 40, 32, 32)  # shape, scale, orientation, posX, posY
# Reduced counts: β-VAE and FactorVAE are exactly 1.0 on a perfect code at any count, and chance (0.2) on a random
# one within ±0.05 at 1,000 evaluation points (sd 0.013); DCI's D and C are 1 and 0 at any count. MIG keeps its
# default 10,000 points (its plug-in MI is biased up by about (bins - 1)(classes - 1) / 2N nats), and SAP its
# 10,000 / 5,000: the SVM's C = 0.01 weighs a sum over training points, so fewer points regularise more (0.27, not
# 0.23, at 2,000).
SMALL = dict(
    beta_vae_train=500,
    beta_vae_eval=1000,
    factor_vae_variance=2000,
    factor_vae_train=500,
    factor_vae_eval=1000,
    dci_train=2000,
    dci_test=1000,
)


@pytest.fixture(autouse=True)
def one_openmp_thread():
    """Histogram trees with one OpenMP thread: on a shared 2-core machine more threads run several times slower."""
    with threadpool_limits(1):
        yield


def perfect(factors):
    """The 5 factor classes as 5 dims, plus 5 N(0, 1) noise dims."""
    rng = np.random.default_rng(len(factors))
    return np.concatenate([factors, rng.normal(size=factors.shape)], axis=1).astype(float)


def random_code(factors):
    return np.random.default_rng(len(factors) + 1).normal(size=(len(factors), 10))


@pytest.fixture(scope="module")
def perfect_scores():
    with threadpool_limits(1):
        return dis.evaluate(perfect, DSPRITES, **SMALL)


@pytest.fixture(scope="module")
def random_scores():
    with threadpool_limits(1):
        return dis.evaluate(random_code, DSPRITES, **SMALL)


# --- samplers ---------------------------------------------------------------------------------------------------------


def test_sample_factors_are_uniform_classes_and_seeded():
    a = sampling.sample_factors(DSPRITES, 20_000, np.random.default_rng(0))
    assert a.shape == (20_000, 5) and a.min() == 0
    assert [len(np.unique(column)) for column in a.T] == list(DSPRITES)
    np.testing.assert_allclose(np.bincount(a[:, 0]) / len(a), 1 / 3, atol=0.02)
    assert np.array_equal(a, sampling.sample_factors(DSPRITES, 20_000, np.random.default_rng(0)))


def test_constant_factor_is_refused():
    with pytest.raises(ValueError, match="color"):
        sampling.sample_factors((1, 3, 6), 4, np.random.default_rng(0))


def test_beta_vae_pairs_share_exactly_their_labelled_factor():
    a, b, k = sampling.beta_vae_batches(DSPRITES, 300, np.random.default_rng(0), batch_size=64)
    assert a.shape == b.shape == (300, 64, 5) and k.shape == (300,)
    same = (a == b).all(axis=1)  # (P, K): factors equal across all 64 pairs
    assert same[np.arange(300), k].all()
    assert same.sum() == 300  # no other factor agrees over 64 independent pairs
    assert set(k) == set(range(5))


def test_factor_vae_batches_fix_one_factor_at_one_value():
    factors, k = sampling.factor_vae_batches(DSPRITES, 300, np.random.default_rng(0), batch_size=64)
    constant = (factors == factors[:, :1]).all(axis=1)  # (P, K)
    assert constant[np.arange(300), k].all() and constant.sum() == 300
    assert len(np.unique(factors[k == 2, 0, 2])) > 10  # the fixed value itself varies from batch to batch


def test_encode_in_chunks_matches_one_call():
    factors = sampling.sample_factors(DSPRITES, 5 * 7, np.random.default_rng(0)).reshape(5, 7, 5)
    whole = sampling.encode(perfect_const := (lambda f: f * 2.0), factors)
    assert whole.shape == (5, 7, 5)
    chunked = sampling.encode_in_chunks(perfect_const, (factors,), lambda c: c.sum(axis=1), points_per_chunk=2)
    np.testing.assert_array_equal(chunked, whole.sum(axis=1))


# --- hand calculations ------------------------------------------------------------------------------------------------


def test_mutual_info_of_a_2x2_table_by_hand():
    """Counts [[3, 1], [1, 3]] of 8: I = 2 (3/8) ln(3/2) + 2 (1/8) ln(1/2) = 0.75 ln 1.5 - 0.25 ln 2 nats."""
    a = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    b = np.array([0, 0, 0, 1, 1, 1, 1, 0])
    expected = 0.75 * math.log(1.5) - 0.25 * math.log(2)
    assert dis.discrete_mutual_info(a, b) == pytest.approx(expected, abs=1e-12)
    assert dis.discrete_mutual_info(a, b) == pytest.approx(mutual_info_score(a, b), abs=1e-12)
    assert dis.discrete_mutual_info(a, a) == pytest.approx(math.log(2))  # H of a fair coin


def test_discretize_is_equal_width_between_min_and_max():
    codes = np.stack([np.arange(20.0), np.full(20, 3.0), np.linspace(-1, 1, 20) ** 3], axis=1)
    binned = dis.discretize(codes, n_bins=20)
    assert np.array_equal(binned[:, 0], np.arange(20))  # the max lands in the last bin
    assert (binned[:, 1] == binned[0, 1]).all()  # a constant dim: one bin
    assert binned[:, 2].min() == 0 and binned[:, 2].max() == 19


def test_mig_by_hand_and_duplicated_latents():
    factors = np.array([[0, 0], [0, 1], [1, 0], [1, 1]] * 25)
    codes = np.stack([factors[:, 0], factors[:, 1], np.zeros(100)], axis=1).astype(float)
    result = dis.mig(codes, factors)
    np.testing.assert_allclose(result["mutual_info"], [[math.log(2), 0], [0, math.log(2)], [0, 0]], atol=1e-12)
    assert result["mig"] == pytest.approx(1.0)
    assert dis.mig(codes[:, [0, 0, 1, 1]], factors)["mig"] == pytest.approx(0.0)


def test_dci_from_given_importance_matrices():
    assert dis.dci_disentanglement(np.eye(4)) == pytest.approx(1.0)
    assert dis.dci_completeness(np.eye(4)) == pytest.approx(1.0)
    assert dis.dci_disentanglement(np.ones((4, 3))) == pytest.approx(0.0, abs=1e-9)
    # Two codes both for factor 0: each code is pure (D = 1), but factor 0 is split evenly over 2 codes (C = 0).
    assert dis.dci_disentanglement(np.array([[1.0, 0], [1, 0]])) == pytest.approx(1.0)
    assert dis.dci_completeness(np.array([[1.0, 0], [1, 0]])) == pytest.approx(0.0, abs=1e-9)
    # R = [[.5, .5], [0, 1]]: D = (1/2)(1 - 1) + (1/2)(1 - 0) = 0.5;
    # C = (.5/2)(1 - 0) + (1.5/2)(1 - H2(1/3, 2/3)) with H2(1/3, 2/3) = 0.918296 bits.
    r = np.array([[0.5, 0.5], [0.0, 1.0]])
    h = -(1 / 3) * math.log2(1 / 3) - (2 / 3) * math.log2(2 / 3)
    assert dis.dci_disentanglement(r) == pytest.approx(0.5)
    assert dis.dci_completeness(r) == pytest.approx(0.25 + 0.75 * (1 - h))


def test_sap_from_a_given_score_matrix():
    scores = np.array([[0.9, 0.2], [0.5, 0.6], [0.1, 0.3]])  # (L = 3, K = 2)
    assert dis.sap_from_scores(scores) == pytest.approx(((0.9 - 0.5) + (0.6 - 0.3)) / 2)


def test_factor_vae_majority_vote_on_a_handful_of_votes():
    train = np.array([[3, 0, 1], [1, 2, 0]])  # (K = 2, L = 3): dims vote for factors 0, 1, 0
    held_out = np.array([[1, 1, 0], [2, 0, 1]])  # right: dim 0 -> 0 once; dims 1, 2 never
    assert dis.factor_vae(train, held_out) == {"train_accuracy": 6 / 7, "eval_accuracy": 1 / 5}
    assert dis.factor_vae(np.zeros((2, 3), int), np.zeros((2, 3), int))["eval_accuracy"] == 0.0


def test_factor_vae_argmin_skips_collapsed_dims_and_counts_votes():
    batch = np.array([[[0.0, 1.0, 5.0, 2.0], [0.0, 1.2, 7.0, 4.0], [0.0, 0.8, 9.0, 6.0]]])  # (P = 1, B = 3, L = 4)
    # Dim 0 never varies (collapsed, skipped); local/global variance: dim 1 .04/1, dim 2 4/100, dim 3 4/1.
    assert dis.factor_vae_argmins(batch, np.array([0.0, 1.0, 101.0, 1.0])).tolist() == [2]
    assert dis.factor_vae_argmins(batch, np.full(4, 1e-4)).tolist() == [-1]
    votes = dis.factor_vae_votes(np.array([1, 0, 1, 1]), np.array([2, -1, 2, 0]), n_factors=2, n_dims=3)
    assert votes.tolist() == [[0, 0, 0], [1, 0, 2]]


def test_beta_vae_features_and_a_separable_classifier():
    a = np.array([[[1.0, 2.0], [3.0, 4.0]]])  # (P = 1, B = 2, L = 2)
    b = np.array([[[2.0, 2.0], [1.0, 8.0]]])
    np.testing.assert_allclose(dis.beta_vae_features(a, b), [[1.5, 2.0]])
    features = np.repeat(np.eye(3), 20, axis=0) + 0.01 * np.random.default_rng(0).normal(size=(60, 3))
    labels = np.repeat([0, 1, 2], 20)
    assert dis.beta_vae(features, labels, features, labels)["eval_accuracy"] == 1.0


# --- known answers on dSprites' factor grid (DISENTANGLEMENT.md) ----------------------------------------------------


def test_perfect_code_gives_the_known_answers(perfect_scores):
    s = perfect_scores
    assert s["beta_vae"] == 1.0 and s["factor_vae"] == 1.0
    assert s["mig"] == pytest.approx(0.90, abs=0.01)  # 10,000 points: below 1 because 20 bins merge classes
    assert s["dci_disentanglement"] > 0.98 and s["dci_completeness"] > 0.98  # small tree importances on noise dims
    assert s["dci_informativeness"] > 0.99
    assert s["sap"] == pytest.approx(0.23, abs=0.01)  # accuracy gaps on 5,000 test points: sd about 0.005
    assert set(s) == set(dis.DESCRIPTIONS) and all(type(v) is float for v in s.values())


def test_mig_per_factor_of_the_perfect_code():
    factors = sampling.sample_factors(DSPRITES, 10_000, np.random.default_rng(0))
    result = dis.mig(perfect(factors), factors)
    per_factor, info = result["per_factor"], result["mutual_info"]  # (K,), (L, K) nats
    np.testing.assert_allclose(per_factor, [1.0, 1.0, 0.80, 0.84, 0.84], atol=0.01)
    # Orientation: 40 classes in 20 bins of 2 each, so I = ln 20 of H = ln 40 nats (up to sampling), and the runner-up
    # is a noise dim whose plug-in MI is the estimator's bias, about (20 - 1)(40 - 1) / 2N = 0.037 nats.
    assert info[2, 2] == pytest.approx(math.log(20), abs=0.005)
    assert info[5:, 2].max() == pytest.approx(19 * 39 / 20_000, rel=0.3)
    assert per_factor[2] == pytest.approx((info[2, 2] - info[5:, 2].max()) / math.log(40), abs=0.002)


def test_random_code_gives_chance(random_scores):
    s = random_scores
    assert s["beta_vae"] == pytest.approx(0.2, abs=0.05) and s["factor_vae"] == pytest.approx(0.2, abs=0.05)
    assert s["mig"] < 0.01 and s["sap"] < 0.02
    assert s["dci_disentanglement"] < 0.1 and s["dci_completeness"] < 0.1
    chance = np.mean([1 / n for n in DSPRITES])  # 0.118
    assert s["dci_informativeness"] == pytest.approx(chance, abs=0.03)


def test_constant_code_gives_factor_vae_zero():
    tiny = dict(
        beta_vae_train=50,
        beta_vae_eval=50,
        factor_vae_variance=500,
        factor_vae_train=50,
        factor_vae_eval=50,
        mig=500,
        dci_train=500,
        dci_test=100,
        sap_train=500,
        sap_test=100,
    )  # only FactorVAE is checked
    scores = dis.evaluate(lambda f: np.zeros((len(f), 10)), DSPRITES, **tiny)
    assert scores["factor_vae"] == 0.0 and scores["factor_vae_train"] == 0.0


def test_duplicated_latents_drive_mig_to_zero():
    factors = sampling.sample_factors(DSPRITES, 10_000, np.random.default_rng(0))
    assert dis.mig(np.repeat(factors, 2, axis=1).astype(float), factors)["mig"] < 0.01


def test_mixing_two_factors_lowers_mig_and_dci_disentanglement():
    """Rotating posX and posY by 45 degrees spreads each over two dims: their MIG drops, DCI D falls below perfect."""
    rng = np.random.default_rng(0)
    rotation = np.array([[1.0, 1.0], [1.0, -1.0]]) / math.sqrt(2)

    def entangled(f):
        z = perfect(f)
        z[:, 3:5] = z[:, 3:5] @ rotation
        return z

    points = sampling.sample_factors(DSPRITES, 10_000, rng)
    per_factor = dis.mig(entangled(points), points)["per_factor"]
    assert per_factor[:3] == pytest.approx([1.0, 1.0, 0.80], abs=0.02) and (per_factor[3:] < 0.3).all()
    # DCI, on a smaller grid for speed: each position leans half on each rotated dim, so 3 of the 5 factors' worth of
    # importance is pure and 2 are split evenly: D = 3/5 + 2/5 (1 - ln 2 / ln 5), C = 3/5 + 2/5 (1 - ln 2 / ln 10).
    small = (3, 6, 4, 8, 8)
    train, test = sampling.sample_factors(small, 2000, rng), sampling.sample_factors(small, 1000, rng)
    result = dis.dci(entangled(train), train, entangled(test), test)
    np.testing.assert_allclose(result["importances"][3:5, 3:5], 0.5, atol=0.1)
    assert result["disentanglement"] == pytest.approx(0.6 + 0.4 * (1 - math.log(2) / math.log(5)), abs=0.02)
    assert result["completeness"] == pytest.approx(0.6 + 0.4 * (1 - math.log(2) / math.log(10)), abs=0.03)


def test_unknown_sample_count_and_dci_model_are_refused():
    with pytest.raises(TypeError):
        dis.evaluate(perfect, DSPRITES, mig_points=10)
    factors = np.zeros((4, 2), int)
    with pytest.raises(ValueError, match="hist"):
        dis.dci(np.zeros((4, 2)), factors, np.zeros((4, 2)), factors, model="xgboost")
