"""The registry of model families: names, unknown and duplicate names, every family fits, seeds."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LinearRegression
from threadpoolctl import threadpool_limits

from predictors import families
from predictors.errors import PredictorError
from predictors.families import family_names, make_family, register_family
from supernet.errors import ElastiqError


def test_builtin_families() -> None:
    assert family_names()[:4] == ("ridge", "svr", "gbr", "mlp")


def test_unknown_family_lists_the_known_ones() -> None:
    with pytest.raises(PredictorError, match=r"unknown model family 'xgb'; known families: ridge, svr, gbr, mlp"):
        make_family("xgb", 0)
    assert issubclass(PredictorError, ElastiqError) and issubclass(PredictorError, ValueError)


def test_duplicate_name_is_an_error() -> None:
    with pytest.raises(PredictorError, match="'ridge' is already registered by ridge; pick another name"):

        @register_family("ridge")
        def again(seed: int) -> Any:
            return LinearRegression()

    assert type(make_family("ridge", 0)).__name__ == "Pipeline"


def test_a_new_family_is_one_decorated_function(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(families, "_REGISTRY", dict(families._REGISTRY))  # undone after the test

    @register_family("ols")
    def ols(seed: int) -> Any:
        return LinearRegression()

    assert family_names()[-1] == "ols"
    assert isinstance(make_family("ols", 3), LinearRegression)


@pytest.mark.parametrize("name", ["ridge", "svr", "gbr", "mlp"])
def test_every_family_fits_and_is_deterministic_by_seed(name: str) -> None:
    rng = np.random.default_rng(0)
    X = rng.uniform(size=(60, 4))
    y = 1e6 * (1 + X[:, 0] + X[:, 1] ** 2)  # byte-sized targets: families must not depend on the target's scale
    with threadpool_limits(limits=1, user_api="blas"):  # as MetricPredictor fits them; see predictors.estimator
        first = make_family(name, 7).fit(X, y).predict(X)
        again = clone(make_family(name, 7)).fit(X, y).predict(X)
    np.testing.assert_array_equal(first, again)
    assert np.corrcoef(first, y)[0, 1] > 0.9
