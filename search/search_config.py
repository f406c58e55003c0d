"""The ``search:`` section of a run config: target profile, joint space, objectives, method, budget.

Objectives and constraints are written the way people say them (``accuracy: max``,
``"latency_ms <= 20"``) and kept in the order written: the first objective is the one fronts are
sorted by, and reports plot the first two.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from search.bert_evaluation import METRICS
from search.engine import METHODS, PROPOSALS
from search.problem import Constraint, Objective
from supernet.errors import ConfigError

_CONSTRAINT = re.compile(r"^\s*([a-z_]+)\s*(<=|>=)\s*([-+0-9.eE]+)\s*$")
_KEYS = {
    "profile",
    "profile_dirs",
    "tables",
    "precisions",
    "objectives",
    "constraints",
    "method",
    "storage",
    "budget",
    "population",
    "inner_generations",
    "proposal",
    "validation_examples",
    "calibration_batches",
    "remeasure_front",
    "export",
    "profile_validation",
    "start_from_full_model",
}


def _metric(name: Any, where: str) -> str:
    if name not in METRICS:
        raise ConfigError(f"{where}: unknown metric {name!r}; use one of {', '.join(METRICS)}")
    return str(name)


def parse_objectives(value: Any) -> tuple[Objective, ...]:
    """``[{accuracy: max}, {latency_ms: min}]`` or ``["accuracy:max", "latency_ms:min"]``."""
    if not isinstance(value, list) or not 2 <= len(value) <= 3:
        raise ConfigError("search.objectives must list two or three objectives, e.g. [accuracy: max, latency_ms: min]")
    objectives = []
    for item in value:
        if isinstance(item, str) and ":" in item:
            name, _, goal = item.partition(":")
            item = {name.strip(): goal.strip()}
        if not isinstance(item, Mapping) or len(item) != 1:
            raise ConfigError(f"search.objectives: write each objective as 'metric: max|min', got {item!r}")
        ((metric, direction),) = item.items()
        if direction not in ("min", "max"):
            raise ConfigError(f"search.objectives: direction of {metric} must be min or max, got {direction!r}")
        objectives.append(Objective(_metric(metric, "search.objectives"), "max" if direction == "max" else "min"))
    if len({o.metric for o in objectives}) != len(objectives):
        raise ConfigError("search.objectives names a metric twice; give each objective once")
    return tuple(objectives)


def parse_constraints(value: Any) -> tuple[Constraint, ...]:
    """``["accuracy >= 0.8", "latency_ms <= 20"]``."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError('search.constraints must be a list like ["accuracy >= 0.8", "latency_ms <= 20"]')
    constraints = []
    for item in value:
        match = _CONSTRAINT.match(str(item))
        if match is None:
            raise ConfigError(f"search.constraints: cannot read {item!r}; write 'metric <= number' or '>='")
        metric, op, bound = match.groups()
        constraints.append(
            Constraint(_metric(metric, "search.constraints"), "<=" if op == "<=" else ">=", float(bound))
        )
    return tuple(constraints)


@dataclass(frozen=True)
class SearchConfig:
    profile: str = "x86-inductor-b1"
    profile_dirs: tuple[str, ...] = ()
    tables: str | None = None
    precisions: tuple[str, ...] | None = None
    objectives: tuple[Objective, ...] = field(
        default_factory=lambda: (Objective("accuracy", "max"), Objective("latency_ms", "min"))
    )
    constraints: tuple[Constraint, ...] = ()
    method: str = "predictor"
    #: Where the ``optuna`` method keeps its study: an SQLAlchemy URL; None: ``optuna.db`` (SQLite) next to
    #: the evaluations, in ``<run_dir>/search/<profile>/``.
    storage: str | None = None
    budget: int = 60
    population: int = 12
    #: How the predictor method proposes candidates: "local" (neighbours of the measured front, by predicted
    #: hypervolume gain) or "global" (NSGA-II over the predictions); see search.engine.
    proposal: str = "local"
    #: NSGA-II generations on the predictors per iteration (the global proposal only).
    inner_generations: int = 40
    validation_examples: int = 400
    calibration_batches: int = 4
    remeasure_front: bool = True
    #: Open the first population with the full model in each searched precision (see search.engine).
    start_from_full_model: bool = True
    #: Which front members ``elastiq run`` exports (rules of ``search.export.choose``).
    export: tuple[str, ...] = ("most_accurate", "fastest")
    #: Random (arch, policy) pairs measured end to end when the profile has no latency table for this
    #: model yet and the search measures one first (see ``search.search_run.load_context``).
    profile_validation: int = 30

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"search.method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.proposal not in PROPOSALS:
            raise ConfigError(f"search.proposal must be one of {', '.join(PROPOSALS)}, got {self.proposal!r}")
        if self.storage is not None:
            if not isinstance(self.storage, str) or not self.storage.strip():
                raise ConfigError(
                    f"search.storage must be an SQLAlchemy URL such as 'sqlite:///runs/optuna.db', got {self.storage!r}"
                )
            if self.method != "optuna":
                raise ConfigError(
                    f"search.storage is the optuna method's study storage, but search.method is {self.method}; "
                    "remove storage or set method: optuna"
                )
        names = ("budget", "population", "inner_generations", "validation_examples", "calibration_batches")
        for name in (*names, "profile_validation"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"search.{name} must be a positive integer, got {value!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> SearchConfig:
        data = dict(data or {})
        unknown = set(data) - _KEYS
        if unknown:
            raise ConfigError(f"unknown search keys {sorted(unknown)}; allowed: {sorted(_KEYS)}")
        values: dict[str, Any] = dict(data)
        if "objectives" in data:
            values["objectives"] = parse_objectives(data["objectives"])
        if "constraints" in data:
            values["constraints"] = parse_constraints(data["constraints"])
        if "profile_dirs" in data:
            values["profile_dirs"] = tuple(str(d) for d in data["profile_dirs"] or ())
        if "export" in data:
            if not isinstance(data["export"], list):
                raise ConfigError(
                    "search.export must be a list of rules, e.g. ['most_accurate', 'fastest: accuracy >= 0.8']"
                )
            values["export"] = tuple(str(rule) for rule in data["export"])
        if data.get("precisions") is not None:
            if not isinstance(data["precisions"], list) or not data["precisions"]:
                raise ConfigError("search.precisions must be a non-empty list, e.g. [fp32, int8_static]")
            values["precisions"] = tuple(str(p) for p in data["precisions"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "profile_dirs": list(self.profile_dirs),
            "tables": self.tables,
            "precisions": list(self.precisions) if self.precisions is not None else None,
            "objectives": [{o.metric: o.direction} for o in self.objectives],
            "constraints": [f"{c.metric} {c.op} {c.bound:g}" for c in self.constraints],
            "method": self.method,
            "storage": self.storage,
            "budget": self.budget,
            "population": self.population,
            "proposal": self.proposal,
            "inner_generations": self.inner_generations,
            "validation_examples": self.validation_examples,
            "calibration_batches": self.calibration_batches,
            "remeasure_front": self.remeasure_front,
            "start_from_full_model": self.start_from_full_model,
            "export": list(self.export),
            "profile_validation": self.profile_validation,
        }
