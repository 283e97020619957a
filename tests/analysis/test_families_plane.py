"""The model families on one plane: each family's own front and hypervolume against one shared reference."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from helpers import cli
from vae_sweep.analysis.frame import family_table, load_sweep, summary_markdown
from vae_sweep.analysis.plots import FIGURES, plot_families, save_figures


def sweep(folder: Path, rows: list[tuple]) -> pd.DataFrame:
    """A sweep dir of run dirs whose metrics.json hold (prior, posterior, distortion, rate, status), read back by the
    analysis as any sweep is."""
    for i, (prior, posterior, d, r, status) in enumerate(rows):
        run = folder / str(i)
        run.mkdir(parents=True)
        groups = {"prior": prior, "posterior": posterior} if prior else {}  # none: a run from before the groups
        metrics = {"status": status, "distortion": d, "rate": r, "neg_elbo": d + r, "beta": 1.0, "latent_dim": 2}
        (run / "metrics.json").write_text(json.dumps(metrics | groups))
    return load_sweep(folder)


ROWS = (
    (None, None, 10.0, 5.0, "completed"),  # a run from before the prior and posterior groups: the standard VAE
    ("standard", "gaussian", 20.0, 1.0, "completed"),
    ("standard", "gaussian", 40.0, 8.0, "completed"),  # dominated; it sets the reference (40, 8)
    ("vamp", "gaussian", 9.0, 4.0, "completed"),
    ("vamp", "gaussian", 15.0, 2.0, "completed"),
    ("vamp", "gaussian", 1.0, 0.1, "diverged"),  # not completed: no part of any front
)


@pytest.fixture
def plane(tmp_path) -> pd.DataFrame:
    return sweep(tmp_path / "plane", ROWS)


def test_each_family_has_its_own_front_and_hypervolume_against_one_reference(plane):
    table = family_table(plane)
    assert table.attrs["reference"] == (40.0, 8.0)
    # vamp: slabs (15 - 9) x (8 - 4) + (40 - 15) x (8 - 2) = 24 + 150; standard: 10 x 3 + 20 x 7 = 30 + 140
    assert table.to_dict("list") == {
        "family": ["vamp+gaussian", "standard+gaussian"],
        "trials": [2, 3],
        "front": [2, 2],
        "hypervolume": [pytest.approx(174.0), pytest.approx(170.0)],
    }


def test_one_family_draws_no_families_figure_and_no_table(tmp_path):
    one = sweep(tmp_path / "one", [row for row in ROWS if row[0] != "vamp"])
    assert family_table(one).empty and plot_families(one) is None
    assert "Model families" not in summary_markdown(one)


def test_the_families_figure_and_summary_name_every_family(plane, tmp_path):
    assert "families" in FIGURES
    fig = plot_families(plane)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0].startswith("vamp+gaussian: 2 on its front, 174 nats²") and labels[1].startswith(
        "standard+gaussian"
    )
    assert ax.get_xlabel().startswith("distortion") and ax.get_ylabel().startswith("rate")
    path = save_figures(plane, tmp_path / "out")["families"]
    assert path.stat().st_size > 10_000
    md = summary_markdown(plane)
    assert "| vamp+gaussian | 2 | 2 | 174 |" in md and "| standard+gaussian | 3 | 2 | 170 |" in md


@pytest.mark.slow
def test_the_families_sweep_trains_every_family_and_the_analysis_draws_their_fronts(tmp_path):
    """sweep=families at two βs: each of the four prior x posterior families trains two trials, and the analysis
    of that sweep draws families.png and tables each family's hypervolume."""
    sweep_dir = tmp_path / "families"
    args = ["--multirun", "sweep=families", "debug=tiny", "eval.pictures=false", "beta=0.3,3"]
    out = cli([*args, f"hydra.sweep.dir={sweep_dir}"], cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = [json.loads(p.read_text()) for p in sweep_dir.glob("*/metrics.json")]
    assert len(runs) == 8 and all(r["status"] == "completed" for r in runs)
    pairs = sorted((r["prior"], r["posterior"]) for r in runs)
    assert pairs == sorted([(p, q) for p in ("standard", "vamp") for q in ("gaussian", "iaf")] * 2)
    df = load_sweep(sweep_dir)
    assert family_table(df)["trials"].tolist() == [2, 2, 2, 2]
    assert save_figures(df, tmp_path / "out")["families"].stat().st_size > 10_000


@pytest.mark.slow
def test_two_stochastic_layers_train_in_a_two_trial_sweep(tmp_path):
    storage = f"sqlite:///{tmp_path}/study.db"
    args = ["--multirun", "model=mlp2", "debug=tiny", "eval.pictures=false", "hydra.sweeper.n_trials=2"]
    out = cli([*args, f"hydra.sweeper.storage={storage}", f"hydra.sweep.dir={tmp_path}/s"], cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    (summary,) = optuna.get_all_study_summaries(storage)
    trials = optuna.load_study(study_name=summary.study_name, storage=storage).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    runs = [json.loads(p.read_text()) for p in (tmp_path / "s").glob("*/metrics.json")]
    assert [(r["prior"], r["posterior"], r["status"]) for r in runs] == [("two_layer", "two_layer", "completed")] * 2
