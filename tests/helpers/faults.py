"""Injected faults for the fault tests: a small disk (a tmpfs of our own), a process signalled once it trains, and
what a fault may never leave behind (temp files, a `running` metrics.json)."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# A job of a few seconds whose model.pt is about 7.9 MB (debug=tiny's MLP with its Adam state).
JOB = ["debug=tiny", "epochs=4", "max_batches=20", "eval.pictures=false", "threads=1", "progress=false"]
CHECKPOINT_MB = 8


@contextlib.contextmanager
def small_disk(path: Path, size_mb: int) -> Iterator[Path]:
    """A tmpfs of `size_mb` MiB mounted at `path` while the block runs (needs root, as CI has); unmounted after."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount_read_only(path: Path) -> None:
    """Turn the tmpfs at `path` read-only, as a store that goes bad mid-sweep."""
    subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)


def temp_files(root: Path) -> list[Path]:
    """Files an atomic write leaves behind when it fails to clean up (`.name.tmpNNNN`)."""
    return [p for p in root.rglob("*") if ".tmp" in p.name]


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def history_rows(run_dir: Path) -> int:
    try:
        return sum(1 for _ in csv.DictReader(open(run_dir / "history.csv")))
    except (OSError, csv.Error):
        return 0


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    """`python -m vae_sweep ARGS` in the background, its output captured."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    env.pop("VAE_SWEEP_SWEEPER_PID", None)
    cmd = [sys.executable, "-m", "vae_sweep", *args]
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(proc: subprocess.Popen, ready: Callable[[], bool], seconds: float = 300) -> None:
    """Poll `ready` every 50 ms for at most `seconds`; fail if the process ends first."""
    end = time.monotonic() + seconds
    while not ready():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the process ended (rc {proc.returncode}) before it was ready:\n{out[-2000:]}\n{err[-2000:]}")
        assert time.monotonic() < end, "timed out waiting for the process to get ready"
        time.sleep(0.05)


def signal_when(proc: subprocess.Popen, ready: Callable[[], bool], sig: signal.Signals) -> tuple[str, str]:
    """Send `sig` once `ready()`, then return (stdout, stderr) once the process exits (at most 120 s)."""
    wait_for(proc, ready)
    proc.send_signal(sig)
    return proc.communicate(timeout=120)


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].split("\r")[-1].strip() if lines else ""
