"""Faults during a sweep leave a true record: the study's states, each trial's metrics.json and the files on disk
agree, nothing is left RUNNING by a process alive to record it, and no temp file remains. A fault every trial would
meet (a full disk, an artifact store gone read-only) stops the sweep in one line; Ctrl-C and SIGTERM leave the trial
interrupted, and the same command continues it, even when only its final evaluation was left."""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState
from test_sweeper_units import job_return, study_at

from helpers.faults import (
    CHECKPOINT_MB,
    JOB,
    history_rows,
    last_line,
    metrics,
    remount_read_only,
    signal_when,
    small_disk,
    start,
    temp_files,
    wait_for,
)
from vae_sweep.errors import SweepStopped
from vae_sweep.sweep.record import record
from vae_sweep.sweep.study import counts


def sweep(tmp_path: Path, sweep_dir: Path, n_trials: int, *extra: str) -> list[str]:
    """The same command each time: a one-objective study in tmp_path/study.db, outside any small disk."""
    return [
        "--multirun",
        "sweep=elbo",
        *JOB,
        f"hydra.sweep.dir={sweep_dir}",
        f"hydra.sweeper.storage=sqlite:///{tmp_path}/study.db",
        f"hydra.sweeper.n_trials={n_trials}",
        "hydra.sweeper.artifact_dir=null",
        *extra,
    ]


def trials(tmp_path: Path) -> list[optuna.trial.FrozenTrial]:
    url = f"sqlite:///{tmp_path}/study.db"
    (summary,) = optuna.get_all_study_summaries(url)
    return optuna.load_study(study_name=summary.study_name, storage=url).trials


def states(tmp_path: Path) -> list[tuple[TrialState, str]]:
    return [(t.state, t.user_attrs.get("status")) for t in trials(tmp_path)]


def run(args: list[str], cwd: Path) -> tuple[int, str, str]:
    proc = start(args, cwd)
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, err


@pytest.mark.slow
def test_a_full_disk_fails_the_trial_stops_the_sweep_and_a_rerun_finishes_it(tmp_path):
    """Room for trial 0's first model.pt only: the trial is FAIL `failed` in the study and its metrics.json, the
    sweep stops (every trial would meet it), and with space again the same command ends with n_trials finished."""
    with small_disk(tmp_path / "disk", int(1.5 * CHECKPOINT_MB)) as disk:
        rc, out, err = run(sweep(tmp_path, disk / "s", 2), tmp_path)
        assert rc == 1 and "Traceback" not in err, err
        assert last_line(err).startswith(
            f"error: sweep stopped: trial 0 failed: No space left on device: {disk}/s/0/model.pt, as every trial would"
        ), err
        assert states(tmp_path) == [(TrialState.FAIL, "failed")]
        (trial,) = trials(tmp_path)
        assert "No space left on device" in trial.user_attrs["error"]
        m = metrics(disk / "s" / "0")
        assert m["status"] == "failed" and "No space left on device" in m["error"]
        assert torch.load(disk / "s" / "0" / "model.pt", weights_only=True)["epoch"] == 1  # epoch 1's, intact
        assert temp_files(disk) == []

    rc, out, err = run(sweep(tmp_path, tmp_path / "again", 2), tmp_path)  # the same command, with space
    assert rc == 0, err
    # n_trials counts finished trials: the failed one is run again, with new parameters
    assert states(tmp_path) == [(TrialState.FAIL, "failed")] + [(TrialState.COMPLETE, "completed")] * 2
    assert [metrics(tmp_path / "again" / n)["status"] for n in "12"] == ["completed"] * 2


@pytest.mark.slow
def test_an_artifact_store_gone_read_only_mid_sweep_records_the_trial_and_stops(tmp_path):
    with small_disk(tmp_path / "artifacts", 4) as store:
        args = sweep(tmp_path, tmp_path / "s", 3, "eval.pictures=true", f"hydra.sweeper.artifact_dir={store}")
        proc = start(args, tmp_path)
        wait_for(proc, lambda: history_rows(tmp_path / "s" / "0") >= 1)
        remount_read_only(store)
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 1 and "Traceback" not in err, err
        line = last_line(err)
        assert line.startswith(f"error: sweep stopped: the artifact store hydra.sweeper.artifact_dir={store}"), err
        assert "trial 0 is recorded COMPLETE without its pictures" in line
        (trial,) = trials(tmp_path)
        assert (trial.state, trial.user_attrs["status"]) == (TrialState.COMPLETE, "completed")
        assert "Read-only file system" in trial.user_attrs["artifact_error"]
        assert metrics(tmp_path / "s" / "0")["status"] == "completed"
        assert list((tmp_path / "s" / "0").glob("*.png")) and temp_files(tmp_path / "s") == []


@pytest.mark.slow
def test_ctrl_c_in_a_sweep_interrupts_the_trial_and_the_same_command_continues_it(tmp_path):
    proc = start(sweep(tmp_path, tmp_path / "a", 2), tmp_path)
    out, err = signal_when(proc, lambda: history_rows(tmp_path / "a" / "0") >= 1, signal.SIGINT)
    assert proc.returncode == 1 and "Traceback" not in err, err
    assert last_line(err).startswith("interrupted (SIGINT): trial(s) 0 marked interrupted; run the same command")
    assert states(tmp_path) == [(TrialState.FAIL, "interrupted")]
    assert metrics(tmp_path / "a" / "0")["status"] == "interrupted"
    closing = "\n".join(out.splitlines()[1:])  # the first line says what n_trials counts
    assert "1 trial: 1 interrupted" in closing and "failed" not in closing  # its closing lines call it no failure
    assert temp_files(tmp_path / "a") == []

    rc, out, err = run(sweep(tmp_path, tmp_path / "b", 2), tmp_path)
    assert rc == 0, err
    assert states(tmp_path) == [(TrialState.FAIL, "interrupted")] + [(TrialState.COMPLETE, "completed")] * 2
    continued = trials(tmp_path)[1]
    assert continued.user_attrs["resume_of"] == 0 and continued.params == trials(tmp_path)[0].params
    assert metrics(tmp_path / "b" / "1")["epochs"] == 4 and history_rows(tmp_path / "b" / "1") == 4
    assert "3 trials: 2 completed, 1 interrupted" in out


@pytest.mark.slow
def test_sigterm_during_the_final_evaluation_is_evaluated_once_by_the_next_run(tmp_path):
    """model.pt holds every epoch when the signal comes (the IWAE bound is running): the next run evaluates that
    model under the trial's own parameters, trains nothing again, and the trial counts once."""
    slow_eval = ["epochs=2", "max_batches=5", "eval.iwae_k=1000"]
    proc = start(sweep(tmp_path, tmp_path / "a", 1, *slow_eval), tmp_path)
    _, err = signal_when(proc, lambda: history_rows(tmp_path / "a" / "0") == 2, signal.SIGTERM)
    assert proc.returncode == 1 and "Traceback" not in err, err
    assert states(tmp_path) == [(TrialState.FAIL, "interrupted")]
    first = tmp_path / "a" / "0"
    assert torch.load(first / "model.pt", weights_only=True)["epoch"] == 2

    rc, out, err = run(sweep(tmp_path, tmp_path / "b", 1, *slow_eval), tmp_path)
    assert rc == 0, err
    assert "trial 0 was interrupted after 2 of 2 epochs: evaluating it from" in out
    assert states(tmp_path) == [(TrialState.FAIL, "interrupted"), (TrialState.COMPLETE, "completed")]
    old, new = trials(tmp_path)
    assert new.user_attrs["resume_of"] == 0 and new.params == old.params
    m = metrics(tmp_path / "b" / "1")
    assert (m["status"], m["epochs"], m["steps"], m["resumed_from"]) == ("completed", 2, 10, str(first))
    assert m["iwae_k"] == 1000 and new.value == m["neg_elbo"]
    assert history_rows(tmp_path / "b" / "1") == 2 and (tmp_path / "b" / "1" / "model.pt").is_file()
    assert temp_files(tmp_path) == []


@pytest.mark.parametrize(
    ("error", "stops"),
    [
        (OSError(errno.ENOSPC, "No space left on device", "/s/0/model.pt"), True),
        (OSError(errno.EROFS, "Read-only file system", "/s/0/metrics.json"), True),
        (OSError(errno.ENOENT, "No such file or directory", "/s/0/history.csv"), False),  # its run dir was deleted
    ],
    ids=["full", "read-only", "run-dir-gone"],
)
def test_a_write_error_is_recorded_failed_and_stops_the_sweep_only_if_every_trial_would_meet_it(tmp_path, error, stops):
    study = study_at(tmp_path, ("minimize",))
    trial = study.ask()
    ret = job_return(tmp_path / "run", error=error, metrics={"status": "failed"})
    if stops:
        with pytest.raises(SweepStopped, match=rf"^error: sweep stopped: trial 0 failed: {error.strerror}: "):
            record(study, trial, ret, 1)
    else:
        assert record(study, trial, ret, 1) == TrialState.FAIL
    (frozen,) = study.trials
    assert (frozen.state, frozen.user_attrs["status"]) == (TrialState.FAIL, "failed")
    assert error.strerror in frozen.user_attrs["error"] and bool(frozen.user_attrs.get("everywhere")) == stops
    assert not counts(frozen)  # n_trials counts finished trials: a failed one is replaced


@pytest.mark.parametrize(("code", "stops"), [(errno.EACCES, True), (errno.EIO, False)], ids=["forbidden", "io"])
def test_an_artifact_store_error_keeps_the_trials_own_result(tmp_path, monkeypatch, code, stops):
    from vae_sweep.sweep import record as recording

    def fail(*_args) -> None:
        raise OSError(code, os.strerror(code), str(tmp_path / "artifacts" / "x.png"))

    monkeypatch.setattr(recording, "upload_pictures", fail)
    study = study_at(tmp_path, ("minimize",))
    trial = study.ask()
    ret = job_return(tmp_path / "run", 5.0, metrics={"status": "completed", "neg_elbo": 5.0})
    if stops:
        with pytest.raises(SweepStopped, match="trial 0 is recorded COMPLETE without its pictures"):
            record(study, trial, ret, 1, artifact_dir=str(tmp_path / "artifacts"))
    else:
        assert record(study, trial, ret, 1, artifact_dir=str(tmp_path / "artifacts")) == TrialState.COMPLETE
    (frozen,) = study.trials
    assert (frozen.state, frozen.value, frozen.user_attrs["status"]) == (TrialState.COMPLETE, 5.0, "completed")
    assert os.strerror(code) in frozen.user_attrs["artifact_error"]
