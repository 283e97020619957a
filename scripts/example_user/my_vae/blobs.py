"""Blobs: a tiny procedural dataset with known factors of variation, drawn in a fraction of a second.

Each image is one white shape (a disc or a square) on black, at every combination of its factors: shape (2),
scale (`scales` radii from 3 to 6 pixels), posX and posY (`positions` centres evenly spaced inside the image).
The images form the complete grid over the factors that the disentanglement metrics sample from.
"""

from __future__ import annotations

import torch

from vae_sweep.contracts import Factors, ImageData


def draw(side: int, shape: torch.Tensor, radius: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor) -> torch.Tensor:
    """Images (N, 1, side, side), float32 in {0, 1}: a disc (shape 0) or a square (shape 1) per row."""
    coords = torch.arange(side, dtype=torch.float32) + 0.5  # pixel centres
    dx = coords[None, None, :] - cx[:, None, None]  # (N, 1, side)
    dy = coords[None, :, None] - cy[:, None, None]  # (N, side, 1)
    r = radius[:, None, None]
    disc = dx.pow(2) + dy.pow(2) <= r.pow(2)
    square = (dx.abs() <= r) & (dy.abs() <= r)
    inside = torch.where(shape[:, None, None] == 0, disc, square)  # (N, side, side)
    return inside.float().unsqueeze(1)


def blobs(side: int = 32, positions: int = 8, scales: int = 3, val_size: int = 64, split_seed: int = 0) -> ImageData:
    """Every (shape, scale, posX, posY) of the grid once, shuffled with `split_seed`; the last `val_size` images
    validate. Labels (for the latent scatter's colours) are the shapes."""
    radii = torch.linspace(3.0, 6.0, scales)  # pixels
    centres = torch.linspace(7.0, side - 7.0, positions)  # pixels, so that the largest shape stays inside
    sizes = (2, scales, positions, positions)
    classes = torch.cartesian_prod(*(torch.arange(n) for n in sizes))  # (N, 4), the last factor fastest
    x = draw(side, classes[:, 0], radii[classes[:, 1]], centres[classes[:, 2]], centres[classes[:, 3]])
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(split_seed))
    train, val = order[:-val_size], order[-val_size:]
    factors = Factors(
        names=("shape", "scale", "posX", "posY"),
        sizes=sizes,
        values=((0.0, 1.0), tuple(radii.tolist()), tuple(centres.tolist()), tuple(centres.tolist())),
        train_classes=classes[train],
        val_classes=classes[val],
    )
    y = classes[:, 0]
    return ImageData("blobs", x[train], y[train], x[val], y[val], factors=factors)
