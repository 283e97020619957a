"""The curves of a sweep of loss=multirate trials (`sweep=curve`), and the front of all their points together.

Each completed trial of such a sweep wrote curve.csv in its run dir (vae_sweep/curve.py): one row per β of its grid,
distortion and rate in nats per example. `curve_table(df)` reads them all for the analysis frame `df`
(`vae_sweep.analysis.load_sweep`) into one frame of points; `curves_front(points, reference)` flags the Pareto front
of every point of every curve (distortion and rate both minimised: `vae_sweep.pareto`) and its hypervolume in nats²
against the reference point curve.py measures each curve against, (P ln 2, P ln 2) nats (metrics.json's
`curve_reference`). The figure (`plots.plot_curves`) draws what these compute.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from vae_sweep.analysis.frame import completed
from vae_sweep.pareto import MINIMIZE, hypervolume_2d, pareto_mask
from vae_sweep.registry import METRICS

log = logging.getLogger(__name__)

AXES = ("distortion", "rate")  # the plane of every curve, nats per example each
POINTS = ("trial", "latent_dim", "beta", *AXES, "front")  # curve_table's columns


def curve_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per point of every completed trial's curve.csv: `trial`, `latent_dim` (NaN when the frame has none),
    `beta`, `distortion` and `rate` (nats per example), and `front` (`curves_front`). attrs: `reference` (D_ref,
    R_ref) in nats, `hypervolume` in nats², and `why` when the frame is empty (no trial has a curve.csv), with
    `expected` true when no trial ran loss=multirate (a sweep that draws no curves)."""
    done = completed(df)
    frames = [
        _read_curve(Path(str(row["run_dir"])) / "curve.csv", row)
        for _, row in done.iterrows()
        if row.get("run_dir") is not None and (Path(str(row["run_dir"])) / "curve.csv").is_file()
    ]
    if not frames:
        empty = pd.DataFrame(columns=list(POINTS))
        empty.attrs["why"] = "no completed trial has a curve.csv (a sweep of loss=multirate writes one: sweep=curve)"
        empty.attrs["expected"] = "loss" not in df or not (df["loss"] == "multirate").any()  # not such a sweep
        return empty
    return curves_front(pd.concat(frames, ignore_index=True), _reference(done))


def _read_curve(path: Path, trial: pd.Series) -> pd.DataFrame:
    """curve.csv's rows under the registry's plain names (`distortion_nats` -> `distortion`), tagged with the trial."""
    rows = pd.read_csv(path).rename(columns={METRICS[m].column: m for m in AXES})
    out = rows[["beta", *AXES]].astype(float)
    out.insert(0, "latent_dim", trial.get("latent_dim", np.nan))
    out.insert(0, "trial", trial["trial"])
    return out


def _reference(done: pd.DataFrame) -> tuple[float, float] | None:
    """The (D_ref, R_ref) recorded in metrics.json (`curve_reference`), one for the whole sweep; None if none is."""
    refs = {tuple(r) for r in done.get("curve_reference", pd.Series(dtype=object)) if isinstance(r, (list, tuple))}
    if len(refs) > 1:
        log.warning(
            "curves: trials record %d reference points (different datasets?); the front's hypervolume uses the largest",
            len(refs),
        )
    return max(refs) if refs else None


def curves_front(points: pd.DataFrame, reference: tuple[float, float] | None) -> pd.DataFrame:
    """`points` (columns `distortion`, `rate`, in nats per example) with `front`: on the Pareto front of all the
    points together, both minimised. attrs `reference` and `hypervolume` (nats², NaN without a reference)."""
    out = points.copy()
    xy = out[list(AXES)].to_numpy(dtype=float)  # (n, 2)
    out["front"] = pareto_mask(xy, MINIMIZE)
    out.attrs["reference"] = reference
    out.attrs["hypervolume"] = hypervolume_2d(xy, reference, MINIMIZE) if reference is not None else float("nan")
    return out
