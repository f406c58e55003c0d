"""Predictor quality on hand-made predictions: MAPE, RMSE, rank correlations, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from predictors.errors import PredictorError
from predictors.quality import PredictorQuality, quality


def test_perfect_prediction() -> None:
    q = quality([1.0, 2.0, 3.0, 5.0], np.array([1.0, 2.0, 3.0, 5.0]))
    assert q == PredictorQuality(n=4, mape=0.0, rmse=0.0, kendall_tau=1.0, spearman=1.0)


def test_hand_computed_numbers() -> None:
    q = quality([1.0, 2.0, 4.0], [2.0, 2.0, 3.0])
    assert q.mape == pytest.approx(100 * (1.0 + 0.0 + 0.25) / 3)
    assert q.rmse == pytest.approx(math.sqrt((1.0 + 0.0 + 1.0) / 3))
    assert q.kendall_tau == pytest.approx(2 / math.sqrt(6))  # tau-b: 2 concordant, 0 discordant, one tie in pred
    reversed_ = quality([1.0, 2.0, 3.0], [3.0, 2.0, 1.0])
    assert reversed_.kendall_tau == pytest.approx(-1.0) and reversed_.spearman == pytest.approx(-1.0)
    assert q.to_dict() == {"n": 3, "mape": q.mape, "rmse": q.rmse, "kendall_tau": q.kendall_tau, "spearman": q.spearman}


def test_constant_predictions_rank_nothing() -> None:
    q = quality([1.0, 2.0, 3.0], [2.0, 2.0, 2.0])
    assert q.kendall_tau == 0.0 and q.spearman == 0.0
    assert q.rmse == pytest.approx(math.sqrt(2 / 3))


def test_a_column_vector_is_one_value_per_row() -> None:
    assert quality(np.array([[1.0], [2.0]]), [1.0, 2.0]).n == 2


@pytest.mark.parametrize(
    ("y_true", "y_pred", "message"),
    [
        ([1.0, 0.0, 2.0], [1.0, 1.0, 2.0], "1 target\\(s\\) are 0, where MAPE is undefined"),
        ([1.0, 2.0, 3.0], [1.0, 2.0], "y_true has 3 values but y_pred 2"),
        ([1.0], [1.0], "at least 2 rows to rank, got 1"),
        ([1.0, float("nan")], [1.0, 2.0], "y_true contains NaN or infinite values"),
        ([1.0, 2.0], [1.0, float("inf")], "y_pred contains NaN or infinite values"),
        (np.ones((2, 2)), np.ones((2, 2)), "one value per row, got an array of shape \\(2, 2\\)"),
    ],
)
def test_bad_input(y_true: object, y_pred: object, message: str) -> None:
    with pytest.raises(PredictorError, match=message):
        quality(y_true, y_pred)
