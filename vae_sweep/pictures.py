"""The pictures every run writes beside its metrics: reconstructions, prior samples, traversals, latent scatter.

All of them come from `save_pictures`, which runs the model in eval mode under `torch.inference_mode()` and
draws any randomness from its own `torch.Generator`, so a training run that calls it mid-way keeps its RNG
stream and its train/eval mode. Image grids use torchvision's `make_grid` (default 2-px padding); plots use
`matplotlib.figure.Figure` directly (Agg, no pyplot global state, no display needed).

File names are part of the documented run-output format (README, "Run outputs"):
`reconstructions.png`, `samples.png`, `traversals.png`, `latent_scatter.png`, and `manifold.png` when the
latent space is 2-D.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from vae_sweep.evaluate import eval_mode
from vae_sweep.models import VAE

log = logging.getLogger(__name__)

RECON_PAIRS = 4  # pairs of rows (originals, reconstructions) in reconstructions.png
MAX_TRAVERSAL_ROWS = 10  # latent dimensions shown in traversals.png
TRAVERSAL_RANGE = 3.0  # each traversed dimension goes from -3 to +3 (prior standard deviations)
MANIFOLD_SIDE = 20  # manifold.png is a 20 x 20 grid over the 2-D latent plane
ENCODE_BATCH = 512  # examples per forward pass when encoding the whole validation set


PAD = 2  # pixels between images in a grid (torchvision make_grid's default)
GRID_PIXELS = 56  # each image of a grid is drawn at an integer scale that makes it about this many pixels high
FONT = 9  # points, at DPI: labels that stay readable at the picture's own size
DPI = 100
# PNG text entry "left top scale width height": where the image grid sits in a labelled picture (its top left corner,
# in the picture's pixels), the integer it is scaled by, and its size in image pixels (torchvision's make_grid's)
GRID_KEY = "vae_sweep:grid"
# zlib level 1 rather than matplotlib's 6: a job's PNGs encode in half the time (benchmarks/breakdown.py) for files
# about 10 % larger; every run and every sweep trial writes four of them
PNG = {"compress_level": 1}


def save_image(images: torch.Tensor, path: Path, nrow: int) -> None:
    """torchvision's grid writer, imported here rather than at start-up (it costs a second or more)."""
    from torchvision.utils import save_image as write_grid

    write_grid(images, path, nrow=nrow)


def text_width(text: str, size: float = FONT) -> float:
    """The width in pixels at DPI of `text` set in matplotlib's default font at `size` points (its longest line)."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    measure = TextToPath()
    return (
        max(
            measure.get_text_width_height_descent(line, FontProperties(size=size), ismath=False)[0]
            for line in text.splitlines() or [""]
        )
        * DPI
        / 72
    )


def save_labelled_grid(
    images: torch.Tensor,
    path: Path,
    nrow: int,
    row_labels: Sequence[str],
    title: str,
    col_labels: Sequence[str] = (),
    col_title: str = "",
) -> Path:
    """A grid of images (B, C, H, W) in [0, 1], `nrow` to a row, with a label left of each row, a title above and
    optional column labels below. The grid is placed pixel for pixel (`figimage`, scaled by an integer, never
    resampled), and the picture is sized from the measured labels, so no label is clipped. Its PNG text entry
    `vae_sweep:grid` says where the grid sits (GRID_KEY)."""
    from matplotlib.figure import Figure
    from matplotlib.transforms import IdentityTransform
    from torchvision.utils import make_grid

    height = images.shape[-2]
    scale = max(1, round(GRID_PIXELS / height))
    grid = make_grid(images.detach().float().cpu(), nrow=nrow, padding=PAD, pad_value=1.0)  # (3, H', W')
    pixels = grid.clamp(0, 1).permute(1, 2, 0).numpy().repeat(scale, axis=0).repeat(scale, axis=1)  # (sH', sW', 3)
    line = FONT * DPI / 72  # a line of text, in pixels
    left = int(max(map(text_width, row_labels), default=0)) + 18
    top = int(line * (1.6 + title.count("\n"))) + 8
    bottom = int(line * (bool(col_labels) + bool(col_title)) * 1.5) + 8
    width = max(left + pixels.shape[1] + 8, int(text_width(title, FONT + 1)) + 16)
    height_px = top + pixels.shape[0] + bottom
    fig = Figure(figsize=(width / DPI, height_px / DPI), dpi=DPI)
    fig.figimage(pixels, xo=left, yo=bottom, origin="upper")
    pixel = IdentityTransform()  # display pixels, from the bottom left
    cell = (height + PAD) * scale
    for i, label in enumerate(row_labels):
        y = bottom + pixels.shape[0] - (PAD * scale + i * cell + height * scale / 2)
        fig.text(left - 6, y, label, transform=pixel, ha="right", va="center", fontsize=FONT)
    step = (images.shape[-1] + PAD) * scale
    for j, label in enumerate(col_labels):
        x = left + PAD * scale + j * step + images.shape[-1] * scale / 2
        fig.text(x, bottom - 4, label, transform=pixel, ha="center", va="top", fontsize=FONT - 1)
    if col_title:
        fig.text(left + pixels.shape[1] / 2, 4, col_title, transform=pixel, ha="center", va="bottom", fontsize=FONT - 1)
    fig.text(width / 2, height_px - 6, title, transform=pixel, ha="center", va="top", fontsize=FONT + 1)
    where = f"{left} {top} {scale} {grid.shape[2]} {grid.shape[1]}"
    fig.savefig(path, dpi=DPI, metadata={GRID_KEY: where}, pil_kwargs=PNG)
    return path


def save_pictures(
    model: VAE,
    x: torch.Tensor,
    labels: torch.Tensor,
    out_dir: Path,
    kl_per_dim: Sequence[float] | None = None,
    n: int = 8,
    seed: int = 0,
    caption: str = "",
) -> dict[str, Path]:
    """Write the run's pictures into `out_dir` and return `{name: path}` (name = file stem).

    x: (N, C, H, W) float32 in [0, 1], validation images on the model's device; labels: (N,) int64.
    kl_per_dim: (L,) KL per latent dimension in nats (any consistent unit works: only the order is used),
    to show the most informative dimensions first in the traversals, and label their rows. n: images per grid row.
    caption: what made the pictures (`model=mlp loss=beta β=1`), in the samples' title.
    The model's train/eval mode (of every submodule) and the global RNG state are left as they were.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator(device="cpu").manual_seed(seed)  # private RNG: samples drawn on CPU, then moved
    with eval_mode(model):
        mu = posterior_means(model, x)  # (N, L)
        paths = {
            "reconstructions": _save_reconstructions(model, x, mu, out_dir, n),
            "samples": _save_samples(model, out_dir, n, gen, x.device, caption),
            "traversals": _save_traversals(model, mu[0], out_dir, n, kl_per_dim),
            "latent_scatter": save_latent_scatter(mu, labels, out_dir / "latent_scatter.png"),
        }
        if model.latent_dim == 2:
            paths["manifold"] = _save_manifold(model, out_dir, x.device)
    log.info("wrote %d pictures to %s", len(paths), out_dir)
    return paths


def posterior_means(model: VAE, x: torch.Tensor, batch_size: int = ENCODE_BATCH) -> torch.Tensor:
    """Posterior means E_q[z|x] of all x, in batches: x (N, C, H, W) -> mu (N, L)."""
    return torch.cat([model.encode(xb)[0] for xb in x.split(batch_size)])


def _image_mean(model: VAE, z: torch.Tensor) -> torch.Tensor:
    """Decoder mean image sigmoid(logits): z (B, L) -> (B, C, H, W) in [0, 1]."""
    return torch.sigmoid(model.decode(z))


def _save_reconstructions(model: VAE, x: torch.Tensor, mu: torch.Tensor, out_dir: Path, n: int) -> Path:
    """Originals and their reconstructions from the posterior mean in alternating rows of `n`.

    Row 1: x[0:n], row 2: their reconstructions, row 3: x[n:2n], ... for up to RECON_PAIRS pairs
    (fewer, and fewer columns, when x has fewer than RECON_PAIRS * n images).
    """
    cols = min(n, len(x))
    pairs = min(RECON_PAIRS, len(x) // cols)
    orig = x[: pairs * cols]  # (P * cols, C, H, W)
    recon = _image_mean(model, mu[: pairs * cols])  # (P * cols, C, H, W)
    shape = orig.shape[1:]
    rows = torch.stack([orig.view(pairs, cols, *shape), recon.view(pairs, cols, *shape)], dim=1)
    path = out_dir / "reconstructions.png"
    labels = ["original", "reconstruction"] * pairs
    title = "Validation images and their reconstructions\n(decoded means at the posterior mean)"
    return save_labelled_grid(rows.reshape(-1, *shape), path, cols, labels, title)  # (P, 2, cols, ...) row by row


def _save_samples(
    model: VAE, out_dir: Path, n: int, gen: torch.Generator, device: torch.device, caption: str = ""
) -> Path:
    """n * n decoded prior samples z ~ p(z) (the model's prior), drawn from `gen` on CPU so any device gives the same z."""
    z = model.prior.sample(n * n, model.latent_dim, generator=gen).to(device)  # (n*n, L)
    title = f"Decoded means of z ~ p(z), the model's prior, latent_dim={model.latent_dim}" + (
        f"\n{caption}" if caption else ""
    )
    return save_labelled_grid(_image_mean(model, z), out_dir / "samples.png", n, [], title)


def traversal_dims(latent_dim: int, kl_per_dim: Sequence[float] | None = None) -> list[int]:
    """Latent dimensions to traverse, at most MAX_TRAVERSAL_ROWS: largest KL first if given, else 0, 1, ..."""
    if kl_per_dim is None:
        order = list(range(latent_dim))
    else:
        if len(kl_per_dim) != latent_dim:
            raise ValueError(f"kl_per_dim has {len(kl_per_dim)} entries for latent_dim={latent_dim}")
        kl = torch.as_tensor(list(kl_per_dim), dtype=torch.float64)
        order = torch.argsort(kl, descending=True, stable=True).tolist()
    return order[:MAX_TRAVERSAL_ROWS]


def _save_traversals(model: VAE, mu0: torch.Tensor, out_dir: Path, n: int, kl_per_dim: Sequence[float] | None) -> Path:
    """One row per traversed dimension d: z = mu0 with z[d] in linspace(-3, 3, n). mu0: (L,) of example 0.
    Each row says its dim and, given kl_per_dim, its KL in nats; each column its value of z[d]."""
    dims = traversal_dims(model.latent_dim, kl_per_dim)
    rows = [f"z{d}" + (f"  KL {kl_per_dim[d]:.2f} nats" if kl_per_dim is not None else "") for d in dims]
    steps = [f"{v:+.1f}" for v in torch.linspace(-TRAVERSAL_RANGE, TRAVERSAL_RANGE, n).tolist()]
    title = "Latent traversals" + (", largest KL first" if kl_per_dim is not None else "")
    where = "value of the traversed z (the others at the posterior mean of validation image 0)"
    images = traversal_images(model, mu0, dims, n)
    return save_labelled_grid(images, out_dir / "traversals.png", n, rows, title, steps, where)


def traversal_images(model: VAE, mu0: torch.Tensor, dims: Sequence[int], n: int) -> torch.Tensor:
    """Decoded means along each latent dim of `dims` in turn: z = mu0 (L,) with z[d] in linspace(-3, 3, n).
    Returns (len(dims) * n, C, H, W) in [0, 1], row by row. Call it in eval mode (`evaluate.eval_mode`)."""
    steps = torch.linspace(-TRAVERSAL_RANGE, TRAVERSAL_RANGE, n, device=mu0.device)  # (n,)
    z = mu0.repeat(len(dims), n, 1)  # (D, n, L)
    for row, d in enumerate(dims):
        z[row, :, d] = steps
    return _image_mean(model, z.view(-1, model.latent_dim))


def _save_manifold(model: VAE, out_dir: Path, device: torch.device) -> Path:
    """Decoded means over a 20 x 20 grid of the 2-D latent plane at Gaussian quantiles 0.05 ... 0.95.

    z1 grows left to right, z2 grows bottom to top (as on the scatter plot's axes).
    """
    q = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, MANIFOLD_SIDE))  # (S,)
    z2, z1 = torch.meshgrid(q.flip(0), q, indexing="ij")  # (S, S) each, row i = one value of z2
    z = torch.stack([z1, z2], dim=-1).view(-1, 2).to(device)  # (S*S, 2)
    path = out_dir / "manifold.png"
    save_image(_image_mean(model, z), path, nrow=MANIFOLD_SIDE)
    return path


def pca_2d(mu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Project centred mu (N, L) onto its first two principal components -> (N, 2) and the fraction of
    variance each explains (2,). Uses a deterministic SVD (torch.pca_lowrank would draw from the global RNG)."""
    centred = mu - mu.mean(dim=0)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)  # s: (min(N, L),), vh: (min(N, L), L)
    var = s**2
    explained = var[:2] / var.sum().clamp_min(torch.finfo(var.dtype).tiny)
    return centred @ vh[:2].T, explained


def _scatter_coords(mu: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, str, str]:
    """(N, 2) plot coordinates and axis labels for mu (N, L): z1 vs label, z1/z2, or PC1/PC2."""
    if mu.shape[1] == 1:
        return torch.stack([mu[:, 0], labels.to(mu.dtype)], dim=1), "z1", "label"
    if mu.shape[1] == 2:
        return mu, "z1", "z2"
    xy, explained = pca_2d(mu)
    pc1, pc2 = (100 * explained).tolist()
    return xy, f"PC1 ({pc1:.1f}% of variance)", f"PC2 ({pc2:.1f}% of variance)"


def save_latent_scatter(mu: torch.Tensor, labels: torch.Tensor, path: Path) -> Path:
    """Scatter of posterior means mu (N, L) coloured by labels (N,): a legend for up to 10 classes, beside the axes
    so that it covers no point, else a colorbar. More than 2 dimensions are projected onto the first two principal
    components. The margins are fixed: matplotlib's constrained layout drew the figure twice, a third of its cost
    (benchmarks/breakdown.py), and the legend's `loc="best"` searched the 500 points for a free corner."""
    mu, labels = mu.detach().float().cpu(), labels.detach().cpu()
    xy, xlabel, ylabel = _scatter_coords(mu, labels)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 5))
    fig.subplots_adjust(left=0.13, right=0.84, bottom=0.11, top=0.92)
    ax = fig.add_subplot()
    classes = labels.unique().tolist()
    size = 12 if len(mu) <= 2000 else 4
    if len(classes) <= 10:
        for i, c in enumerate(classes):
            pts = xy[labels == c]  # "Ci" is the i-th colour of the default (tab10) cycle
            ax.scatter(pts[:, 0], pts[:, 1], s=size, alpha=0.7, color=f"C{i}", label=str(c))
        ax.legend(title="label", markerscale=2, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        points = ax.scatter(xy[:, 0], xy[:, 1], s=size, alpha=0.7, c=labels.numpy(), cmap="viridis")
        fig.colorbar(points, ax=ax, label="label")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.suptitle(f"Posterior means of {len(mu)} validation images (latent_dim={mu.shape[1]})", fontsize=11, y=0.97)
    fig.savefig(path, dpi=100, pil_kwargs=PNG)
    return path
