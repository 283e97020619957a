"""loss=multirate: the β-conditioned model, its loss, and the rate-distortion curve of one trained model."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest
import torch

from helpers import compose_config
from vae_sweep import data as datasets
from vae_sweep.conditioning import Conditioned
from vae_sweep.curve import beta_grid, curve_hypervolume, reference_point, write_curve
from vae_sweep.errors import ConfigError
from vae_sweep.hydra_api import instantiate_group
from vae_sweep.losses import Bernoulli, BetaVAELoss, MultiRateLoss, rate
from vae_sweep.models import VAE

SHAPES = {"mlp": (1, 28, 28), "conv": (1, 28, 28), "conv64": (3, 64, 64)}


def conditioned(model: str = "mlp", kind: str | None = None, overrides: tuple[str, ...] = ()):
    """The real config's model and loss with loss=multirate (its default conditioning unless `kind`), conditioned
    as training builds them: (ConditionedVAE, MultiRateLoss)."""
    kind_override = [f"loss.conditioning={kind}"] if kind else []
    cfg = compose_config([f"model={model}", "loss=multirate", *kind_override, "latent_dim=6", *overrides])
    torch.manual_seed(0)
    loss = instantiate_group(cfg.loss, "loss")
    return loss.condition(instantiate_group(cfg.model, "model", input_shape=SHAPES[model])), loss


@pytest.mark.parametrize(
    "model,kind", [("mlp", "gates"), ("mlp", "film"), ("mlp", "both"), ("conv", "gates"), ("conv64", "both")]
)
def test_outputs_change_with_beta_and_are_identical_for_equal_beta(model, kind):
    net, _ = conditioned(model, kind)
    net.eval()
    x = torch.rand(4, *SHAPES[model])
    beta = torch.tensor([0.05, 0.05, 5.0, 5.0])
    with torch.no_grad():
        logits, mu, _ = net(x, sample=False, beta=beta)  # per example
        low, mu_low, _ = net(x, sample=False, beta=0.05)  # one beta for the batch
        high, _, _ = net(x, sample=False, beta=5.0)
    torch.testing.assert_close(logits[:2], low[:2], rtol=0, atol=1e-6)
    torch.testing.assert_close(logits[2:], high[2:], rtol=0, atol=1e-6)
    torch.testing.assert_close(mu[:2], mu_low[:2], rtol=0, atol=1e-6)
    assert (low - high).abs().max() > 1e-4 and (mu_low - net.encode(x, beta=5.0)[0]).abs().max() > 1e-5


def test_hidden_layers_are_conditioned_and_head_and_output_are_not():
    net, _ = conditioned("mlp", "gates")
    wrapped = [n for n, m in net.named_modules() if isinstance(m, Conditioned)]
    assert wrapped == ["encoder.1.0", "decoder.body.0"]  # 784 -> 400 and 20 -> 400; not the head, not 400 -> 784
    conv, _ = conditioned("conv", "gates")
    assert sum(isinstance(m, Conditioned) for m in conv.encoder.modules()) == 3  # all three convs
    assert sum(isinstance(m, Conditioned) for m in conv.decoder.modules()) == 3  # fc and two of three transposed
    assert not isinstance(conv.decoder.body[-1], Conditioned)


def test_at_fixed_beta_the_loss_is_the_beta_vae_loss():
    torch.manual_seed(0)
    d, r = 100 + 10 * torch.rand(8), 20 * torch.rand(8)  # (B,) nats
    for b in (0.01, 0.3, 1.0, 7.0):
        multi = MultiRateLoss()(d, r, step=0, beta=torch.full((8,), b))
        plain = BetaVAELoss(beta=b)(d, r, step=0)
        for k in ("loss", "distortion", "rate"):
            assert multi[k].item() == pytest.approx(plain[k].item(), rel=1e-6)
    mixed = MultiRateLoss()(d, r, 0, beta=torch.linspace(0.01, 10, 8))
    assert mixed["loss"].item() == pytest.approx((d + torch.linspace(0.01, 10, 8) * r).mean().item(), rel=1e-6)


def test_beta_is_drawn_log_uniformly_within_the_range():
    beta = MultiRateLoss(beta_min=0.01, beta_max=10.0).sample_beta(200_000, generator=torch.Generator().manual_seed(0))
    assert beta.shape == (200_000,) and beta.min() >= 0.01 and beta.max() <= 10.0
    log_beta = beta.log()  # uniform on [ln 0.01, ln 10]: mean ln 0.316, variance (ln 1000)^2 / 12
    assert log_beta.mean().item() == pytest.approx(0.5 * math.log(0.1), abs=0.02)
    assert log_beta.var().item() == pytest.approx(math.log(1000) ** 2 / 12, rel=0.02)


def test_beta_outside_the_trained_range_is_refused():
    net, _ = conditioned("mlp")
    with pytest.raises(ConfigError, match=r"beta=20: outside the range"):
        net.set_beta(20)


def test_state_dict_round_trips_and_a_frozen_model_is_an_ordinary_vae(tmp_path):
    net, _ = conditioned("conv", "both")
    net.set_beta(0.2)
    x = torch.rand(3, 1, 28, 28)
    net(x, beta=torch.tensor([0.02, 0.5, 3.0]))  # a training step's forward moves the BatchNorm statistics
    torch.save(net.state_dict(), tmp_path / "model.pt")
    again, _ = conditioned("conv", "both")
    again.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
    net.eval(), again.eval()
    with torch.no_grad():
        assert again.beta.item() == pytest.approx(0.2)  # the fixed beta travels with the weights
        assert torch.equal(net(x, sample=False)[0], again(x, sample=False)[0])
        assert torch.equal(net(x, sample=False, beta=4.0)[0], again(x, sample=False, beta=4.0)[0])
        plain = again.freeze(4.0)  # gates and FiLM folded into the weights
        assert type(plain) is VAE and not any(isinstance(m, Conditioned) for m in plain.modules())
        torch.testing.assert_close(plain(x, sample=False)[0], net(x, sample=False, beta=4.0)[0], rtol=1e-4, atol=1e-4)
    assert net.beta.item() == pytest.approx(0.2)  # freeze and at_beta leave the fixed beta as it was


def test_hypervolume_against_a_hand_calculation():
    ref = (4.0, 4.0)
    # boxes [1,4]x[3,4], [2,4]x[2,4], [3,4]x[1,4]: 3*1 + 2*1 + 1*1 = 6; (3, 3) is dominated; (5, 0) is outside
    assert curve_hypervolume([(3, 1), (1, 3), (2, 2), (3, 3), (5, 0)], ref) == pytest.approx(6.0)
    assert curve_hypervolume([(1.0, 1.0)], ref) == pytest.approx(9.0)
    assert curve_hypervolume([], ref) == 0.0
    assert reference_point((1, 28, 28)) == pytest.approx((784 * math.log(2), 784 * math.log(2)))


def test_beta_grid_is_log_spaced_with_exact_ends():
    grid = beta_grid(0.01, 10.0, 4)
    assert grid[0] == 0.01 and grid[-1] == 10.0
    assert grid == pytest.approx([0.01, 0.1, 1.0, 10.0])


@pytest.fixture(scope="module")
def trained_curve(tmp_path_factory):
    """A multirate MLP trained 6 epochs' worth of steps on mnist_5k by hand (a beta per example), and its curve
    written. One torch thread: this small model is fastest so, and two threads crawl on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    net, loss = conditioned("mlp", overrides=("latent_dim=8",))
    data = datasets.load(compose_config().dataset, torch.device("cpu"))
    opt, likelihood = torch.optim.Adam(net.parameters(), lr=1e-3), Bernoulli()
    gen = torch.Generator().manual_seed(0)
    for step in range(6 * 35):
        x = datasets.as_float(data.train_x[torch.randint(len(data.train_x), (128,), generator=gen)])
        beta = loss.sample_beta(len(x), generator=gen)  # (B,)
        logits, mu, logvar = net(x, beta=beta)
        terms = loss(likelihood.distortion(logits, x), rate(mu, logvar), step, beta=beta)
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
    out = tmp_path_factory.mktemp("curve")
    torch.manual_seed(0)
    summary = write_curve(net, likelihood, datasets.as_float(data.val_x), beta_grid(0.01, 10.0, 5), out, iwae_k=4)
    torch.set_num_threads(threads)
    return out, summary


def test_curve_trades_distortion_for_rate_along_beta(trained_curve):
    out, summary = trained_curve
    rows = list(csv.DictReader(io.StringIO((out / "curve.csv").read_text())))
    beta = [float(r["beta"]) for r in rows]
    d, r = [float(r["distortion_nats"]) for r in rows], [float(r["rate_nats"]) for r in rows]
    assert beta == sorted(beta) and beta[0] == 0.01 and beta[-1] == 10.0
    assert d[0] < d[-1] - 5 and r[0] > r[-1] + 5  # smaller beta: less distortion, more rate (0.5 if beta is ignored)
    assert all(d[i] < d[i + 1] + 2.0 for i in range(len(d) - 1))  # each step, up to 2 nats of noise
    assert all(r[i] > r[i + 1] - 1.0 for i in range(len(r) - 1))
    assert summary["curve_hypervolume"] > 0 and summary["curve_reference"] == pytest.approx(
        reference_point((1, 28, 28))
    )


def test_curve_files_columns_and_units(trained_curve):
    out, _ = trained_curve
    rows = list(csv.DictReader(io.StringIO((out / "curve.csv").read_text())))
    assert list(rows[0]) == [
        "beta",
        "distortion_nats",
        "rate_nats",
        "neg_elbo_nats",
        "mse_per_pixel",
        "iwae_nll_nats",
        "active_units",
    ]
    for row in rows:
        d, r = float(row["distortion_nats"]), float(row["rate_nats"])
        assert float(row["neg_elbo_nats"]) == pytest.approx(d + r)
        assert 0 < d < 784 * math.log(2) and r >= 0 and 0 <= int(row["active_units"]) <= 8
    for name in ("curve.png", "curve_strip.png"):
        assert (out / name).stat().st_size > 1000


def test_a_multirate_run_writes_its_curve_and_is_fixed_at_eval_beta(tmp_path):
    """The command line end to end: loss=multirate trains one model, reports it at eval.beta, writes the curve."""
    from helpers import cli

    res = cli(
        ["debug=tiny", "loss=multirate", "curve.betas=3", "eval.beta=0.1", f"hydra.run.dir={tmp_path}/run"],
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["eval_beta"] == 0.1
    assert metrics["curve_betas"] == pytest.approx([0.01, 0.316227766, 10.0]) and metrics["curve_hypervolume"] > 0
    assert len((run / "curve.csv").read_text().splitlines()) == 1 + 3
    for name in ("curve.png", "curve_strip.png", "reconstructions.png", "traversals.png"):
        assert (run / name).is_file()
    ckpt = torch.load(run / "model.pt", weights_only=True)
    assert ckpt["model"]["beta"].item() == pytest.approx(0.1)  # the checkpoint holds the model at eval.beta
    bad = cli(["loss=multirate", "eval.beta=20", f"hydra.run.dir={tmp_path}/bad"], cwd=tmp_path)
    assert bad.returncode != 0 and "eval.beta=20: must lie in the trained range" in bad.stderr


def test_benchmark_quick_mode_prints_its_tables():
    """benchmarks/multirate.py --quick runs both sections end to end (no figure is asserted: not a test of speed)."""
    import subprocess
    import sys

    from helpers import REPO

    res = subprocess.run(
        [sys.executable, "benchmarks/multirate.py", "--quick"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr[-3000:]
    for title in ("### Conditioning", "### One model vs β sweeps", "### Where the curve (3E) falls short"):
        assert title in res.stdout
    assert sum(line.startswith("| one model, ") for line in res.stdout.splitlines()) == 3
