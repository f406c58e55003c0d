"""Objectives, constraints, and the vectorised pymoo ``Problem`` that scores populations through predictors.

The search's inner loop runs NSGA-II for tens of generations on predicted metrics, so the problem
scores a whole population with one ``predict`` call (per metric, inside the user's callable) rather than
one call per candidate (the reference implementation's cost). Objectives keep the order the user wrote
them in; "max" objectives are negated so that pymoo minimises everything, and constraints are turned
into pymoo's ``G <= 0`` form. The same conversions are used for measured values (fronts, hypervolume),
so predicted and measured points live in one objective space.

Integer genes use pymoo's standard recipe for discrete variables (``IntegerRandomSampling``, SBX and PM
on floats followed by ``RoundingRepair``), plus a ``CanonicalRepair`` so that every offspring is in the
space's canonical form before it is scored or compared for duplicates.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.problem import Problem
from pymoo.core.repair import Repair
from pymoo.operators.crossover.sbx import SBX
from pymoo.operators.mutation.pm import PM
from pymoo.operators.repair.rounding import RoundingRepair
from pymoo.operators.sampling.rnd import IntegerRandomSampling

from search.errors import SearchError
from search.space import SearchSpace

#: ``predict(X) -> {metric: values}``: one array of ``len(X)`` values per metric, for canonical rows ``X``.
Predict = Callable[[np.ndarray], Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class Objective:
    """Minimise or maximise one metric."""

    metric: str
    direction: Literal["min", "max"] = "min"

    def __post_init__(self) -> None:
        if not isinstance(self.metric, str) or not self.metric:
            raise SearchError(f"an objective needs a metric name, got {self.metric!r}")
        if self.direction not in ("min", "max"):
            raise SearchError(f"objective {self.metric!r} has direction {self.direction!r}; use 'min' or 'max'")


@dataclass(frozen=True)
class Constraint:
    """Keep ``metric op bound``, e.g. ``Constraint("latency_ms", "<=", 20.0)``."""

    metric: str
    op: Literal["<=", ">="]
    bound: float

    def __post_init__(self) -> None:
        if not isinstance(self.metric, str) or not self.metric:
            raise SearchError(f"a constraint needs a metric name, got {self.metric!r}")
        if self.op not in ("<=", ">="):
            raise SearchError(f"constraint on {self.metric!r} has op {self.op!r}; use '<=' or '>='")
        if not np.isfinite(float(self.bound)):
            raise SearchError(f"constraint on {self.metric!r} has bound {self.bound!r}; give a finite number")


def check_objectives(objectives: Sequence[Objective], constraints: Sequence[Constraint] = ()) -> None:
    """At least one objective, each metric at most once, and only Objective/Constraint instances."""
    if isinstance(objectives, Objective | str) or not objectives:
        raise SearchError("give a non-empty sequence of Objective(metric, direction)")
    for item in objectives:
        if not isinstance(item, Objective):
            raise SearchError(f"objectives must be Objective instances, got {item!r}; e.g. Objective('acc', 'max')")
    for constraint in constraints:
        if not isinstance(constraint, Constraint):
            raise SearchError(
                f"constraints must be Constraint instances, got {constraint!r}; e.g. Constraint('ms', '<=', 5)"
            )
    metrics = [o.metric for o in objectives]
    if len(set(metrics)) != len(metrics):
        raise SearchError(f"objective metrics {metrics} repeat a metric; give each metric once")


def required_metrics(objectives: Sequence[Objective], constraints: Sequence[Constraint] = ()) -> tuple[str, ...]:
    """Metrics the search needs, objectives first in the user's order, then constraint metrics."""
    return tuple(dict.fromkeys([o.metric for o in objectives] + [c.metric for c in constraints]))


def _column(values: Mapping[str, Any], metric: str, n: int) -> np.ndarray:
    if metric not in values:
        raise SearchError(
            f"metric {metric!r} is missing (got {sorted(values)}); return every objective/constraint metric"
        )
    column = np.asarray(values[metric], dtype=np.float64).reshape(-1)
    if column.shape != (n,):
        raise SearchError(f"metric {metric!r} has {column.size} values for {n} candidates; return one per candidate")
    return column


def objective_matrix(objectives: Sequence[Objective], values: Mapping[str, Any], n: int) -> np.ndarray:
    """``F`` (n x n_obj) in minimisation space: columns in the objectives' order, "max" negated."""
    F = np.empty((n, len(objectives)))
    for j, objective in enumerate(objectives):
        column = _column(values, objective.metric, n)
        F[:, j] = -column if objective.direction == "max" else column
    return F


def constraint_matrix(constraints: Sequence[Constraint], values: Mapping[str, Any], n: int) -> np.ndarray:
    """``G`` (n x n_constr) in pymoo's form: feasible where ``G <= 0``."""
    G = np.empty((n, len(constraints)))
    for j, constraint in enumerate(constraints):
        column = _column(values, constraint.metric, n)
        G[:, j] = column - constraint.bound if constraint.op == "<=" else constraint.bound - column
    return G


class CanonicalRepair(Repair):
    """Round to integers, clip to bounds, and map to the space's canonical form (inactive genes fixed)."""

    def __init__(self, space: SearchSpace) -> None:
        super().__init__()
        self.space = space

    def _do(self, problem: Any, X: np.ndarray, **kwargs: Any) -> np.ndarray:
        rows = np.clip(np.rint(np.asarray(X, dtype=np.float64)), self.space.xl, self.space.xu).astype(np.int64)
        return self.space.canonical(rows)


class SearchProblem(Problem):
    """Objectives (and constraints) of a whole population from one ``predict(X)`` call per generation.

    ``predict`` may be None for a problem only used to describe the shape of the search to pymoo (the
    NSGA-II baseline, whose values come from real evaluations through ask/tell); evaluating it is then
    an error.
    """

    def __init__(
        self,
        space: SearchSpace,
        objectives: Sequence[Objective],
        predict: Predict | None,
        constraints: Sequence[Constraint] = (),
    ) -> None:
        check_objectives(objectives, constraints)
        self.space = space
        self.objectives = tuple(objectives)
        self.constraints = tuple(constraints)
        self.predict = predict
        super().__init__(
            n_var=space.n_var,
            n_obj=len(self.objectives),
            n_ieq_constr=len(self.constraints),
            xl=np.asarray(space.xl, dtype=np.int64),
            xu=np.asarray(space.xu, dtype=np.int64),
            vtype=int,
        )

    def _evaluate(self, x: np.ndarray, out: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        if self.predict is None:
            raise SearchError("this SearchProblem has no predict callable; give one to score candidates")
        X = np.asarray(x, dtype=np.int64)
        values = self.predict(X)
        out["F"] = objective_matrix(self.objectives, values, len(X))
        if self.constraints:
            out["G"] = constraint_matrix(self.constraints, values, len(X))


def integer_nsga2(space: SearchSpace, pop_size: int, seed: int, sampling: Any = None) -> NSGA2:
    """pymoo's NSGA-II set up for integer genes in canonical form (pymoo's recipe for discrete variables).

    ``sampling`` defaults to ``IntegerRandomSampling``; an array of rows seeds the first population.
    Duplicates (after repair) are eliminated, so one generation never holds a candidate twice.
    """
    return NSGA2(
        pop_size=pop_size,
        sampling=IntegerRandomSampling() if sampling is None else sampling,
        crossover=SBX(prob=0.9, eta=3.0, vtype=float, repair=RoundingRepair()),
        mutation=PM(prob=1.0, eta=3.0, vtype=float, repair=RoundingRepair()),
        repair=CanonicalRepair(space),
        eliminate_duplicates=True,
        seed=seed,
    )
