"""A small residual conv VAE: two stride-2 convs with a residual block between, and the mirror image back.

It meets `vae_sweep.contracts.Model` without inheriting from anything of vae_sweep's: `latent_dim`,
`encode(x) -> (mu, logvar)`, `decode(z) -> logits`, and `encoder` / `decoder` submodules, which loss=multirate
conditions on beta.
"""

from __future__ import annotations

import torch
from torch import nn


class Residual(nn.Module):
    """x + conv(relu(conv(relu(x)))): 3x3 convs that keep the shape (B, W, H, W')."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResidualVAE(nn.Module):
    """Encoder: conv (4x4, stride 2) to `width` channels, `blocks` residual blocks, conv (4x4, stride 2) to
    2 * width, flatten; a linear head to (mu, logvar). Decoder: the mirror image, ending in logits (B, C, H, W).
    Images (C, H, W) with H and W divisible by 4."""

    def __init__(self, input_shape: tuple[int, int, int], latent_dim: int, width: int = 16, blocks: int = 1) -> None:
        super().__init__()
        c, h, w = input_shape
        if h % 4 or w % 4:
            raise ValueError(f"ResidualVAE needs image sides divisible by 4; the dataset gives {c}x{h}x{w}")
        self.latent_dim = latent_dim
        start = (2 * width, h // 4, w // 4)  # the smallest feature map
        features = start[0] * start[1] * start[2]
        self.encoder = nn.Sequential(
            nn.Conv2d(c, width, 4, stride=2, padding=1),  # (B, width, H/2, W/2)
            *(Residual(width) for _ in range(blocks)),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),  # (B, 2 width, H/4, W/4)
            nn.ReLU(),
            nn.Flatten(),  # (B, features)
        )
        self.head = nn.Linear(features, 2 * latent_dim)
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, features),
            nn.ReLU(),
            nn.Unflatten(1, start),  # (B, 2 width, H/4, W/4)
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1),  # (B, width, H/2, W/2)
            *(Residual(width) for _ in range(blocks)),
            nn.ReLU(),
            nn.ConvTranspose2d(width, c, 4, stride=2, padding=1),  # logits (B, C, H, W)
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.head(self.encoder(x)).chunk(2, dim=-1)  # (B, L) each
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)  # logits (B, C, H, W)
