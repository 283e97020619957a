"""End-to-end jobs through the real command line: outputs, units, resume, divergence and bad input."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from helpers import cli, compose_config
from vae_sweep.errors import ConfigError
from vae_sweep.job import run

PICTURES = {"reconstructions.png", "samples.png", "traversals.png", "latent_scatter.png"}


def read_metrics(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("args", [[], ["model=conv", "loss=beta", "beta=0.1"]], ids=["default", "conv-beta"])
def test_job_writes_every_output(tmp_path, args):
    out = cli([*args, "debug=tiny", f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    run_dir = tmp_path / "run"
    assert {p.name for p in run_dir.iterdir()} >= {".hydra", "metrics.json", "history.csv", "model.pt"} | PICTURES
    m = read_metrics(run_dir)
    assert m["status"] == "completed" and m["epochs"] == 1 and m["steps"] == 3
    assert m["neg_elbo"] == pytest.approx(m["distortion"] + m["rate"])
    assert m["rate"] > 0 and 0 < m["mse"] < 1 and 0 <= m["active_units"] <= m["latent_dim"]
    assert len(m["kl_per_dim"]) == m["latent_dim"] == 20 and sum(m["kl_per_dim"]) == pytest.approx(m["rate"], rel=1e-4)
    assert m["iwae_k"] == 4 and m["iwae_nll"] < m["neg_elbo"] * 1.05
    assert m["model"] == (args[0].split("=")[1] if args else "mlp") and m["params"] > 0
    assert "nats per example" in m["units"]["distortion"] and "per pixel" in m["units"]["mse"]
    rows = list(csv.DictReader(open(run_dir / "history.csv")))
    assert len(rows) == 1 and float(rows[0]["val_neg_elbo"]) > 0
    ckpt = torch.load(run_dir / "model.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["config"]["latent_dim"] == 20 and "state" in ckpt["optimizer"]
    assert Image.open(run_dir / "reconstructions.png").size[0] > 28 * 8


def test_untrained_bernoulli_distortion_is_784_ln2_nats(tmp_path):
    """A model that has barely moved predicts p = 1/2 per pixel: D = 784 ln 2 = 543.4 nats per image, R ~ 0."""
    cfg = compose_config(["debug=tiny", "lr=1e-9", "max_batches=1", "eval.pictures=false"])
    run(cfg, tmp_path)
    m = read_metrics(tmp_path)
    assert m["distortion"] == pytest.approx(784 * math.log(2), rel=0.03)
    assert m["rate"] < 1.0 and m["mse"] < 0.25


def test_latent_dim_2_draws_the_manifold(tmp_path):
    run(compose_config(["debug=tiny", "latent_dim=2"]), tmp_path)
    assert (tmp_path / "manifold.png").exists()


def test_job_returns_the_objectives_it_is_asked_for(tmp_path):
    cfg = compose_config(["debug=tiny", "eval.pictures=false", "objectives=[distortion,rate]"])
    d, r = run(cfg, tmp_path)
    m = read_metrics(tmp_path)
    assert (d, r) == (m["distortion"], m["rate"])
    cfg = compose_config(["debug=tiny", "eval.pictures=false", "objectives=[iwae_nll]"])
    assert run(cfg, tmp_path) == read_metrics(tmp_path)["iwae_nll"]


def test_autoencoder_has_no_rate(tmp_path):
    run(compose_config(["debug=tiny", "loss=ae", "eval.pictures=false"]), tmp_path)
    m = read_metrics(tmp_path)
    assert m["status"] == "completed" and m["distortion"] > 0
    assert "rate" not in m and "iwae_nll" not in m


def test_divergence_is_recorded(tmp_path):
    cfg = compose_config(["epochs=3", "optimizer=sgd", "lr=1e6", "eval.pictures=false", "objectives=[distortion,rate]"])
    d, r = run(cfg, tmp_path)
    m = read_metrics(tmp_path)
    assert m["status"] == "diverged" and math.isnan(d) and math.isnan(r)
    assert "distortion" not in m and m["epochs"] < 3


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["beta", "multirate"])  # multirate: the per-example betas come from the saved RNG
def test_resume_reaches_the_same_state_as_an_uninterrupted_run(tmp_path, loss):
    common = ["max_batches=5", "eval.iwae_k=2", "eval.pictures=false", "threads=1", f"loss={loss}"]
    straight, first, second = tmp_path / "straight", tmp_path / "first", tmp_path / "second"
    for args, out_dir in ((["epochs=3"], straight), (["epochs=1"], first), (["epochs=3", f"resume={first}"], second)):
        res = cli([*common, *args, f"hydra.run.dir={out_dir}"], cwd=tmp_path)
        assert res.returncode == 0, res.stderr
    a = torch.load(straight / "model.pt", weights_only=True)
    b = torch.load(second / "model.pt", weights_only=True)
    assert b["epoch"] == a["epoch"] == 3 and b["step"] == a["step"] == 15
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    keys = ("train_loss", "val_neg_elbo")
    assert [[r[k] for k in keys] for r in a["history"]] == [[r[k] for k in keys] for r in b["history"]]
    assert len(list(csv.DictReader(open(second / "history.csv")))) == 3
    assert torch.load(first / "model.pt", weights_only=True)["epoch"] == 1  # the old run dir is untouched


class Payload:
    """Unpickling this would run a shell command: the classic malicious checkpoint."""

    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_checkpoint_that_could_run_code_is_refused(tmp_path, monkeypatch):
    """weights_only=True: a pickle that would call a function is refused, and nothing runs."""
    monkeypatch.chdir(tmp_path)
    torch.save({"config": {}, "payload": Payload()}, tmp_path / "model.pt")
    cfg = compose_config(["debug=tiny", f"resume={tmp_path}"])
    with pytest.raises(ConfigError, match="cannot read .* as a vae_sweep checkpoint"):
        run(cfg, tmp_path / "new")
    assert not (tmp_path / "pwned").exists()


def test_a_file_that_is_not_our_checkpoint_is_refused(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "model.pt")
    with pytest.raises(ConfigError, match="is not a vae_sweep checkpoint"):
        run(compose_config(["debug=tiny", f"resume={tmp_path}/model.pt"]), tmp_path / "new")


@pytest.mark.slow
def test_unwritable_output_dir(tmp_path):
    (tmp_path / "a_file").write_text("")
    res = cli([f"hydra.run.dir={tmp_path}/a_file/run"], cwd=tmp_path)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert (
        res.stderr.strip()
        == f"error: hydra.run.dir={tmp_path}/a_file/run: cannot write there (Not a directory); give a folder you can write to"
    )


@pytest.mark.slow
def test_resume_refuses_a_different_model(tmp_path):
    assert cli(["debug=tiny", "eval.pictures=false", f"hydra.run.dir={tmp_path}/a"], cwd=tmp_path).returncode == 0
    res = cli(
        ["debug=tiny", "epochs=2", "latent_dim=5", f"resume={tmp_path}/a", f"hydra.run.dir={tmp_path}/b"], cwd=tmp_path
    )
    assert res.returncode != 0
    assert res.stderr.strip().splitlines()[-1].startswith("error: resume=") and "latent_dim=20" in res.stderr


# Written by `python -m vae_sweep dataset=digits model.hidden=[16] latent_dim=2 epochs=1 eval.iwae_k=0
# eval.pictures=false` at commit 8e37331, when the package was 40 flat modules: a user's checkpoint from before
# vae_sweep/{sweep,analysis,disentangle}/ existed. Its config names `_target_`s and keeps them importable.
OLD_LAYOUT = ["dataset=digits", "model.hidden=[16]", "latent_dim=2", "eval.iwae_k=0", "eval.pictures=false"]


def test_a_checkpoint_from_before_the_package_layout_moved_resumes(tmp_path):
    data = Path(__file__).parent / "fixtures"
    old = tmp_path / "old"
    old.mkdir()
    shutil.copy(data / "model_before_layout_move.pt", old / "model.pt")
    before = (old / "model.pt").read_bytes()
    (tmp_path / "new").mkdir()  # Hydra makes the run dir; the Compose API leaves it to the caller
    run(compose_config([*OLD_LAYOUT, "epochs=2", f"resume={old}", "progress=false"]), tmp_path / "new")
    m = read_metrics(tmp_path / "new")
    assert m["status"] == "completed" and m["epochs"] == 2 and m["resumed_from"] == str(old)
    rows = list(csv.DictReader(open(tmp_path / "new" / "history.csv")))
    old_rows = list(csv.DictReader(open(data / "model_before_layout_move.history.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert rows[0]["val_neg_elbo"] == old_rows[0]["val_neg_elbo"]  # epoch 1 is the old run's, carried over
    assert int(rows[1]["step"]) == 2 * int(old_rows[0]["step"])  # and epoch 2 was trained from it
    assert (old / "model.pt").read_bytes() == before  # the old checkpoint is read, never written
