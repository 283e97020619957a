"""Run-output files (vae_sweep/run_files.py) and where a job runs (vae_sweep/runtime.py)."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from vae_sweep.errors import ConfigError
from vae_sweep.run_files import atomic_write, nan_to_none, read_metrics, write_history, write_metrics
from vae_sweep.runtime import cpu_count, resolve_device, set_threads


def test_metrics_json_has_no_nan_and_no_temporary_file_stays(tmp_path):
    write_metrics(tmp_path, {"distortion": float("nan"), "rate": 1.5, "kl_per_dim": [0.5, float("inf")]})
    assert json.loads((tmp_path / "metrics.json").read_text()) == {
        "distortion": None,
        "rate": 1.5,
        "kl_per_dim": [0.5, None],
    }
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    assert read_metrics(tmp_path)["rate"] == 1.5 and read_metrics(tmp_path / "nowhere") == {}
    assert nan_to_none(-math.inf) is None and nan_to_none("x") == "x"


def test_a_failed_write_leaves_the_old_file_whole(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("old")

    def half_then_crash(tmp):
        tmp.write_text("ne")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(path, half_then_crash)
    assert path.read_text() == "old"


def test_history_columns_are_the_union_in_order_of_first_appearance(tmp_path):
    write_history(tmp_path / "h.csv", [{"epoch": 1, "loss": 2.0}, {"epoch": 2, "loss": 1.0, "capacity": 3.0}])
    rows = list(csv.DictReader(open(tmp_path / "h.csv")))
    assert list(rows[0]) == ["epoch", "loss", "capacity"] and rows[0]["capacity"] == "" and rows[1]["capacity"] == "3.0"


def test_threads_never_exceed_the_cores():
    before = torch.get_num_threads()
    try:
        assert set_threads(10_000) == cpu_count() == torch.get_num_threads()
        assert set_threads(1) == 1 and set_threads(None) == cpu_count()
    finally:
        torch.set_num_threads(before)


def test_device_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ConfigError, match="device=tpu: accepts auto, cpu, cuda, cuda:N or mps"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda:0")
