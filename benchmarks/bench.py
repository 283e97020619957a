"""How fast vae_sweep trains, against plain PyTorch loops, and what its sweeps cost beyond the jobs (issue 5).

    python benchmarks/bench.py            # the full run: about 4 minutes on an idle 2-core machine
    python benchmarks/bench.py --quick    # about 2 minutes: fewer repeats, shorter sweeps
    python benchmarks/bench.py --extras   # adds Adam's implementations, bf16 autocast, torch.compile, the BCE loss (+3 min)
    python benchmarks/bench.py --smoke    # seconds: proves the script runs (tests/test_benchmarks.py); no sweeps

Every figure is a median over repeats. Figures that are compared with each other are taken alternately within
each repeat, in a rotating order, so that a slow spell on a shared machine falls on all of them alike.
Prints markdown tables on stdout (progress goes to stderr); benchmarks/RESULTS.md holds one run of them.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))  # plain_loops, sweeps: beside this file
import harness  # noqa: E402
from harness import alternate, config, fresh_parts, matmul, ours, table, train_step_flops  # noqa: E402
from plain_loops import dataloader_epoch, in_memory_epoch, mnist_loader  # noqa: E402
from sweeps import SweepRun, overhead, run_sweep, trials_per_minute  # noqa: E402

from vae_sweep import data as datasets  # noqa: E402
from vae_sweep.evaluate import iwae_nll, validation_terms  # noqa: E402
from vae_sweep.runtime import cpu_count, set_threads  # noqa: E402

log = logging.getLogger("bench")


@dataclass(frozen=True)
class Mode:
    repeats: int  # alternating rounds behind each median
    eval_repeats: int  # the same for evaluation (an IWAE pass over the conv model takes seconds)
    iwae_k: int  # importance samples for the IWAE throughput (the default config's eval.iwae_k is 100)
    sweep_trials: int  # trials in the serial sweep whose overhead is measured (0: no sweeps)
    sweep_epochs: int | None  # epochs per trial in that sweep; None: the default config's
    pair_trials: int  # trials in each of the serial and parallel sweeps
    pair_epochs: int | None
    pair_rounds: int  # serial/parallel pairs, run in ABBA order


SECTIONS = ["loops", "flops", "eval", "sweep", "parallel"]
MODES = {
    "full": Mode(
        repeats=7,
        eval_repeats=3,
        iwae_k=100,
        sweep_trials=6,
        sweep_epochs=None,
        pair_trials=6,
        pair_epochs=5,
        pair_rounds=2,
    ),
    "quick": Mode(
        repeats=4,
        eval_repeats=2,
        iwae_k=100,
        sweep_trials=3,
        sweep_epochs=3,
        pair_trials=4,
        pair_epochs=3,
        pair_rounds=1,
    ),
    "smoke": Mode(
        repeats=1, eval_repeats=1, iwae_k=5, sweep_trials=0, sweep_epochs=1, pair_trials=0, pair_epochs=1, pair_rounds=0
    ),
}


def loop_contenders(cfg: DictConfig, device: torch.device) -> dict[str, Callable[[], float]]:
    """vae_sweep's loop, the classic DataLoader loop and the in-memory plain loop, each with its own copy of the
    same model and optimiser (same config, same seed)."""
    data = datasets.load(cfg.dataset, device)
    n = cfg.max_batches * cfg.batch_size if cfg.max_batches else len(data.train_x)  # --smoke caps the plain loops too
    beta = float(cfg.beta)
    classic = fresh_parts(cfg, data, device)
    loader = mnist_loader(data.train_x[:n], data.train_y[:n], cfg.batch_size, device.type == "cuda")
    plain = fresh_parts(cfg, data, device)
    x_all, gen = datasets.as_float(data.train_x[:n]), torch.Generator().manual_seed(cfg.seed)  # (N, C, H, W) in [0, 1]
    return {
        "vae_sweep": ours(cfg, device),
        "dataloader": lambda: dataloader_epoch(classic.model, classic.optimizer, loader, beta, device),
        "in_memory": lambda: in_memory_epoch(plain.model, plain.optimizer, x_all, cfg.batch_size, beta, gen),
    }


# --- sections: each prints one markdown table ------------------------------------------------------------


def machine(threads: int) -> None:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), platform.processor()
    )
    flags = next((line.split(":", 1)[1].split() for line in _cpuinfo() if line.startswith("flags")), [])
    bf16 = "yes" if {"avx512_bf16", "amx_bf16"} & set(flags) else "no"
    rows = [
        ["CPU", cpu],
        ["cores (usable)", str(cpu_count())],
        ["torch threads", str(threads)],
        ["native bf16 (avx512_bf16/amx_bf16)", bf16],
        ["torch", torch.__version__],
        ["python", platform.python_version()],
        ["load average at start (1 min)", f"{os.getloadavg()[0]:.2f}"],
    ]
    if torch.cuda.is_available():
        rows.append(["GPU", torch.cuda.get_device_name()])
    table("Machine", ["", ""], rows)


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def loops(device: torch.device, mode: Mode) -> None:
    rows = []
    for model in ("mlp", "conv"):
        log.info("loops: model=%s on %s", model, device)
        r = alternate(loop_contenders(config(f"model={model}"), device), mode.repeats, device)
        rows.append(
            [
                model,
                str(device),
                r["vae_sweep"],
                r["dataloader"],
                r["in_memory"],
                f"{r['vae_sweep'] / r['dataloader']:.2f}x",
                f"{r['vae_sweep'] / r['in_memory']:.2f}x",
            ]
        )
    table(
        f"Training loop on {device.type}: examples/s (an epoch of mnist_5k in batches of 128; median of {mode.repeats})",
        [
            "model",
            "device",
            "vae_sweep train_epoch",
            "DataLoader + ToTensor per sample",
            "in-memory plain loop",
            "vs DataLoader",
            "vs in-memory",
        ],
        rows,
    )


def flops(device: torch.device, mode: Mode) -> None:
    log.info("flops: mlp at batch 128 and 1024 against a 2048^3 matmul on %s", device)
    cfg = config()
    model = fresh_parts(cfg, datasets.load(cfg.dataset, device), device).model
    step = {bs: train_step_flops(model, bs) for bs in (128, 1024)}
    # two epochs a sample: at batch 1024 an epoch is only 4 steps
    contenders = {"matmul": matmul(device)} | {bs: ours(config(f"batch_size={bs}"), device, epochs=2) for bs in step}
    r = alternate(contenders, mode.repeats, device)
    peak = r["matmul"] / 1e9
    rows = [
        [bs, r[bs], step[bs] / 1e9, r[bs] * step[bs] / bs / 1e9, f"{100 * r[bs] * step[bs] / bs / 1e9 / peak:.0f}%"]
        for bs in step
    ]
    table(
        f"mlp on {device.type} against the measured matmul peak ({peak:.0f} GFLOP/s, fp32 2048^3, median of {mode.repeats})",
        ["batch", "examples/s", "GFLOP per step", "GFLOP/s", "of peak"],
        rows,
        "FLOPs per step = 3 x sum over nn.Linear of 2 x in x out x batch (forward 2mnk, backward twice that); "
        "biases, activations, loss and optimiser not counted.",
    )


def evaluation(device: torch.device, mode: Mode) -> None:
    rows = []
    for model in ("mlp", "conv"):
        cfg = config(f"model={model}")
        data = datasets.load(cfg.dataset, device)
        parts, n = fresh_parts(cfg, data, device), len(data.val_x)
        log.info("evaluation: model=%s", model)
        contenders = {
            "val": lambda: (validation_terms(parts.model, parts.likelihood, data.val_x, True, cfg.eval.batch_size), n)[
                1
            ],
            "iwae": lambda: (iwae_nll(parts.model, parts.likelihood, data.val_x, mode.iwae_k), n)[1],
        }
        r = alternate(contenders, mode.eval_repeats, device)
        rows.append([model, r["val"], r["iwae"], r["iwae"] * mode.iwae_k])
    table(
        f"Evaluation on {device.type}: examples/s over the 500 validation images (median of {mode.eval_repeats})",
        ["model", "validation_terms", f"iwae_nll (k={mode.iwae_k})", "IWAE decoded samples/s"],
        rows,
    )


def quiet_sweep(folder: Path, n_trials: int, overrides: list[str]) -> SweepRun:
    """run_sweep, re-run (into a fresh folder) while other processes used more than harness.QUIET of the CPU,
    at most harness.RETRIES times: on a shared machine they slow 2-thread trials far more than 1-thread ones."""
    for attempt in range(harness.RETRIES + 1):
        run = run_sweep(folder.with_name(f"{folder.name}_{attempt}"), n_trials, overrides)
        if run.others <= harness.QUIET:
            break
        if attempt == harness.RETRIES:
            harness.DISTURBANCE.kept += 1
        else:
            harness.DISTURBANCE.retaken += 1
            log.info("other processes used %.0f%% of the CPU during the sweep: running it again", 100 * run.others)
    return run


def sweep_overhead(mode: Mode, tmp: Path) -> None:
    epochs = [f"epochs={mode.sweep_epochs}"] if mode.sweep_epochs else []
    log.info("sweep overhead: %d serial trials %s", mode.sweep_trials, " ".join(epochs) or "(default settings)")
    default_epochs = int(config().epochs)
    run = quiet_sweep(tmp / "overhead", mode.sweep_trials, epochs)
    o = overhead(run, default_epochs)
    trial = f"{o['trial']:.2f}" + (f" (est. from {mode.sweep_epochs}-epoch trials)" if o["trial_estimated"] else "")
    table(
        f"Sweep overhead: {mode.sweep_trials} trials one at a time, default trial settings "
        f"{'but ' + epochs[0] if epochs else ''}(seconds)",
        [
            "per-trial overhead",
            "% of a default trial",
            "default trial (job wall_seconds)",
            "launch -> job start",
            "job end -> next launch",
            "start-up, once per sweep",
            "shut-down, once",
            "first job (loads the data)",
        ],
        [
            [
                o["per_trial"],
                f"{100 * o['per_trial'] / o['trial']:.2f}%",
                trial,
                o["before_job"],
                o["after_job"],
                o["startup"],
                o["shutdown"],
                o["job_seconds_first"],
            ]
        ],
        "per-trial overhead = launch of trial i to launch of trial i+1, less trial i's wall_seconds (median). "
        f"Other processes used {100 * run.others:.0f}% of the CPU meanwhile.",
    )


def parallel_sweeps(mode: Mode, tmp: Path) -> None:
    common = [f"epochs={mode.pair_epochs}"] if mode.pair_epochs else []
    ways = {
        "serial, 2 threads": common,
        "parallel, 2 x 1 thread": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *common],
    }
    samples: dict[str, list[tuple[float, ...]]] = {w: [] for w in ways}
    others = []
    order = [w for r in range(mode.pair_rounds) for w in (list(ways) if r % 2 == 0 else list(ways)[::-1])]  # ABBA
    for i, way in enumerate(order):
        log.info("sweeps: %s, %d trials %s", way, mode.pair_trials, " ".join(common))
        run = quiet_sweep(tmp / f"pair{i}", mode.pair_trials, ways[way])
        samples[way].append(trials_per_minute(run))
        others.append(run.others)
    med = {w: [statistics.median(column) for column in zip(*v)] for w, v in samples.items()}
    base = med["serial, 2 threads"]
    rows = [[w, *(cell for m, b in zip(rates, base) for cell in (m, f"{m / b:.2f}x"))] for w, rates in med.items()]
    table(
        f"Trials per minute, {mode.pair_trials} trials of {mode.pair_epochs or 'default'} epochs "
        f"(median of {mode.pair_rounds} each, ABBA order)",
        ["how", "whole command", "ratio", "first launch -> last job end", "ratio", "after the first batch", "ratio"],
        rows,
        "After the first batch: from the second launch to the last job's end, once the launcher's workers "
        "have started and imported everything; the rate a long sweep approaches. Other processes used at most "
        f"{100 * max(others):.0f}% of the CPU during these sweeps.",
    )


def extras(mode: Mode) -> None:
    from extras import adam_variants, bce_formulas, bf16_autocast, compiled  # noqa: PLC0415  only with --extras

    for section in (adam_variants, bf16_autocast, compiled, bce_formulas):
        log.info("extras: %s", section.__name__)
        table(*section(mode.repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="fewer repeats and shorter sweeps")
    size.add_argument("--smoke", action="store_true", help="one repeat, no sweeps: proves the script runs")
    parser.add_argument(
        "--extras", action="store_true", help="also Adam's implementations, bf16 autocast, torch.compile"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=[*SECTIONS, "extras"],
        default=SECTIONS,
        metavar="SECTION",
        help=f"run only these sections, of: {' '.join(SECTIONS)} extras",
    )
    args = parser.parse_args()
    sections = set(args.only) | ({"extras"} if args.extras else set())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    logging.getLogger("vae_sweep").setLevel(logging.WARNING)
    mode = MODES["smoke" if args.smoke else "quick" if args.quick else "full"]
    if args.smoke:  # seconds, not minutes: capped epochs, and no sample re-taken on a busy machine
        harness.SMOKE.append("max_batches=3")
        harness.RETRIES = 0
    cpu, threads = torch.device("cpu"), set_threads(None)
    start = time.perf_counter()
    print(f"## vae_sweep benchmarks ({'smoke' if args.smoke else 'quick' if args.quick else 'full'} run)")
    machine(threads)
    devices = [cpu, torch.device("cuda")] if torch.cuda.is_available() else [cpu]
    for device in devices:
        if "loops" in sections:
            loops(device, mode)
        if "flops" in sections:
            flops(device, mode)
    if "eval" in sections:
        evaluation(cpu, mode)
    with tempfile.TemporaryDirectory(prefix="vae_sweep_bench_") as tmp:
        if "sweep" in sections and mode.sweep_trials:
            sweep_overhead(mode, Path(tmp))
        if "parallel" in sections and mode.pair_rounds:
            parallel_sweeps(mode, Path(tmp))
    if "extras" in sections:
        extras(mode)
    print(f"\n{time.perf_counter() - start:.0f} s in all; load average at the end (1 min): {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
