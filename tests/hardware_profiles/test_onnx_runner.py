"""The ONNX Runtime path: export (dynamic batch and sequence), int8_dynamic on exactly the named Linears,
sessions configured from a profile, runners for timing loops, and clear errors.

Exports take ~1-5 s each on a loaded CPU, so the tiny BERT is exported twice per module (fp32 and
int8_dynamic on every target), a sub-network of it once (then quantized per target, from copies of
that export), and every other check uses small modules.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hardware_profiles import onnx_runner
from hardware_profiles.errors import ProfileError
from hardware_profiles.onnx_runner import (
    QUANTIZED_MATMULS,
    OnnxModel,
    count_quantized_matmuls,
    export_onnx,
    load_onnx,
    onnx_model_for,
)
from quant.errors import PolicyError
from quant.targets import CLASSIFIER, LAYER_LINEARS, linear_shapes
from supernet.arch import BertArch
from supernet.bert import ElasticBertForSequenceClassification
from supernet.checkpoint import load_pretrained
from supernet.extract import extract
from tests.conftest import save_tiny_bert
from tests.quant.conftest import make_batch

BERT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")

#: Largest |int8_dynamic - fp32| logit of the tiny BERT (all 19 target Linears quantized, unit-std head,
#: logits up to ~1) over the batches below. Measured: 0.026 (per-channel 7-bit weights, uint8 per-tensor
#: activations). The bound leaves room for other seeds and CPUs.
INT8_BERT_ATOL = 0.05

#: Largest |int8_dynamic - fp32| output of a lone Linear, relative to its largest |output|. Measured 1.1%
#: (a numpy emulation of exact int8 arithmetic: 0.9%). With 8-bit weights it was 34% on AVX2 (saturating
#: ``vpmaddubsw``), which this bound is there to catch.
INT8_LINEAR_RTOL = 0.03


def _bert_batch(seed: int, batch: int, seq: int) -> tuple[Tensor, Tensor, Tensor]:
    """``tests.quant.conftest.make_batch`` (tokenizer-like ids, a padded row, a second segment) as positional inputs."""
    inputs = make_batch(seed, batch, seq)
    return inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"]


def _torch_out(model: nn.Module, *inputs: Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(*inputs).numpy()


class LoneLinear(nn.Module):
    """A lookup-table block: one Linear on (batch, sequence, in_features)."""

    def __init__(self, in_features: int = 64, out_features: int = 128) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)


class Block(nn.Module):
    """Two Linears on 3-D inputs (exported as MatMul) and a head on a 2-D input (exported as Gemm)."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(32, 48)
        self.second = nn.Linear(48, 32)
        self.dropout = nn.Dropout(0.5)
        self.head = nn.Linear(32, 8)

    def forward(self, x: Tensor) -> Tensor:
        hidden = self.second(torch.relu(self.first(x)))
        return self.head(self.dropout(hidden[:, 0]))


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> ElasticBertForSequenceClassification:
    """The tiny random BERT with a unit-std classifier: BERT's usual std 0.02 head makes the logits nearly
    constant, which would hide quantization errors (as in tests/quant)."""
    folder = save_tiny_bert(tmp_path_factory.mktemp("onnx") / "tiny-bert", classifier_labels=2)
    model = load_pretrained(folder, num_labels=2).eval()
    model.init_head(torch.Generator().manual_seed(1), std=1.0)
    return model


@pytest.fixture(scope="module")
def bert_fp32(bert: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fp32") / "bert.onnx"
    return export_onnx(bert, _bert_batch(0, 2, 16), BERT_INPUTS, path)


@pytest.fixture(scope="module")
def bert_int8(bert: ElasticBertForSequenceClassification, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """int8_dynamic on every policy target, exported from a batch-1 example (what a b1 profile does)."""
    path = tmp_path_factory.mktemp("int8") / "bert.onnx"
    return export_onnx(
        bert, _bert_batch(0, 1, 8), BERT_INPUTS, path, int8_dynamic_linears=list(linear_shapes(bert.shape))
    )


#: A sub-network of the tiny BERT (second layer narrower), as the onnxruntime profiles measure them.
SUB_ARCH = BertArch(heads=(4, 2), ffn=(64, 32))

#: Its policy targets (``linear_shapes``), each quantized alone below, then all together ("*").
SUB_TARGETS = [
    *(f"bert.encoder.layer.{layer}.{linear}" for layer in range(2) for linear in LAYER_LINEARS),
    CLASSIFIER,
]


@pytest.fixture(scope="module")
def sub_bert(bert: ElasticBertForSequenceClassification) -> ElasticBertForSequenceClassification:
    return extract(bert, SUB_ARCH).eval()


@pytest.fixture(scope="module")
def sub_bert_export(sub_bert: nn.Module) -> onnx.ModelProto:
    """The sub-network's fp32 export at batch 2, sequence 16, made once: export_onnx only quantizes a copy."""
    return onnx_runner._export(sub_bert, _bert_batch(0, 2, 16), BERT_INPUTS, onnx_runner.DEFAULT_OPSET)


def _input_dims(path: Path) -> dict[str, list[str | int]]:
    graph = onnx.load(str(path), load_external_data=False).graph
    return {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}


# --- fp32 -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("batch", "seq"), [(1, 16), (3, 24), (32, 128)])
def test_fp32_bert_matches_torch_at_any_batch_and_sequence(
    bert: nn.Module, bert_fp32: Path, batch: int, seq: int
) -> None:
    assert _input_dims(bert_fp32) == {name: ["batch", "sequence"] for name in BERT_INPUTS}
    model = load_onnx(bert_fp32, BERT_INPUTS, threads=1)
    inputs = _bert_batch(seed=batch, batch=batch, seq=seq)
    (logits,) = model.run(*inputs)
    assert logits.shape == (batch, 2)
    np.testing.assert_allclose(logits, _torch_out(bert, *inputs), rtol=0, atol=1e-4)


def test_lone_linear_block_exports_with_dynamic_batch_and_sequence(tmp_path: Path) -> None:
    block = LoneLinear().eval()
    path = export_onnx(block, (torch.randn(2, 8, 64),), ["x"], tmp_path / "linear.onnx")
    assert _input_dims(path) == {"x": ["batch", "sequence", 64]}
    model = load_onnx(path, ["x"], threads=1)
    for shape in [(1, 8, 64), (3, 5, 64), (32, 128, 64)]:
        x = torch.randn(shape)
        np.testing.assert_allclose(model.run(x)[0], _torch_out(block, x), rtol=0, atol=1e-4)


def test_export_runs_the_model_in_eval_mode_and_restores_its_mode(tmp_path: Path) -> None:
    torch.manual_seed(0)
    block = Block().train()
    path = export_onnx(block, (torch.randn(2, 4, 32),), ["x"], tmp_path / "block.onnx")
    assert block.training and all(m.training for m in block.modules())
    x = torch.randn(3, 4, 32)
    expected = _torch_out(block.eval(), x)  # no dropout in the graph
    np.testing.assert_allclose(load_onnx(path, ["x"], threads=1).run(x)[0], expected, rtol=0, atol=1e-5)


# --- int8_dynamic -----------------------------------------------------------------------------------------


def test_int8_dynamic_on_every_bert_target_is_close_to_fp32_and_smaller(
    bert: ElasticBertForSequenceClassification, bert_fp32: Path, bert_int8: Path
) -> None:
    targets = linear_shapes(bert.shape)
    assert count_quantized_matmuls(onnx.load(str(bert_int8))) == len(targets)  # 18 encoder + classifier
    assert count_quantized_matmuls(onnx.load(str(bert_fp32))) == 0

    fp32, int8 = load_onnx(bert_fp32, BERT_INPUTS, threads=1), load_onnx(bert_int8, BERT_INPUTS, threads=1)
    errors = []
    for seed, (batch, seq) in enumerate([(8, 24), (3, 24), (1, 16), (32, 128)]):  # exported at batch 1, seq 8
        inputs = _bert_batch(seed, batch, seq)
        expected = fp32.run(*inputs)[0]
        errors.append(float(np.abs(int8.run(*inputs)[0] - expected).max()))
    assert 0 < max(errors) <= INT8_BERT_ATOL

    # each target weight shrinks from 4 bytes to 1 (plus a scale and zero point per channel). Measured: 87 KB
    # for 74 KB of weight payload; the rest is the exporter's per-node metadata (stack traces), which the
    # quantizer's new nodes do not carry. The 3.9 MB word embeddings stay fp32.
    weights = sum(out_features * in_features for out_features, in_features in targets.values())
    assert bert_fp32.stat().st_size - bert_int8.stat().st_size >= 0.8 * 3 * weights


@pytest.mark.parametrize("target", [*SUB_TARGETS, "*"])
def test_int8_dynamic_on_any_target_of_a_subnetwork(
    sub_bert: ElasticBertForSequenceClassification,
    sub_bert_export: onnx.ModelProto,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    target: str,
) -> None:
    """Regression: with the classifier left float, quantize_dynamic transposed its Gemm weight in place and
    then failed shape inference on the exporter's value_info for it ("Inferred shape and existing shape
    differ in dimension 0: (32) vs (2)"); e.g. for an FFN Linear alone, the end-to-end onnxruntime case."""
    targets = linear_shapes(sub_bert.shape)
    assert list(targets) == SUB_TARGETS
    names = SUB_TARGETS if target == "*" else [target]
    monkeypatch.setattr(onnx_runner, "_export", lambda *args: copy.deepcopy(sub_bert_export))
    path = export_onnx(sub_bert, _bert_batch(0, 2, 16), BERT_INPUTS, tmp_path / "sub.onnx", int8_dynamic_linears=names)

    # exactly the named Linears: one quantized MatMul each, on an int8 weight of their (in, out) shape
    quantized = onnx.load(str(path))
    assert count_quantized_matmuls(quantized) == len(names)
    int8_weights = [
        list(init.dims)
        for init in quantized.graph.initializer
        if init.data_type == onnx.TensorProto.INT8 and len(init.dims) == 2
    ]
    assert sorted(int8_weights) == sorted([targets[name][1], targets[name][0]] for name in names)

    model = load_onnx(path, BERT_INPUTS, threads=1)
    errors = []
    for seed, (batch, seq) in enumerate([(2, 16), (1, 8), (3, 24)]):
        inputs = _bert_batch(seed, batch, seq)
        errors.append(float(np.abs(model.run(*inputs)[0] - _torch_out(sub_bert, *inputs)).max()))
    assert 0 < max(errors) <= INT8_BERT_ATOL


def test_int8_dynamic_lone_linear_is_accurate(tmp_path: Path) -> None:
    torch.manual_seed(0)
    block = LoneLinear().eval()
    path = export_onnx(
        block, (torch.randn(2, 8, 64),), ["x"], tmp_path / "linear.onnx", int8_dynamic_linears=["linear"]
    )
    model = load_onnx(path, ["x"], threads=1)
    x = torch.randn(4, 16, 64)  # like LayerNorm outputs: what the encoder's Linears are fed
    expected = _torch_out(block, x)
    error = np.abs(model.run(x)[0] - expected).max() / np.abs(expected).max()
    assert 0 < error <= INT8_LINEAR_RTOL


def test_int8_dynamic_quantizes_exactly_the_named_linears(tmp_path: Path) -> None:
    torch.manual_seed(0)
    block = Block().eval()
    path = export_onnx(
        block, (torch.randn(2, 4, 32),), ["x"], tmp_path / "block.onnx", int8_dynamic_linears=["first", "head", "first"]
    )
    graph = onnx.load(str(path)).graph
    assert count_quantized_matmuls(onnx.load(str(path))) == 2  # "first" once, and the head's Gemm

    # the Linear left out is still a float MatMul on its float weight; ONNX stores MatMul weights as
    # (in_features, out_features)
    floats = {init.name: init for init in graph.initializer if init.data_type == onnx.TensorProto.FLOAT}
    float_linears = [
        node for node in graph.node if node.op_type in ("MatMul", "Gemm") and any(i in floats for i in node.input)
    ]
    assert len(float_linears) == 1
    weight = next(floats[i] for i in float_linears[0].input if i in floats)
    assert list(weight.dims) == [48, 32]  # second
    quantized_weights = [
        init for init in graph.initializer if init.data_type == onnx.TensorProto.INT8 and len(init.dims) == 2
    ]
    assert sorted(list(w.dims) for w in quantized_weights) == [[32, 8], [32, 48]]  # head, first
    quantized_inputs = {i for node in graph.node if node.op_type in QUANTIZED_MATMULS for i in node.input}
    assert {w.name for w in quantized_weights} <= quantized_inputs

    x = torch.randn(5, 4, 32)
    expected = _torch_out(block, x)
    error = np.abs(load_onnx(path, ["x"], threads=1).run(x)[0] - expected).max() / np.abs(expected).max()
    assert 0 < error <= INT8_LINEAR_RTOL


# --- errors -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("bert.encoder.layer.7.attention.self.query", "'bert.encoder.layer.7.attention.self.query' is not a module"),
        ("bert.embeddings.LayerNorm", "'bert.embeddings.LayerNorm' is a LayerNorm, not an nn.Linear"),
    ],
)
def test_unknown_linear_is_a_policy_error_before_exporting(
    bert: nn.Module, tmp_path: Path, name: str, message: str
) -> None:
    with pytest.raises(PolicyError, match=message):
        export_onnx(bert, _bert_batch(0, 2, 8), BERT_INPUTS, tmp_path / "m.onnx", int8_dynamic_linears=[name])
    assert list(tmp_path.iterdir()) == []


def test_linear_not_called_as_a_module_is_a_policy_error(tmp_path: Path) -> None:
    class Functional(LoneLinear):
        def forward(self, x: Tensor) -> Tensor:
            return F.linear(x, self.linear.weight[:100], self.linear.bias[:100])  # a sliced (elastic) call

    with pytest.raises(PolicyError, match="Linear 'linear' has no MatMul/Gemm in the exported ONNX graph"):
        export_onnx(Functional(), (torch.randn(2, 3, 64),), ["x"], tmp_path / "m.onnx", int8_dynamic_linears=["linear"])
    assert list(tmp_path.iterdir()) == []


def test_untraceable_model_is_a_profile_error_and_writes_nothing(tmp_path: Path) -> None:
    class DataDependent(LoneLinear):
        def forward(self, x: Tensor) -> Tensor:
            return self.linear(x) if x.sum() > 0 else self.linear(-x)

    with pytest.raises(ProfileError, match=r"cannot export DataDependent to ONNX \(opset 18\): .*guard.*traceable"):
        export_onnx(DataDependent(), (torch.randn(2, 3, 64),), ["x"], tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_opsets_below_18_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match=r"opset 17 is not supported: .*set opset >= 18"):
        export_onnx(LoneLinear(), (torch.randn(2, 3, 64),), ["x"], tmp_path / "m.onnx", opset=17)


def test_load_onnx_errors(tmp_path: Path, bert_fp32: Path) -> None:
    with pytest.raises(ProfileError, match=r"no ONNX model at .*missing\.onnx; export one first with export_onnx"):
        load_onnx(tmp_path / "missing.onnx", ["x"], threads=1)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ProfileError, match=r"ONNX Runtime cannot load .*junk\.onnx: .*re-export it"):
        load_onnx(tmp_path / "junk.onnx", ["x"], threads=1)
    with pytest.raises(ProfileError, match="graph_optimization_level 'max' is unknown; use one of disable, basic"):
        load_onnx(bert_fp32, BERT_INPUTS, threads=1, graph_optimization_level="max")
    with pytest.raises(ProfileError, match="threads must be a positive integer, got 0"):
        load_onnx(bert_fp32, BERT_INPUTS, threads=0)
    with pytest.raises(
        ProfileError, match=r"has inputs \['input_ids', 'attention_mask', 'token_type_ids'\], not \['x'\]"
    ):
        load_onnx(bert_fp32, ["x"], threads=1)


def test_run_checks_its_inputs(bert_fp32: Path) -> None:
    model = load_onnx(bert_fp32, BERT_INPUTS, threads=1)
    ids, mask, types = _bert_batch(0, 2, 8)
    with pytest.raises(ProfileError, match=r"takes 3 inputs \(input_ids, attention_mask, token_type_ids\), got 2"):
        model.run(ids, mask)
    with pytest.raises(ProfileError, match="input attention_mask is int64, got float32"):
        model.run(ids, mask.float(), types)


# --- sessions and runners ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("threads", "level"), [(1, "disable"), (2, "all")])
def test_session_uses_the_profile_threads_and_optimization_level(bert_fp32: Path, threads: int, level: str) -> None:
    model = load_onnx(bert_fp32, BERT_INPUTS, threads=threads, graph_optimization_level=level)
    options = model.session.get_session_options()
    assert options.intra_op_num_threads == threads
    assert options.inter_op_num_threads == 1
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    expected = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    assert options.graph_optimization_level == expected[level]
    assert model.session.get_providers() == ["CPUExecutionProvider"]


def test_runner_converts_once_and_can_be_called_repeatedly(bert: nn.Module, bert_int8: Path) -> None:
    model = load_onnx(bert_int8, BERT_INPUTS, threads=1)
    inputs = _bert_batch(3, 2, 16)
    expected = model.run(*inputs)[0]
    run = model.runner(*inputs)
    inputs[0].fill_(0)  # the runner has its own copy of the inputs
    for _ in range(3):
        outputs = run()
        assert isinstance(outputs, list) and len(outputs) == 1
        np.testing.assert_array_equal(outputs[0].numpy(), expected)


def test_onnx_model_for_applies_the_profile_runtime_options(tmp_path: Path) -> None:
    torch.manual_seed(0)
    block = LoneLinear().eval()
    x = torch.randn(1, 8, 64)
    options = {"graph_optimization_level": "basic", "opset": 18}
    model = onnx_model_for(block, (x,), ["x"], tmp_path, threads=2, runtime_options=options)
    assert isinstance(model, OnnxModel) and model.path == tmp_path / "LoneLinear.onnx"
    assert model.input_names == ("x",)
    session_options = model.session.get_session_options()
    assert session_options.intra_op_num_threads == 2
    assert session_options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    np.testing.assert_allclose(model.run(x)[0], _torch_out(block, x), rtol=0, atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LoneLinear.onnx"]  # no temporary files left

    fresh = model.fresh_session()  # what a profile with runtime option sessions > 1 times
    assert fresh.session is not model.session and (fresh.path, fresh.input_names) == (model.path, model.input_names)
    fresh_options = fresh.session.get_session_options()
    assert fresh_options.intra_op_num_threads == 2
    assert fresh_options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    np.testing.assert_allclose(fresh.run(x)[0], model.run(x)[0], rtol=0, atol=0)

    with pytest.raises(ProfileError, match="runtime onnxruntime has no option 'freezing'"):
        onnx_model_for(block, (x,), ["x"], tmp_path, threads=1, runtime_options={"freezing": True})
    with pytest.raises(ProfileError, match="runtime option graph_optimization_level must be disable, basic"):
        onnx_model_for(block, (x,), ["x"], tmp_path, threads=1, runtime_options={"graph_optimization_level": "max"})
