"""Size accounting: the analytic estimate against torch.save, MACs and parameter counts."""

from __future__ import annotations

import pytest
import torch

from quant.apply import apply_policy
from quant.errors import PolicyError
from quant.policy import QuantPolicy, uniform_policy
from quant.registry import precision_names
from quant.size import count_macs, count_params, estimate_size_bytes, serialized_size_bytes
from supernet.arch import BertArch
from supernet.bert import BertShape, ElasticBertForSequenceClassification, count_parameters
from tests.quant.conftest import make_batch

Model = ElasticBertForSequenceClassification


def _relative_size_error(model: Model, policy: QuantPolicy, calibration: list) -> float:
    measured = serialized_size_bytes(apply_policy(model, policy, calibration))
    return abs(estimate_size_bytes(model.shape, None, policy) - measured) / measured


@pytest.mark.parametrize("name", precision_names())
def test_estimate_within_2_percent_on_the_tiny_model(name: str, tiny_subnet: Model, calibration: list) -> None:
    assert _relative_size_error(tiny_subnet, uniform_policy(tiny_subnet, name), calibration) <= 0.02


@pytest.fixture(scope="module")
def mid_bert() -> Model:
    """MiniLM-sized layers (hidden 384, 12 heads, FFN 1536) with the real vocabulary, 2 layers, random init."""
    shape = BertShape(vocab_size=30522, hidden_size=384, head_dim=32, heads=(12, 12), ffn=(1536, 1536), num_labels=2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return ElasticBertForSequenceClassification(shape).eval()


def test_estimate_within_2_percent_on_a_mid_size_bert(mid_bert: Model) -> None:
    calibration = [make_batch(1, batch=2, seq=16)]
    errors = {
        name: _relative_size_error(mid_bert, uniform_policy(mid_bert, name), calibration) for name in precision_names()
    }
    assert max(errors.values()) <= 0.02, errors


def test_estimate_follows_the_architecture(tiny_subnet: Model) -> None:
    """Estimating a sub-network from the super-network's shape equals estimating the extracted model."""
    full = BertShape.from_dict({**tiny_subnet.shape.to_dict(), "heads": [4, 4, 4], "ffn": [64, 64, 64]})
    arch = BertArch(heads=(4, 4), ffn=(64, 32))
    policy = QuantPolicy({"bert.encoder.layer.1.output.dense": "int8_dynamic"})
    assert estimate_size_bytes(full, arch, policy) == estimate_size_bytes(tiny_subnet.shape, None, policy)
    assert estimate_size_bytes(full, arch) < estimate_size_bytes(full)
    deeper = QuantPolicy({"bert.encoder.layer.2.output.dense": "int8_dynamic"})
    with pytest.raises(PolicyError, match=r"names 1 layer\(s\) this architecture does not have"):
        estimate_size_bytes(full, arch, deeper)


def test_params_match_the_analytic_count(tiny_subnet: Model) -> None:
    assert count_params(tiny_subnet) == count_parameters(tiny_subnet.shape)


def test_macs_are_linears_plus_attention(tiny_subnet: Model) -> None:
    shape, batch, seq = tiny_subnet.shape, 2, 40
    h = shape.hidden_size
    tokens = batch * seq
    expected = 0
    for heads, ffn in zip(shape.heads, shape.ffn, strict=True):
        width = heads * shape.head_dim
        expected += tokens * (3 * h * width + width * h + h * ffn + ffn * h)  # q, k, v, out, FFN in/out
        expected += batch * heads * seq * seq * 2 * shape.head_dim  # Q·Kᵀ and attention·V
    assert shape.pooling == "cls"
    expected += batch * (h * h + h * shape.num_labels)  # pooler and classifier on [CLS]
    assert count_macs(tiny_subnet, seq, batch) == expected
    assert tiny_subnet.training is False
