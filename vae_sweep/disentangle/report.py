"""The disentanglement metrics of a trained model on a dataset with factors (sprites, dsprites), as a job writes them.

`represent(classes (N, K) int) -> mu (N, L)`: the images of those factor classes (`ImageData.images_for`, from train
and validation alike), encoded in eval mode to their posterior means. `vae_sweep.disentangle.scores.evaluate` samples
factor classes from the dataset's grid as each metric prescribes and scores them: the fractions in [0, 1] of the
registry's DISENTANGLEMENT (`vae_sweep.registry`), with `disentanglement_seconds` their wall time. Factors with one
class (a stride that keeps one shape, say) are held at class 0 and left out: their entropy is 0.

Settings: `eval.disentanglement` (conf/config.yaml): `samples` training points of MIG, DCI and SAP (one image each),
`batch_points` training points of β-VAE and FactorVAE (a batch of `batch_size` images each: the cost), evaluation and
test sets half as many (disentanglement_lib: 10,000 and 5,000 of each), `dci_model`, `seed`. A job on a dataset
without factors, or with the block null, writes none of them.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from vae_sweep.data import ImageData, as_float
from vae_sweep.evaluate import eval_mode
from vae_sweep.models import VAE
from vae_sweep.registry import DISENTANGLEMENT

log = logging.getLogger(__name__)


def sample_counts(settings: DictConfig) -> dict[str, int]:
    """`eval.disentanglement` -> `disentanglement.SampleCounts` keywords: `samples` training points for MIG, DCI and
    SAP and points for FactorVAE's variances, `batch_points` training points for β-VAE and FactorVAE (each a batch of
    `batch_size` factor vectors), and half as many evaluation/test points as training points."""
    n, b = int(settings.samples), int(settings.batch_points)
    return {
        "batch_size": int(settings.batch_size),
        "factor_vae_variance": n,
        "mig": n,
        "dci_train": n,
        "dci_test": n // 2,
        "sap_train": n,
        "sap_test": n // 2,
        "beta_vae_train": b,
        "beta_vae_eval": b // 2,
        "factor_vae_train": b,
        "factor_vae_eval": b // 2,
    }


def representation(model: VAE, data: ImageData, varying: list[int], batch_size: int):
    """`represent(classes (N, K') int numpy, K' = len(varying)) -> mu (N, L) float numpy`: the other factors at class
    0, the images through the encoder `batch_size` at a time. Call it inside `eval_mode(model)`."""
    k = len(data.factors.sizes)
    device = data.train_x.device

    def represent(classes: np.ndarray) -> np.ndarray:
        full = torch.zeros(len(classes), k, dtype=torch.long, device=device)  # (N, K)
        full[:, varying] = torch.as_tensor(classes, dtype=torch.long, device=device)
        mus = [model.encode(as_float(data.images_for(part)))[0] for part in full.split(batch_size)]  # (b, L) each
        return torch.cat(mus).float().cpu().numpy()

    return represent


def disentanglement_metrics(
    model: VAE,
    data: ImageData,
    settings: DictConfig,
    batch_size: int,
    out_dir: Path | None = None,
    kl_per_dim: list[float] | None = None,
) -> dict[str, float]:
    """The scores of DISENTANGLEMENT (fractions in [0, 1]) and `disentanglement_seconds`, on posterior means of the
    whole factor grid. With `out_dir`, also traversals_factors.png (`disentangle.traversals`); kl_per_dim (L,) in nats
    orders and labels its rows. The model's train/eval mode is left as it was."""
    from vae_sweep.disentangle import scores as metrics

    if model.latent_dim < 2:
        log.warning("disentanglement: skipped, MIG needs at least 2 latent dims (latent_dim=%d)", model.latent_dim)
        return {}
    start = time.perf_counter()
    sizes = data.factors.sizes
    varying = [k for k, size in enumerate(sizes) if size > 1]
    with eval_mode(model):
        represent = representation(model, data, varying, batch_size)
        scores = metrics.evaluate(
            represent,
            [sizes[k] for k in varying],
            seed=int(settings.seed),
            dci_model=str(settings.dci_model),
            **sample_counts(settings),
        )
        if out_dir is not None:
            _save_pictures(
                model, data, represent, varying, int(settings.samples), int(settings.seed), out_dir, kl_per_dim
            )
    log.info("disentanglement: %s", "  ".join(f"{k}={v:.3g}" for k, v in scores.items()))
    return {name: scores[name] for name in DISENTANGLEMENT} | {
        "disentanglement_seconds": round(time.perf_counter() - start, 3)
    }


def _save_pictures(model, data, represent, varying, samples, seed, out_dir, kl_per_dim) -> Path:
    """MIG's mutual information (L, K') of `samples` fresh independent points, then traversals_factors.png."""
    from vae_sweep.disentangle import scores as metrics
    from vae_sweep.disentangle.sampling import independent_codes
    from vae_sweep.disentangle.traversals import save_factor_traversals

    sizes = [data.factors.sizes[k] for k in varying]
    codes, classes = independent_codes(represent, sizes, samples, np.random.default_rng(seed))
    info = metrics.mig(codes, classes)
    names = [data.factors.names[k] for k in varying]
    x0 = as_float(data.val_x[:1])  # (1, C, H, W): traversals.png's example too
    return save_factor_traversals(
        model,
        x0,
        info["mutual_info"],
        info["factor_entropy"],
        names,
        Path(out_dir) / "traversals_factors.png",
        kl_per_dim,
    )
