"""The ``optuna`` method: NSGA-II through optuna's ``NSGAIISampler``, with the engine's store, budget and resume.

``run_search(..., method="optuna")`` (or ``run_optuna``) runs the search as an optuna study, so that it
can be inspected with optuna's own tools (``optuna-dashboard <storage URL>``, ``study.trials_dataframe()``,
``optuna.visualization``) while keeping the engine's guarantees:

* **Every real evaluation goes into the engine's ``ResultsStore``** (label ``optuna``, ``iteration`` =
  NSGA-II generation), so fronts, hypervolume curves, reports and exports work unchanged; the result
  is computed from the store, never from optuna.
* **No candidate is evaluated twice.** Each trial suggests every gene with ``trial.suggest_int(name,
  xl, xu)``; the row is mapped to the space's canonical form (inactive genes masked), and a trial whose
  canonical candidate is already in the store (or earlier in its generation) is told the stored values,
  with user attribute ``elastiq_from_store: true``, and costs no budget.
* **The budget is exact.** One NSGA-II generation is asked at once (``population`` trials, or what an
  interrupted generation lacks), its new canonical rows are evaluated in one ``evaluate`` call (split
  by ``eval_batch_size``), and its trials are told in order. When the budget runs out inside a
  generation, the trials from the first one the budget could not pay for onwards are told ``FAIL``
  with user attribute ``elastiq_status: "over_budget"`` (also those whose candidate happens to be
  stored, so that the completed trials stay a prefix of the generation); a larger budget asks them again.
* **A killed search resumes** from its storage (``load_if_exists``): trials a kill left ``RUNNING`` (or
  ``WAITING``) are told ``FAIL``, their candidates are asked again in their places (as enqueued trials,
  answered from the store when they reached it, evaluated otherwise), and the budget continues from
  ``len(store)``.

Storage: an SQLAlchemy URL (``storage=``; or an optuna storage object, e.g. a ``JournalStorage`` or an
``InMemoryStorage`` kept to resume in the same process); by default ``sqlite:///<store folder>/optuna.db``
when the store has a folder, optuna's in-memory storage otherwise. The study (``study_name``, default
``"elastiq"``) keeps the search's settings as a study user attribute (``elastiq_settings``); opening it
for other settings, or with a results store that lacks its completed trials, is an error. The user's
``initial`` candidates are enqueued as the first trials.

Each trial shows (user attributes): ``key`` (the canonical key, the store's primary key), every stored
metric under its own name, ``elastiq_slot`` (its place in the search, see below), ``elastiq_generation``,
``elastiq_from_store`` and, with constraints, ``elastiq_constraints``. Objectives become the study's
directions (``max`` -> ``maximize``) in the user's order; trial values are the metrics themselves.
Constraints use optuna's constrained NSGA-II (constrained domination) with the values of
``search.problem.constraint_matrix`` (``metric - bound`` for ``<=``, ``bound - metric`` for ``>=``;
feasible where ``<= 0``): each completed trial gets ``Trial.set_constraint`` per constraint (optuna >= 5,
which deprecates ``constraints_func``); with older optuna, ``NSGAIISampler(constraints_func=...)`` reads
them from ``elastiq_constraints``.

Determinism
-----------
optuna documents reproducible results only for a seeded sampler in one process that runs trials one
after another: the sampler's random state lives in the process (``NSGAIISampler`` draws from its own
``RandomState`` and from an inner ``RandomSampler``'s) and is not stored. A resumed study gets a new
sampler whose state restarts from the seed, so with one ``NSGAIISampler(seed=seed)`` the trials after a
resume differ from those of an uninterrupted run. (The parents of each generation are selected from the
stored trials and cached in the study; those are reproducible, the random draws are not.)

This back-end therefore gives every trial a place, its *slot* (0, 1, 2, ... over the search; a trial
asked again after a kill or a budget cut keeps the slot of the one it replaces), and samples slot ``s``
with a fresh ``NSGAIISampler(seed=<derived from (seed, s)>, population_size=population)``. What a slot
proposes is then a function of the seed, the slot and the completed trials of earlier generations, all
of which are in the storage. Hence, as for the engine's own methods:

* the same seed gives the same trials, evaluations and history (in fresh storages, or in one process);
* a search killed at any point and resumed from its storage evaluates exactly the candidates an
  uninterrupted search would have, in the same order;
* a search with budget ``b`` evaluates the first ``b`` candidates of the same search with a larger
  budget, and a finished search continues when re-run with a larger budget;
* a lost storage (with the results store kept) replays from the seed, answering every stored
  candidate from the store, and continues where the store ends.

Not reproduced: trial numbers (a candidate asked again gets a new trial number; the failed trial stays
in the study), timestamps, and the draws themselves across optuna versions (``NSGAIISampler``'s random
stream is not a stable API).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.samplers import NSGAIISampler, RandomSampler
from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, Trial, TrialState

from search.engine import (
    _MAX_STALLED_GENERATIONS,
    Evaluate,
    ExactMetrics,
    SearchResult,
    StoreEvaluator,
    run_search,
)
from search.errors import SearchError
from search.problem import Constraint, Objective, constraint_matrix
from search.space import SearchSpace
from search.store import EvaluationRecord, ResultsStore

log = logging.getLogger(__name__)

STUDY_NAME = "elastiq"
STORAGE_FILE = "optuna.db"
LABEL = "optuna"
#: Trial user attributes this back-end writes (every stored metric is written under its own name too).
KEY_ATTR = "key"
SLOT_ATTR = "elastiq_slot"
GENERATION_ATTR = "elastiq_generation"
FROM_STORE_ATTR = "elastiq_from_store"
STATUS_ATTR = "elastiq_status"
CONSTRAINTS_ATTR = "elastiq_constraints"
OVER_BUDGET = "over_budget"
#: Study user attribute: the search's settings (as in ``search.json``), checked when the study is loaded.
SETTINGS_ATTR = "elastiq_settings"
#: optuna >= 5 takes constraint values per trial; older versions through ``constraints_func``.
_SET_CONSTRAINT = hasattr(Trial, "set_constraint")


def default_storage(store: ResultsStore) -> str | None:
    """``sqlite:///<store folder>/optuna.db`` for a store with a folder (created), None (in memory) otherwise."""
    if store.folder is None:
        return None
    store.folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(store.folder.resolve() / STORAGE_FILE).as_posix()}"


def check_storage_arguments(storage: Any, study_name: Any) -> None:
    """``storage`` None, a URL or an optuna storage; ``study_name`` a non-empty string (checked before evaluating)."""
    if isinstance(storage, BaseStorage):
        pass
    elif storage is not None and (not isinstance(storage, str) or not storage.strip()):
        raise SearchError(
            f"storage must be an SQLAlchemy URL string such as 'sqlite:///path/to/optuna.db', got {storage!r}; "
            "or leave it unset (SQLite next to the evaluations)"
        )
    if not isinstance(study_name, str) or not study_name.strip():
        raise SearchError(f"study_name must be a non-empty string, got {study_name!r}")


def run_optuna(
    space: SearchSpace,
    evaluate: Evaluate,
    objectives: Sequence[Objective],
    *,
    budget: int,
    population: int = 20,
    seed: int = 0,
    constraints: Sequence[Constraint] = (),
    exact_metrics: ExactMetrics | None = None,
    store: ResultsStore | None = None,
    eval_batch_size: int | None = None,
    progress: bool = False,
    reference_point: Sequence[float] | None = None,
    initial: np.ndarray | Sequence[Sequence[int]] | None = None,
    storage: str | BaseStorage | None = None,
    study_name: str = STUDY_NAME,
) -> SearchResult:
    """``run_search(..., method="optuna")``: NSGA-II through optuna (see the module docstring).

    ``storage`` (an SQLAlchemy URL, or an optuna storage object) defaults to
    ``sqlite:///<store folder>/optuna.db`` for a store with a folder and to optuna's in-memory storage
    otherwise; ``study_name`` names the study in it. Open it afterwards with
    ``optuna.load_study(study_name=study_name, storage=storage)``. optuna's own INFO lines are shown only
    when this module's logger is enabled for INFO (``elastiq -v``).
    """
    return run_search(
        space,
        evaluate,
        objectives,
        method="optuna",
        budget=budget,
        population=population,
        seed=seed,
        constraints=constraints,
        exact_metrics=exact_metrics,
        store=store,
        eval_batch_size=eval_batch_size,
        progress=progress,
        reference_point=reference_point,
        initial=initial,
        storage=storage,
        study_name=study_name,
    )


@dataclass(frozen=True)
class OpenStudy:
    """An opened study and where it lives (for messages)."""

    study: optuna.Study
    where: str


def open_study(
    store: ResultsStore, storage: str | BaseStorage | None, study_name: str, objectives: Sequence[Objective]
) -> OpenStudy:
    """Open (or create) the study; a storage that cannot be opened is a one-line SearchError.

    Called by ``run_search`` before it touches the results store, so that a bad URL costs nothing.
    """
    storage = default_storage(store) if storage is None else storage
    place = storage if isinstance(storage, str) else "memory" if storage is None else type(storage).__name__
    with _optuna_logging():
        return OpenStudy(_open_study(storage, study_name, objectives), f"optuna study {study_name!r} in {place}")


def optimize(
    evaluator: StoreEvaluator,
    opened: OpenStudy,
    *,
    population: int,
    seed: int,
    initial: np.ndarray,
    settings: Mapping[str, Any],
) -> None:
    """Run (or resume) the optuna search until ``evaluator.store`` holds ``evaluator.budget`` evaluations.

    Called by ``run_search``, which checked the arguments and the store's settings; ``initial`` holds
    canonical, distinct rows (at most ``population``), the first trials of a new study.
    """
    with _optuna_logging():
        _check_study(opened, settings, evaluator.store)
        _recover(opened.study, evaluator.space)
        _Study(evaluator, opened.study, population, seed, initial).run()


# ------------------------------------------------------------------------------------------------------
# Opening, checking and recovering the study
# ------------------------------------------------------------------------------------------------------


@contextmanager
def _optuna_logging() -> Iterator[None]:
    """optuna's per-trial INFO lines only when this module logs at INFO; the verbosity is restored afterwards."""
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.INFO if log.isEnabledFor(logging.INFO) else optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(previous)


def _open_study(storage: str | BaseStorage | None, study_name: str, objectives: Sequence[Objective]) -> optuna.Study:
    directions = [StudyDirection.MAXIMIZE if o.direction == "max" else StudyDirection.MINIMIZE for o in objectives]
    try:
        return optuna.create_study(
            storage=storage,
            study_name=study_name,
            directions=directions,
            load_if_exists=True,
            sampler=RandomSampler(seed=0),  # replaced per trial (``_Study.sampler``); this one samples nothing
        )
    except Exception as exc:  # any failure to open the URL: SQLAlchemy's, a missing driver, a missing folder
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SearchError(
            f"cannot open optuna storage {storage!r} ({reason}); give an SQLAlchemy URL such as "
            "'sqlite:///path/to/optuna.db' whose folder exists and whose database driver is installed, "
            "or leave storage unset"
        ) from exc


def _check_study(opened: OpenStudy, settings: Mapping[str, Any], store: ResultsStore) -> None:
    """The study belongs to this search (same settings) and the store holds all its completed trials."""
    study, where = opened.study, opened.where
    previous = study.user_attrs.get(SETTINGS_ATTR)
    trials = study.get_trials(deepcopy=False)
    if previous is None:
        if trials:
            raise SearchError(f"{where} holds trials elastiq did not write; use another study_name or storage")
        study.set_user_attr(SETTINGS_ATTR, dict(settings))
    elif previous != settings:
        differing = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
        raise SearchError(
            f"{where} was written by a search with other settings ({', '.join(differing)}); "
            "resume with the same settings or use another study_name or storage"
        )
    missing = [t.number for t in trials if t.state == TrialState.COMPLETE and t.user_attrs[KEY_ATTR] not in store]
    if missing:
        raise SearchError(
            f"{where} has {len(missing)} completed trials (e.g. #{missing[0]}) that the results store "
            f"({store.folder or 'in memory'}) lacks; resume with the store the search wrote, "
            "or use another study_name or storage"
        )


def _suggest(trial: Trial, space: SearchSpace) -> np.ndarray:
    """Every gene of ``trial`` (``suggest_int`` within the space's bounds), as a row of the space."""
    genes = zip(space.names, space.xl, space.xu, strict=True)
    return np.array([trial.suggest_int(name, int(lo), int(hi)) for name, lo, hi in genes], dtype=np.int64)


def _recover(study: optuna.Study, space: SearchSpace) -> None:
    """Tell FAIL to the trials a kill left WAITING or RUNNING; ``_Progress`` asks their candidates again."""
    failed = 0
    while study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        trial = study.ask()  # an enqueued trial the kill stopped before it was asked
        _suggest(trial, space)  # records its fixed parameters, so that it can be asked again in its slot
        study.tell(trial, state=TrialState.FAIL)
        failed += 1
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(frozen.number, state=TrialState.FAIL)
        failed += 1
    if failed:
        log.info("optuna: %d trials a kill interrupted were told FAIL; their candidates are asked again", failed)


@dataclass
class _Progress:
    """Where the study stands: the current generation, its completed trials, and what is to be asked again."""

    generation: int = 0
    count: int = 0  # completed trials of ``generation``
    has_new: bool = False  # whether ``generation`` evaluated a candidate (else it stalled)
    stalled: int = 0  # completed generations in a row that evaluated nothing
    next_slot: int = 0
    pending: dict[int, dict[str, int]] = field(default_factory=dict)  # slot -> parameters, asked again first

    @classmethod
    def of(cls, study: optuna.Study, space: SearchSpace, store: ResultsStore, population: int) -> _Progress:
        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        done = {int(t.user_attrs[SLOT_ATTR]) for t in complete}
        pending: dict[int, dict[str, int]] = {}
        for t in trials:  # failed trials with every gene, in slots no trial completed
            slot = t.user_attrs.get(SLOT_ATTR)
            if t.state == TrialState.FAIL and slot is not None and slot not in done and len(t.params) == space.n_var:
                pending.setdefault(int(slot), {name: int(t.params[name]) for name in space.names})
        progress = cls(next_slot=max(done | set(pending), default=-1) + 1, pending=dict(sorted(pending.items())))
        generations: dict[int, list[FrozenTrial]] = {}
        for t in complete:
            generations.setdefault(int(t.user_attrs[GENERATION_ATTR]), []).append(t)
        for generation in sorted(generations):
            members = generations[generation]
            progress.generation, progress.count = generation, len(members)
            # New to the search at this generation (also when replayed: the store's iteration says so).
            progress.has_new = any(store.get(t.user_attrs[KEY_ATTR]).iteration == generation for t in members)
            if len(members) >= population:
                progress.stalled = 0 if progress.has_new else progress.stalled + 1
        return progress

    def start_batch(self, population: int) -> int:
        """Move to the generation the next trials belong to (optuna's rule); how many trials complete it."""
        if self.count < population:
            return population - self.count
        self.generation, self.count, self.has_new = self.generation + 1, 0, False
        return population


def _constraint_names(constraints: Sequence[Constraint]) -> list[str]:
    names: list[str] = []
    for j, c in enumerate(constraints):
        name = f"{c.metric} {c.op} {c.bound:g}"
        names.append(f"{name} (#{j})" if name in names else name)
    return names


def _constraints_from_attrs(trial: FrozenTrial) -> Sequence[float]:
    """``constraints_func`` for optuna < 5: the values this back-end stored on the trial."""
    return tuple(trial.user_attrs[CONSTRAINTS_ATTR])


# ------------------------------------------------------------------------------------------------------
# The search
# ------------------------------------------------------------------------------------------------------


@dataclass
class _Study:
    """One run of the optuna search into ``evaluator.store``."""

    evaluator: StoreEvaluator
    study: optuna.Study
    population: int
    seed: int
    initial: np.ndarray

    @property
    def space(self) -> SearchSpace:
        return self.evaluator.space

    def sampler(self, slot: int) -> NSGAIISampler:
        """A fresh sampler for ``slot``, seeded from (seed, slot): what a slot proposes never depends on the
        random state earlier slots left, which a resumed process would not have."""
        slot_seed = int(np.random.SeedSequence([self.seed, slot]).generate_state(1)[0])
        constraints_func: Callable[[FrozenTrial], Sequence[float]] | None = None
        if self.evaluator.constraints and not _SET_CONSTRAINT:
            constraints_func = _constraints_from_attrs
        return NSGAIISampler(population_size=self.population, seed=slot_seed, constraints_func=constraints_func)

    def ask(self, slot: int, generation: int, params: Mapping[str, int] | None) -> tuple[Trial, np.ndarray]:
        """The trial of ``slot``: ``params`` fixed (enqueued) or, when None, sampled by NSGA-II."""
        self.study.sampler = self.sampler(slot)
        attrs = {SLOT_ATTR: slot, GENERATION_ATTR: generation}
        if params is not None:
            self.study.enqueue_trial(dict(params), user_attrs=attrs)
            trial = self.study.ask()
        else:
            trial = self.study.ask()
            for name, value in attrs.items():
                trial.set_user_attr(name, value)
        _ = trial.relative_params  # NSGA-II assigns the trial's generation here, enqueued trials included
        row = _suggest(trial, self.space)
        trial.set_user_attr(KEY_ATTR, self.space.key(row))
        return trial, row

    def tell(self, trial: Trial, record: EvaluationRecord, from_store: bool) -> None:
        """Tell ``trial`` the stored evaluation of its candidate (and its constraint values)."""
        for metric, value in record.metrics.items():
            trial.set_user_attr(metric, value)
        trial.set_user_attr(FROM_STORE_ATTR, from_store)
        constraints = self.evaluator.constraints
        if constraints:
            G = constraint_matrix(constraints, {m: [v] for m, v in record.metrics.items()}, 1)[0]
            trial.set_user_attr(CONSTRAINTS_ATTR, [float(g) for g in G])
            if _SET_CONSTRAINT:
                for name, g in zip(_constraint_names(constraints), G, strict=True):
                    trial.set_constraint(name, float(g))
        self.study.tell(trial, [record.metrics[o.metric] for o in self.evaluator.objectives])

    def next_params(self, progress: _Progress) -> tuple[int, Mapping[str, int] | None]:
        """The next slot and its fixed parameters: a candidate asked again, an initial one, or None (sampled)."""
        if progress.pending:
            slot = next(iter(progress.pending))
            return slot, progress.pending.pop(slot)
        slot = progress.next_slot
        progress.next_slot += 1
        if slot < len(self.initial):  # the user's initial candidates open the first generation
            return slot, {name: int(v) for name, v in zip(self.space.names, self.initial[slot], strict=True)}
        return slot, None

    def run(self) -> None:
        store, budget = self.evaluator.store, self.evaluator.budget
        progress = _Progress.of(self.study, self.space, store, self.population)
        while len(store) < budget:
            n = progress.start_batch(self.population)
            batch: list[tuple[Trial, np.ndarray]] = []
            for _ in range(n):
                slot, params = self.next_params(progress)
                batch.append(self.ask(slot, progress.generation, params))
            X = self.space.canonical(np.array([row for _, row in batch]))
            keys = self.space.keys(X)
            stored_before = len(store)
            self.evaluator.evaluate_new(X, progress.generation, [LABEL] * len(X))
            evaluated = {r.key for r in store.records()[stored_before:]}
            progress.has_new = progress.has_new or bool(evaluated)
            told: list[str] = []
            for (trial, _), key in zip(batch, keys, strict=True):
                if key not in store:
                    break  # the budget ran out before this trial's candidate
                self.tell(trial, store.get(key), from_store=key not in evaluated or key in told)
                told.append(key)
            progress.count += len(told)
            if len(told) < len(batch):  # cut by the budget: the rest is asked again if the budget grows
                for trial, _ in batch[len(told) :]:
                    trial.set_user_attr(STATUS_ATTR, OVER_BUDGET)
                    self.study.tell(trial, state=TrialState.FAIL)
                break
            progress.stalled = 0 if progress.has_new else progress.stalled + 1
            if progress.stalled >= _MAX_STALLED_GENERATIONS:
                log.warning(
                    "optuna proposed only evaluated candidates for %d generations; stopping after %d evaluations",
                    progress.stalled,
                    len(store),
                )
                break
