"""A profile's latency estimate: the lookup-table sum, calibrated on real end-to-end measurements.

Block sums miss in a predictable direction: inside one compiled graph a runtime fuses across block
boundaries (the q/k/v projections, LayerNorm into the next quantize), and every separately timed
block pays a call overhead the whole graph pays once. A small linear fit over the table sum corrects
most of it. Three designs are tried, simplest first (``DESIGNS``): the raw sum (no fit), a scale and
offset of it, and the same plus a per-layer term (``latency ≈ a·table_sum + b·depth + c``: the error
may grow with the number of blocks). Each fit is weighted least squares with weights 1/measured², i.e.
on *relative* error, which is what MAPE scores, so a 2 ms sub-network counts as much as a 40 ms one.

The design is chosen by leave-one-out MAPE on the measured pairs; a more complex one must score
strictly better. Where the residual error is measurement jitter rather than a systematic offset, a
term only adds variance: on every shipped table the depth term loses to the scale-and-offset fit by
leave-one-out, and costs rank agreement (ONNX Runtime, 6 rounds: Kendall tau 0.899 with it, 0.903
without); it won only on noisier data (fewer rounds per pair), by 0.1-0.4 points of MAPE.

Validation is honest by construction: ``estimate_leave_one_out`` scores the whole procedure, each
pair held out of both the choice of design and the fit (nested leave-one-out), and the raw table sum
(no fit at all) is reported beside it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
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
MODEL_VERSION = 2
#: The calibration designs, simplest first: the features of each linear fit ("raw_table": no fit at all).
DESIGNS: dict[str, tuple[str, ...]] = {
    "raw_table": (),
    "table": ("table_ms",),
    "table_depth": ("table_ms", "depth"),
}
#: Version 1 files (before the choice of design) always used this design.
_V1_FEATURES = DESIGNS["table_depth"]


def accuracy_metrics(
    measured: Sequence[float] | np.ndarray, estimated: Sequence[float] | np.ndarray
) -> dict[str, float]:
    """MAPE (percent) and Kendall tau of ``estimated`` against ``measured`` latencies (``predictors.quality``)."""
    y = np.asarray(measured, dtype=float)
    if len(y) < 2 or np.any(y <= 0):
        raise ProfileError("latency metrics need at least two positive measurements")
    scores = quality(y, estimated)
    return {"n": float(scores.n), "mape_percent": scores.mape, "kendall_tau": scores.kendall_tau}


def _design(features: Sequence[str], table_ms: np.ndarray, depth: np.ndarray) -> np.ndarray:
    columns = {"table_ms": table_ms, "depth": depth}
    return np.column_stack([np.asarray(columns[name], dtype=float) for name in features])


def _fit(x: np.ndarray, y: np.ndarray) -> LinearRegression:
    return LinearRegression().fit(x, y, sample_weight=1.0 / y**2)


def _arrays(
    table_ms: Sequence[float] | np.ndarray, depth: Sequence[int] | np.ndarray, measured: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.asarray(table_ms, dtype=float), np.asarray(depth, dtype=float), np.asarray(measured, dtype=float)


def _held_out(
    features: Sequence[str], t: np.ndarray, d: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray
) -> np.ndarray:
    """One design's estimates of the ``test`` rows, fitted on the ``train`` rows (the raw sum: no fit)."""
    if not features:
        return t[test]
    x = _design(features, t, d)
    return _fit(x[train], y[train]).predict(x[test])


def leave_one_out(
    features: Sequence[str],
    table_ms: Sequence[float] | np.ndarray,
    depth: Sequence[int] | np.ndarray,
    measured: Sequence[float] | np.ndarray,
) -> np.ndarray:
    """Estimates of one design where each comes from a fit on all the *other* measurements
    (the raw table sum when ``features`` is empty: nothing is fitted)."""
    t, d, y = _arrays(table_ms, depth, measured)
    out = np.empty_like(y)
    for train, test in LeaveOneOut().split(y.reshape(-1, 1)):
        out[test] = _held_out(features, t, d, y, train, test)
    return out


def choose_design(
    table_ms: Sequence[float] | np.ndarray, depth: Sequence[int] | np.ndarray, measured: Sequence[float] | np.ndarray
) -> str:
    """The name of the design (``DESIGNS``) with the lowest leave-one-out MAPE; ties go to the simpler one."""
    t, d, y = _arrays(table_ms, depth, measured)
    errors = {name: np.mean(np.abs(leave_one_out(f, t, d, y) - y) / y) for name, f in DESIGNS.items()}
    return min(errors, key=errors.__getitem__)  # the first of equal minima: DESIGNS is simplest first


def nested_leave_one_out(
    table_ms: Sequence[float] | np.ndarray, depth: Sequence[int] | np.ndarray, measured: Sequence[float] | np.ndarray
) -> np.ndarray:
    """Each pair's estimate by the whole calibration procedure run on the *other* pairs: the design is
    chosen and fitted without it, so the score includes the optimism of choosing."""
    t, d, y = _arrays(table_ms, depth, measured)
    out = np.empty_like(y)
    for train, test in LeaveOneOut().split(y.reshape(-1, 1)):
        features = DESIGNS[choose_design(t[train], d[train], y[train])]
        out[test] = _held_out(features, t, d, y, train, test)
    return out


def estimate_metrics(validation: Mapping[str, Any]) -> dict[str, float]:
    """The honest score of the estimates a stored model gives: nested leave-one-out (version 2), or the
    entry a version 1 file marked as used."""
    if "estimate_leave_one_out" in validation:
        return dict(validation["estimate_leave_one_out"])
    return dict(validation[validation.get("used", "raw_table")])


def validation_rows(validation: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per score in a stored validation (``estimate``, ``n``, ``mape_percent``, ``kendall_tau``,
    ``used``: whether it scores the estimates the model gives), for the CLI and the reports."""
    if "estimate_leave_one_out" not in validation:  # version 1
        used = validation.get("used", "raw_table")
        return [{"estimate": k, **v, "used": k == used} for k, v in validation.items() if isinstance(v, dict)]
    design = validation["design"]
    rows = [{"estimate": "raw table sum", **validation["raw_table"], "used": False}]
    rows += [
        {"estimate": f"design {name}, leave-one-out", **metrics, "used": False}
        for name, metrics in validation["leave_one_out"].items()
        if name != "raw_table"
    ]
    rows.append(
        {"estimate": f"estimate ({design}), nested leave-one-out", **validation["estimate_leave_one_out"], "used": True}
    )
    rows.append({"estimate": f"estimate ({design}), in sample", **validation["estimate_in_sample"], "used": False})
    return rows


@dataclass(frozen=True)
class LatencyModel:
    """Estimate latency (ms) of any (arch, policy) under one profile from its table and calibration.

    ``features`` name the fit's inputs (``DESIGNS``; none: the raw table sum), ``coefficients`` their weights.
    """

    table: LatencyTable
    features: tuple[str, ...] = ()
    coefficients: tuple[float, ...] = ()
    intercept: float = 0.0
    validation: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if len(self.features) != len(self.coefficients) or not set(self.features) <= set(_V1_FEATURES):
            raise ProfileError(
                f"a latency model needs one coefficient per feature among {_V1_FEATURES}, "
                f"got features {self.features} and coefficients {self.coefficients}"
            )

    @property
    def profile(self) -> str:
        return self.table.profile

    @property
    def design(self) -> str:
        """The name of the calibration design (``DESIGNS``) this model's features make up."""
        return next(name for name, features in DESIGNS.items() if features == self.features)

    def predict_ms(self, shape: BertShape, arch: BertArch, policy: QuantPolicy | None = None) -> float:
        raw = self.table.estimate_ms(shape, arch, policy)
        if not self.features:
            return raw
        values = {"table_ms": raw, "depth": float(arch.depth)}
        estimate = self.intercept + sum(c * values[f] for f, c in zip(self.features, self.coefficients, strict=True))
        return max(float(estimate), 1e-6)

    def predict_many(self, shape: BertShape, candidates: Sequence[tuple[BertArch, QuantPolicy]]) -> np.ndarray:
        return np.array([self.predict_ms(shape, arch, policy) for arch, policy in candidates])

    @classmethod
    def calibrate(
        cls, table: LatencyTable, table_ms: Sequence[float], depth: Sequence[int], measured: Sequence[float]
    ) -> LatencyModel:
        """Choose the design, fit it on all measurements, and store its validation with it.

        ``validation``: ``raw_table`` (the sum, no fit), ``leave_one_out`` (each design's), ``design``
        (the one chosen), ``estimate_leave_one_out`` (the whole procedure, nested: the honest score of
        the estimates the model gives) and ``estimate_in_sample`` (the chosen fit on its own data).
        """
        if len(measured) < 4:
            raise ProfileError(f"calibration needs at least 4 measured sub-networks, got {len(measured)}")
        t, d, y = _arrays(table_ms, depth, measured)
        design = choose_design(t, d, y)
        features = DESIGNS[design]
        coefficients: tuple[float, ...] = ()
        intercept, in_sample = 0.0, t
        if features:
            x = _design(features, t, d)
            fit = _fit(x, y)
            coefficients = tuple(float(c) for c in fit.coef_)
            intercept, in_sample = float(fit.intercept_), fit.predict(x)
        validation: dict[str, Any] = {
            "raw_table": accuracy_metrics(y, t),
            "leave_one_out": {name: accuracy_metrics(y, leave_one_out(f, t, d, y)) for name, f in DESIGNS.items()},
            "design": design,
            "estimate_leave_one_out": accuracy_metrics(y, nested_leave_one_out(t, d, y)),
            "estimate_in_sample": accuracy_metrics(y, in_sample),
        }
        return cls(table, features, coefficients, intercept, validation)

    def save(self, folder: str | Path) -> None:
        data = {
            "version": MODEL_VERSION,
            "profile": self.profile,
            "features": list(self.features),
            "coefficients": list(self.coefficients),
            "intercept": self.intercept,
            "validation": self.validation,
        }
        atomic_write_text(Path(folder) / MODEL_JSON, json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> LatencyModel:
        """The table in ``folder`` with its calibration (the raw table sum when none was fitted yet).

        A version 1 file (always the ``table_depth`` design) still loads; its validation has the old keys.
        """
        folder = Path(folder)
        table = LatencyTable.load(folder)
        path = folder / MODEL_JSON
        if not path.is_file():
            return cls(table)
        data = json.loads(path.read_text(encoding="utf-8"))
        version, features = data.get("version"), tuple(data.get("features", ()))
        if version not in (1, MODEL_VERSION) or (version == 1 and features != _V1_FEATURES):
            raise ProfileError(f"{path} is not a version 1 or {MODEL_VERSION} latency model; re-profile")
        try:
            return cls(
                table,
                features,
                tuple(float(c) for c in data["coefficients"]),
                float(data["intercept"]),
                data["validation"],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProfileError(f"{path} is not a readable latency model ({exc}); re-profile") from exc
