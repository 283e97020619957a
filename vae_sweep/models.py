"""Encoders, decoders and the one VAE that joins them.

Vocabulary follows pytorch/examples `vae/main.py`: `encode -> (mu, logvar)`, `reparameterize`, `decode`,
`forward -> (recon_logits, mu, logvar)`. The decoder returns *logits*; the image mean is their sigmoid.
Keeping logits lets the Bernoulli likelihood use the fused, numerically stable BCE-with-logits.

Every architecture is built for an input shape `(C, H, W)` given by the dataset, and says up front
(`check_input_shape`) whether it can take it, so a mismatch is a one-line config error, not a shape crash.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from vae_sweep.errors import ConfigError
from vae_sweep.families import GaussianPosterior, Posterior, Prior, StandardNormal, has_closed_form_kl

Shape = tuple[int, int, int]


class GaussianHead(nn.Module):
    """Maps features to (mu, logvar) of q(z|x), from one shared linear layer or two separate ones."""

    def __init__(self, in_features: int, latent_dim: int, split_heads: bool) -> None:
        super().__init__()
        self.split_heads = split_heads
        if split_heads:
            self.mu = nn.Linear(in_features, latent_dim)
            self.logvar = nn.Linear(in_features, latent_dim)
        else:
            self.both = nn.Linear(in_features, 2 * latent_dim)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.split_heads:
            return self.mu(h), self.logvar(h)
        mu, logvar = self.both(h).chunk(2, dim=-1)  # (B, L) each
        return mu, logvar


class VAE(nn.Module):
    """q(z|x) built on N(mu, diag(exp(logvar))), a prior p(z), and p(x|z) given by decoder logits.

    `encoder(x) -> features (B, F)`; `head(features) -> (mu, logvar)`; `decoder(z) -> logits (B, C, H, W)`;
    `prior` and `posterior` (vae_sweep/families.py), by default N(0, I) and the Gaussian itself: `forward` and
    `reparameterize` are that default's path; `draw` samples any posterior with log q(z|x).
    `conditioned`: the submodules whose layers loss=multirate conditions on β (vae_sweep/conditioning.py).
    """

    conditioned: tuple[str, str] | None = ("encoder", "decoder")

    def __init__(
        self,
        encoder: nn.Module,
        head: GaussianHead,
        decoder: nn.Module,
        latent_dim: int,
        prior: Prior | None = None,
        posterior: Posterior | None = None,
    ) -> None:
        super().__init__()
        self.encoder, self.head, self.decoder = encoder, head, decoder
        self.latent_dim = latent_dim
        self.use(prior or StandardNormal(), posterior or GaussianPosterior())

    def use(self, prior: Prior, posterior: Posterior) -> VAE:
        """Set the prior and the posterior (a VampPrior is bound to this model, whose encoder it mixes)."""
        self.prior, self.posterior = prior, posterior
        if hasattr(prior, "bind"):
            prior.bind(self)
        return self

    @property
    def closed_form_rate(self) -> bool:
        """The rate is KL(N(mu, sigma²) || N(0, I)) in closed form; otherwise a Monte Carlo estimate."""
        return has_closed_form_kl(self.prior, self.posterior)

    def draw(self, mu: torch.Tensor, logvar: torch.Tensor, n: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """n draws z ~ q(z|x) and log q(z|x) in nats: (B, L) -> (n, B, L), (n, B)."""
        return self.posterior(mu, logvar, n)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.encoder(x))  # (B, L), (B, L)

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        # z = mu + sigma * eps, eps ~ N(0, I): the reparameterization trick (Kingma & Welling 2014, Sec. 2.4)
        std = torch.exp(0.5 * logvar)
        return mu + std * torch.randn_like(std)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, L) -> logits (B, C, H, W); a z with more entries (two stochastic layers: (z1, z2)) gives its
        first L, the layer the decoder reads."""
        return self.decoder(z[..., : self.latent_dim] if z.shape[-1] > self.latent_dim else z)

    def forward(self, x: torch.Tensor, sample: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`sample=False` decodes the posterior mean: the deterministic autoencoder path."""
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar) if sample else mu
        return self.decode(z), mu, logvar


class _Calls(nn.Module):
    """`forward` is the method `name` of a model held by reference (not a submodule: its owner registers it once)."""

    def __init__(self, net: nn.Module, name: str) -> None:
        super().__init__()
        object.__setattr__(self, "_net", net)
        self.name = name

    def forward(self, *args: torch.Tensor):
        return getattr(self._net, self.name)(*args)


class UserVAE(VAE):
    """A model of the user's own that meets `vae_sweep.contracts.Model` (encode, decode, latent_dim), as the `VAE`
    that training, evaluation, the pictures and the metrics use: `net.encode(x) -> (mu, logvar)` is the encoder and
    head, `net.decode(z) -> logits` the decoder, and the prior and posterior are the config's. Its parameters are
    `net.*` in the state_dict. loss=multirate conditions the layers of `net.encoder` and `net.decoder` when the net
    has both submodules."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__(_Calls(net, "encode"), nn.Identity(), _Calls(net, "decode"), int(net.latent_dim))
        self.net = net
        parts = ("encoder", "decoder")
        has_parts = all(isinstance(getattr(net, p, None), nn.Module) for p in parts)
        self.conditioned = tuple(f"net.{p}" for p in parts) if has_parts else None


# --- fully connected ------------------------------------------------------------------------------------


ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "tanh": nn.Tanh}


def _mlp(sizes: Sequence[int], activation: str = "relu") -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), ACTIVATIONS[activation]()]
    return nn.Sequential(*layers)


class MLPDecoder(nn.Module):
    def __init__(self, latent_dim: int, hidden: Sequence[int], shape: Shape, activation: str = "relu") -> None:
        super().__init__()
        self.shape = shape
        self.body = _mlp([latent_dim, *hidden], activation)
        self.out = nn.Linear(hidden[-1] if hidden else latent_dim, math.prod(shape))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(z)).view(-1, *self.shape)  # (B, C, H, W)


def mlp_vae(
    input_shape: Shape,
    latent_dim: int,
    hidden: Sequence[int] = (400,),
    split_heads: bool = False,
    activation: str = "relu",
) -> VAE:
    """The classic fully connected VAE (784-400-20 on MNIST): `hidden` lists the encoder's layer widths,
    and the decoder mirrors them; `activation` relu | leaky_relu | tanh (Burda et al. 2016 use tanh)."""
    hidden = list(hidden)
    n_in = math.prod(input_shape)
    encoder = nn.Sequential(nn.Flatten(), _mlp([n_in, *hidden], activation))
    head = GaussianHead(hidden[-1] if hidden else n_in, latent_dim, split_heads)
    decoder = MLPDecoder(latent_dim, hidden[::-1], input_shape, activation)
    return VAE(encoder, head, decoder, latent_dim)


# --- convolutional ----------------------------------------------------------------------------------------


def _conv_sides(side: int, n_layers: int) -> list[int]:
    """Spatial sides through `n_layers` convs with kernel 3, stride 2, padding 1: side -> ceil(side / 2)."""
    sides = [side]
    for _ in range(n_layers):
        sides.append((sides[-1] + 1) // 2)
    return sides


def check_conv_input(input_shape: Shape, channels: Sequence[int], name: str) -> None:
    """A conv net of n stride-2 layers needs a feature map of at least 2x2 at its end: sides > 2**n."""
    _, h, w = input_shape
    n = len(channels)
    if min(h, w) <= 2**n:
        raise ConfigError(
            f"model={name} needs images larger than {2**n}x{2**n} ({n} stride-2 layers); "
            f"the dataset gives {input_shape[0]}x{h}x{w} (C x H x W): use model=mlp or a larger dataset"
        )


class ConvEncoder(nn.Module):
    def __init__(self, in_channels: int, channels: Sequence[int], activation: type[nn.Module]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for c_in, c_out in zip([in_channels, *channels[:-1]], channels):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.BatchNorm2d(c_out), activation()]
        self.body = nn.Sequential(*layers, nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)  # (B, channels[-1] * h * w)


class ConvDecoder(nn.Module):
    """Mirror of ConvEncoder: linear up to the last feature map, then transposed convs back to (C, H, W).

    Each transposed conv maps side s to 2s - 1 + output_padding; output_padding is chosen per layer so
    that the decoder retraces the encoder's sides exactly (28 -> 14 -> 7 -> 4 comes back 4 -> 7 -> 14 -> 28).
    """

    def __init__(self, latent_dim: int, channels: Sequence[int], shape: Shape, activation: type[nn.Module]) -> None:
        super().__init__()
        c_img, h, w = shape
        hs, ws = _conv_sides(h, len(channels)), _conv_sides(w, len(channels))
        self.start = (channels[-1], hs[-1], ws[-1])
        self.fc = nn.Linear(latent_dim, math.prod(self.start))
        rev = list(channels[::-1])
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip(rev, [*rev[1:], c_img])):
            h_in, w_in, h_out, w_out = hs[-1 - i], ws[-1 - i], hs[-2 - i], ws[-2 - i]
            pad = (h_out - (2 * h_in - 1), w_out - (2 * w_in - 1))
            layers.append(nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=pad))
            if i < len(rev) - 1:
                layers += [nn.BatchNorm2d(c_out), activation()]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(self.fc(z).view(-1, *self.start))  # logits (B, C, H, W)


def conv_vae(
    input_shape: Shape,
    latent_dim: int,
    channels: Sequence[int] = (16, 32, 32),
    split_heads: bool = False,
    activation: str = "relu",
    name: str = "conv",
) -> VAE:
    """Conv encoder (3x3 convs, stride 2, BatchNorm) with the mirrored transposed-conv decoder.

    `model=conv`: channels 16-32-32 and ReLU for 28x28 digits; `model=conv64`: channels 32-64-128-256-512 and
    LeakyReLU for 64x64 RGB faces (the CelebA architecture of AntixK/PyTorch-VAE's VanillaVAE).
    """
    channels = list(channels)
    check_conv_input(input_shape, channels, name)
    act = ACTIVATIONS[activation]
    encoder = ConvEncoder(input_shape[0], channels, act)
    hs, ws = _conv_sides(input_shape[1], len(channels)), _conv_sides(input_shape[2], len(channels))
    head = GaussianHead(channels[-1] * hs[-1] * ws[-1], latent_dim, split_heads)
    decoder = ConvDecoder(latent_dim, channels, input_shape, act)
    return VAE(encoder, head, decoder, latent_dim)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- the architecture of the disentanglement literature ------------------------------------------------------


def check_input_64(input_shape: Shape, name: str) -> None:
    """The disentanglement_lib nets take exactly 64x64 images (any number of channels)."""
    c, h, w = input_shape
    if (h, w) != (64, 64):
        raise ConfigError(
            f"model={name} needs 64x64 images (C x 64 x 64, as dsprites and sprites give); "
            f"the dataset gives {c}x{h}x{w} (C x H x W): use model=conv or model=mlp"
        )


def locatello_vae(input_shape: Shape, latent_dim: int, name: str = "locatello") -> VAE:
    """The encoder and decoder of disentanglement_lib (`conv_encoder`, `deconv_decoder`), which Locatello et al.
    2019 used for every model of their study (after the chairs net of Higgins et al. 2017, Table 1). For
    `(C, 64, 64)` images, all ReLU, no BatchNorm:

    encoder: conv 32 (4x4, s2) -> 32x32, conv 32 (4x4, s2) -> 16x16, conv 64 (2x2, s2) -> 8x8,
             conv 64 (2x2, s2) -> 4x4, flatten 1024, FC 256, then mean and log-variance of the latent (10 there);
    decoder: FC 256, FC 1024, reshape 64x4x4, transposed convs 64, 32, 32 (4x4, s2) -> 32x32, and a transposed
             conv (4x4, s2) to C channels of logits (B, C, 64, 64).
    TensorFlow's "same" padding at stride 2 is padding 1 for the 4x4 kernels and 0 for the 2x2 ones here.
    """
    check_input_64(input_shape, name)
    c = input_shape[0]
    encoder = nn.Sequential(
        nn.Conv2d(c, 32, 4, stride=2, padding=1),
        nn.ReLU(),  # (B, 32, 32, 32)
        nn.Conv2d(32, 32, 4, stride=2, padding=1),
        nn.ReLU(),  # (B, 32, 16, 16)
        nn.Conv2d(32, 64, 2, stride=2),
        nn.ReLU(),  # (B, 64, 8, 8)
        nn.Conv2d(64, 64, 2, stride=2),
        nn.ReLU(),  # (B, 64, 4, 4)
        nn.Flatten(),
        nn.Linear(1024, 256),
        nn.ReLU(),  # (B, 256)
    )
    decoder = nn.Sequential(
        nn.Linear(latent_dim, 256),
        nn.ReLU(),
        nn.Linear(256, 1024),
        nn.ReLU(),
        nn.Unflatten(1, (64, 4, 4)),  # (B, 64, 4, 4)
        nn.ConvTranspose2d(64, 64, 4, stride=2, padding=1),
        nn.ReLU(),  # (B, 64, 8, 8)
        nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1),
        nn.ReLU(),  # (B, 32, 16, 16)
        nn.ConvTranspose2d(32, 32, 4, stride=2, padding=1),
        nn.ReLU(),  # (B, 32, 32, 32)
        nn.ConvTranspose2d(32, c, 4, stride=2, padding=1),  # logits (B, C, 64, 64)
    )
    return VAE(encoder, GaussianHead(256, latent_dim, split_heads=True), decoder, latent_dim)
