"""The one Pareto mask and hypervolume (vae_sweep.pareto) against hand calculations. The mask against brute force
on random points with ties and NaNs is in test_analysis.py, beside the same check on a real sweep."""

from __future__ import annotations

import numpy as np
import pytest

from vae_sweep.pareto import MINIMIZE, hypervolume_2d, pareto_mask, running_hypervolume

# A 3-point front and the reference (4, 4). By vertical slabs: [1, 2) x (3, 4) + [2, 3) x (2, 4) + [3, 4) x (1, 4)
# = 1 + 2 + 3 = 6. By inclusion-exclusion of the three boxes: (3 + 4 + 3) - (2 + 1 + 2) + 1 = 6.
FRONT = [(1.0, 3.0), (2.0, 2.0), (3.0, 1.0)]
REF = (4.0, 4.0)


def test_hypervolume_of_a_three_point_front():
    assert hypervolume_2d(FRONT, REF, MINIMIZE) == 6.0
    assert hypervolume_2d(FRONT[::-1], REF, MINIMIZE) == 6.0  # order does not matter
    assert hypervolume_2d(FRONT[:1], REF, MINIMIZE) == 3.0  # one box: (4 - 1) x (4 - 3)


def test_dominated_outside_and_non_finite_points_add_nothing():
    extra = [(3.0, 3.0), (2.0, 2.0), (5.0, 0.5), (0.5, 4.0), (np.nan, 0.0), (0.0, np.inf)]
    assert hypervolume_2d(FRONT + extra, REF, MINIMIZE) == 6.0  # (0.5, 4) and (5, 0.5) lie on or past the box
    assert hypervolume_2d([], REF, MINIMIZE) == 0.0
    assert hypervolume_2d(np.empty((0, 2)), REF, MINIMIZE) == 0.0


def test_maximised_columns_are_mirrored():
    mirrored = [(-d, r) for d, r in FRONT]  # the first column maximised: -1 beats -2
    assert hypervolume_2d(mirrored, (-4.0, 4.0), ("maximize", "minimize")) == 6.0
    assert pareto_mask(mirrored, ("maximize", "minimize")).all()
    assert pareto_mask(mirrored, MINIMIZE).tolist() == [False, False, True]  # minimised, (-3, 1) beats both


def test_pareto_mask_by_hand():
    points = [(1.0, 3.0), (2.0, 2.0), (2.0, 2.0), (2.0, 5.0), (3.0, 1.0), (3.0, 3.0), (np.nan, 0.0)]
    assert pareto_mask(points, MINIMIZE).tolist() == [True, True, True, False, True, False, False]


def test_running_hypervolume():
    d = np.array([3.0, np.nan, 1.0, 2.0, 2.0])
    r = np.array([1.0, np.nan, 3.0, 2.0, 3.0])  # reference point (3, 3)
    assert running_hypervolume(np.column_stack([d, r]), MINIMIZE).tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]
    assert running_hypervolume(FRONT, MINIMIZE, REF).tolist() == [3.0, 5.0, 6.0]  # grows trial by trial
    assert running_hypervolume(np.full((2, 2), np.nan), MINIMIZE).tolist() == [0.0, 0.0]


def test_wrong_shapes_and_directions_are_refused():
    with pytest.raises(ValueError, match=r"\(n, 2\) expected"):
        pareto_mask(np.zeros((3, 3)), MINIMIZE)
    with pytest.raises(ValueError, match="directions"):
        hypervolume_2d(FRONT, REF, ("minimize", "up"))
