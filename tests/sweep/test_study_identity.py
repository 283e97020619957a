"""A study holds one experiment: its name and recorded settings come from the command (vae_sweep/sweep/study.py).

The sweeps run as a user runs them, from a fresh folder with the default storage `multirun/pareto.db`."""

from __future__ import annotations

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.trial import TrialState

from helpers import cli
from vae_sweep.runtime import cpu_count
from vae_sweep.sweep.study import differences, experiment, study_name

FAST = ["debug=tiny", "eval.pictures=false"]
NAME = "pareto[debug=tiny]"  # eval.pictures does not change results: not in the name
CONV = "pareto[debug=tiny,model=conv]"
DEFAULTS = {
    "model": "mlp",
    "loss": "beta",
    "likelihood": "bernoulli",
    "optimizer": "adam",
    "scheduler": "none",
    "dataset": "mnist_5k",
    "objectives": "[distortion,rate]",
}
FAST_SETTINGS = {"debug": "tiny"}


def studies(folder) -> dict[str, optuna.Study]:
    url = f"sqlite:///{folder}/multirun/pareto.db"
    return {
        s.study_name: optuna.load_study(study_name=s.study_name, storage=url)
        for s in optuna.get_all_study_summaries(url)
    }


def trial_dirs(sweep_dir) -> list[str]:
    return sorted(p.name for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def test_defining_overrides_name_the_study():
    cfg = OmegaConf.create(
        {
            "objectives": ["distortion", "rate"],
            "hydra": {
                "runtime": {
                    "choices": {
                        "model": "conv",
                        "loss": "beta",
                        "likelihood": "bernoulli",
                        "optimizer": "adam",
                        "scheduler": "none",
                        "dataset": "mnist_5k",
                        "sweep": "pareto",
                        "hydra/sweeper": "vae_optuna",
                    }
                }
            },
        }
    )
    args = [
        "model=conv",
        "epochs=1",
        "lr=1e-2",
        "beta=tag(log, interval(0.01, 1))",
        "progress=false",
        "device=cpu",
        "eval.pictures=false",
        "data_dir=/data",
        "sweep=pareto",
        "+seed2=3",
        "optimizer=choice(adam,sgd)",
    ]
    settings, defining = experiment(cfg, args)
    assert defining == {"model": "conv", "epochs": "1", "lr": "0.01", "+seed2": "3", "optimizer": "choice(adam,sgd)"}
    assert settings == DEFAULTS | defining
    assert study_name("pareto", defining) == "pareto[+seed2=3,epochs=1,lr=0.01,model=conv,optimizer=choice(adam,sgd)]"
    assert study_name("pareto", {}) == "pareto"
    assert differences(DEFAULTS, DEFAULTS | {"model": "conv", "epochs": "1"}) == [
        "epochs: study has the default, this command has 1",
        "model: study has mlp, this command has conv",
    ]


@pytest.mark.slow
def test_default_sweep_from_an_empty_folder(tmp_path):
    """No storage, no sweep dir given: `multirun/` is created, and no warning comes from our own defaults."""
    res = cli(["--multirun", *FAST, "hydra.sweeper.n_trials=2"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "Warning" not in res.stderr, res.stderr
    assert res.stdout.splitlines()[0].endswith(
        f"study {NAME!r} in sqlite:///multirun/pareto.db: 0 trials already, 2 to finish (failed or interrupted "
        f"trials do not count; more than 0 failures stop the sweep); 1 at a time with {cpu_count()} torch threads each"
    )
    assert (tmp_path / "multirun" / "pareto.db").is_file()
    (study,) = studies(tmp_path).values()
    assert study.study_name == NAME and study.user_attrs["settings"] == DEFAULTS | FAST_SETTINGS
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert len(list((tmp_path / "multirun").glob("*/*/[01]/metrics.json"))) == 2


@pytest.mark.slow
def test_each_experiment_gets_its_own_study_and_resumes_it(tmp_path):
    def sweep(folder: str, n_trials: int, *extra: str):
        res = cli(
            ["--multirun", *FAST, f"hydra.sweeper.n_trials={n_trials}", f"hydra.sweep.dir={folder}", *extra],
            cwd=tmp_path,
        )
        assert res.returncode == 0, res.stderr
        return res

    sweep("a", 2)
    assert f"study {CONV!r} in sqlite:///multirun/pareto.db: 0 trials already" in sweep("b", 2, "model=conv").stdout
    assert f"study {NAME!r} in sqlite:///multirun/pareto.db: 2 trials already" in sweep("c", 3).stdout
    found = studies(tmp_path)
    assert set(found) == {NAME, CONV}
    assert found[NAME].user_attrs["settings"] == DEFAULTS | FAST_SETTINGS
    assert found[CONV].user_attrs["settings"] == DEFAULTS | FAST_SETTINGS | {"model": "conv"}
    mlp, conv = found[NAME].trials, found[CONV].trials
    assert [t.user_attrs["metrics"]["model"] for t in mlp] == ["mlp"] * 3  # no conv trial joined the MLP study
    assert [t.user_attrs["metrics"]["model"] for t in conv] == ["conv"] * 2
    assert all(t.state == TrialState.COMPLETE for t in mlp + conv)
    runs = [t.user_attrs["metrics"]["run_dir"] for t in mlp]
    assert runs == [str(tmp_path / "a" / "0"), str(tmp_path / "a" / "1"), str(tmp_path / "c" / "2")]  # topped up
    assert trial_dirs(tmp_path / "c") == ["2"]


@pytest.mark.slow
def test_an_explicit_study_name_holding_another_experiment_is_refused(tmp_path):
    named = ["--multirun", *FAST, "hydra.sweeper.study_name=mine", "hydra.sweeper.n_trials=2"]
    assert cli([*named, "hydra.sweeper.n_trials=1", "hydra.sweep.dir=a"], cwd=tmp_path).returncode == 0
    res = cli([*named, "model=conv", "epochs=2", "hydra.sweep.dir=b"], cwd=tmp_path)
    assert res.returncode != 0
    assert res.stderr.strip().splitlines() == [
        "error: study 'mine' in sqlite:///multirun/mine.db holds another experiment (epochs: study has the default, "
        "this command has 2; model: study has mlp, this command has conv): drop the hydra.sweeper.study_name override "
        "to get a study of this command's own, or pick another name"
    ]
    study = optuna.load_study(study_name="mine", storage=f"sqlite:///{tmp_path}/multirun/mine.db")
    assert len(study.trials) == 1 and study.user_attrs["settings"] == DEFAULTS | FAST_SETTINGS
    assert not (tmp_path / "b").exists() or trial_dirs(tmp_path / "b") == []


@pytest.mark.slow
def test_a_derived_name_whose_recorded_groups_changed_is_refused(tmp_path):
    """As when the config files changed the default model after the study was made."""
    (tmp_path / "multirun").mkdir()
    url = f"sqlite:///{tmp_path}/multirun/pareto.db"
    old = optuna.create_study(study_name=NAME, storage=url, directions=["minimize", "minimize"])
    old.set_user_attr("settings", DEFAULTS | FAST_SETTINGS | {"model": "conv"})
    res = cli(["--multirun", *FAST, "hydra.sweeper.n_trials=2", "hydra.sweep.dir=s"], cwd=tmp_path)
    assert res.returncode != 0
    assert res.stderr.strip().splitlines() == [
        f"error: study {NAME!r} in sqlite:///multirun/pareto.db holds another experiment (model: study has conv, "
        "this command has mlp): name a new study with hydra.sweeper.study_name=..."
    ]
    assert optuna.load_study(study_name=NAME, storage=url).trials == []


def test_a_pruner_makes_a_study_of_its_own():
    """The README's `sweep=elbo hydra/sweeper/pruner=median` after `sweep=elbo`: its trials stop early, so it gets a
    study of its own instead of joining the finished one (and running nothing)."""
    choices = {**dict.fromkeys(("model", "loss", "likelihood", "optimizer", "scheduler", "dataset"), "x")}
    for pruner, name in (("none", "elbo"), (None, "elbo"), ("median", "elbo[pruner=median]")):
        cfg = OmegaConf.create(
            {"objectives": ["neg_elbo"], "hydra": {"runtime": {"choices": {**choices, "hydra/sweeper/pruner": pruner}}}}
        )
        settings, defining = experiment(cfg, ["sweep=elbo", f"hydra/sweeper/pruner={pruner}"])
        assert study_name("elbo", defining) == name
        assert ("pruner" in settings) == (pruner == "median")
