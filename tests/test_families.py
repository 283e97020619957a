"""Priors, posteriors, the IWAE objective and bound, binarization and presets (vae_sweep/families.py).

The maths on small cases: each estimator against its closed form or a brute-force computation, within the standard
error of the Monte Carlo estimate where there is one (4 standard errors: a false alarm about once in 16,000 runs).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from helpers import compose_config
from vae_sweep import data as datasets
from vae_sweep.errors import ConfigError
from vae_sweep.evaluate import iwae_nll, validation_terms
from vae_sweep.families import IAFPosterior, StandardNormal, VampPrior
from vae_sweep.job import run
from vae_sweep.losses import Bernoulli, distortion_and_rate, rate
from vae_sweep.models import mlp_vae
from vae_sweep.stochastic_layers import TwoLayerPosterior, TwoLayerPrior
from vae_sweep.train import TrainState, build, train_epoch

SHAPE = (1, 4, 4)  # 16 pixels: small enough for thousands of draws per test
Z_SIGMAS = 4  # a test passes within this many standard errors
MATHS_FAMILIES = [("standard", "gaussian"), ("vamp", "iaf"), ("two_layer", "two_layer")]


def tiny_model(prior: str = "standard", posterior: str = "gaussian", latent_dim: int = 3, seed: int = 0):
    """An untrained MLP VAE on 4x4 images whose posterior is far from the prior (so the bounds differ)."""
    torch.manual_seed(seed)
    model = mlp_vae(SHAPE, latent_dim, hidden=[8])
    for p in model.parameters():
        nn.init.normal_(p, std=0.5)
    priors = {"vamp": lambda: VampPrior(SHAPE, components=5), "two_layer": lambda: TwoLayerPrior(latent_dim, 2, [8])}
    prior_module = priors.get(prior, StandardNormal)()
    posteriors = {
        "iaf": lambda: IAFPosterior(latent_dim, steps=2, hidden=8),
        "two_layer": lambda: TwoLayerPosterior(latent_dim, 2, [8]),
    }
    posterior_module = posteriors[posterior]() if posterior in posteriors else None
    if posterior_module is not None:
        for p in posterior_module.parameters():
            nn.init.normal_(p, std=0.5)
    return model.use(prior_module, posterior_module or model.posterior).eval()


def images(n: int = 6, seed: int = 1) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, *SHAPE), 0.3), generator=torch.Generator().manual_seed(seed))


def mean_and_se(values: torch.Tensor) -> tuple[float, float]:
    """The mean of independent draws and its standard error."""
    return values.mean().item(), (values.std() / math.sqrt(len(values))).item()


# --- estimators against closed forms ------------------------------------------------------------------------------


def test_the_monte_carlo_rate_with_the_standard_prior_agrees_with_the_closed_form_kl():
    model, x = tiny_model(), images()
    with torch.no_grad():
        mc = distortion_and_rate(model, Bernoulli(), x, samples=4000).rate  # (4000, B): log q - log p per draw
        mu, logvar = model.encode(x)
    kl = rate(mu, logvar)  # (B,)
    for b in range(len(x)):
        mean, se = mean_and_se(mc[:, b])
        assert abs(mean - kl[b].item()) < Z_SIGMAS * se, (b, mean, kl[b].item(), se)
    assert kl.min() > 1.0  # the posterior is far from the prior: the check is not a trivial 0 == 0


@pytest.mark.parametrize("family", MATHS_FAMILIES, ids=["closed-form", "vamp-iaf", "two-layer"])
def test_the_iwae_bound_with_k_1_is_the_negative_elbo_in_expectation(family):
    """iwae_nll(k=1) (evaluate.py's own log weights) against D + R as training computes it (the closed-form KL for
    the standard pair, the one-draw Monte Carlo rate otherwise), each averaged over repeated draws."""
    model, x = tiny_model(*family), images(n=50)
    torch.manual_seed(0)
    with torch.no_grad():
        bound = torch.tensor([iwae_nll(model, Bernoulli(), x, k=1, batch_size=50) for _ in range(300)])
        elbo = torch.tensor([(lambda t: (t.distortion + t.rate).mean().item())(
            distortion_and_rate(model, Bernoulli(), x)) for _ in range(300)])  # fmt: skip
    (m1, se1), (m2, se2) = mean_and_se(bound), mean_and_se(elbo)
    assert abs(m1 - m2) < Z_SIGMAS * math.hypot(se1, se2), (m1, m2, se1, se2)


@pytest.mark.parametrize("family", MATHS_FAMILIES, ids=["closed-form", "vamp-iaf", "two-layer"])
def test_the_iwae_bound_does_not_increase_with_k(family):
    """E[-log 1/k sum w] falls with k (Burda et al. 2016, Theorem 1): each step down within noise, and k = 64 well
    below k = 1 (a bound that averaged w's logs instead of the w's would stay flat)."""
    model, x = tiny_model(*family), images(n=20)
    torch.manual_seed(0)
    means = {}
    with torch.no_grad():
        for k in (1, 4, 16, 64):
            means[k] = mean_and_se(
                torch.tensor([iwae_nll(model, Bernoulli(), x, k=k, batch_size=20) for _ in range(40)])
            )
    for small, large in ((1, 4), (4, 16), (16, 64)):
        (m_small, se_small), (m_large, se_large) = means[small], means[large]
        assert m_large < m_small + Z_SIGMAS * math.hypot(se_small, se_large), means
    assert means[64][0] < means[1][0] - Z_SIGMAS * math.hypot(means[1][1], means[64][1]), means


def test_the_vampprior_density_is_the_mixture_of_the_encoders_gaussians():
    model = tiny_model("vamp")
    prior = model.prior
    z = torch.randn(4, 3, 3)  # (S, B, L)
    with torch.no_grad():
        got = prior.log_prob(z, rows=5)  # in chunks of 5 rows, to test the chunking too
        mu, logvar = model.encode(torch.clamp(prior.pseudo_inputs, 0, 1))  # (K, L)
        per_component = torch.stack(
            [torch.distributions.Normal(mu[k], (0.5 * logvar[k]).exp()).log_prob(z).sum(-1) for k in range(5)]
        )  # (K, S, B)
        want = torch.log(per_component.exp().mean(0))  # log (1/K) sum_k N(z; mu_k, sigma_k^2), without logsumexp
    assert got.shape == (4, 3)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_the_vampprior_leaves_the_encoders_batchnorm_statistics_to_the_data():
    from vae_sweep.models import conv_vae

    torch.manual_seed(0)
    model = conv_vae((1, 12, 12), 3, channels=[4])
    model.use(VampPrior((1, 12, 12), components=6), model.posterior).train()
    norm = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    before = norm.running_mean.clone()
    model.prior.log_prob(torch.randn(5, 3)).sum().backward()
    assert torch.equal(norm.running_mean, before) and norm.training  # unchanged, and back in train mode
    assert model.prior.pseudo_inputs.grad is not None  # the pseudo-inputs still learn through the encoder


def test_the_iaf_log_determinant_is_that_of_its_jacobian():
    torch.manual_seed(0)
    flow = IAFPosterior(latent_dim=5, steps=3, hidden=12).double()
    for p in flow.parameters():
        nn.init.normal_(p, std=0.7)
    z0 = torch.randn(5, dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(lambda v: flow.flow(v[None])[0][0], z0)  # (L, L)
    _, log_det = flow.flow(z0[None])
    sign, log_abs_det = torch.linalg.slogdet(jacobian)
    assert sign != 0
    torch.testing.assert_close(log_det[0], log_abs_det, rtol=1e-10, atol=1e-10)
    first = _first(flow)
    one_step = torch.autograd.functional.jacobian(lambda v: first.flow(v[None])[0][0], z0)
    assert torch.equal(one_step.triu(1), torch.zeros_like(one_step))  # step 1 is autoregressive: dz_i/dz_j = 0, j > i


def _first(flow: IAFPosterior) -> IAFPosterior:
    """The flow cut to its first step (forward order)."""
    one = IAFPosterior(flow.mades[0].m.out_features, steps=1, hidden=flow.mades[0].inner.out_features).double()
    one.mades[0] = flow.mades[0]
    return one


def test_the_iaf_posterior_density_is_the_gaussians_minus_the_log_determinant():
    model = tiny_model(posterior="iaf")
    mu, logvar = model.encode(images(n=2))
    torch.manual_seed(3)
    z, log_q = model.draw(mu, logvar, 5)  # (5, 2, L), (5, 2)
    torch.manual_seed(3)
    z0 = mu + (0.5 * logvar).exp() * torch.randn(5, *mu.shape)
    _, log_det = model.posterior.flow(z0.flatten(0, 1))
    gauss = torch.distributions.Normal(mu, (0.5 * logvar).exp()).log_prob(z0).sum(-1)  # (5, 2)
    torch.testing.assert_close(log_q, gauss - log_det.view(5, 2), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(z, z0)


def test_two_stochastic_layers_densities_are_their_chained_gaussians():
    """log q(z1, z2|x) = log N(z1; mu, sigma²) + log N(z2; q's Gaussian at z1); log p(z1, z2) = log N(z2; 0, I) +
    log N(z1; p's Gaussian at z2): against torch.distributions, and the decoder reads z1 alone."""
    model = tiny_model("two_layer", "two_layer")
    x = images(n=2)
    mu, logvar = model.encode(x)
    z, log_q = model.draw(mu, logvar, 4)  # (4, 2, 3 + 2)
    z1, z2 = z[..., :3], z[..., 3:]
    normal = torch.distributions.Normal
    up_mu, up_logvar = model.posterior.up(z1)
    want_q = normal(mu, (0.5 * logvar).exp()).log_prob(z1).sum(-1) + normal(up_mu, (0.5 * up_logvar).exp()).log_prob(
        z2
    ).sum(-1)
    torch.testing.assert_close(log_q, want_q, rtol=1e-5, atol=1e-5)
    down_mu, down_logvar = model.prior.down(z2)
    want_p = normal(0, 1).log_prob(z2).sum(-1) + normal(down_mu, (0.5 * down_logvar).exp()).log_prob(z1).sum(-1)
    torch.testing.assert_close(model.prior.log_prob(z), want_p, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.decode(z[0]), model.decode(z1[0]))
    assert model.prior.sample(7, 3).shape == (7, 5)


# --- binarization ------------------------------------------------------------------------------------------------


def loaded(binarize: str, seed: int = 0) -> datasets.ImageData:
    datasets.clear_cache()
    cfg = compose_config(["dataset=digits", f"dataset.binarize={binarize}", f"dataset.binarize_seed={seed}"])
    return datasets.load(cfg.dataset, "cpu")


def test_static_binarization_is_the_same_for_the_same_seed():
    a, b, other, grey = loaded("static"), loaded("static"), loaded("static", seed=1), loaded("none")
    for x in (a.train_x, a.val_x):
        assert set(x.unique().tolist()) == {0, 255}
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.val_x, b.val_x)
    assert not torch.equal(a.train_x, other.train_x)
    assert abs(datasets.as_float(a.train_x).mean() - grey.train_x.mean()) < 0.01  # Bernoulli(grey level) per pixel


def test_dynamic_binarization_changes_training_images_every_epoch_and_never_validation_images():
    cfg = compose_config(["dataset=digits", "dataset.binarize=dynamic", "batch_size=16", "max_batches=1"])
    datasets.clear_cache()
    data = datasets.load(cfg.dataset, "cpu")
    torch.manual_seed(0)
    parts = build(cfg, data.shape, torch.device("cpu"))
    seen: list[torch.Tensor] = []
    distortion = parts.likelihood.distortion
    parts.likelihood.distortion = lambda logits, x: seen.append(x.clone()) or distortion(logits, x)
    for _ in range(2):  # two epochs over the same batch (the shuffle restarts from the same seed)
        train_epoch(parts, data, cfg, TrainState(shuffle=torch.Generator().manual_seed(0)))
    first, second = seen
    assert set(first.unique().tolist()) == {0.0, 1.0} and not torch.equal(first, second)
    seen.clear()
    for _ in range(2):
        validation_terms(parts.model, parts.likelihood, data.val_x, True)
    assert torch.equal(seen[0], seen[1]) and torch.equal(seen[0], datasets.as_float(data.val_x))
    assert set(seen[0].unique().tolist()) == {0.0, 1.0}


# --- every prior x posterior x loss x model trains, or is refused in one line ------------------------------------

LOSSES = ["beta", "elbo", "capacity", "ae", "multirate", "iwae"]
FAMILIES = [
    ("standard", "gaussian"),
    ("standard", "iaf"),
    ("vamp", "gaussian"),
    ("vamp", "iaf"),
    ("two_layer", "two_layer"),
]


@pytest.mark.parametrize("model", ["mlp", pytest.param("conv", marks=pytest.mark.slow)])  # conv: 24 x 1-2 s
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("family", FAMILIES, ids=["-".join(f) for f in FAMILIES])
def test_every_combination_trains_or_is_refused_in_one_line(model, loss, family):
    prior, posterior = family
    cfg = compose_config(
        [f"model={model}", f"loss={loss}", f"prior={prior}", f"posterior={posterior}", "batch_size=8", "max_batches=1"]
        + [
            "latent_dim=3",
            "loss.k=2" if loss == "iwae" else "beta=1",
            "prior.components=4" if prior == "vamp" else "seed=0",
        ]
    )
    data = datasets.load(cfg.dataset, "cpu")
    default = family == ("standard", "gaussian")
    if loss in ("ae", "multirate") and not default:
        with pytest.raises(ConfigError) as e:
            build(cfg, data.shape, torch.device("cpu"))
        assert str(e.value).startswith(f"loss={loss} with ") and "\n" not in str(e.value)
        return
    parts = build(cfg, data.shape, torch.device("cpu"))
    terms = train_epoch(parts, data, cfg, TrainState(shuffle=torch.Generator().manual_seed(0)))
    assert math.isfinite(terms["loss"])
    val = validation_terms(parts.model, parts.likelihood, data.val_x[:16], parts.loss.stochastic)
    assert math.isfinite(val["distortion"]) and math.isfinite(val["rate"])
    assert (val["kl_per_dim"] is None) == (not default and loss != "ae")


# --- presets -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("experiment", ["vae_pythae", "iwae_burda", "vamp_tomczak"])
def test_each_preset_composes_and_trains_a_few_steps_offline(experiment, tmp_path):
    cfg = compose_config([f"experiment={experiment}", "debug=tiny", "eval.pictures=false", "progress=false"])
    assert cfg.eval.iwae_k == 4 and cfg.epochs == 1  # debug=tiny wins over the preset
    assert cfg.dataset._target_ == "vae_sweep.data.mnist_5k" and cfg.dataset.binarize in ("static", "dynamic")
    run(cfg, tmp_path)
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["status"] == "completed" and m["steps"] == 3 and m["binarize"] == cfg.dataset.binarize
    assert m["rate_estimator"] == (
        "closed_form" if experiment != "vamp_tomczak" else "monte_carlo (1 sample per example)"
    )
    assert math.isfinite(m["iwae_nll"])


# --- what was there before: studies and checkpoints ---------------------------------------------------------------


def test_a_study_records_the_new_groups_only_where_they_differ_from_before():
    """A study made before prior and posterior existed recorded neither; the default families record neither, so
    that study goes on, while another family is another experiment."""
    from omegaconf import OmegaConf

    from vae_sweep.sweep.study import experiment

    def settings(**choices):
        cfg = OmegaConf.create({"objectives": ["distortion"], "hydra": {"runtime": {"choices": choices}}})
        return experiment(cfg, [])[0]

    before = settings(model="mlp", loss="beta")
    assert settings(model="mlp", loss="beta", prior="standard", posterior="gaussian") == before
    assert settings(model="mlp", loss="beta", prior="vamp", posterior="gaussian") == before | {"prior": "vamp"}


def test_a_checkpoint_is_refused_when_its_prior_differs_and_read_by_key_when_settings_are_new(tmp_path):
    from vae_sweep.checkpoint import check_same_settings

    saved = {"latent_dim": 2, "model": {"hidden": [16]}, "dataset": {"split_seed": 0, "val_size": 297}}
    now = {
        "latent_dim": 2,
        "model": {"hidden": [16], "activation": "relu"},
        "prior": {"_target_": "vae_sweep.families.StandardNormal"},
        "posterior": {"_target_": "vae_sweep.families.GaussianPosterior"},
        "dataset": {"binarize": "none", "binarize_seed": 0, "split_seed": 0, "val_size": 297},
    }
    check_same_settings("old", saved, now)  # new settings at their defaults: not paired with their neighbours
    vamp = now | {"prior": {"_target_": "vae_sweep.families.VampPrior", "components": 500}}
    with pytest.raises(
        ConfigError, match=r"^resume=old: the checkpoint has prior._target_=vae_sweep.families.Standard"
    ):
        check_same_settings("old", saved, vamp)
    with pytest.raises(ConfigError, match="dataset.binarize=none, this run asks for dataset.binarize=dynamic"):
        check_same_settings("old", saved, now | {"dataset": now["dataset"] | {"binarize": "dynamic"}})
