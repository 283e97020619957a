"""traversals_factors.png: the traversals of `traversals.png`, each row labelled with the factor its dim captures.

A dim's factor is the one it shares most of its entropy with, by MIG's mutual information matrix
(`disentanglement.mig(...)['mutual_info']`, (L, K) in nats, over each factor's entropy (K,) in nats); a dim that holds
under MIN_SHARE of every factor's entropy is labelled `no factor`. Each label also gives the dim's KL in nats per
example, the same numbers as metrics.json's `kl_per_dim`. Rows are the dims of `pictures.traversal_dims`: largest KL
first, at most MAX_TRAVERSAL_ROWS, from the first validation image's posterior mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vae_sweep.evaluate import eval_mode
from vae_sweep.models import VAE
from vae_sweep.pictures import traversal_dims, traversal_images

MIN_SHARE = 0.05  # a dim with I(z_d; v_k) < 5% of H(v_k) for every factor k captures none


def dominant_factors(mutual_info: np.ndarray, factor_entropy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each latent dim, the factor k maximising I(z_d; v_k) / H(v_k), and that share. mutual_info (L, K) and
    factor_entropy (K,) in nats. Returns (L,) int factor indices and (L,) float shares in [0, 1]."""
    share = np.asarray(mutual_info, dtype=float) / np.maximum(np.asarray(factor_entropy, dtype=float), 1e-12)
    best = share.argmax(axis=1)
    return best, share[np.arange(len(share)), best]


def traversal_labels(
    mutual_info: np.ndarray,
    factor_entropy: np.ndarray,
    names: Sequence[str],
    dims: Sequence[int],
    kl_per_dim: Sequence[float] | None = None,
) -> list[str]:
    """One label per traversed dim: `z3: posX (84% of H)` and, given kl_per_dim (L,) in nats, `KL 2.31 nats`."""
    best, share = dominant_factors(mutual_info, factor_entropy)
    labels = []
    for d in dims:
        factor = f"{names[best[d]]} ({share[d]:.0%} of H)" if share[d] >= MIN_SHARE else "no factor"
        kl = f"\nKL {kl_per_dim[d]:.2f} nats" if kl_per_dim is not None else ""
        labels.append(f"z{d}: {factor}{kl}")
    return labels


def save_factor_traversals(
    model: VAE,
    x0: torch.Tensor,
    mutual_info: np.ndarray,
    factor_entropy: np.ndarray,
    names: Sequence[str],
    path: Path,
    kl_per_dim: Sequence[float] | None = None,
    n: int = 8,
) -> Path:
    """Write the labelled traversals of x0 (1, C, H, W) float in [0, 1] to `path`: one row of n images per dim."""
    from matplotlib.figure import Figure

    dims = traversal_dims(model.latent_dim, kl_per_dim)
    with eval_mode(model):
        mu0 = model.encode(x0)[0][0]  # (L,)
        images = traversal_images(model, mu0, dims, n).float().cpu()  # (D * n, C, H, W)
    strips = images.view(len(dims), n, *images.shape[1:]).permute(0, 3, 1, 4, 2)  # (D, H, n, W, C)
    labels = traversal_labels(mutual_info, factor_entropy, names, dims, kl_per_dim)
    fig = Figure(figsize=(1.0 * n + 2.2, 1.05 * len(dims) + 0.5), layout="constrained")
    axes = fig.subplots(len(dims), 1, squeeze=False)[:, 0]
    for ax, strip, label in zip(axes, strips, labels):
        h, _, w, c = strip.shape  # (H, n, W, C)
        ax.imshow(strip.reshape(h, n * w, c).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(
        "Traversals from -3 to +3 of each latent dim: the factor it captures (MIG's mutual information)", fontsize=9
    )
    fig.savefig(path, dpi=100)
    return path
