"""Validation metrics in stated units: distortion, rate, neg_elbo, MSE, the IWAE bound and active units.

All functions run under `torch.inference_mode()` and put the model in eval mode for their duration.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from vae_sweep.data import as_float
from vae_sweep.losses import kl_per_dim
from vae_sweep.models import VAE

ACTIVE_UNIT_THRESHOLD = 0.01  # Cov_x(E_q[z_i]) above this counts as active (Burda et al. 2016, Sec. 5.2)


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode and inference mode for the block; afterwards every submodule is back in the train/eval mode
    it had (not merely the top module's: a caller may have frozen part of the model in eval mode)."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        for m, training in modes.items():
            m.train(training)


def _batches(x: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    for i in range(0, len(x), batch_size):
        yield as_float(x[i : i + batch_size])


def validation_terms(model: VAE, likelihood, x: torch.Tensor, stochastic: bool, batch_size: int = 500) -> dict:
    """Mean over the examples of x (N, C, H, W):
    distortion_nats, rate_nats and neg_elbo_nats per example; mse_per_pixel; kl_per_dim_nats (list of L);
    and the posterior means mu (N, L) for active units and plots.

    Distortion is a one-sample estimate with z ~ q(z|x), as in training (the decoded posterior mean when the
    model is a deterministic autoencoder, `stochastic=False`).
    """
    sums = {"distortion": 0.0, "rate": 0.0, "mse": 0.0}
    kl_dims, mus = 0.0, []
    with eval_mode(model):
        for xb in _batches(x, batch_size):
            logits, mu, logvar = model(xb, sample=stochastic)
            kl = kl_per_dim(mu, logvar)  # (B, L)
            sums["distortion"] += likelihood.distortion(logits, xb).sum().item()
            sums["rate"] += kl.sum().item()
            sums["mse"] += (torch.sigmoid(logits) - xb).pow(2).flatten(1).mean(1).sum().item()
            kl_dims = kl_dims + kl.sum(0)
            mus.append(mu)
    n = len(x)
    terms = {k: v / n for k, v in sums.items()}
    return {
        "distortion": terms["distortion"],
        "rate": terms["rate"],
        "neg_elbo": terms["distortion"] + terms["rate"],
        "mse": terms["mse"],
        "kl_per_dim": (kl_dims / n).tolist(),
        "mu": torch.cat(mus),
    }


def active_units(mu: torch.Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """Number of latent dims whose posterior mean varies across examples: Var_x(E_q[z_i]) > threshold.
    mu: (N, L) posterior means."""
    return int((mu.var(dim=0, unbiased=True) > threshold).sum().item())


def _log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))) summed over the last dim, in nats."""
    return -0.5 * (logvar + (z - mu).pow(2) / logvar.exp() + math.log(2 * math.pi)).sum(-1)


def iwae_nll(model: VAE, likelihood, x: torch.Tensor, k: int, batch_size: int = 100, chunk: int = 32) -> float:
    """Importance-weighted bound on -log p(x) with k samples, in nats per example (Burda et al. 2016, Eq. 8):

        -log p(x) <= -log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x),   z_i ~ q(z|x).

    k = 1 gives the negative ELBO; the bound tightens as k grows. Samples are drawn in chunks of `chunk`
    to bound memory at (chunk * batch_size) decoded images.
    """
    total = 0.0
    with eval_mode(model):
        for xb in _batches(x, batch_size):
            mu, logvar = model.encode(xb)  # (B, L)
            log_w = []
            for start in range(0, k, chunk):
                s = min(chunk, k - start)
                z = mu + (0.5 * logvar).exp() * torch.randn(s, *mu.shape, device=mu.device)  # (s, B, L)
                logits = model.decode(z.flatten(0, 1))  # (s * B, C, H, W)
                log_px = -likelihood.distortion(logits, xb.repeat(s, 1, 1, 1)).view(s, -1)  # (s, B)
                log_pz = _log_normal(z, torch.zeros_like(z), torch.zeros_like(z))
                log_qz = _log_normal(z, mu, logvar)
                log_w.append(log_px + log_pz - log_qz)
            log_w = torch.cat(log_w)  # (k, B)
            total += -(torch.logsumexp(log_w, 0) - math.log(k)).sum().item()
    return total / len(x)
