"""One training job: check the config, train, evaluate, write the run outputs, return the objective(s).

`run(cfg, out_dir)` is the task function behind `python -m vae_sweep`; a sweep calls it once per trial.
It returns one float, or a tuple of floats when config names several objectives, and knows nothing of Optuna:
a one-objective sweep trial gets its per-epoch reporter from the sweep wing (`sweep.trial.epoch_reporter`),
and a dataset with factors gets its scores from the disentangle wing (`disentangle.report`), each imported only then.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from vae_sweep import data as datasets
from vae_sweep.checkpoint import load_checkpoint, restore, save_checkpoint, saved_epochs
from vae_sweep.checks import check_config, check_factor_objectives, check_precision
from vae_sweep.conditioning import ConditionedVAE
from vae_sweep.config import JOB_GROUPS
from vae_sweep.contracts import check_data
from vae_sweep.curve import beta_grid, write_curve
from vae_sweep.errors import ConfigError, RunFailed
from vae_sweep.evaluate import active_units, iwae_nll, rate_estimator, undefined_per_dim, validation_terms
from vae_sweep.hydra_api import TRUSTED_TARGETS
from vae_sweep.loggers import RunInfo, open_loggers
from vae_sweep.models import count_parameters
from vae_sweep.pictures import save_pictures
from vae_sweep.preemption import Preempted, PreemptedJob, StopRequest, in_worker, stop_on_signals
from vae_sweep.registry import Status, in_units, units_block
from vae_sweep.run_files import rewrite_metrics, write_history, write_metrics
from vae_sweep.runtime import resolve_device, set_threads
from vae_sweep.train import Parts, TrainState, build, fit
from vae_sweep.trust import is_trusted

log = logging.getLogger(__name__)


def in_sweep() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def prepare(cfg: DictConfig) -> tuple[datasets.ImageData, Parts, dict | None, torch.device]:
    """Everything that can fail because of user input, before any training: config values, device,
    dataset, model-vs-image-size and its memory (in `build`), the checkpoint to resume from."""
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else None
    check_config(cfg, choices=choices)
    device = resolve_device(cfg.device)
    check_precision(cfg.precision, device)
    set_threads(cfg.threads)
    data = datasets.load(cfg.dataset, device)
    if not is_trusted(str(cfg.dataset._target_), TRUSTED_TARGETS):  # the user's own: its contract
        check_data(data, str(cfg.dataset._target_))
    check_factor_objectives(cfg, data)
    if cfg.batch_size > len(data.train_x):
        raise ConfigError(f"batch_size={cfg.batch_size}: must be at most the {len(data.train_x)} training examples")
    ckpt = load_checkpoint(cfg.resume, cfg) if cfg.resume else None
    torch.manual_seed(cfg.seed)
    parts = build(cfg, data.shape, device)
    return data, parts, ckpt, device


def run(cfg: DictConfig, out_dir: Path) -> float | tuple[float, ...]:
    """Train one model and write metrics.json, history.csv, model.pt and pictures into out_dir.

    SIGTERM and SIGUSR2 (Slurm's warnings before it kills a job) are handled from the start: while the data loads
    and the model is built there is nothing to save, so the job ends `interrupted` at once; once training runs, it
    stops after the step in progress and saves model.pt (vae_sweep/preemption.py)."""
    start = time.perf_counter()
    stop = StopRequest(defer=False)
    with stop_on_signals(stop):
        try:
            data, parts, ckpt, device = prepare(cfg)
        except Preempted as e:
            ended = {"status": Status.INTERRUPTED, "signal": e.signal, "epochs": 0, "steps": 0}
            write_metrics(out_dir, ended | {"error": f"Preempted: {e.signal} before training started"})
            if in_worker():  # the sweep in another process records it and goes on
                raise PreemptedJob(f"interrupted ({e.signal}) before training started") from None
            raise
        stop.defer = True  # from here a signal stops training after the step in progress
        return train_and_report(cfg, out_dir, start, (data, parts, ckpt, device), stop)


def train_and_report(cfg: DictConfig, out_dir: Path, start: float, prepared: tuple, stop: StopRequest):
    """`run` once everything is prepared: train (resuming from the checkpoint, if any), evaluate, write metrics.json
    with every way the run can end, and return the objective(s)."""
    data, parts, ckpt, device = prepared
    state = TrainState(shuffle=torch.Generator().manual_seed(cfg.seed), stop=stop)
    if ckpt is not None:
        resume(cfg, ckpt, parts, state, out_dir)
    base = run_identity(cfg, parts, device) | ({"resumed_from": str(cfg.resume)} if cfg.resume else {})
    loggers = open_loggers(cfg, run_info(cfg, out_dir, base))  # before metrics.json: a refusal leaves no `running`
    try:
        write_metrics(out_dir, base | {"status": Status.RUNNING})
        after_epoch = loggers.after_epoch(trial_reporter(cfg))  # each epoch's row to the loggers, then to the study
        fit(parts, data, cfg, state, out_dir, cfg.progress and not in_sweep(), after_epoch)
        state.stop.defer = False  # model.pt holds every epoch: from here on a signal stops the job at once
        state.stop.check()
        metrics = final_metrics(cfg, parts, data, state, out_dir) if state.status == Status.COMPLETED else {}
        if state.status == Status.PRUNED:  # its last validation, as history.csv has it
            metrics = {k.removeprefix("val_"): v for k, v in state.history[-1].items() if k.startswith("val_")}
    except BaseException as e:  # record every way a run can end, then let it propagate
        status = Status.INTERRUPTED if isinstance(e, KeyboardInterrupt) else Status.FAILED
        ended = {"status": status, "error": f"{type(e).__name__}: {e}"}
        loggers.close(status)
        written = write_end(out_dir, base | timings(state, start) | ended | preempted(e, out_dir))
        if isinstance(e, Preempted) and in_worker():  # the sweep in another process records it and goes on
            raise PreemptedJob(f"interrupted ({e.signal}) after {state.epoch} epochs, {state.step} steps") from None
        if isinstance(e, OSError) and not in_sweep():  # a sweep records the error itself and decides what follows
            raise RunFailed(write_fault(e, out_dir, written)) from None
        raise
    metrics = base | metrics | timings(state, start) | {"status": state.status}
    if state.reason:
        metrics["error"] = state.reason
    write_metrics(out_dir, metrics)
    loggers.finish(metrics, out_dir)
    log.info("%s", final_line(metrics))
    return objectives(cfg, metrics)


def resume(cfg: DictConfig, ckpt: dict, parts: Parts, state: TrainState, out_dir: Path) -> None:
    """Continue from the checkpoint. One that holds every epoch (its run was stopped during the final evaluation)
    is only evaluated: the run dir gets its model.pt and history.csv now, since no epoch will write them."""
    restore(parts, ckpt, state)
    done = state.epoch >= cfg.epochs
    log.info("resumed from %s at epoch %d%s", cfg.resume, state.epoch, " (every epoch: evaluating it)" if done else "")
    if done:
        write_history(out_dir / "history.csv", state.history)
        save_checkpoint(out_dir / "model.pt", parts, state, cfg)


def write_end(out_dir: Path, metrics: dict) -> bool:
    """metrics.json for a run that stopped, atomically or else in place; False (logged) when neither fits."""
    for write in (write_metrics, rewrite_metrics):
        try:
            write(out_dir, metrics)
            return True
        except OSError as e:
            log.error("metrics.json not written in %s: %s", out_dir, e.strerror or e)
    return False


def write_fault(e: OSError, out_dir: Path, written: bool) -> str:
    """The one line for a run stopped by a write error: what failed, and what the run dir still holds."""
    what = f"{e.strerror or type(e).__name__} ({e.filename or out_dir})"
    epochs = saved_epochs(out_dir / "model.pt")
    record = "metrics.json says failed" if written else "metrics.json could not be written: it still says running"
    if not epochs:
        return f"{what}: the run stopped; {record}; no epoch was saved: free space and run the command again"
    return f"{what}: the run stopped; {record}; model.pt holds {epochs} epoch(s): free space and resume={out_dir}"


def run_info(cfg: DictConfig, out_dir: Path, base: dict) -> RunInfo:
    """What the loggers know of the run: its settings as hyperparameters, and in a sweep its study and trial."""
    params = {k: v for k, v in base.items() if k not in ("units", "device", "threads")}
    params |= {"epochs": cfg.epochs, "objectives": ",".join(cfg.get("objectives") or ())}
    trial = cfg.get("trial") or {}
    return RunInfo(out_dir, params, trial.get("study"), trial.get("number"))


def final_line(metrics: dict) -> str:
    """The job's last log line: how it ended and its final metrics in units, at 4 significant digits."""
    shown = [k for k in ("distortion", "rate", "neg_elbo", "iwae_nll", "mse", "active_units") if k in metrics]
    took = f"({metrics.get('epochs')} epochs, {metrics.get('train_seconds', 0):.1f} s training)"
    return f"{metrics['status']}: {in_units(metrics, shown)}  {took}"


def trial_reporter(cfg: DictConfig):
    """A one-objective sweep trial (its handle `+trial.*`, vae_sweep/sweep/trial.py): the function that reports each
    epoch's validation objective to its study and says whether its pruner stops it; None for every other job."""
    if not cfg.get("trial"):
        return None
    from vae_sweep.sweep.trial import epoch_reporter

    return epoch_reporter(cfg)


def preempted(e: BaseException, out_dir: Path) -> dict:
    """metrics.json's `signal` for a job stopped by one; the exception learns the run dir, for the message."""
    if not isinstance(e, Preempted):
        return {}
    e.run_dir = str(out_dir)
    log.warning("interrupted (%s): model.pt saved in %s; continue with resume=%s", e.signal, out_dir, out_dir)
    return {"signal": e.signal}


def run_identity(cfg: DictConfig, parts: Parts, device: torch.device) -> dict:
    """The run's identity in metrics.json: its settings, size and units."""
    knobs = {k: cfg.get(k) for k in ("beta", "latent_dim", "lr", "batch_size", "seed")}
    return {
        **knobs,
        **group_choices(cfg),
        "binarize": cfg.dataset.get("binarize", "none"),  # numbers under different binarizations do not compare
        "device": str(device),
        "precision": str(cfg.precision),  # "32", "bf16" or "16": training's autocast (evaluation is fp32)
        "threads": torch.get_num_threads(),
        "params": count_parameters(parts.model),
        "units": units_block(),
    }


def group_choices(cfg: DictConfig) -> dict[str, str]:
    """Which option of each group made this config (`model: conv`), as Hydra recorded it; outside a Hydra
    run (the Compose API), the `_target_` names stand in."""
    if HydraConfig.initialized():
        choices = HydraConfig.get().runtime.choices
        return {g: choices.get(g) for g in JOB_GROUPS}
    return {g: cfg[g]._target_.rsplit(".", 1)[-1] if cfg.get(g) else None for g in JOB_GROUPS}


def timings(state: TrainState, start: float) -> dict:
    """Epochs and steps done, and seconds spent (training alone, and the whole job so far)."""
    return {
        "epochs": state.epoch,
        "steps": state.step,
        "train_seconds": round(state.train_seconds, 3),
        "wall_seconds": round(time.perf_counter() - start, 3),
    }


def final_metrics(cfg: DictConfig, parts: Parts, data: datasets.ImageData, state: TrainState, out_dir: Path) -> dict:
    """Validation metrics in the units of `vae_sweep.registry`, and the pictures; for loss=multirate, at eval.beta,
    and the curve along beta (curve.csv, curve.png, curve_strip.png); on a dataset with factors, the
    disentanglement scores."""
    stochastic = parts.loss.stochastic
    metrics = curve_metrics(cfg, parts, data, out_dir) if isinstance(parts.model, ConditionedVAE) else {}
    val = validation_terms(parts.model, parts.likelihood, data.val_x, stochastic, cfg.eval.batch_size)
    metrics |= {k: val[k] for k in ("distortion", "mse")}
    if stochastic:
        metrics |= {k: val[k] for k in ("rate", "neg_elbo", "kl_per_dim")}
        metrics["active_units"] = active_units(val["mu"])
        metrics |= family_metrics(parts)
        if cfg.eval.iwae_k:
            metrics["iwae_nll"] = iwae_nll(parts.model, parts.likelihood, data.val_x, cfg.eval.iwae_k)
            metrics["iwae_k"] = cfg.eval.iwae_k
    if cfg.eval.pictures:
        x, kl = datasets.as_float(data.val_x), val.get("kl_per_dim")
        save_pictures(parts.model, x, data.val_y, out_dir, kl, caption=picture_caption(cfg, stochastic))
    return metrics | disentanglement_scores(cfg, parts, data, out_dir, val.get("kl_per_dim"))


def family_metrics(parts: Parts) -> dict:
    """How the rate was estimated, and, where the per-dimension metrics are not defined for this prior and posterior,
    null in their place and the reason (`undefined`: metric -> why; traversals are then in latent order)."""
    model = parts.model
    why = undefined_per_dim(model)
    nulls = {k: None for k in why if k != "traversals"}
    return {"rate_estimator": rate_estimator(model)} | nulls | ({"undefined": why} if why else {})


def picture_caption(cfg: DictConfig, stochastic: bool) -> str:
    """What made the pictures, for their titles: `model=mlp  loss=beta  β=1  dataset=mnist_5k`."""
    choices = group_choices(cfg)
    beta = f"  β={cfg.beta:g}" if stochastic else ""
    return f"model={choices['model']}  loss={choices['loss']}{beta}  dataset={choices['dataset']}"


def disentanglement_scores(cfg: DictConfig, parts: Parts, data: datasets.ImageData, out_dir: Path, kl_per_dim) -> dict:
    """Datasets with factors: the disentanglement scores (`vae_sweep.disentangle.report`), and traversals_factors.png
    with the pictures; none for other datasets or with eval.disentanglement=null."""
    settings = cfg.eval.get("disentanglement")
    if data.factors is None or settings is None:
        return {}
    from vae_sweep.disentangle.report import disentanglement_metrics

    where = out_dir if cfg.eval.pictures else None
    return disentanglement_metrics(parts.model, data, settings, cfg.eval.batch_size, where, kl_per_dim)


def curve_metrics(cfg: DictConfig, parts: Parts, data: datasets.ImageData, out_dir: Path) -> dict:
    """loss=multirate: fix the model at eval.beta (also after a resume: a checkpoint holds the beta it was saved
    at), and write the curve along cfg.curve.betas points of the trained range; metrics.json's curve entries."""
    parts.model.set_beta(cfg.eval.beta)
    betas = beta_grid(parts.loss.beta_min, parts.loss.beta_max, cfg.curve.betas)
    x = datasets.as_float(data.val_x)
    curve = write_curve(parts.model, parts.likelihood, x, betas, out_dir, cfg.eval.iwae_k, cfg.eval.batch_size)
    return {"eval_beta": cfg.eval.beta} | curve


def objectives(cfg: DictConfig, metrics: dict) -> float | tuple[float, ...] | None:
    """The metric(s) named by cfg.objectives; NaN for each when the run diverged (the sweeper marks it failed).
    None when the config names none: a single job or a grid sweep, whose return value goes nowhere."""
    if not cfg.get("objectives"):
        return None
    values = tuple(float("nan") if metrics.get(k) is None else float(metrics[k]) for k in cfg.objectives)
    return values[0] if len(values) == 1 else values
