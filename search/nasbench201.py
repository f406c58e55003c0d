"""NAS-Bench-201 with measured post-training-quantization accuracy: a ground truth for search efficiency.

Whether the predictor-in-the-loop search really needs fewer evaluations than plain NSGA-II can only be
judged where every candidate's true value is known, so that a search's front can be compared with the
true Pareto front. AnalogNAS-Bench (PyPI ``analog-nasbench``, IBM) ships such a table: all 15,625 cells
of the NAS-Bench-201 CIFAR-10 search space, each trained for 200 epochs and measured as trained
(``baseline_accuracy``), after int8 post-training quantization (``ptq_accuracy``), after
quantization-aware training (``qat_accuracy``), and on simulated analog hardware. A quantization-aware
architecture search over it is a real, cheap and exactly repeatable problem.

The data file is read by path and unpickled with a restricted unpickler that maps the package's two
record classes to local shims and refuses every other global, so nothing of the package is executed
(importing it fails anyway: it imports the removed ``pkg_resources``).

Encoding (the package's own, that of NASLib): a cell is a tuple of 6 operation indices, one per edge
of the 4-node cell DAG in the order ``EDGES`` (``(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)``, node 0
the cell input, node 3 its output), each an index into ``OPERATIONS`` (``skip_connect, none,
nor_conv_3x3, nor_conv_1x1, avg_pool_3x3``). The table confirms both orders: exactly the 341 cells in
which ``none`` edges disconnect node 3 from node 0 sit at chance accuracy (10%).

Each cell was trained once, so the table carries training noise: cells that compute the same function
(they differ only on an edge whose output ``none`` edges discard) differ by about 0.17 accuracy points
(median standard deviation), and near the top of each cost level the true front is often picked out by
differences of that size. A search, or a predictor, cannot be expected to rank cells finer than that.
"""

from __future__ import annotations

import importlib.util
import math
import pickle
import site
import sysconfig
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pymoo.indicators.hv import HV
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from search.errors import SearchError
from search.problem import Objective, check_objectives, objective_matrix
from search.space import IntegerSpace

#: Operation names in the order of the data's operation indices (NASLib's ``OP_NAMES`` in NAS-Bench-201 words).
OPERATIONS = ("skip_connect", "none", "nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3")
#: The cell's edges ``(from node, to node)`` in the order of the data's tuples.
EDGES = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))
#: Gene / column names of the edges: ``edge_<from>_<to>``.
EDGE_NAMES = tuple(f"edge_{i}_{j}" for i, j in EDGES)
#: ``(channels, feature-map side)`` of the three stages of the CIFAR network; 5 cells per stage.
STAGES = ((16, 32), (32, 16), (64, 8))
CELLS_PER_STAGE = 5
#: Accuracy fields of the data (percent, 0-100) and the drift fields (a value and its uncertainty each).
ACCURACIES = ("baseline_accuracy", "ptq_accuracy", "qat_accuracy", "noisy_accuracy", "analog_accuracy")
DRIFTS = tuple(f"{kind}_drift_{t}" for kind in ("baseline", "analog") for t in (60, 3600, 86400, 2592000))
N_CELLS = len(OPERATIONS) ** len(EDGES)
DEFAULT_OBJECTIVES = (Objective("ptq_accuracy", "max"), Objective("macs_m", "min"))
#: The reference point lies this share of each objective's range beyond its worst value over the table.
REFERENCE_MARGIN = 0.01
PACKAGE = "analognasbench"
DATA_FILE = "data.anb"
INSTALL_HINT = "pip install --no-deps analog-nasbench==0.1.3"


class NasBench201Error(SearchError):
    """The AnalogNAS-Bench data file is missing, unreadable or not what this module expects."""


# ------------------------------------------------------------------------------------------------------
# Cost model
# ------------------------------------------------------------------------------------------------------


def _edge_macs() -> np.ndarray:
    """MACs of one edge of each operation, summed over the 15 cells of the network (integers, exact)."""
    total = np.zeros(len(OPERATIONS), dtype=np.int64)
    for channels, side in STAGES:
        pixels = side * side
        per_cell = {
            "nor_conv_1x1": channels * channels * pixels,
            "nor_conv_3x3": 9 * channels * channels * pixels,
            "avg_pool_3x3": 9 * channels * pixels,
        }
        for i, op in enumerate(OPERATIONS):
            total[i] += CELLS_PER_STAGE * per_cell.get(op, 0)
    return total


#: MACs one edge costs over the whole network, per operation index.
EDGE_MACS = _edge_macs()


def cell_macs_m(X: Any) -> np.ndarray:
    """Millions of multiply-accumulates the searched cells cost in the network, per row of operation indices.

    A deterministic, hardware-free cost computed from the operations alone, so that the search has a
    cost objective without a device. The NAS-Bench-201 CIFAR network stacks 3 stages of 5 cells with
    C = 16, 32, 64 channels on 32x32, 16x16 and 8x8 maps; every edge of a cell maps C channels to C
    channels at the stage's resolution, costing ``C*C*H*W`` MACs for ``nor_conv_1x1``, ``9*C*C*H*W`` for
    ``nor_conv_3x3`` (ReLU and BatchNorm are not counted), ``9*C*H*W`` for ``avg_pool_3x3`` and nothing
    for ``none`` and ``skip_connect``. The fixed skeleton (stem, the two residual reduction blocks, the
    classifier) is the same for every cell and is left out: a constant shifts every candidate alike and
    changes neither dominance nor hypervolume against a table-derived reference point. Hence 64 cells
    (only ``none``/``skip_connect`` edges) cost 0.
    """
    ops = np.asarray(X, dtype=np.int64)
    # Summed in integers, then scaled: cells with the same operations (in any order) cost exactly the same.
    return EDGE_MACS[ops].sum(axis=-1) / 1e6


# ------------------------------------------------------------------------------------------------------
# Loading the table
# ------------------------------------------------------------------------------------------------------


class _ArchitectureRecord:
    """Stands in for ``analognasbench.data.Architecture``: unpickling only fills its ``__dict__``."""


class _DriftRecord:
    """Stands in for ``analognasbench.data.DriftMeasurement`` (``value``, ``uncertainty``)."""


_SHIMS: dict[tuple[str, str], type] = {
    (f"{PACKAGE}.data", "Architecture"): _ArchitectureRecord,
    (f"{PACKAGE}.data", "DriftMeasurement"): _DriftRecord,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves the package's two record classes to inert shims and refuses every other global.

    The file needs no builtins (its tuples, dicts, floats and ints are pickle opcodes), so no global
    besides the two record classes is allowed: a tampered file cannot run code.
    """

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _SHIMS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in this data file") from None


def default_data_path() -> Path:
    """Where the installed ``analog-nasbench`` keeps ``data.anb``, found without importing the package.

    ``importlib.util.find_spec`` of a top-level package only asks the path finders (nothing runs); the
    site-packages folders are searched as well in case the spec cannot be found (a broken install).
    """
    candidates: list[Path] = []
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is not None:
        candidates += [Path(p) / DATA_FILE for p in spec.submodule_search_locations or ()]
    folders = [sysconfig.get_paths()["purelib"], *site.getsitepackages(), site.getusersitepackages()]
    candidates += [Path(folder) / PACKAGE / DATA_FILE for folder in folders]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return candidates[0] if candidates else Path(folders[0]) / PACKAGE / DATA_FILE


def _corrupt(path: Path, why: str) -> NasBench201Error:
    return NasBench201Error(
        f"AnalogNAS-Bench data file {path} is unreadable ({why}); reinstall it with "
        f"`{INSTALL_HINT} --force-reinstall`, or pass path= to a good copy"
    )


def _number(record: Any, name: str, path: Path) -> float:
    value = getattr(record, name, None)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _corrupt(path, f"field {name!r} is {value!r}, not a finite number")
    return float(value)


def _row(cell: Any, record: Any, path: Path) -> dict[str, Any]:
    if (
        not isinstance(cell, tuple)
        or len(cell) != len(EDGES)
        or not all(isinstance(op, int) and 0 <= op < len(OPERATIONS) for op in cell)
    ):
        raise _corrupt(path, f"key {cell!r} is not a tuple of {len(EDGES)} operation indices")
    if not isinstance(record, _ArchitectureRecord) or tuple(getattr(record, "architecture", ())) != cell:
        raise _corrupt(path, f"the record of {cell} is not an Architecture of that cell")
    row: dict[str, Any] = {name: _number(record, name, path) for name in ACCURACIES}
    for name in DRIFTS:
        drift = getattr(record, name, None)
        if not isinstance(drift, _DriftRecord):
            raise _corrupt(path, f"field {name!r} of {cell} is not a drift measurement")
        row[name] = _number(drift, "value", path)
        row[f"{name}_uncertainty"] = _number(drift, "uncertainty", path)
    return row


def cell_index(X: Any) -> np.ndarray:
    """The row of the table holding each cell: its operation indices read as a base-5 number, first edge first."""
    ops = np.asarray(X, dtype=np.int64)
    return ops @ (len(OPERATIONS) ** np.arange(len(EDGES) - 1, -1, -1))


def cell_string(ops: Sequence[int]) -> str:
    """NAS-Bench-201's own name of a cell, e.g. ``|nor_conv_3x3~0|+|none~0|skip_connect~1|+|...|``."""
    by_edge = {edge: OPERATIONS[int(op)] for edge, op in zip(EDGES, ops, strict=True)}
    nodes = ["|" + "|".join(f"{by_edge[(i, j)]}~{i}" for i in range(j)) + "|" for j in range(1, 4)]
    return "+".join(nodes)


def parse_cell_string(text: str) -> tuple[int, ...]:
    """The operation indices of a NAS-Bench-201 cell string (the inverse of ``cell_string``)."""
    ops: dict[tuple[int, int], int] = {}
    nodes = text.strip().split("+")
    if len(nodes) != 3:
        raise SearchError(f"cell {text!r} is not a NAS-Bench-201 cell string; they look like {cell_string([0] * 6)!r}")
    for j, node in enumerate(nodes, start=1):
        inputs = node.strip().strip("|").split("|")
        if len(inputs) != j:
            raise SearchError(f"node {j} of cell {text!r} has {len(inputs)} inputs, expected {j}")
        for token in inputs:
            name, _, source = token.partition("~")
            if name not in OPERATIONS or not source.isdigit() or int(source) >= j:
                raise SearchError(f"edge {token!r} of cell {text!r} is not 'operation~input' with {OPERATIONS}")
            ops[(int(source), j)] = OPERATIONS.index(name)
    if len(ops) != len(EDGES):
        raise SearchError(f"cell {text!r} repeats an input; give each node each earlier node once")
    return tuple(ops[edge] for edge in EDGES)


@lru_cache(maxsize=4)
def _load(path: Path, mtime_ns: int, size: int) -> pd.DataFrame:
    """The table of one file version (``mtime_ns`` and ``size`` key the cache, so a replaced file is re-read)."""
    try:
        with path.open("rb") as handle:
            data = _RestrictedUnpickler(handle).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise _corrupt(path, f"{type(exc).__name__}: {exc}") from None
    if not isinstance(data, dict):
        raise _corrupt(path, f"it holds a {type(data).__name__}, not a dict of cells")
    if len(data) != N_CELLS:
        raise _corrupt(path, f"it holds {len(data)} cells, expected all {N_CELLS}")
    rows = {cell_index(cell).item(): _row(cell, record, path) for cell, record in data.items()}
    if len(rows) != N_CELLS:
        raise _corrupt(path, "some cells appear twice")
    index = np.arange(N_CELLS)
    ops = (index[:, None] // len(OPERATIONS) ** np.arange(len(EDGES) - 1, -1, -1)) % len(OPERATIONS)
    frame = pd.DataFrame({"cell_index": index})
    for k, name in enumerate(EDGE_NAMES):
        frame[name] = ops[:, k]
    frame["cell"] = [cell_string(row) for row in ops]
    metrics = pd.DataFrame.from_records([rows[i] for i in index])
    frame = pd.concat([frame, metrics], axis=1)
    frame["macs_m"] = cell_macs_m(ops)
    return frame


def load_nasbench201(path: str | Path | None = None) -> pd.DataFrame:
    """All 15,625 NAS-Bench-201 cells with their AnalogNAS-Bench measurements, one row per cell.

    Row ``i`` is the cell whose operation indices read as base-5 number ``i`` (``cell_index``), so a
    population is looked up by fancy indexing. Columns: ``cell_index``, one operation index per edge
    (``edge_0_1`` ... ``edge_2_3``, see ``EDGES``/``OPERATIONS``), ``cell`` (NAS-Bench-201's string),
    the accuracies in percent (``baseline_accuracy``, ``ptq_accuracy``, ``qat_accuracy``,
    ``noisy_accuracy``, ``analog_accuracy``), the drift accuracies and their uncertainties, and ``macs_m``
    (``cell_macs_m``). ``path`` defaults to the installed package's ``data.anb`` (``default_data_path``).
    A missing or corrupt file raises ``NasBench201Error`` naming the file and the fix.
    """
    file = Path(path) if path is not None else default_data_path()
    if not file.is_file():
        raise NasBench201Error(
            f"AnalogNAS-Bench data file {file} not found; install it with `{INSTALL_HINT}`, or pass path= to data.anb"
        )
    stat = file.stat()
    return _load(file.resolve(), stat.st_mtime_ns, stat.st_size).copy()


# ------------------------------------------------------------------------------------------------------
# Space and problem
# ------------------------------------------------------------------------------------------------------


class NasBench201Space(IntegerSpace):
    """The 5^6 NAS-Bench-201 cells: one gene per edge (``EDGE_NAMES``), an index into ``OPERATIONS``.

    Every gene is always active, so there is no canonical-form masking (isomorphic cells, e.g. those
    differing only on edges that ``none`` disconnects, were trained separately in the data and have
    their own measurements, so they stay distinct candidates). Features are one-hot (30 columns):
    operation indices are categories, not magnitudes, and a linear or kernel predictor on the raw
    indices would assume ``avg_pool_3x3`` is "more" than ``nor_conv_1x1``. (Adding a path encoding,
    one indicator per input-to-output path and its operations, did not predict ``ptq_accuracy`` any
    better: Kendall tau 0.58 either way with 300 random training cells, gradient boosting.)
    """

    def __init__(self) -> None:
        super().__init__(EDGE_NAMES, [0] * len(EDGES), [len(OPERATIONS) - 1] * len(EDGES))

    def features(self, X: np.ndarray) -> np.ndarray:
        """One-hot operation per edge: column ``5 * edge + operation`` is 1."""
        rows = self.canonical(X)
        onehot = np.zeros((len(rows), len(EDGES) * len(OPERATIONS)))
        columns = np.arange(len(EDGES)) * len(OPERATIONS) + rows
        np.put_along_axis(onehot, columns, 1.0, axis=1)
        return onehot

    def decode(self, x: np.ndarray) -> str:
        """The NAS-Bench-201 cell string of a row."""
        return cell_string(self.canonical(np.asarray(x).reshape(1, -1))[0])

    def encode(self, candidate: Any) -> np.ndarray:
        """The row of a cell string, a tuple of operation names, or a tuple of operation indices."""
        if isinstance(candidate, str):
            return self.canonical(np.array([parse_cell_string(candidate)]))[0]
        items = list(candidate)
        if items and all(isinstance(item, str) for item in items):
            unknown = [item for item in items if item not in OPERATIONS]
            if unknown:
                raise SearchError(f"unknown operations {unknown}; use {', '.join(OPERATIONS)}")
            items = [OPERATIONS.index(item) for item in items]
        return self.canonical(np.array(items).reshape(1, -1))[0]

    def describe(self, x: np.ndarray) -> dict[str, Any]:
        """``{"cell": cell string, edge name: operation name, ...}``."""
        row = self.canonical(np.asarray(x).reshape(1, -1))[0]
        return {
            "cell": cell_string(row),
            **{name: OPERATIONS[int(op)] for name, op in zip(EDGE_NAMES, row, strict=True)},
        }


@dataclass(frozen=True, eq=False)
class NasBench201Problem:
    """A search problem over NAS-Bench-201 whose every candidate's true value is known.

    ``evaluate`` and ``exact_metrics`` plug into ``search.engine.run_search``; ``true_front`` and
    ``normalized_hypervolume`` measure how close a search came to the best achievable front. The
    reference point is fixed by the whole table (the worst value of each objective, moved outwards by
    ``margin`` of its range) unless ``reference`` gives one, so it is the same for every method and seed,
    and the normalized hypervolume ``HV(found) / HV(true front)`` lies in [0, 1] (points beyond the
    reference point add nothing). The table is treated as read-only: the reference point, the true
    front and its hypervolume are computed once.
    """

    table: pd.DataFrame
    objectives: tuple[Objective, ...] = DEFAULT_OBJECTIVES
    space: NasBench201Space = field(default_factory=NasBench201Space)
    margin: float = REFERENCE_MARGIN
    #: An explicit reference point (objectives' units and order) instead of the table-derived one.
    reference: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        check_objectives(self.objectives)
        object.__setattr__(self, "objectives", tuple(self.objectives))
        numeric = [c for c in self.table.columns if pd.api.types.is_float_dtype(self.table[c])]
        missing = [o.metric for o in self.objectives if o.metric not in numeric]
        if missing:
            raise SearchError(f"objectives {missing} are not numeric columns of the table; choose from {numeric}")
        if len(self.table) != N_CELLS or not np.array_equal(self.table["cell_index"].to_numpy(), np.arange(N_CELLS)):
            raise SearchError("the table must hold every cell in cell_index order; use load_nasbench201()")
        if not (isinstance(self.margin, int | float) and 0 < self.margin < 1):
            raise SearchError(f"margin {self.margin!r} must lie in (0, 1); it is a share of each objective's range")
        if self.reference is not None:
            point = tuple(float(v) for v in self.reference)
            if len(point) != len(self.objectives) or not all(math.isfinite(v) for v in point):
                raise SearchError(f"reference {self.reference!r} must give one finite value per objective")
            object.__setattr__(self, "reference", point)

    @classmethod
    def load(
        cls, path: str | Path | None = None, objectives: Sequence[Objective] = DEFAULT_OBJECTIVES
    ) -> NasBench201Problem:
        """The problem on the table ``load_nasbench201(path)`` reads."""
        return cls(load_nasbench201(path), tuple(objectives))

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(o.metric for o in self.objectives)

    def evaluate(self, X: np.ndarray) -> list[dict[str, float]]:
        """The objective metrics of each row, looked up in the table (one vectorised lookup per batch)."""
        rows = cell_index(self.space.validate(X))
        columns = {m: self.table[m].to_numpy()[rows] for m in self.metrics}
        return [{m: float(columns[m][i]) for m in self.metrics} for i in range(len(rows))]

    def exact_metrics(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """``macs_m`` computed from the operations (a cost known without evaluating, as model size is).

        Passed to ``run_search(exact_metrics=...)`` the predictor method uses it exactly instead of
        predicting it (a predictor could not fit it anyway: 64 cells cost 0 MACs, and predictors' MAPE
        needs nonzero targets).
        """
        return {"macs_m": cell_macs_m(self.space.validate(X))}

    def objective_values(self, frame: pd.DataFrame) -> np.ndarray:
        """``F`` of the rows of ``frame`` in minimisation space ("max" objectives negated), objectives' order."""
        return objective_matrix(self.objectives, {m: frame[m].to_numpy() for m in self.metrics}, len(frame))

    def _to_minimisation(self, point: Sequence[float] | np.ndarray) -> np.ndarray:
        """A point in the objectives' units to minimisation space, and back (negating "max" is its own inverse)."""
        return np.array([-v if o.direction == "max" else v for v, o in zip(point, self.objectives, strict=True)])

    @cached_property
    def _reference_minimisation(self) -> np.ndarray:
        if self.reference is not None:
            return self._to_minimisation(self.reference)
        F = self.objective_values(self.table)
        return np.asarray(F.max(axis=0) + self.margin * np.ptp(F, axis=0), dtype=np.float64)

    def reference_point(self) -> tuple[float, ...]:
        """The fixed reference point in the objectives' own units (``run_search(reference_point=...)``)."""
        return tuple(float(v) for v in self._to_minimisation(self._reference_minimisation))

    def nadir_reference_point(self) -> tuple[float, ...]:
        """The true front's worst value per objective, moved outwards by ``margin`` of the front's range.

        Against this point only cells that compete with the true front add volume, so the normalized
        hypervolume separates methods that the table-wide point (where any decent cell adds most of the
        volume) barely tells apart. ``dataclasses.replace(problem, reference=...)`` makes it the point.
        """
        F = self.objective_values(self.true_front())
        return tuple(float(v) for v in self._to_minimisation(F.max(axis=0) + self.margin * np.ptp(F, axis=0)))

    @cached_property
    def _front_rows(self) -> np.ndarray:
        F = self.objective_values(self.table)
        front = np.asarray(NonDominatedSorting().do(F, only_non_dominated_front=True), dtype=int)
        return front[np.lexsort(F[front].T[::-1])]

    def true_front(self) -> pd.DataFrame:
        """Every cell on the true Pareto front (non-dominated sorting of all cells), best first objective first."""
        return self.table.iloc[self._front_rows].reset_index(drop=True)

    def hypervolume(self, frame: pd.DataFrame) -> float:
        """Hypervolume of the rows of ``frame`` (any frame with the objective columns, e.g. a search's history)."""
        if frame.empty:
            return 0.0
        return float(HV(ref_point=self._reference_minimisation).do(self.objective_values(frame)))

    @cached_property
    def _true_hypervolume(self) -> float:
        return self.hypervolume(self.true_front())

    def true_hypervolume(self) -> float:
        """Hypervolume of the true front: the most any search can reach."""
        return self._true_hypervolume

    def normalized_hypervolume(self, frame: pd.DataFrame) -> float:
        """``hypervolume(frame) / true_hypervolume()``, in [0, 1]."""
        return self.hypervolume(frame) / self.true_hypervolume()

    def normalized_curve(self, frame: pd.DataFrame, grid: Sequence[int]) -> list[float]:
        """Normalized hypervolume of the first ``n`` rows of ``frame`` for each ``n`` in ``grid`` (evaluation order)."""
        return [self.normalized_hypervolume(frame.iloc[: int(n)]) for n in grid]

    def describe(self) -> dict[str, Any]:
        """JSON-able settings of the problem, for results files."""
        return {
            "objectives": [[o.metric, o.direction] for o in self.objectives],
            "reference_point": list(self.reference_point()),
            "reference_margin": None if self.reference is not None else self.margin,
            "true_front_size": len(self.true_front()),
            "true_hypervolume": self.true_hypervolume(),
            "n_cells": N_CELLS,
        }


def nasbench201_problem(
    path: str | Path | None = None, objectives: Sequence[Objective] = DEFAULT_OBJECTIVES
) -> tuple[NasBench201Space, Callable[[np.ndarray], list[dict[str, float]]], tuple[Objective, ...]]:
    """``(space, evaluate, objectives)`` ready for ``run_search``; see ``NasBench201Problem`` for the rest."""
    problem = NasBench201Problem.load(path, objectives)
    return problem.space, problem.evaluate, problem.objectives


__all__ = [
    "DEFAULT_OBJECTIVES",
    "EDGES",
    "EDGE_NAMES",
    "OPERATIONS",
    "NasBench201Error",
    "NasBench201Problem",
    "NasBench201Space",
    "cell_index",
    "cell_macs_m",
    "cell_string",
    "default_data_path",
    "load_nasbench201",
    "nasbench201_problem",
    "parse_cell_string",
]
