"""Loggers (`logger=tensorboard`, `logger=mlflow`, `logger=csv`, or several: `logger=[tensorboard,mlflow]`): each run's
per-epoch train and validation terms, its hyperparameters, final metrics and pictures, in the tools users already
know. history.csv and metrics.json are written whatever the choice (`csv` names them, and adds nothing).

A logger is a `RunLogger`: the job calls `start` once the run is prepared, `log_epoch` with each history.csv row,
`log_final` with metrics.json's numbers, `log_pictures` with the PNG files the run already wrote (never drawn again)
and `close` with how the run ended. Names carry units: history.csv's `val_distortion` is logged as
`val/distortion_nats` (`metric_name`), a final metric as `final/distortion_nats`, with the epoch as the step.

In a sweep each trial is one run under its study: MLflow's experiment is the study (`pareto[debug=tiny]`) and the
run is named by the trial number; TensorBoard's event files lie in each trial's run dir (`<sweep dir>/<n>/tensorboard`),
so `tensorboard --logdir <sweep dir>` lists the trials, with their hyperparameters in the HPARAMS tab.

A logger's library is imported only when it is chosen; a missing one is refused in one line naming the extra.
Per epoch, TensorBoard's writer queues events for its own thread, and MLflow's logger sends its queue at most every
5 s (FLUSH_SECONDS) and at the end, so a default job spends well under 2 % of its training time logging.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from vae_sweep.errors import ConfigError
from vae_sweep.registry import METRICS, NATS, Unit

log = logging.getLogger(__name__)
# history.csv's loss terms that are no registry metric, with their units (the rest: the registry's, or none)
TERM_UNITS: dict[str, Unit] = {"loss": NATS, "capacity": NATS}
NOT_LOGGED = ("epoch", "step")  # the step axis, and the optimiser step count it stands for
LIBRARIES = {"tensorboard": "tensorboard", "mlflow": "mlflow"}  # logger option -> the module it needs, and its extra


@dataclass
class RunInfo:
    """What a logger knows of the run it logs: where it writes, its hyperparameters, and in a sweep its trial."""

    run_dir: Path
    params: dict = field(default_factory=dict)
    study: str | None = None  # a sweep trial's study name
    trial: int | None = None  # its trial number

    @property
    def name(self) -> str:
        return str(self.trial) if self.trial is not None else self.run_dir.name


class RunLogger(Protocol):
    def start(self, run: RunInfo) -> None: ...
    def log_epoch(self, row: dict) -> None: ...
    def log_final(self, metrics: dict, epoch: int) -> None: ...
    def log_pictures(self, paths: list[Path], epoch: int) -> None: ...
    def close(self, status: str) -> None: ...


def metric_name(column: str) -> str:
    """history.csv's column as a logged metric, unit included: `val_distortion` -> `val/distortion_nats`,
    `train_kl_weight` -> `train/kl_weight`, `lr` -> `lr`, `seconds` -> `train/seconds`."""
    if column == "seconds":
        return "train/seconds"
    split, _, term = column.partition("_")
    if split not in ("train", "val"):
        return column
    unit = TERM_UNITS.get(term) or (METRICS[term].unit if term in METRICS else None)
    return f"{split}/{term}_{unit.slug}" if unit and unit.slug else f"{split}/{term}"


def final_names(metrics: dict) -> dict[str, float]:
    """metrics.json's numbers as logged final metrics (`final/distortion_nats`; kl_per_dim one per dim)."""
    out = {}
    for name, value in metrics.items():
        metric = METRICS.get(name)
        if metric is None or value is None:
            continue
        if metric.per_dim:
            out |= {f"final/kl_dim{i}_{metric.unit.slug}": float(v) for i, v in enumerate(value) if v is not None}
        else:
            out[f"final/{metric.column}"] = float(value)
    return out


def require(option: str) -> None:
    """Refuse a logger whose library is not installed, in one line naming the extra (no import: a spec lookup)."""
    from importlib.util import find_spec

    module = LIBRARIES.get(option)
    if module and find_spec(module) is None:
        raise ConfigError(f"logger={option} needs {module}, which is not installed: pip install 'vae_sweep[{module}]'")


class CSVLogger:
    """logger=csv: history.csv and metrics.json, which every run writes anyway; nothing more."""

    def start(self, run: RunInfo) -> None:
        pass

    def log_epoch(self, row: dict) -> None:
        pass

    def log_final(self, metrics: dict, epoch: int) -> None:
        pass

    def log_pictures(self, paths: list[Path], epoch: int) -> None:
        pass

    def close(self, status: str) -> None:
        pass


class TensorBoardLogger:
    """logger=tensorboard: event files in <run dir>/<save_dir>, written by torch's SummaryWriter."""

    def __init__(self, save_dir: str = "tensorboard") -> None:
        require("tensorboard")
        self.save_dir, self.writer, self.run = save_dir, None, None

    def start(self, run: RunInfo) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        self.run = run
        self.writer = SummaryWriter(log_dir=str(run.run_dir / self.save_dir))
        shown = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in run.params.items()}
        metrics = {f"final/{m.column}": 0.0 for m in METRICS.values() if not m.per_dim}  # the columns HPARAMS shows
        experiment, session_start, _ = hparams(shown, metrics)
        self.writer.file_writer.add_summary(experiment)
        self.writer.file_writer.add_summary(session_start)

    def log_epoch(self, row: dict) -> None:
        for column, value in row.items():
            if column not in NOT_LOGGED:
                self.writer.add_scalar(metric_name(column), value, int(row["epoch"]))

    def log_final(self, metrics: dict, epoch: int) -> None:
        for name, value in final_names(metrics).items():
            self.writer.add_scalar(name, value, epoch)

    def log_pictures(self, paths: list[Path], epoch: int) -> None:
        import numpy as np
        from PIL import Image

        for path in paths:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))  # (H, W, 3) uint8
            self.writer.add_image(f"pictures/{path.stem}", pixels, epoch, dataformats="HWC")

    def close(self, status: str) -> None:
        """Close the event file; a completed run's HPARAMS session is marked ended (others stay open-ended)."""
        if self.writer is None:
            return
        if status == "completed":
            from torch.utils.tensorboard.summary import hparams

            self.writer.file_writer.add_summary(hparams({}, {})[2])
        self.writer.add_text("status", status)
        self.writer.close()


class MLflowLogger:
    """logger=mlflow: one MLflow run through mlflow's client; the experiment is the sweep's study, or `experiment`."""

    FLUSH_SECONDS = 5.0  # epochs are sent at most this often (a request costs ~10 ms), and at the end

    def __init__(self, tracking_uri: str | None = None, experiment: str = "vae_sweep") -> None:
        require("mlflow")
        self.tracking_uri, self.experiment, self.client, self.run_id = tracking_uri, experiment, None, None
        self.pending, self.sent = [], 0.0

    def start(self, run: RunInfo) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(self.tracking_uri)  # None: MLFLOW_TRACKING_URI, else MLflow's default
        experiment = self.experiment_id(run.study or self.experiment)
        tags = {"run_dir": str(run.run_dir.resolve())} | (
            {"study": run.study, "trial": str(run.trial)} if run.study else {}
        )
        self.run_id = self.client.create_run(experiment, run_name=run.name, tags=tags).info.run_id
        params = [Param(k, str(v)) for k, v in run.params.items()]
        self.client.log_batch(self.run_id, params=params)

    def experiment_id(self, name: str) -> str:
        """The experiment `name`'s id, created if new (by another trial at the same time, too)."""
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name)
        except MlflowException:  # another trial's process created it meanwhile
            return self.client.get_experiment_by_name(name).experiment_id

    def _log(self, values: Iterable[tuple[str, float]], step: int, flush: bool = True) -> None:
        """Queue `values` at `step`; send the queue when `flush`, or when FLUSH_SECONDS have passed since the last."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.pending += [Metric(k, float(v), now, step) for k, v in values]
        if flush or time.monotonic() - self.sent >= self.FLUSH_SECONDS:
            for i in range(0, len(self.pending), 1000):  # MLflow takes at most 1000 metrics a request
                self.client.log_batch(self.run_id, metrics=self.pending[i : i + 1000])
            self.pending, self.sent = [], time.monotonic()

    def log_epoch(self, row: dict) -> None:
        self._log(((metric_name(k), v) for k, v in row.items() if k not in NOT_LOGGED), int(row["epoch"]), False)

    def log_final(self, metrics: dict, epoch: int) -> None:
        self._log(final_names(metrics).items(), epoch)
        self.client.set_tag(self.run_id, "status", str(metrics.get("status")))

    def log_pictures(self, paths: list[Path], epoch: int) -> None:
        for path in paths:
            self.client.log_artifact(self.run_id, str(path), artifact_path="pictures")

    def close(self, status: str) -> None:
        if self.run_id is not None:
            self._log((), 0)  # what is still queued
            ended = {"completed": "FINISHED", "pruned": "FINISHED", "interrupted": "KILLED"}.get(status, "FAILED")
            self.client.set_terminated(self.run_id, status=ended)


class Loggers:
    """The chosen loggers as one; a logger that fails while logging is warned about once and dropped, so that a
    tracking server going away never fails a run that history.csv records anyway."""

    def __init__(self, loggers: dict[str, RunLogger]) -> None:
        self.loggers = loggers

    def __bool__(self) -> bool:
        return bool(self.loggers)

    def _each(self, method: str, *args) -> None:
        for name, logger in list(self.loggers.items()):
            try:
                getattr(logger, method)(*args)
            except Exception as e:  # noqa: BLE001 - the run goes on without it
                log.warning(
                    "logger=%s: %s failed (%s: %s); it logs no more in this run", name, method, type(e).__name__, e
                )
                del self.loggers[name]

    def start(self, run: RunInfo) -> None:
        self._each("start", run)

    def after_epoch(self, then: Callable[[dict], bool] | None) -> Callable[[dict], bool] | None:
        """`train.fit`'s after-epoch hook: log the row, then ask `then` (the pruning reporter) whether to stop."""
        if not self.loggers:
            return then

        def hook(row: dict) -> bool:
            self._each("log_epoch", row)
            return bool(then(row)) if then is not None else False

        return hook

    def finish(self, metrics: dict, run_dir: Path) -> None:
        """The final metrics, the pictures the run wrote (if any), and close with its status."""
        epoch = int(metrics.get("epochs") or 0)
        self._each("log_final", metrics, epoch)
        if pictures := sorted(Path(run_dir).glob("*.png")):
            self._each("log_pictures", pictures, epoch)
        self.close(str(metrics.get("status")))

    def close(self, status: str) -> None:
        self._each("close", str(status))
        self.loggers = {}


def open_loggers(cfg, run: RunInfo) -> Loggers:
    """The loggers `cfg.logger` chooses (none: an empty `Loggers`), built from their `_target_`s and started."""
    nodes = cfg.get("logger") or {}
    if not nodes:
        return Loggers({})
    from vae_sweep.hydra_api import instantiate_group

    loggers = Loggers({name: instantiate_group(node, f"logger.{name}") for name, node in nodes.items()})
    loggers.start(run)
    return loggers
