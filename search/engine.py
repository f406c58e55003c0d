"""The search engine: random search, NSGA-II on real evaluations (pymoo or optuna), and NSGA-II with predictors.

``run_search`` takes any ``SearchSpace``, the user's batch evaluation function and objectives in the
user's order, and spends exactly ``budget`` distinct real evaluations. The guarantees, each a lesson
from the reference implementation (see DESIGN.md):

* **No candidate is evaluated twice.** Every real evaluation goes into a ``ResultsStore`` keyed by the
  canonical encoding; the engine asks the store before it evaluates, and dedupes within a batch too.
* **The budget is exact.** The last batch is cut to fit; nothing is rounded to whole generations.
* **A killed search resumes.** The store is written after every evaluation (or every
  ``eval_batch_size`` rows); re-running with the same store, method and seed continues where it stopped
  and proposes exactly the candidates an uninterrupted run would have proposed (see "Resume" below).
* **Everything returned was really evaluated.** The front is computed from the store, never from
  predictions.

Methods
-------
``random``
    Iteration ``i`` draws up to ``population`` distinct, not yet evaluated candidates uniformly
    (``space.sample``) with ``np.random.default_rng([seed, i])``.

Every method starts from the same first population: the user's ``initial`` candidates (if any; e.g. the
full model in each uniform precision, the points a deployment compares against), filled up to
``population`` with the random method's draw (``nsga2`` and ``optuna`` without ``initial`` candidates start
from their own random sampling). Without them a search can only stumble on the large end of the space,
and its front may fail to reach the baselines it is judged against.
``nsga2``
    pymoo's NSGA-II where every individual is a real evaluation, driven generation by generation
    through pymoo's ask/tell interface. Offspring that are already in the store (pymoo removes duplicates
    within a generation and against the current population, but an offspring may equal a candidate
    evaluated in an earlier generation) are told their stored values and cost no budget; only the new
    ones are evaluated. If the remaining budget is smaller than the number of new offspring, the first
    ones (in pymoo's order) are evaluated and the search stops without telling that generation. A
    converged (or small) space can make NSGA-II propose only evaluated candidates; after 20 such
    generations in a row the search stops early, with a warning, rather than loop without spending budget.
``predictor`` (SimQ-NAS style)
    Iteration 0 is the random method's iteration 0. Every later iteration ``i`` fits one
    ``MetricPredictor`` per objective/constraint metric (except those ``exact_metrics`` computes) on all
    candidates measured in iterations ``< i`` and proposes the next ``population`` candidates with them,
    in one of two ways (``proposal``):

    ``"local"`` (default)
        The neighbours (one gene changed, ``SearchSpace.neighbours``) of the ``2 * population`` best
        measured candidates (true rank and crowding), chosen greedily by *predicted hypervolume
        improvement* over the measured feasible front (``search.acquisition``; reference point: the
        ``default_reference_point`` of the rows measured so far, so a plan never depends on the caller's
        reporting reference); when fewer than ``population`` neighbours are predicted to improve it, the
        rest by predicted rank and crowding. Predictors rank best near what they were fitted on, and
        the measured front is where improvements are; on NAS-Bench-201 this proposal reaches plain
        NSGA-II's hypervolume with fewer evaluations, where the global one does not
        (``benchmarks/results/search_efficiency.md``).
    ``"global"``
        NSGA-II on the predictions for ``inner_generations`` generations (a fresh seed drawn from
        ``default_rng([seed, i])``; the first population is seeded with the best measured candidates),
        and the next ``population`` candidates from everything the inner search visited that is not yet
        measured, by predicted non-domination rank and crowding distance (pymoo's ``RankAndCrowding``,
        constraints first). It explores the whole space, but spends evaluations where the predictors
        extrapolate.

    The predictors' quality is recorded per iteration: out-of-fold (``cv``) and on the candidates they
    then proposed, once those are measured (``new_candidates``, the honest one).
``optuna``
    NSGA-II on real evaluations through optuna's ``NSGAIISampler`` (constraints by constrained
    domination), run as an optuna study in a storage (``storage``: an SQLAlchemy URL, by default
    ``sqlite:///<store folder>/optuna.db``; ``study_name``, default ``"elastiq"``) that optuna's own tools
    can inspect (``optuna-dashboard``, ``study.trials_dataframe()``). One generation (``population``
    trials) is asked, evaluated in one batch and told; the store, budget, no-re-evaluation and resume
    guarantees are the engine's, with each trial seeded from (seed, its place in the search) so that a
    resumed study proposes what an uninterrupted one would have. The first population (with ``initial``
    candidates) is enqueued as the first trials. Details, and what optuna does not reproduce, in
    ``search.optuna_backend``.

Resume
------
Iteration ``i`` is a function of the seed, ``i``, and the evaluations of iterations ``< i`` (each row's
``iteration`` is stored), never of wall-clock state. On resume the engine restarts at the last stored
iteration, re-plans it from the rows before it (the same plan as the first time) and evaluates only
what the store lacks. NSGA-II keeps its state inside pymoo, so the ``nsga2`` method replays its
generations from the start with the same seed, answering every stored candidate from the store; pymoo
is deterministic given its seed and the values it is told, so the replay reaches the interrupted
generation in the same state. The store also keeps the search's settings (``search.json``); resuming
with a different method, seed, population, objectives, constraints or space is an error (a larger
budget is fine: the search simply continues).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from pymoo.core.evaluator import Evaluator
from pymoo.core.population import Population
from pymoo.core.termination import NoTermination
from pymoo.indicators.hv import HV
from pymoo.operators.survival.rank_and_crowding import RankAndCrowding
from pymoo.problems.static import StaticProblem
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting
from tqdm.auto import tqdm

from predictors.errors import PredictorError
from predictors.estimator import MIN_ROWS, MetricPredictor
from predictors.quality import quality
from search.acquisition import greedy_hypervolume_improvement
from search.errors import SearchError
from search.problem import (
    Constraint,
    Objective,
    SearchProblem,
    check_objectives,
    constraint_matrix,
    integer_nsga2,
    objective_matrix,
    required_metrics,
)
from search.space import SearchSpace
from search.store import RESERVED, EvaluationRecord, ResultsStore

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

log = logging.getLogger(__name__)

#: ``evaluate(X) -> [metrics of row 0, metrics of row 1, ...]`` for canonical rows ``X``.
Evaluate = Callable[[np.ndarray], Sequence[Mapping[str, float]]]
#: ``exact_metrics(X) -> {metric: values}``: cheap exact metrics (e.g. model size) of canonical rows.
ExactMetrics = Callable[[np.ndarray], Mapping[str, np.ndarray]]
Method = Literal["predictor", "nsga2", "random", "optuna"]
Proposal = Literal["local", "global"]

METHODS = ("predictor", "nsga2", "random", "optuna")
#: How the predictor method proposes candidates (see the module docstring).
PROPOSALS = ("local", "global")
SETTINGS_FILE = "search.json"
QUALITY_FILE = "predictor_quality.json"
#: Default reference point: the first batch's worst value per objective plus this share of its spread.
REFERENCE_MARGIN = 0.1
#: NSGA-II stops after this many consecutive generations whose offspring were all evaluated before.
_MAX_STALLED_GENERATIONS = 20
#: Random search gives up on finding new candidates after this many draws of a batch's size without one.
_MAX_SAMPLING_ROUNDS = 100
#: The local proposal searches the neighbours of this many best measured candidates per population slot.
_LOCAL_ELITES_PER_SLOT = 2


@dataclass(frozen=True)
class SearchResult:
    """What a search found: everything here was really evaluated.

    ``front``: the non-dominated evaluated candidates (feasible ones where any exist), columns ``key``,
    the objective metrics in the user's order, the other metrics, then the store's bookkeeping columns;
    sorted by the first objective, best first. ``history``: every evaluation in order (the store's
    frame). ``hypervolume``: ``(evaluations so far, hypervolume)`` after each batch, in minimisation space
    against ``reference_point`` (given in the objectives' own units and order). ``predictor_quality``: one
    dict per predictor iteration (empty for the other methods).
    """

    front: pd.DataFrame
    history: pd.DataFrame
    hypervolume: list[tuple[int, float]]
    predictor_quality: list[dict[str, Any]]
    method: str
    seed: int
    reference_point: tuple[float, ...]
    objectives: tuple[Objective, ...]
    constraints: tuple[Constraint, ...] = ()

    @property
    def n_evaluations(self) -> int:
        return len(self.history)


# ------------------------------------------------------------------------------------------------------
# Post-hoc analysis of a history (also used to compare methods against one reference point)
# ------------------------------------------------------------------------------------------------------


def _values(history: pd.DataFrame, metrics: Sequence[str]) -> dict[str, np.ndarray]:
    missing = [m for m in metrics if m not in history.columns]
    if missing:
        raise SearchError(f"history lacks metric columns {missing}; pass the history of a search with those metrics")
    return {m: history[m].to_numpy(dtype=np.float64) for m in metrics}


def _minimisation(
    history: pd.DataFrame, objectives: Sequence[Objective], constraints: Sequence[Constraint]
) -> tuple[np.ndarray, np.ndarray]:
    """``F`` and the total constraint violation of every row of ``history``."""
    values = _values(history, required_metrics(objectives, constraints))
    F = objective_matrix(objectives, values, len(history))
    G = constraint_matrix(constraints, values, len(history))
    violation = np.maximum(G, 0.0).sum(axis=1) if constraints else np.zeros(len(history))
    return F, violation


def default_reference_point(history: pd.DataFrame, objectives: Sequence[Objective]) -> tuple[float, ...]:
    """The first batch's worst value per objective, moved outwards by 10% of the batch's spread.

    The first batch (the rows of the first stored iteration) is the initial random population, a
    uniform sample of the space drawn before the search has steered anything; its worst values are the
    space's own scale. The margin keeps the batch's extreme points contributing (a point on the
    reference point adds no volume). Returned in the objectives' own units (a "max" objective's
    reference is below its worst value). It is fixed once the first batch exists, so the hypervolume
    curve of one search is monotone; to compare searches, give all of them one explicit point.
    """
    if history.empty:
        raise SearchError("cannot derive a reference point from an empty history; give reference_point explicitly")
    first = history[history["iteration"] == history["iteration"].iloc[0]]
    F = objective_matrix(objectives, _values(first, [o.metric for o in objectives]), len(first))
    F = F[np.all(np.isfinite(F), axis=1)]
    if len(F) == 0:
        raise SearchError("the first batch has no finite objective values; give reference_point explicitly")
    worst, spread = F.max(axis=0), np.ptp(F, axis=0)
    spread = np.where(spread > 0, spread, np.maximum(np.abs(worst), 1.0))
    reference = worst + REFERENCE_MARGIN * spread
    return tuple(float(-r if o.direction == "max" else r) for r, o in zip(reference, objectives, strict=True))


def _reference_in_minimisation(objectives: Sequence[Objective], reference_point: Sequence[float]) -> np.ndarray:
    reference = np.asarray(reference_point, dtype=np.float64).reshape(-1)
    if reference.shape != (len(objectives),) or not np.all(np.isfinite(reference)):
        raise SearchError(
            f"reference_point {list(reference_point)} must give one finite value per objective ({len(objectives)})"
        )
    return np.array([-r if o.direction == "max" else r for r, o in zip(reference, objectives, strict=True)])


def hypervolume_curve(
    history: pd.DataFrame,
    objectives: Sequence[Objective],
    reference_point: Sequence[float],
    constraints: Sequence[Constraint] = (),
) -> list[tuple[int, float]]:
    """``(evaluations so far, hypervolume of the feasible evaluated points)`` after each batch.

    Batches are runs of equal ``iteration`` in evaluation order. ``reference_point`` is in the
    objectives' own units and order; the hypervolume is pymoo's ``HV`` in minimisation space ("max"
    objectives negated). Giving several searches' histories the same point makes them comparable.
    """
    check_objectives(objectives, constraints)
    indicator = HV(ref_point=_reference_in_minimisation(objectives, reference_point))
    if history.empty:
        return []
    F, violation = _minimisation(history, objectives, constraints)
    usable = (violation <= 0) & np.all(np.isfinite(F), axis=1)
    iterations = history["iteration"].to_numpy()
    ends = [i + 1 for i in range(len(history)) if i + 1 == len(history) or iterations[i + 1] != iterations[i]]
    curve = []
    for end in ends:
        points = F[:end][usable[:end]]
        curve.append((end, float(indicator.do(points)) if len(points) else 0.0))
    return curve


def pareto_front(
    history: pd.DataFrame, objectives: Sequence[Objective], constraints: Sequence[Constraint] = ()
) -> pd.DataFrame:
    """The non-dominated rows of ``history`` (pymoo's ``NonDominatedSorting``), best first objective first.

    Only feasible rows compete when any exist; otherwise the least-violating rows do (and a warning
    says so), so a search with impossible constraints still shows what came closest.
    """
    check_objectives(objectives, constraints)
    if history.empty:
        return history.copy()
    F, violation = _minimisation(history, objectives, constraints)
    finite = np.all(np.isfinite(F), axis=1)
    feasible = finite & (violation <= 0)
    if feasible.any():
        candidates = np.flatnonzero(feasible)
    else:
        least = violation[finite].min() if finite.any() else np.inf
        candidates = np.flatnonzero(finite & (violation <= least))
        log.warning("no evaluated candidate meets every constraint; the front holds the least-violating ones")
    if len(candidates) == 0:
        return history.iloc[:0].copy()
    best = NonDominatedSorting().do(F[candidates], only_non_dominated_front=True)
    rows = candidates[np.asarray(best, dtype=int)]
    rows = rows[np.lexsort(F[rows].T[::-1])]
    front = history.iloc[rows].copy()
    front.insert(len(front.columns), "feasible", violation[rows] <= 0)
    first = ["key", *[o.metric for o in objectives]]
    rest = [c for c in front.columns if c not in first]
    return front[first + rest].reset_index(drop=True)


# ------------------------------------------------------------------------------------------------------
# The search
# ------------------------------------------------------------------------------------------------------


@dataclass
class _Plan:
    """The candidates one iteration proposes, how, and (predictor method) what was predicted for them."""

    X: np.ndarray
    labels: list[str]
    predicted: dict[str, np.ndarray] | None = None
    quality: dict[str, Any] | None = None


@dataclass(kw_only=True)
class StoreEvaluator:
    """Real evaluation into a ``ResultsStore``: canonical rows, deduplicated, cut to the budget.

    The part of a search every method shares (the ``optuna`` back-end too): ``evaluate_new`` evaluates
    the rows the store lacks, in batches of at most ``eval_batch_size``, checks the results, merges
    ``exact_metrics`` and writes every row to the store as it comes (with its ``iteration`` and
    ``label``), updating the progress ``bar`` when there is one.
    """

    space: SearchSpace
    evaluate: Evaluate
    objectives: tuple[Objective, ...]
    constraints: tuple[Constraint, ...]
    budget: int
    exact_metrics: ExactMetrics | None
    store: ResultsStore
    eval_batch_size: int | None
    bar: Any = None

    @property
    def required(self) -> tuple[str, ...]:
        return required_metrics(self.objectives, self.constraints)

    def evaluate_new(self, X: np.ndarray, iteration: int, labels: Sequence[str]) -> None:
        """Evaluate the rows of ``X`` the store lacks (first occurrence only), cut to the remaining budget."""
        keys = self.space.keys(X)
        todo: list[int] = []
        seen: set[str] = set()
        for i, key in enumerate(keys):
            if key not in seen and not self.store.contains(key):
                todo.append(i)
                seen.add(key)
        todo = todo[: max(0, self.budget - len(self.store))]
        size = self.eval_batch_size or max(1, len(todo))
        for start in range(0, len(todo), size):
            chunk = todo[start : start + size]
            self._evaluate_chunk(X[chunk], [keys[i] for i in chunk], iteration, [labels[i] for i in chunk])

    def _evaluate_chunk(self, X: np.ndarray, keys: list[str], iteration: int, labels: list[str]) -> None:
        started = time.perf_counter()
        results = self.evaluate(X.copy())
        seconds = (time.perf_counter() - started) / len(X)
        if isinstance(results, Mapping) or len(results) != len(X):
            count = "a mapping" if isinstance(results, Mapping) else f"{len(results)} results"
            raise SearchError(f"evaluate returned {count} for {len(X)} candidates; return one dict of metrics per row")
        exact = dict(self.exact_metrics(X.copy())) if self.exact_metrics is not None else {}
        for i, (row, key, label) in enumerate(zip(X, keys, labels, strict=True)):
            if not isinstance(results[i], Mapping):
                raise SearchError(f"evaluate returned {results[i]!r} for row {i}; return a dict of metric -> number")
            metrics = {m: float(np.asarray(v, dtype=np.float64).reshape(-1)[i]) for m, v in exact.items()}
            metrics.update(results[i])
            for metric in self.required:
                value = metrics.get(metric)
                if value is None or not np.isfinite(float(value)):
                    raise SearchError(
                        f"evaluation of {key!r} gave {metric}={value!r}; return a finite value for every "
                        f"objective and constraint metric ({', '.join(self.required)})"
                    )
            self.store.add(key, metrics, self.space.describe(row), iteration, label, seconds)
            if self.bar is not None:
                self.bar.update(1)

    def stored_values(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        records = [self.store.get(k) for k in keys]
        return {m: np.array([r.metrics[m] for r in records]) for m in self.required}


@dataclass(kw_only=True)
class _Search(StoreEvaluator):
    method: str
    population: int
    seed: int
    inner_generations: int
    inner_population: int
    predictor_params: dict[str, Any]
    initial: np.ndarray
    proposal: str = "local"
    quality_log: list[dict[str, Any]] = field(default_factory=list)

    # -- random and predictor methods: iterations re-planned from the store ---------------------------

    def run_iterations(self) -> None:
        records = self.store.records()
        iteration = records[-1].iteration if records else 0
        stored_quality = self.store.read_json(QUALITY_FILE) or []
        self.quality_log = [q for q in stored_quality if q["iteration"] < iteration]
        while len(self.store) < self.budget:
            before = [r for r in self.store.records() if r.iteration < iteration]
            plan = self.plan(iteration, before, self.population)  # never depends on the budget: see run_search
            if len(plan.X) == 0:
                log.warning("no new candidate found after %d evaluations; the space looks exhausted", len(self.store))
                break
            self.evaluate_new(plan.X, iteration, plan.labels)
            if plan.quality is not None:
                self.record_quality(plan, iteration)
            iteration += 1

    def plan(self, iteration: int, before: list[EvaluationRecord], n: int) -> _Plan:
        rng = np.random.default_rng([self.seed, iteration])
        measured = {r.key for r in before}
        if iteration == 0:
            return self.first_population(rng, n, measured)
        if self.method == "random" or len(before) < MIN_ROWS:
            X = self.random_rows(rng, n, measured)
            return _Plan(X, ["random"] * len(X))
        return self.predictor_plan(rng, iteration, before, n)

    def first_population(self, rng: np.random.Generator, n: int, exclude: set[str]) -> _Plan:
        """The user's initial candidates, then random ones up to ``n`` (every method's iteration 0)."""
        keys = self.space.keys(self.initial)
        X0 = np.array([row for row, key in zip(self.initial, keys, strict=True) if key not in exclude], dtype=np.int64)
        X0 = X0.reshape(-1, self.space.n_var)
        extra = self.random_rows(rng, n - len(X0), exclude | set(keys))
        return _Plan(np.concatenate([X0, extra]), ["initial"] * len(X0) + ["random"] * len(extra))

    def random_rows(self, rng: np.random.Generator, n: int, exclude: set[str]) -> np.ndarray:
        """Up to ``n`` distinct canonical rows whose keys are not in ``exclude``, in draw order."""
        chosen: list[np.ndarray] = []
        seen = set(exclude)
        draw = max(2 * n, 32)
        for _ in range(_MAX_SAMPLING_ROUNDS):
            if len(chosen) >= n or len(seen) >= self.space.n_encodings:
                break
            X = self.space.sample(draw, rng)
            for row, key in zip(X, self.space.keys(X), strict=True):
                if key not in seen and len(chosen) < n:
                    seen.add(key)
                    chosen.append(row)
        return np.array(chosen, dtype=np.int64).reshape(-1, self.space.n_var)

    def predictor_plan(self, rng: np.random.Generator, iteration: int, before: list[EvaluationRecord], n: int) -> _Plan:
        predictor_seed, inner_seed = (int(s) for s in rng.integers(0, 2**31 - 1, size=2))
        X_train = np.array([self.space.from_key(r.key) for r in before])
        stored = {m: np.array([r.metrics[m] for r in before]) for m in self.required}  # per row of X_train
        features = self.space.features(X_train)
        exact_names = set(self.exact_metrics(X_train[:1])) if self.exact_metrics is not None else set()
        predicted_names = [m for m in self.required if m not in exact_names]
        models = {
            m: MetricPredictor(seed=predictor_seed, **self.predictor_params).fit(features, stored[m])
            for m in predicted_names
        }
        space, exact_metrics = self.space, self.exact_metrics

        def predict(X: np.ndarray) -> dict[str, np.ndarray]:
            values = {m: model.predict(space.features(X)) for m, model in models.items()}
            if exact_metrics is not None and len(predicted_names) < len(self.required):
                exact = exact_metrics(X)
                values.update({m: np.asarray(exact[m], dtype=np.float64) for m in self.required if m not in values})
            return values

        problem = SearchProblem(self.space, self.objectives, predict, self.constraints)
        measured = {r.key for r in before}
        if self.proposal == "local":
            elites = self.select_measured(problem, X_train, stored, _LOCAL_ELITES_PER_SLOT * n, rng)
            pool = self.space.neighbours(elites)
        else:
            pool = self.inner_search(problem, rng, inner_seed, X_train, stored)
        pool_keys = self.space.keys(pool) if len(pool) else []
        fresh = [i for i, k in enumerate(pool_keys) if k not in measured]
        if not fresh:
            chosen = pool[:0]
        elif self.proposal == "local":
            chosen = pool[fresh][self.select_improving(problem, pool[fresh], n, before, stored, rng)]
        else:
            chosen = pool[fresh][self.select(problem, pool[fresh], n, rng)]
        labels = ["predictor"] * len(chosen)
        if len(chosen) < n:  # the pool held too few new candidates: fill at random
            extra = self.random_rows(rng, n - len(chosen), measured | set(self.space.keys(chosen)))
            chosen = np.concatenate([chosen, extra]) if len(chosen) else extra
            labels += ["random"] * len(extra)
        predicted = dict(predict(chosen)) if len(chosen) else None
        entry = {
            "iteration": iteration,
            "n_train": len(before),
            "metrics": {
                m: {"family": model.best_family_, "cv": model.cv_quality_.to_dict(), "new_candidates": None}
                for m, model in models.items()
            },
        }
        log.info("iteration %d: predictors fitted on %d candidates, proposing %d", iteration, len(before), len(chosen))
        return _Plan(chosen, labels, predicted=predicted, quality=entry)

    def inner_search(
        self,
        problem: SearchProblem,
        rng: np.random.Generator,
        inner_seed: int,
        X_measured: np.ndarray,
        measured: Mapping[str, np.ndarray],
    ) -> np.ndarray:
        """Run NSGA-II on the predictors; every distinct candidate it scored, in the order first visited.

        ``X_measured`` and ``measured`` (their stored metric values) seed its first population.
        """
        best = self.select_measured(problem, X_measured, measured, self.inner_population // 2, rng)
        random_fill = self.space.sample(self.inner_population - len(best), rng)
        algorithm = integer_nsga2(
            self.space, self.inner_population, inner_seed, sampling=np.concatenate([best, random_fill])
        )
        algorithm.setup(problem, termination=("n_gen", self.inner_generations))
        visited: list[np.ndarray] = []
        while algorithm.has_next():
            algorithm.next()
            if algorithm.off is not None and len(algorithm.off):
                visited.append(np.asarray(algorithm.off.get("X"), dtype=np.int64))
        X = self.space.canonical(np.concatenate(visited))
        _, first = np.unique(np.array(self.space.keys(X)), return_index=True)
        return X[np.sort(first)]

    def select_measured(
        self,
        problem: SearchProblem,
        X: np.ndarray,
        values: Mapping[str, np.ndarray],
        n: int,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """The ``n`` best measured rows by (true) rank and crowding: the inner search's seeds."""
        n = min(n, len(X))
        return X[self._survivors(problem, X, values, n, rng)]

    def select_improving(
        self,
        problem: SearchProblem,
        X: np.ndarray,
        n: int,
        before: list[EvaluationRecord],
        measured: Mapping[str, np.ndarray],
        rng: np.random.Generator,
    ) -> np.ndarray:
        """Indices of up to ``n`` rows of ``X``: greedy predicted hypervolume gain, then predicted rank and crowding.

        ``measured`` holds the stored metric values of ``before``, in its order.
        """
        assert problem.predict is not None
        predicted = dict(problem.predict(X))
        frame = pd.DataFrame({"iteration": [r.iteration for r in before], **measured})
        reference = _reference_in_minimisation(self.objectives, default_reference_point(frame, self.objectives))
        F_measured = objective_matrix(self.objectives, measured, len(before))
        F_predicted = objective_matrix(self.objectives, predicted, len(X))
        feasible_measured = feasible_predicted = None
        if self.constraints:
            feasible_measured = np.all(constraint_matrix(self.constraints, measured, len(before)) <= 0, axis=1)
            feasible_predicted = np.all(constraint_matrix(self.constraints, predicted, len(X)) <= 0, axis=1)
        rows = np.arange(len(X)) if feasible_predicted is None else np.flatnonzero(feasible_predicted)
        front = F_measured if feasible_measured is None else F_measured[feasible_measured]
        chosen = [int(rows[i]) for i in greedy_hypervolume_improvement(front, F_predicted[rows], reference, n)]
        if len(chosen) < n:
            rest = np.setdiff1d(np.arange(len(X)), chosen)
            if len(rest):
                values = {m: v[rest] for m, v in predicted.items()}
                order = self._survivors(problem, X[rest], values, min(n - len(chosen), len(rest)), rng)
                chosen += [int(rest[i]) for i in order]
        return np.asarray(chosen, dtype=int)

    def select(self, problem: SearchProblem, X: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
        """Indices of (up to) ``n`` rows of ``X`` that predicted rank and crowding prefer, in survival order."""
        assert problem.predict is not None
        values = dict(problem.predict(X))  # one predict call per metric for the whole pool
        return np.asarray(self._survivors(problem, X, values, min(n, len(X)), rng), dtype=int)

    def _survivors(
        self, problem: SearchProblem, X: np.ndarray, values: Mapping[str, np.ndarray], n: int, rng: np.random.Generator
    ) -> list[int]:
        """pymoo's RankAndCrowding survival (feasible first, then least violation) on given metric values."""
        if n <= 0 or len(X) == 0:
            return []
        static: dict[str, Any] = {"F": objective_matrix(self.objectives, values, len(X))}
        if self.constraints:
            static["G"] = constraint_matrix(self.constraints, values, len(X))
        population = Population.new("X", X)
        Evaluator().eval(StaticProblem(problem, **static), population)
        return list(RankAndCrowding().do(problem, population, n_survive=n, random_state=rng, return_indices=True))

    def record_quality(self, plan: _Plan, iteration: int) -> None:
        """Score the plan's predictions on what was then measured (the honest quality), and persist it."""
        assert plan.quality is not None
        keys = self.space.keys(plan.X)
        done = [i for i, k in enumerate(keys) if self.store.contains(k)]
        for metric, entry in plan.quality["metrics"].items():
            if plan.predicted is None or len(done) < 2:
                continue
            measured = np.array([self.store.get(keys[i]).metrics[metric] for i in done])
            try:
                entry["new_candidates"] = quality(measured, plan.predicted[metric][done]).to_dict()
            except PredictorError as exc:
                log.warning("quality of %s predictions at iteration %d not computed: %s", metric, iteration, exc)
        self.quality_log.append(plan.quality)
        self.store.write_json(QUALITY_FILE, self.quality_log)

    # -- NSGA-II on real evaluations (ask/tell) --------------------------------------------------------

    def run_nsga2(self) -> None:
        problem = SearchProblem(self.space, self.objectives, None, self.constraints)
        sampling = None
        if len(self.initial):  # the shared first population; otherwise pymoo's own random sampling
            sampling = self.first_population(np.random.default_rng([self.seed, 0]), self.population, set()).X
        algorithm = integer_nsga2(self.space, self.population, self.seed, sampling=sampling)
        algorithm.setup(problem, termination=NoTermination())
        generation = stalled = 0
        while len(self.store) < self.budget:
            offspring = algorithm.ask()
            if offspring is None or len(offspring) == 0:
                log.warning("NSGA-II produced no new offspring after %d evaluations; stopping", len(self.store))
                break
            X = self.space.canonical(np.asarray(offspring.get("X")))
            self.evaluate_new(X, generation, ["nsga2"] * len(X))
            keys = self.space.keys(X)
            if not all(self.store.contains(k) for k in keys):
                break  # the budget ran out inside this generation
            # New to the search at this generation (also when replaying: the row's stored iteration says so).
            stalled = 0 if any(self.store.get(k).iteration == generation for k in keys) else stalled + 1
            if stalled >= _MAX_STALLED_GENERATIONS:
                log.warning(
                    "NSGA-II proposed only evaluated candidates for %d generations; stopping after %d evaluations",
                    stalled,
                    len(self.store),
                )
                break
            values = self.stored_values(keys)
            static: dict[str, Any] = {"F": objective_matrix(self.objectives, values, len(X))}
            if self.constraints:
                static["G"] = constraint_matrix(self.constraints, values, len(X))
            Evaluator().eval(StaticProblem(problem, **static), offspring)
            algorithm.tell(infills=offspring)
            generation += 1


def _settings(
    space: SearchSpace,
    method: str,
    seed: int,
    population: int,
    objectives: Sequence[Objective],
    constraints: Sequence[Constraint],
    inner_generations: int,
    inner_population: int,
    predictor_params: Mapping[str, Any],
    initial_keys: Sequence[str] = (),
    proposal: str = "global",
) -> dict[str, Any]:
    """What determines the sequence of candidates (the budget does not: a larger one continues)."""
    settings: dict[str, Any] = {
        "method": method,
        "seed": seed,
        "population": population,
        "objectives": [[o.metric, o.direction] for o in objectives],
        "constraints": [[c.metric, c.op, float(c.bound)] for c in constraints],
        "space": {
            "type": type(space).__name__,
            "names": list(space.names),
            "xl": space.xl.tolist(),
            "xu": space.xu.tolist(),
        },
    }
    if initial_keys:  # only when given, so stores written before this option still resume
        settings["initial"] = list(initial_keys)
    if method == "predictor":
        settings.update(
            inner_generations=inner_generations,
            inner_population=inner_population,
            predictor_params=dict(predictor_params),
        )
        if proposal != "global":  # stores written before the local proposal existed used the global one
            settings["proposal"] = proposal
    try:
        return dict(json.loads(json.dumps(settings)))
    except (TypeError, ValueError):
        raise SearchError(
            f"predictor_params {dict(predictor_params)} must be JSON-serialisable (plain values)"
        ) from None


def _check_store(store: ResultsStore, settings: dict[str, Any]) -> None:
    previous = store.read_json(SETTINGS_FILE)
    if previous is None and len(store):
        raise SearchError(
            f"results store {store.folder} holds evaluations but no {SETTINGS_FILE}; resume only a store a search wrote"
        )
    if previous is not None and previous != settings:
        differing = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
        raise SearchError(
            f"results store {store.folder} was written with other settings ({', '.join(differing)}); "
            "resume with the same settings or use a new folder"
        )
    iterations = [r.iteration for r in store.records()]
    if any(b < a for a, b in pairwise(iterations)):
        raise SearchError(f"results store {store.folder} has iterations out of order; it was not written by run_search")
    store.write_json(SETTINGS_FILE, settings)


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise SearchError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _initial_rows(space: SearchSpace, initial: Any, population: int) -> np.ndarray:
    """``initial`` validated, in canonical form, duplicates dropped (first kept)."""
    if initial is None or len(initial) == 0:
        return np.zeros((0, space.n_var), dtype=np.int64)
    X = space.canonical(space.validate(initial))
    _, first = np.unique(np.array(space.keys(X)), return_index=True)
    X = X[np.sort(first)]
    if len(X) > population:
        raise SearchError(
            f"{len(X)} distinct initial candidates exceed the population ({population}); "
            "give at most one population's worth or raise population"
        )
    return X


def run_search(
    space: SearchSpace,
    evaluate: Evaluate,
    objectives: Sequence[Objective],
    *,
    method: Method = "predictor",
    budget: int,
    population: int = 20,
    seed: int = 0,
    constraints: Sequence[Constraint] = (),
    exact_metrics: ExactMetrics | None = None,
    store: ResultsStore | None = None,
    inner_generations: int = 50,
    inner_population: int | None = None,
    predictor_params: Mapping[str, Any] | None = None,
    eval_batch_size: int | None = None,
    progress: bool = False,
    reference_point: Sequence[float] | None = None,
    initial: np.ndarray | Sequence[Sequence[int]] | None = None,
    storage: str | BaseStorage | None = None,
    study_name: str = "elastiq",
    proposal: Proposal = "local",
) -> SearchResult:
    """Search ``space`` for candidates that are Pareto-optimal in ``objectives``, spending ``budget`` evaluations.

    ``evaluate`` receives canonical rows (a batch, at most ``eval_batch_size`` rows, so that it can
    parallelise) and returns one dict of metrics per row, with every objective and constraint metric;
    metrics from ``exact_metrics`` are merged in first (``evaluate`` may omit them, its own values win)
    and, in the predictor method, are used exactly instead of being predicted. ``store`` (default: in
    memory) receives every evaluation as it happens; an existing store resumes its search.
    ``inner_population`` (default ``max(50, 2 * population)``) and ``predictor_params`` (keyword
    arguments of ``MetricPredictor`` other than ``seed``, e.g. ``families``) tune the predictor method;
    ``proposal`` (``"local"`` or ``"global"``) is how it proposes (the inner-search settings only matter
    for ``"global"``).
    ``reference_point`` (objectives' units and order) defaults to ``default_reference_point``.
    ``initial`` (rows of the space, at most ``population`` distinct ones) opens the first population of
    every method. ``storage`` (an SQLAlchemy URL or an optuna storage object; default SQLite in the
    store's folder, in memory for an in-memory store) and ``study_name`` place the ``optuna`` method's
    study; giving them to another method is an error (they would be silently unused). See the module
    docstring for the methods and the guarantees.

    What an iteration proposes never depends on the budget (the budget only cuts the last batch, in
    the order proposed), so a search with budget ``b`` evaluates exactly the first ``b`` candidates of
    the same search with a larger budget. Hence a finished search continues when re-run on its store
    with a larger budget, and a store holding more than ``budget`` evaluations gives the result of its
    first ``budget``.
    """
    if method not in METHODS:
        raise SearchError(f"unknown search method {method!r}; use one of {', '.join(METHODS)}")
    if proposal not in PROPOSALS:
        raise SearchError(f"unknown proposal {proposal!r}; use one of {', '.join(PROPOSALS)}")
    if not isinstance(space, SearchSpace):
        raise SearchError(f"space must be a SearchSpace, got {type(space).__name__}; subclass search.space.SearchSpace")
    check_objectives(objectives, constraints)
    reserved = [m for m in required_metrics(objectives, constraints) if m in RESERVED]
    if reserved:
        raise SearchError(f"metric names {reserved} are reserved by the results store; rename them")
    budget = _positive_int("budget", budget)
    population = _positive_int("population", population)
    inner_generations = _positive_int("inner_generations", inner_generations)
    inner_population = _positive_int(
        "inner_population", max(50, 2 * population) if inner_population is None else inner_population
    )
    if eval_batch_size is not None:
        eval_batch_size = _positive_int("eval_batch_size", eval_batch_size)
    params = dict(predictor_params or {})
    if "seed" in params:
        raise SearchError("predictor_params may not set seed; the engine derives it from the search seed per iteration")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise SearchError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    if method == "optuna":
        from search.optuna_backend import check_storage_arguments  # optuna is imported only when used

        check_storage_arguments(storage, study_name)
        if population < 2:
            raise SearchError(f"the optuna method needs population >= 2 (NSGA-II crossover), got {population}")
    elif storage is not None or study_name != "elastiq":
        raise SearchError(f"storage and study_name belong to the optuna method, not {method!r}; leave them unset")
    if reference_point is not None:  # checked now, not after hours of evaluations
        _reference_in_minimisation(objectives, reference_point)
    initial_rows = _initial_rows(space, initial, population)
    store = ResultsStore() if store is None else store
    settings = _settings(
        space,
        method,
        seed,
        population,
        objectives,
        constraints,
        inner_generations,
        inner_population,
        params,
        space.keys(initial_rows),
        proposal,
    )
    opened = None
    if method == "optuna":  # a storage that cannot be opened is an error before the store is touched
        from search.optuna_backend import open_study

        opened = open_study(store, storage, study_name, objectives)
    _check_store(store, settings)
    search = _Search(
        space=space,
        evaluate=evaluate,
        objectives=tuple(objectives),
        constraints=tuple(constraints),
        method=method,
        budget=budget,
        population=population,
        seed=seed,
        exact_metrics=exact_metrics,
        store=store,
        inner_generations=inner_generations,
        inner_population=inner_population,
        predictor_params=params,
        eval_batch_size=eval_batch_size,
        initial=initial_rows,
        proposal=proposal,
    )
    if len(store) < budget:
        with tqdm(total=budget, initial=len(store), disable=not progress, desc=f"search ({method})") as bar:
            search.bar = bar
            if method == "nsga2":
                search.run_nsga2()
            elif method == "optuna":
                from search.optuna_backend import optimize

                assert opened is not None
                first = initial_rows  # with initial candidates, the shared first population (as nsga2)
                if len(initial_rows):
                    first = search.first_population(np.random.default_rng([seed, 0]), population, set()).X
                optimize(search, opened, population=population, seed=seed, initial=first, settings=settings)
            else:
                search.run_iterations()
    elif method == "predictor":
        search.quality_log = list(store.read_json(QUALITY_FILE) or [])
    history = store.frame().iloc[:budget]
    if len(store) > budget:
        log.info("the store holds %d evaluations; the result covers the first %d (the budget)", len(store), budget)
        last = int(history["iteration"].iloc[-1])
        search.quality_log = [q for q in search.quality_log if q["iteration"] <= last]
    if reference_point is None:
        reference = default_reference_point(history, objectives) if len(history) else tuple(np.nan for _ in objectives)
    else:
        reference = tuple(float(r) for r in reference_point)
    curve = hypervolume_curve(history, objectives, reference, constraints) if len(history) else []
    return SearchResult(
        front=pareto_front(history, objectives, constraints),
        history=history,
        hypervolume=curve,
        predictor_quality=search.quality_log,
        method=method,
        seed=seed,
        reference_point=reference,
        objectives=tuple(objectives),
        constraints=tuple(constraints),
    )
