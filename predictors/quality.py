"""How good a predictor is: error (MAPE, RMSE) and ranking (Kendall tau, Spearman) on held-out data.

The search only needs a predictor to *rank* candidates correctly (NSGA-II compares them), so the rank
correlations matter most; MAPE and RMSE say how far the predicted numbers themselves can be trusted.

A rank correlation is undefined when either side is constant (scipy returns nan): a predictor that
predicts the same value for every candidate ranks nothing. It is reported as 0.0, "no better than
chance", rather than nan, because callers compare taus (``tau > 0.9``, the best of several families)
and every comparison with nan is False, which would silently let such a predictor through one test and
fail it in another.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import kendalltau, spearmanr

from predictors.errors import PredictorError


@dataclass(frozen=True)
class PredictorQuality:
    """Quality of predictions on ``n`` rows: MAPE in percent, RMSE in target units, rank correlations."""

    n: int
    mape: float
    rmse: float
    kendall_tau: float
    spearman: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _as_vector(name: str, values: Any) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 2 and array.shape[1] == 1:  # a column vector, as some regressors return
        array = array[:, 0]
    if array.ndim != 1:
        raise PredictorError(f"{name} must be one value per row, got an array of shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise PredictorError(f"{name} contains NaN or infinite values; drop or fix those rows")
    return array


def require_nonzero(y_true: np.ndarray) -> None:
    """Raise unless every target is nonzero (MAPE divides by them); callers check before expensive fits."""
    zeros = int(np.sum(y_true == 0))
    if zeros:
        raise PredictorError(
            f"{zeros} target(s) are 0, where MAPE is undefined; "
            "predict a quantity that is never 0 (e.g. accuracy rather than accuracy drop)"
        )


def quality(y_true: Any, y_pred: Any) -> PredictorQuality:
    """Score predictions ``y_pred`` of targets ``y_true`` (MAPE needs nonzero targets)."""
    true, pred = _as_vector("y_true", y_true), _as_vector("y_pred", y_pred)
    if true.shape != pred.shape:
        raise PredictorError(f"y_true has {true.size} values but y_pred {pred.size}; give one prediction per target")
    if true.size < 2:
        raise PredictorError(f"quality needs at least 2 rows to rank, got {true.size}; hold out more rows")
    require_nonzero(true)
    errors = pred - true
    ranked = np.ptp(true) > 0 and np.ptp(pred) > 0  # else undefined: 0.0, see the module docstring
    return PredictorQuality(
        n=int(true.size),
        mape=float(np.mean(np.abs(errors / true)) * 100.0),
        rmse=float(np.sqrt(np.mean(errors**2))),
        kendall_tau=float(kendalltau(true, pred).statistic) if ranked else 0.0,
        spearman=float(spearmanr(true, pred).statistic) if ranked else 0.0,
    )
