"""The joint BERT space: encode/decode round trips (property-based), masking of inactive genes, repair."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quant.policy import QuantPolicy
from search.bert_space import BertJointSpace
from search.errors import SearchError
from supernet.arch import BertArch, BertElasticSpace
from supernet.bert import BertShape

SHAPE = BertShape(vocab_size=30522, hidden_size=64, head_dim=16, heads=(4,) * 3, ffn=(128,) * 3, num_labels=2)
ELASTIC = BertElasticSpace(3, 4, 128, depth_choices=(1, 2, 3), head_choices=(1, 2, 4), ffn_choices=(32, 64, 128))
PRECISIONS = ("fp32", "int8_dynamic", "int4_weight_only")
SPACE = BertJointSpace(SHAPE, ELASTIC, PRECISIONS)


@st.composite
def rows(draw: st.DrawFn) -> np.ndarray:
    return np.array([draw(st.integers(int(lo), int(hi))) for lo, hi in zip(SPACE.xl, SPACE.xu, strict=True)])


def test_genes_and_bounds() -> None:
    assert SPACE.n_var == 1 + 3 * 8 + 1
    assert SPACE.names[:4] == ("depth", "layer0.heads", "layer0.ffn", "layer0.query.precision")
    assert SPACE.names[-1] == "classifier.precision"
    assert int(SPACE.xu[0]) == 2 and int(SPACE.xu[-1]) == 2


@settings(max_examples=150, deadline=None)
@given(rows())
def test_canonical_is_idempotent_and_round_trips(x: np.ndarray) -> None:
    canonical = SPACE.canonical(x.reshape(1, -1))[0]
    assert np.array_equal(SPACE.canonical(canonical.reshape(1, -1))[0], canonical)
    candidate = SPACE.decode(x)
    assert np.array_equal(SPACE.encode(candidate), canonical)
    assert SPACE.decode(SPACE.encode(candidate)) == candidate
    arch, policy = candidate
    assert arch.depth == ELASTIC.depth_choices[x[0]]
    assert all(p != "fp32" for p in policy.values())  # decoded policies name non-fp32 layers only


@settings(max_examples=100, deadline=None)
@given(rows(), rows())
def test_genes_of_dropped_layers_are_masked(x: np.ndarray, noise: np.ndarray) -> None:
    depth = ELASTIC.depth_choices[x[0]]
    y = x.copy()
    start = 1 + depth * 8
    y[start:-1] = noise[start:-1]  # change only the genes of layers beyond the depth
    assert SPACE.key(x) == SPACE.key(y)
    assert np.all(SPACE.canonical(x.reshape(1, -1))[0][start:-1] == 0)


def test_impossible_precisions_are_repaired_to_fp32() -> None:
    x = np.zeros(SPACE.n_var, dtype=np.int64)
    x[0] = 0  # depth 1
    x[1], x[2] = 0, 0  # 1 head (width 16), FFN 32
    x[3:9] = 2  # int4 everywhere in layer 0
    x[-1] = 2  # int4 on the 2-label classifier
    arch, policy = SPACE.decode(x)
    assert arch == BertArch((1,), (32,))
    # int4 (group size 32 by default, out multiple of 16): q/k/v are 64->16 (ok), attention output 16->64 (in too
    # small for a group), FFN in 64->32 (ok), FFN out 32->64 (ok); the classifier has 2 outputs.
    assert policy.precision_for("classifier") == "fp32"
    assert policy.precision_for("bert.encoder.layer.0.attention.output.dense") == "fp32"
    assert policy.precision_for("bert.encoder.layer.0.attention.self.query") == "int4_weight_only"


def test_features_follow_the_predictors_encoder() -> None:
    X = SPACE.sample(5, np.random.default_rng(0))
    features = SPACE.features(X)
    assert features.shape == (5, len(SPACE.feature_names()))
    assert np.all(np.isfinite(features))


def test_encode_rejects_foreign_candidates() -> None:
    arch = BertArch((4, 4), (128, 64))
    with pytest.raises(SearchError, match="not one of the space's precisions"):
        SPACE.encode((arch, QuantPolicy({"classifier": "bf16"})))
    with pytest.raises(SearchError, match="does not have"):
        SPACE.encode((arch, QuantPolicy({"bert.encoder.layer.2.intermediate.dense": "int8_dynamic"})))
    with pytest.raises(SearchError, match="cannot take that layer's shape"):
        SPACE.encode((arch, QuantPolicy({"classifier": "int4_weight_only"})))
    with pytest.raises(SearchError, match="pair"):
        SPACE.encode(arch)
