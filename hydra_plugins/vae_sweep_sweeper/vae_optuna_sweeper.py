"""Hydra only instantiates sweepers defined under the `hydra_plugins` namespace, and imports every module
there at start-up. So this is a thin shell, like hydra-optuna-sweeper's own: the work is in
`vae_sweep.sweep.sweeper`, imported only when a sweep starts."""

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class VaeOptunaSweeper(Sweeper):
    def __init__(self, **kwargs: Any) -> None:
        from vae_sweep.sweep.sweeper import VaeOptunaSweeperImpl

        self.sweeper = VaeOptunaSweeperImpl(**kwargs)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        return self.sweeper.sweep(arguments)
