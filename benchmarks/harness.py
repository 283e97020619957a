"""What every benchmark section shares: the real composed config, parts built from it, vae_sweep's own loop as a
contender, and the alternating timer that turns contenders into median rates."""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from torch import nn

from vae_sweep import data as datasets
from vae_sweep.train import Parts, TrainState, build, train_epoch

REPO = Path(__file__).resolve().parents[1]
Rates = dict[str, float]  # contender name -> median units per second


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


QUIET = 0.05  # a sample is re-taken when other processes used more than this share of the machine's CPU time
RETRIES = 3  # re-takes per sample, each after a pause; then the sample is kept and counted as disturbed


@dataclass
class Disturbance:
    """Samples that other processes disturbed since the last `take()`: re-taken, and kept anyway."""

    retaken: int = 0
    kept: int = 0

    def take(self) -> tuple[int, int]:
        counts, self.retaken, self.kept = (self.retaken, self.kept), 0, 0
        return counts


DISTURBANCE = Disturbance()


def cpu_seconds() -> tuple[float, float, float] | None:
    """(busy CPU seconds of the whole machine, all CPU seconds, this process's CPU seconds) from /proc/stat;
    None where there is no /proc/stat."""
    try:
        fields = [int(v) for v in open("/proc/stat").readline().split()[1:9]]
    except OSError:
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    tick, own = os.sysconf("SC_CLK_TCK"), os.times()
    busy = user + nice + system + irq + softirq + steal  # steal: a hypervisor gave the time to another guest
    return busy / tick, (busy + idle + iowait) / tick, own.user + own.system + own.children_user + own.children_system


def others_share(before: tuple | None, after: tuple | None) -> float:
    """Share of the machine's CPU time that other processes used between two `cpu_seconds()` readings."""
    if before is None or after is None or after[1] <= before[1]:
        return 0.0
    return max(0.0, (after[0] - before[0]) - (after[2] - before[2])) / (after[1] - before[1])


def timed(fn: Callable[[], float], device: torch.device) -> float:
    """fn's units per second. A sample during which other processes used the CPU (a shared machine) is re-taken
    after a pause, up to RETRIES times, then kept; DISTURBANCE counts both."""
    for attempt in range(RETRIES + 1):
        before = cpu_seconds()
        sync(device)
        start = time.perf_counter()
        units = fn()
        sync(device)
        seconds = time.perf_counter() - start
        if others_share(before, cpu_seconds()) <= QUIET:
            break
        if attempt == RETRIES:
            DISTURBANCE.kept += 1
        else:
            DISTURBANCE.retaken += 1
            time.sleep(2.0)
    return units / seconds


def alternate(contenders: dict[str, Callable[[], float]], repeats: int, device: torch.device) -> Rates:
    """Median rate of each contender: the units it returns (examples, FLOPs) per second of its call. One untimed
    warm-up call each, then `repeats` rounds in which every contender runs once, each round starting one further
    along the list."""
    for fn in contenders.values():
        fn()
    names, samples = list(contenders), {name: [] for name in contenders}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            samples[name].append(timed(contenders[name], device))
    return {name: statistics.median(v) for name, v in samples.items()}


def matmul(device: torch.device, n: int = 2048, times: int = 3) -> Callable[[], float]:
    """`times` (n, n) @ (n, n) fp32 matmuls: 2 n^3 FLOPs each (a multiply and an add per term)."""
    a, b, out = (torch.randn(n, n, device=device) for _ in range(3))

    def run() -> float:
        for _ in range(times):
            torch.mm(a, b, out=out)
        return 2.0 * n**3 * times

    return run


def train_step_flops(model: nn.Module, batch_size: int) -> float:
    """Matmul FLOPs of one training step: forward 2 * in * out per example for every nn.Linear, backward twice the
    forward (the gradient with respect to the input and with respect to the weight), so 3x forward in all.
    Biases, activations, the loss and the optimiser are left out."""
    forward = sum(2 * m.in_features * m.out_features for m in model.modules() if isinstance(m, nn.Linear))
    return 3.0 * forward * batch_size


SMOKE: list[str] = []  # overrides added to every config: `--smoke` caps each epoch with max_batches


def config(*overrides: str) -> DictConfig:
    """The real composed config (conf/config.yaml) with `overrides`, through Hydra's compose API."""
    with initialize_config_dir(config_dir=str(REPO / "conf")):
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


def table(title: str, header: list[str], rows: list[list], note: str = "") -> None:
    """Print a markdown table, with a note of the samples that other processes disturbed since the last one."""
    retaken, kept = DISTURBANCE.take()
    if retaken or kept:
        note += (
            f"{' ' if note else ''}Other processes used the CPU during {retaken + kept} samples: {retaken} were "
            f"re-taken, {kept} kept after {RETRIES} re-takes (figures resting on kept samples are less reliable)."
        )
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(cell(v) for v in row) + " |")
    if note:
        print(f"\n{note}")
    sys.stdout.flush()


def cell(v) -> str:
    """A table cell: large rates with thousands separators, small numbers to 3 significant digits."""
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
    return str(v)
