"""Distortion, rate, and the objectives built from them.

Units (the convention every part of vae_sweep shares):
- distortion D = -log p(x|z), summed over all pixels of one example: nats per example.
- rate R = KL(q(z|x) || N(0, I)), summed over latent dimensions: nats per example.
- Objectives average over the batch. neg_elbo = D + R.

One model, many losses: each objective below differs only in how it weighs D and R. Each returns a dict
of named scalar terms, so every term gets logged without extra code. `loss` is the one to minimise.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

# --- the contracts: what training and evaluation ask of a likelihood and a loss ----------------------------


class Likelihood(Protocol):
    """p(x|z): the distortion term."""

    def distortion(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log p(x|z) in nats, summed over pixels: logits, x (B, C, H, W) -> (B,)."""
        ...


class Loss(Protocol):
    """An objective built from the shared terms. `stochastic`: the model samples z and the loss has a rate (False:
    z = mu, no rate, as loss=ae). Called once per optimiser step; returns scalar batch means by name, `loss` the one
    minimised, so that every term is logged. A loss with a `samples` attribute above 1 (loss=iwae) gets its
    distortion and rate per draw, (samples, B), from that many draws z ~ q(z|x)."""

    stochastic: bool

    def __call__(self, distortion: torch.Tensor, rate: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        """distortion, rate: (B,) in nats; step: optimiser steps taken so far."""
        ...


@runtime_checkable
class BetaConditionedLoss(Protocol):
    """A loss that trains one model for a range of β (loss=multirate): it wraps the model so that it hears each
    example's β, draws those βs per step, and weighs each example's rate by its own β."""

    stochastic: bool

    def condition(self, model: nn.Module) -> nn.Module:
        """`model` wrapped to take `beta=(B,)` in forward, with `set_beta(b)` for evaluation at one β."""
        ...

    def sample_beta(self, batch_size: int, device: torch.device | str | None = None) -> torch.Tensor:
        """(B,) βs for one training step."""
        ...

    def __call__(
        self, distortion: torch.Tensor, rate: torch.Tensor, step: int, beta: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]: ...


# --- likelihoods p(x|z): the distortion term --------------------------------------------------------------


class Bernoulli:
    """p(x|z) = prod_i Bernoulli(x_i; sigmoid(logit_i)), for images in [0, 1]."""

    def distortion(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log p(x|z) in nats, summed over pixels: (B, C, H, W) -> (B,). Grey levels in (0, 1) are used as
        soft targets (the continuous-Bernoulli normaliser is not included, as in most VAE papers)."""
        return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


class Gaussian:
    """p(x|z) = N(x; sigmoid(logits), sigma^2 I) with a fixed sigma (in the units of pixel values in [0, 1])."""

    def __init__(self, sigma: float = 0.1) -> None:
        self.sigma = sigma

    def distortion(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log N(x; mean, sigma^2) in nats, summed over pixels: (B, C, H, W) -> (B,)."""
        mean = torch.sigmoid(logits)
        nll = 0.5 * ((x - mean) / self.sigma) ** 2 + math.log(self.sigma) + 0.5 * math.log(2 * math.pi)
        return nll.flatten(1).sum(1)


# --- the rate term ----------------------------------------------------------------------------------------


def kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) for each latent dimension, in nats: (B, L) -> (B, L).

    Closed form from Kingma & Welling 2014, Appendix B: -1/2 (1 + log sigma^2 - mu^2 - sigma^2).
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def rate(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) in nats, summed over latent dimensions: (B, L) -> (B,)."""
    return kl_per_dim(mu, logvar).sum(1)


class Terms(NamedTuple):
    """The shared terms of one batch: distortion and rate in nats, (B,) or (samples, B); the first draw's logits
    (B, C, H, W); and the encoder's mu, logvar (B, L)."""

    distortion: torch.Tensor
    rate: torch.Tensor
    logits: torch.Tensor
    mu: torch.Tensor
    logvar: torch.Tensor


def distortion_and_rate(
    model, likelihood: Likelihood, x: torch.Tensor, sample: bool = True, samples: int = 1, **cond
) -> Terms:
    """The shared terms of every objective, for a `models.VAE` and images x (B, C, H, W). The rate is E_q[log q(z|x) - log p(z)]:
    - a Gaussian posterior with the standard prior (`model.closed_form_rate`), one draw: the closed-form KL
      (`rate`), with z from `model.forward` (today's path, draw for draw);
    - otherwise a Monte Carlo estimate, log q(z|x) - log p(z) at the same draws z as the distortion (one each).
    `sample=False` (loss=ae): z = mu, and the rate is the closed-form KL of the Gaussian, which that loss ignores.
    `cond`: a conditioned model's beta (loss=multirate; the closed-form pair only).
    """
    if not sample or (samples == 1 and model.closed_form_rate):
        logits, mu, logvar = model(x, sample=sample, **cond)
        return Terms(likelihood.distortion(logits, x), rate(mu, logvar), logits, mu, logvar)
    mu, logvar = model.encode(x)  # (B, L) each
    z, log_q = model.draw(mu, logvar, samples)  # (S, B, L), (S, B)
    log_p = model.prior.log_prob(z)  # (S, B)
    logits = model.decode(z.flatten(0, 1))  # (S * B, C, H, W)
    distortion = likelihood.distortion(logits, x.repeat(samples, 1, 1, 1)).view(samples, -1)  # (S, B)
    rates = log_q - log_p  # (S, B)
    if samples == 1:
        return Terms(distortion[0], rates[0], logits, mu, logvar)
    return Terms(distortion, rates, logits[: len(x)], mu, logvar)


def linear_ramp(step: int, steps: int) -> float:
    """0 -> 1 linearly over `steps` optimiser steps; 1 from then on (and always 1 when steps == 0)."""
    return 1.0 if steps <= 0 else min(1.0, step / steps)


# --- objectives -------------------------------------------------------------------------------------------


class BetaVAELoss:
    """loss = D + beta * w(t) * R.  beta = 1 is the negative ELBO; beta > 1 is the beta-VAE of
    Higgins et al. 2017 ("beta-VAE: Learning Basic Visual Concepts with a Constrained Variational Framework").
    w(t) is an optional KL warm-up: a linear ramp from 0 to 1 over `warmup_steps` (Bowman et al. 2016)."""

    stochastic = True  # the model samples z

    def __init__(self, beta: float = 1.0, warmup_steps: int = 0) -> None:
        self.beta, self.warmup_steps = beta, warmup_steps

    def __call__(self, distortion: torch.Tensor, rate: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        """distortion, rate: (B,) in nats. Returns batch means and the loss (a scalar)."""
        d, r = distortion.mean(), rate.mean()
        weight = self.beta * linear_ramp(step, self.warmup_steps)
        return {"loss": d + weight * r, "distortion": d, "rate": r, "kl_weight": torch.tensor(weight)}


class CapacityLoss:
    """loss = D + gamma * w(t) * |R - C(t)|, with the capacity C(t) rising linearly from 0 to `c_max` nats
    over `c_steps` optimiser steps (Burgess et al. 2018, "Understanding disentangling in beta-VAE", Sec. 5)."""

    stochastic = True

    def __init__(self, gamma: float = 1000.0, c_max: float = 25.0, c_steps: int = 10000, warmup_steps: int = 0) -> None:
        self.gamma, self.c_max, self.c_steps, self.warmup_steps = gamma, c_max, c_steps, warmup_steps

    def capacity(self, step: int) -> float:
        """C(t) in nats."""
        return self.c_max * linear_ramp(step, self.c_steps)

    def __call__(self, distortion: torch.Tensor, rate: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        d, r = distortion.mean(), rate.mean()
        c = self.capacity(step)
        weight = self.gamma * linear_ramp(step, self.warmup_steps)
        return {
            "loss": d + weight * (r - c).abs(),
            "distortion": d,
            "rate": r,
            "capacity": torch.tensor(c),
            "kl_weight": torch.tensor(weight),
        }


class AutoencoderLoss:
    """loss = D with z = mu: a plain deterministic autoencoder, the baseline with no sampling and no KL."""

    stochastic = False

    def __call__(self, distortion: torch.Tensor, rate: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        d = distortion.mean()
        return {"loss": d, "distortion": d}


class MultiRateLoss:
    """One model for every β in [beta_min, beta_max]: loss = mean_i (D_i + β_i w(t) R_i), with β_i drawn per
    example log-uniformly over the range (Bae et al. 2023, "Multi-Rate VAE", Eq. 9; Dosovitskiy & Djolonga 2020,
    "You Only Train Once", Sec. 3). The model must hear each example's β: `condition(model)` wraps it in a
    `conditioning.ConditionedVAE`, and each training step does

        beta = loss.sample_beta(len(x), x.device)            # (B,)
        logits, mu, logvar = model(x, sample=True, beta=beta)
        terms = loss(distortion, rate, step, beta=beta)

    At equal β_i = b the loss is `BetaVAELoss(b)`'s. Without `beta` (validation) it uses β = 1: the neg. ELBO.
    """

    stochastic = True

    def __init__(
        self, beta_min: float = 0.01, beta_max: float = 10.0, conditioning: str = "film", warmup_steps: int = 0
    ) -> None:
        self.beta_min, self.beta_max, self.conditioning = beta_min, beta_max, conditioning
        self.warmup_steps = warmup_steps

    def sample_beta(
        self, batch_size: int, device: torch.device | str | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """(B,) values with log β ~ U[log beta_min, log beta_max], from the global RNG unless `generator`."""
        lo, hi = math.log(self.beta_min), math.log(self.beta_max)
        u = torch.rand(batch_size, device=device, generator=generator)  # (B,) in [0, 1)
        return torch.exp(lo + (hi - lo) * u)

    def condition(self, model):
        """`model` (a models.VAE) conditioned on β over this loss's range: a conditioning.ConditionedVAE."""
        from vae_sweep.conditioning import ConditionedVAE

        return ConditionedVAE(model, self.conditioning, self.beta_min, self.beta_max)

    def __call__(
        self, distortion: torch.Tensor, rate: torch.Tensor, step: int, beta: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """distortion, rate, beta: (B,) in nats, nats, and per-example weights. Returns batch means and the loss."""
        weight = linear_ramp(step, self.warmup_steps)
        beta = torch.ones_like(rate) if beta is None else beta
        loss = (distortion + weight * beta * rate).mean()
        return {"loss": loss, "distortion": distortion.mean(), "rate": rate.mean(), "kl_weight": torch.tensor(weight)}


class IWAELoss:
    """loss = -L_k, the importance-weighted bound with k draws z_i ~ q(z|x) (Burda et al. 2016, "Importance
    Weighted Autoencoders", Eq. 8):

        L_k = E[log 1/k sum_i w_i],   log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x) = -(D_i + w(t) R_i),

    with D_i, R_i the distortion and the single-draw rate of draw i (nats). k = 1 is the negative ELBO. w(t) is the
    optional KL warm-up. Logged `distortion` and `rate` are the means over draws and examples (unweighted).
    """

    stochastic = True

    def __init__(self, k: int = 5, warmup_steps: int = 0) -> None:
        self.samples, self.warmup_steps = k, warmup_steps

    def __call__(self, distortion: torch.Tensor, rate: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        """distortion, rate: (k, B) in nats (or (B,) when k = 1)."""
        weight = linear_ramp(step, self.warmup_steps)
        log_w = -(distortion + weight * rate).view(self.samples, -1)  # (k, B)
        bound = torch.logsumexp(log_w, dim=0) - math.log(self.samples)  # (B,)
        return {
            "loss": -bound.mean(),
            "distortion": distortion.mean(),
            "rate": rate.mean(),
            "kl_weight": torch.tensor(weight),
        }
