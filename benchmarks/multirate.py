"""One β-conditioned model (loss=multirate) against β sweeps: the rate-distortion curve per CPU second.

    python benchmarks/multirate.py            # the comparison: 2 seeds, E = 10 epochs (about 10 min on 1 core)
    python benchmarks/multirate.py --kinds    # the conditioning choice: gates vs film vs both (about 2 min)
    python benchmarks/multirate.py --quick    # both sections, tiny (a smoke test, seconds)

mnist_5k, the default MLP (784-400-20), default lr and batch size, torch on 1 thread, so that CPU seconds count
the same work whatever the machine's load. Everything is trained in-process with vae_sweep's own `build` and
`train_epoch`:
- the curve: one model with loss=multirate over β ∈ [0.01, 10], evaluated along the 30-point grid below after E, 2E
  and 3E epochs;
- the sweeps: β-VAEs at 5, 10 and 30 values of β evenly spaced in log β over the same range, E epochs each.
Each gets the hypervolume (curve.py; nats², larger is better) of its (distortion, rate) points on the validation
set, against the CPU seconds of its training and evaluation. A second table shows where along β the curve trained
3E epochs falls short of the β-VAEs of the 30-trial sweep: the gaps in distortion, rate and D + βR (the objective
both were trained for at that β), in nats per example. `--kinds` trains one model per conditioning for 2E epochs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import config  # noqa: E402

from vae_sweep import data as datasets  # noqa: E402
from vae_sweep.curve import beta_grid, curve_hypervolume, curve_rows, points, reference_point  # noqa: E402
from vae_sweep.evaluate import validation_terms  # noqa: E402
from vae_sweep.train import TrainState, build, train_epoch  # noqa: E402

BETA_MIN, BETA_MAX = 0.01, 10.0
DEVICE = torch.device("cpu")


def trained(cfg: DictConfig, data: datasets.ImageData, epochs: int, parts=None, state=None):
    """Train `epochs` more epochs of the run `cfg` (fresh parts from vae_sweep's `build` unless given).
    Returns parts, state, and the CPU seconds the training took."""
    if parts is None:
        torch.manual_seed(cfg.seed)
        parts, state = build(cfg, data.shape, DEVICE), TrainState(shuffle=torch.Generator().manual_seed(cfg.seed))
    start = time.process_time()
    for _ in range(epochs):
        train_epoch(parts, data, cfg, state)
    if state.status != "completed":
        raise RuntimeError(f"training diverged: {state.reason}")
    return parts, state, time.process_time() - start


def beta_vae_point(beta: float, seed: int, data, epochs: int, overrides: list[str]):
    """A β-VAE trained `epochs` epochs: its validation (distortion, rate) in nats, its CPU seconds (training and
    evaluation) and those of its training alone."""
    parts, _, seconds = trained(config(f"beta={beta}", f"seed={seed}", *overrides), data, epochs)
    start = time.process_time()
    val = validation_terms(parts.model, parts.likelihood, data.val_x, True)
    return (val["distortion"], val["rate"]), seconds + time.process_time() - start, seconds


def sweep(n: int, seed: int, data, epochs: int, overrides: list[str]) -> dict:
    """n β-VAEs at β evenly spaced in log β: their points, hypervolume and CPU seconds in all."""
    betas = beta_grid(BETA_MIN, BETA_MAX, n)
    results = [beta_vae_point(b, seed, data, epochs, overrides) for b in betas]
    pts = [p for p, _, _ in results]
    hv = curve_hypervolume(pts, reference_point(data.shape))
    return {
        "name": f"β sweep, {n} trials × E",
        "betas": betas,
        "points": pts,
        "hv": hv,
        "seconds": sum(s for _, s, _ in results),
        "train_seconds": sum(t for _, _, t in results) / (n * epochs),
    }


def curve_run(
    seed: int, data, epochs: int, grid: list[float], overrides: list[str], kind: str | None = None, stages: int = 3
) -> list[dict]:
    """One multirate model (conditioning `kind`, default the config's), its curve on `grid` after each of
    `stages` blocks of `epochs` epochs; CPU seconds accumulate (training, and every evaluation of the curve)."""
    kind_override = [f"loss.conditioning={kind}"] if kind else []
    cfg = config("loss=multirate", *kind_override, f"seed={seed}", *overrides)
    parts = state = None
    total, out = 0.0, []
    for stage in range(1, stages + 1):
        parts, state, seconds = trained(cfg, data, epochs, parts, state)
        start = time.process_time()
        rows = curve_rows(parts.model, parts.likelihood, data.val_x, grid)
        total += seconds + time.process_time() - start
        pts = points(rows)
        out.append(
            {
                "name": f"one model, {stage}E",
                "betas": grid,
                "points": pts,
                "seconds": total,
                "hv": curve_hypervolume(pts, reference_point(data.shape)),
                "train_seconds": seconds / epochs,
            }
        )
    return out


def table(runs_per_seed: list[list[dict]]) -> None:
    """Hypervolume and CPU seconds per contender, mean over seeds (and each seed's hypervolume)."""
    print("| contender | CPU s (mean) | hypervolume, nats² (mean) | per seed |")
    print("|---|---|---|---|")
    for i, run in enumerate(runs_per_seed[0]):
        same = [runs[i] for runs in runs_per_seed]
        hv = [r["hv"] for r in same]
        print(
            f"| {run['name']} | {statistics.mean(r['seconds'] for r in same):.1f} | {statistics.mean(hv):,.0f} | "
            + ", ".join(f"{h:,.0f}" for h in hv)
            + " |"
        )


def gaps(curves: list[dict], sweeps: list[dict], every: int) -> None:
    """Curve minus separately trained β-VAE at each β (mean over seeds): distortion, rate and D + βR, nats."""
    print("| β | D separate | D curve − separate | R separate | R curve − separate | (D + βR) curve − separate |")
    print("|---|---|---|---|---|---|")
    betas = sweeps[0]["betas"]
    for j in range(0, len(betas), every):
        b = betas[j]
        d_s = statistics.mean(s["points"][j][0] for s in sweeps)
        r_s = statistics.mean(s["points"][j][1] for s in sweeps)
        dd = statistics.mean(c["points"][j][0] - s["points"][j][0] for c, s in zip(curves, sweeps))
        dr = statistics.mean(c["points"][j][1] - s["points"][j][1] for c, s in zip(curves, sweeps))
        print(f"| {b:.3g} | {d_s:.1f} | {dd:+.1f} | {r_s:.1f} | {dr:+.1f} | {dd + b * dr:+.1f} |")


def compare(args, data, overrides: list[str]) -> None:
    """The main comparison: the curve after E, 2E, 3E epochs against sweeps of 5, 10 and 30 trials."""
    sizes = (2, 3, 4) if args.quick else (5, 10, 30)
    runs_per_seed, curves, finest = [], [], []
    for seed in range(args.seeds):
        sweeps = [sweep(n, seed, data, args.epochs, overrides) for n in sizes]
        stages = curve_run(seed, data, args.epochs, sweeps[-1]["betas"], overrides)
        runs_per_seed.append(stages + sweeps)
        curves.append(stages[-1])
        finest.append(sweeps[-1])
        print(f"seed {seed} done", file=sys.stderr)
    print(
        f"\n### One model vs β sweeps: hypervolume against CPU seconds (E = {args.epochs} epochs, "
        f"{args.seeds} seeds, reference {reference_point(data.shape)[0]:.1f} nats each)\n"
    )
    table(runs_per_seed)
    ratio = statistics.mean(c["train_seconds"] for c in curves) / statistics.mean(s["train_seconds"] for s in finest)
    print(f"\nTraining CPU seconds per epoch, one model ÷ one β-VAE: {ratio:.2f}")
    print(f"\n### Where the curve (3E) falls short of β-VAEs trained E epochs each ({sizes[-1]}-trial sweep)\n")
    gaps(curves, finest, every=1 if args.quick else 3)


def kinds(args, data, overrides: list[str]) -> None:
    """The conditioning choice: each kind trained 2E epochs per seed, its curve at 5 β, and seconds per epoch
    (against a β-VAE's, timed just before it); the β-VAEs at the same 5 β for reference."""
    grid, epochs = beta_grid(BETA_MIN, BETA_MAX, 5), 2 * args.epochs
    print(f"\n### Conditioning: one model per kind, 2E = {epochs} epochs (D, R in nats per example at each β)\n")
    print(
        "| kind | seed | s/epoch ÷ β-VAE | hypervolume, nats² | " + " | ".join(f"β={b:.3g} D, R" for b in grid) + " |"
    )
    print("|---|---|---|---|" + "---|" * len(grid))
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for kind in ("gates", "film", "both"):
            plain_seconds = trained(config(f"seed={seed}", *overrides), data, epochs)[2]
            run = curve_run(seed, data, epochs, grid, overrides, kind=kind, stages=1)[0]
            cells = " | ".join(f"{d:.1f}, {r:.1f}" for d, r in run["points"])
            print(
                f"| {kind} | {seed} | {run['train_seconds'] / (plain_seconds / epochs):.2f} | {run['hv']:,.0f} | "
                f"{cells} |",
                flush=True,
            )
        refs = [beta_vae_point(b, seed, data, epochs, overrides)[0] for b in grid]  # (D, R) each
        hv = curve_hypervolume(refs, reference_point(data.shape))
        print(
            f"| (5 β-VAEs) | {seed} | 1 each | {hv:,.0f} | " + " | ".join(f"{d:.1f}, {r:.1f}" for d, r in refs) + " |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings: a smoke test of both sections")
    parser.add_argument("--kinds", action="store_true", help="only the conditioning choice")
    parser.add_argument("--epochs", type=int, default=10, help="E: epochs of each sweep trial")
    parser.add_argument("--seeds", type=int, default=2, help="seeds 0, 1, ... (from --first-seed)")
    parser.add_argument("--first-seed", type=int, default=0)
    args = parser.parse_args()
    overrides = ["progress=false"]
    if args.quick:
        args.epochs, args.seeds = 1, 1
        overrides.append("max_batches=3")
    torch.set_num_threads(1)
    data = datasets.load(config().dataset, DEVICE)
    if args.kinds or args.quick:
        kinds(args, data, overrides)
    if not args.kinds:
        compare(args, data, overrides)


if __name__ == "__main__":
    main()
