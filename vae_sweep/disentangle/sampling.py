"""How each disentanglement metric samples factor classes from a dataset's factor grid, and how they get encoded.

A factor grid is given by `factor_sizes`, e.g. (3, 6, 40, 32, 32) for dSprites' shape, scale, orientation, posX and
posY (its constant color left out). Factor vectors are class indices, each factor drawn independently and uniformly,
as disentanglement_lib's `sample_factors` does. Every sampler takes a seeded `np.random.Generator`, so a seed gives the
same arrangement on every machine; the draws come in a different order from disentanglement_lib's, so its numbers are
matched in distribution, not digit for digit.

`represent(factors (N, K) int) -> codes (N, L) float` is the caller's: encode the images at those factor classes and
return the posterior means. `encode` and `encode_in_chunks` call it on bounded slices so that the β-VAE score's
10,000 × 2 × 64 factor vectors never sit in memory as codes all at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

Represent = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class SampleCounts:
    """How many points each metric samples; the defaults are disentanglement_lib's."""

    batch_size: int = 64  # factor vectors per β-VAE / FactorVAE point
    beta_vae_train: int = 10_000
    beta_vae_eval: int = 5_000
    factor_vae_variance: int = 10_000  # codes for each dim's global variance
    factor_vae_train: int = 10_000
    factor_vae_eval: int = 5_000
    mig: int = 10_000
    dci_train: int = 10_000
    dci_test: int = 5_000
    sap_train: int = 10_000
    sap_test: int = 5_000


def factor_sizes_array(factor_sizes: Sequence[int]) -> np.ndarray:
    """`factor_sizes` as an int array, refusing a constant factor (size 1): its entropy is 0 and MIG divides by it."""
    sizes = np.asarray(factor_sizes, dtype=np.int64)
    if sizes.ndim != 1 or sizes.size == 0 or (sizes < 2).any():
        raise ValueError(
            f"factor_sizes={tuple(factor_sizes)}: every factor needs at least 2 classes "
            "(leave constant factors such as dSprites' color out)"
        )
    return sizes


def sample_factors(factor_sizes: Sequence[int], n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` factor vectors, each factor uniform over its classes, independently: (n, K) int64."""
    sizes = factor_sizes_array(factor_sizes)
    return rng.integers(0, sizes, size=(n, sizes.size))


def beta_vae_batches(
    factor_sizes: Sequence[int], n_points: int, rng: np.random.Generator, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The β-VAE score's points (Higgins et al. 2017): for each point a factor k, uniform over the K factors, and two
    batches of `batch_size` factor vectors where the second copies factor k from the first, pair by pair.

    Returns factors_a (P, B, K), factors_b (P, B, K) and labels k (P,), with P = n_points and B = batch_size.
    """
    k = rng.integers(len(factor_sizes), size=n_points)  # (P,)
    a = sample_factors(factor_sizes, n_points * batch_size, rng).reshape(n_points, batch_size, -1)
    b = sample_factors(factor_sizes, n_points * batch_size, rng).reshape(n_points, batch_size, -1)
    points = np.arange(n_points)
    b[points, :, k] = a[points, :, k]  # (P, B): pair j of point p shares factor k[p]
    return a, b, k


def factor_vae_batches(
    factor_sizes: Sequence[int], n_points: int, rng: np.random.Generator, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """The FactorVAE score's points (Kim & Mnih 2018): for each point a factor k, uniform over the K factors, and a
    batch of `batch_size` factor vectors with factor k fixed at the value the batch's first vector drew.

    Returns factors (P, B, K) and labels k (P,).
    """
    k = rng.integers(len(factor_sizes), size=n_points)  # (P,)
    factors = sample_factors(factor_sizes, n_points * batch_size, rng).reshape(n_points, batch_size, -1)
    points = np.arange(n_points)
    factors[points, :, k] = factors[points, 0, k][:, None]
    return factors, k


def encode(represent: Represent, factors: np.ndarray, max_rows: int = 65_536) -> np.ndarray:
    """Codes of factor classes of any leading shape: (..., K) int -> (..., L) float64, `max_rows` vectors a call."""
    flat = factors.reshape(-1, factors.shape[-1])
    codes = [np.asarray(represent(flat[i : i + max_rows]), dtype=np.float64) for i in range(0, len(flat), max_rows)]
    codes = np.concatenate(codes)
    if codes.ndim != 2 or len(codes) != len(flat):
        raise ValueError(
            f"represent returned codes of shape {codes.shape} for {len(flat)} factor vectors; expected (N, L)"
        )
    return codes.reshape(*factors.shape[:-1], codes.shape[-1])


def encode_in_chunks(
    represent: Represent, batches: Sequence[np.ndarray], reduce: Callable[..., np.ndarray], points_per_chunk: int = 1024
) -> np.ndarray:
    """`reduce(*codes)` over chunks of points: each array in `batches` is (P, B, K) factor classes, encoded a chunk
    of points at a time into (p, B, L) codes, and `reduce` turns them into one row (or value) per point."""
    n_points = len(batches[0])
    parts = [
        reduce(*(encode(represent, b[i : i + points_per_chunk]) for b in batches))
        for i in range(0, n_points, points_per_chunk)
    ]
    return np.concatenate(parts)


def independent_codes(
    represent: Represent, factor_sizes: Sequence[int], n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """MIG's, DCI's and SAP's points: `n` independent uniform factor vectors (n, K) and their codes (n, L)."""
    factors = sample_factors(factor_sizes, n, rng)
    return encode(represent, factors), factors
