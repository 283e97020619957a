"""What the IWAE bound costs at large k: seconds and peak memory of `evaluate.iwae_nll` on the 500 validation digits
of mnist_5k, for model=mlp and model=conv (untrained: the cost does not depend on the weights), and the
extrapolation to 10,000 test images (linear in images and in k: every draw is one decoder pass).

    python benchmarks/iwae_cost.py                 # k = 5,000 (minutes on a CPU)
    python benchmarks/iwae_cost.py --k 200 --models mlp

Peak memory: the process's peak resident set size growth during the call on a CPU (ru_maxrss), or
torch.cuda.max_memory_allocated on a GPU.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vae_sweep import data as datasets  # noqa: E402
from vae_sweep.evaluate import iwae_nll  # noqa: E402
from vae_sweep.hydra_api import compose  # noqa: E402
from vae_sweep.train import build  # noqa: E402

CONF = Path(__file__).resolve().parents[1] / "conf"


def measure(model: str, k: int, device: torch.device, extra: list[str]) -> dict:
    cfg = compose(CONF, "config", [f"model={model}", *extra])
    data = datasets.load(cfg.dataset, device)
    torch.manual_seed(0)
    parts = build(cfg, data.shape, device)
    x = data.val_x
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    nll = iwae_nll(parts.model, parts.likelihood, x, k)  # the job's call: batches of 100, 3,200 images at a time
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        peak_mib = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    seconds = time.perf_counter() - start
    return {"model": model, "k": k, "images": len(x), "seconds": seconds, "peak_mib": peak_mib, "nll": nll}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=5000)
    parser.add_argument("--models", default="mlp,conv")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("overrides", nargs="*", help="more config overrides, e.g. prior=vamp")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"### IWAE bound at k = {args.k} on {device} ({torch.get_num_threads()} threads)\n")
    print("| model | images | seconds | peak memory growth (MiB) | 10,000 images (extrapolated, s) | bound (nats) |")
    print("|---|---|---|---|---|---|")
    for model in args.models.split(","):
        r = measure(model, args.k, device, args.overrides)
        scaled = r["seconds"] * 10_000 / r["images"]
        print(f"| {model} | {r['images']} | {r['seconds']:.1f} | {r['peak_mib']:.0f} | {scaled:.0f} | {r['nll']:.2f} |")


if __name__ == "__main__":
    main()
