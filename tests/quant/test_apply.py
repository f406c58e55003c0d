"""apply_policy on a tiny extracted sub-network: types, sizes, accuracy, mixing, and clear errors."""

from __future__ import annotations

import gc

import pytest
import torch
from torch import fx, nn

from quant import precisions
from quant.apply import apply_policy
from quant.errors import PolicyError, PrecisionError
from quant.modules import Bf16Linear
from quant.policy import QuantPolicy, policy_targets, uniform_policy
from quant.registry import Support, get_precision, precision_names
from quant.size import estimate_size_bytes, serialized_size_bytes
from supernet.bert import ElasticBertForSequenceClassification
from tests.quant.conftest import logits, make_batch

Model = ElasticBertForSequenceClassification

#: Largest |quantized - fp32| logit allowed, relative to the largest |fp32 logit| (batch of 8 × 24 tokens).
#: bf16 keeps 8 mantissa bits (2^-9 relative rounding per weight and activation); int8 per-channel
#: weights err by up to 1/254 of a channel's range, plus per-token activation rounding for
#: int8_dynamic; int8_static has one calibrated scale per activation tensor and (no VNNI here) 7-bit
#: activations; int4 has 15 steps per group of 32. Measured with these batches: bf16 0.5%, int8 1.1-1.4%,
#: int8_static 3.4% (6.9% with a smaller calibration set: it depends on the calibration), int4 0.4% (its
#: uniform policy keeps the 2-output classifier fp32). The bounds leave room for other seeds and CPUs.
TOLERANCE = {
    "fp32": 0.0,
    "bf16": 0.02,
    "int8_weight_only": 0.05,
    "int8_dynamic": 0.05,
    "int8_static": 0.10,
    "int4_weight_only": 0.15,
}


def _relative_error(model: nn.Module, reference: nn.Module, batch: dict[str, torch.Tensor]) -> float:
    expected = logits(reference, batch)
    return float((logits(model, batch) - expected).abs().max() / expected.abs().max())


def _stored_bytes(weight: torch.Tensor) -> int:
    """Bytes of the tensors a (possibly torchao-subclass) weight really stores."""
    names = list(getattr(weight, "tensor_data_names", []))
    names += [n for n in getattr(weight, "optional_tensor_data_names", []) if getattr(weight, n, None) is not None]
    if not names:
        return weight.untyped_storage().nbytes()
    return sum(getattr(weight, n).untyped_storage().nbytes() for n in names)


@pytest.mark.parametrize("name", precision_names())
def test_uniform_policy_quantizes_a_copy(name: str, tiny_subnet: Model, calibration: list) -> None:
    before = {k: v.clone() for k, v in tiny_subnet.state_dict().items()}
    policy = uniform_policy(tiny_subnet, name)
    quantized = apply_policy(tiny_subnet, policy, calibration)

    # the input is untouched
    assert quantized is not tiny_subnet
    assert all(type(tiny_subnet.get_submodule(t)) is nn.Linear for t in policy_targets(tiny_subnet))
    assert all(torch.equal(v, before[k]) for k, v in tiny_subnet.state_dict().items())

    # close to fp32, but really changed
    error = _relative_error(quantized, tiny_subnet, make_batch())
    assert error <= TOLERANCE[name]
    if name != "fp32":
        assert error > 0

    # smaller by what the precision promises
    chosen = [fqn for fqn in policy_targets(tiny_subnet) if policy.precision_for(fqn) == name]
    precision = get_precision(name)
    shapes = {fqn: tiny_subnet.get_submodule(fqn).weight.shape for fqn in chosen}
    payload_saving = sum(4 * o * i - precision.weight_bytes(o, i) for o, i in shapes.values())
    saving = serialized_size_bytes(tiny_subnet) - serialized_size_bytes(quantized)
    # pickled metadata of torchao's tensor subclasses (~0.3-1 KB per weight) eats part of the saving
    assert 0.7 * payload_saving <= saving <= 1.01 * payload_saving + 1024


@pytest.mark.parametrize("name", ["bf16", "int8_dynamic", "int8_weight_only", "int4_weight_only"])
def test_module_level_precisions_swap_weights_of_exactly_the_named_layers(name: str, tiny_subnet: Model) -> None:
    policy = uniform_policy(tiny_subnet, name)
    quantized = apply_policy(tiny_subnet, policy)
    assert type(quantized) is ElasticBertForSequenceClassification
    assert not quantized.training
    precision = get_precision(name)
    for fqn in policy_targets(tiny_subnet):
        module = quantized.get_submodule(fqn)
        weight = module.weight
        if policy[fqn] == "fp32":
            assert type(module) is nn.Linear and weight.dtype == torch.float32
            continue
        expected_type = {
            "bf16": "Parameter",
            "int8_dynamic": "Int8Tensor",
            "int8_weight_only": "Int8Tensor",
            "int4_weight_only": "Int4OpaqueTensor",
        }[name]
        assert type(weight).__name__ == expected_type
        assert isinstance(module, Bf16Linear) == (name == "bf16")
        if name == "bf16":
            assert weight.dtype == torch.bfloat16 and module.bias.dtype == torch.float32
        if name.startswith("int8"):  # dynamic quantizes activations too, weight-only does not
            assert (weight.act_quant_kwargs is not None) == (name == "int8_dynamic")
        assert _stored_bytes(weight) == precision.weight_bytes(*weight.shape)
    pooler = quantized.get_submodule("bert.pooler.dense")
    assert type(pooler) is nn.Linear and pooler.weight.dtype == torch.float32


def test_int8_static_keeps_no_model_alive_after_use(tiny_subnet: Model, calibration: list) -> None:
    """A search quantizes hundreds of candidates in one process: none may outlive its evaluation (torchao's
    per-module device cache kept every exported graph, +100 MB per MiniLM candidate)."""

    def graph_modules() -> int:
        gc.collect()
        return sum(isinstance(o, fx.GraphModule) for o in gc.get_objects())

    apply_policy(tiny_subnet, uniform_policy(tiny_subnet, "int8_static"), calibration)  # warm any one-off state
    before = graph_modules()
    for _ in range(3):
        quantized = apply_policy(tiny_subnet, uniform_policy(tiny_subnet, "int8_static"), calibration)
        del quantized
    assert graph_modules() <= before


def test_int8_static_is_an_inference_graph_with_int8_weights(tiny_subnet: Model, calibration: list) -> None:
    policy = uniform_policy(tiny_subnet, "int8_static")
    quantized = apply_policy(tiny_subnet, policy, calibration)
    assert isinstance(quantized, fx.GraphModule)
    state = quantized.state_dict()
    targets = policy_targets(tiny_subnet)
    int8 = [v for v in state.values() if v.dtype == torch.int8]
    assert len(int8) == len(targets)  # one folded int8 weight per target, the pooler stays float
    assert not any(f"{t}.weight" in state for t in targets)  # float weights of quantized layers are gone
    assert "bert.pooler.dense.weight" in state
    qparams = [v for k, v in state.items() if k.startswith(("_scale_", "_zero_point_"))]
    expected = sum(
        get_precision("int8_static").weight_bytes(*tiny_subnet.get_submodule(t).weight.shape) for t in targets
    )
    assert sum(v.untyped_storage().nbytes() for v in int8 + qparams) == expected

    # ordinary evaluation code works: eval() is a no-op, other batch sizes and lengths run
    assert quantized.eval() is quantized and not quantized.training
    assert quantized.train(False) is quantized  # what evaluation loops call to restore the mode
    for batch, seq in ((1, 40), (3, 5)):
        assert _relative_error(quantized, tiny_subnet, make_batch(7, batch, seq)) <= TOLERANCE["int8_static"]
    with pytest.raises(PrecisionError, match="inference-only"):
        quantized.train()


def test_mixed_policy_with_every_precision(tiny_subnet: Model, calibration: list) -> None:
    """int8_static mixes with module-level precisions: static first on the float model, then the rest."""
    targets = policy_targets(tiny_subnet)[:-1]  # the classifier stays fp32
    names = ["int8_static", "int8_dynamic", "bf16", "int4_weight_only", "int8_weight_only", "fp32"]
    policy = QuantPolicy({fqn: names[i % len(names)] for i, fqn in enumerate(targets)})
    quantized = apply_policy(tiny_subnet, policy, calibration)
    assert isinstance(quantized, fx.GraphModule)
    for fqn in targets:
        name = policy[fqn]
        if name == "int8_static":
            assert f"{fqn}.weight" not in quantized.state_dict()
            continue
        weight = quantized.get_submodule(fqn).weight
        expected = {
            "int8_dynamic": "Int8Tensor",
            "bf16": "Parameter",
            "int4_weight_only": "Int4OpaqueTensor",
            "int8_weight_only": "Int8Tensor",
            "fp32": "Parameter",
        }[name]
        assert type(weight).__name__ == expected
    assert _relative_error(quantized, tiny_subnet, make_batch()) <= TOLERANCE["int8_static"]
    estimate = estimate_size_bytes(tiny_subnet.shape, None, policy)
    assert abs(estimate - serialized_size_bytes(quantized)) <= 0.02 * serialized_size_bytes(quantized)


def test_policy_naming_an_unknown_layer_is_an_error(tiny_subnet: Model) -> None:
    for fqn in ("bert.pooler.dense", "bert.encoder.layer.5.intermediate.dense"):
        with pytest.raises(PolicyError, match=r"names 1 layer\(s\) the model does not have as a target"):
            apply_policy(tiny_subnet, QuantPolicy({fqn: "int8_dynamic"}))


def test_layer_a_precision_cannot_take_is_an_error(tiny_subnet: Model) -> None:
    with pytest.raises(PrecisionError, match="classifier cannot take int4_weight_only: out_features 2 is not a"):
        apply_policy(tiny_subnet, QuantPolicy({"classifier": "int4_weight_only"}))


def test_int8_static_needs_calibration_batches(tiny_subnet: Model) -> None:
    policy = QuantPolicy({"classifier": "int8_static"})
    with pytest.raises(PrecisionError, match="uses int8_static, which needs calibration_batches"):
        apply_policy(tiny_subnet, policy)
    with pytest.raises(PrecisionError, match="got no calibration batches"):
        apply_policy(tiny_subnet, policy, [])
    with pytest.raises(PrecisionError, match=r"calibration batches must be mappings with keys \['input_ids'"):
        apply_policy(tiny_subnet, policy, [(torch.ones(2, 4, dtype=torch.long),) * 3])


def test_precision_this_machine_cannot_run_is_a_clear_error(
    tiny_subnet: Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As on a CPU where torchao's int4 kernel is missing: the reason is the kernel's own error."""
    reason = "torchao's CPU int4 path (Int4OpaqueTensor) fails on this machine: no kernel"
    monkeypatch.setattr(precisions, "_probe_int4_cpu", lambda: Support(False, reason))
    policy = QuantPolicy({"bert.encoder.layer.0.output.dense": "int4_weight_only"})
    with pytest.raises(PrecisionError, match="int4_weight_only cannot run here: torchao's CPU int4 path"):
        apply_policy(tiny_subnet, policy)
    with pytest.raises(PrecisionError, match="fails on this machine: no kernel"):
        get_precision("int4_weight_only").apply(nn.Sequential(nn.Linear(32, 16)), ["0"])
