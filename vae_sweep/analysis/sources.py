"""What the analysis reads: sweep dirs, run dirs and Optuna studies, each trial as one dict (one row of the
analysis frame). `vae_sweep.analysis.frame` turns the rows into the frame.

A run dir gives its parameters from `.hydra/` (config knobs, group choices, and any other task override such as
`eval.iwae_k`) and its metrics from metrics.json; a study's trial gives its parameters, state and its copy of
metrics.json, joined to the run dir where that still exists. Each row's status is one of STATUSES: how the run
ended (`vae_sweep.registry.Status`), with a `completed` run whose objectives
are not finite counted as `diverged`; `missing` when there is no readable metrics.json.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import yaml

from vae_sweep.config import JOB_GROUPS, NEUTRAL, TRIAL_HANDLE, neutral
from vae_sweep.errors import ConfigError
from vae_sweep.registry import COUNTED, Status

PARAMS = ("beta", "latent_dim", "lr", "batch_size", "seed", "epochs", "kl_warmup_steps")  # config knobs
log = logging.getLogger(__name__)
NOT_PARAMS = {*NEUTRAL, "objectives"}  # overrides that are no knob of the trial (objectives: what it reports)
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's, where built: hydra.yaml takes 30 ms in Python


STATUSES = tuple(s.value for s in COUNTED)  # the statuses a row can have


def source_rows(source: str, study: str | None) -> list[dict]:
    """The trials of one source: a sweep dir, a single run dir, or a storage URL (`sqlite:///...`, with `study`
    naming the study; without it, the storage's newest study). Raises ConfigError for a wrong source."""
    if "://" in source:
        return _url_rows(source, study)
    path = Path(source)
    if not path.is_dir():
        raise ConfigError(f"{source}: no such sweep dir")
    if (path / ".hydra").is_dir():  # a single run dir
        return [{"source": source, "trial": 0, **read_run(path)}]
    runs = sorted(
        (d for d in path.iterdir() if is_run_dir(d)),
        key=lambda d: (_number(d.name) is None, _number(d.name) or 0, d.name),
    )
    if not runs:
        raise ConfigError(f"{source}: no trial dirs in it (a sweep dir holds one folder per trial, each with .hydra/)")
    return [{"source": source, "trial": _number(d.name), **read_run(d)} for d in runs]


def is_run_dir(d: Path) -> bool:
    return d.is_dir() and ((d / ".hydra").is_dir() or (d / "metrics.json").exists())


def _number(name: str) -> int | None:
    return int(name) if name.isdigit() else None


def read_run(run_dir: Path) -> dict:
    """One run dir -> {run_dir, parameters..., metrics..., status}; never raises on a damaged run."""
    row = {"run_dir": str(run_dir)} | hydra_params(run_dir / ".hydra")
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except FileNotFoundError:
        return row | {"status": Status.MISSING.value, "error": "no metrics.json"}
    except (OSError, ValueError) as e:
        return row | {"status": Status.MISSING.value, "error": f"metrics.json unreadable: {e}"}
    if not isinstance(metrics, dict):
        return row | {"status": Status.MISSING.value, "error": "metrics.json is not a JSON object"}
    metrics = _from_metrics(metrics)
    return row | metrics | {"status": _run_status(metrics).value}


def hydra_params(hydra_dir: Path) -> dict:
    """The run's parameters from Hydra's saved config.yaml, hydra.yaml (group choices) and overrides.yaml."""
    cfg = _yaml(hydra_dir / "config.yaml")
    row = {k: cfg[k] for k in PARAMS if k in cfg}
    choices = _yaml(hydra_dir / "hydra.yaml").get("hydra", {}).get("runtime", {}).get("choices", {})
    row |= {g: choices[g] for g in JOB_GROUPS if g in choices}
    overrides = _yaml(hydra_dir / "overrides.yaml", default=[])
    for line in overrides if isinstance(overrides, list) else []:
        key, _, value = str(line).partition("=")
        key = key.lstrip("+~")
        if (
            key not in NOT_PARAMS
            and not neutral(key)
            and not key.startswith(("hydra.", TRIAL_HANDLE))
            and key not in row
        ):
            row[key] = _scalar(value)
    return row


def _yaml(path: Path, default=None):
    try:
        value = yaml.load(path.read_text(), Loader=YAML_LOADER)
    except (OSError, yaml.YAMLError):
        value = None
    if value is None:
        return {} if default is None else default
    return value


def _scalar(text: str) -> object:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"null": None, "true": True, "false": False}.get(text, text)


def _from_metrics(metrics: dict) -> dict:
    """metrics.json (or the study's copy of it) -> row entries: no units dict, `epochs` -> `epochs_done`."""
    out = {k: v for k, v in metrics.items() if k not in ("units", "epochs")}
    if "epochs" in metrics:
        out["epochs_done"] = metrics["epochs"]
    return out


def finite(x: object) -> bool:
    """A real number that is neither NaN nor infinite (JSON's null, a string or a list is not)."""
    return isinstance(x, (int, float)) and math.isfinite(x)


def _run_status(metrics: dict) -> Status:
    try:
        status = Status(metrics.get("status"))
    except ValueError:
        return Status.MISSING  # no status, or one this version does not know
    needed = ["distortion"] + (["rate"] if "rate" in metrics else [])  # an autoencoder has no rate
    if status is Status.COMPLETED and not all(finite(metrics.get(k)) for k in needed):
        return Status.DIVERGED  # it finished, but with NaN or infinite objectives
    return status


def _url_rows(url: str, name: str | None) -> list[dict]:
    """The trials of the study `name` (or the only one) in the storage at `url`."""
    import optuna
    import sqlalchemy.exc

    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        raise ConfigError(f"{url}: no such database file")
    try:
        storage = optuna.storages.RDBStorage(url)
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    except (sqlalchemy.exc.SQLAlchemyError, ValueError, ImportError) as e:
        raise ConfigError(f"{url}: not a readable Optuna storage ({type(e).__name__})") from None
    if not names:
        raise ConfigError(f"{url} holds no study")
    if name is not None and name not in names:
        raise ConfigError(f"study={name}: not in {url}, which holds: {', '.join(names)}")
    if name is None:
        name = newest_study(storage)
        if len(names) > 1:
            others = ", ".join(n for n in names if n != name)
            log.warning(
                "%s holds %d studies: analysing the newest, %s (others: %s; name one with --study)",
                url,
                len(names),
                name,
                others,
            )
    rows = study_rows(optuna.load_study(study_name=name, storage=storage), f"{url} study={name}")
    if not rows:
        raise ConfigError(f"study={name} in {url}: no trials yet")
    return rows


def newest_study(storage) -> str:
    """The name of the study created last in `storage` (the largest study id)."""
    return max(storage.get_all_studies(), key=lambda s: s._study_id).study_name


def study_rows(study, source: str) -> list[dict]:
    """The trials of an `optuna.Study`, each joined to its run dir where that still exists."""
    return [_study_row(t, source) for t in study.get_trials(deepcopy=False)]


def _study_row(trial, source: str) -> dict:
    metrics = _from_metrics(trial.user_attrs.get("metrics") or {})
    run_dir = metrics.get("run_dir")
    row = read_run(Path(run_dir)) if run_dir and Path(run_dir).is_dir() else {"run_dir": run_dir}
    row |= {k: v for k, v in metrics.items() if row.get(k) is None}  # the study's copy fills the gaps
    row |= dict(trial.params) | {"source": source, "trial": trial.number, "status": _trial_status(trial).value}
    row["error"] = trial.user_attrs.get("error") or (row.get("error") if row["status"] != Status.COMPLETED else None)
    return row


def _trial_status(trial) -> Status:
    state = trial.state.name
    if state in ("RUNNING", "WAITING"):
        return Status.RUNNING
    if state == "COMPLETE":
        return Status.COMPLETED
    if state == "PRUNED":  # a sweep's pruner stopped it: its last epoch's metrics are in the study and run dir
        return Status.PRUNED
    status = trial.user_attrs.get("status")
    if status == Status.COMPLETED:  # the run finished with NaN/inf objectives, so the sweeper failed the trial
        return Status.DIVERGED
    known = (Status.DIVERGED, Status.FAILED, Status.INTERRUPTED)
    return Status(status) if status in known else Status.FAILED  # no status: an older sweep's failure
