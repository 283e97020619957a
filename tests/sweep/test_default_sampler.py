"""The default sweep's sampler (GP, `conf/sweep/pareto.yaml`) at full speed and silent: optuna's GPSampler runs its
L-BFGS-B restarts as one batch through greenlet, a dependency of vae_sweep; without it, optuna falls back to
optimising them one by one and logs a warning in every sweep."""

from __future__ import annotations

import subprocess
import sys

import optuna
import pytest


def test_greenlet_is_installed_so_the_gp_sampler_optimises_in_batches_and_says_nothing():
    code = (
        "import optuna; optuna.logging.enable_default_handler()\n"
        "from optuna._gp import batched_lbfgsb\n"
        "print(batched_lbfgsb._greenlet_imports.is_successful())\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "True"  # the batched path: greenlet imported
    assert "greenlet" not in res.stderr and "sequential" not in res.stderr


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_the_gp_sampler_suggests_after_its_startup_trials_for_two_objectives():
    """The default sweep's shape: two objectives to minimise, GP after its random start, parameters like pareto's."""
    sampler = optuna.samplers.GPSampler(seed=0, n_startup_trials=3)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        beta = trial.suggest_float("beta", 1e-3, 10.0, log=True)
        dim = trial.suggest_categorical("latent_dim", [2, 4, 8])
        return 100 / (1 + beta) + dim, beta * dim

    study.optimize(objective, n_trials=5)
    assert len(study.trials) == 5 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def test_the_sweeper_samples_on_one_torch_thread_and_gives_the_trial_its_threads_back(tmp_path, monkeypatch):
    """GP's tensors are too small to share out between threads: the sampler runs on one, the trials on theirs."""
    import torch
    from optuna.distributions import FloatDistribution
    from test_sweeper_units import sweeper

    seen = []
    real = optuna.samplers.RandomSampler.sample_independent

    def sample_independent(self, study, trial, name, distribution):
        seen.append(torch.get_num_threads())
        return real(self, study, trial, name, distribution)

    monkeypatch.setattr(optuna.samplers.RandomSampler, "sample_independent", sample_independent)
    url = f"sqlite:///{tmp_path}/s.db"
    impl = sweeper({"_target_": "optuna.samplers.RandomSampler", "seed": 0}, n_trials=2, storage=url)
    study = optuna.create_study(study_name="s", storage=url, directions=["minimize"] * 2)
    torch.set_num_threads(2)
    try:
        batch = impl._ask(study, {"lr": FloatDistribution(1e-4, 1e-2, log=True)}, {}, [], parallel=2)
        assert torch.get_num_threads() == 2  # given back for the trials
    finally:
        torch.set_num_threads(2)
    assert len(batch) == 2 and seen == [1, 1]  # both trials' lr drawn on one thread
    assert all(any(o.startswith("lr=") for o in overrides) for _, overrides in batch)
