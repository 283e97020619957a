"""Where a job's and a sweep's seconds go: `python benchmarks/breakdown.py`.

Each measured run is the real command (`python -m vae_sweep ...`, or with `--multirun` a sweep) in a child process
of its own, in a fresh folder, started by this script with timers around the functions that make up a job (the
breakdown below) and around the first import of the libraries that cost most (torch._dynamo, matplotlib, ...).
Nothing is re-implemented: the timers wrap the functions the command calls, so a later change shows its effect
here. Clocks: the parent notes the wall-clock time at which it starts the child and when the child has exited; the
child stamps when its first line runs, and when `main()` starts and returns.

    python benchmarks/breakdown.py                           # the default job, 3 alternated repeats
    python benchmarks/breakdown.py --sweep 10                # and a default 10-trial sweep (per trial)
    python benchmarks/breakdown.py --repo /path/to/other/checkout --sweep 10   # before/after, alternated
    python benchmarks/breakdown.py --tiny                    # seconds, for the test that keeps this from rotting
    python benchmarks/breakdown.py --repo ../before --repo-path /tmp/no_greenlet --no-job --sweep 30
                                  # the --repo runs with a folder first on their path: here one that hides greenlet

With `--repo`, the same command runs from each checkout in turn (ABAB...), and the tables show their medians side
by side: "before" is the first. Phases nest (validation inside fit, IWAE inside the final metrics): the table lists
leaves, each with its median seconds in a run (a sweep: per trial), and `other` is the rest of the job function.
"""

from __future__ import annotations

import argparse
import builtins
import functools
import importlib
import importlib.abc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# (module, attribute, phase): a function to time, where the caller looks it up. Methods as "Class.method".
PHASES = [
    ("vae_sweep.checks", "check_argv", "command-line check"),
    ("vae_sweep.job", "check_config", "config check"),
    ("vae_sweep.data", "load", "data load"),
    ("vae_sweep.job", "build", "build model and optimiser"),
    ("vae_sweep.train", "train_epoch", "training (train_epoch)"),
    ("vae_sweep.train", "validation_terms", "validation, every epoch"),
    ("vae_sweep.train", "save_checkpoint", "model.pt, every epoch"),
    ("vae_sweep.train", "write_history", "history.csv, every epoch"),
    ("vae_sweep.job", "validation_terms", "final validation"),
    ("vae_sweep.job", "iwae_nll", "IWAE bound"),
    ("vae_sweep.job", "active_units", "active units"),
    ("vae_sweep.pictures", "posterior_means", "picture: posterior means"),
    ("vae_sweep.pictures", "_save_reconstructions", "picture: reconstructions.png"),
    ("vae_sweep.pictures", "_save_samples", "picture: samples.png"),
    ("vae_sweep.pictures", "_save_traversals", "picture: traversals.png"),
    ("vae_sweep.pictures", "_save_manifold", "picture: manifold.png"),
    ("vae_sweep.pictures", "save_latent_scatter", "picture: latent_scatter.png"),
    ("vae_sweep.job", "write_metrics", "metrics.json writes"),
    ("vae_sweep.job", "open_loggers", "loggers: open"),
    ("vae_sweep.loggers", "Loggers.finish", "loggers: finish"),
    # the sweep's bookkeeping, in the sweep's process
    ("vae_sweep.sweep.sweeper", "VaeOptunaSweeperImpl._ask", "sweep: ask (sampler, study.ask)"),
    ("optuna.samplers._gp.sampler", "GPSampler.sample_relative", "sweep: of which: GP sampler"),
    ("vae_sweep.sweep.sweeper", "record", "sweep: record (tell, attributes)"),
    ("vae_sweep.sweep.sweeper", "VaeOptunaSweeperImpl._check_failure_budget", "sweep: failure budget"),
    ("vae_sweep.sweep.sweeper", "VaeOptunaSweeperImpl._write_results", "sweep: results file"),
    ("vae_sweep.sweep.record", "_upload", "sweep: artifacts upload"),
]
JOB_FUNCTION = ("vae_sweep.job", "run")  # the task's own time; Hydra's job bookkeeping is run_job minus this
RUN_JOBS = [("hydra._internal.core_plugins.basic_launcher", "run_job"), ("hydra._internal.hydra", "run_job")]
# the first import of each, timed where it happens: a package (any of its modules) or one module by its full name
WATCHED_IMPORTS = ("torch._dynamo", "matplotlib", "sklearn", "scipy", "pandas", "optuna", "PIL")


# ------------------------------------------------------------------------------------------------ the child
def child(out: Path, argv: list[str]) -> None:
    """Run `python -m vae_sweep argv` in this process with timers, and write what they saw to `out` (JSON)."""
    first = time.time()
    seen: dict[str, list[float]] = {}  # phase -> [seconds, calls]

    def timed(label: str, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                entry = seen.setdefault(label, [0.0, 0])
                entry[0] += time.perf_counter() - t
                entry[1] += 1

        return wrapper

    original_import = builtins.__import__

    def watching_import(name, globals=None, locals=None, fromlist=(), level=0):
        watched = name if name in WATCHED_IMPORTS else name.partition(".")[0]  # `matplotlib.figure`: matplotlib
        if level == 0 and watched in WATCHED_IMPORTS and watched not in sys.modules:
            return timed(f"of which: import {watched} (first use)", original_import)(
                name, globals, locals, fromlist, level
            )
        return original_import(name, globals, locals, fromlist, level)

    builtins.__import__ = watching_import
    t = time.perf_counter()
    import vae_sweep.__main__ as entry
    import vae_sweep.job  # noqa: F401  (what every job imports; the task function imports it on its first call)

    seen["imports (vae_sweep and what it imports)"] = [time.perf_counter() - t, 1]
    targets = [(m, a, functools.partial(timed, label)) for m, a, label in [*PHASES, (*JOB_FUNCTION, "job function")]]
    targets += [(m, a, functools.partial(timed, "Hydra run_job")) for m, a in RUN_JOBS]  # a sweep's, a single run's
    later = WrapWhenImported()
    for module, attribute, timer in targets:
        if module in sys.modules:
            wrap(sys.modules[module], attribute, timer)
        else:  # not imported yet: timed when the command imports it, so the timers import nothing it would not
            later.pending.setdefault(module, []).append((attribute, timer))
    sys.meta_path.insert(0, later)
    sys.argv = ["vae_sweep", *argv]
    started = time.time()
    code = 0
    try:
        entry.main()
    except SystemExit as e:
        code = 0 if e.code is None else e.code if isinstance(e.code, int) else 1
        if e.code not in (None, 0):
            print(e.code, file=sys.stderr)
    ended = time.time()
    out.write_text(json.dumps({"first": first, "main": [started, ended], "phases": seen, "code": code}))
    sys.exit(code)  # as the real command ends, interpreter teardown included: the parent times it ("interpreter exit")


def wrap(owner, attribute: str, timer) -> None:
    """Replace `owner.attribute` (or `owner.Class.method`) of a module by its timed self, where it exists."""
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part, None)
    if owner is not None and callable(getattr(owner, name, None)):
        setattr(owner, name, timer(getattr(owner, name)))


class WrapWhenImported(importlib.abc.MetaPathFinder):
    """Wraps a module's functions right after the command imports it: finds the module's spec with the other
    finders, and runs the wrapping after its loader has executed it."""

    def __init__(self) -> None:
        self.pending: dict[str, list[tuple[str, object]]] = {}

    def find_spec(self, name, path, target=None):
        if name not in self.pending:
            return None
        spec = next(
            (s for f in sys.meta_path if f is not self and (s := _spec(f, name, path, target)) is not None), None
        )
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        execute, wraps = spec.loader.exec_module, self.pending.pop(name)

        def exec_module(module) -> None:
            execute(module)
            for attribute, timer in wraps:
                wrap(module, attribute, timer)

        spec.loader.exec_module = exec_module
        return spec


def _spec(finder, name, path, target):
    find = getattr(finder, "find_spec", None)
    return find(name, path, target) if find is not None else None


# ----------------------------------------------------------------------------------------------- the parent
def measure(repo: Path, argv: list[str], folder: Path, extra_path: str = "") -> dict:
    """One run of the command from checkout `repo` in `folder`: the child's timers and the parent's clocks.
    `extra_path` goes first on the child's PYTHONPATH (a folder that hides a package, say)."""
    folder.mkdir(parents=True)
    out = folder / "breakdown.json"
    path = os.pathsep.join(p for p in (extra_path, str(repo), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "HYDRA_FULL_ERROR": "1"}
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(out), "--", *argv]
    spawned = time.time()
    res = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=3600)
    exited = time.time()
    if res.returncode != 0 or not out.exists():
        raise SystemExit(
            f"breakdown: {' '.join(argv)} failed in {folder} (exit {res.returncode}):\n{res.stderr[-3000:]}"
        )
    run = json.loads(out.read_text())
    metrics = [json.loads(p.read_text()) for p in sorted(folder.rglob("metrics.json"))]
    run |= {"wall": exited - spawned, "spawned": spawned, "exited": exited, "metrics": metrics}
    return run


def trained(run: dict) -> float:
    """Seconds its jobs trained (metrics.json's train_seconds, validation every epoch included), all jobs together."""
    return sum(m.get("train_seconds", 0.0) for m in run["metrics"])


def rows(run: dict) -> dict[str, tuple[float, int]]:
    """A run's table: phase -> (seconds in the whole command, calls). The job's phases are leaves of the job
    function, whose rest is `other`; `of which` rows are inside the row before them and add to nothing. What the
    process did besides the named phases (Hydra composing configs, launching, writing run dirs; the sweeper's
    study and progress lines) is `the rest`."""
    phases = {k: (v[0], int(v[1])) for k, v in run["phases"].items()}
    start, end = run["main"]
    job, n_jobs = phases.pop("job function", (0.0, 0))
    run_job = phases.pop("Hydra run_job", (0.0, 0))[0]
    out = {"interpreter start-up": (run["first"] - run["spawned"], 1)}
    out |= {k: v for k, v in phases.items() if k.startswith("imports")}
    checked = phases.get("command-line check", (0.0, 0))
    out["command-line check"] = checked
    job_leaves = {k: v for k, v in phases.items() if not k.startswith(("imports", "command-line", "sweep:"))}
    out |= job_leaves
    leaves = sum(v[0] for k, v in job_leaves.items() if not k.startswith("of which"))
    out["other, in the job function"] = (job - leaves, n_jobs)
    out["Hydra: each job's bookkeeping (run_job less the job)"] = (run_job - job, n_jobs)
    sweep = {k: v for k, v in phases.items() if k.startswith("sweep:")}
    out |= sweep
    named = checked[0] + run_job + sum(v[0] for k, v in sweep.items() if "of which" not in k)
    rest = "Hydra and the sweeper: the rest (compose, launch, run dirs, study)" if sweep else "Hydra: the rest"
    out[rest] = ((end - start) - named, max(n_jobs, 1))
    out["interpreter exit"] = (run["exited"] - end, 1)
    out["whole command (wall)"] = (run["wall"], 1)
    out["of which training (metrics.json train_seconds)"] = (trained(run), len(run["metrics"]))
    return out


def table(runs: dict[str, list[dict]], title: str) -> str:
    """Markdown: a row per phase; for each checkout, the median over its runs of the seconds in the whole command
    and per call (a sweep: per trial), and the share of the command's wall time."""
    tables = {name: [rows(r) for r in rs] for name, rs in runs.items()}
    names = list(tables)
    order = list(dict.fromkeys(k for t in tables.values() for r in t for k in r))
    head = ["phase", "calls"]
    for name in names:
        suffix = f" ({name})" if len(names) > 1 else ""
        head += [f"seconds{suffix}", f"per call{suffix}", f"share{suffix}"]
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for phase in order:
        counts = [round(statistics.median(r.get(phase, (0, 0))[1] for r in tables[name])) for name in names]
        cells = [phase, " / ".join(map(str, dict.fromkeys(counts)))]  # one count, or each checkout's where they differ
        for name, calls in zip(names, counts):
            secs = statistics.median(r.get(phase, (0.0, 0))[0] for r in tables[name])
            calls = calls or 1
            wall = statistics.median(r["whole command (wall)"][0] for r in tables[name])
            cells += [f"{secs:.3f}", f"{secs / calls:.3f}", f"{100 * secs / wall:.1f} %"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def efficiency(runs: list[dict]) -> tuple[float, float, float]:
    """(wall seconds, training over wall, time inside the job functions over wall): medians over runs."""
    walls = [r["wall"] for r in runs]
    train = [trained(r) / r["wall"] for r in runs]
    inside = [r["phases"].get("job function", [0.0])[0] / r["wall"] for r in runs]
    return statistics.median(walls), statistics.median(train), statistics.median(inside)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--repo", action="append", type=Path, default=[], help="another checkout to compare (first: before)"
    )
    parser.add_argument(
        "--repo-path", default="", help="a folder put first on the --repo runs' PYTHONPATH (not this checkout's)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs of each command from each checkout, alternated")
    parser.add_argument("--sweep", type=int, default=0, metavar="N", help="also a default N-trial sweep")
    parser.add_argument("--no-job", action="store_true", help="skip the single default job")
    parser.add_argument("--tiny", action="store_true", help="debug=tiny and 2-trial sweeps: seconds, for the test")
    parser.add_argument("--json", type=Path, help="also write every run's raw timings here")
    parser.add_argument("overrides", nargs="*", help="more overrides for every command")
    args = parser.parse_args()
    repos = {str(r): r.resolve() for r in args.repo} | {"this checkout": REPO}
    if len(repos) == 1:
        repos = {"": REPO}
    extra = ["debug=tiny", "eval.iwae_k=2"] if args.tiny else []
    commands = {} if args.no_job else {"default job: python -m vae_sweep": extra + args.overrides}
    n = 2 if args.tiny and args.sweep else args.sweep
    if n:
        commands[f"default sweep: python -m vae_sweep --multirun hydra.sweeper.n_trials={n}"] = [
            "--multirun",
            f"hydra.sweeper.n_trials={n}",
            *extra,
            *args.overrides,
        ]
    raw: dict[str, dict[str, list[dict]]] = {c: {name: [] for name in repos} for c in commands}
    with tempfile.TemporaryDirectory(prefix="vae_sweep_breakdown_") as tmp:
        for _i in range(args.repeats):
            for title, argv in commands.items():
                for name, repo in repos.items():  # alternated: ABAB
                    folder = Path(tmp) / f"{len(raw[title][name])}_{abs(hash((title, name)))}"
                    first = args.repo_path if repo != REPO else ""
                    raw[title][name].append(measure(repo, argv, folder, first))
    print(f"torch threads: default; {args.repeats} run(s) of each, alternated; medians")
    for title, runs in raw.items():
        print()
        print(table(runs, title))
        print()
        for name, rs in runs.items():
            wall, train, inside = efficiency(rs)
            who = f" ({name})" if name else ""
            print(
                f"{title}{who}: wall {wall:.1f} s; training {100 * train:.0f} % of it; inside the jobs {100 * inside:.0f} %"
            )
    if args.json:
        args.json.write_text(json.dumps(raw, indent=1))


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(Path(sys.argv[2]), sys.argv[sys.argv.index("--") + 1 :])
    else:
        main()
