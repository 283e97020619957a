"""Disentanglement as a job, a sweep and an analysis see it: the settings and their one-line refusals, the encoder's
posterior means of the factor grid, the traversal labels picked by mutual information, the figures of a sweep with
MIG, and (slow) a job on sprites and a two-objective sweep through the real command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
import yaml
from omegaconf import OmegaConf

from helpers import CONF, cli, compose_config
from vae_sweep import data, sprites
from vae_sweep.analysis.frame import load_sweep
from vae_sweep.analysis.plots import FIGURES, plot_disentanglement_vs_beta, plot_rate_distortion, save_figures
from vae_sweep.checks import check_argv, check_config, check_factor_objectives
from vae_sweep.disentangle.report import representation, sample_counts
from vae_sweep.disentangle.sampling import SampleCounts
from vae_sweep.disentangle.traversals import dominant_factors, traversal_labels
from vae_sweep.errors import ConfigError
from vae_sweep.registry import DISENTANGLEMENT, METRICS, OBJECTIVES

SMALL = {"orientation": 13, "posX": 8, "posY": 8}  # 3 x 6 x 4 x 4 x 4 = 1,152 sprites
TINY = [
    "dataset=sprites",
    "debug=tiny",
    "dataset.stride={orientation:13,posX:8,posY:8}",
    "dataset.val_size=100",
    "eval.disentanglement.samples=40",
    "eval.disentanglement.batch_points=20",
    "eval.disentanglement.batch_size=4",
    "eval.iwae_k=0",
]


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> data.ImageData:
    return sprites.sprites(str(tmp_path_factory.mktemp("cache")), stride=SMALL, val_size=100)


# --- registry and settings ------------------------------------------------------------------------------------------


def test_scores_are_maximised_fractions_in_the_registry():
    assert DISENTANGLEMENT == (
        "beta_vae",
        "factor_vae",
        "mig",
        "dci_disentanglement",
        "dci_completeness",
        "dci_informativeness",
        "sap",
    )
    for name in DISENTANGLEMENT:
        m = METRICS[name]
        assert (m.direction, m.objective, m.needs_rate, m.column) == ("maximize", True, False, f"{name}_fraction")
        assert m.described.startswith("fraction in [0, 1]: ") and name in OBJECTIVES
    assert METRICS["disentanglement_seconds"].column == "disentanglement_seconds"
    assert not METRICS["disentanglement_seconds"].objective


def test_samples_10000_are_disentanglement_libs_counts():
    cfg = compose_config(["eval.disentanglement.batch_points=10000"])
    assert SampleCounts(**sample_counts(cfg.eval.disentanglement)) == SampleCounts()
    counts = sample_counts(compose_config().eval.disentanglement)  # the CPU default: a tenth of the batch metrics
    assert counts["mig"] == counts["dci_train"] == 10000 and counts["sap_test"] == 5000 and counts["batch_size"] == 64
    assert counts["beta_vae_train"] == counts["factor_vae_train"] == 1000 and counts["factor_vae_eval"] == 500


@pytest.mark.parametrize(
    "override, message",
    [
        ("eval.disentanglement.dci_model=svm", "eval.disentanglement.dci_model=svm: must be hist or gbt"),
        ("eval.disentanglement.samples=5", "eval.disentanglement.samples=5: must be an integer >= 20"),
        ("eval.disentanglement.batch_size=1", "eval.disentanglement.batch_size=1: must be an integer >= 2"),
    ],
)
def test_bad_settings_are_refused_in_one_line(override, message):
    with pytest.raises(ConfigError) as err:
        check_config(compose_config([override]))
    assert str(err.value) == message
    check_config(compose_config(["eval.disentanglement=null"]))  # null: no metrics, and no complaint


def test_a_direction_against_the_registry_is_refused(tmp_path):
    argv = [
        "--multirun",
        "sweep=disentangle",
        "hydra.sweeper.direction=[minimize,minimize]",
        f"hydra.sweep.dir={tmp_path}",
    ]
    with pytest.raises(ConfigError) as err:
        check_argv(argv, CONF)
    assert str(err.value) == (
        "hydra.sweeper.direction=[minimize,minimize]: mig is maximized; give "
        "hydra.sweeper.direction=[minimize,maximize]"
    )
    check_argv(argv[:2] + argv[3:], CONF)  # the sweep option's own directions pass


def test_the_sweep_option_sets_sprites_locatello_and_directions():
    cfg = compose_config(["sweep=disentangle"], return_hydra_config=True)
    assert (cfg.dataset._target_, cfg.model._target_, cfg.latent_dim) == (
        "vae_sweep.sprites.sprites",
        "vae_sweep.models.locatello_vae",
        10,
    )
    assert list(cfg.objectives) == ["distortion", "mig"]
    assert list(cfg.hydra.sweeper.direction) == [METRICS[o].direction for o in cfg.objectives]
    assert cfg.hydra.sweeper.params.beta == "tag(log, interval(1.0, 16.0))"


def test_disentanglement_objectives_need_factors(small):
    mnist_like = data.ImageData("digits", small.train_x, small.train_y, small.val_x, small.val_y)  # no factors
    with pytest.raises(
        ConfigError,
        match=r"^objectives=\[distortion,mig\]: mig need a dataset with factors "
        r"\(dataset=sprites or dataset=dsprites\); digits has none$",
    ):
        check_factor_objectives(compose_config(["objectives=[distortion,mig]"]), mnist_like)
    with pytest.raises(ConfigError, match=r"^eval.disentanglement=null: objective sap needs its settings block$"):
        check_factor_objectives(compose_config(["objectives=[sap]", "eval.disentanglement=null"]), small)
    check_factor_objectives(compose_config(["objectives=[mig]"]), small)
    check_factor_objectives(compose_config(["objectives=[distortion]"]), mnist_like)


# --- posterior means of the factor grid ------------------------------------------------------------------------------


class MeanPixels(torch.nn.Module):
    """A stand-in encoder: mu = (mean pixel, mean row of the on-pixels), logvar = 0. (B, 1, 64, 64) -> (B, 2) twice."""

    latent_dim = 2

    def encode(self, x):
        rows = torch.arange(64.0).view(1, 64, 1)
        on = x[:, 0].sum(dim=(1, 2))
        mu = torch.stack([x.mean(dim=(1, 2, 3)), (x[:, 0] * rows).sum(dim=(1, 2)) / on], dim=1)
        return mu, torch.zeros_like(mu)


def test_represent_encodes_the_images_of_the_classes_in_batches(small):
    model = MeanPixels()
    classes = np.array([[0, 0, 0, 0, 0], [2, 5, 3, 3, 3], [1, 2, 1, 0, 2]])
    got = representation(model, small, [0, 1, 2, 3, 4], batch_size=2)(classes)
    want = model.encode(data.as_float(small.images_for(torch.as_tensor(classes))))[0].numpy()
    assert got.shape == (3, 2) and got.dtype == np.float32 and np.allclose(got, want)
    assert got[1, 0] > got[0, 0]  # scale 5 covers more pixels than scale 0
    # a factor left out (here posX) is held at class 0
    held = representation(model, small, [0, 1, 2, 4], batch_size=8)(classes[:, [0, 1, 2, 4]])
    assert np.allclose(
        held,
        model.encode(
            data.as_float(small.images_for(torch.tensor([[0, 0, 0, 0, 0], [2, 5, 3, 0, 3], [1, 2, 1, 0, 2]])))
        )[0].numpy(),
    )


# --- traversal labels ------------------------------------------------------------------------------------------------


def test_labels_pick_the_factor_a_dim_shares_most_entropy_with():
    names = ("shape", "posX")
    entropy = np.array([np.log(3), np.log(32)])  # nats: posX holds more information than shape
    mi = np.array(
        [
            [1.0, 1.2],  # z0: 91% of shape's entropy, 35% of posX's -> shape, though its raw MI is less
            [0.1, 3.0],  # z1: posX, 87%
            [0.01, 0.02],
        ]
    )  # z2: under 5% of both -> no factor
    best, share = dominant_factors(mi, entropy)
    assert best.tolist() == [0, 1, 0] and share[0] == pytest.approx(1.0 / np.log(3))
    labels = traversal_labels(mi, entropy, names, dims=[1, 0, 2], kl_per_dim=[0.5, 2.25, 0.0])
    assert labels == [
        "z1: posX (87% of H)\nKL 2.25 nats",
        "z0: shape (91% of H)\nKL 0.50 nats",
        "z2: no factor\nKL 0.00 nats",
    ]
    assert traversal_labels(mi, entropy, names, dims=[0]) == ["z0: shape (91% of H)"]


# --- the analysis of a sweep with MIG --------------------------------------------------------------------------------


def _fake_sweep(root: Path, with_scores: bool) -> Path:
    """Three completed runs at beta 1, 4, 16 (latent_dim 10), the scores rising with beta when `with_scores`."""
    for i, beta in enumerate((1.0, 4.0, 16.0)):
        run = root / str(i)
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"beta": beta, "latent_dim": 10}))
        metrics = {"status": "completed", "distortion": 30.0 + 5 * i, "rate": 20.0 - 6 * i}
        if with_scores:
            metrics |= {name: 0.1 + 0.2 * i for name in DISENTANGLEMENT}
        (run / "metrics.json").write_text(json.dumps(metrics))
    return root


def test_a_sweep_with_mig_gets_its_figure_and_sized_markers(tmp_path):
    df = load_sweep(_fake_sweep(tmp_path / "sweep", with_scores=True))
    assert df["mig"].tolist() == pytest.approx([0.1, 0.3, 0.5]) and df["pareto"].all()
    paths = save_figures(df, tmp_path / "out")
    assert "disentanglement_vs_beta" in FIGURES and paths["disentanglement_vs_beta"].stat().st_size > 10_000
    fig = plot_disentanglement_vs_beta(df)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_ylabel() for ax in axes] == [f"{name} [fraction]" for name in DISENTANGLEMENT]
    assert axes[2].lines[0].get_ydata().tolist() == pytest.approx([0.1, 0.3, 0.5])
    sizes = plot_rate_distortion(df).axes[0].collections[0].get_sizes()
    assert sizes.tolist() == pytest.approx([45.0, 95.0, 145.0])  # area 20 + 250 * MIG
    plain = load_sweep(_fake_sweep(tmp_path / "plain", with_scores=False))
    assert plot_disentanglement_vs_beta(plain) is None
    assert plot_rate_distortion(plain).axes[0].collections[0].get_sizes().tolist() == [45.0]


# --- through the real command line -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_job_on_sprites_writes_the_scores(tmp_path):
    out = tmp_path / "run"
    done = cli(
        ["model=locatello", "latent_dim=4", *TINY, f"data_dir={tmp_path / 'data'}", f"hydra.run.dir={out}"],
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    for name in DISENTANGLEMENT:
        assert 0.0 <= metrics[name] <= 1.0, name
        assert metrics["units"][name].startswith("fraction in [0, 1]: ")
    assert metrics["disentanglement_seconds"] > 0
    assert (out / "traversals.png").is_file() and (out / "traversals_factors.png").stat().st_size > 5_000
    plain = cli(["dataset=digits", "debug=tiny", "eval.iwae_k=0", f"hydra.run.dir={tmp_path / 'digits'}"], cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert not set(DISENTANGLEMENT) & set(json.loads((tmp_path / "digits" / "metrics.json").read_text()))


@pytest.mark.slow
def test_a_two_trial_sweep_maximises_mig(tmp_path):
    url = f"sqlite:///{tmp_path}/study.db"
    done = cli(
        [
            "--multirun",
            "sweep=disentangle",
            *TINY,
            "eval.pictures=false",
            "latent_dim=4",
            f"data_dir={tmp_path / 'data'}",
            f"hydra.sweep.dir={tmp_path / 's'}",
            f"hydra.sweeper.storage={url}",
            "hydra.sweeper.n_trials=2",
        ],
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (name,) = [s.study_name for s in optuna.get_all_study_summaries(url)]
    study = optuna.load_study(study_name=name, storage=url)
    assert study.directions == [optuna.study.StudyDirection.MINIMIZE, optuna.study.StudyDirection.MAXIMIZE]
    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(trials) == 2
    for t in trials:
        metrics = json.loads((tmp_path / t.user_attrs["metrics"]["run_dir"] / "metrics.json").read_text())
        assert t.values == [metrics["distortion"], metrics["mig"]] and 1.0 <= t.params["beta"] <= 16.0
    assert OmegaConf.load(tmp_path / "s" / "0" / ".hydra" / "config.yaml").objectives == ["distortion", "mig"]
