"""Loggers (vae_sweep/loggers.py): what a sweep's trials put into TensorBoard and a real MLflow server, read back
through each tool's own reader and compared with history.csv and metrics.json."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from helpers import cli, compose_config
from helpers.services import free_port
from vae_sweep.checks import check_config
from vae_sweep.errors import ConfigError
from vae_sweep.loggers import final_names, metric_name, require
from vae_sweep.sweep.study import experiment

SERVER_WAIT = 90  # seconds for `mlflow server` to answer /health (it creates its tables first)


# --- fast: names, refusals, laziness -------------------------------------------------------------------------------


def test_metric_names_carry_units():
    assert metric_name("val_distortion") == "val/distortion_nats"
    assert metric_name("val_mse") == "val/mse_per_pixel"
    assert metric_name("train_loss") == "train/loss_nats"
    assert metric_name("train_kl_weight") == "train/kl_weight"
    assert metric_name("lr") == "lr"
    assert metric_name("seconds") == "train/seconds"
    final = final_names({"distortion": 90.5, "active_units": 3, "kl_per_dim": [1.5, 0.25], "status": "completed"})
    assert final == {
        "final/distortion_nats": 90.5,
        "final/active_units": 3.0,
        "final/kl_dim0_nats": 1.5,
        "final/kl_dim1_nats": 0.25,
    }


def test_a_missing_library_is_refused_in_one_line_naming_the_extra(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ConfigError, match=r"logger=mlflow needs mlflow.*pip install 'vae_sweep\[mlflow\]'"):
        require("mlflow")
    with pytest.raises(ConfigError, match=r"vae_sweep\[mlflow\]"):
        check_config(compose_config(["logger=[tensorboard,mlflow]"]))
    check_config(compose_config(["logger=tensorboard"]))  # the other is not needed


def test_logger_settings_are_checked_and_define_no_experiment():
    with pytest.raises(ConfigError, match=r"logger.tensorboard.save_dir=3: must be a string"):
        check_config(compose_config(["logger=tensorboard", "logger.tensorboard.save_dir=3"]))
    cfg = compose_config(["logger=[tensorboard,mlflow]", "sweep=pareto"], return_hydra_config=True)
    settings, defining = experiment(cfg, ["logger=[tensorboard,mlflow]", "logger.mlflow.experiment=x"])
    assert defining == {}  # the same study with or without loggers
    assert "logger" not in settings


@pytest.mark.parametrize("option", ["csv", "tensorboard", "mlflow"])
def test_every_logger_option_passes_its_schema(option):
    import dataclasses

    from helpers import CONF
    from vae_sweep.checks import group_options
    from vae_sweep.config import SCHEMAS

    assert group_options(CONF, "logger") == ["csv", "mlflow", "tensorboard"]
    cfg = compose_config([f"logger={option}"])
    check_config(cfg)
    (node,) = cfg.logger.values()
    assert set(node) - {"_target_"} == {f.name for f in dataclasses.fields(SCHEMAS[node._target_])}


def test_no_logger_library_is_imported_unless_chosen():
    code = (
        "import sys, vae_sweep.job, vae_sweep.loggers, vae_sweep.__main__;"
        "print(sorted(m for m in ('mlflow', 'tensorboard') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


# --- slow: a two-trial sweep against a real MLflow server, and TensorBoard's event files -------------------------


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on a free port of 127.0.0.1, SQLite backend in tmp; its URL. Stopped afterwards."""
    pytest.importorskip("mlflow")
    port, home = free_port(), tmp_path / "mlflow"
    home.mkdir()
    command = [
        *(sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)),
        *("--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}", "--artifacts-destination", str(home / "artifacts")),
        *("--workers", "1"),
    ]
    log = open(home / "server.log", "w")
    server = subprocess.Popen(command, cwd=home, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_WAIT
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"mlflow server did not answer in {SERVER_WAIT} s:\n{(home / 'server.log').read_text()[-2000:]}"
                )
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its uvicorn worker, started in their own session
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
        log.close()


def history(run_dir: Path) -> list[dict[str, float]]:
    with open(run_dir / "history.csv") as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


@pytest.mark.slow
def test_sweep_logs_each_trial_to_tensorboard_and_a_real_mlflow_server(tmp_path, mlflow_server, monkeypatch):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)  # MLflow's own variable, as MLflow users set it
    args = ["--multirun", "debug=tiny", "epochs=2", "hydra.sweeper.n_trials=2", "logger=[tensorboard,mlflow]"]
    result = cli([*args, "hydra.sweep.dir=sweep"], cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient()
    for number in (0, 1):
        run_dir = tmp_path / "sweep" / str(number)
        rows, metrics = history(run_dir), json.loads((run_dir / "metrics.json").read_text())
        assert len(rows) == 2
        study = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())["trial"]["study"]
        # MLflow: the study is the experiment, the trial number the run's name
        found = client.search_runs(
            [client.get_experiment_by_name(study).experiment_id], filter_string=f"attributes.run_name = '{number}'"
        )
        assert len(found) == 1
        run = found[0]
        assert run.info.status == "FINISHED" and run.data.tags["trial"] == str(number)
        for column in rows[0]:
            if column in ("epoch", "step"):
                continue
            logged = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, metric_name(column)))
            assert logged == [(int(r["epoch"]), pytest.approx(r[column], rel=1e-12)) for r in rows], column
        assert run.data.metrics["final/distortion_nats"] == pytest.approx(metrics["distortion"], rel=1e-12)
        assert run.data.metrics["final/iwae_nll_nats"] == pytest.approx(metrics["iwae_nll"], rel=1e-12)
        for key in ("beta", "latent_dim", "lr", "epochs", "model", "loss"):
            assert run.data.params[key] == str(metrics[key]), key
        pictures = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "pictures")}
        assert {"reconstructions.png", "samples.png", "traversals.png"} <= pictures
        copy = client.download_artifacts(run.info.run_id, "pictures/reconstructions.png", str(tmp_path / f"dl{number}"))
        assert Path(copy).read_bytes() == (run_dir / "reconstructions.png").read_bytes()
        # TensorBoard: read back with its own reader
        events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
        events.Reload()
        for column in rows[0]:
            if column in ("epoch", "step"):
                continue
            scalars = [(s.step, s.value) for s in events.Scalars(metric_name(column))]
            assert scalars == [(int(r["epoch"]), pytest.approx(r[column], rel=1e-6)) for r in rows], column
        (final,) = events.Scalars("final/distortion_nats")
        assert final.value == pytest.approx(metrics["distortion"], rel=1e-6)
        assert "pictures/reconstructions" in events.Tags()["images"]
        start = next(
            HParamsPluginData.FromString(c)
            for c in events.PluginTagToContent("hparams").values()
            if HParamsPluginData.FromString(c).HasField("session_start_info")
        )
        hparams = start.session_start_info.hparams
        assert hparams["beta"].number_value == pytest.approx(metrics["beta"])
        assert hparams["latent_dim"].number_value == metrics["latent_dim"]
