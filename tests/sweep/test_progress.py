"""What a sweep shows: a progress line per finished trial (vae_sweep/sweep/progress.py), named objectives and, in a
one-objective sweep, every epoch's validation objective as an intermediate value, pruner or not."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from vae_sweep.sweep.progress import duration, params_line

LINE = re.compile(r"trial (\d+) \((\d+)/(\d+)\) (\w+): (.*)elapsed \S+, (ETA \S+|done)$")


def test_durations_and_parameters_read_at_a_glance():
    assert [duration(s) for s in (4.4, 65, 7325)] == ["4s", "1m05s", "2h02m"]
    assert params_line({"lr": 0.0018762345, "beta": 0.13880253392729852, "model": "conv"}) == (
        "beta=0.1388 lr=0.001876 model=conv"
    )


@pytest.mark.slow
def test_a_sweep_logged_to_a_file_has_one_plain_line_per_trial_and_a_named_learning_curve(tmp_path):
    storage = f"sqlite:///{tmp_path}/study.db"
    args = ["--multirun", "sweep=elbo", "debug=tiny", "epochs=2", "eval.pictures=false", "hydra.sweeper.n_trials=2"]
    args += [f"hydra.sweep.dir={tmp_path}/sweep", f"hydra.sweeper.storage={storage}"]
    with open(tmp_path / "sweep.log", "w") as log:  # not a terminal: plain lines only
        done = subprocess.run(
            [sys.executable, "-m", "vae_sweep", *args],
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HYDRA_FULL_ERROR": "0"},
            timeout=600,
        )
    text = (tmp_path / "sweep.log").read_text()
    assert done.returncode == 0, text[-3000:]
    assert "\r" not in text and "epochs:" not in text  # no tqdm frames
    lines = [m for m in map(LINE.search, text.splitlines()) if m]
    assert [(m[1], m[2], m[3], m[4]) for m in lines] == [("0", "1", "2", "completed"), ("1", "2", "2", "completed")]
    assert all("neg_elbo=" in m[5] and " nats" in m[5] and "lr=" in m[5] for m in lines)
    assert lines[0][6].startswith("ETA") and lines[1][6] == "done"
    for m in lines:  # the parameters at 4 significant digits
        lr = re.search(r"lr=(\S+)", m[5])[1]
        assert len(re.sub(r"e.*", "", lr).replace(".", "").lstrip("0")) <= 4, lr
    assert re.search(
        r"best trial \d: value \S+, latent_dim=\d+ lr=0\.0*[1-9]\d{0,3}$", text, re.M
    )  # 4 digits there too
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    assert study.metric_names == ["neg_elbo [nats/example]"]
    for trial in study.trials:  # no pruner, and still a learning curve: val_neg_elbo after each epoch
        rows = (Path(tmp_path) / "sweep" / str(trial.number) / "history.csv").read_text().splitlines()
        header = rows[0].split(",")
        expected = {int(r.split(",")[0]): float(r.split(",")[header.index("val_neg_elbo")]) for r in rows[1:]}
        assert trial.intermediate_values == pytest.approx(expected)
        assert set(expected) == {1, 2}


def test_a_line_for_each_way_a_trial_ends(caplog):
    """Pruned before any trial completed, failed, and completed: each gets its line, and the sweep goes on."""
    from optuna.trial import TrialState

    from vae_sweep.sweep.progress import Progress

    study, lr = optuna.create_study(direction="minimize"), {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2)}
    progress = Progress(4, ["neg_elbo"], bar=False)
    with caplog.at_level("INFO", logger="vae_sweep.sweep.progress"):
        pruned = study.ask(lr)
        pruned.report(300.0, step=1)
        study.tell(pruned, state=TrialState.PRUNED)
        progress.trial_done(study, pruned)
        failed = study.ask(lr)
        study.tell(failed, state=TrialState.FAIL)
        progress.trial_done(study, failed)
        done = study.ask(lr)
        study.tell(done, 250.123456)
        progress.trial_done(study, done)
    progress.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "vae_sweep.sweep.progress"]
    assert lines[0].startswith("trial 0 (1/4) pruned: neg_elbo=300 nats  no trial completed yet  lr=0.")
    assert lines[1].startswith("trial 1 (2/4) failed:  lr=0.") and "neg_elbo" not in lines[1]
    assert lines[2].startswith("trial 2 (3/4) completed: neg_elbo=250.1 nats  best so far  lr=0.")
    assert all(re.search(r"elapsed \d+s, ETA \d+s$", line) for line in lines)


def test_the_terminal_bar_leaves_logging_as_it_found_it(capsys):
    """On a terminal a tqdm bar over trials sits below the lines; closing it restores the loggers it quieted."""
    import logging

    from vae_sweep.sweep.progress import QUIETED, Progress

    levels = {name: logging.getLogger(name).level for name in QUIETED}
    progress = Progress(2, ["neg_elbo"], bar=True)
    assert all(logging.getLogger(name).level == logging.WARNING for name in QUIETED)
    study = optuna.create_study()
    trial = study.ask()
    study.tell(trial, 1.5)
    progress.trial_done(study, trial)
    assert progress.bar.n == 1 and progress.bar.total == 2
    progress.close()
    assert {name: logging.getLogger(name).level for name in QUIETED} == levels
    assert "trials" in capsys.readouterr().err  # the bar was drawn
