"""The search-space protocol (canonical form, keys, sampling) and the vectorised pymoo problem."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymoo.optimize import minimize

from search.errors import SearchError
from search.problem import (
    CanonicalRepair,
    Constraint,
    Objective,
    SearchProblem,
    constraint_matrix,
    integer_nsga2,
    objective_matrix,
)
from search.space import IntegerSpace, SearchSpace
from supernet.errors import ElastiqError


class LayeredSpace(IntegerSpace):
    """A depth gene and per-layer width genes; widths of layers beyond the depth are inactive."""

    def __init__(self, layers: int = 3, widths: int = 4) -> None:
        names = ["depth", *[f"width{i}" for i in range(layers)]]
        super().__init__(names, [1] + [0] * layers, [layers] + [widths - 1] * layers)
        self.layers = layers

    def canonical(self, X: np.ndarray) -> np.ndarray:
        X = self.validate(X).copy()
        inactive = np.arange(self.layers)[None, :] >= X[:, :1]
        X[:, 1:][inactive] = self.xl[1:][np.nonzero(inactive)[1]]
        return X

    def decode(self, x: np.ndarray) -> Any:
        row = self.canonical(np.asarray(x).reshape(1, -1))[0]
        return tuple(int(w) for w in row[1 : 1 + row[0]])

    def encode(self, candidate: Any) -> np.ndarray:
        widths = list(candidate) + [0] * (self.layers - len(candidate))
        return self.canonical(np.array([[len(candidate), *widths]]))[0]


def test_integer_space_declares_bounds_and_names() -> None:
    space = IntegerSpace(["a", "b", "c"], [0, 1, -2], [4, 1, 2])
    assert space.n_var == 3
    assert space.names == ("a", "b", "c")
    assert space.xl.tolist() == [0, 1, -2] and space.xu.tolist() == [4, 1, 2]
    assert space.n_encodings == 5 * 1 * 5
    assert isinstance(space, SearchSpace)


@pytest.mark.parametrize(
    ("names", "xl", "xu", "match"),
    [
        ([], [], [], "at least one gene"),
        (["a", "a"], [0, 0], [1, 1], "repeated"),
        (["a", "b"], [0], [1, 1], "one bound per gene"),
        (["a"], [2], [1], "xl <= xu"),
        (["a"], [0.5], [1], "integers"),
    ],
)
def test_integer_space_rejects_bad_declarations(names: list[str], xl: Any, xu: Any, match: str) -> None:
    with pytest.raises(SearchError, match=match):
        IntegerSpace(names, xl, xu)


def test_search_error_is_an_elastiq_error() -> None:
    assert issubclass(SearchError, ElastiqError)


@pytest.mark.parametrize(
    ("X", "match"),
    [
        (np.zeros(3), "2-D"),
        (np.zeros((2, 2)), "3 genes"),
        (np.array([[0, 0, 9]]), "outside"),
        (np.array([[0.5, 0, 0]]), "non-integer"),
        (np.array([[np.nan, 0, 0]]), "NaN"),
        (np.array([["x", "y", "z"]]), "not numeric"),
    ],
)
def test_validate_names_the_problem(X: np.ndarray, match: str) -> None:
    space = IntegerSpace(["a", "b", "c"], [0, 0, 0], [3, 3, 3])
    with pytest.raises(SearchError, match=match):
        space.validate(X)


def test_defaults_treat_every_gene_as_active() -> None:
    space = IntegerSpace(["a", "b"], [0, 0], [3, 3])
    X = np.array([[1, 2], [3, 0]])
    assert np.array_equal(space.canonical(X), X)
    assert space.features(X).dtype == np.float64 and np.array_equal(space.features(X), X)
    assert space.describe(X[0]) == {"a": 1, "b": 2}
    assert np.array_equal(space.decode(space.encode([3, 0])), [3, 0])
    assert space.keys(X) == ["1-2", "3-0"] and space.key(X[1]) == "3-0"


def test_canonical_masks_inactive_genes() -> None:
    space = LayeredSpace()
    a = np.array([[1, 3, 2, 1], [2, 3, 1, 3], [3, 1, 1, 1]])
    b = np.array([[1, 3, 0, 0], [2, 3, 1, 0], [3, 1, 1, 1]])
    assert np.array_equal(space.canonical(a), b)
    assert np.array_equal(space.canonical(space.canonical(a)), space.canonical(a))  # idempotent
    assert space.keys(a) == space.keys(b)
    assert space.key(a[0]) == "1-3-0-0"
    assert np.array_equal(space.features(a), b.astype(float))
    assert space.describe(a[1]) == {"depth": 2, "width0": 3, "width1": 1, "width2": 0}


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=1, max_size=3))
def test_decode_inverts_encode(widths: list[int]) -> None:
    space = LayeredSpace()
    assert space.decode(space.encode(widths)) == tuple(widths)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-12, 12), min_size=4, max_size=4))
def test_from_key_inverts_key_also_for_negative_genes(genes: list[int]) -> None:
    space = IntegerSpace(["a", "b", "c", "d"], [-12] * 4, [12] * 4)
    key = space.key(np.array(genes))
    assert space.from_key(key).tolist() == genes


@pytest.mark.parametrize("key", ["1-2", "1-2-3-4", "a-b-c", "1-2-9", "1_2_3", ""])
def test_from_key_rejects_foreign_keys(key: str) -> None:
    with pytest.raises(SearchError):
        IntegerSpace(["a", "b", "c"], [0, 0, 0], [3, 3, 3]).from_key(key)


def test_sample_is_canonical_in_bounds_and_seeded() -> None:
    space = LayeredSpace()
    X = space.sample(200, np.random.default_rng(0))
    assert X.shape == (200, 4)
    assert np.array_equal(space.canonical(X), X)
    assert np.all(space.xl <= X) and np.all(space.xu >= X)
    assert np.array_equal(X, space.sample(200, np.random.default_rng(0)))
    assert not np.array_equal(X, space.sample(200, np.random.default_rng(1)))
    assert len(set(space.keys(X))) > 20


def test_objectives_and_constraints_convert_to_pymoo_form() -> None:
    values = {"acc": np.array([0.9, 0.8]), "ms": np.array([3.0, 7.0])}
    F = objective_matrix([Objective("ms", "min"), Objective("acc", "max")], values, 2)
    assert F.tolist() == [[3.0, -0.9], [7.0, -0.8]]
    G = constraint_matrix([Constraint("ms", "<=", 5.0), Constraint("acc", ">=", 0.85)], values, 2)
    assert np.allclose(G, [[-2.0, -0.05], [2.0, 0.05]])
    with pytest.raises(SearchError, match="missing"):
        objective_matrix([Objective("size")], values, 2)
    with pytest.raises(SearchError, match="one per candidate"):
        objective_matrix([Objective("ms")], values, 3)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Objective("acc", "maximise"),  # type: ignore[arg-type]
        lambda: Objective(""),
        lambda: Constraint("ms", "<", 3.0),  # type: ignore[arg-type]
        lambda: Constraint("ms", "<=", float("inf")),
    ],
)
def test_bad_objectives_and_constraints_are_errors(make: Any) -> None:
    with pytest.raises(SearchError):
        make()


def test_problem_rejects_repeated_objective_metrics() -> None:
    space = IntegerSpace(["a"], [0], [3])
    with pytest.raises(SearchError, match="repeat"):
        SearchProblem(space, [Objective("x"), Objective("x", "max")], lambda X: {})


def test_canonical_repair_rounds_clips_and_masks() -> None:
    space = LayeredSpace()
    repaired = CanonicalRepair(space)._do(None, np.array([[1.4, 2.6, 3.0, 2.0], [3.7, -0.2, 9.0, 1.2]]))
    assert repaired.tolist() == [[1, 3, 0, 0], [3, 0, 3, 1]]


def test_problem_scores_whole_populations_in_one_call_and_keeps_offspring_canonical() -> None:
    space = LayeredSpace(layers=4, widths=6)
    calls: list[np.ndarray] = []

    def predict(X: np.ndarray) -> dict[str, np.ndarray]:
        calls.append(X.copy())
        size = X[:, 1:].sum(axis=1) + X[:, 0]
        return {"size": size + 1.0, "quality": np.sqrt(size + 1.0), "ms": size * 0.5}

    problem = SearchProblem(
        space, [Objective("size", "min"), Objective("quality", "max")], predict, [Constraint("ms", "<=", 6.0)]
    )
    algorithm = integer_nsga2(space, pop_size=16, seed=3)
    result = minimize(problem, algorithm, ("n_gen", 5), seed=3)
    assert len(calls) == 5  # one call per generation, whole population at once
    assert all(len(X) > 1 for X in calls)
    for X in calls:
        assert X.dtype.kind == "i"
        assert np.array_equal(space.canonical(X), X)
    assert np.all(result.pop.get("G") <= 0)  # feasible candidates exist and survive


def test_problem_without_predict_cannot_evaluate() -> None:
    space = IntegerSpace(["a"], [0], [3])
    problem = SearchProblem(space, [Objective("x")], None)
    with pytest.raises(SearchError, match="no predict"):
        problem.evaluate(np.array([[1]]))


def test_neighbours_change_exactly_one_gene_of_a_flat_space() -> None:
    space = IntegerSpace(["a", "b", "c"], [0, 0, 0], [2, 1, 3])
    x = np.array([[1, 0, 3]])
    N = space.neighbours(x)
    assert len(N) == 2 + 1 + 3  # every other value of every gene
    assert ((x != N).sum(axis=1) == 1).all()
    assert len(set(space.keys(N))) == len(N) and space.key(x[0]) not in space.keys(N)


def test_neighbours_of_a_masked_space_are_canonical_distinct_and_exclude_the_given_rows() -> None:
    space = LayeredSpace(layers=3, widths=4)
    X = space.canonical(np.array([[1, 2, 0, 0], [2, 2, 1, 0]]))
    N = space.neighbours(X)
    keys = space.keys(N)
    assert np.array_equal(N, space.canonical(N)) and len(set(keys)) == len(keys)
    assert not set(keys) & set(space.keys(X))
    # Row 1: depth 1 -> 2 or 3 (the added layers take the masked value), width0 -> 3 other values. Row 2:
    # depth 2 -> 1 or 3, 3 other values for each of its two active widths. "2-2-0-0" is a neighbour of
    # both rows, and each given row is a neighbour of the other, so it is left out.
    assert sorted(keys) == sorted(
        {
            "2-2-0-0",
            "3-2-0-0",
            "1-0-0-0",
            "1-1-0-0",
            "1-3-0-0",
            "3-2-1-0",
            "2-0-1-0",
            "2-1-1-0",
            "2-3-1-0",
            "2-2-2-0",
            "2-2-3-0",
        }
        - {"1-2-0-0", "2-2-1-0"}
    )
