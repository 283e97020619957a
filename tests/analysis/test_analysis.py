"""Sweep analysis on a real tiny sweep: rows and statuses, Pareto flags, the study as a source, damaged runs,
tables, figures, the notebook, and one-line errors for wrong sources."""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import nbclient
import nbformat
import numpy as np
import optuna
import pytest
from PIL import Image

from vae_sweep.analysis import frame as analysis
from vae_sweep.analysis import plots as analysis_plots
from vae_sweep.analysis.importance import param_importance
from vae_sweep.errors import ConfigError
from vae_sweep.pareto import MINIMIZE, pareto_mask
from vae_sweep.sweep.summary import write_summary

REPO = Path(__file__).resolve().parents[2]
N_TRIALS = 8
# The 8x8 digits, one epoch of 3 batches. The study is made in two runs of the same sweep, so its statuses do
# not depend on where a sampler happens to draw: 6 trials in the default search space (they complete), then a
# top-up to 8 with SGD at lr of 1e5 to 1e6 (they diverge).
SWEEP_ARGS = [
    "epochs=1",
    "max_batches=3",
    "eval.iwae_k=5",
    "dataset=digits",
    "optimizer=sgd",
    "hydra.sweeper.max_failure_rate=1.0",
    "hydra.sweeper.study_name=pareto",
]
# One experiment, two commands: the second tops the study up, searching lr where SGD diverges.
RUNS = [["hydra.sweeper.n_trials=6"], [f"hydra.sweeper.n_trials={N_TRIALS}", "lr=tag(log, interval(1e5, 1e6))"]]
PARETO_FIGURES = set(analysis_plots.FIGURES) - {"curves", "disentanglement_vs_beta", "families"}  # other sweeps' kinds


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> SimpleNamespace:
    """A real Optuna sweep (pareto study) made once for the module: its dir, storage URL and the study."""
    root = tmp_path_factory.mktemp("sweep")
    url = f"sqlite:///{root / 'study.db'}"
    for extra in RUNS:
        cmd = [
            sys.executable,
            "-m",
            "vae_sweep",
            "--multirun",
            f"hydra.sweep.dir={root / 'S'}",
            f"hydra.sweeper.storage={url}",
            *SWEEP_ARGS,
            *extra,
        ]
        proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stderr[-3000:]
    study = optuna.load_study(study_name="pareto", storage=url)
    return SimpleNamespace(dir=root / "S", url=url, trials={t.number: t for t in study.trials})


@pytest.fixture(scope="module")
def df(sweep):
    return analysis.load_sweep(sweep.dir)


def analyze_script():
    """scripts/analyze.py as a module, to call its main() in this process."""
    spec = importlib.util.spec_from_file_location("analyze", REPO / "scripts" / "analyze.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def brute_force_pareto(d: np.ndarray, r: np.ndarray) -> np.ndarray:
    """O(n^2): a point is on the front unless another is no worse in both and better in one."""
    front = np.zeros(len(d), dtype=bool)
    for i in range(len(d)):
        if np.isfinite(d[i]) and np.isfinite(r[i]):
            dominated = (d <= d[i]) & (r <= r[i]) & ((d < d[i]) | (r < r[i]))
            front[i] = not dominated.any()
    return front


@pytest.mark.slow
def test_rows_and_statuses_match_the_study(sweep, df):
    assert len(df) == N_TRIALS
    assert list(df["trial"]) == list(range(N_TRIALS))
    for _, row in df.iterrows():
        trial = sweep.trials[row["trial"]]
        assert row["status"] == ("completed" if trial.state.name == "COMPLETE" else "diverged"), row["trial"]
        assert row["lr"] == pytest.approx(trial.params["lr"]) and row["latent_dim"] == trial.params["latent_dim"]
        if row["status"] == "completed":
            assert [row["distortion"], row["rate"]] == pytest.approx(trial.values)
        else:
            assert not np.isfinite([row["distortion"], row["rate"]]).all()
    counts = analysis.status_counts(df)
    assert counts["completed"] == 6 and counts["diverged"] == 2, counts  # the sweep exercises both
    assert sum(counts.values()) == N_TRIALS


@pytest.mark.slow
def test_pareto_flags_match_brute_force(df):
    done = df["status"].eq("completed")
    expected = brute_force_pareto(df["distortion"].where(done).to_numpy(), df["rate"].where(done).to_numpy())
    assert (df["pareto"].to_numpy() == expected).all()
    assert expected.any()


@pytest.mark.parametrize("seed", range(5))
def test_pareto_mask_with_ties_and_nans(seed):
    rng = np.random.default_rng(seed)
    d, r = rng.integers(0, 6, 200).astype(float), rng.integers(0, 6, 200).astype(float)  # many exact ties
    d[rng.random(200) < 0.1] = np.nan
    assert (pareto_mask(np.column_stack([d, r]), MINIMIZE) == brute_force_pareto(d, r)).all()


@pytest.mark.slow
def test_study_url_gives_the_same_trials(sweep, df):
    from_study = analysis.load_sweep(sweep.url)
    same = ["trial", "status", "pareto", "beta", "latent_dim", "lr", "distortion", "rate", "run_dir"]
    assert from_study[same].equals(df[same])
    has_kl = df["kl_per_dim"].map(lambda v: isinstance(v, list))
    assert has_kl.any() and from_study["kl_per_dim"][has_kl].equals(df["kl_per_dim"][has_kl])  # from run dirs
    assert analysis.load_sweep(sweep.url, study="pareto")[same].equals(df[same])
    with pytest.raises(ConfigError, match="study=nope: not in .* which holds: pareto"):
        analysis.load_sweep(sweep.url, study="nope")


@pytest.mark.slow
def test_damaged_sweep_is_counted_not_crashed_on(sweep, df, tmp_path, caplog, capsys):
    copy = tmp_path / "S"
    shutil.copytree(sweep.dir, copy, ignore=shutil.ignore_patterns("model.pt"))
    completed = [int(t) for t in df.loc[df["status"].eq("completed"), "trial"]]
    truncated, deleted, running, nan = completed[:4] if len(completed) >= 4 else pytest.fail("needs 4 completed")
    text = (copy / str(truncated) / "metrics.json").read_text()
    (copy / str(truncated) / "metrics.json").write_text(text[: len(text) // 2])
    (copy / str(deleted) / "metrics.json").unlink()
    for trial, change in ((running, {"status": "running"}), (nan, {"distortion": None})):
        path = copy / str(trial) / "metrics.json"
        path.write_text(json.dumps(json.loads(path.read_text()) | change))
    with caplog.at_level(logging.INFO, logger="vae_sweep.analysis.frame"):
        damaged = analysis.load_sweep(copy)
    before = analysis.status_counts(df)
    expected = before | {
        "completed": before["completed"] - 4,
        "missing": 2,
        "running": 1,
        "diverged": before["diverged"] + 1,
    }
    assert analysis.status_counts(damaged) == expected
    assert damaged.set_index("trial").loc[deleted, "error"] == "no metrics.json"
    assert damaged.set_index("trial").loc[truncated, "beta"] == df.set_index("trial").loc[truncated, "beta"]
    assert analysis.status_line(damaged) in caplog.text

    assert analyze_script().main([str(copy)]) == 0
    stdout = capsys.readouterr().out
    assert analysis.status_line(damaged) in stdout and str(copy / "analysis") in stdout
    written = {p.name for p in (copy / "analysis").iterdir()}
    assert {"trials.csv", "summary.md", "rate_distortion.png", "history.png"} <= written
    assert all(name in stdout for name in written)


@pytest.mark.slow
def test_tables(df, tmp_path):
    paths = analysis.write_tables(df, tmp_path)
    table = analysis.trials_table(df)
    csv = paths["trials"].read_text().splitlines()
    assert len(csv) == N_TRIALS + 1
    assert {"distortion_nats", "rate_nats", "neg_elbo_nats", "mse_per_pixel"} <= set(csv[0].split(","))
    first = df.index[df["status"].eq("completed")][0]
    assert json.loads(table.loc[first, "kl_per_dim_nats"]) == df.loc[first, "kl_per_dim"]
    summary = paths["summary"].read_text()
    n_front, n_done = int(df["pareto"].sum()), int(df["status"].eq("completed").sum())
    assert analysis.status_line(df) in summary
    assert f"## Pareto set: {n_front} of {n_done} completed trials" in summary
    all_trials = summary.split("## All trials")[1].splitlines()
    assert sum("| \\* |" in line for line in all_trials) == n_front
    assert "## Best 5 by distortion" in summary and "distortion_nats" in summary


@pytest.mark.slow
def test_figures_are_written(df, tmp_path):
    paths = analysis_plots.save_figures(df, tmp_path)
    assert set(paths) == PARETO_FIGURES
    for path in paths.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(path) as im:
            assert 400 <= im.width <= 4000 and 300 <= im.height <= 4000, (path.name, im.size)
    importance = param_importance(df)
    assert set(importance.index) == {"beta", "latent_dim", "lr"}
    assert importance.sum().to_numpy() == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="format=gif"):
        analysis_plots.save_figures(df, tmp_path, fmt="gif")


@pytest.mark.slow
def test_no_data_gives_a_message_and_no_file(df, tmp_path, caplog):
    none_completed = df.assign(status="diverged")
    with caplog.at_level(logging.INFO, logger="vae_sweep.analysis.plots"):
        assert analysis_plots.save_figures(none_completed, tmp_path) == {}
    assert list(tmp_path.iterdir()) == []
    assert "rate_distortion: no figure: no completed trial with a finite distortion and rate" in caplog.text
    assert len(caplog.records) == len(analysis_plots.FIGURES)  # one line for each figure
    # A sweep that is not of a figure's kind (no loss=multirate, no dataset with factors) says so without a warning.
    quiet = {r.getMessage().split(":")[0] for r in caplog.records if r.levelno == logging.INFO}
    assert quiet == {"curves", "disentanglement_vs_beta", "families"}


def test_a_default_sweeps_analysis_warns_of_nothing(df, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="vae_sweep.analysis.plots"):
        assert len(analysis_plots.save_figures(df, tmp_path)) == len(analysis_plots.FIGURES) - 3
    assert caplog.records == []


@pytest.mark.slow
def test_the_sweeper_writes_the_analysis_summary(sweep, df, tmp_path):
    """One summary.md format: the sweeper's (from its study, at the end of the sweep) is the analysis's, and the
    same trials read from the sweep dir give the same tables."""
    study = optuna.load_study(study_name="pareto", storage=sweep.url)
    by_sweeper = (sweep.dir / "summary.md").read_text()
    assert by_sweeper == analysis.summary_markdown(analysis.study_frame(study))
    assert by_sweeper.startswith("# Sweep analysis\n\n`study=pareto`: " + analysis.status_line(df))
    assert by_sweeper.splitlines()[3:] == analysis.summary_markdown(df).splitlines()[3:]  # all but the source
    write_summary(study, tmp_path / "again", ["minimize", "minimize"])
    assert (tmp_path / "again" / "summary.md").read_text() == by_sweeper
    assert (tmp_path / "again" / "optimization_results.yaml").is_file()


@pytest.mark.slow
def test_notebook_runs_headless(sweep):
    nb = nbformat.read(REPO / "notebooks" / "analysis.ipynb", as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and nb.cells.index(params[0]) == next(
        i for i, c in enumerate(nb.cells) if c.cell_type == "code"
    )
    params[0].source = f"sweep = {str(sweep.dir)!r}\nstudy = None"
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(REPO / "notebooks")}}
    )
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(o.get("text", "") for o in outputs)
    assert f"{N_TRIALS} trials: " in text
    assert sum("image/png" in o.get("data", {}) for o in outputs) == len(PARETO_FIGURES)


@pytest.mark.slow
def test_wrong_source_is_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match=r"nope: no such sweep dir$"):
        analysis.load_sweep(tmp_path / "nope")
    with pytest.raises(ConfigError, match="no trial dirs in it"):
        analysis.load_sweep(tmp_path)
    with pytest.raises(ConfigError, match="no such database file"):
        analysis.load_sweep(f"sqlite:///{tmp_path / 'none.db'}")
    assert not (tmp_path / "none.db").exists()
    with pytest.raises(ConfigError, match="no sweep given"):
        analysis.load_sweep([])
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "analyze.py"), str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"error: {tmp_path / 'nope'}: no such sweep dir"]
    assert proc.stdout == ""


def test_a_runs_parameters_leave_out_neutral_settings_and_the_trial_handle(tmp_path):
    """overrides.yaml of a pruned, resumed trial: its searched knobs are parameters; `threads`, `resume` (how it
    ran) and `+trial.*` (the address of its study trial) are not, nor anything under `hydra.`."""
    from vae_sweep.analysis.sources import hydra_params

    hydra = tmp_path / ".hydra"
    hydra.mkdir()
    (hydra / "config.yaml").write_text("beta: 0.5\nlatent_dim: 8\nthreads: 1\n")
    (hydra / "hydra.yaml").write_text("hydra:\n  runtime:\n    choices:\n      model: conv\n")
    (hydra / "overrides.yaml").write_text(
        "- beta=0.5\n- latent_dim=8\n- +extra_knob=3\n- threads=1\n- resume=multirun/x/0\n- progress=false\n"
        "- hydra.sweep.subdir=1\n- +trial.storage=sqlite:////tmp/s.db\n- +trial.study=elbo\n- +trial.number=1\n"
    )
    assert hydra_params(hydra) == {"beta": 0.5, "latent_dim": 8, "model": "conv", "extra_knob": 3}
