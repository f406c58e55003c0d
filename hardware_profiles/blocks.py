"""The blocks a BERT sub-network's latency is summed from, as small stand-alone modules.

A sub-network at batch B and sequence S is, op for op, the sum of:

* ``embeddings``: the three embedding lookups, their LayerNorm, and the additive attention bias;
* per kept layer: the six policy-target Linears, each at its own precision (``linear``); the
  attention core of h heads (split, scaled-dot-product attention, merge: ``attention``); and the
  layer's remaining element-wise work (two residual adds + LayerNorms, the FFN activation of width f:
  ``glue``);
* ``pooling`` (mean of valid tokens, or [CLS] + the fp32 pooler), and the classifier (a ``linear``
  whose rows are the batch, not batch × sequence).

Linears are measured one by one rather than as "attention at precision p", because a policy gives
each of q, k, v and the output projection its own precision: per-Linear entries make every policy a
sum of table entries. Blocks use random weights: latency does not depend on weight values, and a
table must not need a trained checkpoint, only the model's shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.activations import ACT2FN

from quant.registry import get_precision
from quant.static import quantize_linears_pt2e
from supernet.bert import BertEmbeddings, BertShape

BLOCK_KINDS = ("embeddings", "linear", "attention", "glue", "pooling")


@dataclass(frozen=True, order=True)
class BlockKey:
    """One lookup-table entry: a block kind and the sizes/precision that change its latency.

    Unused fields are 0 (or "" for precision), so that keys are plain, sortable, CSV-friendly data.
    ``rows`` is the number of vectors a Linear transforms (batch × sequence inside the encoder, batch
    for the classifier).
    """

    kind: str
    out_features: int = 0
    in_features: int = 0
    rows: int = 0
    heads: int = 0
    ffn: int = 0
    precision: str = ""

    def label(self) -> str:
        """A short human-readable name, for progress bars and errors."""
        if self.kind == "linear":
            return f"linear {self.in_features}->{self.out_features} x{self.rows} @ {self.precision}"
        if self.kind == "attention":
            return f"attention {self.heads} heads"
        if self.kind == "glue":
            return f"layer glue ffn {self.ffn}"
        return self.kind


#: Row counts up to which a Linear block holds several copies of its layer (see ``linear_copies``).
FEW_ROWS = 512
COPIES = 4


def linear_copies(rows: int) -> int:
    """How many distinct copies of a Linear one block runs (its entry is the time per copy).

    Inside a model every Linear's weights were evicted from the cache by the other layers since the
    last forward; a lone layer called in a loop finds them cached, which makes it look faster than it
    is when few rows are transformed and moving the weights dominates (batch 1). Running several
    distinct copies in a row puts the weights of each back out of the faster caches, as in the model.
    At many rows the matmul itself dominates and one copy is measured.
    """
    return COPIES if rows <= FEW_ROWS else 1


class LinearBlock(nn.Module):
    """``copies`` distinct Linears of one shape applied to the same input; ``linear0``, ``linear1``, ...
    are the names a precision is applied to."""

    def __init__(self, out_features: int, in_features: int, copies: int = 1) -> None:
        super().__init__()
        self.copies = copies
        for i in range(copies):
            self.add_module(f"linear{i}", nn.Linear(in_features, out_features))

    @property
    def linear_names(self) -> list[str]:
        return [f"linear{i}" for i in range(self.copies)]

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return tuple(getattr(self, name)(x) for name in self.linear_names)


class AttentionCoreBlock(nn.Module):
    """Split q, k, v into heads, scaled-dot-product attention with the additive mask, merge (as
    ``supernet.bert.BertLayer.attention_context`` does around its Linears)."""

    def __init__(self, heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim

    def forward(self, q: Tensor, k: Tensor, v: Tensor, attn_bias: Tensor) -> Tensor:
        batch, seq, width = q.shape

        def split(x: Tensor) -> Tensor:
            return x.view(batch, seq, self.heads, self.head_dim).transpose(1, 2)

        ctx = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=attn_bias)
        return ctx.transpose(1, 2).reshape(batch, seq, width)


class LayerGlueBlock(nn.Module):
    """A layer's work outside its Linears and attention core: residual + LayerNorm twice, activation."""

    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(shape.hidden_size, eps=shape.layer_norm_eps)
        self.norm2 = nn.LayerNorm(shape.hidden_size, eps=shape.layer_norm_eps)
        self.activation = ACT2FN[shape.hidden_act]

    def forward(self, attn_out: Tensor, residual: Tensor, inner: Tensor, ffn_out: Tensor) -> tuple[Tensor, Tensor]:
        hidden = self.norm1(attn_out + residual)
        return self.norm2(ffn_out + hidden), self.activation(inner)


class EmbeddingsBlock(nn.Module):
    """Embeddings + LayerNorm and the additive attention bias, as ``ElasticBertModel.encode`` builds them."""

    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.embeddings = BertEmbeddings(shape)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor) -> tuple[Tensor, Tensor]:
        hidden = self.embeddings(input_ids, token_type_ids)
        bias = (1.0 - attention_mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
        return hidden, bias


class PoolingBlock(nn.Module):
    """Sentence vector from the final states: the masked token mean, or [CLS] through the fp32 pooler."""

    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.pooler = nn.Linear(shape.hidden_size, shape.hidden_size) if shape.pooling == "cls" else None

    def forward(self, hidden: Tensor, attention_mask: Tensor) -> Tensor:
        if self.pooler is not None:
            return torch.tanh(self.pooler(hidden[:, 0]))
        weights = attention_mask.to(hidden.dtype)[..., None]
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def build_block(
    key: BlockKey, shape: BertShape, batch: int, seq: int, seed: int = 0
) -> tuple[nn.Module, tuple[Tensor, ...]]:
    """The float module of ``key`` and inputs of the profile's shape (random, from ``seed``)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module: nn.Module
        if key.kind == "linear":
            module = LinearBlock(key.out_features, key.in_features, linear_copies(key.rows))
        elif key.kind == "attention":
            module = AttentionCoreBlock(key.heads, shape.head_dim)
        elif key.kind == "glue":
            module = LayerGlueBlock(shape)
        elif key.kind == "embeddings":
            module = EmbeddingsBlock(shape)
        elif key.kind == "pooling":
            module = PoolingBlock(shape)
        else:
            raise ValueError(f"unknown block kind {key.kind!r}; kinds: {BLOCK_KINDS}")
    h = shape.hidden_size

    def rand(*size: int) -> Tensor:
        return torch.randn(*size, generator=generator)

    mask = torch.ones(batch, seq, dtype=torch.long)
    inputs: tuple[Tensor, ...]
    if key.kind == "linear":
        if key.rows not in (batch * seq, batch):
            raise ValueError(
                f"a linear block has batch x sequence ({batch * seq}) or batch ({batch}) rows, not {key.rows}"
            )
        leading = (batch, seq) if key.rows == batch * seq else (batch,)
        inputs = (rand(*leading, key.in_features),)
    elif key.kind == "attention":
        width = key.heads * shape.head_dim
        inputs = (
            rand(batch, seq, width),
            rand(batch, seq, width),
            rand(batch, seq, width),
            torch.zeros(batch, 1, 1, seq),
        )
    elif key.kind == "glue":
        inputs = (rand(batch, seq, h), rand(batch, seq, h), rand(batch, seq, key.ffn), rand(batch, seq, h))
    elif key.kind == "embeddings":
        ids = torch.randint(1000, shape.vocab_size, (batch, seq), generator=generator)
        inputs = (ids, mask, torch.zeros_like(ids))
    else:
        inputs = (rand(batch, seq, h), mask)
    return module.eval(), inputs


def quantize_block(module: nn.Module, key: BlockKey, inputs: tuple[Tensor, ...]) -> nn.Module:
    """``module`` with its Linear in ``key.precision`` for a torch runtime (blocks other than ``linear``
    stay fp32). int8_static is calibrated on the block's own input, through the same PT2E code as a
    whole sub-network (``quant.static``)."""
    if key.kind != "linear" or key.precision in ("", "fp32"):
        return module
    assert isinstance(module, LinearBlock)
    names = module.linear_names
    precision = get_precision(key.precision)
    if precision.graph_level:
        return quantize_linears_pt2e(module, names, example_args=inputs, calibration_args=[inputs])
    with torch.no_grad():
        return precision.apply(module, names)
