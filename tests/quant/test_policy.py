"""Quantization policies: JSON round-trip, validation, targets, uniform policies."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quant.errors import PolicyError, PrecisionError
from quant.policy import QuantPolicy, policy_targets, uniform_policy
from quant.registry import precision_names
from supernet.bert import ElasticBertForSequenceClassification

_OPTIONS = st.fixed_dictionaries(
    {},
    optional={
        "int4_weight_only": st.fixed_dictionaries({"group_size": st.sampled_from([32, 64, 128])}),
        "int8_static": st.fixed_dictionaries({"reduce_range": st.sampled_from([None, True, False])}),
    },
)
_LAYERS = st.dictionaries(st.text(min_size=1, max_size=40), st.sampled_from(precision_names()), max_size=20)


@given(layers=_LAYERS, options=_OPTIONS)
def test_json_round_trip(layers: dict[str, str], options: dict[str, dict[str, object]]) -> None:
    policy = QuantPolicy(layers, options)
    again = QuantPolicy.from_json(policy.to_json())
    assert again == policy
    assert hash(again) == hash(policy)
    assert dict(again) == layers
    assert json.loads(policy.to_json())["version"] == 1


def test_policy_is_a_frozen_mapping_with_fp32_default() -> None:
    policy = QuantPolicy({"classifier": "int8_dynamic"})
    assert policy["classifier"] == "int8_dynamic"
    assert policy.precision_for("bert.encoder.layer.0.output.dense") == "fp32"
    with pytest.raises(TypeError):
        policy["classifier"] = "fp32"  # type: ignore[index]
    assert QuantPolicy() == QuantPolicy({}, {"int4_weight_only": {}})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"version": 2, "layers": {}}', "policy version 2 is not supported; this elastiq reads version 1"),
        (
            '{"version": 1, "layers": {}, "extra": 1}',
            r"unknown policy keys \['extra'\]; allowed: \['version', 'layers'",
        ),
        ('{"layers": {}}', "a policy needs the keys 'version' and 'layers'"),
        ('{"version": 1, "layers": {"classifier": "int3"}}', "layer 'classifier' has unknown precision 'int3'; known"),
        ('{"version": 1, "layers": []}', "policy 'layers' must be an object"),
        ('{"version": 1, "layers": {}, "options": {"int5": {}}}', "options given for unknown precision 'int5'"),
        ("[1, 2]", "a policy is a JSON object"),
        ("{not json", "policy is not valid JSON"),
    ],
)
def test_bad_json_is_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        QuantPolicy.from_json(text)


def test_bad_options_fail_when_the_policy_is_made() -> None:
    with pytest.raises(PrecisionError, match="group_size 7 is not supported"):
        QuantPolicy({}, {"int4_weight_only": {"group_size": 7}})


def test_targets_are_six_linears_per_kept_layer_and_the_classifier(
    tiny_subnet: ElasticBertForSequenceClassification,
) -> None:
    targets = policy_targets(tiny_subnet)
    assert len(targets) == 6 * 2 + 1
    assert targets[:6] == [
        "bert.encoder.layer.0.attention.self.query",
        "bert.encoder.layer.0.attention.self.key",
        "bert.encoder.layer.0.attention.self.value",
        "bert.encoder.layer.0.attention.output.dense",
        "bert.encoder.layer.0.intermediate.dense",
        "bert.encoder.layer.0.output.dense",
    ]
    assert targets[-1] == "classifier"
    assert not any("pooler" in t for t in targets)
    modules = dict(tiny_subnet.named_modules())
    assert all(type(modules[t]).__name__ == "Linear" for t in targets)


def test_uniform_policy_falls_back_explicitly(tiny_subnet: ElasticBertForSequenceClassification) -> None:
    int8 = uniform_policy(tiny_subnet, "int8_dynamic")
    assert set(int8.values()) == {"int8_dynamic"} and len(int8) == 13
    int4 = uniform_policy(tiny_subnet, "int4_weight_only")
    assert int4["classifier"] == "fp32"  # 2 outputs: not a multiple of 16
    assert {v for k, v in int4.items() if k != "classifier"} == {"int4_weight_only"}
    with pytest.raises(PolicyError, match="classifier cannot take int4_weight_only: out_features 2 is not a multiple"):
        uniform_policy(tiny_subnet, "int4_weight_only", fallback=None)
    wide = uniform_policy(tiny_subnet, "int4_weight_only", options={"group_size": 64})
    assert wide.options == {"int4_weight_only": {"group_size": 64}}
    assert wide["bert.encoder.layer.0.attention.self.query"] == "fp32"  # in_features 32 < group 64


def test_policy_targets_needs_an_elastiq_model() -> None:
    import torch

    with pytest.raises(PolicyError, match="Linear has no elastiq BertShape"):
        policy_targets(torch.nn.Linear(2, 2))
