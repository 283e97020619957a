"""A storage that holds several studies (the README's pareto.db after its sweeps): the analysis reads the newest and
names the others in one line; `--study` picks one per storage."""

from __future__ import annotations

import logging

import optuna
import pytest

from vae_sweep.analysis.frame import load_sweep
from vae_sweep.errors import ConfigError


def storage_with(tmp_path, name: str, *studies: tuple[str, int]) -> str:
    """A SQLite storage holding `studies` (name, trials), created in that order; its URL."""
    url = f"sqlite:///{tmp_path / name}"
    for study_name, n in studies:
        study = optuna.create_study(study_name=study_name, storage=url, directions=["minimize", "minimize"])
        for i in range(n):
            study.add_trial(optuna.trial.create_trial(params={}, distributions={}, values=[100.0 + i, 10.0 - i]))
    return url


def test_the_newest_study_is_read_and_the_others_named(tmp_path, caplog):
    url = storage_with(tmp_path, "pareto.db", ("pareto[debug=tiny]", 2), ("pareto[debug=tiny,model=conv]", 3))
    with caplog.at_level(logging.WARNING, logger="vae_sweep.analysis.sources"):
        df = load_sweep(url)
    assert len(df) == 3 and set(df["source"]) == {f"{url} study=pareto[debug=tiny,model=conv]"}
    (line,) = [r.getMessage() for r in caplog.records if r.name == "vae_sweep.analysis.sources"]
    assert "the newest, pareto[debug=tiny,model=conv]" in line and "others: pareto[debug=tiny];" in line
    assert len(load_sweep(url, study="pareto[debug=tiny]")) == 2


def test_one_study_per_storage(tmp_path):
    a = storage_with(tmp_path, "a.db", ("pareto", 2), ("other", 1))
    b = storage_with(tmp_path, "b.db", ("elbo", 4), ("other", 1))
    df = load_sweep([a, b], study=["pareto", "elbo"])
    assert df.groupby("source").size().to_dict() == {f"{a} study=pareto": 2, f"{b} study=elbo": 4}
    assert len(load_sweep([a, b], study=["other"])) == 2  # one name for every storage
    with pytest.raises(ConfigError, match="--study given 3 times for 2 storage URL"):
        load_sweep([a, b], study=["pareto", "elbo", "x"])
    with pytest.raises(ConfigError, match="study=nope: not in"):
        load_sweep(a, study="nope")
