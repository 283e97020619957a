"""What the move to the Hydra 1.4 / Optuna 5 stack costs or saves a user: the same measurements on two installs.

For each install (an interpreter, and optionally a checkout put first on PYTHONPATH), alternating between them so
that a busy spell of the machine falls on both:

- `import vae_sweep.job` and `import optuna` in a fresh interpreter (median of --repeats);
- the default job end to end (`python -m vae_sweep threads=1`, from an empty folder): the command's wall time and
  the job's own `wall_seconds`;
- the per-trial overhead of a serial sweep (benchmarks/sweeps.py: launch to launch, less the job's wall time) on
  --overhead-trials short trials (epochs=3);
- with --full-sweep, the default sweep (`python -m vae_sweep --multirun`, 30 trials) wall time.

    python benchmarks/stack.py --before /tmp/oldvenv/bin/python:/tmp/oldsrc      # this install against another
    python benchmarks/stack.py --repeats 3 --full-sweep
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sweeps import overhead, run_sweep


def env_for(source: str | None) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": source} if source else dict(os.environ)


def import_seconds(python: str, source: str | None, module: str) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    out = subprocess.run([python, "-c", code], env=env_for(source), capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def default_job(python: str, source: str | None) -> tuple[float, float]:
    """(command seconds, the job's own wall_seconds) of the default job, from an empty folder."""
    folder = Path(tempfile.mkdtemp(prefix="stack_job_"))
    start = time.perf_counter()
    subprocess.run(
        [python, "-m", "vae_sweep", "threads=1", "progress=false"],
        cwd=folder, env=env_for(source), capture_output=True, check=True,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    (metrics,) = folder.glob("outputs/*/*/metrics.json")
    return seconds, json.loads(metrics.read_text())["wall_seconds"]


def measure(name: str, python: str, source: str | None, opts: argparse.Namespace) -> dict:
    row = {
        "import vae_sweep.job s": import_seconds(python, source, "vae_sweep.job"),
        "import optuna s": import_seconds(python, source, "optuna"),
    }
    row["default job s"], row["its job wall s"] = default_job(python, source)
    folder = Path(tempfile.mkdtemp(prefix=f"stack_{name}_")) / "s"
    run = run_sweep(folder, opts.overhead_trials, ["epochs=3", "threads=1"], python=python, source=source)
    row["per-trial overhead s"] = overhead(run, 20)["per_trial"]
    if opts.full_sweep:
        folder = Path(tempfile.mkdtemp(prefix=f"stack_full_{name}_")) / "s"
        row["default sweep s"] = run_sweep(folder, 30, [], python=python, source=source).seconds
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", help="PYTHON[:CHECKOUT] of the other install (e.g. the previous stack)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--overhead-trials", type=int, default=8)
    parser.add_argument("--full-sweep", action="store_true", help="also the default sweep, 30 trials (minutes)")
    opts = parser.parse_args()
    installs = {"this": (sys.executable, None)}
    if opts.before:
        python, _, source = opts.before.partition(":")
        installs = {"before": (python, source or None), **installs}
    rows: dict[str, list[dict]] = {name: [] for name in installs}
    for i in range(opts.repeats):
        for name, (python, source) in installs.items():
            rows[name].append(measure(name, python, source, opts))
            print(f"repeat {i}: {name}: {json.dumps({k: round(v, 3) for k, v in rows[name][-1].items()})}", flush=True)
    keys = list(rows["this"][0])
    print("\n| what | " + " | ".join(installs) + " |\n|---|" + "---|" * len(installs))
    for key in keys:
        cells = []
        for name in installs:
            values = [r[key] for r in rows[name]]
            cells.append(f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})")
        print(f"| {key} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
