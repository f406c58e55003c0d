"""Latency measurement, lookup tables, calibration and ``elastiq profile``, on a tiny random BERT.

Profiles here use few repeats and a short sequence so that every measurement takes milliseconds; the
numbers are real measurements all the same, and the tests assert relations that hold for any machine
(decomposition, resumption, files, error messages), not speeds.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from hardware_profiles import endtoend, profiling
from hardware_profiles.blocks import BlockKey, build_block, linear_copies, quantize_block
from hardware_profiles.candidates import random_candidates
from hardware_profiles.errors import ProfileError
from hardware_profiles.latency_model import (
    LatencyModel,
    accuracy_metrics,
    choose_design,
    estimate_metrics,
    nested_leave_one_out,
    validation_rows,
)
from hardware_profiles.lut import LatencyTable, blocks_of, build_table, measure_block, required_blocks, shape_key
from hardware_profiles.profile import HardwareProfile
from hardware_profiles.timing import LatencyStats, pinned_threads, time_runner, time_runners
from quant.policy import QuantPolicy, uniform_policy
from search.cli import main
from supernet.arch import BertArch, BertElasticSpace
from supernet.bert import ElasticBertForSequenceClassification
from supernet.checkpoint import load_pretrained
from tests.conftest import save_tiny_bert

SPACE = BertElasticSpace(
    num_layers=3, num_heads=4, intermediate_size=64, depth_choices=(1, 2, 3), head_choices=(2, 4), ffn_choices=(32, 64)
)


def tiny_profile(runtime: str = "eager", precisions: tuple[str, ...] = ("fp32", "int8_weight_only"), **extra: Any):
    data = {
        "schema_version": 1,
        "name": f"tiny-{runtime}",
        "device": "cpu",
        "requires": [],
        "runtime": runtime,
        "batch_size": 2,
        "sequence_length": 16,
        "threads": 1,
        "warmup": 1,
        "repeats": 3,
        "precisions": list(precisions),
        **extra,
    }
    return HardwareProfile.from_dict(data)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> ElasticBertForSequenceClassification:
    folder = save_tiny_bert(tmp_path_factory.mktemp("latency") / "tiny")
    return load_pretrained(folder, num_labels=2).eval()


# Timing protocol ------------------------------------------------------------------------------------


def test_time_runner_counts_calls_and_reports_ordered_stats() -> None:
    calls: list[int] = []
    stats = time_runner(lambda: calls.append(1), warmup=2, repeats=7)
    assert len(calls) == 9 and (stats.warmup, stats.repeats) == (2, 7)
    assert 0 <= stats.p10_ms <= stats.median_ms <= stats.p90_ms


def test_time_runner_stops_at_the_time_budget_but_times_at_least_five_calls() -> None:
    stats = time_runner(lambda: time.sleep(0.02), warmup=10, repeats=100, max_seconds=0.05)
    assert stats.repeats == 5  # 5 x 20 ms is already past 50 ms
    assert stats.warmup == 1  # warm-up stops after a quarter of the budget
    assert stats.median_ms >= 20


def test_time_runners_takes_each_statistics_median_across_sessions() -> None:
    delays = iter([0.002] * 5 + [0.006] * 5 + [0.004] * 5)  # three "sessions", each a steady speed
    stats = time_runners([lambda: time.sleep(next(delays))] * 3, warmup=1, repeats=4)
    assert (stats.warmup, stats.repeats) == (3, 12)
    assert 4 <= stats.median_ms < 6 and 4 <= stats.p10_ms < 6  # the middle session's, not the pooled calls'
    with pytest.raises(ProfileError, match="give at least one runner"):
        time_runners([], warmup=1, repeats=1)


def test_pinned_threads_restores_threads_and_affinity() -> None:
    before_threads = torch.get_num_threads()
    before_cpus = os.sched_getaffinity(0)
    with pinned_threads(1):
        assert torch.get_num_threads() == 1
        assert len(os.sched_getaffinity(0)) == 1
    assert torch.get_num_threads() == before_threads and os.sched_getaffinity(0) == before_cpus


def test_pinned_threads_refuses_more_threads_than_cpus() -> None:
    too_many = len(os.sched_getaffinity(0)) + 1
    with pytest.raises(ProfileError, match="threads but this process may use"), pinned_threads(too_many):
        pass


# Decomposition and tables ----------------------------------------------------------------------------


def test_blocks_of_decomposes_a_subnetwork_with_its_policy(tiny_model: ElasticBertForSequenceClassification) -> None:
    arch = BertArch(heads=(2, 4), ffn=(32, 64))
    policy = QuantPolicy({"bert.encoder.layer.1.intermediate.dense": "int8_dynamic", "classifier": "bf16"})
    keys = blocks_of(tiny_model.shape, arch, policy, batch=2, seq=16)
    assert len(keys) == 1 + 2 * (6 + 2) + 2  # embeddings, per layer 6 Linears + attention + glue, pooling + head
    assert keys[0].kind == "embeddings" and keys[-2].kind == "pooling"
    assert keys[-1] == BlockKey("linear", 2, 32, 2, precision="bf16")  # classifier: one row per sequence
    ffn_in = [k for k in keys if k.kind == "linear" and k.out_features == 64 and k.in_features == 32]
    assert [k.precision for k in ffn_in] == ["int8_dynamic"]
    assert BlockKey("linear", 64, 32, 32, precision="int8_dynamic") in keys  # rows = batch x sequence
    assert [k.heads for k in keys if k.kind == "attention"] == [2, 4]


def test_required_blocks_cover_every_candidate_and_skip_impossible_precisions(
    tiny_model: ElasticBertForSequenceClassification,
) -> None:
    profile = tiny_profile(precisions=("fp32", "int8_dynamic", "int4_weight_only"))
    keys = set(required_blocks(tiny_model.shape, profile, SPACE.head_choices, SPACE.ffn_choices))
    assert BlockKey("linear", 2, 32, 2, precision="int4_weight_only") not in keys  # 2 outputs: int4 cannot
    for arch, policy in random_candidates(SPACE, tiny_model.shape, profile.precisions, 20, seed=3):
        assert set(blocks_of(tiny_model.shape, arch, policy, 2, 16)) <= keys


def test_random_candidates_are_distinct_reproducible_and_use_the_profiles_precisions(
    tiny_model: ElasticBertForSequenceClassification,
) -> None:
    precisions = ("fp32", "int8_dynamic", "bf16")
    first = random_candidates(SPACE, tiny_model.shape, precisions, 15, seed=1)
    assert first == random_candidates(SPACE, tiny_model.shape, precisions, 15, seed=1)
    assert len(set(first)) == 15
    used = {p for _, policy in first for p in policy.values()}
    assert used <= set(precisions) and len(used) == 3
    assert any(len(set(policy.values())) == 1 for _, policy in first)  # some uniform policies
    assert any(len(set(policy.values())) > 1 for _, policy in first)  # and some mixed


def test_table_sums_its_entries_and_round_trips(
    tiny_model: ElasticBertForSequenceClassification, tmp_path: Path
) -> None:
    shape = tiny_model.shape
    profile = tiny_profile()
    keys = required_blocks(shape, profile, SPACE.head_choices, SPACE.ffn_choices)
    table = LatencyTable(profile.name, 2, 16, shape_key(shape))
    for i, key in enumerate(keys):  # made-up numbers: this test is about the bookkeeping
        table.entries[key] = LatencyStats(0.1 * (i + 1), 0.1 * (i + 1), 0.1, 0.2, 1, 3)
    arch = BertArch(heads=(4,), ffn=(32,))
    policy = uniform_policy(tiny_model, "int8_weight_only")
    expected = sum(table.entries[k].median_ms for k in blocks_of(shape, arch, policy, 2, 16))
    assert table.estimate_ms(shape, arch, policy) == pytest.approx(expected)
    table.save(tmp_path)
    loaded = LatencyTable.load(tmp_path)
    assert loaded.entries == table.entries and loaded.model == table.model
    assert loaded.estimate_ms(shape, arch, policy) == pytest.approx(expected)

    del loaded.entries[blocks_of(shape, arch, policy, 2, 16)[3]]
    with pytest.raises(ProfileError, match="has no entry for linear"):
        loaded.estimate_ms(shape, arch, policy)


def test_table_refuses_another_models_shape(tiny_model: ElasticBertForSequenceClassification) -> None:
    table = LatencyTable("p", 2, 16, {**shape_key(tiny_model.shape), "hidden_size": 768})
    with pytest.raises(ProfileError, match="run `elastiq profile` with this checkpoint"):
        table.estimate_ms(tiny_model.shape, BertArch((4,), (64,)))


def test_a_missing_table_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="holds no latency table"):
        LatencyTable.load(tmp_path)
    with pytest.raises(ProfileError, match="no latency table for profile nope"):
        profiling.find_latency_model("nope", [tmp_path])


@pytest.mark.parametrize("precision", ["fp32", "int8_dynamic", "int8_weight_only", "bf16", "int8_static"])
def test_quantized_linear_blocks_are_really_quantized_and_close(
    tiny_model: ElasticBertForSequenceClassification, precision: str
) -> None:
    key = BlockKey("linear", 64, 32, 32, precision=precision)
    module, inputs = build_block(key, tiny_model.shape, batch=2, seq=16)
    with torch.no_grad():
        references = module(*inputs)
        quantized = quantize_block(module, key, inputs)
        outs = quantized(*inputs)
    assert len(outs) == len(references) == linear_copies(32) == 4  # few rows: distinct copies (cache-cold)
    out, reference = outs[-1], references[-1]
    assert out.shape == reference.shape == (2, 16, 64)
    error = (out - reference).abs().max().item() / reference.abs().max().item()
    assert error < (1e-6 if precision == "fp32" else 0.05)
    if precision != "fp32":
        assert error > 0  # something was really quantized


def test_measure_block_under_inductor_compiles_and_times(tiny_model: ElasticBertForSequenceClassification) -> None:
    profile = tiny_profile("inductor", ("fp32", "int8_static"), runtime_options={"freezing": True})
    for precision in ("fp32", "int8_static"):
        stats = measure_block(BlockKey("linear", 64, 32, 32, precision=precision), tiny_model.shape, profile, Path("."))
        assert stats.median_ms > 0 and stats.repeats == 3


# Calibration -------------------------------------------------------------------------------------------


def _random_table_sums(seed: int, n: int) -> tuple[np.random.Generator, np.ndarray, np.ndarray]:
    """Made-up table sums (ms) and depths of ``n`` pairs, and the generator for the test's own noise."""
    rng = np.random.default_rng(seed)
    return rng, rng.uniform(1, 50, n), rng.integers(1, 7, n)


def test_calibration_recovers_a_linear_relation_and_reports_leave_one_out(
    tiny_model: ElasticBertForSequenceClassification,
) -> None:
    _, table_ms, depth = _random_table_sums(seed=0, n=20)
    measured = 0.8 * table_ms + 0.5 * depth + 1.0
    table = LatencyTable("p", 2, 16, shape_key(tiny_model.shape))
    model = LatencyModel.calibrate(table, table_ms.tolist(), depth.tolist(), measured.tolist())
    assert model.design == "table_depth" and model.features == ("table_ms", "depth")
    assert model.coefficients == pytest.approx((0.8, 0.5)) and model.intercept == pytest.approx(1.0)
    assert model.validation is not None and model.validation["design"] == "table_depth"
    for key in ("estimate_leave_one_out", "estimate_in_sample"):
        assert model.validation[key]["mape_percent"] < 1e-6 and model.validation[key]["kendall_tau"] == 1.0
    assert model.validation["leave_one_out"]["table"]["mape_percent"] > 1  # depth matters here
    assert model.validation["raw_table"]["mape_percent"] > 1  # the raw sum is off by the made-up 0.8 etc.
    with pytest.raises(ProfileError, match="at least 4"):
        LatencyModel.calibrate(table, [1.0, 2.0], [1, 2], [1.0, 2.0])


def test_calibration_prefers_the_simplest_design_that_is_as_good(
    tiny_model: ElasticBertForSequenceClassification,
) -> None:
    rng, table_ms, depth = _random_table_sums(seed=1, n=30)
    table = LatencyTable("p", 2, 16, shape_key(tiny_model.shape))
    # A systematic scale and offset plus jitter: a fit beats the raw sum, and the design with the lowest
    # leave-one-out MAPE is the one kept (whether jitter happens to favour the depth term or not).
    offset = (0.7 * table_ms + 2.0) * rng.uniform(0.95, 1.05, 30)
    scaled = LatencyModel.calibrate(table, table_ms.tolist(), depth.tolist(), offset.tolist())
    assert scaled.validation is not None
    loo = {name: metrics["mape_percent"] for name, metrics in scaled.validation["leave_one_out"].items()}
    assert scaled.design == min(loo, key=loo.__getitem__) != "raw_table"
    assert len(scaled.coefficients) == len(scaled.features) == (1 if scaled.design == "table" else 2)
    # The table is right up to jitter: no fit beats the raw sum, and the model gives the raw sum.
    jitter = table_ms * rng.uniform(0.9, 1.1, 30)
    raw = LatencyModel.calibrate(table, table_ms.tolist(), depth.tolist(), jitter.tolist())
    assert raw.design == "raw_table" and raw.features == () and raw.coefficients == ()
    assert raw.validation is not None
    assert raw.validation["estimate_in_sample"] == raw.validation["raw_table"]


def test_nested_leave_one_out_holds_each_pair_out_of_the_choice_of_design() -> None:
    rng, table_ms, depth = _random_table_sums(seed=2, n=12)
    measured = (0.7 * table_ms + 2.0) * rng.uniform(0.9, 1.1, 12)
    nested = nested_leave_one_out(table_ms, depth, measured)
    for i in range(12):  # pair i's estimate is what the procedure gives when it never saw pair i
        rest = np.arange(12) != i
        design = choose_design(table_ms[rest], depth[rest], measured[rest])
        model = LatencyModel.calibrate(
            LatencyTable("p", 2, 16, "s"), table_ms[rest].tolist(), depth[rest].tolist(), measured[rest].tolist()
        )
        assert model.design == design
        values = {"table_ms": table_ms[i], "depth": depth[i]}
        expected = model.intercept + sum(c * values[f] for f, c in zip(model.features, model.coefficients, strict=True))
        assert nested[i] == pytest.approx(expected if model.features else table_ms[i])


def test_a_version_1_latency_model_still_loads(
    tiny_model: ElasticBertForSequenceClassification, tmp_path: Path
) -> None:
    shape = tiny_model.shape
    profile = tiny_profile()
    table = LatencyTable(profile.name, 2, 16, shape_key(shape))
    for i, key in enumerate(required_blocks(shape, profile, SPACE.head_choices, SPACE.ffn_choices)):
        table.entries[key] = LatencyStats(0.1 * (i + 1), 0.1 * (i + 1), 0.1, 0.2, 1, 3)
    table.save(tmp_path)
    old = {"raw_table": {"n": 30.0, "mape_percent": 12.0, "kendall_tau": 0.8}, "used": "raw_table"}
    v1 = {"version": 1, "features": ["table_ms", "depth"], "coefficients": [0.5, 0.25], "intercept": 1.0}
    (tmp_path / "latency_model.json").write_text(json.dumps({**v1, "validation": old}))
    model = LatencyModel.load(tmp_path)
    arch = BertArch(heads=(4, 2), ffn=(32, 64))
    raw = table.estimate_ms(shape, arch)
    assert model.design == "table_depth" and model.predict_ms(shape, arch) == pytest.approx(0.5 * raw + 0.5 + 1.0)
    assert estimate_metrics(old)["mape_percent"] == 12.0
    assert [row["used"] for row in validation_rows(old)] == [True]
    (tmp_path / "latency_model.json").write_text(json.dumps({**v1, "features": ["table_ms"], "validation": old}))
    with pytest.raises(ProfileError, match="not a version 1 or 2 latency model"):
        LatencyModel.load(tmp_path)
    with pytest.raises(ProfileError, match="one coefficient per feature"):
        LatencyModel(table, ("table_ms",), (0.5, 0.25))


def test_accuracy_metrics() -> None:
    metrics = accuracy_metrics([1.0, 2.0, 4.0], [1.1, 1.8, 4.0])
    assert metrics["mape_percent"] == pytest.approx(100 * (0.1 + 0.1 + 0) / 3)
    assert metrics["kendall_tau"] == pytest.approx(1.0)


# End to end ---------------------------------------------------------------------------------------------


def test_measure_subnetwork_refuses_precisions_the_profile_lacks(
    tiny_model: ElasticBertForSequenceClassification, tmp_path: Path
) -> None:
    policy = QuantPolicy({"classifier": "bf16"})
    with pytest.raises(ProfileError, match="does not support precision"):
        endtoend.measure_subnetwork(tiny_model, BertArch((4,), (64,)), policy, tiny_profile(), tmp_path)


def test_measure_subnetwork_says_why_a_machine_cannot_measure(
    tiny_model: ElasticBertForSequenceClassification, tmp_path: Path
) -> None:
    profile = HardwareProfile.from_dict({**tiny_profile().to_dict(), "requires": ["made_up_feature"]})
    with pytest.raises(ProfileError, match="cannot be measured on this machine: it lacks made_up_feature"):
        endtoend.measure_subnetwork(tiny_model, BertArch((4,), (64,)), QuantPolicy(), profile, tmp_path)


@pytest.mark.parametrize(
    ("runtime", "precision", "options"),
    [
        ("inductor", "int8_static", {"freezing": True}),
        ("onnxruntime", "int8_dynamic", {"opset": 18}),
        ("onnxruntime", "int8_dynamic", {"opset": 18, "sessions": 2}),
    ],
)
def test_measure_subnetwork_on_each_runtime(
    tiny_model: ElasticBertForSequenceClassification, tmp_path: Path, runtime: str, precision: str, options: dict
) -> None:
    profile = tiny_profile(runtime, ("fp32", precision), runtime_options=options)
    arch = BertArch(heads=(4, 2), ffn=(64, 32))
    policy = QuantPolicy({"bert.encoder.layer.0.intermediate.dense": precision})
    stats = endtoend.measure_subnetwork(tiny_model, arch, policy, profile, tmp_path)
    assert stats.median_ms > 0 and stats.repeats == 3 * options.get("sessions", 1)  # repeats of every session


def test_profile_target_writes_everything_and_resumes_without_remeasuring(
    tiny_model: ElasticBertForSequenceClassification, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile = tiny_profile()
    run = profiling.profile_target(tiny_model, SPACE, profile, tmp_path, n_validation=5, seed=0)
    folder = tmp_path / profile.name
    assert run.folder == folder
    for name in ("profile.yaml", "latency_table.csv", "latency_table.json", "validation.csv", "latency_model.json"):
        assert (folder / name).is_file(), name
    validation = pd.read_csv(folder / "validation.csv")
    assert list(validation["index"]) == [0, 1, 2, 3, 4]
    assert (validation["measured_ms"] > 0).all() and (validation["table_ms"] > 0).all()
    stored = json.loads((folder / "latency_model.json").read_text())
    assert set(stored["validation"]) == {
        "raw_table",
        "leave_one_out",
        "design",
        "estimate_leave_one_out",
        "estimate_in_sample",
    }
    loaded = profiling.find_latency_model(profile.name, [tmp_path])
    arch, policy = random_candidates(SPACE, tiny_model.shape, profile.precisions, 1, seed=9)[0]
    assert loaded.predict_ms(tiny_model.shape, arch, policy) == pytest.approx(
        run.model.predict_ms(tiny_model.shape, arch, policy)
    )

    def must_not_measure(*args: object, **kwargs: object) -> None:
        raise AssertionError("re-measured something already stored")

    monkeypatch.setattr(profiling, "measure_subnetwork", must_not_measure)
    monkeypatch.setattr("hardware_profiles.lut.measure_block", must_not_measure)
    again = profiling.profile_target(tiny_model, SPACE, profile, tmp_path, n_validation=5, seed=0)
    assert again.validation["measured_ms"].tolist() == validation["measured_ms"].tolist()
    with pytest.raises(ProfileError, match="holds another sub-network than seed 1 draws"):
        profiling.profile_target(tiny_model, SPACE, profile, tmp_path, n_validation=5, seed=1)


def test_validation_rounds_measure_every_pair_again_and_take_the_median(
    tiny_model: ElasticBertForSequenceClassification, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile = tiny_profile()
    profiling.profile_target(tiny_model, SPACE, profile, tmp_path, n_validation=4, seed=0)
    path = tmp_path / profile.name / "validation.csv"
    legacy = pd.read_csv(path).drop(columns=["round"])  # as written before rounds existed: round 0
    legacy.to_csv(path, index=False)
    order: list[int] = []
    measured = iter([1.0, 2.0, 3.0, 4.0])

    def fake_measure(model: object, arch: BertArch, *args: object, **kwargs: object) -> LatencyStats:
        order.append(sum(arch.heads))
        value = next(measured)
        return LatencyStats(value, value, value, value, 1, 3)

    monkeypatch.setattr(profiling, "measure_subnetwork", fake_measure)
    run = profiling.profile_target(tiny_model, SPACE, profile, tmp_path, n_validation=4, seed=0, rounds=2)
    stored = pd.read_csv(path)
    assert list(zip(stored["index"], stored["round"], strict=True)) == [(i, r) for i in range(4) for r in (0, 1)]
    assert order == [sum(BertArch.from_dict(json.loads(a)).heads) for a in legacy["arch"]]  # round 1 only, in order
    expected = [(m + new) / 2 for m, new in zip(legacy["measured_ms"], [1.0, 2.0, 3.0, 4.0], strict=True)]
    assert run.validation["measured_ms"].tolist() == pytest.approx(expected)
    assert run.validation["rounds"].tolist() == [2, 2, 2, 2]
    assert len(run.validation) == 4 and run.model.validation is not None
    assert run.model.validation["raw_table"]["n"] == 4  # calibrated on pairs, not on rows
    with pytest.raises(ProfileError, match="validation rounds must be >= 1, got 0"):
        profiling.profile_target(tiny_model, SPACE, profile, tmp_path, n_validation=4, seed=0, rounds=0)


def test_build_table_refuses_a_folder_of_another_profile(
    tiny_model: ElasticBertForSequenceClassification, tmp_path: Path
) -> None:
    LatencyTable("other", 2, 16, shape_key(tiny_model.shape)).save(tmp_path)
    with pytest.raises(ProfileError, match="holds the table of profile other"):
        build_table(tiny_model.shape, tiny_profile(), [], tmp_path)


# CLI -----------------------------------------------------------------------------------------------------


def test_cli_profile_errors_are_one_line_with_exit_code_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cases = [
        (["profile", "--profile", "nope"], "unknown hardware profile 'nope'"),
        (["profile", "--profile", "x86-eager-b1", "--validate", "2", "--out", str(tmp_path)], "at least 4"),
        (["profile", "--profile", "x86-eager-b1", "--policy", "p.json"], "needs --arch too"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def test_cli_profile_measures_one_subnetwork(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_model: ElasticBertForSequenceClassification
) -> None:
    checkpoint = save_tiny_bert(tmp_path / "tiny")
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "tiny-eager.yaml").write_text(json.dumps(tiny_profile().to_dict()))  # JSON is YAML
    policy = tmp_path / "policy.json"
    policy.write_text(QuantPolicy({"classifier": "int8_weight_only"}).to_json())
    argv = ["profile", "--profile", "tiny-eager", "--profile-dir", str(profiles), "--checkpoint", str(checkpoint)]
    argv += ["--arch", "smallest", "--policy", str(policy), "--out", str(tmp_path / "tables")]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["arch"] == {"heads": [1], "ffn": [16]}
    assert result["measured"]["median_ms"] > 0 and result["estimated_ms"] is None
    assert "no latency table" in result["estimate_unavailable"]
