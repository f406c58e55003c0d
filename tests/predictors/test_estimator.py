"""MetricPredictor: family choice by CV, scikit-learn compatibility, seeds, log targets, bad input, reports."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import train_test_split
from sklearn.utils.estimator_checks import check_estimator

from predictors.errors import PredictorError
from predictors.estimator import MetricPredictor, fit_with_report
from predictors.features import FeatureEncoder
from predictors.quality import quality
from quant.policy import QuantPolicy
from quant.targets import linear_shapes
from supernet.arch import BertElasticSpace
from supernet.bert import BertShape

#: The fast families: the CV and selection machinery is the same for every family, and the MLP alone
#: would triple these tests' time.
FAST = ("ridge", "svr", "gbr")


def linear_data(n: int = 80, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, size=(n, 4))
    return X, 10 + X @ np.array([1.0, -2.0, 0.5, 1.5]) + 0.01 * rng.normal(size=n)


def nonlinear_data(n: int = 150, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, size=(n, 2))
    return X, 3 + np.sin(3 * X[:, 0]) + 2 * X[:, 1] ** 2 + 0.01 * rng.normal(size=n)


def test_picks_ridge_on_a_linear_target() -> None:
    X, y = linear_data()
    predictor = MetricPredictor().fit(X, y)
    assert predictor.best_family_ == "ridge"
    assert set(predictor.cv_scores_) == {"ridge", "svr", "gbr", "mlp"}
    assert set(predictor.cv_scores_["ridge"]) == {"rmse", "mape", "kendall_tau"}
    assert predictor.cv_scores_["ridge"]["rmse"] == min(s["rmse"] for s in predictor.cv_scores_.values())
    assert predictor.cv_quality_.n == len(y) and predictor.cv_quality_.kendall_tau > 0.99
    assert predictor.n_features_in_ == 4 and predictor.n_splits_ == 5


def test_picks_a_nonlinear_family_on_a_nonlinear_target() -> None:
    X, y = nonlinear_data()
    predictor, held_out = fit_with_report(X, y, seed=0, families=FAST)
    assert predictor.best_family_ != "ridge"
    assert held_out.kendall_tau > 0.9 and held_out.n == 30
    assert predictor.cv_scores_["ridge"]["kendall_tau"] < 0.8


def test_fit_with_report_scores_the_held_out_fit_and_returns_the_full_fit() -> None:
    X, y = nonlinear_data(n=60)
    predictor, report = fit_with_report(X, y, test_fraction=0.25, seed=3, families=("ridge", "svr"), cv=3)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=3)
    held_out = MetricPredictor(families=("ridge", "svr"), cv=3, seed=3).fit(X_train, y_train)
    assert report == quality(y_test, held_out.predict(X_test))
    full = MetricPredictor(families=("ridge", "svr"), cv=3, seed=3).fit(X, y)
    np.testing.assert_array_equal(predictor.predict(X), full.predict(X))
    assert predictor.get_params() == full.get_params()


def test_clone_and_determinism_by_seed() -> None:
    X, y = nonlinear_data(n=60)
    predictor = MetricPredictor(families=("ridge", "gbr"), cv=3, seed=5)
    copy = clone(predictor)
    assert copy.get_params() == predictor.get_params() and not hasattr(copy, "model_")
    first = predictor.fit(X, y).predict(X)
    again = copy.fit(X, y).predict(X)
    np.testing.assert_array_equal(first, again)
    assert predictor.cv_scores_ == copy.cv_scores_
    assert not hasattr(clone(predictor), "best_family_")  # clone drops the fitted state
    assert predictor.best_family_ == "gbr"  # stochastic (subsample < 1): the seed matters
    other_seed = MetricPredictor(families=("ridge", "gbr"), cv=3, seed=6).fit(X, y)
    assert other_seed.best_family_ == "gbr" and not np.array_equal(other_seed.predict(X), first)


def test_log_target_round_trip() -> None:
    rng = np.random.default_rng(1)
    X = rng.uniform(0, 1, size=(60, 3))
    y = np.exp(2 + 4 * X[:, 0] - 3 * X[:, 1])  # latency-like: positive, two orders of magnitude
    predictor = MetricPredictor(families=("ridge",), log_target=True).fit(X, y)
    predicted = predictor.predict(X)
    assert np.all(predicted > 0)
    np.testing.assert_allclose(predicted, y, rtol=1e-3)  # RidgeCV's small penalty shrinks a little
    assert predictor.cv_quality_.mape < 0.1  # percent; cross-validated on the original scale
    assert MetricPredictor(families=("ridge",)).fit(X, y).cv_quality_.mape > 10
    with pytest.raises(PredictorError, match="log_target needs positive targets, got 1 <= 0"):
        MetricPredictor(families=("ridge",), log_target=True).fit(X, np.where(np.arange(60) == 0, -1.0, y))


def test_fewer_rows_than_folds_uses_as_many_folds_as_rows() -> None:
    X, y = linear_data(n=4)
    assert MetricPredictor(families=("ridge",), cv=5).fit(X, y).n_splits_ == 4


def test_predicts_a_whole_population_from_encoded_candidates() -> None:
    """End to end: features of random candidates -> a latency-like target that is linear in the per-precision MACs."""
    shape = BertShape(vocab_size=1000, hidden_size=32, head_dim=8, heads=(4,) * 3, ffn=(64,) * 3, num_labels=2)
    space = BertElasticSpace.default(3, 4, 64)
    encoder = FeatureEncoder(shape, precisions=["bf16", "int8_dynamic"], seq_len=32)
    rng = np.random.default_rng(0)
    candidates = []
    for _ in range(80):
        arch = space.sample(rng)
        layers = {fqn: str(rng.choice(["fp32", "bf16", "int8_dynamic"])) for fqn in linear_shapes(shape, arch)}
        candidates.append((arch, QuantPolicy(layers)))
    X = encoder.transform(candidates)
    column = {name: i for i, name in enumerate(encoder.names)}
    cost = {"fp32": 1.0, "bf16": 0.4, "int8_dynamic": 0.25}
    y = 1.0 + sum(c * X[:, column[f"macs.{p}"]] for p, c in cost.items()) / 1e5
    predictor, report = fit_with_report(X, y, families=("ridge", "gbr"))
    assert predictor.best_family_ == "ridge" and report.kendall_tau > 0.95
    assert predictor.predict(X).shape == (80,)


@pytest.mark.parametrize(
    ("X", "y", "params", "message"),
    [
        (np.ones((10, 2)), np.ones(9), {}, "X has 10 rows but y has 9 values; give one target per candidate"),
        (np.ones((3, 2)), np.ones(3), {}, "at least 4 rows to cross-validate, got n_samples=3"),
        (np.eye(6, 2), np.arange(6.0), {}, "1 target\\(s\\) are 0, where MAPE is undefined"),
        (np.eye(6, 2), np.ones(6), {"families": ("xgb",)}, "unknown model family 'xgb'; known families: ridge"),
        (np.eye(6, 2), np.ones(6), {"families": "ridge"}, "families must be a non-empty sequence of family names"),
        (np.eye(6, 2), np.ones(6), {"families": ()}, "families must be a non-empty sequence of family names"),
        (np.eye(6, 2), np.ones(6), {"cv": 1}, "cv must be an integer >= 2"),
        (np.full((6, 2), np.nan), np.ones(6), {}, "Input X contains NaN"),
        (np.ones(6), np.ones(6), {}, "Expected 2D array, got 1D array instead"),
    ],
)
def test_bad_input_is_a_predictor_error(X: np.ndarray, y: np.ndarray, params: dict[str, Any], message: str) -> None:
    with pytest.raises(PredictorError, match=message) as caught:
        MetricPredictor(**{"families": ("ridge",), **params}).fit(X, y)
    assert "\n" not in str(caught.value)


def test_predict_before_fit_and_with_the_wrong_width() -> None:
    X, y = linear_data(n=20)
    with pytest.raises(NotFittedError):
        MetricPredictor().predict(X)
    predictor = MetricPredictor(families=("ridge",)).fit(X, y)
    with pytest.raises(PredictorError, match="X has 3 features, but MetricPredictor is expecting 4 features"):
        predictor.predict(X[:, :3])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"test_fraction": 0.0}, "test_fraction must lie strictly between 0 and 1"),
        ({"test_fraction": 0.05}, "holds out 1 row\\(s\\), but ranking quality needs 2"),
        ({"folds": 3}, "unknown MetricPredictor parameters \\['folds'\\]"),
    ],
)
def test_fit_with_report_bad_input(kwargs: dict[str, Any], message: str) -> None:
    X, y = linear_data(n=20)
    with pytest.raises(PredictorError, match=message):
        fit_with_report(X, y, **kwargs)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.SkipTestWarning")
def test_passes_scikit_learns_estimator_checks() -> None:
    """Every check of ``check_estimator`` passes, check_estimators_dtypes, check_fit_score_takes_y and
    check_estimators_unfitted among them; only check_array_api_input skips itself (no SCIPY_ARRAY_API).

    Run with the ridge family only: the checks exercise the estimator contract (validation, cloning,
    fitted state, dtypes, pickling, invariances), which is the same whatever the families, and they
    take 1 s with ridge but about 17 s with ridge and gbr.
    """
    check_estimator(MetricPredictor(families=("ridge",), cv=3))
