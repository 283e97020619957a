"""What the loggers cost a default job: the default job (20 epochs of the MLP on mnist_5k) with no logger,
`logger=tensorboard` and `logger=mlflow` (a local SQLite store), alternated round by round, in this process.

    python benchmarks/loggers.py [--rounds 3] [--epochs 20]

For each variant: the training time (metrics.json's train_seconds), the time the loggers spent on the epochs
(every `log_epoch`), and apart from it `start` (the library's import, the first time, and opening the run) and the
end (final metrics, the pictures already written, closing). The per-epoch share is the figure the 2 % budget is about.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VARIANTS = {"none": [], "tensorboard": ["logger=tensorboard"], "mlflow": ["logger=mlflow"]}


def timed_loggers(spent: dict[str, float]) -> None:
    """Make every `Loggers` call add its seconds to spent[method]."""
    from vae_sweep import loggers

    each = loggers.Loggers._each

    def _each(self, method: str, *args) -> None:
        start = time.perf_counter()
        each(self, method, *args)
        spent[method] += time.perf_counter() - start

    loggers.Loggers._each = _each
    opened = loggers.open_loggers

    def open_loggers(cfg, run):
        start = time.perf_counter()
        out = opened(cfg, run)  # builds (imports checked) and starts them
        spent["open"] += time.perf_counter() - start
        return out

    loggers.open_loggers = open_loggers
    import vae_sweep.job

    vae_sweep.job.open_loggers = open_loggers


def one_job(overrides: list[str], where: Path) -> float:
    """Run the default job with `overrides` into `where`, as the Compose API builds it; its training seconds."""
    from omegaconf import OmegaConf

    from vae_sweep.__main__ import CONF_DIR
    from vae_sweep.hydra_api import compose
    from vae_sweep.job import run
    from vae_sweep.run_files import read_metrics

    where.mkdir(parents=True)  # Hydra makes the run dir; here the benchmark does
    cfg = compose(CONF_DIR, "config", overrides)
    run(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), where)  # a job's config, as Hydra gives it
    return float(read_metrics(where)["train_seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    spent: dict[str, float] = defaultdict(float)
    timed_loggers(spent)
    results: dict[str, list[tuple[float, float, float, float]]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # mlflow's default store (./mlflow.db, ./mlruns) lands here
        for r in range(args.rounds):
            for name, extra in VARIANTS.items():
                spent.clear()
                train = one_job([f"epochs={args.epochs}", "progress=false", *extra], Path(tmp) / f"{name}{r}")
                print(f"round {r} {name}: train {train:.2f} s, epochs {spent['log_epoch']:.4f} s", flush=True)
                results[name].append(
                    (
                        train,
                        spent["log_epoch"],
                        spent["open"],
                        spent["log_final"] + spent["log_pictures"] + spent["close"],
                    )
                )
    print(
        f"{'logger':12} {'train s':>8} {'epochs s':>9} {'share':>7} {'start s':>8} {'end s':>6}   (medians of {args.rounds})"
    )
    for name, rows in results.items():
        train, epochs, opened, end = (statistics.median(c) for c in zip(*rows))
        print(f"{name:12} {train:8.2f} {epochs:9.4f} {100 * epochs / train:6.2f}% {opened:8.2f} {end:6.2f}")


if __name__ == "__main__":
    main()
