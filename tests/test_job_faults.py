"""Faults in a single job: Ctrl-C and a full disk each end it in one line, with a true metrics.json, the files
written earlier intact, and no temp file left."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch

from helpers.faults import (
    CHECKPOINT_MB,
    JOB,
    history_rows,
    last_line,
    metrics,
    signal_when,
    small_disk,
    start,
    temp_files,
)
from vae_sweep.run_files import atomic_write, write_metrics


@pytest.mark.parametrize("error", [KeyboardInterrupt(), OSError(28, "No space left on device")], ids=["ctrl-c", "full"])
def test_a_failed_atomic_write_leaves_the_old_file_and_no_temp_file(tmp_path, error):
    write_metrics(tmp_path, {"status": "running"})

    def fail(tmp: Path) -> None:
        tmp.write_text('{"status": "half')
        raise error

    with pytest.raises(type(error)) as e:
        atomic_write(tmp_path / "metrics.json", fail)
    assert metrics(tmp_path) == {"status": "running"} and temp_files(tmp_path) == []
    if isinstance(e.value, OSError):
        assert e.value.filename == str(tmp_path / "metrics.json")  # the line can name the file


@pytest.mark.slow
def test_ctrl_c_saves_the_job_in_one_line_and_resume_finishes_it(tmp_path):
    run_dir = tmp_path / "run"
    proc = start([*JOB, f"hydra.run.dir={run_dir}"], tmp_path)
    _, err = signal_when(proc, lambda: history_rows(run_dir) >= 1, signal.SIGINT)
    assert proc.returncode == 1 and "Traceback" not in err, err
    assert last_line(err) == f"interrupted (SIGINT): model.pt saved; continue with resume={run_dir}"
    m = metrics(run_dir)
    assert m["status"] == "interrupted" and m["signal"] == "SIGINT" and 1 <= m["epochs"] < 4
    assert torch.load(run_dir / "model.pt", weights_only=True)["step"] == m["steps"]
    assert temp_files(tmp_path) == []

    resumed = start([*JOB, f"resume={run_dir}", f"hydra.run.dir={tmp_path / 'resumed'}"], tmp_path)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert metrics(tmp_path / "resumed")["status"] == "completed" and history_rows(tmp_path / "resumed") == 4


@pytest.mark.slow
def test_a_full_disk_ends_the_job_in_one_line_with_metrics_json_failed(tmp_path):
    """Room for one model.pt and not for the second epoch's temporary copy: the write fails at epoch 2."""
    with small_disk(tmp_path / "disk", int(1.5 * CHECKPOINT_MB)) as disk:
        run_dir = disk / "run"
        proc = start([*JOB, f"hydra.run.dir={run_dir}"], tmp_path)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 1 and "Traceback" not in err, err
        line = last_line(err)
        assert line.startswith(f"error: No space left on device ({run_dir}/model.pt): the run stopped;"), line
        assert line.endswith(f"metrics.json says failed; model.pt holds 1 epoch(s): free space and resume={run_dir}")
        m = metrics(run_dir)
        assert m["status"] == "failed" and "No space left on device" in m["error"]
        assert torch.load(run_dir / "model.pt", weights_only=True)["epoch"] == 1  # epoch 1's, intact
        assert history_rows(run_dir) >= 1 and temp_files(run_dir) == []
