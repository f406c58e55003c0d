"""Model size (measured and analytic), parameter count and MACs.

``serialized_size_bytes`` is the ground truth: the bytes of ``torch.save(model.state_dict())``.
torch.save is used for every precision, not safetensors, because torchao's quantized weights are tensor
subclasses that safetensors cannot store, and sizes are only comparable in one format.

``estimate_size_bytes`` predicts that number from the shape, the architecture and the policy alone,
so that the search can score a candidate's size without building it: per target Linear the
precision's ``weight_bytes`` (values plus their scales/zero-points) plus an fp32 bias; embeddings,
LayerNorms and the pooler in fp32; plus ``ENTRY_BYTES`` of container per state-dict entry (zip
headers, alignment, pickled key). Not modelled: the extra pickled metadata of torchao's tensor
subclasses (about 0.3-1.3 KB per quantized weight), which is noise for BERT-sized models (measured:
under 0.1% for hidden 384, under 1% for the tiny test model) but reaches several percent for toy
models whose Linears are only a few KB.
"""

from __future__ import annotations

import io
import warnings
from collections import Counter
from typing import Any

import torch
from torch import nn

from quant.errors import PolicyError
from quant.policy import QuantPolicy
from quant.targets import linear_shapes
from supernet.arch import BertArch
from supernet.bert import BertShape

_FP32 = 4
#: Container bytes per state-dict entry of torch.save (zip local + central headers, 64-byte alignment,
#: pickled key): measured 380-384 B per entry for BERT key names with torch 2.13.
ENTRY_BYTES = 384


def serialized_size_bytes(model: nn.Module) -> int:
    """Exact bytes of ``torch.save(model.state_dict())`` (written to memory, not disk)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def estimate_size_bytes(shape: BertShape, arch: BertArch | None = None, policy: QuantPolicy | None = None) -> int:
    """Analytic size of sub-network ``arch`` of ``shape`` quantized with ``policy`` (fp32 when None)."""
    policy = policy or QuantPolicy()
    h = shape.hidden_size
    total = (shape.vocab_size + shape.max_position_embeddings + shape.type_vocab_size) * h * _FP32
    total += 2 * h * _FP32  # embedding LayerNorm
    entries = 3 + 2
    linears = linear_shapes(shape, arch)
    unknown = [fqn for fqn in policy if fqn not in linears]
    if unknown:
        raise PolicyError(
            f"the policy names {len(unknown)} layer(s) this architecture does not have (e.g. {unknown[:3]}); "
            "make the policy for this architecture"
        )
    built = {name: policy.build(name) for name in {policy.precision_for(fqn) for fqn in linears}}
    for fqn, (out_features, in_features) in linears.items():
        precision = built[policy.precision_for(fqn)]
        total += precision.weight_bytes(out_features, in_features) + out_features * _FP32
        entries += 2 + precision.extra_state_entries
    depth = (arch or shape.full_arch()).depth
    total += depth * 2 * (2 * h * _FP32)  # two LayerNorms per layer
    entries += depth * 2 * 2
    if shape.pooling == "cls":
        total += (h * h + h) * _FP32  # pooler, always fp32 (see quant.targets)
        entries += 2
    return total + entries * ENTRY_BYTES


def count_params(model: nn.Module) -> int:
    """Number of parameter elements (logical elements, so a quantized weight counts as its float shape).

    Meant for float models: a PT2E int8_static model keeps its weights as buffers, not parameters; use
    ``supernet.bert.count_parameters(shape, arch)`` for the analytic count of any sub-network.
    """
    return sum(p.numel() for p in model.parameters())


def _sdpa_macs(inputs: list[Any], outputs: list[Any]) -> Counter[str]:
    """MACs of scaled_dot_product_attention: Q·Kᵀ and the weighted sum of V (the softmax is not a MAC)."""
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(x) for x in inputs[:3])
    if q is None or k is None or v is None:
        return Counter()
    *batch, seq_q, dim = q
    seq_k, dim_v = k[-2], v[-1]
    rows = 1
    for b in batch:
        rows *= b
    return Counter({"scaled_dot_product_attention": rows * seq_q * seq_k * (dim + dim_v)})


def _no_macs(inputs: list[Any], outputs: list[Any]) -> Counter[str]:
    """Replaces a default handle: ``set_op_handle(name, None)`` only marks an op ignored, and fvcore keeps
    counting it with the default handle."""
    return Counter()


#: fvcore's default handles that count things other than multiply-accumulates (norms, pooling, resampling).
_NOT_MACS = (
    "aten::batch_norm",
    "aten::group_norm",
    "aten::layer_norm",
    "aten::instance_norm",
    "aten::upsample_nearest2d",
    "aten::upsample_bilinear2d",
    "aten::adaptive_avg_pool2d",
    "aten::grid_sampler",
)


def count_macs(model: nn.Module, seq_len: int, batch: int = 1) -> int:
    """Multiply-accumulates of one forward pass at ``batch`` × ``seq_len`` tokens, via fvcore.

    fvcore counts one fused multiply-add as one "flop", i.e. it counts MACs. Its defaults miss
    ``scaled_dot_product_attention`` (added here) and count norms and pooling (removed here, they are
    not MACs), so the result is the matmul work: every Linear plus attention. Quantization does not
    change it; count on the float model (fvcore traces with ``torch.jit.trace``).
    """
    from fvcore.nn import FlopCountAnalysis

    if seq_len < 1 or batch < 1:
        raise ValueError(f"seq_len and batch must be >= 1, got {seq_len} and {batch}")
    ids = torch.ones(batch, seq_len, dtype=torch.long, device=next(model.parameters()).device)
    inputs = (ids, torch.ones_like(ids), torch.zeros_like(ids))
    was_training = model.training
    model.eval()
    try:
        analysis = FlopCountAnalysis(model, inputs)
        analysis.set_op_handle("aten::scaled_dot_product_attention", _sdpa_macs)
        analysis.set_op_handle(**dict.fromkeys(_NOT_MACS, _no_macs))
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # jit tracer warnings about data-dependent Python values
            return int(analysis.total())
    finally:
        model.train(was_training)
