"""Validation metrics in stated units: distortion, rate, neg_elbo, MSE, the IWAE bound and active units.

All functions run under `torch.inference_mode()` and put the model in eval mode for their duration. They run in
fp32 whatever `precision` trained the model (autocast covers training steps only; the weights are fp32 either way),
so a metric depends on the weights alone and runs trained at any precision compare in the same units. Evaluating
in bf16 would gain little: it moved a 3-epoch mlp's distortion, rate and IWAE bound by under 0.01 nats per example
(mnist_5k, measured), and evaluation is a small part of a job's time.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from vae_sweep.data import as_float
from vae_sweep.losses import distortion_and_rate, kl_per_dim
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
    distortion_nats, rate_nats and neg_elbo_nats per example; mse_per_pixel; kl_per_dim_nats (list of L, or None
    where the rate does not split by dimension: `per_dim_undefined` says why); and the posterior means mu (N, L)
    for active units and plots.

    Distortion is a one-sample estimate with z ~ q(z|x), as in training (the decoded posterior mean when the
    model is a deterministic autoencoder, `stochastic=False`). The rate is the closed-form KL for a Gaussian
    posterior with the standard prior, else the one-draw Monte Carlo estimate of E_q[log q(z|x) - log p(z)] at the
    distortion's draw (`losses.distortion_and_rate`): the same estimators for every loss.
    """
    sums = {"distortion": 0.0, "rate": 0.0, "mse": 0.0}
    kl_dims, mus = 0.0, []
    closed_form = model.closed_form_rate or not stochastic
    with eval_mode(model):
        for xb in _batches(x, batch_size):
            t = distortion_and_rate(model, likelihood, xb, sample=stochastic)
            sums["distortion"] += t.distortion.sum().item()
            sums["rate"] += t.rate.sum().item()
            sums["mse"] += (torch.sigmoid(t.logits) - xb).pow(2).flatten(1).mean(1).sum().item()
            if closed_form:
                kl_dims = kl_dims + kl_per_dim(t.mu, t.logvar).sum(0)  # (L,)
            mus.append(t.mu)
    n = len(x)
    terms = {k: v / n for k, v in sums.items()}
    return {
        "distortion": terms["distortion"],
        "rate": terms["rate"],
        "neg_elbo": terms["distortion"] + terms["rate"],
        "mse": terms["mse"],
        "kl_per_dim": (kl_dims / n).tolist() if closed_form else None,
        "mu": torch.cat(mus),
    }


def rate_estimator(model: VAE) -> str:
    """metrics.json's `rate_estimator`: how the rate (and neg_elbo) was computed."""
    return "closed_form" if model.closed_form_rate else "monte_carlo (1 sample per example)"


def undefined_per_dim(model: VAE) -> dict[str, str]:
    """What metrics.json says in place of kl_per_dim, active_units and the traversals' order where they are not
    defined: the rate splits by dimension only as a KL between diagonal Gaussians, and under a flow E_q[z] != mu."""
    if model.closed_form_rate:
        return {}
    why = {}
    if not model.prior.standard:
        why["kl_per_dim"] = "not defined: the rate against a prior other than N(0, I) does not split by latent dim"
    if not model.posterior.gaussian:
        why["kl_per_dim"] = "not defined: the rate of a posterior other than a diagonal Gaussian does not split by dim"
        why["active_units"] = "not defined: the posterior mean of z is not the encoder's mu"
    why["traversals"] = "drawn in latent order, not by rate: " + why["kl_per_dim"].removeprefix("not defined: ")
    return why


def active_units(mu: torch.Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """Number of latent dims whose posterior mean varies across examples: Var_x(E_q[z_i]) > threshold.
    mu: (N, L) posterior means."""
    return int((mu.var(dim=0, unbiased=True) > threshold).sum().item())


def iwae_nll(model: VAE, likelihood, x: torch.Tensor, k: int, batch_size: int = 100, max_images: int = 3200) -> float:
    """Importance-weighted bound on -log p(x) with k samples, in nats per example (Burda et al. 2016, Eq. 8):

        -log p(x) <= -log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x),   z_i ~ q(z|x),

    with log p(z) from the model's prior and log q(z|x) from its posterior (a flow's included), so it holds for
    every family. k = 1 gives the negative ELBO in expectation; the bound tightens as k grows. Draws are decoded in
    chunks of at most `max_images` images (chunk * batch), so memory does not grow with k (k = 5,000 works).
    """
    total, chunk = 0.0, max(1, max_images // batch_size)
    with eval_mode(model):
        for xb in _batches(x, batch_size):
            mu, logvar = model.encode(xb)  # (B, L)
            log_w = []
            for start in range(0, k, chunk):
                s = min(chunk, k - start)
                z, log_qz = model.draw(mu, logvar, s)  # (s, B, L), (s, B)
                logits = model.decode(z.flatten(0, 1))  # (s * B, C, H, W)
                log_px = -likelihood.distortion(logits, xb.repeat(s, 1, 1, 1)).view(s, -1)  # (s, B)
                log_w.append(log_px + model.prior.log_prob(z) - log_qz)
            log_w = torch.cat(log_w)  # (k, B)
            total += -(torch.logsumexp(log_w, 0) - math.log(k)).sum().item()
    return total / len(x)
