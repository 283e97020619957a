"""dSprites (Matthey et al. 2017) and its procedural twin: 64x64 binary sprites on a complete grid of 5 factors.

Factors, in dSprites' order, with their class counts and values (dSprites' 6th, color, is constant and dropped):
shape 3 (1 square, 2 ellipse, 3 heart), scale 6 (linspace(0.5, 1)), orientation 40 (linspace(0, 2*pi) radians, so
classes 0 and 39 draw the same image), posX 32 and posY 32 (linspace(0, 1)). Grid index = classes @ bases, posY
fastest: 737,280 images in all.

- `dsprites`: the official file, read from `data_dir/dsprites/` (or downloaded there).
- `sprites`: a close replica drawn here in seconds, offline, to the geometry measured from dSprites' published
  animation (binary pixels, centres, sizes, rotation: see `_inside` and `_render_chunk`; the heart is our own):
  not dSprites' official pixels. Cached under `cache_dir/sprites/` as bit-packed rows (512 bytes per image).

Both take `stride`, a step per factor (`{orientation: 4, posX: 2, posY: 2}` keeps classes 0, 4, ..., 36 of
orientation and every other position: 46,080 images), so the same code serves a CPU and the full grid.
Images are held as uint8 0/255 (dSprites' own 0/1 times 255), so `data.as_float` maps them to exactly 0.0/1.0.
Labels (`*_y`, for the latent scatter) are the shape class.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from vae_sweep.data import Factors, ImageData
from vae_sweep.downloaded import not_found
from vae_sweep.errors import ConfigError

log = logging.getLogger(__name__)

NAMES = ("shape", "scale", "orientation", "posX", "posY")
SIZES = (3, 6, 40, 32, 32)
SIDE = 64  # image side in pixels
DSPRITES_FILE = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
DSPRITES_URL = f"https://github.com/deepmind/dsprites-dataset/raw/master/{DSPRITES_FILE}"
RENDER_VERSION = 1  # part of the cache file's name: bump it whenever the drawing changes

# The heart is the region (x^2 + y^2 - 1)^3 <= x^2 y^3 (lobes up, tip down), which spans x in [-1.1385, 1.1385]
# and y in [-1, 1.236] with its area's centroid at y = 0.2935. Stretched to 20 x 17 pixels at scale 1 and moved
# so that its centroid sits on the sprite's centre. dSprites' own outline is not published: this is a close heart.
HEART_PX_PER_X, HEART_PX_PER_Y, HEART_CENTROID_Y = 20 / 2.2770, 17 / 2.2360, 0.2935


def grid_classes(sizes: tuple[int, ...]) -> torch.Tensor:
    """Every cell of a grid as classes `(prod(sizes), K)` int64, in grid-index order (the last factor fastest)."""
    axes = torch.meshgrid(*[torch.arange(n) for n in sizes], indexing="ij")
    return torch.stack([a.reshape(-1) for a in axes], dim=1)


def spec_values() -> tuple[tuple[float, ...], ...]:
    """dSprites' factor values per class: shape 1..3, scale 0.5..1, orientation 0..2*pi radians, posX/posY 0..1."""
    return (
        (1.0, 2.0, 3.0),
        tuple(np.linspace(0.5, 1.0, 6).tolist()),
        tuple(np.linspace(0.0, 2 * math.pi, 40).tolist()),
        tuple(np.linspace(0.0, 1.0, 32).tolist()),
        tuple(np.linspace(0.0, 1.0, 32).tolist()),
    )


# --- the procedural renderer ------------------------------------------------------------------------------


def _inside(shape: int, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Which points lie inside `shape` (0 square, 1 ellipse, 2 heart) at scale 1 and orientation 0: `u` to the
    right and `v` up, in pixels from the sprite's centre. Square side 19.2; ellipse semi-axes 12.8 x 7.2."""
    if shape == 0:
        return (u.abs() <= 9.6) & (v.abs() <= 9.6)
    if shape == 1:
        return (u * (1 / 12.8)).square_() + (v * (1 / 7.2)).square_() <= 1.0
    x2 = (u * (1 / HEART_PX_PER_X)).square_()
    y = v * (1 / HEART_PX_PER_Y) + HEART_CENTROID_Y
    r = x2 + y * y - 1.0
    return r * r * r <= x2 * y * y * y


def _render_chunk(classes: torch.Tensor) -> torch.Tensor:
    """Sprites for full-grid classes `(M, 5)` (all of one shape) -> bool `(M, 64, 64)`.

    A pixel (row r, column c) is on when its centre (c + 0.5, r + 0.5) lies inside the shape centred at
    (16 + 32 posX, 16 + 32 posY) px and rotated counter-clockwise (as displayed) by the orientation. Only a 32 x 32
    window around the centre is tested: the largest sprite reaches 13.6 px from its centre (the square's corner).
    """
    values = [torch.tensor(v, dtype=torch.float64) for v in spec_values()]
    scale, pos_x, pos_y = (values[k][classes[:, k]][:, None] for k in (1, 3, 4))  # (M, 1) each
    theta = 2 * math.pi * (classes[:, 2] % 39).double()[:, None] / 39  # class 39 is 2*pi: drawn exactly as 0
    cx, cy = 16 + 32 * pos_x, 16 + 32 * pos_y  # (M, 1) px: x is the column, y the row (downwards)
    x0, y0 = cx.floor().long() - 16, cy.floor().long() - 16  # (M, 1) the window's first column and row
    offsets = torch.arange(32)
    dx = (x0 + offsets + 0.5 - cx).float()[:, None, :]  # (M, 1, 32) px to the right of the centre
    dy = (cy - (y0 + offsets + 0.5)).float()[:, :, None]  # (M, 32, 1) px above the centre
    # undo the scale and the counter-clockwise rotation: (u, v) in the shape's own frame at scale 1
    a, b = (theta.cos() / scale).float()[:, :, None], (theta.sin() / scale).float()[:, :, None]  # (M, 1, 1)
    u = a * dx + b * dy  # (M, 32, 32)
    v = a * dy - b * dx
    window = _inside(int(classes[0, 0]), u, v)  # (M, 32, 32)
    out = torch.zeros((len(classes), SIDE, SIDE), dtype=torch.bool)
    flat = (y0 * SIDE + x0)[:, :, None] + offsets[:, None] * SIDE + offsets  # (M, 32, 32) pixel index in an image
    out.view(len(classes), -1).scatter_(1, flat.view(len(classes), -1), window.view(len(classes), -1))
    return out


def render(classes: torch.Tensor, chunk: int = 4096) -> np.ndarray:
    """Draw the sprites of full-grid classes `(N, 5)` int64 -> bit-packed rows `(N, 512)` uint8: each row is one
    64 x 64 image, row-major, packed 8 pixels to a byte (`np.unpackbits` restores it). Deterministic: an image
    does not depend on the others drawn with it."""
    packed = np.empty((len(classes), SIDE * SIDE // 8), dtype=np.uint8)
    for shape in range(SIZES[0]):
        where = torch.nonzero(classes[:, 0] == shape).flatten()
        for start in range(0, len(where), chunk):
            idx = where[start : start + chunk]
            packed[idx.numpy()] = np.packbits(_render_chunk(classes[idx]).reshape(len(idx), -1).numpy(), axis=1)
    return packed


# --- the official file ------------------------------------------------------------------------------------


def read_dsprites(path: Path) -> tuple[np.ndarray, tuple[int, ...], tuple[tuple[float, ...], ...]]:
    """The official `.npz` -> bit-packed rows `(N, 512)` uint8 in grid-index order, the 5 factor sizes, and the
    factor values per class (from `latents_values`).

    Rows are placed by their own `latents_classes`, so the file's row order is checked rather than assumed; the
    file's `metadata` (a pickle) is never loaded. A file that is not a complete grid is a ConfigError.
    """
    with np.load(path) as z:  # allow_pickle stays off
        imgs, values, classes = z["imgs"], z["latents_values"], z["latents_classes"]
    n = len(imgs)
    complete = (
        imgs.shape[1:] == (SIDE, SIDE) and classes.shape == values.shape == (n, 6) and n > 0 and classes.min() >= 0
    )
    if complete:
        sizes = tuple(int(s) for s in classes.max(axis=0) + 1)
        index = classes @ np.array([math.prod(sizes[i + 1 :]) for i in range(6)], dtype=np.int64)
        complete = sizes[0] == 1 and math.prod(sizes) == n and np.bincount(index, minlength=n).max() == 1
    if not complete:
        raise ConfigError(
            f"dataset.data_dir: {path} is not the dSprites file: need imgs (N, 64, 64), "
            "latents_values and latents_classes (N, 6) over a complete grid with one color"
        )
    order = np.empty(n, dtype=np.int64)
    order[index] = np.arange(n)  # grid index -> row of the file
    per_class = []
    for k in range(1, 6):
        v = np.zeros(sizes[k])
        v[classes[:, k]] = values[:, k]
        per_class.append(tuple(v.tolist()))
    packed = np.packbits(imgs.reshape(n, -1), axis=1)  # (N, 512), nonzero pixels become 1
    return packed[order], sizes[1:], tuple(per_class)


def _download_dsprites(folder: Path) -> None:
    """Fetch the official file (26 MB) from deepmind/dsprites-dataset on GitHub into `folder`."""
    from torchvision.datasets.utils import download_url

    download_url(DSPRITES_URL, root=str(folder), filename=DSPRITES_FILE)


# --- from a full grid to ImageData --------------------------------------------------------------------------


def _steps(stride: Mapping[str, int] | None) -> tuple[int, ...]:
    """`dataset.stride` (factor name -> step; missing factors step 1; None: the full grid) -> 5 steps."""
    stride = dict(stride or {})
    unknown = set(stride) - set(NAMES)
    bad = [f"{k}={v}" for k, v in stride.items() if not isinstance(v, int) or isinstance(v, bool) or v < 1]
    if unknown or bad:
        raise ConfigError(
            f"dataset.stride: {', '.join(sorted(unknown) + bad)}: give a positive integer step "
            f"for any of {', '.join(NAMES)}, or stride=null for the full grid"
        )
    return tuple(stride.get(name, 1) for name in NAMES)


def _sub_grid(steps: tuple[int, ...], sizes: tuple[int, ...]) -> tuple[tuple[int, ...], torch.Tensor]:
    """Keep classes 0, s, 2s, ... of each factor (s its step). Returns the sub-grid's sizes and, for each of its
    cells in grid-index order, the classes `(n, 5)` that cell has in the full grid of `sizes`."""
    sub_sizes = tuple(-(-n // s) for n, s in zip(sizes, steps))  # ceil(n / s)
    return sub_sizes, grid_classes(sub_sizes) * torch.tensor(steps)


def _factor_data(
    name: str,
    packed: np.ndarray,
    sizes: tuple[int, ...],
    values: tuple[tuple[float, ...], ...],
    steps: tuple[int, ...],
    val_size: int,
    split_seed: int,
) -> ImageData:
    """Bit-packed rows `(n, 512)` of a complete grid of `sizes` (grid-index order) -> ImageData with Factors.

    A generator seeded `split_seed` shuffles the cells; the last `val_size` validate. Images become uint8
    `(1, 64, 64)` with pixels 0 or 255; labels are the shape class."""
    n = len(packed)
    if not 1 <= val_size <= n - 1:
        raise ConfigError(
            f"dataset.val_size={val_size}: must be an integer from 1 to {n - 1} "
            f"({name} has {n} images with this stride)"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    classes = grid_classes(sizes)
    splits = []
    for rows in (perm[: n - val_size], perm[n - val_size :]):
        x = np.unpackbits(packed[rows.numpy()], axis=1, count=SIDE * SIDE)  # (m, 4096) of 0/1
        x *= 255
        splits.append((torch.from_numpy(x).view(len(rows), 1, SIDE, SIDE), classes[rows]))
    (train_x, train_c), (val_x, val_c) = splits
    kept = tuple(v[::s] for v, s in zip(values, steps))
    factors = Factors(NAMES, sizes, kept, train_c, val_c)
    log.info("%s: %d images, grid %s (%s)", name, n, "x".join(map(str, sizes)), ", ".join(NAMES))
    return ImageData(name, train_x, train_c[:, 0].clone(), val_x, val_c[:, 0].clone(), factors)


def dsprites(
    data_dir: str, download: bool, stride: Mapping[str, int] | None = None, val_size: int = 1000, split_seed: int = 0
) -> ImageData:
    """The official dSprites file `data_dir/dsprites/dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`, optionally
    thinned by `stride`; `download=true` fetches it first when missing. uint8 `(1, 64, 64)`, pixels 0/255."""
    steps, folder = _steps(stride), Path(data_dir) / "dsprites"
    path = folder / DSPRITES_FILE
    if download and not path.is_file():
        _download_dsprites(folder)
    if not path.is_file():
        raise not_found("dSprites", data_dir, f"dsprites/{DSPRITES_FILE}")
    packed, full_sizes, values = read_dsprites(path)
    sizes, full_classes = _sub_grid(steps, full_sizes)
    bases = torch.tensor([math.prod(full_sizes[i + 1 :]) for i in range(5)])
    packed = packed[(full_classes * bases).sum(dim=1).numpy()]
    return _factor_data("dsprites", packed, sizes, values, steps, val_size, split_seed)


def sprites(
    cache_dir: str, stride: Mapping[str, int] | None = None, val_size: int = 1000, split_seed: int = 0
) -> ImageData:
    """The procedural twin of dSprites (see the module docstring), drawn once per `stride` and cached as
    `cache_dir/sprites/sprites_v<version>_<grid>.npy` (bit-packed, written atomically). uint8 `(1, 64, 64)`,
    pixels 0/255. A close replica of dSprites, not its official pixels."""
    steps = _steps(stride)
    sizes, full_classes = _sub_grid(steps, SIZES)
    grid = f"{'x'.join(map(str, sizes))}_stride{'-'.join(map(str, steps))}"
    path = Path(cache_dir) / "sprites" / f"sprites_v{RENDER_VERSION}_{grid}.npy"
    if path.is_file():
        packed = np.load(path)
        log.info("sprites: read %d cached images from %s", len(packed), path)
    else:
        packed = render(full_classes)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        with open(tmp, "wb") as f:
            np.save(f, packed)
        os.replace(tmp, path)  # atomic: a concurrent job never reads half a file
        log.info("sprites: drew %d images into %s", len(packed), path)
    return _factor_data("sprites", packed, sizes, spec_values(), steps, val_size, split_seed)
