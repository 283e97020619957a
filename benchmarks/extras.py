"""The optional `--extras` section: choices that decide vae_sweep's defaults, measured rather than assumed.

- Adam's three implementations (a Python loop over parameters, `foreach`, `fused`) inside vae_sweep's own loop:
  which one conf/optimizer/adam.yaml should ask for.
- bf16 autocast and torch.compile, each on the in-memory plain loop against the same loop in eager fp32: whether
  either should be a default. bf16 is measured twice: as this CPU runs it, and with the kernels capped at AVX2,
  as on a CPU without native bf16 instructions, where autocast emulates bf16 and runs many times slower.
- The Bernoulli distortion (binary cross-entropy with logits) as PyTorch computes it, against the same formula
  written out without `log1p`, whose CPU kernel is not vectorised in the AVX-512 build: a proposal for losses.py.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # when run as a script: `extras.py bf16 N`
from harness import alternate, config, fresh_parts, ours  # noqa: E402
from plain_loops import in_memory_epoch  # noqa: E402

from vae_sweep import data as datasets  # noqa: E402

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
    return (
        f"Extras: Adam's implementations in vae_sweep's loop on cpu, examples/s (median of {repeats})",
        ["model", "batch", *ADAM, "fused vs for-loop"],
        rows,
        "",
    )


AVX2_ONLY = {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def _plain(model: str) -> tuple:
    cfg = config(f"model={model}")
    data = datasets.load(cfg.dataset, CPU)
    return cfg, data, datasets.as_float(data.train_x), float(cfg.beta), torch.Generator().manual_seed(cfg.seed)


def fp32_and_bf16(repeats: int) -> dict[str, list[float]]:
    """model -> [fp32, bf16 autocast] examples/s of the in-memory plain loop, alternately."""
    out = {}
    for model in ("mlp", "conv"):
        cfg, data, x_all, beta, gen = _plain(model)
        fp32, bf16 = fresh_parts(cfg, data, CPU), fresh_parts(cfg, data, CPU)
        r = alternate(
            {
                "fp32": lambda: in_memory_epoch(fp32.model, fp32.optimizer, x_all, cfg.batch_size, beta, gen),
                "bf16": lambda: in_memory_epoch(
                    bf16.model, bf16.optimizer, x_all, cfg.batch_size, beta, gen, torch.bfloat16
                ),
            },
            repeats,
            CPU,
        )
        out[model] = [r["fp32"], r["bf16"]]
    return out


def bf16_autocast(repeats: int) -> tuple[str, list[str], list[list], str]:
    """fp32 against bf16 autocast as this CPU runs them, and again in a child process whose oneDNN, MKL and ATen
    kernels are capped at AVX2: a CPU without native bf16 instructions."""
    native = fp32_and_bf16(repeats)
    child = subprocess.run(
        [sys.executable, __file__, "bf16", str(repeats)],
        env=os.environ | AVX2_ONLY,
        capture_output=True,
        text=True,
        check=True,
    )
    capped = json.loads(child.stdout.strip().splitlines()[-1])
    rows = [
        [m, *native[m], f"{native[m][1] / native[m][0]:.2f}x", *capped[m], f"{capped[m][1] / capped[m][0]:.2f}x"]
        for m in native
    ]
    return (
        f"Extras: bf16 autocast, in-memory plain loop on cpu, batch 128, examples/s (median of {repeats})",
        ["model", "fp32", "bf16 autocast", "ratio", "fp32, AVX2 only", "bf16 autocast, AVX2 only", "ratio"],
        rows,
        "AVX2 only: " + " ".join(f"{k}={v}" for k, v in AVX2_ONLY.items()) + ", as on a CPU without native bf16.",
    )


def compiled(repeats: int) -> tuple[str, list[str], list[list], str]:
    """The in-memory plain loop in eager mode against torch.compile(model). torch.compile gets an empty cache
    folder, so its first epoch shows what a fresh machine pays to compile."""
    rows = []
    cache, before = tempfile.TemporaryDirectory(prefix="vae_sweep_inductor_"), os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache.name  # read by inductor whenever it compiles
    for model in ("mlp", "conv"):
        cfg, data, x_all, beta, gen = _plain(model)
        eager, comp = fresh_parts(cfg, data, CPU), fresh_parts(cfg, data, CPU)
        net = torch.compile(comp.model)
        contenders = {
            "eager": lambda: in_memory_epoch(eager.model, eager.optimizer, x_all, cfg.batch_size, beta, gen),
            "compiled": lambda: in_memory_epoch(net, comp.optimizer, x_all, cfg.batch_size, beta, gen),
        }
        start = time.perf_counter()
        contenders["compiled"]()  # compiles forward and backward
        first = time.perf_counter() - start
        r = alternate(contenders, repeats, CPU)
        rows.append([model, r["eager"], r["compiled"], f"{r['compiled'] / r['eager']:.2f}x", f"{first:.1f}"])
    cache.cleanup()
    os.environ.pop("TORCHINDUCTOR_CACHE_DIR")
    if before is not None:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = before
    return (
        f"Extras: torch.compile, in-memory plain loop on cpu, batch 128, examples/s (median of {repeats})",
        ["model", "eager", "torch.compile", "ratio", "first epoch with compile, empty cache (s)"],
        rows,
        "",
    )


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
        for name, f in (
            ("F.binary_cross_entropy_with_logits", builtin),
            ("written out, log instead of log1p", written),
        ):
            leaf = logits.clone().requires_grad_()
            fwd = _median_us(lambda: f(logits, x), 10 * repeats)
            both = _median_us(lambda: f(leaf, x).sum().backward(), 10 * repeats)
            err = (f(logits, x).double() - exact).abs().max().item()
            rows.append([batch, name, fwd, both, f"{err:.1e}"])
    return (
        f"Extras: Bernoulli distortion on cpu, microseconds per call (median of {10 * repeats})",
        ["images", "formula", "forward", "forward + backward", "max abs error vs float64, nats per image"],
        rows,
        "The error column is float32 rounding of the sum over 784 pixels; both formulas round alike.",
    )


def _median_us(fn, n: int) -> float:
    fn()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e6 * statistics.median(times)


if __name__ == "__main__":  # `extras.py bf16 N`: fp32_and_bf16(N) as JSON, for bf16_autocast's capped child process
    from vae_sweep.runtime import set_threads

    set_threads(None)
    print(json.dumps(fp32_and_bf16(int(sys.argv[2]))))
