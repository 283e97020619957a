"""`vae-sweep [overrides]` or `python -m vae_sweep [overrides]`: one training job; add `--multirun` for a sweep.

A single job composes no sweep (`sweep: null` in conf/config.yaml); `--multirun` without a `sweep=` option means
`sweep=pareto`, the default Pareto sweep, so the headline command needs no more typing.

Command-line mistakes that Hydra would report over several lines (an unknown group option, an output dir
that cannot be written) are caught first and reported in one.
"""

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from vae_sweep.errors import ConfigError, RunFailed
from vae_sweep.trust import read_environment, trusted_targets


def find_conf_dir() -> Path:
    """The config groups: `vae_sweep/conf/` in an installed wheel (pyproject.toml maps the repo's conf/ there),
    else `conf/` beside the package's folder, as in a checkout or an editable install."""
    here = Path(__file__).resolve().parent
    installed, checkout = here / "conf", here.parent / "conf"
    return installed if (installed / "config.yaml").is_file() else checkout


CONF_DIR = find_conf_dir()


def task(cfg: DictConfig) -> float | tuple[float, ...]:
    """The task function: the sweeper receives what it returns. A mistake found only now (the dataset, the model's
    size, the checkpoint to resume from) ends the job in one line."""
    from vae_sweep.job import run

    try:
        return run(cfg, Path(HydraConfig.get().runtime.output_dir))
    except (ConfigError, RunFailed) as e:
        raise SystemExit(f"error: {e}") from None


def hydra_task():
    """`task` under `hydra.main`, which may build the trusted targets only: vae_sweep's own and those named in
    VAE_SWEEP_TRUSTED_TARGETS, read when the process started (vae_sweep/trust.py)."""
    trusted = list(trusted_targets())
    return hydra.main(config_path=str(CONF_DIR), config_name="config", execution_whitelist=trusted)(task)


DEFAULT_SWEEP = "pareto"


def with_default_sweep(argv: list[str]) -> list[str]:
    """`argv` plus `sweep=pareto` when it asks for a multirun and chooses no sweep option itself."""
    multirun = any(a in ("-m", "--multirun") for a in argv)
    chosen = any(a.lstrip("+").split("=", 1)[0] == "sweep" for a in argv)
    return [*argv, f"sweep={DEFAULT_SWEEP}"] if multirun and not chosen else argv


def versions() -> str:
    """`--version`: vae_sweep's version and those of the libraries it stands on."""
    from importlib.metadata import PackageNotFoundError, version

    import vae_sweep

    def of(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "not installed"

    libraries = ("torch", "hydra-core", "optuna")
    return f"vae_sweep {vae_sweep.__version__} (" + ", ".join(f"{p} {of(p)}" for p in libraries) + ")"


def main() -> None:
    """The `vae-sweep` command (pyproject.toml's [project.scripts]) and `python -m vae_sweep`: the same."""
    from vae_sweep.checks import check_argv

    if "--version" in sys.argv[1:]:
        print(versions())
        return
    try:
        read_environment()  # VAE_SWEEP_TRUSTED_TARGETS, once, before Hydra composes anything
    except ConfigError as e:
        sys.exit(f"error: {e}")

    if not (CONF_DIR / "config.yaml").is_file():
        here = Path(__file__).resolve().parent
        sys.exit(
            f"error: vae_sweep's config: no config.yaml in {here / 'conf'} (installed) or {CONF_DIR} (checkout):"
            " reinstall vae_sweep"
        )
    sys.argv[1:] = with_default_sweep(sys.argv[1:])
    try:
        check_argv(sys.argv[1:], CONF_DIR)
    except ConfigError as e:
        sys.exit(f"error: {e}")
    from vae_sweep.preemption import Preempted

    try:
        hydra_task()()
    except Preempted as e:  # a single job stopped by SIGTERM, SIGUSR2 or Ctrl-C (a sweep says so itself, in one line)
        if e.run_dir is None:  # before training started
            sys.exit(f"interrupted ({e.signal}) before training started: nothing to save; run the command again")
        sys.exit(f"interrupted ({e.signal}): model.pt saved; continue with resume={e.run_dir}")
    except KeyboardInterrupt:  # Ctrl-C before the job's handlers are set, or after they are given back
        sys.exit("interrupted: nothing was saved")


if __name__ == "__main__":
    main()
