"""The two plain PyTorch training loops that vae_sweep's `train_epoch` is measured against.

- `dataloader_epoch`: the loop of the classic VAE examples (pytorch/examples `vae/main.py`): a torchvision
  MNIST-style dataset that makes a PIL image from a uint8 array and applies `transforms.ToTensor()` per sample,
  a `DataLoader` with batch 128 and shuffle=True, and `loss.item()` summed every step.
- `in_memory_epoch`: the least a loop can do: one float tensor already in [0, 1] on the device, batches by
  index from a permutation, no checks and no bookkeeping. The upper bound for any loop over the same model.

Both use the same loss math as vae_sweep's Bernoulli `loss=beta`: the binary cross-entropy of the decoder logits
summed over pixels, plus beta * KL(q(z|x) || N(0, I)) summed over latent dims, each averaged over the batch
(nats per example).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms


class MNISTStyle(Dataset):
    """What `torchvision.datasets.MNIST.__getitem__` does: uint8 (N, H, W) -> PIL image -> transform, per sample."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor) -> None:
        self.data, self.targets = images, targets  # (N, H, W) uint8, (N,) int64
        self.transform = transforms.ToTensor()  # PIL uint8 (H, W) -> float (1, H, W) in [0, 1]

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = Image.fromarray(self.data[i].numpy(), mode="L")
        return self.transform(img), int(self.targets[i])


def mnist_loader(train_x: torch.Tensor, train_y: torch.Tensor, batch_size: int, cuda: bool) -> DataLoader:
    """The classic example's loader; on CUDA with its `num_workers=1, pin_memory=True`. drop_last=True so that
    it sees the same full batches as vae_sweep's loop (which drops the last partial batch for BatchNorm)."""
    dataset = MNISTStyle(train_x.cpu().squeeze(1), train_y.cpu())  # (N, 1, 28, 28) -> (N, 28, 28)
    kwargs = {"num_workers": 1, "pin_memory": True} if cuda else {}
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, **kwargs)


def vae_loss(
    logits: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, beta: float
) -> torch.Tensor:
    """BCE summed over pixels + beta * KL summed over latents, averaged over the batch: nats per example.
    KL from Kingma & Welling 2014, Appendix B: -1/2 sum(1 + log sigma^2 - mu^2 - sigma^2)."""
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return (bce + beta * kld) / len(x)


def dataloader_epoch(model, optimizer, loader: DataLoader, beta: float, device: torch.device) -> int:
    """One epoch the pytorch/examples way. Returns the number of examples trained on."""
    model.train()
    train_loss, n = 0.0, 0
    for x, _ in loader:
        x = x.to(device)  # (B, 1, 28, 28) float in [0, 1]
        optimizer.zero_grad()
        logits, mu, logvar = model(x)
        loss = vae_loss(logits, x, mu, logvar, beta)
        loss.backward()
        train_loss += loss.item()
        optimizer.step()
        n += len(x)
    return n


def in_memory_epoch(
    model,
    optimizer,
    x_all: torch.Tensor,
    batch_size: int,
    beta: float,
    gen: torch.Generator,
    autocast_dtype: torch.dtype | None = None,
) -> int:
    """One epoch over `x_all` (N, C, H, W) float in [0, 1], already on the device. Returns the examples trained on.
    `autocast_dtype` (e.g. torch.bfloat16) runs forward and loss under autocast, for the --extras comparison."""
    model.train()
    order = torch.randperm(len(x_all), generator=gen).to(x_all.device)
    n_batches = len(x_all) // batch_size
    for b in range(n_batches):
        x = x_all[order[b * batch_size : (b + 1) * batch_size]]
        with torch.autocast(x.device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext():
            logits, mu, logvar = model(x)
            loss = vae_loss(logits.float(), x, mu.float(), logvar.float(), beta)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return n_batches * batch_size
