"""The CUDA path, where CUDA is present (no GPU is lent to most CI runs: then these are skipped, and say why)."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import compose_config
from vae_sweep.job import run

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


def test_a_job_trains_and_evaluates_on_cuda(tmp_path):
    run(compose_config(["debug=tiny", "device=cuda", "model=conv"]), tmp_path)
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["status"] == "completed" and m["device"].startswith("cuda")
    assert m["rate"] > 0 and m["iwae_nll"] < m["neg_elbo"] * 1.05
    ckpt = torch.load(tmp_path / "model.pt", weights_only=True, map_location="cpu")
    assert "cuda" in ckpt["rng"]


def test_device_auto_picks_cuda():
    from vae_sweep.runtime import resolve_device

    assert resolve_device("auto").type == "cuda"
