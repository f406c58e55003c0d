"""The candidate feature encoding: names, masking of dropped layers, bits, MACs (against fvcore), bytes."""

from __future__ import annotations

import numpy as np
import pytest

from predictors.errors import PredictorError
from predictors.features import LINEAR_FEATURE_NAMES, FeatureEncoder, macs_for
from quant.policy import QuantPolicy
from quant.registry import get_precision, precision_names
from quant.size import count_macs, estimate_size_bytes
from quant.targets import linear_shapes
from supernet.arch import BertArch
from supernet.bert import BertShape, ElasticBertForSequenceClassification
from supernet.checkpoint import load_pretrained
from supernet.errors import ArchError
from supernet.extract import extract
from tests.conftest import save_tiny_bert

#: The tiny test checkpoint's shape (tests/conftest.py TINY): 3 layers, hidden 32, 4 heads of 8, FFN 64.
SHAPE = BertShape(vocab_size=30522, hidden_size=32, head_dim=8, heads=(4, 4, 4), ffn=(64, 64, 64), num_labels=2)
LAYER = "bert.encoder.layer.{}.{}"


def row(encoder: FeatureEncoder, arch: BertArch, policy: QuantPolicy | None = None) -> dict[str, float]:
    values = encoder.transform([(arch, policy or QuantPolicy())])[0]
    return dict(zip(encoder.names, values.tolist(), strict=True))


def test_names_and_shape() -> None:
    encoder = FeatureEncoder(SHAPE, seq_len=16)
    per_layer = 3 + len(LINEAR_FEATURE_NAMES)
    assert len(encoder.names) == len(set(encoder.names)) == 3 * per_layer + 6 + 2 * len(precision_names())
    assert encoder.names[:4] == ("layer0.active", "layer0.heads", "layer0.ffn", "layer0.query.bits")
    assert encoder.names[3 * per_layer : 3 * per_layer + 6] == (
        "classifier.bits",
        "depth",
        "total_heads",
        "total_ffn",
        "macs",
        "size_bytes",
    )
    assert encoder.names[-1] == f"weight_bytes.{precision_names()[-1]}"
    archs = [SHAPE.full_arch(), BertArch(heads=(1,), ffn=(16,))]
    X = encoder.transform([(a, QuantPolicy()) for a in archs])
    assert X.dtype == np.float64 and X.shape == (2, len(encoder.names))
    assert encoder.transform([]).shape == (0, len(encoder.names))


def test_fp32_is_always_a_precision_and_unknown_ones_are_errors() -> None:
    assert FeatureEncoder(SHAPE, precisions=["int8_dynamic"]).precisions == ("fp32", "int8_dynamic")
    with pytest.raises(PredictorError, match=r"unknown precisions \['int3'\]; known precisions: fp32, bf16"):
        FeatureEncoder(SHAPE, precisions=["int3"])
    with pytest.raises(PredictorError, match="seq_len must be >= 1"):
        FeatureEncoder(SHAPE, seq_len=0)


def test_dropped_layers_are_masked_whatever_the_policy_says() -> None:
    encoder = FeatureEncoder(SHAPE, seq_len=16)
    arch = BertArch(heads=(4, 2), ffn=(64, 32))
    about_dropped = QuantPolicy(
        {LAYER.format(2, "attention.self.query"): "int8_dynamic", LAYER.format(2, "output.dense"): "bf16"}
    )
    plain, noisy = encoder.transform([(arch, QuantPolicy()), (arch, about_dropped)])
    np.testing.assert_array_equal(plain, noisy)
    features = dict(zip(encoder.names, noisy.tolist(), strict=True))
    assert all(value == 0.0 for name, value in features.items() if name.startswith("layer2."))
    assert features["layer1.active"] == 1.0 and features["layer1.heads"] == 2 and features["layer1.ffn"] == 32
    assert features["depth"] == 2 and features["total_heads"] == 6 and features["total_ffn"] == 96


def test_bits_per_linear_and_bytes_per_precision() -> None:
    encoder = FeatureEncoder(SHAPE, seq_len=16)
    arch = BertArch(heads=(4, 4), ffn=(64, 32))
    policy = QuantPolicy(
        {
            LAYER.format(0, "attention.self.query"): "int8_dynamic",
            LAYER.format(0, "attention.self.key"): "int4_weight_only",
            LAYER.format(0, "attention.self.value"): "bf16",
            LAYER.format(1, "output.dense"): "int8_static",
        },
        options={"int4_weight_only": {"group_size": 32}},
    )
    features = row(encoder, arch, policy)
    assert features["layer0.query.bits"] == 8
    assert features["layer0.key.bits"] == 4
    assert features["layer0.value.bits"] == 16
    assert features["layer0.attention_output.bits"] == 32
    assert features["layer1.ffn_out.bits"] == 8
    assert features["layer1.ffn_in.bits"] == 32
    assert features["classifier.bits"] == 32
    assert features["weight_bytes.int4_weight_only"] == get_precision("int4_weight_only").weight_bytes(32, 32)
    assert features["weight_bytes.int8_static"] == get_precision("int8_static").weight_bytes(32, 32)
    assert features["macs.int8_static"] == 16 * 32 * 32
    assert features["macs.int8_weight_only"] == 0 and features["weight_bytes.int8_weight_only"] == 0
    assert features["size_bytes"] == estimate_size_bytes(SHAPE, arch, policy)
    fp32_weights = sum(
        out * inp * 4 for fqn, (out, inp) in linear_shapes(SHAPE, arch).items() if policy.precision_for(fqn) == "fp32"
    )
    assert features["weight_bytes.fp32"] == fp32_weights


def test_per_precision_macs_add_up_to_the_linears() -> None:
    encoder = FeatureEncoder(SHAPE, seq_len=16)
    arch = BertArch(heads=(3, 1, 4), ffn=(16, 64, 8))
    policy = QuantPolicy({LAYER.format(i, "intermediate.dense"): "bf16" for i in range(3)})
    features = row(encoder, arch, policy)
    linears = sum(features[f"macs.{p}"] for p in encoder.precisions)
    attention = sum(h * 16 * 16 * 2 * SHAPE.head_dim for h in arch.heads)
    pooler = SHAPE.hidden_size**2
    assert linears + attention + pooler == features["macs"] == macs_for(SHAPE, arch, 16)
    assert features["macs.bf16"] == 16 * 32 * (16 + 64 + 8)


def test_bad_candidates_are_errors() -> None:
    encoder = FeatureEncoder(SHAPE, precisions=["int8_dynamic"])
    arch = BertArch(heads=(4,), ffn=(64,))
    with pytest.raises(PredictorError, match="precisions \\['bf16'\\] the encoder has no columns for"):
        encoder.transform([(arch, QuantPolicy({LAYER.format(0, "output.dense"): "bf16"}))])
    with pytest.raises(PredictorError, match="names 1 layer\\(s\\) the model does not have"):
        encoder.transform([(arch, QuantPolicy({LAYER.format(3, "output.dense"): "int8_dynamic"}))])
    with pytest.raises(PredictorError, match="a candidate is a \\(BertArch, QuantPolicy\\) pair"):
        encoder.transform([arch])  # type: ignore[list-item]
    with pytest.raises(ArchError, match="architecture keeps 4 layers but the model has 3"):
        encoder.transform([(BertArch(heads=(1,) * 4, ffn=(8,) * 4), QuantPolicy())])


@pytest.fixture(scope="module")
def tiny_supernets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ElasticBertForSequenceClassification]:
    folder = save_tiny_bert(tmp_path_factory.mktemp("predictors") / "tiny")
    return {pooling: load_pretrained(folder, num_labels=2, seed=0, pooling=pooling) for pooling in ("cls", "mean")}


@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize(
    ("heads", "ffn"), [((4, 4, 4), (64, 64, 64)), ((4, 2), (64, 16)), ((1,), (8,)), ((2, 3, 1), (32, 8, 64))]
)
def test_analytic_macs_equal_fvcore_on_extracted_models(
    tiny_supernets: dict[str, ElasticBertForSequenceClassification],
    pooling: str,
    heads: tuple[int, ...],
    ffn: tuple[int, ...],
) -> None:
    supernet = tiny_supernets[pooling]
    arch, seq_len = BertArch(heads=heads, ffn=ffn), 24
    assert macs_for(supernet.shape, arch, seq_len) == count_macs(extract(supernet, arch), seq_len)


def test_macs_need_a_positive_sequence_length() -> None:
    with pytest.raises(PredictorError, match="seq_len must be >= 1, got 0"):
        macs_for(SHAPE, SHAPE.full_arch(), 0)
