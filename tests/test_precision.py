"""precision=32|bf16|16: training's forward pass and loss under autocast, evaluation in fp32, the loss scaler of
fp16 in model.pt, and one line for a precision the device cannot train in. The CUDA cases run only where CUDA is."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_checks import refused
from torch import nn

from helpers import compose_config
from vae_sweep import data as datasets
from vae_sweep.checkpoint import restore, save_checkpoint
from vae_sweep.checks import check_precision
from vae_sweep.errors import ConfigError
from vae_sweep.job import run
from vae_sweep.runtime import autocast_dtype
from vae_sweep.train import TrainState, build

TINY = ["debug=tiny", "eval.pictures=false"]
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


def metrics(run_dir) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def linear_dtypes(cfg, out_dir) -> dict[bool, set[torch.dtype]]:
    """Run the job; the dtypes of every nn.Linear's output, by whether the module was training."""
    seen: dict[bool, set[torch.dtype]] = {True: set(), False: set()}

    def hook(module, _args, output) -> None:
        if isinstance(module, nn.Linear):
            seen[module.training].add(output.dtype)

    handle = nn.modules.module.register_module_forward_hook(hook)
    try:
        run(cfg, out_dir)
    finally:
        handle.remove()
    return seen


def test_bf16_trains_in_bf16_and_evaluates_in_fp32_on_the_cpu(tmp_path):
    seen = linear_dtypes(compose_config([*TINY, "precision=bf16", "device=cpu"]), tmp_path)
    assert seen == {True: {torch.bfloat16}, False: {torch.float32}}
    m = metrics(tmp_path)
    assert m["status"] == "completed" and m["precision"] == "bf16" and m["steps"] == 3
    assert all(math.isfinite(m[k]) for k in ("distortion", "rate", "neg_elbo", "iwae_nll", "mse"))
    ckpt = torch.load(tmp_path / "model.pt", weights_only=True)
    assert all(v.dtype == torch.float32 for v in ckpt["model"].values() if v.is_floating_point())
    assert ckpt["scaler"] is None  # bf16 has fp32's range: no loss scaling


def test_32_is_the_default_and_runs_without_autocast(tmp_path):
    seen = linear_dtypes(compose_config(TINY), tmp_path)
    assert seen == {True: {torch.float32}, False: {torch.float32}} and metrics(tmp_path)["precision"] == "32"


def test_either_form_of_a_precision_means_the_same():
    """Hydra reads precision=16 as an integer and precision=bf16 as a string; "16" may come quoted."""
    assert autocast_dtype(16) is autocast_dtype("16") is torch.float16
    assert autocast_dtype("bf16") is torch.bfloat16 and autocast_dtype(32) is autocast_dtype("32") is None


@pytest.mark.parametrize("value", ["fp8", "64", "bf32", "16.0"])
def test_a_precision_that_does_not_exist_is_one_line(value, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert refused([f"precision={value}"]) == f"precision={value}: must be 32, bf16 or 16"
    assert not list(tmp_path.iterdir())


def test_fp16_on_the_cpu_is_refused_before_training(tmp_path):
    with pytest.raises(ConfigError) as e:
        run(compose_config([*TINY, "precision=16", "device=cpu"]), tmp_path)
    assert str(e.value) == (
        "precision=16: fp16 trains on CUDA only (on the cpu it is slower than fp32); use precision=bf16 or 32"
    )
    assert not list(tmp_path.iterdir())  # nothing written: no metrics.json, no model.pt


def test_bf16_on_a_cuda_device_without_it_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100-SXM2-16GB")
    with pytest.raises(ConfigError) as e:
        check_precision("bf16", torch.device("cuda"))
    assert str(e.value) == (
        "precision=bf16: Tesla V100-SXM2-16GB has no bf16 arithmetic (compute capability 8.0 or later); "
        "use precision=16 or 32"
    )
    check_precision(16, torch.device("cuda"))  # fp16 is every CUDA device's


def test_the_loss_scale_survives_a_checkpoint(tmp_path):
    """precision=16's GradScaler state goes into model.pt under `scaler` and comes back; a checkpoint without the key
    (older, or trained in 32 or bf16) leaves the scaler at its start. Built on the CPU, which the job would refuse."""
    cfg = compose_config([*TINY, "precision=16", "device=cpu"])
    cpu = torch.device("cpu")
    data = datasets.load(cfg.dataset, cpu)
    parts = build(cfg, data.shape, cpu)
    parts.scaler.scale(torch.ones(()))  # a first step starts the scale
    parts.scaler.update(1024.0)  # as if overflows had backed it off
    save_checkpoint(tmp_path / "model.pt", parts, TrainState(), cfg)
    ckpt = torch.load(tmp_path / "model.pt", weights_only=True)
    assert ckpt["scaler"]["scale"] == 1024.0
    fresh = build(cfg, data.shape, cpu)
    restore(fresh, ckpt, TrainState())
    assert fresh.scaler.get_scale() == 1024.0
    older = build(cfg, data.shape, cpu)
    restore(older, {k: v for k, v in ckpt.items() if k != "scaler"}, TrainState())
    assert older.scaler.get_scale() == 2.0**16


@CUDA
@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("16", torch.float16)])
def test_half_precisions_train_on_cuda(tmp_path, precision, dtype):
    if precision == "bf16" and not torch.cuda.is_bf16_supported(including_emulation=False):
        pytest.skip("this CUDA device has no bf16")
    cfg = compose_config([*TINY, f"precision={precision}", "device=cuda", "model=conv"])
    seen = linear_dtypes(cfg, tmp_path)
    assert seen == {True: {dtype}, False: {torch.float32}}
    m = metrics(tmp_path)
    assert m["status"] == "completed" and m["precision"] == precision and math.isfinite(m["iwae_nll"])
    ckpt = torch.load(tmp_path / "model.pt", weights_only=True, map_location="cpu")
    assert (ckpt["scaler"] is None) == (precision == "bf16")
    if precision == "16":
        assert ckpt["scaler"]["scale"] > 0


@CUDA
def test_fp16_resumes_with_its_loss_scale_on_cuda(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    common = [*TINY, "precision=16", "device=cuda"]
    run(compose_config([*common, "epochs=1"]), first)
    run(compose_config([*common, "epochs=2", f"resume={first}"]), second)
    m = metrics(second)
    assert m["status"] == "completed" and m["epochs"] == 2 and m["steps"] == 6
    assert torch.load(second / "model.pt", weights_only=True, map_location="cpu")["scaler"]["scale"] > 0
