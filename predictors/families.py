"""The registry of model families a ``MetricPredictor`` chooses from.

A family is a function ``(seed) -> unfitted scikit-learn regressor``, registered by one decorator,
``@register_family("name")``, as timm's ``register_model`` does; a duplicate name is an error. A new
family is one decorated function and nothing else changes.

The built-ins are sized for what predictors see here: a few hundred candidates, tens to a few hundred
features of very different scales (bits, widths, MACs, bytes). Hence a StandardScaler in front of every
model that is not scale-invariant, and, for SVR and the MLP, a standardised target as well: their
``epsilon``/``C`` and learning dynamics are in target units, which range from accuracies near 1 to
sizes in the tens of megabytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from sklearn.compose import TransformedTargetRegressor
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.linear_model import RidgeCV
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVR

from predictors.errors import PredictorError

#: A family: the seed in, an unfitted scikit-learn regressor out.
Family = Callable[[int], Any]
_F = TypeVar("_F", bound=Family)
_REGISTRY: dict[str, Family] = {}


def register_family(name: str) -> Callable[[_F], _F]:
    """Function decorator: register a model family under ``name`` (a duplicate name is an error)."""

    def decorate(factory: _F) -> _F:
        if name in _REGISTRY:
            raise PredictorError(
                f"model family {name!r} is already registered by {_REGISTRY[name].__qualname__}; pick another name"
            )
        _REGISTRY[name] = factory
        return factory

    return decorate


def family_names() -> tuple[str, ...]:
    """Registered family names, in registration order (the built-ins first)."""
    return tuple(_REGISTRY)


def make_family(name: str, seed: int) -> Any:
    """A fresh, unfitted regressor of family ``name``, its randomness drawn from ``seed``."""
    try:
        factory = _REGISTRY[name]
    except (KeyError, TypeError):
        raise PredictorError(f"unknown model family {name!r}; known families: {', '.join(_REGISTRY)}") from None
    return factory(seed)


def _standardised_target(regressor: Any) -> TransformedTargetRegressor:
    return TransformedTargetRegressor(regressor=regressor, transformer=StandardScaler())


@register_family("ridge")
def ridge(seed: int) -> Any:
    """Linear baseline; the penalty is chosen by efficient leave-one-out CV over six decades."""
    return make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))


@register_family("svr")
def svr(seed: int) -> Any:
    """RBF support-vector regression: smooth nonlinear fits from little data (deterministic, seed unused)."""
    return _standardised_target(make_pipeline(StandardScaler(), SVR(kernel="rbf", C=10.0, epsilon=0.01)))


@register_family("gbr")
def gbr(seed: int) -> Any:
    """Gradient-boosted trees: thresholds and interactions (e.g. a precision that only pays off at some width)."""
    return GradientBoostingRegressor(n_estimators=150, max_depth=3, learning_rate=0.1, subsample=0.8, random_state=seed)


@register_family("mlp")
def mlp(seed: int) -> Any:
    """A small MLP trained with L-BFGS, which converges reliably on a few hundred rows (no minibatches)."""
    return _standardised_target(
        make_pipeline(
            StandardScaler(),
            MLPRegressor(hidden_layer_sizes=(64, 64), solver="lbfgs", alpha=1e-3, max_iter=2000, random_state=seed),
        )
    )
