"""Datasets that a user downloads (torchvision's MNIST and FashionMNIST, CIFAR-10, CelebA), read from their
official on-disk formats into whole tensors (`vae_sweep.data.ImageData`), and the one-line error for one that is
missing. With `dataset.download=true` torchvision fetches them; the tests write files in the same formats.
Builders are named by `_target_` in `conf/dataset/<name>.yaml`, as the offline ones in vae_sweep/data.py are.
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import torch

from vae_sweep.data import ImageData
from vae_sweep.errors import ConfigError

log = logging.getLogger(__name__)


def not_found(what: str, data_dir: str, holding: str) -> ConfigError:
    """The one-line error for a dataset missing from `data_dir` while `download` is off."""
    where = os.path.abspath(data_dir)
    return ConfigError(
        f"dataset.data_dir: {what} not found under '{where}' with dataset.download=false; set "
        f"dataset.download=true to fetch it, or point dataset.data_dir at a folder holding {holding}"
    )


def torchvision_mnist(variant: str, data_dir: str, download: bool) -> ImageData:
    """MNIST or FashionMNIST from torchvision's on-disk format, uint8 `(1, 28, 28)`.

    The official train split (60,000) trains; the official test split (10,000) validates. Whole tensors are
    taken from `.data` and `.targets`, never through per-sample transforms.
    """
    import torchvision.datasets

    variants = ("MNIST", "FashionMNIST")
    if variant not in variants:
        raise ConfigError(f"dataset.variant={variant}: must be one of {', '.join(variants)}")
    cls = getattr(torchvision.datasets, variant)
    splits = []
    for train in (True, False):
        try:
            ds = cls(root=data_dir, train=train, download=download)
        except RuntimeError as e:
            if download or not str(e).startswith("Dataset not found"):
                raise
            raise not_found(variant, data_dir, f"{variant}/raw") from None
        splits += [ds.data.unsqueeze(1).contiguous(), ds.targets.long()]  # (N, 1, 28, 28) uint8, (N,)
    log.info("%s: %d train, %d val images from %s", variant, len(splits[0]), len(splits[2]), data_dir)
    return ImageData(variant.lower(), *splits)


def _read_cifar_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """One CIFAR-10 python pickle -> uint8 images `(N, 3, 32, 32)` and int64 labels `(N,)`.

    Each row of b"data" is 3072 bytes: 1024 red, then 1024 green, then 1024 blue, each row-major 32x32.
    """
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    x = torch.as_tensor(data, dtype=torch.uint8).reshape(-1, 3, 32, 32)
    return x, torch.as_tensor(labels, dtype=torch.long)


def cifar10(data_dir: str, download: bool) -> ImageData:
    """CIFAR-10, uint8 `(3, 32, 32)`: the five training batches (50,000) train, the test batch (10,000) validates."""
    folder = Path(data_dir) / "cifar-10-batches-py"
    if download:
        import torchvision.datasets

        torchvision.datasets.CIFAR10(root=data_dir, train=True, download=True)  # fetches, verifies MD5s, extracts
    # We read the pickles ourselves rather than through torchvision's CIFAR10: its constructor checks every file's
    # MD5 against the official release, which rejects any other copy (such as the small files the tests write).
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    if not all((folder / n).is_file() for n in names):
        raise not_found("CIFAR10", data_dir, "cifar-10-batches-py/ (data_batch_1..5 and test_batch)")
    train = [_read_cifar_batch(folder / n) for n in names[:5]]
    val_x, val_y = _read_cifar_batch(folder / "test_batch")
    train_x, train_y = torch.cat([x for x, _ in train]), torch.cat([y for _, y in train])
    log.info("cifar10: %d train, %d val images from %s", len(train_x), len(val_x), folder)
    return ImageData("cifar10", train_x, train_y, val_x, val_y)


def _read_celeba_lists(folder: Path) -> tuple[dict[str, int], list[str], dict[str, list[int]]]:
    """Parse `list_eval_partition.txt` ("000001.jpg 0"; 0 train, 1 valid, 2 test) and `list_attr_celeba.txt`
    (a count line, a line of attribute names, then "000001.jpg -1 1 ..."). Returns partition per file,
    attribute names, and per file its attributes as 0/1."""
    partition = {}
    for line in (folder / "list_eval_partition.txt").read_text().splitlines():
        if line.strip():
            file, part = line.split()
            partition[file] = int(part)
    lines = (folder / "list_attr_celeba.txt").read_text().splitlines()
    names = lines[1].split()
    attrs = {}
    for line in lines[2:]:
        if line.strip():
            file, *values = line.split()
            attrs[file] = [int(v == "1") for v in values]
    return partition, names, attrs


def _decode_celeba(paths: list[Path], image_size: int, crop: int) -> torch.Tensor:
    """Decode JPEGs, centre-crop `crop` x `crop` pixels and resize to `image_size`: uint8 `(N, 3, S, S)`."""
    import numpy as np
    from PIL import Image  # torchvision.io's decoders are deprecated since torchvision 0.29
    from torchvision.transforms.v2 import functional as F
    from tqdm import tqdm

    out = torch.empty((len(paths), 3, image_size, image_size), dtype=torch.uint8)
    for i, path in enumerate(tqdm(paths, desc=f"celeba {image_size}px", unit="img", leave=False)):
        with Image.open(path) as pil:
            img = torch.from_numpy(np.array(pil.convert("RGB"))).permute(2, 0, 1)  # (3, 218, 178) uint8
        if crop > min(img.shape[1:]):
            raise ConfigError(
                f"dataset.crop={crop}: must be from 1 to {min(img.shape[1:])}, the shorter side "
                f"of the images (CelebA's aligned images are 178x218)"
            )
        img = F.center_crop(img, [crop, crop])
        out[i] = F.resize(img, [image_size, image_size], antialias=True)
    return out


def _build_celeba_cache(data_dir: str, download: bool, image_size: int, crop: int, max_examples: int | None) -> dict:
    """Download if asked, then decode the train (partition 0) and valid (partition 1) images, each capped at
    `max_examples`. Returns uint8 `{train,val}_x` `(N, 3, S, S)`, bool `{train,val}_attr` `(N, 40)`, `attr_names`."""
    if download:
        import torchvision.datasets

        torchvision.datasets.CelebA(root=data_dir, split="all", download=True)
    # The files are read directly, as for CIFAR-10, since torchvision's CelebA checks official MD5s.
    folder = Path(data_dir) / "celeba"
    needed = [folder / "img_align_celeba", folder / "list_eval_partition.txt", folder / "list_attr_celeba.txt"]
    if not all(p.exists() for p in needed):
        raise not_found(
            "CelebA",
            data_dir,
            "celeba/img_align_celeba, celeba/list_eval_partition.txt and celeba/list_attr_celeba.txt",
        )
    partition, names, attrs = _read_celeba_lists(folder)
    cache: dict = {"attr_names": names}
    for split, part in (("train", 0), ("val", 1)):
        files = sorted(f for f, p in partition.items() if p == part)[:max_examples]
        cache[f"{split}_x"] = _decode_celeba([folder / "img_align_celeba" / f for f in files], image_size, crop)
        attr = torch.tensor([attrs[f] for f in files], dtype=torch.bool)
        cache[f"{split}_attr"] = attr.reshape(len(files), len(names))
    return cache


def celeba(
    data_dir: str,
    download: bool,
    image_size: int = 64,
    crop: int = 148,
    max_examples: int | None = None,
    label_attribute: str = "Male",
) -> ImageData:
    """CelebA aligned faces, uint8 `(3, image_size, image_size)`, centre-cropped to `crop` pixels, then resized.

    The official train partition trains and the official valid partition validates, each capped at
    `max_examples`. Labels are `label_attribute == 1`. Decoding runs once; the result is cached under
    `<data_dir>/celeba/` as a .pt of uint8 tensors with all 40 attributes, so a new label costs nothing.
    """
    for key, value in (("image_size", image_size), ("crop", crop), ("max_examples", max_examples)):
        if value is not None and value < 1:
            raise ConfigError(
                f"dataset.{key}={value}: must be a positive integer"
                + (" or null for no cap" if key == "max_examples" else "")
            )
    cache_path = Path(data_dir) / "celeba" / f"cache_{image_size}px_crop{crop}_max{max_examples or 'all'}.pt"
    if cache_path.is_file():
        cache = torch.load(cache_path, weights_only=True)
        log.info("celeba: read cached tensors %s", cache_path)
    else:
        cache = _build_celeba_cache(data_dir, download, image_size, crop, max_examples)
        tmp = cache_path.with_name(f"{cache_path.name}.tmp{os.getpid()}")
        torch.save(cache, tmp)
        os.replace(tmp, cache_path)  # atomic: a concurrent job never reads half a file
        log.info("celeba: decoded %d + %d images into %s", len(cache["train_x"]), len(cache["val_x"]), cache_path)
    if label_attribute not in cache["attr_names"]:
        raise ConfigError(
            f"dataset.label_attribute={label_attribute}: must be one of the CelebA attributes "
            f"({', '.join(cache['attr_names'])})"
        )
    k = cache["attr_names"].index(label_attribute)
    return ImageData(
        "celeba", cache["train_x"], cache["train_attr"][:, k].long(), cache["val_x"], cache["val_attr"][:, k].long()
    )
