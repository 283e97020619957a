"""`vae-sweep`, the console script (pyproject.toml's [project.scripts]): the same entry as `python -m vae_sweep`,
called here through the function the script names (a test cannot reinstall the package to get the script itself)."""

from __future__ import annotations

import subprocess
import sys
from importlib import import_module

import pytest

import vae_sweep
from helpers import REPO

tomllib = pytest.importorskip("tomllib")  # Python 3.11+


def entry() -> str:
    """The `module:function` that pyproject.toml gives the vae-sweep script."""
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]["vae-sweep"]


def as_script(args: list[str], cwd, timeout: float = 300) -> subprocess.CompletedProcess:
    """What the installed `vae-sweep ARGS` runs: the entry function, with argv[0] the script's name."""
    module, function = entry().split(":")
    code = f"import sys; sys.argv = ['vae-sweep', *sys.argv[1:]]; from {module} import {function}; {function}()"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_the_script_names_the_entry_of_python_m_vae_sweep():
    module, function = entry().split(":")
    assert getattr(import_module(module), function) is import_module("vae_sweep.__main__").main


def test_version_names_vae_sweep_torch_hydra_and_optuna(tmp_path):
    import hydra
    import optuna
    import torch

    out = as_script(["--version"], tmp_path)
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip()
    assert line.startswith(f"vae_sweep {vae_sweep.__version__} (")
    for name, module in (("torch", torch), ("hydra-core", hydra), ("optuna", optuna)):
        assert f"{name} {module.__version__.split('+')[0]}" in line


def test_help_says_vae_sweep(tmp_path):
    out = as_script(["--help"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("vae_sweep is powered by Hydra")
    assert "logger: csv, mlflow, tensorboard" in out.stdout  # the new group is listed with its options


@pytest.mark.slow
def test_a_job_through_the_script_logs_to_vae_sweep_log_and_ends_with_its_metrics(tmp_path):
    out = as_script(["debug=tiny", "eval.pictures=false", "hydra.run.dir=run"], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    log = (tmp_path / "run" / "vae_sweep.log").read_text()
    last = log.strip().splitlines()[-1]
    assert "completed: distortion=" in last and " nats" in last and "mse=" in last and "per pixel" in last
    assert not (tmp_path / "run" / "__main__.log").exists()


def test_tab_completion_is_installed_for_the_command(tmp_path):
    out = as_script(["-sc", "install=bash"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.rstrip().endswith("-F hydra_bash_completion vae-sweep")  # bash completes `vae-sweep ...`
