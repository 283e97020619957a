"""One network for every β: a VAE whose hidden layers hear each example's β (the multi-rate VAE).

A β sweep trains one model per β. A β-conditioned model learns the whole rate-distortion curve in one run:

- **MR-VAE gates** (Bae et al. 2023, "Multi-Rate VAE: Train Once, Get the Full Rate-Distortion Curve", Sec. 4):
  log β is mapped linearly to η ∈ [-√3, √3], and every hidden layer's pre-activation h (B, F[, H, W]) is scaled
  channel-wise by a gate of η: h ← σ(w η + b) ⊙ h in the encoder (a sigmoid),
  h ← sqrt(ReLU(1 - exp(w η + b))) ⊙ h in the decoder (bounded in [0, 1), as in the paper's decoder).
- **FiLM** (Dosovitskiy & Djolonga 2020, "You Only Train Once", Sec. 3; Perez et al. 2018):
  h ← s ⊙ h + t with s = 1 + 0.01 MLP_s(η), t = 0.01 MLP_t(η): one shared MLP of η, a linear head per layer.

`ConditionedVAE` wraps any `models.VAE` (mlp, conv, conv64, and a user's model with `encoder` and `decoder`
submodules: `models.UserVAE`): every Linear, Conv2d and ConvTranspose2d inside its encoder and decoder is
conditioned, except the decoder's last one (the output layer) and the Gaussian head (which is not part of the
encoder). It *is* a `VAE`: `encode`, `decode` and `forward` take an optional `beta=` (a float, or a (B,) tensor of
per-example values); without it they use the model's own `beta` buffer, so a conditioned model at a fixed β
behaves like an ordinary model everywhere (`evaluate`, `pictures`), and `freeze(beta)` folds the conditioning into the weights and returns a plain `VAE`.

Which conditioning (`loss.conditioning`, default film) was chosen by `benchmarks/multirate.py --kinds`: on mnist_5k
(MLP, 20 epochs, 2 seeds), FiLM's curve had the largest hypervolume (245.2-245.7k nats², gates 239.8-239.9k,
both 244.2k; 5 separate β-VAEs 247.8k) and ~10 nats less distortion than gates at small β, for 1.3-1.4x the CPU
time of a plain epoch (gates 1.1-1.2x, both 1.6-1.9x).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from vae_sweep.errors import ConfigError
from vae_sweep.models import VAE, UserVAE

KINDS = ("gates", "film", "both")  # MR-VAE gates, YOTO FiLM, or gates then FiLM
LAYERS = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)
FILM_WIDTH = 64  # hidden units of the shared FiLM MLP
FILM_SCALE = 0.01  # s = 1 + 0.01 MLP_s, t = 0.01 MLP_t: FiLM starts near the identity (YOTO, Sec. 3)


class _Signal:
    """What every conditioned layer reads during one call: eta (B, 1) or (1, 1), and the FiLM MLP's features
    of it (B, FILM_WIDTH) when FiLM is on. A plain object shared by reference (a deep copy stays consistent)."""

    eta: torch.Tensor | None = None
    features: torch.Tensor | None = None


class Conditioned(nn.Module):
    """One hidden layer and its conditioning: y = layer(x), then y ← g(η) ⊙ y (gates), y ← s ⊙ y + t (FiLM).

    `gate`: "encoder" (sigmoid gate), "decoder" (sqrt(ReLU(1 - exp)) gate) or None (no gate); `film`: FiLM on.
    `signal` is the owning ConditionedVAE's, set before each call.
    """

    def __init__(self, layer: nn.Module, signal: _Signal, gate: str | None, film: bool) -> None:
        super().__init__()
        self.layer, self.signal, self.gate_kind = layer, signal, gate
        channels = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
        self.gate = nn.Linear(1, channels) if gate else None
        if gate == "decoder":  # every channel open over all of η ∈ [-√3, √3] at the start: w η + b <= -1
            with torch.no_grad():
                self.gate.bias.copy_(-1.0 - math.sqrt(3) * self.gate.weight.abs().squeeze(1))
        self.film = nn.Linear(FILM_WIDTH, 2 * channels) if film else None

    def scale_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Channel-wise a, c of y ← a ⊙ y + c for the current signal: (B or 1, F) each."""
        eta = self.signal.eta  # (B or 1, 1)
        a, c = torch.ones_like(eta), torch.zeros_like(eta)
        if self.gate is not None:
            u = self.gate(eta)  # (B, F)
            # Bae et al. 2023, Sec. 4: sigmoid in the encoder, sqrt(ReLU(1 - exp(u))) in the decoder
            a = torch.sigmoid(u) if self.gate_kind == "encoder" else torch.relu(1.0 - u.exp()).sqrt()
        if self.film is not None:
            s, t = self.film(self.signal.features).chunk(2, dim=-1)  # (B, F) each
            a, c = a * (1.0 + FILM_SCALE * s), FILM_SCALE * t  # YOTO's FiLM after the gate
        return a, c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layer(x)  # (B, F) or (B, F, H, W)
        a, c = self.scale_shift()
        if y.ndim == 4:
            a, c = a[..., None, None], c[..., None, None]
        return a * y + c

    def folded(self) -> nn.Module:
        """A copy of the plain layer with a, c of the current (fixed, batch-of-1) signal in its weights."""
        a, c = (v.squeeze(0) for v in self.scale_shift())  # (F,) each
        layer = copy.deepcopy(self.layer)
        with torch.no_grad():
            w = layer.weight  # Linear (F, in); Conv2d (F, in, k, k); ConvTranspose2d (in, F, k, k)
            view = (1, -1, 1, 1) if isinstance(layer, nn.ConvTranspose2d) else (-1,) + (1,) * (w.ndim - 1)
            w.mul_(a.view(view))
            bias = layer.bias if layer.bias is not None else torch.zeros_like(a)
            layer.bias = nn.Parameter(a * bias + c)
        return layer


def hidden_layers(vae: VAE) -> list[tuple[str, str]]:
    """(qualified name, "encoder" | "decoder") of each layer to condition: every Linear/Conv2d/ConvTranspose2d
    of the encoder, and of the decoder all but its last (the output layer). The two parts are `vae.conditioned`:
    `encoder` and `decoder`, or a user's model's own (`models.UserVAE`: `net.encoder`, `net.decoder`)."""
    if vae.conditioned is None:
        raise ConfigError(
            "loss=multirate: the model has no `encoder` and `decoder` submodules, whose layers it conditions on beta; "
            "give the model both (vae_sweep/contracts.py), or use loss=beta"
        )
    (enc_name, enc_part), (dec_name, dec_part) = ((p, vae.get_submodule(p)) for p in vae.conditioned)
    enc = [(f"{enc_name}.{n}", "encoder") for n, m in enc_part.named_modules() if isinstance(m, LAYERS)]
    dec = [(f"{dec_name}.{n}", "decoder") for n, m in dec_part.named_modules() if isinstance(m, LAYERS)]
    return enc + dec[:-1]


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent), child, new)


class ConditionedVAE(VAE):
    """A `VAE` conditioned on β ∈ [beta_min, beta_max] at every hidden layer (see the module docstring).

    Takes over the modules of `vae` (wrapping its hidden layers in place). `kind`: gates | film | both.
    `beta` (a buffer, saved in the state_dict) is the β used when a call gives none: `set_beta` / `at_beta`.
    """

    def __init__(
        self, vae: VAE, kind: str = "film", beta_min: float = 0.01, beta_max: float = 10.0, beta: float = 1.0
    ) -> None:
        if kind not in KINDS:
            raise ConfigError(f"conditioning={kind}: choose one of {', '.join(KINDS)}")
        if not 0 < beta_min < beta_max:
            raise ConfigError(f"beta_min={beta_min}, beta_max={beta_max}: need 0 < beta_min < beta_max")
        if isinstance(vae, ConditionedVAE):
            raise ConfigError("the model is already conditioned on beta")
        super().__init__(vae.encoder, vae.head, vae.decoder, vae.latent_dim)
        self.conditioned = vae.conditioned
        if isinstance(vae, UserVAE):
            self.net = vae.net  # the user's model, which its encoder and decoder call
        self.kind, self.beta_min, self.beta_max = kind, float(beta_min), float(beta_max)
        self.signal = _Signal()
        layers = hidden_layers(self)
        if not layers:
            raise ConfigError("the model has no hidden layer to condition on beta (model.hidden=[]?)")
        film = kind in ("film", "both")
        for name, part in layers:
            gate = part if kind in ("gates", "both") else None
            _replace(self, name, Conditioned(self.get_submodule(name), self.signal, gate, film))
        width = FILM_WIDTH  # the shared FiLM MLP: η (B, 1) -> features (B, width), read by each layer's head
        self.film_mlp = (
            nn.Sequential(nn.Linear(1, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU()) if film else None
        )
        self.register_buffer("beta", torch.tensor(float(beta)))
        self.set_beta(beta)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, beta_min={self.beta_min:g}, beta_max={self.beta_max:g}"

    def eta(self, beta: torch.Tensor) -> torch.Tensor:
        """log β mapped linearly from [log beta_min, log beta_max] onto [-√3, √3] (Bae et al. 2023, Sec. 4):
        (B,) -> (B, 1). When log β is uniform over the range, η has mean 0 and variance 1."""
        lo, hi = math.log(self.beta_min), math.log(self.beta_max)
        return (math.sqrt(3.0) * (2.0 * (beta.log() - lo) / (hi - lo) - 1.0)).unsqueeze(-1)

    def _tell(self, beta: torch.Tensor | float | None) -> None:
        """Set the signal every conditioned layer reads: β (B,) per example, a float, or None for self.beta."""
        beta = self.beta.view(1) if beta is None else torch.as_tensor(beta, device=self.beta.device).float().view(-1)
        self.signal.eta = self.eta(beta)  # (B or 1, 1)
        self.signal.features = self.film_mlp(self.signal.eta) if self.film_mlp is not None else None

    def encode(self, x: torch.Tensor, beta: torch.Tensor | float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        self._tell(beta)
        return super().encode(x)  # (B, L), (B, L)

    def decode(self, z: torch.Tensor, beta: torch.Tensor | float | None = None) -> torch.Tensor:
        self._tell(beta)
        return super().decode(z)  # logits (B, C, H, W)

    def forward(self, x: torch.Tensor, sample: bool = True, beta: torch.Tensor | float | None = None):
        """As `VAE.forward`; `beta`: (B,) per example (training), a float, or None for self.beta."""
        mu, logvar = self.encode(x, beta)
        z = self.reparameterize(mu, logvar) if sample else mu
        return self.decode(z, beta), mu, logvar

    def set_beta(self, beta: float) -> None:
        """Fix the β used by calls that give none. It must lie in the range the model was trained on."""
        if not self.beta_min * (1 - 1e-6) <= beta <= self.beta_max * (1 + 1e-6):  # rounding at the ends
            raise ConfigError(
                f"beta={beta}: outside the range this model was trained on, [{self.beta_min:g}, {self.beta_max:g}]"
            )
        self.beta.fill_(beta)

    @contextmanager
    def at_beta(self, beta: float) -> Iterator[ConditionedVAE]:
        """The model at a fixed β for the block, then back to the β it had."""
        before = self.beta.item()
        self.set_beta(beta)
        try:
            yield self
        finally:
            self.beta.fill_(before)

    def freeze(self, beta: float | None = None) -> VAE:
        """A plain `VAE` equal to this model at `beta` (default self.beta): each hidden layer's gate and FiLM,
        constant at a fixed β, folded into its weight and bias. Same outputs; loadable as an ordinary model."""
        with self.at_beta(self.beta.item() if beta is None else beta), torch.no_grad():
            self._tell(None)
            if hasattr(self, "net"):
                plain = UserVAE(copy.deepcopy(self.net))
            else:
                plain = VAE(*(copy.deepcopy(m) for m in (self.encoder, self.head, self.decoder)), self.latent_dim)
            for name, module in self.named_modules():
                if isinstance(module, Conditioned):
                    _replace(plain, name, module.folded())
        return plain
