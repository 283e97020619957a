"""A model, a dataset and settings of the user's own (issue 22), with the example of scripts/example_user/: trust
comes only from VAE_SWEEP_TRUSTED_TARGETS, a class that breaks its contract is refused before training, a bad
setting of the user's option is one line, and the example runs a job, a resume, a two-trial sweep, the analysis,
loss=multirate and the disentanglement metrics through the real command line."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import CONF, REPO
from vae_sweep import trust
from vae_sweep.checks import check_argv
from vae_sweep.errors import ConfigError
from vae_sweep.hydra_api import compose

EXAMPLE = REPO / "scripts" / "example_user"
MY_CONF = EXAMPLE / "my_conf"
TRUST = {"VAE_SWEEP_TRUSTED_TARGETS": "my_vae.*"}
SMALL = ["experiment=blobs", "epochs=2", "threads=1", "progress=false"]


@pytest.fixture
def trusted(monkeypatch):
    """The example's package importable and trusted, as `VAE_SWEEP_TRUSTED_TARGETS=my_vae.*` gives it."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    trust.read_environment(TRUST)
    yield
    trust.read_environment({})


@pytest.fixture
def untrusted():
    trust.read_environment({})
    yield
    trust.read_environment({})


def write_conf(root: Path, files: dict[str, str]) -> Path:
    """A config folder of the user's: `files` maps `group/option.yaml` to its text."""
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))
    return root


def refusal(argv: list[str]) -> str:
    with pytest.raises(ConfigError) as e:
        check_argv(argv, CONF)
    return str(e.value)


# --- trust ---------------------------------------------------------------------------------------------------


def test_the_users_package_is_refused_until_trusted_naming_the_variable(untrusted):
    sys.modules.pop("my_vae.nets", None)
    line = refusal(["--config-dir", str(MY_CONF), "model=my_vae", "dataset=blobs"])
    assert line == (
        "model._target_=my_vae.nets.ResidualVAE: not trusted; run with VAE_SWEEP_TRUSTED_TARGETS=my_vae.* to allow it"
    )
    assert "my_vae.nets" not in sys.modules  # refused before its code was imported


def test_trusted_package_passes_the_checks(trusted):
    check_argv(["--config-dir", str(MY_CONF), *SMALL], CONF)
    check_argv(["--config-dir", str(MY_CONF), "--multirun", *SMALL, "sweep=pareto", "hydra.sweeper.n_trials=2"], CONF)


@pytest.mark.parametrize(
    ("yaml", "line"),
    [
        (
            "model/evil.yaml",
            "model._target_=os.system: not trusted; os runs commands or touches files, never part of a VAE job",
        ),
        (
            "dataset/evil.yaml",
            "dataset._target_=subprocess.run: not trusted; subprocess runs commands or touches files, never part of a "
            "VAE job",
        ),
    ],
)
def test_configs_that_run_commands_are_refused_even_with_the_example_trusted(tmp_path, trusted, yaml, line):
    target = "os.system" if "model" in yaml else "subprocess.run"
    arg = f"command: touch {tmp_path}/pwned" if target == "os.system" else f"args: [touch, {tmp_path}/pwned]"
    conf = write_conf(tmp_path / "conf", {yaml: f"_target_: {target}\n{arg}\n"})
    group = yaml.split("/")[0]
    assert refusal(["--config-dir", str(conf), f"{group}=evil"]) == line
    assert not (tmp_path / "pwned").exists()


def test_a_config_cannot_trust_itself_through_env_set(tmp_path, untrusted):
    conf = tmp_path / "conf"
    shutil.copytree(MY_CONF, conf)  # the example's folder, plus an experiment that tries to trust its package
    write_conf(
        conf,
        {
            "experiment/trust_me.yaml": """\
            # @package _global_
            defaults:
              - override /model: my_vae
            hydra:
              job:
                env_set:
                  VAE_SWEEP_TRUSTED_TARGETS: "os.*,my_vae.*"
            """
        },
    )
    line = refusal(["--config-dir", str(conf), "experiment=trust_me", "dataset=digits"])
    assert line.startswith("hydra.job.env_set.VAE_SWEEP_TRUSTED_TARGETS: a config cannot trust targets;"), line
    assert trust.user_targets() == ()


def test_sweeper_sampler_must_be_trusted(tmp_path, untrusted):
    argv = [
        "--multirun",
        "sweep=pareto",
        "debug=tiny",
        "hydra.sweeper.n_trials=1",
        "hydra.sweeper.sampler._target_=os.system",
    ]
    assert refusal(argv).startswith("hydra.sweeper.sampler._target_=os.system: not trusted;")


def test_malformed_trust_is_one_line():
    with pytest.raises(ConfigError, match=r"VAE_SWEEP_TRUSTED_TARGETS=\*: '\*' is no import prefix"):
        trust.read_environment({"VAE_SWEEP_TRUSTED_TARGETS": "*"})
    assert trust.read_environment({"VAE_SWEEP_TRUSTED_TARGETS": " a.* , b.c.D ,"}) == ("a.*", "b.c.D")
    assert trust.is_trusted("a.x.Y", ("a.*",)) and not trust.is_trusted("ab.Y", ("a.*",))
    trust.read_environment({})


# --- settings of the user's option -----------------------------------------------------------------------------


def test_a_bad_setting_of_the_users_option_is_one_line_naming_it(tmp_path, trusted):
    typo = write_conf(tmp_path / "conf", {"model/typo.yaml": "_target_: my_vae.nets.ResidualVAE\nwidht: 3\n"})
    assert refusal(["--config-dir", str(typo), "model=typo"]) == (
        "model.widht=3: my_vae.nets.ResidualVAE takes no setting 'widht'; did you mean width?"
    )
    assert refusal(["--config-dir", str(MY_CONF), "model=my_vae", "model.width=wide"]) == (
        "model.width=wide: my_vae.nets.ResidualVAE takes an integer"
    )
    assert refusal(["--config-dir", str(MY_CONF), "model=my_vae", "+model.depth=2"]).startswith(
        "model.depth=2: my_vae.nets.ResidualVAE takes no setting 'depth';"
    )


def test_the_users_option_is_offered_in_did_you_mean(trusted):
    assert "did you mean my_vae?" in refusal(["--config-dir", str(MY_CONF), "model=my_vea"])


# --- the contract ------------------------------------------------------------------------------------------------

BROKEN = """\
import torch
from torch import nn


class NoDecode(nn.Module):
    def __init__(self, input_shape, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.fc = nn.Linear(1, 1)

    def encode(self, x):
        return torch.zeros(len(x), self.latent_dim), torch.zeros(len(x), self.latent_dim)


class WrongShape(NoDecode):
    def decode(self, z):
        return torch.zeros(len(z), 7)  # not (B, C, H, W)


class NotStochastic:  # a loss without `stochastic`
    def __call__(self, distortion, rate, step):
        return {"loss": (distortion + rate).mean()}
"""


@pytest.mark.parametrize(
    ("name", "line"),
    [
        ("NoDecode", "model._target_=broken.NoDecode: lacks decode; a model is an nn.Module with latent_dim"),
        ("NotStochastic", "loss._target_=broken.NotStochastic: lacks stochastic; see vae_sweep.losses.Loss"),
        (
            "WrongShape",
            "model._target_=broken.WrongShape: decode(z (2, 6)) returned a torch.float32 tensor (2, 7); must be "
            "logits (2, 1, 8, 8)",
        ),
    ],
)
def test_a_class_that_breaks_the_contract_is_refused_before_training(tmp_path, monkeypatch, name, line):
    from vae_sweep.job import run

    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "broken.py").write_text(BROKEN)
    monkeypatch.syspath_prepend(str(tmp_path / "pkg"))
    trust.read_environment({"VAE_SWEEP_TRUSTED_TARGETS": "broken.*"})
    group = "loss" if name == "NotStochastic" else "model"
    setting = "" if group == "loss" else "latent_dim: 6\n"
    conf = write_conf(tmp_path / "conf", {f"{group}/broken.yaml": f"_target_: broken.{name}\n{setting}"})
    cfg = compose(CONF, "config", [f"{group}=broken", "dataset=digits", "debug=tiny", "device=cpu"], conf)
    out = tmp_path / "run"
    out.mkdir()
    try:
        with pytest.raises(ConfigError) as e:
            run(cfg, out)
    finally:
        trust.read_environment({})
    assert str(e.value).startswith(line), str(e.value)
    assert list(out.iterdir()) == []  # no history.csv, no metrics.json: nothing started


# --- the example through the real command line ------------------------------------------------------------------


def vae_sweep(args: list[str], cwd: Path, module: str = "vae_sweep", check: bool = True) -> subprocess.CompletedProcess:
    """`python -m vae_sweep ARGS` with the example's package on PYTHONPATH and trusted, from `cwd`."""
    env = {**os.environ, **TRUST, "PYTHONPATH": os.pathsep.join([str(REPO), str(EXAMPLE)]), "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    if check:
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, (proc.stdout + proc.stderr)[-3000:]
    return proc


@pytest.fixture(scope="module")
def example_job(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("example")
    vae_sweep(["--config-dir", str(MY_CONF), *SMALL], cwd)
    (metrics,) = cwd.glob("outputs/*/*/metrics.json")
    return metrics.parent


@pytest.mark.slow
def test_example_job_trains_and_scores_disentanglement(example_job):
    metrics = json.loads((example_job / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["model"] == "my_vae" and metrics["dataset"] == "blobs"
    assert metrics["epochs"] == 2 and metrics["latent_dim"] == 6
    assert 0 < metrics["distortion"] < 1024 * math.log(2) and metrics["rate"] > 0  # below an untrained 32x32 model
    assert 0 <= metrics["mig"] <= 1 and 0 <= metrics["dci_disentanglement"] <= 1
    assert (example_job / "traversals_factors.png").is_file() and (example_job / "history.csv").is_file()


@pytest.mark.slow
def test_example_job_resumes(example_job):
    cwd = example_job.parents[2]
    vae_sweep(["--config-dir", str(MY_CONF), *SMALL, "epochs=3", f"resume={example_job}"], cwd)
    (newest,) = (m.parent for m in cwd.glob("outputs/*/*/metrics.json") if m.parent != example_job)
    metrics = json.loads((newest / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["epochs"] == 3 and metrics["resumed_from"] == str(example_job)
    assert len((newest / "history.csv").read_text().splitlines()) == 1 + 3


@pytest.mark.slow
def test_example_two_trial_pareto_sweep_and_its_analysis(tmp_path):
    args = ["--config-dir", str(MY_CONF), "--multirun", *SMALL, "hydra.sweeper.n_trials=2", "eval.disentanglement=null"]
    vae_sweep(args, tmp_path)
    (sweep,) = tmp_path.glob("multirun/2*/*")  # multirun/<date>/<time>, beside the study and its artifacts
    runs = sorted(sweep.glob("*/metrics.json"))
    assert [json.loads(m.read_text())["status"] for m in runs] == ["completed"] * 2
    vae_sweep([], tmp_path, module="vae_sweep.analyze")
    assert len((sweep / "analysis" / "trials.csv").read_text().splitlines()) == 1 + 2


@pytest.mark.slow
def test_example_multirate_conditions_the_users_model(tmp_path):
    vae_sweep(["--config-dir", str(MY_CONF), *SMALL, "loss=multirate", "eval.disentanglement=null"], tmp_path)
    (metrics,) = tmp_path.glob("outputs/*/*/metrics.json")
    assert json.loads(metrics.read_text())["status"] == "completed"
    assert len((metrics.parent / "curve.csv").read_text().splitlines()) == 1 + 9  # cfg.curve.betas points


@pytest.mark.slow
def test_untrusted_example_is_refused_in_one_line_by_the_command(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(EXAMPLE)]), "HYDRA_FULL_ERROR": "0"}
    env.pop("VAE_SWEEP_TRUSTED_TARGETS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "vae_sweep", "--config-dir", str(MY_CONF), *SMALL],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and proc.stderr.strip().splitlines() == [
        "error: model._target_=my_vae.nets.ResidualVAE: not trusted; run with VAE_SWEEP_TRUSTED_TARGETS=my_vae.* to "
        "allow it"
    ]
    assert not (tmp_path / "outputs").exists()
