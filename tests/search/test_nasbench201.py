"""NAS-Bench-201 ground truth (AnalogNAS-Bench's real data file): loading, cost model, space, true front, HV."""

from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from search.engine import run_search
from search.errors import SearchError
from search.nasbench201 import (
    EDGE_NAMES,
    EDGES,
    OPERATIONS,
    NasBench201Error,
    NasBench201Problem,
    NasBench201Space,
    cell_index,
    cell_macs_m,
    default_data_path,
    load_nasbench201,
    nasbench201_problem,
    parse_cell_string,
)
from search.problem import Objective

pytestmark = pytest.mark.skipif(
    not default_data_path().is_file(), reason="AnalogNAS-Bench data missing: pip install --no-deps analog-nasbench"
)

SKIP, NONE, CONV3, CONV1, POOL = range(5)


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return load_nasbench201()


@pytest.fixture(scope="module")
def problem(table: pd.DataFrame) -> NasBench201Problem:
    return NasBench201Problem(table)


def test_operation_order_is_the_datas() -> None:
    assert OPERATIONS == ("skip_connect", "none", "nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3")
    assert EDGES == ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))


def test_loader_gives_every_cell_once_with_plausible_accuracies(table: pd.DataFrame) -> None:
    assert len(table) == 15_625
    assert table["cell"].is_unique
    assert not table.duplicated(list(EDGE_NAMES)).any()
    assert np.array_equal(table["cell_index"], np.arange(15_625))
    assert np.array_equal(cell_index(table[list(EDGE_NAMES)].to_numpy()), np.arange(15_625))
    for column in ("baseline_accuracy", "ptq_accuracy", "qat_accuracy"):
        values = table[column]
        assert values.notna().all()
        assert values.between(0, 100).all()
        assert values.max() > 90  # percent, not a fraction: the best CIFAR-10 cells reach about 94%
    assert table["ptq_accuracy"].median() > 80


def test_loader_returns_a_copy(table: pd.DataFrame) -> None:
    first = load_nasbench201()
    first.loc[0, "ptq_accuracy"] = -1.0
    assert load_nasbench201().loc[0, "ptq_accuracy"] == table.loc[0, "ptq_accuracy"] != -1.0


def test_cells_cut_off_from_the_output_are_at_chance(table: pd.DataFrame) -> None:
    """Confirms the edge and operation order: ``none`` on every edge into node 3 leaves a constant network."""
    into_output = [EDGE_NAMES[EDGES.index(e)] for e in ((0, 3), (1, 3), (2, 3))]
    cut = (table[into_output] == NONE).all(axis=1)
    assert cut.sum() == 125
    assert np.allclose(table.loc[cut, "baseline_accuracy"], 10.0)
    assert (table.loc[~cut & (table["baseline_accuracy"] > 10.0), "baseline_accuracy"] > 30).all()


def test_macs_by_hand(table: pd.DataFrame) -> None:
    # one 3x3 conv edge per cell: 9*C*C*H*W = 2,359,296 MACs in every stage, 15 cells
    assert cell_macs_m([CONV3] * 6) == pytest.approx(6 * 15 * 9 * 16 * 16 * 32 * 32 / 1e6)
    assert cell_macs_m([CONV3] * 6) == pytest.approx(212.33664)
    assert cell_macs_m([NONE] * 6) == 0.0
    assert cell_macs_m([SKIP] * 6) == 0.0
    # 2 x conv1x1 (15 * C*C*H*W) + 2 x avg pool (5 * 9*C*H*W per stage)
    mixed = 2 * 15 * 16 * 16 * 32 * 32 + 2 * 5 * 9 * (16 * 32 * 32 + 32 * 16 * 16 + 64 * 8 * 8)
    assert cell_macs_m([CONV1, POOL, NONE, SKIP, CONV1, POOL]) == pytest.approx(mixed / 1e6)
    row = int(cell_index([CONV3] * 6))
    assert table.loc[row, "macs_m"] == pytest.approx(212.33664)
    # cells with the same operations in another order cost exactly (not approximately) the same
    assert cell_macs_m([CONV3, CONV1, POOL, 0, 0, 0]) == cell_macs_m([POOL, 0, CONV1, 0, 0, CONV3])


def test_space_round_trip_and_features() -> None:
    space = NasBench201Space()
    assert space.n_var == 6 and space.n_encodings == 15_625
    X = space.sample(50, np.random.default_rng(0))
    for x in X:
        cell = space.decode(x)
        assert np.array_equal(space.encode(cell), x)
        assert np.array_equal(space.encode([OPERATIONS[i] for i in x]), x)
        assert np.array_equal(space.encode(tuple(int(i) for i in x)), x)
        assert space.describe(x)["cell"] == cell
    features = space.features(X)
    assert features.shape == (50, 30)
    assert np.all(features.sum(axis=1) == 6)
    assert np.array_equal(features.reshape(50, 6, 5).argmax(axis=2), X)


def test_parse_nasbench201_string() -> None:
    text = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
    # edges (0,1) (0,2) (0,3) (1,2) (1,3) (2,3)
    assert parse_cell_string(text) == (CONV3, CONV3, SKIP, POOL, CONV3, SKIP)
    assert NasBench201Space().decode(np.array(parse_cell_string(text))) == text
    with pytest.raises(SearchError, match="not a NAS-Bench-201 cell"):
        parse_cell_string("|nor_conv_3x3~0|")
    with pytest.raises(SearchError, match="operation~input"):
        parse_cell_string(text.replace("avg_pool_3x3", "max_pool"))


def test_evaluate_looks_up_the_table(problem: NasBench201Problem, table: pd.DataFrame) -> None:
    X = problem.space.sample(30, np.random.default_rng(1))
    rows = cell_index(X)
    values = problem.evaluate(X)
    assert [v["ptq_accuracy"] for v in values] == table["ptq_accuracy"].to_numpy()[rows].tolist()
    assert [v["macs_m"] for v in values] == table["macs_m"].to_numpy()[rows].tolist()
    assert np.array_equal(problem.exact_metrics(X)["macs_m"], table["macs_m"].to_numpy()[rows])
    space, evaluate, objectives = nasbench201_problem()
    assert isinstance(space, NasBench201Space)
    assert evaluate(X) == values and [o.metric for o in objectives] == ["ptq_accuracy", "macs_m"]


def test_true_front_is_non_dominated_and_dominates_every_cell(problem: NasBench201Problem) -> None:
    front = problem.true_front()
    F_front = problem.objective_values(front)
    F_all = problem.objective_values(problem.table)
    assert 1 < len(front) < 100
    for i, point in enumerate(F_front):  # no front point is dominated by any cell
        dominated = np.all(F_all <= point, axis=1) & np.any(F_all < point, axis=1)
        assert not dominated.any(), front.iloc[i]["cell"]
    weakly = np.all(F_front[None, :, :] <= F_all[:, None, :], axis=2)  # cells x front points
    assert weakly.any(axis=1).all()
    assert front["ptq_accuracy"].is_monotonic_decreasing
    assert front["macs_m"].is_monotonic_decreasing


def test_normalized_hypervolume(problem: NasBench201Problem) -> None:
    reference = problem.reference_point()
    assert reference[0] < problem.table["ptq_accuracy"].min()
    assert reference[1] > problem.table["macs_m"].max()
    assert problem.normalized_hypervolume(problem.true_front()) == pytest.approx(1.0)
    assert problem.normalized_hypervolume(problem.table) == pytest.approx(1.0)
    assert problem.normalized_hypervolume(problem.table.iloc[:0]) == 0.0
    sample = problem.table.sample(200, random_state=0)
    assert 0 < problem.normalized_hypervolume(sample) < 1
    curve = problem.normalized_curve(sample, [10, 50, 200])
    assert curve == sorted(curve) and curve[-1] == pytest.approx(problem.normalized_hypervolume(sample))
    tight = dataclasses.replace(problem, reference=problem.nadir_reference_point())
    assert tight.normalized_hypervolume(problem.true_front()) == pytest.approx(1.0)
    assert 0 <= tight.normalized_hypervolume(sample) < problem.normalized_hypervolume(sample)


def test_tiny_search_on_the_problem(problem: NasBench201Problem) -> None:
    result = run_search(
        problem.space,
        problem.evaluate,
        problem.objectives,
        method="nsga2",
        budget=40,
        population=10,
        seed=0,
        reference_point=problem.reference_point(),
    )
    assert result.n_evaluations == 40
    value = problem.normalized_hypervolume(result.history)
    assert 0 < value <= 1
    assert result.hypervolume[-1][1] == pytest.approx(value * problem.true_hypervolume())


def test_missing_file_is_a_typed_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "data.anb"
    with pytest.raises(NasBench201Error, match="pip install --no-deps analog-nasbench") as info:
        load_nasbench201(missing)
    assert str(missing) in str(info.value)
    assert isinstance(info.value, SearchError)


def test_corrupt_files_are_typed_errors_and_run_nothing(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.anb"
    garbage.write_bytes(b"not a pickle at all")
    with pytest.raises(NasBench201Error, match="unreadable"):
        load_nasbench201(garbage)
    wrong = tmp_path / "wrong.anb"
    wrong.write_bytes(pickle.dumps({(0, 0, 0, 0, 0, 0): 1.0}))
    with pytest.raises(NasBench201Error, match="expected all 15625"):
        load_nasbench201(wrong)
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.mkdir, (str(marker),))

    hostile = tmp_path / "hostile.anb"
    hostile.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(NasBench201Error, match="not allowed"):
        load_nasbench201(hostile)
    assert not marker.exists()


def test_problem_rejects_unknown_objectives(table: pd.DataFrame) -> None:
    with pytest.raises(SearchError, match="not numeric columns"):
        NasBench201Problem(table, (Objective("latency_ms", "min"),))
    with pytest.raises(SearchError, match="reference"):
        NasBench201Problem(table, reference=(1.0,))
