"""Which front members beat a baseline: the report's answer to "did the search beat the full model"."""

from __future__ import annotations

import pandas as pd

from search.report import baseline_table, dominating

FRONT = pd.DataFrame(
    {
        "key": ["better-acc", "faster", "slower", "less-acc", "equal"],
        "accuracy": [0.80, 0.78, 0.78, 0.76, 0.78],
        "latency_ms": [10.0, 9.0, 12.0, 8.0, 10.0],
        "measured_latency_ms": [13.0, float("nan"), 9.0, 7.0, 11.0],
    }
)
BASELINE = {
    "precision": "int8_static",
    "accuracy": 0.78,
    "latency_ms": 10.0,
    "measured_latency_ms": 11.0,
    "size_mb": 58.7,
}


def test_dominating_needs_at_least_as_good_in_both_and_better_in_one() -> None:
    assert list(dominating(FRONT, BASELINE)["key"]) == ["better-acc", "faster"]  # an equal point does not dominate


def test_dominating_by_measurement_skips_rows_without_one() -> None:
    # measured: better-acc is slower (13 > 11), faster has no measurement, slower is faster when measured
    assert list(dominating(FRONT, BASELINE, "measured_latency_ms")["key"]) == ["slower"]
    unmeasured = {**BASELINE, "measured_latency_ms": None}
    assert dominating(FRONT, unmeasured, "measured_latency_ms").empty
    assert dominating(FRONT.drop(columns="measured_latency_ms"), BASELINE, "measured_latency_ms").empty


def test_baseline_table_counts_dominating_members_when_given_the_front() -> None:
    fp32 = {"precision": "fp32", "accuracy": 0.70, "latency_ms": 30.0, "measured_latency_ms": 35.0, "size_mb": 90.3}
    table = baseline_table([fp32, BASELINE], FRONT)
    assert list(table["full model"]) == ["fp32", "int8_static"]
    assert list(table["dominated by (estimate)"]) == [5, 2]
    assert list(table["dominated by (measured)"]) == [4, 1]
    assert "dominated by (estimate)" not in baseline_table([BASELINE])  # without a front, no claim
