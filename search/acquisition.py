"""Choosing which predicted candidates to evaluate next: greedy expected hypervolume improvement.

The search is judged by the hypervolume of what it really measured, so the predictor method spends each
evaluation where the predictions say the measured front's hypervolume grows most (the acquisition of
SMS-EMOA and of hypervolume-based Bayesian optimisation, with the predictors' point estimates in place
of a posterior). Rank-and-crowding selection, by contrast, spreads a batch along the *predicted* front,
which is exactly where the predictors' optimism is largest (the winner's curse).
"""

from __future__ import annotations

import numpy as np
from pymoo.indicators.hv import HV
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting


def weakly_dominated(F: np.ndarray, by: np.ndarray) -> np.ndarray:
    """For each row of ``F`` (minimisation), whether some row of ``by`` is at least as good in every objective."""
    if len(by) == 0 or len(F) == 0:
        return np.zeros(len(F), dtype=bool)
    return np.asarray(np.any(np.all(by[None, :, :] <= F[:, None, :], axis=2), axis=1))


def greedy_hypervolume_improvement(
    measured: np.ndarray, candidates: np.ndarray, reference: np.ndarray, n: int
) -> list[int]:
    """Indices of up to ``n`` rows of ``candidates`` chosen one by one for the largest hypervolume gain.

    ``measured`` and ``candidates`` are objective matrices in minimisation space (feasible rows only),
    ``reference`` the hypervolume reference point. Each pick adds its predicted point to the front the
    next pick is scored against, so a batch does not pile onto one promising spot. Candidates that
    would add nothing (weakly dominated, or beyond the reference point) are never picked, so fewer than
    ``n`` indices may come back; the caller fills the rest another way.
    """
    indicator = HV(ref_point=np.asarray(reference, dtype=np.float64))
    front = np.asarray(measured, dtype=np.float64).reshape(-1, len(reference))
    if len(front):
        front = front[NonDominatedSorting().do(front, only_non_dominated_front=True)]
    candidates = np.asarray(candidates, dtype=np.float64).reshape(-1, len(reference))
    inside = np.all(candidates < reference, axis=1) & np.all(np.isfinite(candidates), axis=1)
    available = inside.copy()
    chosen: list[int] = []
    while len(chosen) < n:
        open_rows = np.flatnonzero(available & ~weakly_dominated(candidates, front))
        if len(open_rows) == 0:
            break
        base = float(indicator.do(front)) if len(front) else 0.0
        gains = np.array([float(indicator.do(np.vstack([front, candidates[i]]))) - base for i in open_rows])
        best = int(open_rows[int(np.argmax(gains))])
        if gains.max() <= 0:
            break
        chosen.append(best)
        available[best] = False
        front = np.vstack([front, candidates[best]])
    return chosen
