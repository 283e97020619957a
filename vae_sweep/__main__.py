"""`python -m vae_sweep [overrides]`: one training job; `python -m vae_sweep --multirun`: a sweep.

Command-line mistakes that Hydra would report over several lines (an unknown group option, an output dir
that cannot be written) are caught first and reported in one.
"""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from vae_sweep.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def task(cfg: DictConfig) -> float | tuple[float, ...]:
    """The task function: the sweeper receives what it returns."""
    from vae_sweep.job import run

    return run(cfg, Path(HydraConfig.get().runtime.output_dir))


def main() -> None:
    from vae_sweep.validate import check_argv

    try:
        check_argv(sys.argv[1:], CONF_DIR)
    except ConfigError as e:
        sys.exit(f"error: {e}")
    task()


if __name__ == "__main__":
    main()
