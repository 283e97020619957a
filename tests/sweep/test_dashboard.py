"""optuna-dashboard opens a real sweep's study: started on 127.0.0.1 against the sweep's storage and artifact folder,
it serves the study, its trials' values and their pictures over its JSON API."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import optuna
import pytest

from helpers import cli
from helpers.services import free_port

pytestmark = pytest.mark.slow
FAST = ["epochs=1", "max_batches=2", "eval.iwae_k=2"]


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def wait_until_up(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    end = time.time() + timeout
    while time.time() < end:
        assert proc.poll() is None, f"optuna-dashboard exited: {proc.communicate()[1][-2000:]}"
        try:
            get(url)
            return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.3)
    raise AssertionError(f"optuna-dashboard did not answer {url} within {timeout} s")


def test_the_dashboard_serves_a_sweeps_study_and_its_pictures(tmp_path):
    pytest.importorskip("optuna_dashboard", reason="pip install 'vae_sweep[dashboard]'")
    res = cli(["--multirun", *FAST, "hydra.sweeper.n_trials=2"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    url = "sqlite:///multirun/pareto.db"
    (study,) = [
        optuna.load_study(study_name=s.study_name, storage=f"sqlite:///{tmp_path}/multirun/pareto.db")
        for s in optuna.get_all_study_summaries(f"sqlite:///{tmp_path}/multirun/pareto.db")
    ]
    port = free_port()
    command = Path(sys.executable).with_name("optuna-dashboard")  # the extra's console script, beside this python
    proc = subprocess.Popen(
        [
            str(command),
            url,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--artifact-dir",
            "multirun/artifacts",
            "--quiet",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        api = f"http://127.0.0.1:{port}/api"
        wait_until_up(f"{api}/studies", proc)
        (summary,) = get(f"{api}/studies")["study_summaries"]
        assert summary["study_name"] == study.study_name
        detail = get(f"{api}/studies/{summary['study_id']}")
        served = {t["number"]: t for t in detail["trials"]}
        assert sorted(served) == [0, 1]
        for trial in study.trials:
            assert served[trial.number]["values"] == trial.values
            assert served[trial.number]["state"] == "Complete"
            pictures = {a["filename"] for a in served[trial.number]["artifacts"]}
            assert {"reconstructions.png", "samples.png"} <= pictures, pictures
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
