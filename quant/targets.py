"""Which Linear layers a quantization policy may name, and their shapes, from the model's shape alone.

Computed from ``BertShape`` + ``BertArch`` (no module needed), so that the search can list a
candidate's layers and account for its size without building it. Per kept layer: query, key, value,
attention output, FFN in, FFN out; then the classifier.

The pooler is deliberately not a target: it is one hidden×hidden Linear applied to the [CLS] token
only (a negligible share of the MACs at any sequence length), and its tanh output feeds the
classifier directly, so quantizing it buys almost nothing in speed and size while putting its error
straight onto the logits. It stays fp32, like the embeddings and LayerNorms.
"""

from __future__ import annotations

from supernet.arch import BertArch
from supernet.bert import BertShape, check_arch_fits

#: The Linears of one encoder layer, relative to ``bert.encoder.layer.<i>``, in forward order.
LAYER_LINEARS = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)
CLASSIFIER = "classifier"


def linear_shapes(shape: BertShape, arch: BertArch | None = None) -> dict[str, tuple[int, int]]:
    """``{fqn: (out_features, in_features)}`` of every policy target of sub-network ``arch`` (all of
    ``shape`` when None), in forward order."""
    arch = arch or shape.full_arch()
    check_arch_fits(shape, arch)
    h = shape.hidden_size
    shapes: dict[str, tuple[int, int]] = {}
    for i, (heads, ffn) in enumerate(zip(arch.heads, arch.ffn, strict=True)):
        width = heads * shape.head_dim
        prefix = f"bert.encoder.layer.{i}."
        for name, dims in zip(LAYER_LINEARS, [(width, h)] * 3 + [(h, width), (ffn, h), (h, ffn)], strict=True):
            shapes[prefix + name] = dims
    shapes[CLASSIFIER] = (shape.num_labels, h)
    return shapes
