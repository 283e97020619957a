"""Preemption: SIGTERM or SIGUSR2 saves model.pt mid-epoch and ends the run `interrupted`; `resume=` and a resumed
sweep continue it exactly where it stopped. In process with a real signal, then as a user runs it (subprocesses)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState
from test_sweeper_units import job_return, sweeper
from torch.optim.optimizer import register_optimizer_step_post_hook

from helpers import compose_config
from vae_sweep.job import run
from vae_sweep.preemption import SWEEPER_PID, Preempted, PreemptedJob
from vae_sweep.sweep.record import record
from vae_sweep.sweep.study import INTERRUPTED, counts, make_storage

SMALL = ["debug=tiny", "max_batches=5", "eval.iwae_k=2", "eval.pictures=false", "threads=1"]


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def history_epochs(run_dir: Path) -> list[int]:
    return [int(r["epoch"]) for r in csv.DictReader(open(run_dir / "history.csv"))]


def signal_after_step(n: int, sig: signal.Signals = signal.SIGTERM):
    """An optimiser hook that sends `sig` to this process once the n-th step (from 1) is done: the handler runs
    before the loop's next check, as it would for Slurm's signal arriving during that step."""
    steps = [0]

    def hook(_optimizer, _args, _kwargs) -> None:
        steps[0] += 1
        if steps[0] == n:
            os.kill(os.getpid(), sig)

    return register_optimizer_step_post_hook(hook)


def dirs(tmp_path: Path, *names: str) -> list[Path]:
    for name in names:
        (tmp_path / name).mkdir()
    return [tmp_path / name for name in names]


@pytest.fixture(autouse=True)
def no_sweeper(monkeypatch):
    monkeypatch.delenv(SWEEPER_PID, raising=False)  # these jobs are not a sweep's


def test_preempted_mid_epoch_then_resumed_equals_an_uninterrupted_run(tmp_path):
    """SIGTERM after step 7 of 3 x 5: model.pt holds epoch 1 and 2 batches of epoch 2; the resumed run regenerates
    epoch 2's order, skips those batches and ends bit-identical to a straight run, with no epoch twice."""
    straight, cut, resumed = dirs(tmp_path, "straight", "cut", "resumed")
    run(compose_config([*SMALL, "epochs=3"]), straight)
    handle = signal_after_step(7)
    try:
        with pytest.raises(Preempted) as e:
            run(compose_config([*SMALL, "epochs=3"]), cut)
    finally:
        handle.remove()
    assert e.value.signal == "SIGTERM" and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored
    m = metrics(cut)
    assert (m["status"], m["signal"], m["epochs"], m["steps"]) == ("interrupted", "SIGTERM", 1, 7)
    ckpt = torch.load(cut / "model.pt", weights_only=True)  # still plain tensors and containers
    assert (ckpt["epoch"], ckpt["step"], ckpt["position"]["batch"]) == (1, 7, 2)
    assert history_epochs(cut) == [1]

    run(compose_config([*SMALL, "epochs=3", f"resume={cut}"]), resumed)
    assert metrics(resumed)["status"] == "completed" and metrics(resumed)["resumed_from"] == str(cut)
    a = torch.load(straight / "model.pt", weights_only=True)
    b = torch.load(resumed / "model.pt", weights_only=True)
    assert b["epoch"] == a["epoch"] == 3 and b["step"] == a["step"] == 15 and b["position"]["batch"] == 0
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    keys = ("epoch", "step", "train_loss", "train_distortion", "val_neg_elbo")
    assert [[r[k] for k in keys] for r in a["history"]] == [[r[k] for k in keys] for r in b["history"]]
    assert history_epochs(resumed) == [1, 2, 3]
    assert metrics(resumed)["neg_elbo"] == metrics(straight)["neg_elbo"]


def test_a_signal_at_an_epochs_last_step_keeps_every_epoch_once(tmp_path):
    """SIGUSR2 after step 5 = epoch 1's last: the epoch's validation and history row come with the resume."""
    dirs(tmp_path, "cut", "resumed")
    handle = signal_after_step(5, signal.SIGUSR2)
    try:
        with pytest.raises(Preempted):
            run(compose_config([*SMALL, "epochs=2"]), tmp_path / "cut")
    finally:
        handle.remove()
    assert metrics(tmp_path / "cut")["signal"] == "SIGUSR2"
    run(compose_config([*SMALL, "epochs=2", f"resume={tmp_path / 'cut'}"]), tmp_path / "resumed")
    assert history_epochs(tmp_path / "resumed") == [1, 2] and metrics(tmp_path / "resumed")["steps"] == 10


def test_a_checkpoint_without_a_position_still_resumes(tmp_path):
    """model.pt from before preemption support (no `position`) ends at an epoch's end: batch 0."""
    dirs(tmp_path, "old", "new")
    run(compose_config([*SMALL, "epochs=1"]), tmp_path / "old")
    ckpt = torch.load(tmp_path / "old" / "model.pt", weights_only=True)
    del ckpt["position"]
    torch.save(ckpt, tmp_path / "old" / "model.pt")
    run(compose_config([*SMALL, "epochs=2", f"resume={tmp_path / 'old'}"]), tmp_path / "new")
    assert metrics(tmp_path / "new")["status"] == "completed" and history_epochs(tmp_path / "new") == [1, 2]


def test_a_job_preempted_in_a_worker_is_recorded_interrupted_and_does_not_count(tmp_path, monkeypatch):
    """Under joblib or submitit the job raises PreemptedJob (an ordinary exception) and the sweep goes on."""
    monkeypatch.setenv(SWEEPER_PID, "1")  # another process records this job
    dirs(tmp_path, "run")
    handle = signal_after_step(2)
    try:
        with pytest.raises(PreemptedJob, match=r"interrupted \(SIGTERM\) after 0 epochs, 2 steps"):
            run(compose_config([*SMALL, "epochs=1"]), tmp_path / "run")
    finally:
        handle.remove()
    study = optuna.create_study(storage=make_storage(f"sqlite:///{tmp_path}/s.db"))
    trial = study.ask()
    ret = job_return(tmp_path / "run", error=PreemptedJob("interrupted (SIGTERM)"))
    assert record(study, trial, ret, 1) == TrialState.FAIL
    (frozen,) = study.trials
    assert frozen.user_attrs["status"] == INTERRUPTED and not counts(frozen)
    assert frozen.user_attrs["metrics"]["signal"] == "SIGTERM"


def signal_while_loading(monkeypatch, sig: signal.Signals = signal.SIGTERM) -> None:
    """The dataset loader sends `sig` to this process as it finishes: a signal before training starts."""
    from vae_sweep import job

    load = job.datasets.load

    def load_then_signal(*args, **kwargs):
        data = load(*args, **kwargs)
        os.kill(os.getpid(), sig)
        return data

    monkeypatch.setattr(job.datasets, "load", load_then_signal)


@pytest.mark.parametrize("worker", [False, True])
def test_a_signal_before_training_starts_ends_the_job_interrupted(tmp_path, monkeypatch, worker):
    """While the data loads there is nothing to save: the job ends at once, `interrupted` with the signal's name
    (not killed by the default handler, which would leave a `running` metrics.json: a failed trial on Slurm)."""
    if worker:
        monkeypatch.setenv(SWEEPER_PID, "1")  # another process records this job
    signal_while_loading(monkeypatch, signal.SIGUSR2)
    (run_dir,) = dirs(tmp_path, "run")
    expected = (PreemptedJob, r"interrupted \(SIGUSR2\) before training started") if worker else (Preempted, "SIGUSR2")
    with pytest.raises(expected[0], match=expected[1]):
        run(compose_config([*SMALL, "epochs=2"]), run_dir)
    ended = metrics(run_dir)
    assert ended["status"] == "interrupted" and ended["signal"] == "SIGUSR2" and ended["epochs"] == 0
    assert not (run_dir / "model.pt").exists()
    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL  # the handlers are given back
    if worker:  # the sweep records it as interrupted: it does not count, and nothing is there to continue
        study = optuna.create_study(storage=make_storage(f"sqlite:///{tmp_path}/s.db"))
        assert record(study, study.ask(), job_return(run_dir, error=PreemptedJob("x")), 1) == TrialState.FAIL
        (frozen,) = study.trials
        assert frozen.user_attrs["status"] == INTERRUPTED and not counts(frozen)


def fake_run_dir(path: Path, epoch: int, configured: int) -> Path:
    """A run dir whose model.pt says `epoch` of `configured` epochs (all the sweep reads of it)."""
    path.mkdir(parents=True)
    torch.save({"epoch": epoch, "config": {"epochs": configured}}, path / "model.pt")
    return path


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_ask_continues_each_interrupted_trial_with_a_model_pt_once(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    impl = sweeper({"_target_": "optuna.samplers.RandomSampler", "seed": 0}, n_trials=4, storage=url)
    study = optuna.create_study(study_name="s", storage=make_storage(url, (60, 120)), directions=["minimize"] * 2)
    dists = {"x": FloatDistribution(0, 1)}
    old = [t for t, _ in impl._ask(study, dists, {}, [], parallel=3)]
    dirs = [fake_run_dir(tmp_path / str(n), *progress) for n, progress in enumerate([(1, 3), (3, 3), (0, 2)])]
    for t, d in zip(old, dirs):
        t.set_user_attr("run_dir", str(d))
        study.tell(t, state=TrialState.FAIL)  # as Ctrl-C, a signal or a stale heartbeat leaves it: interrupted
    batch = impl._ask(study, dists, {}, [], parallel=3)
    assert [t.number for t, _ in batch] == [3, 4, 5]
    resumed = {t.user_attrs["resume_of"]: (t, o) for t, o in batch if "resume_of" in t.user_attrs}
    assert sorted(resumed) == [0, 1, 2]  # trial 1's model.pt holds every epoch: its continuation only evaluates it
    for n, (t, overrides) in resumed.items():
        assert t.params == old[n].params and t.user_attrs["resume"] == str(dirs[n])
        assert f"resume='{dirs[n]}'" in overrides
    for t, _ in batch:
        study.tell(t, state=TrialState.FAIL)  # interrupted again, with no model.pt of their own
    again = impl._ask(study, dists, {}, [], parallel=3)
    assert [t.number for t, _ in again] == [6, 7, 8] and not any("resume_of" in t.user_attrs for t, _ in again)


# As a user runs it: `python -m vae_sweep ...` in a subprocess, signalled once its first epoch is in history.csv.
SLOW = ["debug=tiny", "epochs=4", "max_batches=20", "eval.pictures=false", "threads=1"]


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    env.pop(SWEEPER_PID, None)
    cmd = [sys.executable, "-m", "vae_sweep", *args]
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def signal_after_first_epoch(proc: subprocess.Popen, run_dir: Path, sig: signal.Signals) -> str:
    """Wait (at most 300 s) until run_dir's history.csv has a row, send `sig`, and return stderr once it exits."""
    end = time.time() + 300
    while not ((run_dir / "history.csv").is_file() and history_epochs(run_dir)):
        assert proc.poll() is None, proc.communicate()[1]
        assert time.time() < end, "timed out waiting for the first epoch"
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0, err
    return err


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR2], ids=["SIGTERM", "SIGUSR2"])
def test_a_signalled_run_saves_and_resume_finishes_it(tmp_path, sig):
    cut, resumed = tmp_path / "cut", tmp_path / "resumed"
    err = signal_after_first_epoch(start([*SLOW, f"hydra.run.dir={cut}"], tmp_path), cut, sig)
    assert err.strip().splitlines()[-1] == f"interrupted ({sig.name}): model.pt saved; continue with resume={cut}"
    assert "Traceback" not in err
    m = metrics(cut)
    assert m["status"] == "interrupted" and m["signal"] == sig.name and 1 <= m["epochs"] < 4
    assert (cut / "model.pt").is_file()

    res = subprocess.run(
        [sys.executable, "-m", "vae_sweep", *SLOW, f"resume={cut}", f"hydra.run.dir={resumed}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    m = metrics(resumed)
    assert (m["status"], m["epochs"], m["steps"], m["resumed_from"]) == ("completed", 4, 80, str(cut))
    assert history_epochs(resumed) == [1, 2, 3, 4]


@pytest.mark.slow
def test_a_preempted_sweep_continues_the_trial_from_its_model_pt(tmp_path):
    def command(name: str) -> list[str]:
        return [
            "--multirun",
            "sweep=elbo",
            f"hydra.sweep.dir={tmp_path / name}",
            f"hydra.sweeper.storage=sqlite:///{tmp_path}/study.db",
            "hydra.sweeper.n_trials=2",
            *SLOW,
        ]

    err = signal_after_first_epoch(start(command("first"), tmp_path), tmp_path / "first" / "0", signal.SIGTERM)
    assert err.strip().splitlines()[-1].startswith("interrupted (SIGTERM): trial(s) 0 marked interrupted; run the same")
    assert metrics(tmp_path / "first" / "0")["status"] == "interrupted"

    res = start(command("second"), tmp_path)  # the same command, run again
    _, err = res.communicate(timeout=600)
    assert res.returncode == 0, err
    url = f"sqlite:///{tmp_path}/study.db"
    (summary,) = optuna.get_all_study_summaries(url)
    trials = optuna.load_study(study_name=summary.study_name, storage=url).trials
    states = [(t.state, t.user_attrs["status"], t.user_attrs.get("resume_of")) for t in trials]
    assert states == [
        (TrialState.FAIL, "interrupted", None),
        (TrialState.COMPLETE, "completed", 0),
        (TrialState.COMPLETE, "completed", None),
    ]
    first, again = trials[0], trials[1]
    assert again.params == first.params and again.user_attrs["resume"] == str(tmp_path / "first" / "0")
    run_dir = tmp_path / "second" / "1"
    m = metrics(run_dir)
    assert (m["epochs"], m["steps"], m["resumed_from"]) == (4, 80, str(tmp_path / "first" / "0"))
    assert again.user_attrs["metrics"]["resumed_from"] == m["resumed_from"]
    assert history_epochs(run_dir) == [1, 2, 3, 4]


@pytest.mark.slow
def test_a_job_preempted_in_a_joblib_worker_is_continued_within_the_same_sweep(tmp_path):
    """The signal reaches the worker processes only (as a cluster's would, for their jobs): the sweep goes on and
    continues both interrupted trials, each from its own model.pt."""
    args = [
        "--multirun",
        "sweep=elbo",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir={tmp_path / 's'}",
        f"hydra.sweeper.storage=sqlite:///{tmp_path}/study.db",
        "hydra.sweeper.n_trials=2",
        *SLOW,
        "epochs=8",
    ]
    proc = start(args, tmp_path)
    end = time.time() + 300
    while not all((tmp_path / "s" / n / "history.csv").is_file() for n in "01"):
        assert proc.poll() is None and time.time() < end, "timed out waiting for both trials' first epoch"
        time.sleep(0.05)
    ps = subprocess.run(
        ["ps", "-ww", "-o", "pid=,args=", "--ppid", str(proc.pid)], capture_output=True, text=True
    ).stdout
    workers = [int(line.split()[0]) for line in ps.splitlines() if "LokyProcess" in line]
    assert len(workers) == 2, ps
    for pid in workers:
        os.kill(pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    url = f"sqlite:///{tmp_path}/study.db"
    (summary,) = optuna.get_all_study_summaries(url)
    trials = optuna.load_study(study_name=summary.study_name, storage=url).trials
    assert [(t.state, t.user_attrs["status"]) for t in trials[:2]] == [(TrialState.FAIL, "interrupted")] * 2
    assert sorted(t.user_attrs.get("resume_of") for t in trials[2:]) == [0, 1]
    for t in trials[2:]:
        assert t.state == TrialState.COMPLETE and t.params == trials[t.user_attrs["resume_of"]].params
        run_dir = tmp_path / "s" / str(t.number)
        assert metrics(run_dir)["epochs"] == 8 and history_epochs(run_dir) == list(range(1, 9))
