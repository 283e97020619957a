"""Shared test helpers: compose the real config, and run the real command line.

`debug=tiny` (conf/debug/tiny.yaml) makes any job or sweep small; tests add only what they check on top.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"


def compose_config(overrides: list[str] | None = None, **kwargs) -> DictConfig:
    """The real config, composed with the Compose API (no Hydra run, no output dir)."""
    with initialize_config_dir(config_dir=str(CONF)):
        return compose(config_name="config", overrides=overrides or [], **kwargs)


def cli(args: list[str], cwd: Path, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """`python -m vae_sweep ARGS` as a user runs it, from `cwd`."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, "-m", "vae_sweep", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )
