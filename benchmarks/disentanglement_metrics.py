"""How long does each disentanglement metric take on 10,000 codes, and do histogram trees give DCI's scores?

Part 1 runs `vae_sweep.disentangle.scores.evaluate` with disentanglement_lib's default sample counts on dSprites' factor
grid (3, 6, 40, 32, 32) for a perfect code (the 5 factor classes plus 5 N(0, 1) dims) and a random N(0, 1) code of
10 dims, and prints each metric's value and seconds. Part 2 fits DCI's per-factor classifiers on 10,000 training and
5,000 test codes with each tree model (`gbt`: disentanglement_lib's sklearn GradientBoostingClassifier; `hist`:
HistGradientBoostingClassifier) for the perfect code, the random code and a partly entangled one (the perfect code
with posX and posY rotated by 45 degrees), and prints D, C, I and seconds. Wall seconds depend on the machine's load;
CPU seconds (this process, all threads) less so. Figures only, no assertions.

    python benchmarks/disentanglement_metrics.py                  # both parts, both DCI models (GBT: minutes)
    python benchmarks/disentanglement_metrics.py --models hist    # skip the slow GradientBoostingClassifier
    python benchmarks/disentanglement_metrics.py --threads 2      # OpenMP threads for the histogram trees
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from threadpoolctl import threadpool_limits

from vae_sweep.disentangle import scores as dis
from vae_sweep.disentangle.sampling import sample_factors

DSPRITES = (3, 6, 40, 32, 32)
ROTATION = np.array([[1.0, 1.0], [1.0, -1.0]]) / math.sqrt(2)


def perfect(factors: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(len(factors))
    return np.concatenate([factors, rng.normal(size=factors.shape)], axis=1).astype(float)  # (N, 10)


def random_code(factors: np.ndarray) -> np.ndarray:
    return np.random.default_rng(len(factors) + 1).normal(size=(len(factors), 10))


def entangled(factors: np.ndarray) -> np.ndarray:
    z = perfect(factors)
    z[:, 3:5] = z[:, 3:5] @ ROTATION  # posX and posY each spread over two dims
    return z


CODES = {"perfect": perfect, "random": random_code, "entangled": entangled}


def metric_times() -> None:
    print("Part 1: every metric, disentanglement_lib's sample counts, DCI with the default (hist) trees")
    results = {name: dis.evaluate(CODES[name], DSPRITES) for name in ("perfect", "random")}
    print(f"{'metric':28s} {'perfect':>8s} {'random':>8s} {'s (perfect)':>12s} {'s (random)':>11s}")
    for key in (k for k in dis.DESCRIPTIONS if not k.endswith("_seconds")):
        timing = next(f"{m}_seconds" for m in ("beta_vae", "factor_vae", "mig", "dci", "sap") if key.startswith(m))
        p, r = results["perfect"], results["random"]
        print(f"{key:28s} {p[key]:8.3f} {r[key]:8.3f} {p[timing]:12.2f} {r[timing]:11.2f}")


def dci_table(models: list[str]) -> None:
    print("\nPart 2: DCI, 10,000 training and 5,000 test codes")
    rng = np.random.default_rng(0)
    train, test = sample_factors(DSPRITES, 10_000, rng), sample_factors(DSPRITES, 5_000, rng)
    print(f"{'code':10s} {'model':5s} {'D':>6s} {'C':>6s} {'I test':>7s} {'I train':>7s} {'wall s':>7s} {'cpu s':>7s}")
    for code, represent in CODES.items():
        for model in models:
            wall, cpu = time.perf_counter(), time.process_time()
            r = dis.dci(represent(train), train, represent(test), test, model=model)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            print(
                f"{code:10s} {model:5s} {r['disentanglement']:6.3f} {r['completeness']:6.3f} "
                f"{r['informativeness']:7.3f} {r['informativeness_train']:7.3f} {wall:7.1f} {cpu:7.1f}",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["hist", "gbt"], choices=["hist", "gbt"])
    parser.add_argument("--threads", type=int, default=1, help="OpenMP threads (histogram trees); default 1")
    parser.add_argument("--skip-times", action="store_true", help="only the DCI table")
    args = parser.parse_args()
    with threadpool_limits(args.threads):
        if not args.skip_times:
            metric_times()
        dci_table(args.models)


if __name__ == "__main__":
    main()
