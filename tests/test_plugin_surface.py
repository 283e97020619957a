"""The private surface of hydra-optuna-sweeper that vae_sweep/sweep/sweeper.py builds on (`_impl`), as it is in 1.4.0rc3,
and every other private name of Optuna and Hydra that vae_sweep uses (the last tests).

pyproject.toml pins the plugin to `>=1.4.0rc3,<1.4.1` for this reason; these tests fail the day that surface changes
(a renamed parameter, a different return arity), so the pin is widened only after the sweeper is checked again.
"""

from __future__ import annotations

import inspect
import re
from importlib.metadata import version
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

import vae_sweep
from hydra_plugins.hydra_optuna_sweeper import _impl
from hydra_plugins.hydra_optuna_sweeper._impl import (
    OptunaSweeperImpl,
    create_optuna_distribution_from_override,
    create_params_from_overrides,
)
from vae_sweep.sweep.sweeper import VaeOptunaSweeperImpl


def params(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


def test_the_plugin_version_is_the_one_checked():
    assert version("hydra-optuna-sweeper") == "1.4.0rc3"


def test_sweeper_impl_constructor_and_methods():
    assert params(OptunaSweeperImpl.__init__) == [
        "self",
        "sampler",
        "direction",
        "storage",
        "study_name",
        "n_trials",
        "n_jobs",
        "max_failure_rate",
        "custom_search_space",
        "params",
    ]
    assert params(OptunaSweeperImpl.setup) == ["self", "hydra_context", "task_function", "config"]
    assert params(OptunaSweeperImpl._configure_trials) == [
        "self",
        "trials",
        "search_space_distributions",
        "fixed_params",
        "fixed_overrides",
    ]
    for name in (
        "_process_searchspace_config",
        "_parse_sweeper_params_config",
        "_get_directions",
        "_to_grid_sampler_choices",
    ):
        assert callable(getattr(OptunaSweeperImpl, name)), name
    assert issubclass(VaeOptunaSweeperImpl, OptunaSweeperImpl)


def test_create_params_from_overrides_returns_distributions_fixed_params_and_fixed_overrides():
    result = create_params_from_overrides(
        ["beta=tag(log, interval(0.001, 10.0))", "latent_dim=choice(2, 4)", "epochs=1", "~eval.pictures"]
    )
    assert len(result) == 3
    dists, fixed, fixed_overrides = result
    assert dists == {"beta": FloatDistribution(0.001, 10.0, log=True), "latent_dim": CategoricalDistribution([2, 4])}
    assert fixed == {"epochs": "1"} and fixed_overrides == ["~eval.pictures"]


def test_one_override_becomes_one_distribution_or_a_value_error():
    """sweep/search_space.py checks each searched key alone with this, before the first trial."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parse = OverridesParser.create().parse_override
    dist = create_optuna_distribution_from_override(parse("lr=tag(log, interval(1e-4, 1e-2))"))
    assert isinstance(dist, optuna.distributions.FloatDistribution) and dist.log and dist.low == 1e-4
    assert create_optuna_distribution_from_override(parse("k=choice(2,4)")).choices == (2, 4)
    with pytest.raises(ValueError, match="at least one value"):
        create_optuna_distribution_from_override(parse("k=range(10,2)"))


def test_the_sweeper_state_the_loop_reads_after_setup():
    """Attributes set by the plugin's __init__/setup that the loop reads: their names."""
    source = inspect.getsource(_impl.OptunaSweeperImpl.__init__) + inspect.getsource(_impl.OptunaSweeperImpl.setup)
    for attr in (
        "self.sampler",
        "self.direction",
        "self.storage",
        "self.study_name",
        "self.n_trials",
        "self.n_jobs",
        "self.max_failure_rate",
        "self.params",
        "self.job_idx",
        "self.config",
        "self.launcher",
    ):
        assert f"{attr} =" in source, attr


def test_the_submitit_launcher_surface_the_slurm_loop_builds_on():
    """vae_sweep/sweep/cluster.py submits each trial through the launcher's executor with the launcher as the job's
    callable: its `_EXECUTOR`, resolved `params`, `BaseQueueConf` and `__call__`'s arguments, as in 1.4.0rc3."""
    from hydra_plugins.hydra_submitit_launcher import submitit_launcher as sl
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    assert version("hydra-submitit-launcher") == "1.4.0rc3"
    assert sl.SlurmLauncher._EXECUTOR == "slurm"
    assert params(sl.BaseSubmititLauncher.__call__) == [
        "self",
        "sweep_overrides",
        "job_dir_key",
        "job_num",
        "job_id",
        "singleton_state",
    ]
    launcher = sl.SlurmLauncher(submitit_folder="/tmp/x/%j", partition="debug", cpus_per_task=2, python=None)
    assert launcher.params == {"submitit_folder": "/tmp/x/%j", "partition": "debug", "cpus_per_task": 2, "python": None}
    assert {"submitit_folder", "cpus_per_task", "timeout_min", "mem_gb"} <= set(BaseQueueConf.__dataclass_fields__)


# --- every other private name vae_sweep takes from Optuna and Hydra --------------------------------------------------
# The package's uses, found by reading its source; a new one fails the first test until it is checked below.
PRIVATE_USES = {
    "study._storage": {"sweep/record.py", "sweep/study.py"},
    "._trial_id": {"sweep/record.py", "sweep/sweeper.py"},
    "hydra._internal": {"checks.py", "sweep/progress.py"},  # progress.py: the basic launcher's logger, by name
    "hydra_plugins.hydra_optuna_sweeper._impl": {"sweep/sweeper.py", "sweep/search_space.py"},
    "optuna.storages._rdb": {"sweep/outage.py"},  # a RUNNING trial's start time, for one that never beat
}


def test_the_private_names_in_use_are_the_ones_checked_here():
    package = Path(vae_sweep.__file__).parent
    found: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        text = path.read_text()
        for name in re.findall(
            r"\b(?:study|trial|t)\._[a-z]\w*|hydra\._internal|hydra_optuna_sweeper\._\w+|optuna(?:\.\w+)*?\._\w+", text
        ):
            key = {"hydra_optuna_sweeper._impl": "hydra_plugins.hydra_optuna_sweeper._impl"}.get(name, name)
            key = "._trial_id" if key.endswith("._trial_id") else key
            found.setdefault(key, set()).add(path.relative_to(package).as_posix())
    assert found == PRIVATE_USES


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::optuna.exceptions.ExperimentalWarning")
def test_optuna_private_study_storage_and_trial_id(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/s.db", heartbeat_interval=10, grace_period=30)
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    assert isinstance(study._storage, optuna.storages.BaseStorage)  # the heartbeat and the stale check go through it
    assert isinstance(trial._trial_id, int)
    assert study._storage.get_trial(trial._trial_id).number == trial.number
    assert study._storage.get_heartbeat_interval() == 10  # what sweep.study.beat asks before it beats
    study._storage.record_heartbeat(trial._trial_id)
    # A job reopens its running trial from (storage, study, number) to report and prune (sweep/trial.py)
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name("s"), trial.number)
    again = optuna.trial.Trial(study, trial_id)
    again.report(1.0, step=1)
    assert storage.get_trial(trial_id).intermediate_values == {1: 1.0}


def test_optuna_private_rdb_session_and_trial_model(tmp_path):
    """sweep/outage.py overrides the RDB storage's `_get_stale_trial_ids` and reads RUNNING trials' start times and
    heartbeats through the storage's own session and table model."""
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/s.db")
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    with _create_scoped_session(storage.scoped_session, True) as session:
        rows = (
            session.query(models.TrialModel)
            .filter(models.TrialModel.state == TrialState.RUNNING, models.TrialModel.study_id == study._study_id)
            .all()
        )
        assert [(r.number, r.datetime_start is not None, list(r.heartbeats)) for r in rows] == [
            (trial.number, True, [])
        ]
    assert params(optuna.storages.RDBStorage._get_stale_trial_ids) == ["self", "study_id"]


def test_hydra_private_args_parser_reads_a_command_line_as_hydra_main_does():
    from hydra._internal.utils import get_args_parser

    args = get_args_parser().parse_intermixed_args(["--multirun", "beta=0.1", "--config-name", "c", "lr=1"])
    assert args.multirun and args.config_name == "c" and args.overrides == ["beta=0.1", "lr=1"]
    assert args.config_path is None and args.config_dir is None and args.experimental_rerun is None


def test_the_launcher_loggers_that_the_progress_line_quiets_are_theirs():
    """vae_sweep/sweep/progress.py quiets the launchers' per-job lines by their loggers' names (their modules' own)."""
    import importlib
    import importlib.util

    from vae_sweep.sweep.progress import QUIETED

    launchers = [name for name in QUIETED if name.startswith(("hydra.", "hydra_plugins."))]
    assert len(launchers) == 3
    for name in launchers:
        if importlib.util.find_spec(name.rsplit(".", 1)[0]) is None:  # a launcher plugin not installed here
            continue
        assert importlib.import_module(name).log.name == name
