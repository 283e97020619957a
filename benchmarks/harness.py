"""What every benchmark section shares: the real composed config, parts built from it, vae_sweep's own loop as a
contender, and the alternating timer that turns contenders into median rates."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from torch import nn

from vae_sweep import data as datasets
from vae_sweep.train import Parts, TrainState, build, train_epoch

from sweeps import REPO

Rates = dict[str, float]  # contender name -> median units per second


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def alternate(contenders: dict[str, Callable[[], float]], repeats: int, device: torch.device) -> Rates:
    """Median rate of each contender: the units it returns (examples, FLOPs) per second of its call. One untimed
    warm-up call each, then `repeats` rounds in which every contender runs once, each round starting one further
    along the list."""
    for fn in contenders.values():
        fn()
    names, samples = list(contenders), {name: [] for name in contenders}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            sync(device)
            start = time.perf_counter()
            units = contenders[name]()
            sync(device)
            samples[name].append(units / (time.perf_counter() - start))
    return {name: statistics.median(v) for name, v in samples.items()}


def matmul(device: torch.device, n: int = 2048) -> Callable[[], float]:
    """One (n, n) @ (n, n) fp32 matmul: 2 n^3 FLOPs (a multiply and an add per term)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    return lambda: (a @ b, 2.0 * n**3)[1]


def train_step_flops(model: nn.Module, batch_size: int) -> float:
    """Matmul FLOPs of one training step: forward 2 * in * out per example for every nn.Linear, backward twice the
    forward (the gradient with respect to the input and with respect to the weight), so 3x forward in all.
    Biases, activations, the loss and the optimiser are left out."""
    forward = sum(2 * m.in_features * m.out_features for m in model.modules() if isinstance(m, nn.Linear))
    return 3.0 * forward * batch_size


SMOKE: list[str] = []  # overrides added to every config: `--smoke` caps each epoch with max_batches


def config(*overrides: str) -> DictConfig:
    """The real composed config (conf/config.yaml) with `overrides`, through Hydra's compose API."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=[*overrides, *SMOKE])


def fresh_parts(cfg: DictConfig, data: datasets.ImageData, device: torch.device) -> Parts:
    torch.manual_seed(cfg.seed)
    return build(cfg, data.shape, device)


def ours(cfg: DictConfig, device: torch.device, epochs: int = 1) -> Callable[[], float]:
    """vae_sweep's own `train_epoch` on parts built from `cfg`: a call trains `epochs` epochs and returns the
    examples it trained on."""
    data = datasets.load(cfg.dataset, device)
    parts, state = fresh_parts(cfg, data, device), TrainState(shuffle=torch.Generator().manual_seed(cfg.seed))
    n = min(len(data.train_x) // cfg.batch_size, cfg.max_batches or len(data.train_x)) * cfg.batch_size

    def epoch() -> float:
        for _ in range(epochs):
            train_epoch(parts, data, cfg, state)
        if state.status != "completed":
            raise RuntimeError(f"{cfg.model._target_}: training diverged in the benchmark")
        return n * epochs

    return epoch
