"""The results store: every real evaluation, written as it happens, keyed by the canonical encoding.

Real evaluations are the expensive part of a search (fine-tuning-free but still minutes per
sub-network with latency measurement), so each one is written to ``evaluations.csv`` the moment it is
added, atomically (a killed search leaves the previous complete file, never half a row). Re-opening
the folder loads what is there: the engine resumes from it and never evaluates a stored key again.
Adding a key twice is an error, because that would mean the engine spent budget on a candidate it
already had.

Columns: ``key``, ``index`` (evaluation order, 0-based), ``iteration`` (the search iteration or
generation that proposed it), ``method`` (how it was proposed), one column per metric (in order of first
appearance), ``description`` (the space's JSON description) and ``seconds`` (evaluation wall time).
Small JSON side files (the search's settings, predictor quality per iteration) live in the same folder.

The CSV is rewritten in full on every ``add``; with hundreds to a few thousand evaluations that costs
milliseconds, nothing next to an evaluation, and keeps the file a plain table any tool can read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from search.errors import SearchError
from supernet.atomic import atomic_write, atomic_write_text

EVALUATIONS = "evaluations.csv"
#: Columns the store owns; a metric may not use one of these names.
RESERVED = ("key", "index", "iteration", "method", "description", "seconds")


@dataclass(frozen=True)
class EvaluationRecord:
    """One stored evaluation (``metrics`` leaves out metrics this candidate was not measured on)."""

    key: str
    index: int
    iteration: int
    method: str
    metrics: dict[str, float]
    description: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


class ResultsStore:
    """Real evaluations of one search, in ``folder`` (``None``: in memory only, nothing written)."""

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = None if folder is None else Path(folder)
        self._records: list[EvaluationRecord] = []
        self._by_key: dict[str, int] = {}
        self._metric_names: list[str] = []
        if self.folder is not None:
            if self.folder.exists() and not self.folder.is_dir():
                raise SearchError(f"results store {self.folder} is a file; give a folder path")
            if (self.folder / EVALUATIONS).exists():
                self._load(self.folder / EVALUATIONS)

    @property
    def path(self) -> Path | None:
        """The evaluations file (``None`` for an in-memory store)."""
        return None if self.folder is None else self.folder / EVALUATIONS

    @property
    def metric_names(self) -> tuple[str, ...]:
        return tuple(self._metric_names)

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[EvaluationRecord]:
        return iter(list(self._records))

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def contains(self, key: str) -> bool:
        return key in self._by_key

    def get(self, key: str) -> EvaluationRecord:
        try:
            return self._records[self._by_key[key]]
        except KeyError:
            raise SearchError(f"no evaluation stored for key {key!r}; check contains(key) first") from None

    def records(self) -> list[EvaluationRecord]:
        """All evaluations in evaluation order."""
        return list(self._records)

    def add(
        self,
        key: str,
        metrics: Mapping[str, float],
        description: Mapping[str, Any],
        iteration: int,
        method: str,
        seconds: float,
    ) -> EvaluationRecord:
        """Record one real evaluation and rewrite the file atomically; a key already stored is an error."""
        if not isinstance(key, str) or not key:
            raise SearchError(f"a store key is a non-empty string, got {key!r}")
        if key in self._by_key:
            raise SearchError(
                f"key {key!r} is already stored (evaluation #{self._by_key[key]}); never evaluate a candidate twice"
            )
        if not isinstance(method, str) or not method:
            raise SearchError(
                f"method must be a non-empty string naming how the candidate was proposed, got {method!r}"
            )
        clean: dict[str, float] = {}
        for name, value in metrics.items():
            if not isinstance(name, str) or not name or name in RESERVED:
                raise SearchError(f"metric name {name!r} is empty or reserved ({', '.join(RESERVED)}); rename it")
            try:
                clean[name] = float(value)
            except (TypeError, ValueError):
                raise SearchError(f"metric {name!r} of key {key!r} is {value!r}, not a number") from None
        try:
            described = json.loads(json.dumps(dict(description)))
        except (TypeError, ValueError) as exc:
            raise SearchError(f"description of key {key!r} is not JSON-serialisable ({exc}); use plain types") from None
        record = EvaluationRecord(
            key=key,
            index=len(self._records),
            iteration=int(iteration),
            method=method,
            metrics=clean,
            description=described,
            seconds=float(seconds),
        )
        self._append(record)
        self._save()
        return record

    def frame(self) -> pd.DataFrame:
        """All evaluations as a table, in evaluation order (columns as in the module docstring)."""
        columns = ["key", "index", "iteration", "method", *self._metric_names, "description", "seconds"]
        rows = [
            {
                "key": r.key,
                "index": r.index,
                "iteration": r.iteration,
                "method": r.method,
                **{m: r.metrics.get(m, math.nan) for m in self._metric_names},
                "description": json.dumps(r.description),
                "seconds": r.seconds,
            }
            for r in self._records
        ]
        frame = pd.DataFrame(rows, columns=columns)
        return frame.astype({"index": "int64", "iteration": "int64", "seconds": "float64"})

    def read_json(self, name: str) -> Any | None:
        """A JSON side file of the store's folder, or None when absent (or for an in-memory store)."""
        if self.folder is None or not (self.folder / name).exists():
            return None
        try:
            return json.loads((self.folder / name).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise SearchError(f"{self.folder / name} is not valid JSON ({exc}); delete it or restore it") from None

    def write_json(self, name: str, data: Any) -> None:
        """Write a JSON side file atomically (a no-op for an in-memory store)."""
        if self.folder is not None:
            atomic_write_text(self.folder / name, json.dumps(data, indent=2) + "\n")

    def _append(self, record: EvaluationRecord) -> None:
        self._by_key[record.key] = len(self._records)
        self._records.append(record)
        for name in record.metrics:
            if name not in self._metric_names:
                self._metric_names.append(name)

    def _save(self) -> None:
        if self.path is not None:
            frame = self.frame()
            atomic_write(self.path, lambda tmp: frame.to_csv(tmp, index=False))

    def _load(self, path: Path) -> None:
        try:
            frame = pd.read_csv(path, dtype={"key": str, "method": str, "description": str})
        except (ValueError, pd.errors.ParserError) as exc:
            raise SearchError(f"cannot read results store {path} ({exc}); restore it or use a new folder") from None
        missing = [c for c in RESERVED if c not in frame.columns]
        if missing:
            raise SearchError(f"results store {path} lacks columns {missing}; it was not written by ResultsStore")
        metric_names = [c for c in frame.columns if c not in RESERVED]
        for position, values in enumerate(frame.to_dict("records")):
            if values["key"] in self._by_key:
                raise SearchError(f"results store {path} holds key {values['key']!r} twice; the file is damaged")
            try:
                record = EvaluationRecord(
                    key=str(values["key"]),
                    index=int(values["index"]),
                    iteration=int(values["iteration"]),
                    method=str(values["method"]),
                    metrics={m: float(values[m]) for m in metric_names if not pd.isna(values[m])},
                    description=json.loads(values["description"]),
                    seconds=float(values["seconds"]),
                )
            except (TypeError, ValueError) as exc:
                raise SearchError(f"results store {path} row {position} is damaged ({exc}); restore the file") from None
            if record.index != position:
                raise SearchError(f"results store {path} row {position} has index {record.index}; the file is damaged")
            self._append(record)
        for name in metric_names:  # keep the file's column order, also for metrics no row has
            if name not in self._metric_names:
                self._metric_names.append(name)
