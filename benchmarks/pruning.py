"""Does pruning pay on the elbo sweep? Best negative ELBO found against CPU seconds spent, with and without each pruner.

Runs `python -m vae_sweep --multirun sweep=elbo` with the same n_trials and sampler seed once per pruner
(`hydra/sweeper/pruner=none|median|successive_halving|hyperband`) and seed, each into its own study, and reports
for each: the best neg_elbo of a completed trial (nats per example, lower is better), the CPU seconds of the whole
sweep command (user + system of it and its children, from the kernel's rusage), the epochs trained in all, and the
trials pruned.

    python benchmarks/pruning.py                              # 4 pruners x seeds 0 1, 30 trials of the default job
    python benchmarks/pruning.py --pruners none median --seeds 0 --n-trials 12 -- epochs=6
    python benchmarks/pruning.py --report-only

Sweeps run one at a time with `--threads` torch threads per trial (default 1), in the order seed, then pruner.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path
from statistics import median

import optuna
from sweeps import named_sweep  # beside this file

REPO = Path(__file__).resolve().parents[1]
PRUNERS = ["none", "median", "successive_halving", "hyperband"]


def run_sweep(out: Path, pruner: str, seed: int, n_trials: int, threads: int, extra: list[str]) -> float:
    """One sweep into study `<pruner>_s<seed>` of out/pruning.db; returns its CPU seconds (with its children's)."""
    name = f"{pruner}_s{seed}"
    settings = ["sweep=elbo", f"hydra/sweeper/pruner={pruner}", f"hydra.sweeper.sampler.seed={seed}", f"seed={seed}"]
    args = named_sweep(out, "pruning.db", name, n_trials, threads, settings, extra)
    with open(out / f"{name}.log", "w") as log:
        proc = subprocess.Popen(args, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{name} failed: see {out / name}.log")
    cpu = usage.ru_utime + usage.ru_stime
    (out / f"{name}.cpu").write_text(f"{cpu}\n")
    print(f"ran {name}: {cpu:.0f} CPU s", flush=True)
    return cpu


def summary(out: Path, pruner: str, seed: int) -> dict:
    name = f"{pruner}_s{seed}"
    trials = optuna.load_study(study_name=name, storage=f"sqlite:///{out}/pruning.db").trials
    done = [t.value for t in trials if t.state.name == "COMPLETE"]
    epochs = [json.loads((out / name / str(t.number) / "metrics.json").read_text()).get("epochs", 0) for t in trials]
    return {
        "best": min(done),
        "cpu": float((out / f"{name}.cpu").read_text()),
        "epochs": sum(epochs),
        "pruned": sum(t.state.name == "PRUNED" for t in trials),
        "trials": len(trials),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pruners", nargs="+", default=PRUNERS, choices=PRUNERS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--n-trials", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per trial")
    parser.add_argument("--out", type=Path, default=Path("multirun/pruning"))
    parser.add_argument("--report-only", action="store_true", help="no sweeps: the table from the studies in --out")
    parser.add_argument("overrides", nargs="*", help="extra overrides for every trial, after --")
    opts = parser.parse_args()
    opts.out = opts.out.resolve()
    opts.out.mkdir(parents=True, exist_ok=True)
    if not opts.report_only:
        for seed in opts.seeds:
            for pruner in opts.pruners:
                run_sweep(opts.out, pruner, seed, opts.n_trials, opts.threads, opts.overrides)
    rows = {(p, s): summary(opts.out, p, s) for s in opts.seeds for p in opts.pruners}
    print(f"\n{opts.n_trials} trials each; best neg_elbo in nats per example (lower is better)\n")
    print(
        "| pruner | "
        + " | ".join(f"best neg_elbo, seed {s}" for s in opts.seeds)
        + " | CPU s (median) | epochs trained (median) | trials pruned (median) | CPU vs none |"
    )
    print("|---|" + "---|" * (len(opts.seeds) + 4))
    base = median(rows["none", s]["cpu"] for s in opts.seeds) if "none" in opts.pruners else None
    for p in opts.pruners:
        r = [rows[p, s] for s in opts.seeds]
        cpu = median(x["cpu"] for x in r)
        ratio = f"{cpu / base:.2f}x" if base else ""
        print(
            f"| {p} | " + " | ".join(f"{x['best']:.2f}" for x in r) + f" | {cpu:.0f} | "
            f"{median(x['epochs'] for x in r):.0f} | {median(x['pruned'] for x in r):.0f} | {ratio} |"
        )


if __name__ == "__main__":
    main()
