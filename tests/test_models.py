"""Every model with every image shape it accepts: shapes in and out; and a clear refusal of the rest."""

from __future__ import annotations

import pytest
import torch

from helpers import compose_config
from vae_sweep.errors import ConfigError
from vae_sweep.hydra_api import instantiate_group

SHAPES = {
    "mnist_5k": (1, 28, 28),
    "mnist": (1, 28, 28),
    "fashion_mnist": (1, 28, 28),
    "digits": (1, 8, 8),
    "cifar10": (3, 32, 32),
    "celeba": (3, 64, 64),
}
ACCEPTS = {"mlp": set(SHAPES), "conv": set(SHAPES) - {"digits"}, "conv64": {"celeba"}}


@pytest.mark.parametrize("model", sorted(ACCEPTS))
@pytest.mark.parametrize("dataset", sorted(SHAPES))
def test_model_with_dataset(model, dataset):
    cfg = compose_config([f"model={model}", "latent_dim=6"])
    shape = SHAPES[dataset]
    if dataset not in ACCEPTS[model]:
        with pytest.raises(ConfigError, match=rf"model={model} needs images larger than"):
            instantiate_group(cfg.model, "model", input_shape=shape)
        return
    net = instantiate_group(cfg.model, "model", input_shape=shape)
    x = torch.rand(5, *shape)
    logits, mu, logvar = net(x)  # (B, C, H, W), (B, L), (B, L)
    assert logits.shape == x.shape and mu.shape == logvar.shape == (5, 6)
    assert net.decode(torch.randn(3, 6)).shape == (3, *shape)
    torch.testing.assert_close(net(x, sample=False)[0], net.decode(mu))  # deterministic path decodes the mean


@pytest.mark.parametrize("split", [False, True])
def test_mlp_heads_and_sizes(split):
    cfg = compose_config(["model=mlp", f"model.split_heads={split}", "model.hidden=[256,128]", "latent_dim=3"])
    net = instantiate_group(cfg.model, "model", input_shape=(1, 28, 28))
    widths = [m.out_features for m in net.encoder.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [256, 128]
    assert net(torch.rand(2, 1, 28, 28))[1].shape == (2, 3)


def test_classic_mlp_is_784_400_20():
    net = instantiate_group(compose_config().model, "model", input_shape=(1, 28, 28))
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 400), (400, 40), (20, 400), (400, 784)]


def test_conv_decoder_mirrors_the_encoder():
    net = instantiate_group(compose_config(["model=conv"]).model, "model", input_shape=(1, 28, 28))
    convs = [m for m in net.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride) for c in convs] == [
        (1, 16, (2, 2)),
        (16, 32, (2, 2)),
        (32, 32, (2, 2)),
    ]
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.decoder.modules())


# 64x64 factor data (dataset=sprites, dsprites) and the disentanglement_lib net, which takes only 64x64 images
FACTOR_SHAPES = {"sprites": (1, 64, 64), "dsprites": (1, 64, 64)}


@pytest.mark.parametrize("model", ["mlp", "conv", "conv64", "locatello"])
@pytest.mark.parametrize("dataset", sorted(SHAPES | FACTOR_SHAPES))
def test_factor_shapes_and_the_locatello_net(model, dataset):
    shape = (SHAPES | FACTOR_SHAPES)[dataset]
    cfg = compose_config([f"model={model}", "latent_dim=10"])
    if model == "locatello" and shape[1:] != (64, 64):
        with pytest.raises(
            ConfigError, match=rf"^model=locatello needs 64x64 images .* gives {'x'.join(map(str, shape))} "
        ):
            instantiate_group(cfg.model, "model", input_shape=shape)
        return
    if model != "locatello" and dataset not in FACTOR_SHAPES:
        return  # covered by test_model_with_dataset
    net = instantiate_group(cfg.model, "model", input_shape=shape)
    logits, mu, logvar = net(torch.rand(2, *shape))  # (B, C, H, W), (B, L), (B, L)
    assert logits.shape == (2, *shape) and mu.shape == logvar.shape == (2, 10)
