"""vae_sweep's training loop against the plain in-memory PyTorch loop, trained the same way: the same model from
the same seed, optimiser, batches of 128 and epochs, on mnist_5k. For each seed it prints the validation negative
ELBO (nats per example, `evaluate.validation_terms` for both) and the examples per second of each loop, timed
epoch by epoch in alternation. A change to the loop (a check, a precision, bookkeeping) must keep the neg-ELBO
within 3 % of the plain loop's and the speed at least the plain loop's.

    python benchmarks/fidelity.py                      # model=mlp loss=elbo, 20 epochs, seeds 0 1 2
    python benchmarks/fidelity.py --epochs 2 --seeds 0 # a quick look
    python benchmarks/fidelity.py precision=bf16       # overrides go to vae_sweep's config (the plain loop: fp32)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness, plain_loops: beside this file
from harness import config, fresh_parts  # noqa: E402
from plain_loops import in_memory_epoch  # noqa: E402

from vae_sweep import data as datasets  # noqa: E402
from vae_sweep.evaluate import validation_terms  # noqa: E402
from vae_sweep.train import TrainState, train_epoch  # noqa: E402


def compare(seed: int, epochs: int, overrides: list[str]) -> dict:
    """Train both loops from the same initial weights for `epochs`, alternating epoch by epoch; their validation
    neg-ELBO and examples per second (the median epoch)."""
    cfg = config("model=mlp", "loss=elbo", f"seed={seed}", *overrides)
    device = torch.device("cpu")
    data = datasets.load(cfg.dataset, device)
    ours, plain = fresh_parts(cfg, data, device), fresh_parts(cfg, data, device)  # same seed: the same weights
    state = TrainState(shuffle=torch.Generator().manual_seed(seed))
    x_all, gen = datasets.as_float(data.train_x), torch.Generator().manual_seed(seed)
    n = len(data.train_x) // cfg.batch_size * cfg.batch_size
    rates: dict[str, list[float]] = {"vae_sweep": [], "plain": []}
    for _ in range(epochs):
        for name in ("vae_sweep", "plain") if len(rates["plain"]) % 2 == 0 else ("plain", "vae_sweep"):
            start = time.perf_counter()
            if name == "vae_sweep":
                train_epoch(ours, data, cfg, state)
            else:
                in_memory_epoch(plain.model, plain.optimizer, x_all, cfg.batch_size, 1.0, gen)
            rates[name].append(n / (time.perf_counter() - start))
    if state.status != "completed":
        raise SystemExit(f"seed {seed}: vae_sweep's loop ended {state.status}: {state.reason}")
    elbo = {
        name: validation_terms(p.model, p.likelihood, data.val_x, True, cfg.eval.batch_size)["neg_elbo"]
        for name, p in (("vae_sweep", ours), ("plain", plain))
    }
    return {"seed": seed, "elbo": elbo, "rate": {k: statistics.median(v) for k, v in rates.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("overrides", nargs="*", help="vae_sweep config overrides (the plain loop stays fp32)")
    args = parser.parse_args()
    print(f"model=mlp loss=elbo, {args.epochs} epochs, batch 128, {torch.get_num_threads()} threads")
    print()
    print(
        "| seed | neg-ELBO, vae_sweep (nats) | neg-ELBO, plain loop | difference | examples/s, vae_sweep | plain | ratio |"
    )
    print("|---|---|---|---|---|---|---|")
    for seed in args.seeds:
        r = compare(seed, args.epochs, args.overrides)
        ours, plain = r["elbo"]["vae_sweep"], r["elbo"]["plain"]
        speed = r["rate"]["vae_sweep"] / r["rate"]["plain"]
        print(
            f"| {seed} | {ours:.2f} | {plain:.2f} | {100 * (ours - plain) / plain:+.2f} % | "
            f"{r['rate']['vae_sweep']:,.0f} | {r['rate']['plain']:,.0f} | {speed:.2f}x |"
        )


if __name__ == "__main__":
    main()
