"""The small files every run writes beside Hydra's `.hydra/`: metrics.json and history.csv.

Both are written atomically (a temporary file renamed over the old one), because the analysis and a sweep's
other processes may read them while the run is going. Their format is documented in the README.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Write through a temporary file in the same folder and rename it over `path`, so a reader never sees a
    half-written file and a failed write (disk full, Ctrl-C) leaves neither a half-written file nor the temporary one. `write(tmp_path)` does the writing."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as e:  # a full disk, Ctrl-C, a signal: the old file stays as it was, and no temp file is left
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename is None:  # a failed write() names no file: name the one meant
            e.filename = str(path)
        raise


def nan_to_none(x: object) -> object:
    """JSON has no NaN or Infinity: a non-finite number, alone or in a list, is written as null."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    return [nan_to_none(v) for v in x] if isinstance(x, list) else x


def write_metrics(out_dir: Path, metrics: dict) -> None:
    """metrics.json: the run's settings, status and validation metrics (units in its `units` block)."""
    clean = {k: nan_to_none(v) for k, v in metrics.items()}
    atomic_write(out_dir / "metrics.json", lambda tmp: tmp.write_text(json.dumps(clean, indent=2) + "\n"))


def rewrite_metrics(out_dir: Path, metrics: dict) -> None:
    """metrics.json overwritten in place: the last resort on a full disk, where the atomic write's second copy does
    not fit but the old file's own space, freed by truncating it, holds the new one."""
    clean = {k: nan_to_none(v) for k, v in metrics.items()}
    (out_dir / "metrics.json").write_text(json.dumps(clean, indent=2) + "\n")


def read_metrics(run_dir: Path) -> dict:
    """metrics.json as a dict; {} when it is missing or unreadable."""
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}
    return metrics if isinstance(metrics, dict) else {}


def write_history(path: Path, rows: list[dict]) -> None:
    """history.csv: one row per epoch, columns in order of first appearance."""
    fields = list(dict.fromkeys(k for row in rows for k in row))

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)

    atomic_write(path, write)
