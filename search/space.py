"""The search-space protocol: a finite, integer-coded space, declared as data (pymoo's ``xl``/``xu``).

Every candidate the search proposes is a row of integers, gene ``i`` in ``xl[i]..xu[i]`` (inclusive).
Spaces with conditional genes (the heads of a layer that is dropped, the precision of a layer that does
not exist) have several encodings of one candidate; ``canonical`` maps them all to one, by setting the
inactive genes to a fixed value. Everything downstream (the results store's key, duplicate detection,
predictor features) sees canonical rows only, so a candidate is never evaluated twice under two names.

A space is plugged in by subclassing: ``IntegerSpace`` (every gene active) is the simplest; a model
family's space (e.g. ``search.bert_space``) subclasses it or ``SearchSpace``, overrides ``canonical``
for its inactive genes, and ``encode``/``decode``/``describe`` to speak its own candidate type. The
engine never needs to know which.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from search.errors import SearchError

_KEY_TOKEN = re.compile(r"(?:^|-)(-?\d+)")


class SearchSpace(ABC):
    """An integer-coded search space; subclasses declare ``names``, ``xl`` and ``xu``.

    All methods taking ``X`` are vectorised over rows (a whole population at once); methods taking
    ``x`` work on one row. Defaults treat every gene as active and candidates as integer arrays.
    """

    @property
    @abstractmethod
    def names(self) -> tuple[str, ...]:
        """Gene names, one per variable (column names in descriptions and reports)."""

    @property
    @abstractmethod
    def xl(self) -> np.ndarray:
        """Inclusive lower bounds, an integer array of length ``n_var``."""

    @property
    @abstractmethod
    def xu(self) -> np.ndarray:
        """Inclusive upper bounds, an integer array of length ``n_var``."""

    @property
    def n_var(self) -> int:
        return len(self.names)

    @property
    def n_encodings(self) -> int:
        """The number of distinct encodings: an upper bound on the number of distinct candidates."""
        return math.prod(int(u) - int(lo) + 1 for lo, u in zip(self.xl, self.xu, strict=True))

    def validate(self, X: Any) -> np.ndarray:
        """``X`` as a 2-D integer array of in-bounds rows, or a SearchError saying what is wrong."""
        try:
            array = np.asarray(X, dtype=np.float64)
        except (TypeError, ValueError):
            raise SearchError("encoding is not numeric; genes are integer choice indices") from None
        if array.ndim != 2 or array.shape[1] != self.n_var:
            raise SearchError(
                f"expected a 2-D array of rows with {self.n_var} genes, got shape {array.shape}; "
                "pass one row per candidate"
            )
        if not np.all(np.isfinite(array)):
            raise SearchError("encoding contains NaN or infinite values; genes are integers")
        if not np.array_equal(np.rint(array), array):
            raise SearchError("encoding contains non-integer values; genes are integer choice indices")
        out = array.astype(np.int64)
        bad = (out < self.xl) | (out > self.xu)
        if np.any(bad):
            row, col = (int(i) for i in np.argwhere(bad)[0])
            raise SearchError(
                f"gene {self.names[col]!r} of row {row} is {out[row, col]}, outside {self.xl[col]}..{self.xu[col]}; "
                "keep every gene within the space's bounds"
            )
        return out

    def canonical(self, X: np.ndarray) -> np.ndarray:
        """One encoding per candidate: set inactive genes to a fixed value. Default: every gene is active.

        Subclasses with conditional genes override this (vectorised, 2-D in, 2-D out); it must be
        idempotent, and two encodings of the same candidate must map to the same row.
        """
        return self.validate(X).copy()

    def key(self, x: np.ndarray) -> str:
        """The canonical encoding as a string, e.g. ``"3-1-0-2"``: the results store's primary key.

        The format is fixed (``keys`` and ``from_key`` share it; stores written by one space version are
        read by the next), so subclasses change ``canonical``, never the key format.
        """
        row = self.canonical(np.asarray(x).reshape(1, -1))[0]
        return "-".join(str(int(v)) for v in row)

    def keys(self, X: np.ndarray) -> list[str]:
        """``key`` of every row of ``X``."""
        return ["-".join(str(int(v)) for v in row) for row in self.canonical(X)]

    def from_key(self, key: str) -> np.ndarray:
        """The canonical row a key stands for (the inverse of ``key``), e.g. to refit predictors from a store."""
        tokens = _KEY_TOKEN.findall(key)
        if len(tokens) != self.n_var or "-".join(tokens) != key:
            raise SearchError(f"key {key!r} is not an encoding of {self.n_var} genes; keys look like '3-1-0'")
        return self.validate(np.array([[int(t) for t in tokens]]))[0]

    def features(self, X: np.ndarray) -> np.ndarray:
        """What predictors see (2-D float). Default: the canonical genes themselves."""
        return self.canonical(X).astype(np.float64)

    def decode(self, x: np.ndarray) -> Any:
        """The candidate a row stands for, in the user's own type. Default: the canonical row itself."""
        return self.canonical(np.asarray(x).reshape(1, -1))[0]

    def encode(self, candidate: Any) -> np.ndarray:
        """The canonical row of a candidate (``decode(encode(c)) == c``). Default: the candidate is a row."""
        return self.canonical(np.asarray(candidate).reshape(1, -1))[0]

    def describe(self, x: np.ndarray) -> dict[str, Any]:
        """A JSON-able description stored with each result. Default: ``{gene name: value}``."""
        row = self.canonical(np.asarray(x).reshape(1, -1))[0]
        return {name: int(v) for name, v in zip(self.names, row, strict=True)}

    def neighbours(self, X: np.ndarray) -> np.ndarray:
        """Every distinct canonical row that differs from a row of ``X`` in exactly one gene, first-seen order.

        The predictor method's local proposals: a real evaluation near a measured front member is where
        a predictor's ranking is most trustworthy (it is interpolating, not extrapolating). Rows of ``X``
        themselves are left out; changing an inactive gene gives the row back and so adds nothing.
        """
        X = self.canonical(self.validate(X))
        own = set(self.keys(X))
        rows = []
        for x in X:
            for gene in range(self.n_var):
                values = np.arange(self.xl[gene], self.xu[gene] + 1)
                values = values[values != x[gene]]
                block = np.repeat(x[None, :], len(values), axis=0)
                block[:, gene] = values
                rows.append(block)
        if not rows:
            return X[:0]
        Y = self.canonical(np.concatenate(rows))
        keys = np.array(self.keys(Y))
        _, first = np.unique(keys, return_index=True)
        first = np.sort(first)
        return Y[[i for i in first if keys[i] not in own]].reshape(-1, self.n_var)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` canonical rows drawn uniformly over encodings (not necessarily distinct).

        Uniform over *encodings*: a candidate with inactive genes has several encodings and so is drawn
        more often; a space for which that matters overrides this.
        """
        if n < 0:
            raise SearchError(f"cannot sample {n} rows; ask for n >= 0")
        X = rng.integers(self.xl, self.xu, size=(n, self.n_var), endpoint=True, dtype=np.int64)
        return self.canonical(X)


class IntegerSpace(SearchSpace):
    """The simplest space: named integer genes with inclusive bounds, every gene always active.

    Also the base for spaces that only add inactive-gene masking: override ``canonical``.
    """

    def __init__(self, names: Sequence[str], xl: Sequence[int] | np.ndarray, xu: Sequence[int] | np.ndarray) -> None:
        names = tuple(str(n) for n in names)
        lower = np.asarray(xl)
        upper = np.asarray(xu)
        if not names:
            raise SearchError("a search space needs at least one gene; give names, xl and xu of equal length")
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise SearchError(f"gene names {dup} are repeated; give every gene its own name")
        if lower.shape != (len(names),) or upper.shape != (len(names),):
            raise SearchError(
                f"{len(names)} gene names but bounds of shape {lower.shape} and {upper.shape}; give one bound per gene"
            )
        if not (np.array_equal(lower, np.rint(lower)) and np.array_equal(upper, np.rint(upper))):
            raise SearchError("bounds must be integers (genes are choice indices)")
        lower, upper = lower.astype(np.int64), upper.astype(np.int64)
        if np.any(lower > upper):
            i = int(np.argmax(lower > upper))
            raise SearchError(f"gene {names[i]!r} has xl {lower[i]} > xu {upper[i]}; bounds are inclusive, xl <= xu")
        self._names = names
        self._xl = lower
        self._xu = upper
        self._xl.flags.writeable = False
        self._xu.flags.writeable = False

    @property
    def names(self) -> tuple[str, ...]:
        return self._names

    @property
    def xl(self) -> np.ndarray:
        return self._xl

    @property
    def xu(self) -> np.ndarray:
        return self._xu

    def __repr__(self) -> str:
        return f"{type(self).__name__}(names={list(self.names)}, xl={self.xl.tolist()}, xu={self.xu.tolist()})"
