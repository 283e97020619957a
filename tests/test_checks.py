"""Bad settings end in one line before any work: the real command line for a table of them, spread over every group;
in-process checks for the rest; and every shipped option, the defaults and every sweep pass the schema."""

from __future__ import annotations

import dataclasses
import re
import sys
from typing import Annotated

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from helpers import CONF, cli, compose_config
from vae_sweep import config as schema
from vae_sweep.__main__ import with_default_sweep
from vae_sweep.checks import check_argv, check_config, check_fits_in_memory, check_sweeper, group_options, in_words
from vae_sweep.errors import ConfigError
from vae_sweep.job import run
from vae_sweep.train import build

NO_CUDA = not torch.cuda.is_available()
MEMORY = re.compile(
    r"latent_dim=100000000: the model would have 120,200,628,784 parameters \(1923\.2 GB with "
    r"gradients and optimizer state\); the cpu has \d+\.\d GB available"
)

# command line -> the one line it must end in ("error: " added). Cases marked JOB pass the pre-check and fail at
# the job's start (they need the dataset); every other case fails before Hydra starts anything. "{tmp}" is the cwd.
JOB = "job: "
CLI_CASES = {
    # the top-level knobs
    "beta=-1": "beta=-1: must be a number >= 0",
    "latent_dim=0": "latent_dim=0: must be an integer >= 1",
    "latent_dim=abc": "latent_dim=abc: must be an integer >= 1",
    "lr=0": "lr=0: must be a number > 0",
    "epochs=0": "epochs=0: must be an integer >= 1",
    "threads=0": "threads=0: must be an integer >= 1 or null",
    "progress=1": "progress=1: must be true or false",
    "device=tpu": "device=tpu: must be auto, cpu, cuda, cuda:N or mps",
    "device=cuda:7": JOB + "device=cuda:7: ",  # the pattern is fine; this machine has no such device
    "precision=fp8": "precision=fp8: must be 32, bf16 or 16",
    "precision=16 device=cpu": JOB + "precision=16: fp16 trains on CUDA only (on the cpu it is slower than fp32); "
    "use precision=bf16 or 32",
    "lattent_dim=3": "lattent_dim: the config has no setting 'lattent_dim'; did you mean latent_dim? "
    "(add a new key with +lattent_dim=...)",
    # model
    "model=transformer": "model=transformer: no such option; model accepts conv, conv64, locatello, mlp, mlp2",
    "model=conv model.channels=[]": "model.channels=[]: must be a non-empty list of integers >= 1",
    "model.hidden=[a]": "model.hidden=[a]: must be a list of integers >= 1",
    "model.hiden=[3]": "model.hiden: model=mlp has no setting 'hiden'; did you mean hidden? "
    "(its settings: activation, hidden, latent_dim, split_heads)",
    "model=conv model.activation=gelu": "model.activation=gelu: must be relu or leaky_relu",
    "model=conv64": JOB + "model=conv64 needs images larger than 32x32 (5 stride-2 layers); the dataset gives "
    "1x28x28 (C x H x W): use model=mlp or a larger dataset",
    "latent_dim=100000000 device=cpu": JOB + MEMORY.pattern,
    # prior and posterior
    "prior=vamp prior.components=0": "prior.components=0: must be an integer >= 1",
    "prior=gaussian": "prior=gaussian: no such option; prior accepts standard, two_layer, vamp",
    "posterior=iaf posterior.steps=0": "posterior.steps=0: must be an integer >= 1",
    "model=mlp2 posterior=iaf": JOB + "prior=two_layer has 2 stochastic layer(s), posterior=iaf has 1: they must "
    "agree; use prior=two_layer posterior=two_layer together (model=mlp2 selects both), or neither",
    "loss=ae posterior=iaf": JOB + "loss=ae with posterior=iaf: a deterministic autoencoder draws no z and has no "
    "rate, so it has no use for them; use prior=standard posterior=gaussian, or a stochastic loss",
    # loss and likelihood
    "loss=iwae loss.k=0": "loss.k=0: must be an integer >= 1",
    "loss=capacity loss.c_steps=1.5": "loss.c_steps=1.5: must be an integer >= 0",
    "loss=capacity loss.gamma=-1": "loss.gamma=-1: must be a number >= 0",
    "kl_warmup_steps=-1": "kl_warmup_steps=-1: must be an integer >= 0",
    "likelihood=gaussian likelihood.sigma=0": "likelihood.sigma=0: must be a number > 0",
    "likelihood=poisson": "likelihood=poisson: no such option; likelihood accepts bernoulli, gaussian",
    # optimizer and scheduler
    "optimizer.weight_decay=-1": "optimizer.weight_decay=-1: must be a number >= 0",
    "optimizer=sgd optimizer.momentum=-0.5": "optimizer.momentum=-0.5: must be a number >= 0",
    "+optimizer.betas=[0.9]": "optimizer.betas=[0.9]: must be a list of 2 numbers >= 0 and < 1",
    "scheduler=step scheduler.gamma=-1": "scheduler.gamma=-1: must be a number > 0",
    "scheduler=step scheduler.step_size=0": "scheduler.step_size=0: must be an integer >= 1",
    # dataset
    "dataset.val_size=0": "dataset.val_size=0: must be an integer >= 1",
    "dataset.binarize=yes": "dataset.binarize=yes: must be none, static or dynamic",
    "dataset=celeba dataset.crop=0": "dataset.crop=0: must be an integer >= 1",
    "dataset=mnist dataset.variant=KMNIST": "dataset.variant=KMNIST: must be MNIST or FashionMNIST",
    "dataset=mnist": JOB + "dataset.data_dir: MNIST not found under '{tmp}/no_data' with dataset.download=false; set "
    "dataset.download=true to fetch it, or point dataset.data_dir at a folder holding MNIST/raw",
    # eval
    "eval.batch_size=0": "eval.batch_size=0: must be an integer >= 1",
    "eval.iwae_k=-1": "eval.iwae_k=-1: must be an integer from 0 to 100000",
    "eval.batchsize=3": "eval.batchsize: eval has no setting 'batchsize'; did you mean batch_size? "
    "(add a new key with +eval.batchsize=...)",
    # sweeps
    "beta=0.1,1": "beta=0.1,1: a sweep over values runs only with --multirun (for a list, write beta=[...])",
    "--multirun sweep=nope": "sweep=nope: no such option; sweep accepts curve, disentangle, elbo, families, grid, pareto",
    "--multirun hydra.sweeper.n_trials=0": "hydra.sweeper.n_trials=0: must be an integer >= 1",
    "--multirun hydra.sweeper.max_failure_rate=2": "hydra.sweeper.max_failure_rate=2: must be a number from 0 to 1",
    "--multirun hydra.sweeper.n_jobs=0": "hydra.sweeper.n_jobs=0: must be an integer >= 1, or -1 for one per core",
    "--multirun hydra.sweeper.direction=up": "hydra.sweeper.direction=up: must be minimize or maximize, or a list of them",
    "--multirun objectives=[foo]": "objectives=[foo]: must be one or more of distortion, rate, neg_elbo, iwae_nll, mse, "
    "curve_hypervolume, beta_vae, factor_vae, mig, dci_disentanglement, dci_completeness, dci_informativeness, sap",
    "--multirun objectives=[neg_elbo]": "objectives=[neg_elbo]: hydra.sweeper.direction=[minimize,minimize] asks "
    "for 2; give one objective per direction",
    "--multirun loss=ae": "objectives=[distortion,rate]: loss=ae has no rate; choose from distortion, mse, "
    "beta_vae, factor_vae, mig, dci_disentanglement, dci_completeness, dci_informativeness, sap",
    "--multirun sweep=elbo objectives=[iwae_nll] eval.iwae_k=0": "eval.iwae_k=0: objective iwae_nll needs eval.iwae_k >= 1",
    "--multirun model=conv model.channels=[] beta=0.1,1": "model.channels=[]: must be a non-empty list of integers >= 1",
}


@pytest.mark.slow
@pytest.mark.parametrize("line", list(CLI_CASES))
def test_bad_setting_is_one_line_before_any_work(tmp_path, line):
    expected = CLI_CASES[line]
    if line.startswith("device=cuda") and not NO_CUDA:
        pytest.skip("this machine has CUDA")
    in_job = expected.startswith(JOB)
    out = (
        ["hydra.sweep.dir={tmp}/sweep", "hydra.sweeper.storage=sqlite:///{tmp}/study.db"]
        if "--multirun" in line
        else ["hydra.run.dir={tmp}/run"]
    )
    args = [a.format(tmp=tmp_path) for a in [*line.split(), "data_dir={tmp}/no_data", *out]]
    res = cli(args, cwd=tmp_path, timeout=120)
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr
    last = res.stderr.strip().splitlines()[-1]
    want = "error: " + expected.removeprefix(JOB).replace("{tmp}", str(tmp_path))
    if expected is CLI_CASES["latent_dim=100000000 device=cpu"]:
        assert re.fullmatch("error: " + MEMORY.pattern, last), last
    elif line.startswith("device=cuda"):
        assert last.startswith(want), last
    else:
        assert last == want
    assert not list(tmp_path.rglob("model.pt")) and not list(tmp_path.rglob("metrics.json"))
    if not in_job:  # refused before Hydra started: nothing in the folder at all, and nothing but the line said
        assert res.stderr.strip().splitlines() == [want] and not list(tmp_path.iterdir())


def test_the_table_covers_every_group():
    text = " ".join(CLI_CASES)
    for group in schema.JOB_GROUPS:
        assert f"{group}." in text or f"{group}=" in text, group
    assert "eval." in text and "--multirun" in text and len(CLI_CASES) >= 25


def refused(argv: list[str]) -> str:
    """check_argv's error for a command line, as `python -m vae_sweep` (vae_sweep.__main__.main) checks it."""
    with pytest.raises(ConfigError) as e:
        check_argv(with_default_sweep(argv), CONF)
    return str(e.value)


@pytest.mark.parametrize(
    "argv, line",
    [
        (["latent_dim=???"], "latent_dim=???: must be an integer >= 1"),
        (["model.latent_dim=${nope}"], "model.latent_dim=${nope}: Interpolation key 'nope' not found"),
        (
            ["model.hidden=[1,"],
            "model.hidden=[1,: cannot be parsed (no viable alternative at input '[1,'); "
            "see https://hydra.cc/docs/advanced/override_grammar/basic/",
        ),
        (["+latent_dim=4"], "+latent_dim=4: Could not append to config. An item is already at 'latent_dim'."),
        (["~nope"], "~nope: Could not delete from config. 'nope' does not exist."),
        (["model=null"], "model=null: choose an option; model accepts conv, conv64, locatello, mlp, mlp2"),
        (["~model"], "model=null: choose an option with model=<option>"),
        (
            ["+model.hiden=3"],
            "model.hiden: model=mlp has no setting 'hiden'; did you mean hidden? "
            "(its settings: activation, hidden, latent_dim, split_heads)",
        ),
        (
            ["-m", "hydra/sweeper/sampler=foo"],
            "hydra/sweeper/sampler=foo: no such option; hydra/sweeper/sampler accepts "
            "cmaes, gp, grid, nsgaii, nsgaiii, qmc, random, tpe",  # motpe is gone: never offered
        ),
        (["-m", "hydra.sweeper.sampler.seed=-1"], "hydra.sweeper.sampler.seed=-1: must be an integer >= 0 or null"),
        (
            ["-m", "sweep=grid", "hydra.sweeper.params.beta=-1"],
            "beta=-1: must be a number >= 0",
        ),  # a sweep's fixed value
        (["optimizer=adamw", "optimizer.fused=maybe"], "optimizer.fused=maybe: must be true or false or null"),
        (["dataset=celeba", "dataset.max_examples=0"], "dataset.max_examples=0: must be an integer >= 1 or null"),
    ],
)
def test_more_bad_settings_in_process(argv, line, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert refused(argv) == line
    assert not list(tmp_path.iterdir())


def test_unknown_sweeper_setting_gets_a_hint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert refused(["--multirun", "hydra.sweeper.ntrials=3"]).startswith(
        "hydra.sweeper.ntrials: hydra.sweeper has no setting 'ntrials'; did you mean n_trials? (its settings: "
    )


def test_output_dir_is_probed_not_created(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("")
    assert refused([f"hydra.run.dir={tmp_path}/a_file/run"]) == (
        f"hydra.run.dir={tmp_path}/a_file/run: cannot write there (Not a directory); give a folder you can write to"
    )
    check_argv([f"hydra.run.dir={tmp_path}/new/run"], CONF)
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--cfg", "job", "model=conv"],
        ["--multirun"],
        ["--multirun", "beta=0.1,1,4", "sweep=grid"],
        [
            "--multirun",
            "latent_dim=choice(2,4)",
            "lr=tag(log, interval(1e-4, 1e-2))",
            "model=conv",
            "model.channels=[8]",
        ],
        ["-m", "sweep=elbo", "objectives=[iwae_nll]"],
        ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
        ["~scheduler"],
        ["--help"],
        ["--info"],
    ],
)
def test_good_command_lines_pass(argv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    check_argv(with_default_sweep(argv), CONF)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("group, option", [(g, o) for g in schema.JOB_GROUPS for o in group_options(CONF, g)])
def test_every_option_of_every_group_passes_the_schema(group, option):
    cfg = compose_config([f"{group}={option}", "data_dir=/somewhere", "objectives=[distortion]"])  # loss=ae: no rate
    check_config(cfg)
    node = cfg[group]
    if node:  # every setting in the YAML is a setting of its schema, under its _target_
        fields = {f.name for f in dataclasses.fields(schema.SCHEMAS[node._target_])}
        assert set(node) - {"_target_", "_partial_"} <= fields


@pytest.mark.parametrize("sweep", group_options(CONF, "sweep"))
def test_every_sweep_passes_the_schema(sweep):
    with initialize_config_dir(config_dir=str(CONF)):
        cfg = compose(config_name="config", overrides=[f"sweep={sweep}"], return_hydra_config=True)
    check_config(cfg, choices=cfg.hydra.runtime.choices)
    check_sweeper(cfg)


def test_the_root_schema_and_config_yaml_name_the_same_knobs():
    knobs = OmegaConf.load(CONF / "config.yaml")
    fields = {f.name for f in dataclasses.fields(schema.RootSettings)}
    assert set(knobs) - {"defaults", "hydra"} == fields  # `hydra:` sets Hydra's own settings (the job's name)
    assert {f.name for f in dataclasses.fields(schema.EvalSettings)} == set(knobs.eval)


def test_the_schema_holds_no_defaults():
    """The YAML files hold the defaults; a default in the schema would be a second copy."""
    for cls in {*schema.SCHEMAS.values(), schema.RootSettings, schema.EvalSettings, schema.SamplerSettings}:
        for f in dataclasses.fields(cls):
            assert f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING, (cls, f.name)


def test_descriptions_read_as_words():
    assert in_words(schema.PositiveInt) == "an integer >= 1"
    assert in_words(schema.Positive | None) == "a number > 0 or null"
    assert in_words(Annotated[float, schema.Range(ge=0, le=1)]) == "a number from 0 to 1"
    assert in_words(Annotated[list[schema.PositiveInt], schema.Length(min=1)]) == "a non-empty list of integers >= 1"


def test_the_job_checks_its_config_before_training(tmp_path):
    """The Compose API path: `run` refuses a bad eval setting at its start, not after training."""
    with pytest.raises(ConfigError, match=r"^eval.batch_size=0: must be an integer >= 1$"):
        run(compose_config(["eval.batch_size=0"]), tmp_path)
    assert not list(tmp_path.iterdir())


def test_a_model_too_large_is_refused_without_allocating_it():
    cfg = compose_config(["latent_dim=100000000"])
    with pytest.raises(ConfigError) as e:
        build(cfg, (1, 28, 28), torch.device("cpu"))  # would ask for 480 GB of parameters: meta allocates none
    assert MEMORY.fullmatch(str(e.value)), str(e.value)


def test_memory_message_names_the_largest_size_setting(monkeypatch):
    monkeypatch.setattr(sys.modules["vae_sweep.checks"], "available_memory", lambda device: 10**9)
    cfg = compose_config(["model.hidden=[1000000]"])
    with pytest.raises(
        ConfigError,
        match=r"^model.hidden=\[1000000\]: the model would have 1,589,021,204 parameters "
        r"\(25.4 GB with gradients and optimizer state\); the cpu has 1.0 GB available$",
    ):
        check_fits_in_memory(cfg, 1_589_021_204, torch.device("cpu"))
    check_fits_in_memory(cfg, 1000, torch.device("cpu"))


def test_cuda_memory_is_the_drivers_free_count(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (2 * 10**9, 80 * 10**9))
    cfg = compose_config(["latent_dim=100000000"])
    with pytest.raises(ConfigError, match=r"; cuda:0 has 2.0 GB available$"):
        check_fits_in_memory(cfg, 120_200_628_784, torch.device("cuda:0"))
