"""Greedy hypervolume-improvement selection (the predictor method's local proposal)."""

from __future__ import annotations

import numpy as np
from pymoo.indicators.hv import HV

from search.acquisition import greedy_hypervolume_improvement, weakly_dominated

REFERENCE = np.array([10.0, 10.0])
FRONT = np.array([[2.0, 6.0], [6.0, 2.0]])


def test_weakly_dominated_counts_equal_points_as_dominated() -> None:
    F = np.array([[2.0, 6.0], [3.0, 7.0], [1.0, 9.0], [4.0, 4.0]])
    assert weakly_dominated(F, FRONT).tolist() == [True, True, False, False]
    assert weakly_dominated(F, FRONT[:0]).tolist() == [False] * 4


def test_picks_the_largest_gain_first_and_rescoring_spreads_the_batch() -> None:
    candidates = np.array([[4.0, 4.0], [4.1, 4.1], [1.0, 9.0], [3.0, 7.0], [11.0, 1.0]])
    chosen = greedy_hypervolume_improvement(FRONT, candidates, REFERENCE, 3)
    gains = [HV(ref_point=REFERENCE).do(np.vstack([FRONT, c])) - HV(ref_point=REFERENCE).do(FRONT) for c in candidates]
    assert chosen[0] == int(np.argmax(gains)) == 0
    # [4.1, 4.1] is dominated by the first pick and so worth nothing after it; [1, 9] still adds volume;
    # [3, 7] is dominated by the front and [11, 1] lies beyond the reference point: never picked.
    assert chosen == [0, 2]


def test_an_empty_front_takes_the_best_candidate_by_its_own_volume() -> None:
    candidates = np.array([[5.0, 5.0], [1.0, 1.0]])
    assert greedy_hypervolume_improvement(np.zeros((0, 2)), candidates, REFERENCE, 1) == [1]
