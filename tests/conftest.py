"""Shared helpers: compose the real config, and run the real command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
# A few batches of one epoch, a cheap IWAE: enough to exercise every output in seconds.
TINY = ["epochs=1", "max_batches=3", "eval.iwae_k=4", "progress=false"]


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides or [])


def cli(args: list[str], cwd: Path, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """`python -m vae_sweep ARGS` as a user runs it, from `cwd`."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "-m", "vae_sweep", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, **kwargs)


@pytest.fixture
def compose_cfg():
    return compose_config
