"""Two stochastic layers (Burda et al. 2016, "Importance Weighted Autoencoders", Sec. 5 and App. C: 784-100-50)
as a prior and a posterior over z = (z1, z2), so that the one `models.VAE`, every loss and the IWAE bound take them
unchanged: the decoder reads z1 only (`VAE.decode` keeps the first `latent_dim` entries).

    q(z1, z2 | x) = N(z1; mu(x), sigma(x)²) N(z2; mu_q(z1), sigma_q(z1)²)        (TwoLayerPosterior)
    p(z1, z2)     = N(z2; 0, I) N(z1; mu_p(z2), sigma_p(z2)²)                     (TwoLayerPrior)

Each conditional is a tanh MLP (Burda et al.: two layers of 100 units) to a mean and a log-variance. The rate
E_q[log q(z1, z2 | x) - log p(z1, z2)] has no closed form: a Monte Carlo estimate, like every pair but the default.
`model=mlp2` selects both (with the encoder and decoder of 200-200 tanh units); `layers = 2` marks them, and a
one-layer prior or posterior beside a two-layer one is refused (`families.check_family`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from vae_sweep.families import LOG_2PI, gaussian_draws, log_normal


class GaussianLayer(nn.Module):
    """A conditional Gaussian: z_in (..., L_in) -> mu, logvar (..., L_out), through tanh layers of `hidden` units."""

    def __init__(self, l_in: int, l_out: int, hidden: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for a, b in zip([l_in, *hidden[:-1]], hidden):
            layers += [nn.Linear(a, b), nn.Tanh()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(hidden[-1] if hidden else l_in, 2 * l_out)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.head(self.body(z)).chunk(2, dim=-1)
        return mu, logvar


class TwoLayerPosterior(nn.Module):
    """q(z1|x) from the encoder, then q(z2|z1): z = (z1, z2) of latent_dim + top_dim entries."""

    gaussian = False
    layers = 2

    def __init__(self, latent_dim: int, top_dim: int = 50, hidden: Sequence[int] = (100, 100)) -> None:
        super().__init__()
        self.up = GaussianLayer(latent_dim, top_dim, list(hidden))

    def forward(self, mu: torch.Tensor, logvar: torch.Tensor, n: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        z1, log_q1 = gaussian_draws(mu, logvar, n)  # (n, B, L1), (n, B)
        z2, log_q2 = gaussian_draws(*self.up(z1), 1)  # (1, n, B, L2), (1, n, B)
        return torch.cat([z1, z2[0]], dim=-1), log_q1 + log_q2[0]  # (n, B, L1 + L2), (n, B)


class TwoLayerPrior(nn.Module):
    """p(z2) = N(0, I), then p(z1|z2): log p(z) for z = (z1, z2) of latent_dim + top_dim entries. Built for the
    dataset's image shape like every prior, which it does not need."""

    standard = False
    layers = 2

    def __init__(
        self,
        latent_dim: int,
        top_dim: int = 50,
        hidden: Sequence[int] = (100, 100),
        input_shape: tuple[int, int, int] | None = None,
    ) -> None:
        super().__init__()
        self.latent_dim, self.top_dim = latent_dim, top_dim
        self.down = GaussianLayer(top_dim, latent_dim, list(hidden))

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        z1, z2 = z.split([self.latent_dim, self.top_dim], dim=-1)  # (..., L1), (..., L2)
        return -0.5 * (z2.pow(2) + LOG_2PI).sum(-1) + log_normal(z1, *self.down(z2))  # (...,)

    def sample(self, n: int, latent_dim: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """z = (z1, z2) ~ p: (n, L1 + L2) on the CPU; `latent_dim` is the decoder's, L1."""
        z2 = torch.randn(n, self.top_dim, generator=generator)
        device = self.down.head.weight.device
        with torch.no_grad():
            mu, logvar = (t.cpu() for t in self.down(z2.to(device)))
        z1 = mu + (0.5 * logvar).exp() * torch.randn(n, self.latent_dim, generator=generator)
        return torch.cat([z1, z2], dim=-1)
