"""dSprites and its procedural twin: the official file's layout (a small file in the same format, written here),
the drawn grid against the spec (counts, values, order, pixels, positions, areas), factors, the cache, the
disentanglement_lib net, and one tiny job through the real command line."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from helpers import CONF, cli, compose_config
from vae_sweep import data, sprites
from vae_sweep.errors import ConfigError
from vae_sweep.hydra_api import instantiate_group

# Orientation classes 0, 13, 26, 39 (39 draws the same image as 0) and positions 0, 8, 16, 24: 1,152 images.
SMALL = {"orientation": 13, "posX": 8, "posY": 8}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> data.ImageData:
    return sprites.sprites(str(tmp_path_factory.mktemp("cache")), stride=SMALL, val_size=100)


def _drawn(classes: list[list[int]] | torch.Tensor) -> torch.Tensor:
    """Full-grid classes (N, 5) -> the drawn images as float (N, 64, 64) of 0/1."""
    packed = sprites.render(torch.as_tensor(classes))
    return torch.from_numpy(np.unpackbits(packed, axis=1)).view(-1, 64, 64).float()


def _centroids(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centroid (column, row) in pixels of the on-pixels of (N, 64, 64), pixel centres at k + 0.5."""
    at, area = torch.arange(64) + 0.5, x.sum(dim=(1, 2))
    return (x.sum(1) * at).sum(1) / area, (x.sum(2) * at).sum(1) / area


def test_grid_order_is_dsprites_order():
    assert sprites.grid_classes((2, 3)).tolist() == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]
    classes = sprites.grid_classes(sprites.SIZES)
    assert classes.shape == (737280, 5) and classes[1].tolist() == [0, 0, 0, 0, 1]  # posY fastest
    # dSprites' bases without color: index = classes @ (245760, 40960, 1024, 32, 1)
    idx = classes @ torch.tensor([245760, 40960, 1024, 32, 1])
    assert torch.equal(idx, torch.arange(737280))


def test_counts_values_and_labels(small):
    f = small.factors
    assert f.names == ("shape", "scale", "orientation", "posX", "posY") and f.sizes == (3, 6, 4, 4, 4)
    assert len(small.train_x) == 1052 and len(small.val_x) == 100 and small.shape == (1, 64, 64)
    assert f.values[0] == (1.0, 2.0, 3.0)
    assert f.values[1] == pytest.approx([0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    assert f.values[2] == pytest.approx([2 * math.pi * k / 39 for k in (0, 13, 26, 39)])  # radians
    assert f.values[3] == f.values[4] == pytest.approx([k / 31 for k in (0, 8, 16, 24)])
    assert torch.equal(small.train_y, f.train_classes[:, 0]) and torch.equal(small.val_y, f.val_classes[:, 0])
    assert f.bases == (384, 64, 16, 4, 1)  # 6 * 4 * 4 * 4, 4 * 4 * 4, ...: posY fastest


def test_pixels_are_binary_and_as_float_gives_0_and_1(small):
    assert small.train_x.dtype == torch.uint8 and set(small.train_x.unique().tolist()) == {0, 255}
    assert set(data.as_float(small.val_x).unique().tolist()) == {0.0, 1.0}
    assert (small.train_x.flatten(1) > 0).sum(1).min() > 50  # every image holds a sprite


def test_images_for_serves_train_and_val_rows(small):
    f = small.factors
    assert torch.equal(small.images_for(f.train_classes), small.train_x)
    assert torch.equal(small.images_for(f.val_classes), small.val_x)
    mixed = torch.cat([f.val_classes[:3], f.train_classes[:2]])
    got = small.images_for(mixed)
    assert got.shape == (5, 1, 64, 64) and got.dtype == torch.uint8
    assert torch.equal(got[:3], small.val_x[:3]) and torch.equal(got[3:], small.train_x[:2])
    with pytest.raises(ValueError, match=r"integers in 0..size-1 for sizes \(3, 6, 4, 4, 4\)"):
        small.images_for(torch.tensor([[0, 0, 4, 0, 0]]))
    assert small.to("cpu").factors.sizes == f.sizes


def test_factors_must_cover_the_grid_once():
    classes = sprites.grid_classes((2, 2))
    with pytest.raises(ValueError, match="exactly once"):
        data.Factors(("a", "b"), (2, 2), ((0, 1), (0, 1)), classes[:3], classes[:0])
    with pytest.raises(ValueError, match="exactly once"):
        data.Factors(("a", "b"), (2, 2), ((0, 1), (0, 1)), classes, classes[:1])


def test_index_order_and_centres(small):
    """Grid cells in index order land where the spec puts them: centre (16 + 32 posX, 16 + 32 posY) px."""
    cells = sprites.grid_classes(small.factors.sizes)  # (1152, 5), posY fastest
    x = small.images_for(cells)[:, 0].float() / 255
    col, row = _centroids(x)
    pos_x, pos_y = (torch.tensor(small.factors.values[k])[cells[:, k]] for k in (3, 4))
    assert (col - (16 + 32 * pos_x)).abs().max() < 0.5 and (row - (16 + 32 * pos_y)).abs().max() < 0.5
    assert (row[1] - row[0]).item() == pytest.approx(32 * 8 / 31, abs=0.5) and col[1] == col[0]


def test_orientation_39_draws_orientation_0(small):
    cells = sprites.grid_classes(small.factors.sizes)
    first, last = cells[cells[:, 2] == 0], cells[cells[:, 2] == 3]  # classes 0 and 39 of the full grid
    assert torch.equal(small.images_for(first), small.images_for(last.clone()))
    middle = cells[cells[:, 2] == 1]  # 120 degrees: the ellipse and the heart look different
    assert not torch.equal(small.images_for(first), small.images_for(middle))


def test_areas_match_the_spec():
    """Mean area over all 32 x 32 positions, scale 1, orientation 0, against the shapes' true areas in px."""
    pos = sprites.grid_classes((32, 32))
    areas = {}
    for shape, scale in ((0, 5), (1, 5), (2, 5), (0, 0)):
        fixed = torch.tensor([shape, scale, 0]).expand(len(pos), 3)
        areas[shape, scale] = _drawn(torch.cat([fixed, pos], dim=1)).sum(dim=(1, 2))
    square = areas[0, 5]
    # the 19.2 px side covers 19 or 20 pixel centres per axis, by sub-pixel offset: 20 x 20 = 400 at position 0
    assert set(square.tolist()) <= {361.0, 380.0, 400.0} and square[0] == 400
    assert square.mean() == pytest.approx(19.2**2, rel=0.01)  # 368.6
    assert areas[0, 0].mean() == pytest.approx(9.6**2, rel=0.02)  # scale 0.5
    assert areas[1, 5].mean() == pytest.approx(math.pi * 12.8 * 7.2, rel=0.01)  # 289.5
    assert areas[2, 5].mean() == pytest.approx(244.4, rel=0.02)  # the heart curve's area 3.660 x 8.78 x 7.60


def test_heart_size_symmetry_and_rotation_direction():
    heart, ellipse = _drawn([[2, 5, 0, 0, 0], [1, 5, 5, 15, 15]])  # ellipse at 46 degrees
    rows, cols = heart.sum(1).nonzero().flatten(), heart.sum(0).nonzero().flatten()
    # about 20 px wide and 17 px tall at scale 1: an extent of 17 px covers 16 or 17 pixel centres
    assert len(cols) in (19, 20) and len(rows) in (16, 17)
    assert torch.equal(heart, heart.flip(1).roll(32, 1))  # mirror image about column 16 (centre x = 16)
    widths = heart.sum(1)[rows]
    assert widths.argmax() < len(rows) // 2 and widths[-1] <= widths.max() / 4  # lobes up, tip down
    col, row = _centroids(ellipse[None])
    ys, xs = ellipse.nonzero().float().T + 0.5
    # counter-clockwise as displayed: the long axis rises to the right, so column and row are anti-correlated
    assert ((xs - col) * (ys - row)).mean() < -7  # about -14 px^2


def test_rendering_does_not_depend_on_the_batch():
    cells = sprites.grid_classes(sprites.SIZES)[::997]  # 740 cells of every shape
    forward, backward = sprites.render(cells), sprites.render(cells.flip(0), chunk=100)
    assert np.array_equal(forward, backward[::-1])


def test_cache_is_written_atomically_and_read_back(tmp_path, monkeypatch):
    first = sprites.sprites(str(tmp_path), stride=SMALL, val_size=100)
    (cache,) = (tmp_path / "sprites").iterdir()
    assert cache.name == "sprites_v1_3x6x4x4x4_stride1-1-13-8-8.npy" and not list(tmp_path.rglob("*.tmp*"))
    assert np.load(cache).shape == (1152, 512)  # 1 bit per pixel
    monkeypatch.setattr(sprites, "render", lambda *a, **k: pytest.fail("drew again instead of reading the cache"))
    again = sprites.sprites(str(tmp_path), stride=SMALL, val_size=100)
    assert torch.equal(again.train_x, first.train_x) and torch.equal(again.val_x, first.val_x)


def test_stride_and_val_size_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"^dataset.stride: posZ: give a positive integer step for any of shape,"):
        sprites.sprites(str(tmp_path), stride={"posZ": 2})
    with pytest.raises(ConfigError, match=r"^dataset.stride: posX=0: "):
        sprites.sprites(str(tmp_path), stride={"posX": 0})
    with pytest.raises(ConfigError, match=r"^dataset.val_size=1152: must be an integer from 1 to 1151 "):
        sprites.sprites(str(tmp_path), stride=SMALL, val_size=1152)


# --- the official file, in a small grid: color 1, shape 3, scale 2, orientation 2, posX 2, posY 2 ---------------

FILE_SIZES = (1, 3, 2, 2, 2, 2)


def _write_dsprites(folder, drop_last: bool = False) -> np.ndarray:
    """The release's .npz layout with rows shuffled; image i has pixel (row 0, column grid index) on, and a
    pickled `metadata` dict as the release has. Returns latents_classes as written."""
    n = math.prod(FILE_SIZES)
    classes = sprites.grid_classes(FILE_SIZES).numpy()  # (48, 6) int64
    values = np.stack(
        [
            classes[:, 0] + 1.0,
            classes[:, 1] + 1.0,
            0.5 + 0.5 * classes[:, 2],
            classes[:, 3] * math.pi,
            classes[:, 4] * 1.0,
            classes[:, 5] * 1.0,
        ],
        axis=1,
    )
    imgs = np.zeros((n, 64, 64), dtype=np.uint8)
    imgs[np.arange(n), 0, np.arange(n)] = 1
    order = np.random.default_rng(0).permutation(n)[: n - drop_last]
    folder.mkdir(parents=True)
    np.savez_compressed(
        folder / sprites.DSPRITES_FILE,
        imgs=imgs[order],
        latents_values=values[order],
        latents_classes=classes[order],
        metadata=np.array({"title": "dSprites"}, dtype=object),
    )
    return classes[order]


def test_dsprites_file_layout_and_mapping(tmp_path):
    written = _write_dsprites(tmp_path / "dsprites")
    with np.load(tmp_path / "dsprites" / sprites.DSPRITES_FILE, allow_pickle=True) as z:
        assert z["imgs"].dtype == np.uint8 and z["latents_values"].dtype == np.float64
        assert z["latents_classes"].dtype == np.int64 and z["latents_classes"].shape == written.shape
    d = sprites.dsprites(str(tmp_path), download=False, val_size=8)
    f = d.factors
    assert f.names == sprites.NAMES and f.sizes == FILE_SIZES[1:] and len(d.train_x) == 40
    assert f.values[0] == (1.0, 2.0, 3.0) and f.values[1] == (0.5, 1.0) and f.values[2] == (0.0, math.pi)
    cells = sprites.grid_classes(f.sizes)
    x = d.images_for(cells)[:, 0]  # (48, 64, 64) in grid order
    assert set(x.unique().tolist()) == {0, 255} and x.flatten(1).sum(1).tolist() == [255] * 48
    assert x[:, 0].argmax(1).tolist() == list(range(48))  # image of grid index i has column i on
    assert torch.equal(d.train_y, f.train_classes[:, 0])

    thin = sprites.dsprites(str(tmp_path), download=False, stride={"posX": 2, "shape": 2}, val_size=8)
    assert thin.factors.sizes == (2, 2, 2, 1, 2) and thin.factors.values[0] == (1.0, 3.0)
    got = thin.images_for(torch.tensor([[1, 1, 1, 0, 1]]))[0, 0, 0].argmax().item()
    assert got == int(np.array([2, 1, 1, 0, 1]) @ np.array([16, 8, 4, 2, 1]))  # shape class 2 of the file


def test_dsprites_missing_or_incomplete(tmp_path):
    with pytest.raises(ConfigError) as err:
        sprites.dsprites(str(tmp_path), download=False)
    msg = str(err.value)
    assert msg.startswith(f"dataset.data_dir: dSprites not found under '{tmp_path}' with dataset.download=false; ")
    assert f"dsprites/{sprites.DSPRITES_FILE}" in msg and "\n" not in msg
    _write_dsprites(tmp_path / "dsprites", drop_last=True)
    with pytest.raises(ConfigError, match=r"is not the dSprites file: need imgs \(N, 64, 64\)"):
        sprites.dsprites(str(tmp_path), download=False)


def test_sprites_yaml_through_load(tmp_path):
    root = OmegaConf.create({"data_dir": str(tmp_path), "dataset": OmegaConf.load(CONF / "dataset" / "sprites.yaml")})
    root.dataset.stride = SMALL
    d = data.load(root.dataset, "cpu")
    assert d.name == "sprites" and d.factors.sizes == (3, 6, 4, 4, 4) and (tmp_path / "sprites").is_dir()
    data.clear_cache()
    default = compose_config(["dataset=sprites"]).dataset.stride
    assert {k: default[k] for k in sprites.NAMES} == {"shape": 1, "scale": 1, "orientation": 4, "posX": 2, "posY": 2}


# --- the disentanglement_lib net ---------------------------------------------------------------------------------


def test_locatello_net_shapes_and_layers():
    net = instantiate_group(
        compose_config(["model=locatello", "latent_dim=10"]).model, "model", input_shape=(1, 64, 64)
    )
    x = torch.rand(4, 1, 64, 64)
    logits, mu, logvar = net(x)
    assert logits.shape == (4, 1, 64, 64) and mu.shape == logvar.shape == (4, 10)
    convs = [
        (m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0])
        for m in net.encoder
        if isinstance(m, torch.nn.Conv2d)
    ]
    assert convs == [(1, 32, 4, 2), (32, 32, 4, 2), (32, 64, 2, 2), (64, 64, 2, 2)]
    dec = [
        (m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0])
        for m in net.decoder
        if isinstance(m, torch.nn.ConvTranspose2d)
    ]
    assert dec == [(64, 64, 4, 2), (64, 32, 4, 2), (32, 32, 4, 2), (32, 1, 4, 2)]
    fcs = [(m.in_features, m.out_features) for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert fcs == [(1024, 256), (256, 10), (256, 10), (10, 256), (256, 1024)]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())


def test_locatello_refuses_28x28():
    with pytest.raises(ConfigError, match=r"^model=locatello needs 64x64 images .* gives 1x28x28 \(C x H x W\)"):
        instantiate_group(compose_config(["model=locatello"]).model, "model", input_shape=(1, 28, 28))


@pytest.mark.slow
def test_tiny_job_on_sprites(tmp_path):
    out = tmp_path / "run"
    args = [
        "dataset=sprites",
        "model=locatello",
        "latent_dim=10",
        "debug=tiny",
        "eval.disentanglement.samples=1000",  # the scores' path, at a tenth of its cost (about 2 CPU-minutes)
        "eval.disentanglement.batch_points=100",
        f"data_dir={tmp_path / 'data'}",
        f"hydra.run.dir={out}",
    ]
    done = cli(args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["steps"] == 3 and metrics["dataset"] == "sprites"
    assert metrics["model"] == "locatello" and metrics["params"] == sum(
        p.numel()
        for p in instantiate_group(
            compose_config(["model=locatello", "latent_dim=10"]).model, "model", input_shape=(1, 64, 64)
        ).parameters()
    )
    assert (tmp_path / "data" / "sprites" / "sprites_v1_3x6x10x16x16_stride1-1-4-2-2.npy").is_file()
    refused = cli(
        ["dataset=mnist_5k", "model=locatello", "debug=tiny", f"hydra.run.dir={tmp_path / 'no'}"], cwd=tmp_path
    )
    assert refused.returncode != 0 and "error: model=locatello needs 64x64 images" in refused.stderr
