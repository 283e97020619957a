"""Which Optuna sampler maps the rate-distortion front best within the default sweep's budget?

Runs the default sweep (`python -m vae_sweep --multirun`, default trials) once per sampler and seed, each into
its own study, then scores every study's front by its 2-D hypervolume: the area dominated by the completed
trials' (distortion, rate) points up to a reference point shared by all runs (the worst distortion and worst
rate seen in any run, times 1.01). Larger is better. Also reports the per-trial overhead: a trial's time in the
study (from ask to tell: sampling, launching the job, recording it) minus the job's own wall time.

    python benchmarks/sampler_choice.py            # motpe, nsgaii_pop10, random; seeds 0 1; 30 trials
    python benchmarks/sampler_choice.py --samplers motpe random --seeds 0 --n-trials 20 -- epochs=5
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

import optuna

from vae_sweep.analysis import FRONT
from vae_sweep.metrics import METRICS
from vae_sweep.pareto import hypervolume_2d

# name -> (sampler option of hydra-optuna-sweeper, extra overrides). NSGA-II's default population (50) would
# make 30 trials one random generation, so it runs with 10 here.
SAMPLERS = {
    "nsgaii_pop10": ("nsgaii", ["hydra.sweeper.sampler.population_size=10"]),
    "random": ("random", []),
    "motpe": ("motpe", ["hydra.sweeper.sampler.n_startup_trials=10"]),
}
DIRECTIONS = [METRICS[m].direction for m in FRONT]  # the default sweep's objectives: distortion and rate, minimised


def run_sweep(out: Path, sampler: str, seed: int, n_trials: int, extra: list[str]) -> float:
    name = f"{sampler}_s{seed}"
    option, extra_args = SAMPLERS[sampler]
    args = [
        sys.executable,
        "-m",
        "vae_sweep",
        "--multirun",
        f"hydra/sweeper/sampler={option}",
        f"hydra.sweeper.sampler.seed={seed}",
        f"hydra.sweeper.study_name={name}",
        f"hydra.sweeper.storage=sqlite:///{out}/samplers.db",
        f"hydra.sweep.dir={out}/{name}",
        f"hydra.sweeper.n_trials={n_trials}",
        *extra_args,
        *extra,
    ]
    start = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samplers", nargs="+", default=sorted(SAMPLERS), choices=sorted(SAMPLERS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--n-trials", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("multirun/sampler_choice"))
    parser.add_argument("overrides", nargs="*", help="extra overrides for every trial, after --")
    opts = parser.parse_args()
    opts.out = opts.out.resolve()
    opts.out.mkdir(parents=True, exist_ok=True)
    walls = {}
    for seed in opts.seeds:  # alternate samplers within each seed, so machine load hits all alike
        for sampler in opts.samplers:
            walls[sampler, seed] = run_sweep(opts.out, sampler, seed, opts.n_trials, opts.overrides)
            print(f"ran {sampler} seed {seed}: {walls[sampler, seed]:.0f} s", flush=True)
    report(opts, walls)


def report(opts: argparse.Namespace, walls: dict) -> None:
    storage = f"sqlite:///{opts.out}/samplers.db"
    fronts, overhead = {}, {}
    for sampler, seed in walls:
        trials = optuna.load_study(study_name=f"{sampler}_s{seed}", storage=storage).trials
        fronts[sampler, seed] = [tuple(t.values) for t in trials if t.state.name == "COMPLETE"]
        # per-trial overhead: the trial's time in the study (ask .. tell: sampling, launching, recording)
        # minus the job's own wall time from its metrics.json
        overhead[sampler, seed] = median(
            (t.datetime_complete - t.datetime_start).total_seconds() - t.user_attrs["metrics"]["wall_seconds"]
            for t in trials
            if t.state.name == "COMPLETE"
        )
    every = [p for pts in fronts.values() for p in pts]
    ref = (max(p[0] for p in every) * 1.01, max(p[1] for p in every) * 1.01)
    unit = METRICS["distortion"].unit.text  # rate's too
    print(f"\nreference point: distortion {ref[0]:.1f}, rate {ref[1]:.1f} {unit}; {opts.n_trials} trials each")
    print(f"{'sampler':12} {'seed':>4} {'completed':>9} {'hypervolume':>12} {'overhead s/trial':>17} {'sweep s':>8}")
    for (sampler, seed), pts in fronts.items():
        hv = hypervolume_2d(pts, ref, DIRECTIONS)
        print(
            f"{sampler:12} {seed:>4} {len(pts):>9} {hv:>12.0f} {overhead[sampler, seed]:>17.3f} {walls[sampler, seed]:>8.0f}"
        )
    print("\nmedian hypervolume by sampler:")
    for sampler in opts.samplers:
        hvs = [hypervolume_2d(fronts[sampler, s], ref, DIRECTIONS) for s in opts.seeds]
        print(f"  {sampler:12} {median(hvs):10.0f}   (seeds: {', '.join(f'{h:.0f}' for h in hvs)})")


if __name__ == "__main__":
    main()
