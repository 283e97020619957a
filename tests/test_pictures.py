"""save_pictures: files and sizes, the alternating reconstruction rows, traversal order, RNG and mode hygiene."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vae_sweep.models import conv_vae, mlp_vae
from vae_sweep.pictures import GRID_KEY, pca_2d, save_pictures, traversal_dims

N_IMAGES = 40  # validation images: enough for 4 pairs of rows of n=8
PAD = 2  # torchvision make_grid's default padding, in pixels


def grid_size(rows: int, cols: int, side: int) -> tuple[int, int]:
    """(width, height) in pixels of a make_grid of rows x cols square images with the default padding."""
    return cols * (side + PAD) + PAD, rows * (side + PAD) + PAD


def placement(path) -> tuple[int, int, int, int, int]:
    """(left, top, scale, width, height): where a labelled picture's image grid sits and its size in image pixels,
    as its PNG says (`vae_sweep:grid`)."""
    with Image.open(path) as im:
        left, top, scale, width, height = map(int, im.info[GRID_KEY].split())
    return left, top, scale, width, height


def grid_of(path) -> np.ndarray:
    """The image grid inside a labelled picture, at one pixel per image pixel: (H, W, 3) float in [0, 1]."""
    left, top, scale, width, height = placement(path)
    grid = load(path)[top : top + height * scale : scale, left : left + width * scale : scale]
    assert grid.shape[:2] == (height, width)  # all of it inside the picture
    assert grid[:PAD].min() == 1.0 and grid[:, :PAD].min() == 1.0  # the white padding where the grid starts
    return grid


def grid_extent(path) -> tuple[int, int]:
    """(width, height) of the grid inside a labelled picture, in image pixels."""
    return tuple(grid_of(path).shape[1::-1])


def grid_cell(img: np.ndarray, row: int, col: int, side: int) -> np.ndarray:
    """The (side, side, channels) cell at (row, col) of a make_grid image (H, W, channels)."""
    top, left = PAD + row * (side + PAD), PAD + col * (side + PAD)
    return img[top : top + side, left : left + side]


def load(path) -> np.ndarray:
    """PNG -> (H, W, 3) float in [0, 1]."""
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"), dtype=np.float64) / 255.0


def make_data(shape, n=N_IMAGES, n_classes=10, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *shape, generator=g)  # (N, C, H, W) in [0, 1]
    labels = torch.randint(0, n_classes, (n,), generator=g)  # (N,)
    return x, labels


def make_mlp(latent_dim):
    torch.manual_seed(0)
    return mlp_vae((1, 28, 28), latent_dim, hidden=(64,))


@pytest.mark.parametrize(
    "latent_dim, n_classes",
    [(1, 10), (2, 10), (5, 12)],  # z1 against label; z1/z2 with a legend; PCA with a colorbar (> 10 classes)
)
def test_files_and_sizes(tmp_path, latent_dim, n_classes):
    x, labels = make_data((1, 28, 28), n_classes=n_classes)
    paths = save_pictures(make_mlp(latent_dim), x, labels, tmp_path, n=8)
    expected = {"reconstructions", "samples", "traversals", "latent_scatter"} | (
        {"manifold"} if latent_dim == 2 else set()
    )
    assert set(paths) == expected
    assert {p.name for p in tmp_path.iterdir()} == {f"{name}.png" for name in expected}
    sizes = {}
    for name, path in paths.items():
        with Image.open(path) as im:
            assert im.format == "PNG"
            sizes[name] = im.size
    assert grid_extent(paths["reconstructions"]) == grid_size(8, 8, 28) == (242, 242)
    assert grid_extent(paths["samples"]) == grid_size(8, 8, 28)
    assert grid_extent(paths["traversals"]) == grid_size(latent_dim, 8, 28)
    for name in ("reconstructions", "samples", "traversals"):  # 28-px digits drawn at 2x, with room for labels
        left, top, scale, *_ = placement(paths[name])
        assert scale == 2 and left >= 0 and top > 20
        assert sizes[name][0] >= left + 242 * 2 and sizes[name][1] >= top + grid_size(1, 1, 28)[1] * 2
    for name in ("reconstructions", "traversals"):  # row labels left of the grid, dark text on white
        left, top, *_ = placement(paths[name])
        assert left > 20 and load(paths[name])[top:, : left - 4].min() < 0.3
    if latent_dim == 2:
        assert sizes["manifold"] == grid_size(20, 20, 28)
    assert min(sizes["latent_scatter"]) > 300  # a real figure, not an empty canvas


def test_reconstruction_rows_alternate(tmp_path):
    x, labels = make_data((1, 28, 28))
    model = make_mlp(3)
    img = grid_of(save_pictures(model, x, labels, tmp_path, n=8)["reconstructions"])
    with torch.no_grad():
        recon = torch.sigmoid(model.decode(model.encode(x)[0]))  # posterior-mean reconstructions (N, 1, 28, 28)
    tol = 1 / 255
    for pair in range(4):
        for col in range(8):
            k = pair * 8 + col
            orig_cell = grid_cell(img, 2 * pair, col, 28)[..., 0]
            recon_cell = grid_cell(img, 2 * pair + 1, col, 28)[..., 0]
            np.testing.assert_allclose(orig_cell, x[k, 0].numpy(), atol=tol)
            np.testing.assert_allclose(recon_cell, recon[k, 0].numpy(), atol=tol)
    # the untrained model's reconstructions are far from the noise it was given: the rows are not swapped
    assert np.abs(grid_cell(img, 1, 0, 28)[..., 0] - x[0, 0].numpy()).mean() > 0.1


def test_traversal_rows_follow_kl_order(tmp_path):
    x, labels = make_data((1, 28, 28))
    model = make_mlp(4)
    kl = [0.1, 3.0, 0.0, 1.5]
    assert traversal_dims(4, kl) == [1, 3, 0, 2]
    assert traversal_dims(12) == list(range(10))
    img = grid_of(save_pictures(model, x, labels, tmp_path, kl_per_dim=kl, n=5)["traversals"])
    with torch.no_grad():
        z = model.encode(x[:1])[0].repeat(5, 1)  # (5, L) at the posterior mean of example 0
        z[:, 1] = torch.linspace(-3, 3, 5)  # the dimension with the largest KL comes first
        expected = torch.sigmoid(model.decode(z))
    for col in range(5):
        np.testing.assert_allclose(grid_cell(img, 0, col, 28)[..., 0], expected[col, 0].numpy(), atol=1 / 255)


def test_global_rng_and_mode_untouched(tmp_path):
    x, labels = make_data((1, 28, 28))
    model = make_mlp(5)
    model.train()
    model.decoder.eval()  # a mixed state must come back exactly, too
    torch.manual_seed(123)
    before = torch.get_rng_state()
    save_pictures(model, x, labels, tmp_path / "a", seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    assert model.training and model.encoder.training and not model.decoder.training
    # the pictures' own randomness is reproducible from `seed`
    save_pictures(model, x, labels, tmp_path / "b", seed=7)
    np.testing.assert_array_equal(load(tmp_path / "a" / "samples.png"), load(tmp_path / "b" / "samples.png"))


def test_conv_model_on_colour_images(tmp_path):
    torch.manual_seed(0)
    model = conv_vae((3, 32, 32), latent_dim=2, channels=(8, 16))
    model.train()
    x, labels = make_data((3, 32, 32), n=20, n_classes=3)
    paths = save_pictures(model, x, labels, tmp_path, n=4)
    assert set(paths) == {"reconstructions", "samples", "traversals", "latent_scatter", "manifold"}
    assert model.training
    img = grid_of(paths["reconstructions"])
    assert grid_extent(paths["reconstructions"]) == grid_size(8, 4, 32)  # 4 pairs of rows of 4
    np.testing.assert_allclose(grid_cell(img, 0, 1, 32), x[1].permute(1, 2, 0).numpy(), atol=1 / 255)
    assert grid_extent(paths["samples"]) == grid_size(4, 4, 32)


def test_few_images_shrink_the_reconstruction_grid(tmp_path):
    x, labels = make_data((1, 28, 28), n=5)
    path = save_pictures(make_mlp(2), x, labels, tmp_path, n=8)["reconstructions"]
    assert grid_extent(path) == grid_size(2, 5, 28)  # one pair of rows of the 5 images there are


def test_pca_2d_finds_the_dominant_direction():
    g = torch.Generator().manual_seed(0)
    direction = torch.tensor([3.0, 4.0, 0.0]) / 5
    mu = torch.randn(500, 1, generator=g) * 10 * direction + 0.1 * torch.randn(500, 3, generator=g)  # (500, 3)
    xy, explained = pca_2d(mu)
    assert xy.shape == (500, 2)
    assert explained[0] > 0.99 and explained[0] >= explained[1]
    centred = mu - mu.mean(0)
    assert torch.allclose(xy[:, 0].abs(), (centred @ direction).abs(), atol=0.3)
