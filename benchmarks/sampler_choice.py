"""Which Optuna sampler maps the rate-distortion front best within the default sweep's budget?

Runs the default sweep (`python -m vae_sweep --multirun`, its 30 trials) once per sampler and seed, each into its own
study, then scores every study's front by its 2-D hypervolume (vae_sweep/pareto.py, the project's one implementation):
the area dominated by the completed trials' (distortion, rate) points up to a reference point shared by all runs
(the worst distortion and worst rate seen in any run, times 1.01), in nats². Larger is better. Also reports the
sampler's own time per trial (the sweeper's `sample_seconds`: building the seeded sampler, `study.ask` and the
suggestions) and the sweep's wall time.

    python benchmarks/sampler_choice.py                        # 5 samplers x seeds 0 1 2, 30 trials, 2 sweeps at a time
    python benchmarks/sampler_choice.py --samplers tpe random --seeds 0 --n-trials 20 -- epochs=5
    python benchmarks/sampler_choice.py --report-only          # the table again, from multirun/sampler_choice/

Sweeps run `--parallel` at a time with `--threads` torch threads per trial (default 2 and 1 on a 2-core machine), so
all samplers see the same machine; order is by seed, then sampler, so a busy spell falls on all samplers alike.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import median

import optuna
from sweeps import named_sweep  # beside this file

from vae_sweep.analysis.frame import FRONT
from vae_sweep.pareto import hypervolume_2d
from vae_sweep.registry import METRICS

REPO = Path(__file__).resolve().parents[1]
# name -> overrides. NSGA-II/III's default population (50) would make 30 trials one random generation: 10 here.
SAMPLERS = {
    "tpe": ["hydra/sweeper/sampler=tpe"],
    "gp": ["hydra/sweeper/sampler=gp"],
    "nsgaii_pop10": ["hydra/sweeper/sampler=nsgaii", "hydra.sweeper.sampler.population_size=10"],
    "nsgaiii_pop10": ["hydra/sweeper/sampler=nsgaiii", "hydra.sweeper.sampler.population_size=10"],
    "random": ["hydra/sweeper/sampler=random"],
}
DIRECTIONS = [METRICS[m].direction for m in FRONT]  # the default sweep's objectives: distortion and rate, minimised


def run_sweep(out: Path, sampler: str, seed: int, n_trials: int, threads: int, extra: list[str]) -> float:
    """One sweep into study `<sampler>_s<seed>` of out/samplers.db; returns its wall seconds (0 if it was done)."""
    name = f"{sampler}_s{seed}"
    settings = [*SAMPLERS[sampler], f"hydra.sweeper.sampler.seed={seed}"]
    args = named_sweep(out, "samplers.db", name, n_trials, threads, settings, extra)
    start = time.perf_counter()
    with open(out / f"{name}.log", "w") as log:
        subprocess.run(args, check=True, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    print(f"ran {name}: {seconds:.0f} s", flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=list(SAMPLERS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--n-trials", type=int, default=30)
    parser.add_argument("--parallel", type=int, default=2, help="sweeps at a time")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per trial")
    parser.add_argument("--out", type=Path, default=Path("multirun/sampler_choice"))
    parser.add_argument("--report-only", action="store_true", help="no sweeps: the table from the studies in --out")
    parser.add_argument("overrides", nargs="*", help="extra overrides for every trial, after --")
    opts = parser.parse_args()
    opts.out = opts.out.resolve()
    opts.out.mkdir(parents=True, exist_ok=True)
    runs = [(sampler, seed) for seed in opts.seeds for sampler in opts.samplers]
    if not opts.report_only:
        with ThreadPoolExecutor(opts.parallel) as pool:
            list(pool.map(lambda r: run_sweep(opts.out, *r, opts.n_trials, opts.threads, opts.overrides), runs))
    report(opts, runs)


def report(opts: argparse.Namespace, runs: list[tuple[str, int]]) -> None:
    storage = f"sqlite:///{opts.out}/samplers.db"
    fronts, sample, walls = {}, {}, {}
    for sampler, seed in runs:
        trials = optuna.load_study(study_name=f"{sampler}_s{seed}", storage=storage).trials
        done = [t for t in trials if t.state.name == "COMPLETE"]
        fronts[sampler, seed] = [tuple(t.values) for t in done]
        sample[sampler, seed] = median(t.user_attrs.get("sample_seconds", float("nan")) for t in trials)
        span = max(t.datetime_complete for t in done) - min(t.datetime_start for t in trials)
        walls[sampler, seed] = span.total_seconds()
    every = [p for pts in fronts.values() for p in pts]
    ref = (max(p[0] for p in every) * 1.01, max(p[1] for p in every) * 1.01)
    hv = {k: hypervolume_2d(pts, ref, DIRECTIONS) for k, pts in fronts.items()}
    unit = METRICS["distortion"].unit.text  # rate's too
    print(f"\nreference point: distortion {ref[0]:.1f}, rate {ref[1]:.1f} {unit}; {opts.n_trials} trials each")
    print(
        "\n| sampler | "
        + " | ".join(f"hypervolume, seed {s}" for s in opts.seeds)
        + " | median | sampler s/trial (median) | sweep wall s (median) |"
    )
    print("|---|" + "---|" * (len(opts.seeds) + 3))
    for sampler in opts.samplers:
        hvs = [hv[sampler, s] for s in opts.seeds]
        seconds = median(sample[sampler, s] for s in opts.seeds)
        print(
            f"| {sampler} | " + " | ".join(f"{h:,.0f}" for h in hvs) + f" | **{median(hvs):,.0f}** | "
            f"{seconds:.3f} | {median(walls[sampler, s] for s in opts.seeds):.0f} |"
        )


if __name__ == "__main__":
    main()
