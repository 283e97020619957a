"""Each model family's rate-distortion front at one budget, and its training cost against the plain VAE.

For every family (prior x posterior) and seed, one job per beta on mnist_5k (model=mlp, the same epochs for all), as
`sweep=families` runs them; each family's front is the (validation distortion, rate) of its jobs, and its hypervolume
is the area it dominates up to (784 ln 2, 784 ln 2) nats (vae_sweep/curve.py). CPU seconds per epoch are the jobs'
own process CPU time over their epochs, against prior=standard posterior=gaussian.

    python benchmarks/families.py                         # 5 families x 5 betas x 2 seeds, 5 epochs each
    python benchmarks/families.py --smoke                 # 1 epoch, 2 betas, 1 seed: does it run
    python benchmarks/families.py --epochs 20 --seeds 0,1,2

Fronts separate beyond seed noise where a family's hypervolume range over seeds does not overlap another's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hydra import compose, initialize_config_dir  # noqa: E402

from vae_sweep.curve import curve_hypervolume, reference_point  # noqa: E402
from vae_sweep.job import run  # noqa: E402

CONF = Path(__file__).resolve().parents[1] / "conf"
FAMILIES = {
    "standard+gaussian": ["prior=standard", "posterior=gaussian"],
    "standard+iaf": ["prior=standard", "posterior=iaf"],
    "vamp+gaussian": ["prior=vamp", "posterior=gaussian"],
    "vamp+iaf": ["prior=vamp", "posterior=iaf"],
    "two_layer": ["prior=two_layer", "posterior=two_layer"],
}


def job(overrides: list[str]) -> tuple[dict, float]:
    """metrics.json of one in-process job, and its process CPU seconds."""
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose("config", [*overrides, "eval.pictures=false", "progress=false", "eval.iwae_k=0"])
    with tempfile.TemporaryDirectory() as out:
        cpu = time.process_time()
        run(cfg, Path(out))
        cpu = time.process_time() - cpu
        return json.loads((Path(out) / "metrics.json").read_text()), cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--betas", default="0.1,0.3,1,3,10")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--smoke", action="store_true", help="1 epoch of 5 batches, betas 0.3,3, seed 0")
    args = parser.parse_args()
    betas, seeds = args.betas.split(","), [int(s) for s in args.seeds.split(",")]
    budget = [f"epochs={args.epochs}"]
    if args.smoke:
        betas, seeds, budget = ["0.3", "3"], [0], ["epochs=1", "max_batches=5"]
    reference = reference_point((1, 28, 28))
    print(f"### Families on mnist_5k, model=mlp, {' '.join(budget)}, betas {','.join(betas)}, seeds {seeds}\n")
    print("| family | hypervolume per seed (nats²) | CPU s / epoch | x plain | points (D, R) of seed 0 |")
    print("|---|---|---|---|---|")
    plain = None
    for name in args.families.split(","):
        volumes, per_epoch, shown = [], [], ""
        for seed in seeds:
            points = []
            for beta in betas:
                m, cpu = job([*FAMILIES[name], f"beta={beta}", f"seed={seed}", *budget])
                points.append((m["distortion"], m["rate"]))
                per_epoch.append(cpu / max(1, m["epochs"]))
            volumes.append(curve_hypervolume(points, reference))
            shown = shown or " ".join(f"({d:.0f}, {r:.1f})" for d, r in points)
        cost = statistics.median(per_epoch)
        plain = plain or cost
        hv = ", ".join(f"{v:,.0f}" for v in volumes)
        print(f"| {name} | {hv} | {cost:.1f} | {cost / plain:.2f} | {shown} |", flush=True)


if __name__ == "__main__":
    main()
