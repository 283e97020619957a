"""The model family beyond the Gaussian encoder and the standard normal prior: priors p(z) and posteriors q(z|x).

A `models.VAE` holds one of each as a module (`model.prior`, `model.posterior`), chosen by the config groups
`conf/prior/` and `conf/posterior/`. The default pair, `StandardNormal` and `GaussianPosterior`, holds no parameters,
so a model.pt from before these groups existed loads unchanged.

- `Prior.log_prob(z)`: log p(z) in nats, summed over latent dims: (..., L) -> (...).
- `Posterior(mu, logvar, n)`: n draws z ~ q(z|x) and their log q(z|x) in nats: (B, L) -> (n, B, L), (n, B).

The rate is E_q[log q(z|x) - log p(z)] (nats per example). It has a closed form (Kingma & Welling 2014, App. B)
only for a Gaussian posterior with the standard prior (`has_closed_form_kl`); every other pair estimates it by
Monte Carlo with the same draws as the distortion (`losses.distortion_and_rate`).
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from vae_sweep.errors import ConfigError

LOG_2PI = math.log(2 * math.pi)


def log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))) in nats, summed over the last dim; the arguments broadcast: (..., L) -> (...)."""
    return -0.5 * (logvar + (z - mu).pow(2) * torch.exp(-logvar) + LOG_2PI).sum(-1)


# --- the contracts ----------------------------------------------------------------------------------------------


@runtime_checkable
class Prior(Protocol):
    """p(z) over L latent dims. `standard`: it is N(0, I), so the KL from a Gaussian posterior has a closed form."""

    standard: bool

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) in nats, summed over latent dims: (..., L) -> (...)."""
        ...

    def sample(self, n: int, latent_dim: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws z ~ p(z): (n, L), on the CPU when `generator` is a CPU generator."""
        ...


@runtime_checkable
class Posterior(Protocol):
    """q(z|x) built on the encoder's Gaussian N(mu, diag(exp(logvar))). `gaussian`: q is that Gaussian itself."""

    gaussian: bool

    def __call__(self, mu: torch.Tensor, logvar: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """mu, logvar (B, L) -> n reparameterized draws z (n, B, L) and log q(z|x) (n, B) in nats."""
        ...


def has_closed_form_kl(prior: Prior, posterior: Posterior) -> bool:
    """KL(q(z|x) || p(z)) in closed form: a Gaussian posterior against the standard normal prior."""
    return bool(prior.standard and posterior.gaussian)


# --- priors -----------------------------------------------------------------------------------------------------


class StandardNormal(nn.Module):
    """p(z) = N(0, I): `prior=standard`. No parameters. Like every prior it is built for the dataset's image shape
    (C, H, W), which it does not need."""

    standard = True

    def __init__(self, input_shape: tuple[int, int, int] | None = None) -> None:
        super().__init__()

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return -0.5 * (z.pow(2) + LOG_2PI).sum(-1)  # (...,)

    def sample(self, n: int, latent_dim: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(n, latent_dim, generator=generator)


class VampPrior(nn.Module):
    """The VampPrior (Tomczak & Welling 2018, "VAE with a VampPrior", Eq. 9): `prior=vamp`.

        p(z) = 1/K sum_k N(z; mu(u_k), diag(exp(logvar(u_k)))),

    the encoder's Gaussian at K learned pseudo-inputs u_k (K, C, H, W). The pseudo-inputs are hardtanh(0, 1) of a
    parameter initialised N(0.05, 0.01²) (the paper's code), so they stay valid images. With an IAF posterior the
    mixture is of the encoder's Gaussians before the flow. The model binds itself with `bind(model)`; every
    `log_prob` encodes the K pseudo-inputs, with the encoder's BatchNorm layers (model=conv) in eval mode, so that
    the pseudo-inputs neither enter nor shift the statistics the data is normalised with.
    """

    standard = False

    def __init__(self, input_shape: tuple[int, int, int], components: int = 500) -> None:
        super().__init__()
        self.components = components
        self.pseudo_inputs = nn.Parameter(0.05 + 0.01 * torch.randn(components, *input_shape))  # (K, C, H, W)
        object.__setattr__(self, "_owner", None)  # the VAE whose encoder it mixes: not a submodule (no second copy)

    def bind(self, model: nn.Module) -> None:
        """Give the prior the model whose encoder it mixes: `model.encode(x) -> (mu, logvar)`, (K, L) each."""
        object.__setattr__(self, "_owner", model)

    def components_params(self) -> tuple[torch.Tensor, torch.Tensor]:
        """mu, logvar (K, L) of the mixture's components."""
        if self._owner is None:
            raise RuntimeError("VampPrior: bind(model) before use (models.VAE does)")
        norms = [m for m in self._owner.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
        for m in norms:
            m.eval()
        try:
            return self._owner.encode(F.hardtanh(self.pseudo_inputs, 0.0, 1.0))
        finally:
            for m in norms:
                m.train()

    def log_prob(self, z: torch.Tensor, rows: int = 4096) -> torch.Tensor:
        """log p(z) = logsumexp_k log N(z; mu_k, sigma_k²) - log K, in nats: (..., L) -> (...). Computed `rows`
        z at a time, so memory stays at rows * K * L floats."""
        mu, logvar = self.components_params()  # (K, L) each
        flat = z.reshape(-1, z.shape[-1])  # (N, L)
        out = [
            torch.logsumexp(log_normal(part[:, None, :], mu, logvar), dim=1)  # (n, K) -> (n,)
            for part in flat.split(max(1, rows))
        ]
        return (torch.cat(out) - math.log(self.components)).view(z.shape[:-1])

    def sample(self, n: int, latent_dim: int, generator: torch.Generator | None = None) -> torch.Tensor:
        mu, logvar = (p.detach().cpu() for p in self.components_params())
        k = torch.randint(self.components, (n,), generator=generator)  # (n,) component of each draw
        eps = torch.randn(n, latent_dim, generator=generator)
        return mu[k] + (0.5 * logvar[k]).exp() * eps


# --- posteriors --------------------------------------------------------------------------------------------------


def gaussian_draws(mu: torch.Tensor, logvar: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """z = mu + sigma * eps, eps ~ N(0, I) (the reparameterization trick, Kingma & Welling 2014, Sec. 2.4), and
    log N(z; mu, sigma²) = -1/2 sum (eps² + logvar + log 2π): (B, L) -> (n, B, L), (n, B)."""
    eps = torch.randn(n, *mu.shape, device=mu.device, dtype=mu.dtype)  # (n, B, L)
    z = mu + (0.5 * logvar).exp() * eps
    return z, -0.5 * (eps.pow(2) + logvar + LOG_2PI).sum(-1)


class GaussianPosterior(nn.Module):
    """q(z|x) = N(mu, diag(exp(logvar))): `posterior=gaussian`. No parameters."""

    gaussian = True

    def forward(self, mu: torch.Tensor, logvar: torch.Tensor, n: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        return gaussian_draws(mu, logvar, n)


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask (out, in): MADE's building block."""

    def __init__(self, n_in: int, n_out: int, mask: torch.Tensor) -> None:
        super().__init__(n_in, n_out)
        self.register_buffer("mask", mask.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """Masked autoencoder (Germain et al. 2015): z (B, L) -> m, s (B, L) each, where outputs m_i, s_i depend only on
    the inputs before i in the order `order` (a permutation of 0..L-1). One hidden layer of `hidden` ELU units."""

    def __init__(self, latent_dim: int, hidden: int, order: torch.Tensor) -> None:
        super().__init__()
        degree_in = torch.empty(latent_dim, dtype=torch.long)
        degree_in[order] = torch.arange(1, latent_dim + 1)  # input order[j] comes j-th
        degree_hidden = torch.arange(hidden) % max(1, latent_dim - 1) + 1  # (H,) in 1..L-1
        self.inner = MaskedLinear(latent_dim, hidden, degree_hidden[:, None] >= degree_in[None, :])  # (H, L)
        out_mask = degree_in[:, None] > degree_hidden[None, :]  # (L, H): output i sees hidden units of lower degree
        self.m = MaskedLinear(hidden, latent_dim, out_mask)
        self.s = MaskedLinear(hidden, latent_dim, out_mask)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.elu(self.inner(z))  # (B, H)
        return self.m(h), self.s(h)


class IAFPosterior(nn.Module):
    """q(z|x): the encoder's Gaussian followed by `steps` steps of an inverse autoregressive flow (Kingma et al.
    2016, "Improved Variational Inference with Inverse Autoregressive Flow", Alg. 1, Eqs. 10-14): `posterior=iaf`.

        [m, s] = MADE_t(z);  sigma = sigmoid(s);  z <- sigma * z + (1 - sigma) * m,
        log q(z_T|x) = log N(z_0; mu, sigma_0²) - sum_t sum_i log sigma_t,i.

    Each step's Jacobian is triangular with diagonal sigma, so log|det| = sum_i log sigma_i. Steps alternate the
    autoregressive order (forward, reversed). The MADEs take no context h from the encoder (the paper's optional
    input). The s outputs start near +1.5 (the paper's "forget gate" bias), so each step starts near the identity.
    """

    gaussian = False

    def __init__(self, latent_dim: int, steps: int = 2, hidden: int = 320) -> None:
        super().__init__()
        orders = [torch.arange(latent_dim) if t % 2 == 0 else torch.arange(latent_dim).flip(0) for t in range(steps)]
        self.mades = nn.ModuleList(MADE(latent_dim, hidden, order) for order in orders)  # one per step
        for made in self.mades:
            nn.init.constant_(made.s.bias, 1.5)

    def flow(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z_0 (N, L) -> z_T (N, L) and log|det dz_T/dz_0| (N,) in nats."""
        log_det = torch.zeros(z.shape[0], device=z.device, dtype=z.dtype)
        for made in self.mades:
            m, s = made(z)
            sigma = torch.sigmoid(s)  # (N, L)
            z = sigma * z + (1 - sigma) * m
            log_det = log_det + F.logsigmoid(s).sum(-1)
        return z, log_det

    def forward(self, mu: torch.Tensor, logvar: torch.Tensor, n: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        z0, log_q0 = gaussian_draws(mu, logvar, n)  # (n, B, L), (n, B)
        z, log_det = self.flow(z0.flatten(0, 1))
        return z.view(z0.shape), log_q0 - log_det.view(log_q0.shape)


# --- which pairs a run may use -----------------------------------------------------------------------------------

OPTION = {  # `_target_` -> the option of conf/prior/ or conf/posterior/ that names it, for messages
    "vae_sweep.families.StandardNormal": "prior=standard",
    "vae_sweep.families.VampPrior": "prior=vamp",
    "vae_sweep.families.GaussianPosterior": "posterior=gaussian",
    "vae_sweep.families.IAFPosterior": "posterior=iaf",
    "vae_sweep.stochastic_layers.TwoLayerPrior": "prior=two_layer",
    "vae_sweep.stochastic_layers.TwoLayerPosterior": "posterior=two_layer",
}
DEFAULT_NODES = {  # what a config, or a model.pt, without the groups means (the groups' defaults)
    "prior": {"_target_": "vae_sweep.families.StandardNormal"},
    "posterior": {"_target_": "vae_sweep.families.GaussianPosterior"},
}


def check_family(loss: object, prior: Prior, posterior: Posterior, names: tuple[str, str]) -> None:
    """Refuse, in one line, a loss that cannot use this prior and posterior: loss=ae has neither (z = mu, no rate),
    and loss=multirate conditions the Gaussian encoder against N(0, I) only. `names`: the two options, for messages."""
    layers = (getattr(prior, "layers", 1), getattr(posterior, "layers", 1))
    if layers[0] != layers[1]:
        raise ConfigError(
            f"{names[0]} has {layers[0]} stochastic layer(s), {names[1]} has {layers[1]}: they must agree; use "
            "prior=two_layer posterior=two_layer together (model=mlp2 selects both), or neither"
        )
    if has_closed_form_kl(prior, posterior):
        return
    what = " ".join(n for n, default in zip(names, ("prior=standard", "posterior=gaussian")) if n != default)
    if not getattr(loss, "stochastic", True):
        raise ConfigError(
            f"loss=ae with {what}: a deterministic autoencoder draws no z and has no rate, so it has no use for them; "
            "use prior=standard posterior=gaussian, or a stochastic loss"
        )
    if hasattr(loss, "condition"):
        raise ConfigError(
            f"loss=multirate with {what}: the beta-conditioned model is built for the Gaussian posterior and the "
            "standard prior only; use prior=standard posterior=gaussian, or loss=beta"
        )
