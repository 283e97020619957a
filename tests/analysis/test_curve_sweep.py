"""sweep=curve: every trial a whole rate-distortion curve (loss=multirate), its hypervolume the objective, and the
analysis's front of all the curves together."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from helpers import CONF, cli, compose_config
from vae_sweep.analysis.curves import curve_table, curves_front
from vae_sweep.checks import check_argv
from vae_sweep.errors import ConfigError
from vae_sweep.registry import METRICS, OBJECTIVES

SMALL = ["debug=tiny", "curve.betas=3", "eval.pictures=false", "hydra.sweeper.n_trials=2"]


def test_curve_hypervolume_is_an_objective_to_maximise():
    metric = METRICS["curve_hypervolume"]
    assert "curve_hypervolume" in OBJECTIVES and metric.objective and metric.direction == "maximize"


def test_sweep_curve_composes_to_a_multirate_sweep_maximising_the_hypervolume():
    cfg = compose_config(["sweep=curve"], return_hydra_config=True)
    assert cfg.loss._target_.endswith(".MultiRateLoss")
    assert list(cfg.objectives) == ["curve_hypervolume"]
    sweeper = cfg.hydra.sweeper
    assert sweeper.direction == "maximize" and sweeper.study_name == "curve" and sweeper.sampler.seed == 0
    assert sweeper.sampler._target_.endswith("TPESampler")
    assert dict(sweeper.params) == {"latent_dim": "choice(2, 4, 8, 16, 32, 64)", "lr": "tag(log, interval(3e-4, 3e-3))"}
    assert "beta" not in sweeper.params  # each trial covers the whole trained range of beta


def test_validation_accepts_sweep_curve():
    check_argv(["--multirun", "sweep=curve", *SMALL], CONF)  # raises ConfigError if it refuses


@pytest.mark.parametrize("loss", ["beta", "elbo", "capacity", "ae"])
def test_validation_refuses_the_hypervolume_without_multirate(loss):
    argv = [
        "--multirun",
        "sweep=elbo",
        f"loss={loss}",
        "objectives=[curve_hypervolume]",
        "hydra.sweeper.direction=maximize",
    ]
    with pytest.raises(ConfigError, match=r"^objectives=\[curve_hypervolume\]: needs loss=multirate") as e:
        check_argv(argv, CONF)
    assert "\n" not in str(e.value)


def test_validation_refuses_a_direction_per_objective_mismatch():
    with pytest.raises(ConfigError, match=r"objectives=\[curve_hypervolume\]: hydra.sweeper.direction="):
        check_argv(["--multirun", "sweep=curve", "hydra.sweeper.direction=[maximize,minimize]"], CONF)


@pytest.mark.slow
def test_refused_on_the_command_line_in_one_line_before_any_work(tmp_path):
    result = cli(
        ["--multirun", "sweep=pareto", "objectives=[curve_hypervolume]", "hydra.sweeper.direction=maximize"],
        tmp_path,
        timeout=120,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: objectives=[curve_hypervolume]: needs loss=multirate")
    assert list(tmp_path.iterdir()) == []  # no multirun/, no study


def curve_rows(trial: int, latent_dim: int, points: list[tuple[float, float]]) -> pd.DataFrame:
    """A trial's curve as curve_table gives it: (distortion, rate) in nats per example along an ascending beta."""
    d, r = zip(*points)
    return pd.DataFrame(
        {
            "trial": trial,
            "latent_dim": latent_dim,
            "beta": np.geomspace(0.01, 10, len(points)),
            "distortion": d,
            "rate": r,
        }
    )


def test_front_of_hand_made_curves():
    ref = (10.0, 10.0)
    a = curve_rows(0, 2, [(2, 8), (4, 4), (8, 1)])  # D falls as R rises along each curve
    b = curve_rows(1, 8, [(1, 9), (3, 3), (9, 2)])  # (3, 3) dominates a's (4, 4); (9, 2) is dominated by a's (8, 1)
    out = curves_front(pd.concat([a, b], ignore_index=True), ref)
    on_front = {(row.distortion, row.rate) for row in out[out["front"]].itertuples()}
    assert on_front == {(1, 9), (2, 8), (3, 3), (8, 1)}
    # staircase of (1,9), (2,8), (3,3), (8,1) up to (10, 10): slabs in D of widths 1, 1, 5, 2 and heights 1, 2, 7, 9
    assert out.attrs["hypervolume"] == pytest.approx(1 * 1 + 1 * 2 + 5 * 7 + 2 * 9)
    brute = [
        not any(q[0] <= p[0] and q[1] <= p[1] and q != p for q in zip(out["distortion"], out["rate"]))
        for p in zip(out["distortion"], out["rate"])
    ]
    assert out["front"].tolist() == brute
    assert math.isnan(curves_front(a, None).attrs["hypervolume"])


def test_curve_table_reads_each_completed_trials_curve_csv(tmp_path):
    runs = {}
    for trial, status in [(0, "completed"), (1, "completed"), (2, "failed")]:
        run = tmp_path / str(trial)
        run.mkdir()
        pd.DataFrame(
            {
                "beta": [0.01, 10.0],
                "distortion_nats": [100.0 + trial, 200.0],
                "rate_nats": [50.0, 1.0 + trial],
                "neg_elbo_nats": [150.0, 201.0],
            }
        ).to_csv(run / "curve.csv", index=False)
        runs[trial] = dict(
            trial=trial, status=status, latent_dim=4 * (trial + 1), run_dir=str(run), curve_reference=[543.4, 543.4]
        )
    table = curve_table(pd.DataFrame(runs.values()).astype({"trial": "Int64"}))
    assert sorted(table["trial"].unique()) == [0, 1]  # the failed trial's curve is left out
    assert table.attrs["reference"] == (543.4, 543.4)
    assert table[table["trial"] == 1]["latent_dim"].tolist() == [8, 8]
    assert table["front"].tolist() == [True, True, False, False]  # trial 1 is worse in both at each beta
    none = curve_table(pd.DataFrame([dict(trial=0, status="completed", run_dir=str(tmp_path / "nowhere"))]))
    assert none.empty and "curve.csv" in none.attrs["why"]


@pytest.mark.slow
def test_two_trial_curve_sweep_returns_the_hypervolume_and_the_analysis_draws_the_curves(tmp_path):
    import optuna

    result = cli(["--multirun", "sweep=curve", *SMALL], tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    storage = f"sqlite:///{tmp_path / 'multirun' / 'curve.db'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    assert summary.study_name.startswith("curve") and study.direction == optuna.study.StudyDirection.MAXIMIZE
    (sweep_dir,) = [p for p in (tmp_path / "multirun").glob("*/*") if p.is_dir()]  # multirun/artifacts/ holds files
    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(trials) == 2
    for t in trials:
        metrics = json.loads((sweep_dir / str(t.number) / "metrics.json").read_text())
        assert t.value == pytest.approx(metrics["curve_hypervolume"], rel=1e-12) and t.value > 0
        assert (sweep_dir / str(t.number) / "curve.csv").is_file()

    out = tmp_path / "analysis"
    analyze = subprocess.run(
        [sys.executable, "-m", "vae_sweep.analyze", str(sweep_dir), "--out", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert analyze.returncode == 0, analyze.stderr
    assert (out / "curves.png").stat().st_size > 10_000
    assert "curves: no figure" not in analyze.stderr


def test_curves_keep_the_axes_of_rate_distortion(tmp_path):
    """Distortion on x and rate on y in every figure: curves.png and a run's curve.png as in rate_distortion.png."""
    from PIL import Image

    from vae_sweep.analysis.plots import plot_curves
    from vae_sweep.curve import save_curve_plot
    from vae_sweep.registry import METRICS

    table = curves_front(pd.concat([curve_rows(0, 2, [(2, 8), (4, 4), (8, 1)])], ignore_index=True), (10.0, 10.0))
    (ax,) = plot_curves(table).axes
    assert (ax.get_xlabel(), ax.get_ylabel()) == (METRICS["distortion"].label, METRICS["rate"].label)
    x, y = ax.get_lines()[0].get_data()
    assert list(x) == [2, 4, 8] and list(y) == [8, 4, 1]  # (D, R) points, ascending β
    rows = [{"beta": b, "distortion_nats": d, "rate_nats": r} for b, d, r in zip((0.1, 1, 10), (2, 4, 8), (8, 4, 1))]
    path = save_curve_plot(rows, tmp_path / "curve.png", (10.0, 10.0))
    with Image.open(path) as im:
        assert 400 <= im.width <= 1000 and 300 <= im.height <= 800
