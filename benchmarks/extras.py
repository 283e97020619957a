"""The optional `--extras` section: choices that decide vae_sweep's defaults, measured rather than assumed.

- Adam's three implementations (a Python loop over parameters, `foreach`, `fused`) inside vae_sweep's own loop:
  which one conf/optimizer/adam.yaml should ask for.
- bf16 autocast and torch.compile, each on the in-memory plain loop against the same loop in eager fp32: whether
  either should be a default. (On CPUs without native bf16, autocast emulates it and runs many times slower.)
"""

from __future__ import annotations

import time

import torch

from harness import alternate, config, fresh_parts, ours
from plain_loops import in_memory_epoch
from vae_sweep import data as datasets

CPU = torch.device("cpu")
ADAM = {
    "for-loop": ("++optimizer.foreach=false", "++optimizer.fused=false"),
    "foreach": ("++optimizer.foreach=true", "++optimizer.fused=false"),
    "fused": ("++optimizer.foreach=false", "++optimizer.fused=true"),
}


def adam_variants(repeats: int) -> tuple[str, list[str], list[list], str]:
    """vae_sweep's train_epoch with each Adam implementation, alternately: examples/s."""
    rows = []
    for model, batch, epochs in (("mlp", 128, 1), ("mlp", 1024, 2), ("conv", 128, 1)):
        over = (f"model={model}", f"batch_size={batch}")
        r = alternate({name: ours(config(*over, *flags), CPU, epochs) for name, flags in ADAM.items()}, repeats, CPU)
        rows.append([model, batch, *(r[name] for name in ADAM), f"{r['fused'] / r['for-loop']:.2f}x"])
    return (f"Extras: Adam's implementations in vae_sweep's loop on cpu, examples/s (median of {repeats})",
            ["model", "batch", *ADAM, "fused vs for-loop"], rows, "")


def autocast_and_compile(repeats: int) -> tuple[str, list[str], list[list], str]:
    """The in-memory plain loop in eager fp32, under bf16 autocast, and with torch.compile(model): examples/s."""
    rows = []
    for model in ("mlp", "conv"):
        cfg = config(f"model={model}")
        data = datasets.load(cfg.dataset, CPU)
        x_all, beta = datasets.as_float(data.train_x), float(cfg.beta)
        fp32, bf16, compiled = (fresh_parts(cfg, data, CPU) for _ in range(3))
        net = torch.compile(compiled.model)
        gen = torch.Generator().manual_seed(cfg.seed)
        contenders = {
            "fp32": lambda: in_memory_epoch(fp32.model, fp32.optimizer, x_all, cfg.batch_size, beta, gen),
            "bf16": lambda: in_memory_epoch(bf16.model, bf16.optimizer, x_all, cfg.batch_size, beta, gen, torch.bfloat16),
            "compiled": lambda: in_memory_epoch(net, compiled.optimizer, x_all, cfg.batch_size, beta, gen),
        }
        start = time.perf_counter()
        contenders["compiled"]()  # compiles forward and backward
        first = time.perf_counter() - start
        r = alternate(contenders, repeats, CPU)
        rows.append([model, r["fp32"], r["bf16"], f"{r['bf16'] / r['fp32']:.2f}x", r["compiled"],
                     f"{r['compiled'] / r['fp32']:.2f}x", f"{first:.1f}"])
    return (f"Extras: in-memory plain loop on cpu, batch 128, examples/s (median of {repeats})",
            ["model", "eager fp32", "bf16 autocast", "vs fp32", "torch.compile", "vs fp32", "first epoch with compile (s)"],
            rows, "")
