"""Where a job runs: CPU cores, torch threads, and the device that `device=...` names."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from vae_sweep.errors import ConfigError


def cpu_count() -> int:
    """Cores this process may use (its CPU affinity where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def set_threads(threads: int | None) -> int:
    """Never more torch threads than cores; `None` means all cores. Returns the number set."""
    n = min(threads or cpu_count(), cpu_count())
    torch.set_num_threads(n)
    return n


@contextmanager
def torch_threads(n: int) -> Iterator[int]:
    """torch's intra-op threads set to `n` for the block, then back to what they were."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


def resolve_device(device: str) -> torch.device:
    """`device=...` as a torch device: `auto` picks CUDA when present, then Apple's MPS, else the CPU.
    A device this machine lacks is a ConfigError."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", str(device)):
        raise ConfigError(f"device={device}: accepts auto, cpu, cuda, cuda:N or mps")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device}: CUDA is not available on this machine; use device=auto or device=cpu")
    if device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
        raise ConfigError(
            f"device={device}: this machine has {torch.cuda.device_count()} CUDA device(s), "
            f"cuda:0 to cuda:{torch.cuda.device_count() - 1}"
        )
    if device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device=mps: MPS is not available on this machine; use device=auto or device=cpu")
    return torch.device(device)


# precision=... -> the dtype that torch.autocast computes in; None: fp32 throughout, no autocast
AUTOCAST = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}


def autocast_dtype(precision: int | str) -> torch.dtype | None:
    """`precision=32|bf16|16` as the dtype of autocast. Hydra reads `precision=16` as an integer and
    `precision=bf16` as a string; both forms, and "16" quoted, mean the same."""
    return AUTOCAST[str(precision)]
