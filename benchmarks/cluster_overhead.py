"""What one study shared through PostgreSQL costs (issue 11): the sweep's per-trial overhead on SQLite, on
PostgreSQL and (with --slurm) with each trial a Slurm job, and the throughput of 1, 2 and 4 processes filling one
PostgreSQL study.

    python benchmarks/cluster_overhead.py            # about 4 minutes on an idle 2-core machine
    python benchmarks/cluster_overhead.py --quick    # about 2 minutes: fewer trials, one round
    python benchmarks/cluster_overhead.py --slurm    # also through Slurm: SLURM_CONF's cluster, or one started here

The trial does next to nothing (`debug=tiny max_batches=1 eval.iwae_k=0 eval.pictures=false`: one optimiser
step, a validation pass, metrics.json and model.pt), so what is left is the sweep's own cost. Per-trial overhead
is as in bench.py's sweep section (benchmarks/sweeps.py `overhead`): launch of trial i to launch of trial i + 1,
less trial i's `wall_seconds`, the median over a serial sweep. The storages are run alternately (ABBA).

Throughput: N processes start together with the same command against one fresh PostgreSQL database, each with its
own sweep dir (as on N hosts), and fill a study of n trials; each is checked to hold exactly n completed trials.
Trials per minute over the whole run (start to last exit), and over the steady part: from the moment the last
process launched its first trial to the last job's end, counting the trials that ended in it. "Last job end -> exit"
is the tail: a process that finds the study full while others' trials still run polls every heartbeat_interval
(10 s) until they end or go stale, then writes its summary.

PostgreSQL: the server `VAE_SWEEP_POSTGRES_URL` names, or a throwaway one started with ci/services/postgres.sh
and stopped at the end; each sweep gets a fresh database on it, dropped afterwards. Prints markdown tables on
stdout (progress on stderr); benchmarks/RESULTS.md holds one run.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness, sweeps: beside this file
from harness import REPO, cpu_seconds, others_share  # noqa: E402
from sweeps import HYDRA_LINE, _stamp, overhead, run_sweep  # noqa: E402

log = logging.getLogger("cluster_overhead")
# A trial that does next to nothing: one optimiser step on one thread, no IWAE bound, no pictures, no artifacts.
NOTHING = [
    "sweep=elbo",
    "debug=tiny",
    "max_batches=1",
    "eval.iwae_k=0",
    "eval.pictures=false",
    "threads=1",
    "hydra.sweeper.artifact_dir=null",
]
WAIT = 900  # seconds: the bound on one sweep process


@contextlib.contextmanager
def service(kind: str) -> Iterator[str]:
    """Start ci/services/<kind>.sh in a directory of its own, yield the last line it prints, and stop it after."""
    env = {**os.environ, "VAE_SWEEP_SERVICES_DIR": tempfile.mkdtemp(prefix=f"vae_sweep_bench_{kind}_")}
    script = ["bash", str(REPO / "ci" / "services" / f"{kind}.sh")]
    run = lambda action: subprocess.run([*script, action], env=env, capture_output=True, text=True, timeout=1200)
    log.info("starting %s (ci/services/%s.sh start)", kind, kind)
    try:
        res = run("start")
        if res.returncode != 0:
            raise SystemExit(f"error: ci/services/{kind}.sh start failed:\n{res.stderr[-2000:]}")
        yield res.stdout.strip().splitlines()[-1]
    finally:
        run("stop")


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A SQLAlchemy URL of a PostgreSQL server: VAE_SWEEP_POSTGRES_URL's, or one started here and stopped after."""
    if given := os.environ.get("VAE_SWEEP_POSTGRES_URL"):
        yield given
        return
    with service("postgres") as url:
        yield url


@contextlib.contextmanager
def fresh_database(server: str) -> Iterator[str]:
    """A new empty database on `server` (an optuna schema and no studies), dropped afterwards."""
    name = f"vae_sweep_bench_{secrets.token_hex(4)}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        yield sa.engine.make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def slurm_cluster() -> Iterator[None]:
    """SLURM_CONF's cluster, or a one-node one started with ci/services/slurm.sh (root only) and stopped after."""
    if os.environ.get("SLURM_CONF"):
        yield
        return
    with service("slurm") as line:  # SLURM_CONF=/path/slurm.conf
        os.environ["SLURM_CONF"] = line.split("=", 1)[1]
        try:
            yield
        finally:
            os.environ.pop("SLURM_CONF", None)


# Each trial a Slurm job of one CPU, one at a time (n_jobs=1), on the SQLite study.
SLURM = [
    "hydra/launcher=submitit_slurm",
    "hydra.launcher.partition=debug",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=2",
    "hydra.launcher.timeout_min=10",
]


def overheads(server: str, n_trials: int, rounds: int, tmp: Path, slurm: bool) -> dict[str, list[dict]]:
    """A serial sweep of n_trials on each storage per round, alternating which goes first."""
    samples: dict[str, list[dict]] = {"SQLite": [], "PostgreSQL": []} | ({"Slurm job (SQLite)": []} if slurm else {})
    for r in range(rounds):
        for kind in list(samples)[:: 1 if r % 2 == 0 else -1]:
            folder = tmp / f"serial-{kind.split()[0]}-{r}"
            log.info("serial sweep of %d trials on %s (round %d)", n_trials, kind, r + 1)
            if kind == "SQLite":
                run = run_sweep(folder, n_trials, NOTHING)
            elif kind.startswith("Slurm"):
                run = run_sweep(folder, n_trials, NOTHING + SLURM)
            else:
                with fresh_database(server) as url:
                    run = run_sweep(folder, n_trials, NOTHING, storage=url)
            samples[kind].append(overhead(run, default_epochs=1) | {"others": run.others})
    return samples


def shared(server: str, processes: int, n_trials: int, tmp: Path) -> dict[str, float]:
    """`processes` sweeps started together on one fresh PostgreSQL study of n_trials: trials per minute."""
    import optuna

    folders = [tmp / f"shared-{processes}-{secrets.token_hex(2)}-{i}" for i in range(processes)]
    with fresh_database(server) as url:
        common = [
            f"hydra.sweeper.storage={url}",
            "hydra.sweeper.study_name=shared",
            f"hydra.sweeper.n_trials={n_trials}",
        ]
        cpu, start, start_wall = cpu_seconds(), time.perf_counter(), time.time()
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "vae_sweep", "--multirun", f"hydra.sweep.dir={f}", *common, *NOTHING],
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
            )
            for f in folders
        ]
        outputs = [p.communicate(timeout=WAIT)[0] for p in procs]
        seconds, others = time.perf_counter() - start, others_share(cpu, cpu_seconds())
        for p, out in zip(procs, outputs):
            if p.returncode != 0:
                raise RuntimeError(f"a shared sweep failed:\n{out[-2000:]}")
        trials = optuna.load_study(study_name="shared", storage=url).trials
    if len(trials) != n_trials or any(t.state != optuna.trial.TrialState.COMPLETE for t in trials):
        raise RuntimeError(f"{processes} processes left {len(trials)} trials, not {n_trials} completed ones")
    ends = [p.stat().st_mtime for f in folders for p in f.glob("*/metrics.json")]
    launches = [[_stamp(t) for t, msg in HYDRA_LINE.findall(out) if msg.startswith("Launching")] for out in outputs]
    all_up = max(min(times) for times in launches if times)  # every process that ran a trial has begun: steady
    steady = sum(e > all_up for e in ends)
    return {
        "whole": 60 * n_trials / seconds,
        "steady": 60 * steady / (max(ends) - all_up) if steady else float("nan"),
        "seconds": seconds,
        "tail": start_wall + seconds - max(ends),  # last job end -> last exit: waiting on others' last trials
        "others": others,
    }


def span(values: list[float], fmt: str) -> str:
    """The median in bold, and the range when there are several values."""
    text = f"**{statistics.median(values):{fmt}}**"
    return text + (f" ({min(values):{fmt}}–{max(values):{fmt}})" if len(values) > 1 else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer trials and one round")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--slurm", action="store_true", help="also each trial as a Slurm job (submitit_slurm)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    serial, rounds, n_shared = (8, 1, 24) if args.quick else (12, 2, 40)
    with (
        postgres_server() as server,
        slurm_cluster() if args.slurm else contextlib.nullcontext(),
        tempfile.TemporaryDirectory(prefix="vae_sweep_cluster_") as tmp,
    ):
        samples = overheads(server, serial, rounds, Path(tmp), args.slurm)
        order = args.processes + args.processes[::-1] if rounds > 1 else args.processes
        rates: dict[int, list[dict]] = {n: [] for n in args.processes}
        for n in order:
            log.info("%d process(es) sharing one PostgreSQL study of %d trials", n, n_shared)
            rates[n].append(shared(server, n, n_shared, Path(tmp)))

    print(f"\n### Per-trial overhead of a serial sweep, {serial} trials that do next to nothing, seconds\n")
    print(
        "| storage | per-trial overhead | launch → job start | job end → next launch | start-up | trial (`wall_seconds`) | others' CPU |"
    )
    print("|---|---|---|---|---|---|---|")
    for kind, runs in samples.items():
        cells = [span([r[k] for r in runs], ".3f") for k in ("per_trial", "before_job", "after_job")]
        cells += [span([r[k] for r in runs], ".1f") for k in ("startup",)] + [span([r["trial"] for r in runs], ".3f")]
        print(f"| {kind} | {' | '.join(cells)} | {max(r['others'] for r in runs):.0%} |")
    print(f"\n### Processes sharing one PostgreSQL study of {n_shared} such trials, trials per minute\n")
    print(
        "| processes | whole run | ratio | all processes up → last job end | ratio | seconds | last job end → exit | others' CPU |"
    )
    print("|---|---|---|---|---|---|---|---|")
    base = {k: statistics.median(r[k] for r in rates[args.processes[0]]) for k in ("whole", "steady")}
    for n, runs in rates.items():
        whole, steady = ([r[k] for r in runs] for k in ("whole", "steady"))
        print(
            f"| {n} | {span(whole, '.1f')} | {statistics.median(whole) / base['whole']:.2f}× | {span(steady, '.1f')} | "
            f"{statistics.median(steady) / base['steady']:.2f}× | {statistics.median(r['seconds'] for r in runs):.1f} | "
            f"{statistics.median(r['tail'] for r in runs):.1f} | "
            f"{max(r['others'] for r in runs):.0%} |"
        )


if __name__ == "__main__":
    main()
