"""The search engine on synthetic problems: exact budgets, no re-evaluation, determinism, resume, fronts."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from search import engine
from search.engine import Method, SearchResult, default_reference_point, hypervolume_curve, pareto_front, run_search
from search.errors import SearchError
from search.problem import Constraint, Objective, objective_matrix
from search.space import IntegerSpace
from search.store import ResultsStore

SPACE = IntegerSpace([f"g{i}" for i in range(6)], [0] * 6, [9] * 6)
OBJECTIVES = (Objective("f1", "min"), Objective("score", "max"))
REFERENCE = (2.1, 0.9)  # in the objectives' units: f1 <= 2.1, score >= 0.9
#: Small, fast predictor settings for tests (the defaults cross-validate four families).
FAST: dict[str, Any] = {
    "predictor_params": {"families": ("ridge", "svr"), "cv": 3},
    "inner_generations": 10,
    "inner_population": 30,
}
METHODS: tuple[Method, ...] = ("random", "nsga2", "predictor")


def zdt1(X: np.ndarray) -> list[dict[str, float]]:
    """ZDT1 on a 10-level grid, shifted to positive values; "score" is to be maximised."""
    Z = np.asarray(X, dtype=float) / 9.0
    f1 = Z[:, 0]
    g = 1.0 + 9.0 * Z[:, 1:].mean(axis=1)
    f2 = g * (1.0 - np.sqrt(f1 / g))
    return [{"f1": 1.0 + a, "score": 11.0 - b, "g": gg} for a, b, gg in zip(f1, f2, g, strict=True)]


class Recorder:
    """An evaluation function that records every row it sees and can simulate a kill after ``kill_after`` rows."""

    def __init__(
        self, space: IntegerSpace = SPACE, fn: Callable[[np.ndarray], list] = zdt1, kill_after: int | None = None
    ):
        self.space, self.fn, self.kill_after = space, fn, kill_after
        self.keys: list[str] = []
        self.calls = 0

    def __call__(self, X: np.ndarray) -> list[dict[str, float]]:
        if self.kill_after is not None and len(self.keys) + len(X) > self.kill_after:
            raise KeyboardInterrupt
        self.calls += 1
        self.keys += self.space.keys(X)
        assert np.array_equal(self.space.canonical(X), X)  # the engine evaluates canonical rows only
        return self.fn(X)


def _fast(method: Method) -> dict[str, Any]:
    return dict(FAST) if method == "predictor" else {}


def _search(method: Method, budget: int, seed: int = 0, evaluate: Any = None, **kwargs: Any) -> SearchResult:
    options: dict[str, Any] = {**_fast(method), "population": 10, **kwargs}
    return run_search(
        SPACE,
        evaluate or Recorder(),
        OBJECTIVES,
        method=method,
        budget=budget,
        seed=seed,
        **options,
    )


def _assert_history_matches(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    columns = ["key", "index", "iteration", "method", "f1", "score", "g", "description"]
    pd.testing.assert_frame_equal(actual[columns], expected[columns])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("budget", [20, 33])
def test_budget_is_exact_and_nothing_is_evaluated_twice(method: Method, budget: int) -> None:
    recorder = Recorder()
    result = _search(method, budget, evaluate=recorder)
    assert len(recorder.keys) == budget == len(result.history) == result.n_evaluations
    assert len(set(recorder.keys)) == budget
    assert result.history["key"].tolist() == recorder.keys
    assert result.history["index"].tolist() == list(range(budget))
    assert result.hypervolume[-1][0] == budget
    assert result.method == method and result.seed == 0


def test_eval_batch_size_splits_batches_but_not_the_sequence() -> None:
    whole, chunked = Recorder(), Recorder()
    a = _search("random", 25, evaluate=whole)
    b = _search("random", 25, evaluate=chunked, eval_batch_size=4)
    assert chunked.calls == 8 and whole.calls == 3  # batches of 10, 10, 5 -> chunks 4+4+2, 4+4+2, 4+1
    _assert_history_matches(b.history, a.history)


@pytest.mark.parametrize("method", METHODS)
def test_same_seed_same_history_different_seed_different(method: Method) -> None:
    a, b, c = (_search(method, 30, seed=s) for s in (7, 7, 8))
    _assert_history_matches(b.history, a.history)
    assert a.history["key"].tolist() != c.history["key"].tolist()


def test_predictor_iteration_zero_is_the_random_methods_first_batch() -> None:
    random, predictor = _search("random", 10), _search("predictor", 10)
    assert random.history["key"].tolist() == predictor.history["key"].tolist()


@pytest.mark.parametrize(
    ("method", "kill_after", "batch"),
    [("random", 23, None), ("nsga2", 17, None), ("nsga2", 26, 4), ("predictor", 25, None), ("predictor", 27, 3)],
)
def test_resume_after_a_kill_continues_the_same_sequence(
    method: Method, kill_after: int, batch: int | None, tmp_path: Path
) -> None:
    uninterrupted = _search(method, 45, eval_batch_size=batch)
    killed = Recorder(kill_after=kill_after)
    with pytest.raises(KeyboardInterrupt):
        _search(method, 45, evaluate=killed, store=ResultsStore(tmp_path), eval_batch_size=batch)
    stored = ResultsStore(tmp_path).frame()["key"].tolist()
    assert stored == killed.keys and 0 < len(stored) <= kill_after
    resumed = Recorder()
    result = _search(method, 45, evaluate=resumed, store=ResultsStore(tmp_path), eval_batch_size=batch)
    assert not set(resumed.keys) & set(stored)  # nothing stored was evaluated again
    assert len(stored) + len(resumed.keys) == 45
    _assert_history_matches(result.history, uninterrupted.history)
    if method == "predictor":
        assert result.predictor_quality == uninterrupted.predictor_quality


def test_resuming_a_finished_search_evaluates_nothing_and_a_larger_budget_continues(tmp_path: Path) -> None:
    first = _search("predictor", 20, store=ResultsStore(tmp_path))
    again = Recorder()
    same = _search("predictor", 20, evaluate=again, store=ResultsStore(tmp_path))
    assert again.calls == 0
    _assert_history_matches(same.history, first.history)
    assert same.predictor_quality == first.predictor_quality
    more = _search("predictor", 30, store=ResultsStore(tmp_path))
    _assert_history_matches(more.history, _search("predictor", 30).history)


@pytest.mark.parametrize("method", METHODS)
def test_a_smaller_budget_evaluates_a_prefix_of_a_larger_one(method: Method, tmp_path: Path) -> None:
    small, large = _search(method, 25), _search(method, 38, store=ResultsStore(tmp_path))
    _assert_history_matches(small.history, large.history.iloc[:25])
    again = _search(method, 25, store=ResultsStore(tmp_path))  # a store with more rows than the budget
    _assert_history_matches(again.history, small.history)
    assert again.front["key"].tolist() == small.front["key"].tolist()
    continued = _search(method, 45, store=ResultsStore(tmp_path))
    _assert_history_matches(continued.history, _search(method, 45).history)


def test_resume_with_other_settings_is_an_error(tmp_path: Path) -> None:
    _search("random", 10, store=ResultsStore(tmp_path))
    with pytest.raises(SearchError, match="seed"):
        _search("random", 20, seed=1, store=ResultsStore(tmp_path))
    with pytest.raises(SearchError, match="method"):
        _search("nsga2", 20, store=ResultsStore(tmp_path))


@pytest.mark.parametrize("method", METHODS)
def test_front_holds_only_evaluated_non_dominated_points_in_objective_order(method: Method) -> None:
    objectives = (Objective("score", "max"), Objective("f1", "min"))  # the user's order, not alphabetical
    result = run_search(
        SPACE,
        Recorder(),
        objectives,
        method=method,
        budget=40,
        population=10,
        **_fast(method),
    )
    front = result.front
    assert list(front.columns[:3]) == ["key", "score", "f1"]
    assert set(front["key"]) <= set(result.history["key"])
    F = objective_matrix(objectives, {m: front[m].to_numpy() for m in ("score", "f1")}, len(front))
    assert len(NonDominatedSorting().do(F, only_non_dominated_front=True)) == len(front)
    everything = objective_matrix(
        objectives, {m: result.history[m].to_numpy() for m in ("score", "f1")}, len(result.history)
    )
    best = NonDominatedSorting().do(everything, only_non_dominated_front=True)
    assert set(front["key"]) == set(result.history["key"].iloc[best])
    assert front["feasible"].all()
    assert front["score"].is_monotonic_decreasing  # sorted by the first objective, best first


def test_predictor_beats_random_at_equal_budget() -> None:
    options: dict[str, Any] = {"population": 20, "reference_point": REFERENCE, "inner_generations": 20}
    params = FAST["predictor_params"]
    hv = {}
    methods: tuple[Method, ...] = ("random", "predictor")
    for method in methods:
        extra: dict[str, Any] = {"predictor_params": params} if method == "predictor" else {}
        hv[method] = np.mean(
            [
                run_search(SPACE, zdt1, OBJECTIVES, method=method, budget=120, seed=s, **options, **extra).hypervolume[
                    -1
                ][1]
                for s in range(3)
            ]
        )
    assert hv["predictor"] > hv["random"] + 0.5, hv


@pytest.mark.parametrize("proposal", ["local", "global"])
def test_both_proposals_beat_random_on_the_predictor_method(proposal: str) -> None:
    hv = {
        name: np.mean(
            [
                run_search(
                    SPACE, zdt1, OBJECTIVES, budget=80, seed=s, reference_point=REFERENCE, **options
                ).hypervolume[-1][1]
                for s in range(3)
            ]
        )
        for name, options in {
            "random": {"method": "random"},
            proposal: {"method": "predictor", "proposal": proposal, **FAST},
        }.items()
    }
    assert hv[proposal] > hv["random"] + 0.3, hv


def test_local_proposals_are_one_gene_from_a_candidate_measured_before() -> None:
    history = _search("predictor", 40).history
    X = np.array([SPACE.from_key(k) for k in history["key"]])
    iterations = history["iteration"].to_numpy()
    proposed = np.flatnonzero(history["method"].to_numpy() == "predictor")
    assert len(proposed) == 30
    for i in proposed:
        earlier = X[iterations < iterations[i]]
        assert ((earlier != X[i]).sum(axis=1) == 1).any()


def test_the_proposal_is_a_stored_setting(tmp_path: Path) -> None:
    _search("predictor", 20, store=ResultsStore(tmp_path / "global"), proposal="global")
    _search("predictor", 20, store=ResultsStore(tmp_path / "local"))
    assert "proposal" not in ResultsStore(tmp_path / "global").read_json("search.json")  # as before the option
    assert ResultsStore(tmp_path / "local").read_json("search.json")["proposal"] == "local"
    with pytest.raises(SearchError, match="proposal"):
        _search("predictor", 30, store=ResultsStore(tmp_path / "global"))
    assert len(_search("predictor", 30, store=ResultsStore(tmp_path / "global"), proposal="global").history) == 30


def test_predictor_quality_is_recorded_per_iteration() -> None:
    result = _search("predictor", 40)
    assert [q["iteration"] for q in result.predictor_quality] == [1, 2, 3]
    for entry in result.predictor_quality:
        assert set(entry["metrics"]) == {"f1", "score"}
        for metric in entry["metrics"].values():
            assert metric["family"] in ("ridge", "svr")
            assert {"mape", "rmse", "kendall_tau", "spearman", "n"} <= set(metric["cv"])
            assert metric["new_candidates"]["n"] == 10
    assert result.predictor_quality[0]["n_train"] == 10
    assert result.predictor_quality[-1]["metrics"]["f1"]["new_candidates"]["kendall_tau"] > 0.8
    assert set(result.history["method"]) <= {"random", "predictor"}


def test_each_iteration_gets_a_fresh_inner_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    seeds: list[int] = []
    original = engine.integer_nsga2

    def spy(space: Any, pop_size: int, seed: int, sampling: Any = None) -> Any:
        seeds.append(seed)
        return original(space, pop_size, seed, sampling)

    monkeypatch.setattr(engine, "integer_nsga2", spy)
    _search("predictor", 40, proposal="global")  # only the global proposal runs an inner NSGA-II
    assert len(seeds) == 3 and len(set(seeds)) == 3


def test_exact_metrics_are_used_not_predicted_and_stored() -> None:
    def exact(X: np.ndarray) -> dict[str, np.ndarray]:
        return {"f1": 1.0 + X[:, 0] / 9.0}

    def evaluate(X: np.ndarray) -> list[dict[str, float]]:
        return [{"score": r["score"]} for r in zdt1(X)]

    result = run_search(
        SPACE, evaluate, OBJECTIVES, method="predictor", budget=30, population=10, exact_metrics=exact, **FAST
    )
    assert all(set(q["metrics"]) == {"score"} for q in result.predictor_quality)
    assert np.allclose(
        result.history["f1"], 1.0 + np.array([SPACE.from_key(k)[0] for k in result.history["key"]]) / 9.0
    )


@pytest.mark.parametrize("method", METHODS)
def test_constraints_are_respected_in_the_front(method: Method) -> None:
    constraints = (Constraint("f1", "<=", 1.5), Constraint("g", "<=", 6.0))
    result = run_search(
        SPACE,
        Recorder(),
        OBJECTIVES,
        method=method,
        budget=40,
        population=10,
        constraints=constraints,
        **_fast(method),
    )
    assert len(result.front) > 0
    assert (result.front["f1"] <= 1.5).all() and (result.front["g"] <= 6.0).all()
    assert result.front["feasible"].all()
    feasible = (result.history["f1"] <= 1.5) & (result.history["g"] <= 6.0)
    curve = hypervolume_curve(result.history[feasible], OBJECTIVES, result.reference_point)
    assert result.hypervolume[-1][1] == pytest.approx(curve[-1][1])


def test_without_feasible_points_the_front_shows_the_least_violating() -> None:
    history = pd.DataFrame(
        {"key": ["a", "b", "c"], "iteration": [0, 0, 0], "f1": [1.0, 2.0, 3.0], "score": [1.0, 2.0, 3.0]}
    )
    front = pareto_front(history, OBJECTIVES, [Constraint("f1", "<=", 0.5)])
    assert front["key"].tolist() == ["a"] and not front["feasible"].any()


def test_masked_genes_never_cause_re_evaluation() -> None:
    class Layered(IntegerSpace):
        def canonical(self, X: np.ndarray) -> np.ndarray:
            X = self.validate(X).copy()
            inactive = np.arange(1, 5)[None, :] >= X[:, :1]
            X[:, 1:][inactive] = 0
            return X

    space = Layered(["depth", "w1", "w2", "w3", "w4"], [1, 0, 0, 0, 0], [5, 3, 3, 3, 3])

    def cost(X: np.ndarray) -> list[dict[str, float]]:
        active = np.arange(1, 5)[None, :] < X[:, :1]
        size = 1.0 + (X[:, 1:] * active).sum(axis=1) + X[:, 0]
        return [{"size": s, "quality": np.log(s) + 0.1 * d} for s, d in zip(size, X[:, 0], strict=True)]

    for method in METHODS:
        recorder = Recorder(space=space, fn=cost)
        run_search(
            space,
            recorder,
            [Objective("size"), Objective("quality", "max")],
            method=method,
            budget=60,
            population=15,
            **_fast(method),
        )
        assert len(recorder.keys) == len(set(recorder.keys)) == 60


def test_tiny_spaces_stop_when_exhausted() -> None:
    space = IntegerSpace(["a", "b"], [0, 0], [2, 1])  # 6 candidates
    for method in METHODS:
        recorder = Recorder(space=space, fn=lambda X: [{"f1": 1.0 + x[0], "score": 1.0 + x[1]} for x in X])
        options: dict[str, Any] = {**FAST, "inner_generations": 2} if method == "predictor" else {}
        result = run_search(space, recorder, OBJECTIVES, method=method, budget=20, population=4, **options)
        assert len(recorder.keys) == len(set(recorder.keys)) <= 6
        assert len(result.history) == len(recorder.keys)


def test_hypervolume_curve_and_default_reference_point() -> None:
    result = _search("random", 30)
    reference = default_reference_point(result.history, OBJECTIVES)
    assert result.reference_point == reference
    first = result.history.iloc[:10]
    assert reference[0] > first["f1"].max() and reference[1] < first["score"].min()
    assert [n for n, _ in result.hypervolume] == [10, 20, 30]
    values = [hv for _, hv in result.hypervolume]
    assert values == sorted(values) and values[0] > 0
    assert hypervolume_curve(result.history, OBJECTIVES, reference) == result.hypervolume
    explicit = _search("random", 30, reference_point=REFERENCE)
    assert explicit.reference_point == REFERENCE
    assert explicit.hypervolume == hypervolume_curve(result.history, OBJECTIVES, REFERENCE)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "grid"}, "unknown search method"),
        ({"budget": 0}, "budget"),
        ({"population": -1}, "population"),
        ({"predictor_params": {"seed": 1}}, "seed"),
        ({"reference_point": (1.0,)}, "reference_point"),
        ({"seed": -1}, "seed"),
        ({"method": "predictor", "proposal": "nearby"}, "unknown proposal"),
    ],
)
def test_bad_settings_are_errors_before_anything_is_evaluated(kwargs: dict[str, Any], match: str) -> None:
    options: dict[str, Any] = {"method": "random", "budget": 10, **kwargs}
    recorder = Recorder()
    with pytest.raises(SearchError, match=match):
        run_search(SPACE, recorder, OBJECTIVES, **options)
    assert recorder.calls == 0


@pytest.mark.parametrize(
    ("results", "match"),
    [
        (lambda X: zdt1(X)[:-1], "for 10 candidates"),
        (lambda X: [{"f1": 1.0} for _ in X], "score"),
        (lambda X: [{"f1": 1.0, "score": float("nan")} for _ in X], "finite"),
    ],
)
def test_bad_evaluation_results_are_errors(
    results: Callable[[np.ndarray], Sequence[Mapping[str, float]]], match: str
) -> None:
    with pytest.raises(SearchError, match=match):
        run_search(SPACE, results, OBJECTIVES, method="random", budget=10, population=10)


def test_progress_bar_runs(capsys: pytest.CaptureFixture[str]) -> None:
    _search("random", 12, progress=True)
    assert "12/12" in capsys.readouterr().err


@pytest.mark.parametrize("method", METHODS)
def test_initial_candidates_open_every_methods_first_population(method: Method, tmp_path: Path) -> None:
    initial = np.array([[0] * 6, [9] * 6, [0] * 6])  # a duplicate is dropped, not evaluated twice
    recorder = Recorder()
    result = _search(method, 25, evaluate=recorder, initial=initial, store=ResultsStore(tmp_path))
    assert recorder.keys[:2] == SPACE.keys(initial[:2])
    assert len(set(recorder.keys)) == len(recorder.keys) == 25
    first = result.history[result.history["iteration"] == 0]
    assert len(first) == 10  # filled up to the population
    # the best-f1 corner (f1 = 1, score = 11 - 1) is on every front since it was evaluated first
    assert SPACE.key(initial[0]) in set(result.front["key"])
    with pytest.raises(SearchError, match="other settings"):  # the initial candidates belong to the settings
        _search(method, 25, store=ResultsStore(tmp_path))


def test_initial_candidates_are_checked() -> None:
    with pytest.raises(SearchError, match="exceed the population"):
        _search("random", 20, initial=SPACE.sample(11, np.random.default_rng(0)))
    with pytest.raises(SearchError, match="outside"):
        _search("random", 20, initial=[[10] * 6])
