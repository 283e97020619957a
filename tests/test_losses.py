"""The loss math, in nats: KL, the Bernoulli and Gaussian terms, the objectives, IWAE and active units."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence

from vae_sweep.evaluate import active_units, iwae_nll, validation_terms
from vae_sweep.losses import AutoencoderLoss, Bernoulli, BetaVAELoss, CapacityLoss, Gaussian, kl_per_dim, rate
from vae_sweep.models import mlp_vae


def test_kl_is_zero_for_the_prior():
    mu, logvar = torch.zeros(4, 8), torch.zeros(4, 8)
    assert torch.equal(rate(mu, logvar), torch.zeros(4))


def test_kl_matches_torch_distributions_and_monte_carlo():
    torch.manual_seed(0)
    mu, logvar = torch.randn(3, 5), torch.randn(3, 5)
    q, p = Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)
    torch.testing.assert_close(kl_per_dim(mu, logvar), kl_divergence(q, p))
    z = q.sample((200_000,))  # (S, 3, 5)
    mc = (q.log_prob(z) - p.log_prob(z)).sum(-1).mean(0)  # (3,)
    torch.testing.assert_close(rate(mu, logvar), mc, rtol=0.02, atol=0.02)


def test_bernoulli_distortion_is_torch_bce_summed_per_example():
    torch.manual_seed(0)
    logits, x = torch.randn(6, 1, 28, 28), torch.rand(6, 1, 28, 28)
    expected = torch.stack([F.binary_cross_entropy(torch.sigmoid(l), xi, reduction="sum") for l, xi in zip(logits, x)])
    torch.testing.assert_close(Bernoulli().distortion(logits, x), expected, rtol=1e-4, atol=1e-3)


def test_untrained_bernoulli_distortion_is_784_ln2():
    """Logits of 0 put p = 1/2 on every pixel: -log p(x|z) = 784 ln 2 = 543.4 nats for any 28x28 image."""
    d = Bernoulli().distortion(torch.zeros(2, 1, 28, 28), torch.rand(2, 1, 28, 28))
    torch.testing.assert_close(d, torch.full((2,), 784 * math.log(2)))


def test_gaussian_distortion_matches_normal_log_prob():
    torch.manual_seed(0)
    logits, x = torch.randn(4, 3, 8, 8), torch.rand(4, 3, 8, 8)
    expected = -Normal(torch.sigmoid(logits), 0.2).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(Gaussian(sigma=0.2).distortion(logits, x), expected)


def test_beta_scales_only_the_rate():
    d, r = torch.tensor([100.0, 120.0]), torch.tensor([10.0, 30.0])
    low, high = BetaVAELoss(beta=0.5)(d, r, step=0), BetaVAELoss(beta=4.0)(d, r, step=0)
    assert low["distortion"] == high["distortion"] == 110.0 and low["rate"] == high["rate"] == 20.0
    assert high["loss"] - low["loss"] == pytest.approx((4.0 - 0.5) * 20.0)
    assert BetaVAELoss(beta=1.0)(d, r, 0)["loss"] == pytest.approx(130.0)  # the negative ELBO


def test_kl_warmup_ramps_the_rate_weight():
    loss = BetaVAELoss(beta=2.0, warmup_steps=100)
    d, r = torch.tensor([50.0]), torch.tensor([10.0])
    assert [loss(d, r, s)["loss"].item() for s in (0, 50, 100, 1000)] == pytest.approx([50.0, 60.0, 70.0, 70.0])


def test_capacity_schedule_and_loss():
    loss = CapacityLoss(gamma=10.0, c_max=20.0, c_steps=100)
    assert [loss.capacity(s) for s in (0, 25, 100, 500)] == pytest.approx([0.0, 5.0, 20.0, 20.0])
    d, r = torch.tensor([100.0]), torch.tensor([8.0])
    assert loss(d, r, 25)["loss"].item() == pytest.approx(100.0 + 10.0 * abs(8.0 - 5.0))
    assert loss(d, r, 100)["loss"].item() == pytest.approx(100.0 + 10.0 * abs(8.0 - 20.0))


def test_autoencoder_loss_is_distortion_only_and_deterministic():
    loss = AutoencoderLoss()
    out = loss(torch.tensor([7.0, 9.0]), torch.tensor([1e6, 1e6]), 0)
    assert out["loss"].item() == 8.0 and "rate" not in out and loss.stochastic is False


def test_iwae_bound_tightens_with_k_and_k1_is_the_neg_elbo():
    torch.manual_seed(0)
    model = mlp_vae((1, 8, 8), latent_dim=4, hidden=(32,))
    x = (torch.rand(64, 1, 8, 8) > 0.5).float()
    torch.manual_seed(1)
    elbo = torch.tensor(
        [validation_terms(model, Bernoulli(), x, stochastic=True)["neg_elbo"] for _ in range(50)]
    ).mean()
    k1 = torch.tensor([iwae_nll(model, Bernoulli(), x, k=1) for _ in range(50)]).mean()
    k64 = iwae_nll(model, Bernoulli(), x, k=64)
    assert k1.item() == pytest.approx(elbo.item(), rel=0.01)  # both estimate E_q[-log p(x,z) + log q(z|x)]
    assert k64 < k1.item()


def test_active_units_counts_dims_whose_mean_varies():
    torch.manual_seed(0)
    mu = torch.cat([torch.randn(1000, 3), 0.01 * torch.randn(1000, 2)], dim=1)  # variances ~1 and ~1e-4
    assert active_units(mu) == 3
