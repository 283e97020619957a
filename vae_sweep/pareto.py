"""The Pareto front and its hypervolume, for two objectives: one implementation for the whole project.

The analysis flags the front of a sweep's (distortion, rate) points, the history figure draws its hypervolume trial
by trial, and benchmarks/sampler_choice.py scores samplers by it. Points are an array of shape (n, 2), one row per
trial, in the objectives' own units (distortion and rate: nats per example, so an area is in nats²); `directions`
gives each column's "minimize" or "maximize", as a study states them. A row with a NaN or infinite entry (a trial
that did not complete) is never on the front and adds no area.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

MINIMIZE = ("minimize", "minimize")


def _minimised(points: ArrayLike, directions: Sequence[str]) -> np.ndarray:
    """`points` as a float array of shape (n, 2) with each maximised column negated, so that less is better in both."""
    if len(directions) != 2 or any(d not in ("minimize", "maximize") for d in directions):
        raise ValueError(f"directions={list(directions)}: two of 'minimize' and 'maximize' expected")
    pts = np.asarray(points, dtype=float)
    if pts.size == 0:
        pts = pts.reshape(0, 2)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points of shape {pts.shape}: (n, 2) expected")
    return pts * [1.0 if d == "minimize" else -1.0 for d in directions]


def pareto_mask(points: ArrayLike, directions: Sequence[str]) -> np.ndarray:
    """Shape (n,) bool: True where no other row is at least as good in both columns and better in one. Equal rows
    on the front are all on it; a non-finite row never is. O(n log n): sort by the first column, keep the running best
    of the second."""
    pts = _minimised(points, directions)
    x, y = pts[:, 0], pts[:, 1]
    front = np.zeros(len(pts), dtype=bool)
    ok = np.flatnonzero(np.isfinite(pts).all(axis=1))
    order = ok[np.lexsort((y[ok], x[ok]))]  # by x, then y
    best_y = math.inf  # least y among rows with strictly smaller x
    i = 0
    while i < len(order):
        j = i
        while j < len(order) and x[order[j]] == x[order[i]]:
            j += 1
        group = order[i:j]  # equal x, y ascending: only the least y (and its ties) can be on the front
        least = y[group[0]]
        front[group] = (y[group] == least) & (least < best_y)
        best_y = min(best_y, least)
        i = j
    return front


def hypervolume_2d(points: ArrayLike, reference: Sequence[float], directions: Sequence[str]) -> float:
    """The area dominated by `points` (shape (n, 2)) inside the box they share with `reference` (shape (2,), a point
    worse than every point that should count), in the product of the columns' units. Rows not strictly better than
    the reference in both columns add nothing; so do non-finite rows. Larger is better."""
    pts = _minimised(points, directions)
    ref = _minimised([reference], directions)[0]
    pts = pts[np.isfinite(pts).all(axis=1) & (pts < ref).all(axis=1)]
    front = pts[pareto_mask(pts, MINIMIZE)]
    front = front[np.argsort(front[:, 0], kind="stable")]  # the second column falls as the first grows
    widths = np.diff(np.append(front[:, 0], ref[0]))  # vertical slabs between consecutive front points
    return float(np.sum(widths * (ref[1] - front[:, 1])))


def running_hypervolume(
    points: ArrayLike, directions: Sequence[str], reference: Sequence[float] | None = None
) -> np.ndarray:
    """Shape (n,): after each row, `hypervolume_2d` of the rows so far, so it never falls. The reference defaults to
    the worst finite value of each column over all rows (then the worst points themselves add no area); all zeros
    when no row is finite."""
    pts = _minimised(points, directions)
    ok = np.isfinite(pts).all(axis=1)
    if reference is None:
        if not ok.any():
            return np.zeros(len(pts))
        ref = pts[ok].max(axis=0)
    else:
        ref = _minimised([reference], directions)[0]
    return np.array([hypervolume_2d(pts[: i + 1][ok[: i + 1]], ref, MINIMIZE) for i in range(len(pts))])
