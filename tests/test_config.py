"""Every option of every config group composes and instantiates; `--cfg job` prints the composed config."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import get_method

from helpers import CONF, cli, compose_config
from vae_sweep.checks import group_options
from vae_sweep.hydra_api import instantiate_group


def options(group: str) -> list[str]:
    return group_options(CONF, group)


def test_every_group_has_its_options():
    assert options("model") == ["conv", "conv64", "locatello", "mlp", "mlp2"]
    assert options("prior") == ["standard", "two_layer", "vamp"]
    assert options("posterior") == ["gaussian", "iaf", "two_layer"]
    assert options("loss") == ["ae", "beta", "capacity", "elbo", "iwae", "multirate"]
    assert options("experiment") == ["iwae_burda", "vae_pythae", "vamp_tomczak"]
    assert options("optimizer") == ["adam", "adamw", "sgd"]
    assert options("scheduler") == ["exponential", "none", "step"]
    assert options("dataset") == [
        "celeba",
        "cifar10",
        "digits",
        "dsprites",
        "fashion_mnist",
        "mnist",
        "mnist_5k",
        "sprites",
    ]
    assert options("likelihood") == ["bernoulli", "gaussian"]
    assert options("sweep") == ["curve", "disentangle", "elbo", "families", "grid", "pareto"]


@pytest.mark.parametrize("option", options("loss"))
def test_losses_instantiate(option):
    k = ["loss.k=1"] if option == "iwae" else []  # iwae with one draw: the negative ELBO
    loss = instantiate_group(compose_config([f"loss={option}", "beta=0.25", *k]).loss, "loss")
    terms = loss(torch.tensor([100.0]), torch.tensor([10.0]), step=10**6)
    expected = {
        "ae": 100.0,
        "beta": 102.5,
        "elbo": 110.0,
        "capacity": 100.0 + 1000.0 * 15.0,
        "multirate": 110.0,  # without per-example betas: beta = 1
        "iwae": 110.0,
    }[option]
    assert terms["loss"].item() == pytest.approx(expected)


@pytest.mark.parametrize("optimizer", options("optimizer"))
@pytest.mark.parametrize("scheduler", options("scheduler"))
def test_optimizers_and_schedulers_instantiate(optimizer, scheduler):
    cfg = compose_config([f"optimizer={optimizer}", f"scheduler={scheduler}", "lr=0.02"])
    params = [torch.nn.Parameter(torch.zeros(3))]
    opt = instantiate_group(cfg.optimizer, "optimizer")(params)
    assert opt.param_groups[0]["lr"] == 0.02
    if scheduler == "none":
        assert not cfg.scheduler
    else:
        sched = instantiate_group(cfg.scheduler, "scheduler")(opt)
        for _ in range(5):
            opt.step()
            sched.step()
        assert opt.param_groups[0]["lr"] < 0.02


@pytest.mark.parametrize("option", options("likelihood"))
def test_likelihoods_instantiate(option):
    lik = instantiate_group(compose_config([f"likelihood={option}"]).likelihood, "likelihood")
    assert lik.distortion(torch.zeros(2, 1, 4, 4), torch.full((2, 1, 4, 4), 0.5)).shape == (2,)


@pytest.mark.parametrize("option", options("dataset"))
def test_datasets_compose_to_real_builders(option):
    cfg = compose_config([f"dataset={option}", "data_dir=/somewhere"])
    assert callable(get_method(cfg.dataset._target_))
    if "data_dir" in cfg.dataset:
        assert cfg.dataset.data_dir == "/somewhere" and cfg.dataset.download is False


@pytest.mark.parametrize("sweep", options("sweep"))
def test_sweeps_compose(sweep):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF)):
        cfg = compose(config_name="config", overrides=[f"sweep={sweep}"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    if sweep == "grid":
        assert sweeper._target_.endswith("BasicSweeper") and sweeper.params.beta == "0.1,1,4"
    elif sweep == "families":
        assert sweeper._target_.endswith("BasicSweeper") and set(sweeper.params) == {"prior", "posterior", "beta"}
    else:
        assert sweeper._target_.endswith("VaeOptunaSweeper") and sweeper.storage.startswith("sqlite:///")
        assert set(sweeper.params) >= ({"beta"} if sweep == "disentangle" else {"latent_dim", "lr"})
    assert (
        cfg.get("objectives")
        == {
            "pareto": ["distortion", "rate"],
            "elbo": ["neg_elbo"],
            "grid": None,
            "families": None,
            "curve": ["curve_hypervolume"],
            "disentangle": ["distortion", "mig"],
        }[sweep]
    )


def test_a_single_job_composes_no_sweep_and_multirun_defaults_to_pareto():
    from hydra import compose, initialize_config_dir

    from vae_sweep.__main__ import with_default_sweep

    with initialize_config_dir(config_dir=str(CONF)):
        cfg = compose(config_name="config", return_hydra_config=True)
    assert cfg.objectives is None and cfg.hydra.sweeper._target_.endswith("BasicSweeper")
    assert with_default_sweep(["--multirun", "beta=0.1"]) == ["--multirun", "beta=0.1", "sweep=pareto"]
    assert with_default_sweep(["-m", "sweep=elbo"]) == ["-m", "sweep=elbo"]
    assert with_default_sweep(["beta=0.1"]) == ["beta=0.1"]


def test_top_level_knobs_reach_the_groups():
    cfg = compose_config(["beta=0.1", "latent_dim=8", "lr=3e-4", "loss=beta", "kl_warmup_steps=7"])
    assert cfg.loss.beta == 0.1 and cfg.model.latent_dim == 8 and cfg.optimizer.lr == 3e-4
    assert cfg.loss.warmup_steps == 7


@pytest.mark.slow
def test_cfg_job_prints_the_composed_config(tmp_path):
    out = cli(["model=conv", "loss=beta", "beta=0.1", "--cfg", "job"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "_target_: vae_sweep.models.conv_vae" in out.stdout and "beta: 0.1" in out.stdout
    assert "channels:" in out.stdout and not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("sampler", ["random", "tpe", "gp", "nsgaii", "nsgaiii", "qmc", "cmaes"])  # no motpe: optuna 4
@pytest.mark.parametrize("sweep", ["pareto", "elbo"])
def test_every_sampler_can_replace_the_sweeps_default(sweep, sampler):
    """A sweep config must not set a field only its default sampler has: switching would then fail to compose."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF)):
        cfg = compose(
            config_name="config",
            overrides=[f"sweep={sweep}", f"hydra/sweeper/sampler={sampler}"],
            return_hydra_config=True,
        )
    assert cfg.hydra.sweeper.sampler._target_.lower().replace("_", "").endswith(f"{sampler}sampler")
    assert cfg.hydra.sweeper.sampler.seed == 0
