"""What a CPU-sized β sweep on the procedural dSprites reaches: every disentanglement score per β, and the wall time.

Runs the real command line, a grid sweep of model=locatello (10 latent dims) on dataset=sprites over β, each trial
trained for a few hundred steps and scored with eval.disentanglement's sample count, then reads the sweep back with
`vae_sweep.analysis.load_sweep` and prints one row per β: distortion and rate (nats per example), each score (a fraction
in [0, 1]) and the seconds the scores took. Wall seconds depend on the machine's load; the command is printed so that
it can be rerun by hand. Figures only, no assertions.

    python benchmarks/disentangle_sweep.py                         # β = 1, 4, 16; 2 epochs of 150 batches of 64
    python benchmarks/disentangle_sweep.py --betas 1,2,4,6,8,16 --epochs 10 --max-batches 0   # longer, whole epochs
    python benchmarks/disentangle_sweep.py --smoke                 # a coarse grid, 3 steps, 40 samples: checks it runs
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vae_sweep.analysis.frame import load_sweep
from vae_sweep.analysis.plots import save_figures
from vae_sweep.registry import DISENTANGLEMENT, METRICS

SMOKE = [
    "epochs=1",
    "max_batches=3",
    "dataset.stride={orientation:13,posX:8,posY:8}",
    "dataset.val_size=100",
    "eval.disentanglement.samples=40",
    "eval.disentanglement.batch_points=20",
    "eval.disentanglement.batch_size=4",
]


def command(args: argparse.Namespace, folder: Path) -> list[str]:
    """The sweep's command line: a grid over β, everything else fixed."""
    steps = (
        SMOKE
        if args.smoke
        else [
            f"epochs={args.epochs}",
            f"max_batches={args.max_batches or 'null'}",
            f"eval.disentanglement.samples={args.samples}",
            f"eval.disentanglement.batch_points={args.batch_points}",
        ]
    )
    return [
        sys.executable,
        "-m",
        "vae_sweep",
        "--multirun",
        "sweep=grid",
        "dataset=sprites",
        "model=locatello",
        "latent_dim=10",
        f"beta={args.betas}",
        f"batch_size={args.batch_size}",
        "eval.iwae_k=0",
        f"eval.disentanglement.dci_model={args.dci_model}",
        *steps,
        f"data_dir={args.data_dir}",
        f"hydra.sweep.dir={folder / 'sweep'}",
    ]


def table(sweep_dir: Path) -> str:
    """One markdown row per trial, by β: distortion and rate (nats per example), the scores, their seconds."""
    df = load_sweep(sweep_dir).sort_values("beta")
    cols = ["beta", "status", "distortion", "rate", *DISENTANGLEMENT, "disentanglement_seconds", "wall_seconds"]
    head = [METRICS[c].label if c in ("distortion", "rate") else c for c in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        lines.append(
            "| "
            + " | ".join(f"{row.get(c):.3g}" if isinstance(row.get(c), float) else str(row.get(c)) for c in cols)
            + " |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--betas", default="1,4,16", help="comma-separated β values (default: 1,4,16)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-batches", type=int, default=150, help="training batches per epoch; 0: all")
    parser.add_argument("--batch-size", type=int, default=64, help="disentanglement_lib's 64")
    parser.add_argument("--samples", type=int, default=10000, help="eval.disentanglement.samples (library: 10000)")
    parser.add_argument(
        "--batch-points", type=int, default=1000, help="eval.disentanglement.batch_points (library: 10000)"
    )
    parser.add_argument("--dci-model", default="hist", choices=("hist", "gbt"))
    parser.add_argument(
        "--data-dir",
        default=str(Path(tempfile.gettempdir()) / "vae_sweep_data"),
        help="where the drawn sprites are cached between runs",
    )
    parser.add_argument("--smoke", action="store_true", help="a coarse grid and 3 steps: checks the script runs")
    parser.add_argument(
        "--out", help="keep the sweep (and its analysis figures) in OUT/sweep; default: a temporary folder, removed"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.out or tmp).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        cmd = command(args, folder)
        print("$ python", " ".join(cmd[1:]), flush=True)
        start = time.perf_counter()
        done = subprocess.run(cmd, cwd=folder, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"the sweep failed ({done.returncode}):\n{done.stderr[-3000:]}")
        print(f"\n### β sweep on sprites: {len(args.betas.split(','))} trials in {seconds:.0f} s wall\n")
        print(table(folder / "sweep"))
        if args.out:
            paths = save_figures(load_sweep(folder / "sweep"), folder / "sweep" / "analysis")
            print("\nfigures:", ", ".join(str(p) for p in paths.values()))


if __name__ == "__main__":
    main()
