"""A profile's latency estimate: the lookup-table sum, calibrated on real end-to-end measurements.

Block sums miss in a predictable direction: inside one compiled graph inductor fuses across block
boundaries (the q/k/v projections, LayerNorm into the next quantize), and every separately timed
block pays a call overhead the whole graph pays once. The error grows with the number of blocks, so
a two-feature linear fit, ``latency ≈ a·table_sum + b·depth + c``, corrects most of it. It is fitted
by weighted least squares with weights 1/measured², i.e. on *relative* error, which is what MAPE
scores, so a 2 ms sub-network counts as much as a 40 ms one.

Validation is honest by construction: each measured pair's calibrated estimate comes from a fit that
did not see it (leave-one-out), and the raw table sum (no fit at all) is reported beside it. The
calibration is kept only when its leave-one-out MAPE beats the raw sum's: where the residual error is
measurement jitter rather than a systematic offset (PyTorch eager here: p10-p90 spreads of 20-40% of
the median), a fit only adds variance.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import LeaveOneOut

from hardware_profiles.errors import ProfileError
from hardware_profiles.lut import LatencyTable
from predictors.quality import quality
from quant.policy import QuantPolicy
from supernet.arch import BertArch
from supernet.atomic import atomic_write_text
from supernet.bert import BertShape

MODEL_JSON = "latency_model.json"
MODEL_VERSION = 1
FEATURES = ("table_ms", "depth")


def accuracy_metrics(
    measured: Sequence[float] | np.ndarray, estimated: Sequence[float] | np.ndarray
) -> dict[str, float]:
    """MAPE (percent) and Kendall tau of ``estimated`` against ``measured`` latencies (``predictors.quality``)."""
    y = np.asarray(measured, dtype=float)
    if len(y) < 2 or np.any(y <= 0):
        raise ProfileError("latency metrics need at least two positive measurements")
    scores = quality(y, estimated)
    return {"n": float(scores.n), "mape_percent": scores.mape, "kendall_tau": scores.kendall_tau}


def _design(table_ms: Sequence[float], depth: Sequence[int]) -> np.ndarray:
    return np.column_stack([np.asarray(table_ms, dtype=float), np.asarray(depth, dtype=float)])


def _fit(x: np.ndarray, y: np.ndarray) -> LinearRegression:
    return LinearRegression().fit(x, y, sample_weight=1.0 / y**2)


def leave_one_out(
    table_ms: Sequence[float], depth: Sequence[int], measured: Sequence[float] | np.ndarray
) -> np.ndarray:
    """Calibrated estimates where each one comes from a fit on all the *other* measurements."""
    x, y = _design(table_ms, depth), np.asarray(measured, dtype=float)
    out = np.empty_like(y)
    for train, test in LeaveOneOut().split(x):
        out[test] = _fit(x[train], y[train]).predict(x[test])
    return out


@dataclass(frozen=True)
class LatencyModel:
    """Estimate latency (ms) of any (arch, policy) under one profile from its table and calibration."""

    table: LatencyTable
    coefficients: tuple[float, ...] = (1.0, 0.0)
    intercept: float = 0.0
    validation: dict[str, Any] | None = None

    @property
    def profile(self) -> str:
        return self.table.profile

    def predict_ms(self, shape: BertShape, arch: BertArch, policy: QuantPolicy | None = None) -> float:
        raw = self.table.estimate_ms(shape, arch, policy)
        a, b = self.coefficients
        return max(float(a * raw + b * arch.depth + self.intercept), 1e-6)

    def predict_many(self, shape: BertShape, candidates: Sequence[tuple[BertArch, QuantPolicy]]) -> np.ndarray:
        return np.array([self.predict_ms(shape, arch, policy) for arch, policy in candidates])

    @classmethod
    def calibrate(
        cls, table: LatencyTable, table_ms: Sequence[float], depth: Sequence[int], measured: Sequence[float]
    ) -> LatencyModel:
        """Fit the calibration on all measurements; store raw and leave-one-out metrics with it."""
        if len(measured) < 4:
            raise ProfileError(f"calibration needs at least 4 measured sub-networks, got {len(measured)}")
        x, y = _design(table_ms, depth), np.asarray(measured, dtype=float)
        fit = _fit(x, y)
        validation: dict[str, Any] = {
            "raw_table": accuracy_metrics(y, table_ms),
            "calibrated_leave_one_out": accuracy_metrics(y, leave_one_out(table_ms, depth, y)),
            "calibrated_in_sample": accuracy_metrics(y, fit.predict(x)),
        }
        if validation["calibrated_leave_one_out"]["mape_percent"] >= validation["raw_table"]["mape_percent"]:
            validation["used"] = "raw_table"
            return cls(table, (1.0, 0.0), 0.0, validation)
        validation["used"] = "calibrated_leave_one_out"
        coefficients = tuple(float(c) for c in fit.coef_)
        return cls(table, coefficients, float(fit.intercept_), validation)

    def save(self, folder: str | Path) -> None:
        data = {
            "version": MODEL_VERSION,
            "profile": self.profile,
            "features": list(FEATURES),
            "coefficients": list(self.coefficients),
            "intercept": self.intercept,
            "validation": self.validation,
        }
        atomic_write_text(Path(folder) / MODEL_JSON, json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> LatencyModel:
        """The table in ``folder`` with its calibration (the raw table sum when none was fitted yet)."""
        folder = Path(folder)
        table = LatencyTable.load(folder)
        path = folder / MODEL_JSON
        if not path.is_file():
            return cls(table)
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") != MODEL_VERSION or tuple(data.get("features", ())) != FEATURES:
            raise ProfileError(f"{path} is not a version {MODEL_VERSION} latency model of {FEATURES}; re-profile")
        return cls(table, tuple(float(c) for c in data["coefficients"]), float(data["intercept"]), data["validation"])
