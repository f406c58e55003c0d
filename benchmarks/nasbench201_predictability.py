"""How well can a lightly trained predictor rank NAS-Bench-201 cells where the Pareto front lives?

    python benchmarks/nasbench201_predictability.py --out benchmarks/results [--reps 5]

The search-efficiency benchmark (``search_efficiency.py``) asks the predictor method to reach plain
NSGA-II's 500-evaluation hypervolume with half the evaluations. Its gains can only come from the accuracy
predictor (MACs are computed exactly), so this script measures what that predictor can know: it fits
``MetricPredictor`` (the library's default families, 5-fold CV) on random training cells, as the search's
first iterations do, and scores its ranking of *all* 15,625 cells by Kendall tau: overall, among the top
10% by PTQ accuracy (where the front is), and within groups of cells with equal MACs (the choice the
search actually faces once MACs are known exactly). Two encodings: the space's one-hot operation per edge
(what the search uses), and that plus the path encoding of BANANAS (White et al., 2021: one-hot operation
sequence along each of the cell's four input-to-output paths, a path through ``none`` being absent).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import kendalltau

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from predictors.estimator import MetricPredictor
from search.nasbench201 import EDGE_NAMES, EDGES, OPERATIONS, NasBench201Problem, cell_macs_m
from supernet.atomic import atomic_write_text

#: The cell's input-to-output paths as edge indices (node 0 is the input, node 3 the output).
PATHS = tuple(
    tuple(EDGES.index(edge) for edge in path)
    for path in (((0, 3),), ((0, 1), (1, 3)), ((0, 2), (2, 3)), ((0, 1), (1, 2), (2, 3)))
)
NONE = OPERATIONS.index("none")


def path_features(X: np.ndarray) -> np.ndarray:
    """One-hot operation sequence of each path; all zeros for a path cut by a ``none`` edge."""
    blocks = []
    rows = np.arange(len(X))
    for path in PATHS:
        block = np.zeros((len(X), len(OPERATIONS) ** len(path)))
        index = np.zeros(len(X), dtype=np.int64)
        alive = np.ones(len(X), dtype=bool)
        for edge in path:
            index = index * len(OPERATIONS) + X[:, edge]
            alive &= X[:, edge] != NONE
        block[rows[alive], index[alive]] = 1.0
        blocks.append(block)
    return np.hstack(blocks)


def _tau(predicted: np.ndarray, truth: np.ndarray) -> float:
    return float(kendalltau(predicted, truth).statistic)


def _within_groups(predicted: np.ndarray, truth: np.ndarray, groups: np.ndarray, min_size: int = 10) -> float:
    """Size-weighted mean tau within groups of at least ``min_size`` cells."""
    taus, sizes = [], []
    for value in np.unique(groups):
        members = np.flatnonzero(groups == value)
        if len(members) >= min_size:
            taus.append(_tau(predicted[members], truth[members]))
            sizes.append(len(members))
    return float(np.average(taus, weights=sizes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--train-sizes", type=int, nargs="+", default=[100, 250, 500])
    parser.add_argument("--reps", type=int, default=5, help="random training sets per size (seeds 0..reps-1)")
    args = parser.parse_args()
    started = time.perf_counter()
    problem = NasBench201Problem.load()
    table = problem.table
    X = table[list(EDGE_NAMES)].to_numpy(dtype=np.int64)
    accuracy = table["ptq_accuracy"].to_numpy(dtype=np.float64)
    macs = np.round(cell_macs_m(X), 6)
    top = accuracy >= np.quantile(accuracy, 0.9)
    encodings: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "one-hot (the search's)": problem.space.features,
        "one-hot + path": lambda rows: np.hstack([problem.space.features(rows), path_features(rows)]),
    }
    rows_out: list[dict[str, Any]] = []
    for n in args.train_sizes:
        for name, encode in encodings.items():
            scores: dict[str, list[float]] = {"all": [], "top10": [], "equal_macs": [], "equal_macs_top10": []}
            families = []
            for rep in range(args.reps):
                train = np.random.default_rng(rep).choice(len(X), size=n, replace=False)
                model = MetricPredictor(seed=rep, cv=5).fit(encode(X[train]), accuracy[train])
                predicted = model.predict(encode(X))
                families.append(model.best_family_)
                scores["all"].append(_tau(predicted, accuracy))
                scores["top10"].append(_tau(predicted[top], accuracy[top]))
                scores["equal_macs"].append(_within_groups(predicted, accuracy, macs))
                scores["equal_macs_top10"].append(_within_groups(predicted[top], accuracy[top], macs[top]))
            rows_out.append(
                {
                    "train_cells": n,
                    "encoding": name,
                    **{k: {"mean": float(np.mean(v)), "std": float(np.std(v))} for k, v in scores.items()},
                    "families": families,
                }
            )
            print(rows_out[-1], flush=True)
    result = {
        "command": "python " + shlex.join(["benchmarks/nasbench201_predictability.py", *sys.argv[1:]]),
        "cells": len(X),
        "top10_threshold_ptq_accuracy": float(np.quantile(accuracy, 0.9)),
        "rows": rows_out,
        "wall_seconds": time.perf_counter() - started,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "nasbench201_predictability.json", json.dumps(result, indent=2) + "\n")
    lines = [
        "# How well a predictor ranks NAS-Bench-201 cells (PTQ accuracy)",
        "",
        f"Command: `{result['command']}`  ",
        f"MetricPredictor (default families, 5-fold CV) fitted on random training cells, {args.reps} training sets "
        f"per size; Kendall tau of its predictions over all {len(X):,} cells (mean ± std). Top 10%: PTQ accuracy "
        f">= {result['top10_threshold_ptq_accuracy']:.2f}%. Equal MACs: size-weighted mean tau within groups of "
        "cells with the same MACs (groups of 10 or more).",
        "",
        "| train cells | encoding | all | top 10% | equal MACs | equal MACs, top 10% |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows_out:
        cells = " | ".join(
            f"{row[k]['mean']:.3f} ± {row[k]['std']:.3f}" for k in ("all", "top10", "equal_macs", "equal_macs_top10")
        )
        lines.append(f"| {row['train_cells']} | {row['encoding']} | {cells} |")
    atomic_write_text(args.out / "nasbench201_predictability.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
