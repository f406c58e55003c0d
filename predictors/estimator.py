"""``MetricPredictor``: a scikit-learn regressor that picks its model family by cross-validation.

Which family predicts a metric best depends on the metric and the device (size is linear in the
features, latency is piecewise with kernel thresholds, accuracy is smooth but noisy), and with a few
hundred measured candidates there is no time to tune by hand. So a predictor scores every family it is
given by K-fold cross-validation on the same folds, keeps the one with the lowest RMSE, and refits it
on all rows. The out-of-fold quality of every family is kept (``cv_scores_``) and logged at each fit,
so a predictor's trustworthiness is never a guess.

It follows scikit-learn's estimator contract (parameters only in ``__init__``, validated in ``fit``;
fitted state ends in ``_``; ``fit`` returns self), so ``clone``, pipelines, grid search and CV work.
Two deliberate departures from a generic regressor: targets must be nonzero, because MAPE is part of
the quality reported at every fit (the tag ``positive_only`` says so to scikit-learn's checks; the
metrics predicted here, accuracy, latency and size, are positive), and at least 4 rows are needed:
with fewer, every cross-validation fold would train on 2 rows or fewer, and its scores would mean nothing.

Fitting and predicting run with single-threaded BLAS. The matrices are tiny (hundreds of rows), so
threads buy nothing, while on a machine whose cores are busy (latency measurement shares them) BLAS
threads spin against each other: an MLP fit on 150 rows took about 11 s with 2 BLAS threads on 2 busy
cores and 0.35 s with one. One thread also keeps results independent of the machine's core count
(L-BFGS took 207 iterations with 2 threads and 165 with 1 on the same data and seed).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.compose import TransformedTargetRegressor
from sklearn.model_selection import KFold, cross_val_predict, train_test_split
from sklearn.utils.validation import check_is_fitted, validate_data
from threadpoolctl import threadpool_limits

from predictors.errors import PredictorError
from predictors.families import make_family
from predictors.quality import PredictorQuality, quality, require_nonzero

log = logging.getLogger(__name__)

#: With fewer rows, every cross-validation fold trains on 2 rows or fewer (see the module docstring).
MIN_ROWS = 4
DEFAULT_FAMILIES = ("ridge", "svr", "gbr", "mlp")


def _rows(data: Any) -> int | None:
    """Rows of an array, frame, sparse matrix or list; None when unsized (validation then says what is wrong)."""
    shape = getattr(data, "shape", None)  # before len(): a sparse DOK matrix's len() is its non-zero count
    if shape is not None and len(shape) > 0:
        return int(shape[0])
    try:
        return len(data)
    except TypeError:
        return None


def _check_lengths(X: Any, y: Any) -> None:
    """A one-line PredictorError for the most common mistake, before scikit-learn's generic one."""
    n_x, n_y = _rows(X), _rows(y)
    if n_x is not None and n_y is not None and n_x != n_y:
        raise PredictorError(f"X has {n_x} rows but y has {n_y} values; give one target per candidate")


def _one_line(exc: ValueError) -> PredictorError:
    """scikit-learn's validation error (NaN in X, a 1-D X, ...) as a one-line PredictorError, same words."""
    return PredictorError(" ".join(str(exc).split()))


class MetricPredictor(RegressorMixin, BaseEstimator):
    """Predicts one metric of candidates from their feature rows (``predictors.features``).

    Parameters
    ----------
    families:
        Names of registered model families (``predictors.families``) to choose from.
    cv:
        Number of cross-validation folds; fewer when there are fewer rows (leave-one-out at worst).
    seed:
        Seeds the folds and every family's randomness: the same seed gives the same predictor.
    log_target:
        Fit ``log(y)`` and predict ``exp``; for positive targets spanning orders of magnitude (latency,
        size), where relative errors matter. Cross-validation RMSE is still on the original scale.

    Attributes
    ----------
    best_family_: the chosen family's name.
    cv_scores_: ``{family: {"rmse", "mape", "kendall_tau"}}`` of its out-of-fold predictions.
    cv_quality_: the chosen family's full out-of-fold ``PredictorQuality``.
    n_splits_: the number of folds used.
    model_: the chosen family refitted on all rows.
    n_features_in_: the number of features seen in ``fit``.
    """

    def __init__(
        self,
        families: Sequence[str] = DEFAULT_FAMILIES,
        cv: int = 5,
        seed: int = 0,
        log_target: bool = False,
    ) -> None:
        self.families = families
        self.cv = cv
        self.seed = seed
        self.log_target = log_target

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.positive_only = True  # nonzero targets for MAPE; see the module docstring
        return tags

    def _checked_families(self) -> list[str]:
        if isinstance(self.families, str) or not self.families:
            raise PredictorError(
                f"families must be a non-empty sequence of family names, got {self.families!r}; e.g. ('ridge', 'gbr')"
            )
        names = list(dict.fromkeys(self.families))
        for name in names:
            make_family(name, self.seed)  # unknown names fail before any fitting
        return names

    def _n_splits(self, n_rows: int) -> int:
        if isinstance(self.cv, bool) or not isinstance(self.cv, int | np.integer) or self.cv < 2:
            raise PredictorError(f"cv must be an integer >= 2 (the number of folds), got {self.cv!r}")
        if n_rows < MIN_ROWS:
            raise PredictorError(
                f"a MetricPredictor needs at least {MIN_ROWS} rows to cross-validate, got n_samples={n_rows}; "
                "measure more candidates"
            )
        return min(int(self.cv), n_rows)

    def _make(self, family: str) -> Any:
        model = make_family(family, self.seed)
        if self.log_target:
            model = TransformedTargetRegressor(regressor=model, func=np.log, inverse_func=np.exp, check_inverse=False)
        return model

    def fit(self, X: Any, y: Any) -> MetricPredictor:
        """Cross-validate every family, keep the lowest out-of-fold RMSE, refit it on all rows."""
        _check_lengths(X, y)
        try:
            X, y = validate_data(self, X, y, y_numeric=True, dtype=np.float64)
        except ValueError as exc:
            raise _one_line(exc) from None
        families = self._checked_families()
        n_splits = self._n_splits(len(y))
        require_nonzero(y)
        if self.log_target and np.any(y <= 0):
            raise PredictorError(
                f"log_target needs positive targets, got {int(np.sum(y <= 0))} <= 0; use log_target=False"
            )
        folds = KFold(n_splits=n_splits, shuffle=True, random_state=self.seed)
        with threadpool_limits(limits=1, user_api="blas"):
            qualities = {
                family: _out_of_fold_quality(y, cross_val_predict(self._make(family), X, y, cv=folds, n_jobs=1))
                for family in families
            }
            best = min(families, key=lambda family: qualities[family].rmse)  # ties: the first listed
            self.model_ = self._make(best).fit(X, y)
        self.best_family_ = best
        self.cv_quality_ = qualities[best]
        self.cv_scores_ = {
            family: {"rmse": q.rmse, "mape": q.mape, "kendall_tau": q.kendall_tau} for family, q in qualities.items()
        }
        self.n_splits_ = n_splits
        table = "; ".join(f"{f} {_summary(q)}" for f, q in qualities.items())
        log.info("MetricPredictor: %d rows, %d-fold CV: %s; chose %s", len(y), n_splits, table, best)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predictions for all rows of ``X`` at once (one call for a whole population)."""
        check_is_fitted(self)
        try:
            X = validate_data(self, X, reset=False, dtype=np.float64)
        except ValueError as exc:
            raise _one_line(exc) from None
        with threadpool_limits(limits=1, user_api="blas"):
            return np.asarray(self.model_.predict(X), dtype=np.float64).reshape(-1)


def _summary(q: PredictorQuality) -> str:
    return f"rmse={q.rmse:.4g} mape={q.mape:.2f}% tau={q.kendall_tau:.3f} spearman={q.spearman:.3f}"


def _out_of_fold_quality(y: np.ndarray, predicted: np.ndarray) -> PredictorQuality:
    """Quality of pooled out-of-fold predictions; a family that diverged (non-finite) scores infinitely bad."""
    if not np.all(np.isfinite(predicted)):
        return PredictorQuality(n=len(y), mape=float("inf"), rmse=float("inf"), kendall_tau=0.0, spearman=0.0)
    return quality(y, predicted)


def fit_with_report(
    X: Any, y: Any, *, test_fraction: float = 0.2, seed: int = 0, **params: Any
) -> tuple[MetricPredictor, PredictorQuality]:
    """A predictor fitted on all rows, and an honest estimate of its quality.

    Holds out ``test_fraction`` of the rows (chosen by ``seed``), fits a ``MetricPredictor(seed=seed,
    **params)`` on the rest and scores it on the held-out rows; then refits the same configuration on
    *all* rows, which is the predictor returned. The reported quality is therefore that of the held-out
    fit, a slightly pessimistic estimate for the returned predictor, which saw more data.
    """
    allowed = set(MetricPredictor().get_params()) - {"seed"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise PredictorError(f"unknown MetricPredictor parameters {unknown}; allowed: {sorted(allowed)}")
    if not 0.0 < test_fraction < 1.0:
        raise PredictorError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}")
    _check_lengths(X, y)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=test_fraction, random_state=seed)
    if len(y_test) < 2:
        raise PredictorError(
            f"test_fraction {test_fraction} holds out {len(y_test)} row(s), but ranking quality needs 2; "
            "give more rows or a larger test_fraction"
        )
    held_out = MetricPredictor(seed=seed, **params).fit(X_train, y_train)
    report = quality(y_test, held_out.predict(X_test))
    log.info("MetricPredictor held-out quality (%s, %d rows): %s", held_out.best_family_, report.n, _summary(report))
    return clone(held_out).fit(X, y), report
