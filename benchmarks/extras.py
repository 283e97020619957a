"""The optional `--extras` section: choices that decide vae_sweep's defaults, measured rather than assumed.

- Adam's three implementations (a Python loop over parameters, `foreach`, `fused`) inside vae_sweep's own loop:
  which one conf/optimizer/adam.yaml should ask for.
- bf16 autocast and torch.compile, each on the in-memory plain loop against the same loop in eager fp32: whether
  either should be a default. (On CPUs without native bf16, autocast emulates it and runs many times slower.)
- The Bernoulli distortion (binary cross-entropy with logits) as PyTorch computes it, against the same formula
  written out without `log1p`, whose CPU kernel is not vectorised in the AVX-512 build: a proposal for losses.py.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

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


class WrittenOutBCE(torch.autograd.Function):
    """Binary cross-entropy with logits per pixel, -[x log s(l) + (1 - x) log(1 - s(l))] with s the sigmoid,
    computed as max(l, 0) - x l + log(1 + exp(-|l|)) (the same stable form PyTorch uses, but `log` where PyTorch
    calls `log1p`). Its gradient with respect to the logits is s(l) - x."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(logits, x)
        return logits.clamp(min=0) - x * logits + torch.exp(-logits.abs()).add_(1).log_()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        logits, x = ctx.saved_tensors
        return (torch.sigmoid(logits) - x) * grad, None


def bce_formulas(repeats: int) -> tuple[str, list[str], list[list], str]:
    """Forward and forward+backward of the distortion summed over pixels (B, 1, 28, 28) -> (B,), in microseconds,
    for a training batch (128) and one IWAE chunk (32 samples x 100 images), and the largest difference in nats."""
    builtin = lambda l, x: F.binary_cross_entropy_with_logits(l, x, reduction="none").flatten(1).sum(1)  # noqa: E731
    written = lambda l, x: WrittenOutBCE.apply(l, x).flatten(1).sum(1)  # noqa: E731
    rows = []
    for batch in (128, 3200):
        logits, x = 4 * torch.randn(batch, 1, 28, 28), torch.rand(batch, 1, 28, 28)
        exact = builtin(logits.double(), x.double())
        for name, f in (("F.binary_cross_entropy_with_logits", builtin), ("written out, log instead of log1p", written)):
            leaf = logits.clone().requires_grad_()
            fwd = _median_us(lambda: f(logits, x), 10 * repeats)
            both = _median_us(lambda: f(leaf, x).sum().backward(), 10 * repeats)
            err = (f(logits, x).double() - exact).abs().max().item()
            rows.append([batch, name, fwd, both, f"{err:.1e}"])
    return (f"Extras: Bernoulli distortion on cpu, microseconds per call (median of {10 * repeats})",
            ["images", "formula", "forward", "forward + backward", "max abs error vs float64, nats per image"], rows,
            "The error column is float32 rounding of the sum over 784 pixels; both formulas round alike.")


def _median_us(fn, n: int) -> float:
    fn()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e6 * statistics.median(times)
