"""An elastic BERT classifier whose sub-network is an explicit argument of ``forward``.

Module and parameter names mirror transformers' ``BertForSequenceClassification`` so that checkpoints
load key for key and per-layer quantization policies can name modules the way users already know
them (``bert.encoder.layer.3.attention.self.query``).

A layer may hold a different number of heads and FFN neurons than its neighbours (``BertShape``):
the super-network is the uniform case, and an extracted sub-network is the same class with the
sliced sizes. Slicing keeps the *first* heads and neurons, which is why importance reordering
(``supernet.reorder``) permutes the most important ones to the front before fine-tuning.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.activations import ACT2FN

from supernet.arch import BertArch
from supernet.errors import ArchError, ConfigError

#: How a sentence becomes one vector for the classifier. "cls": BERT's pooler (dense + tanh on [CLS]),
#: what transformers' BertForSequenceClassification does. "mean": the mean of the valid tokens' final
#: states, no pooler. Depth-elastic sub-networks need "mean" on checkpoints trained with mean pooling
#: (sentence-transformers, e.g. all-MiniLM-L6-v2): their [CLS] state at intermediate layers is nearly
#: the same for every input, so shallow sub-networks collapse to a constant prediction with "cls"
#: (measured: depth <= 4 of 6 gave majority-class accuracy after InstaTune, full width or not).
POOLINGS = ("cls", "mean")

#: Which layers of the super-network a sub-network of depth ``d`` keeps. "first": layers ``0..d-1``, plain
#: truncation. "spread": ``d`` layers evenly spaced from the first to the last (DynaBERT keeps spread
#: layers too), so the last layer always produces the states that pooling and the classifier read, and no
#: intermediate layer is trained to serve as a final one. Measured reason for offering it: with "first",
#: InstaTune's largest sub-network trailed standard fine-tuning at seeds 1-2 while elastic width alone did
#: not (README, Benchmarks).
DEPTH_RULES = ("first", "spread")


def kept_layers(num_layers: int, depth: int, rule: str) -> tuple[int, ...]:
    """Indices of the super-network layers that a sub-network of ``depth`` layers runs, in order."""
    if not 1 <= depth <= num_layers:
        raise ArchError(f"architecture keeps {depth} layers but the model has {num_layers}")
    if rule == "first" or depth == num_layers:
        return tuple(range(depth))
    if rule == "spread":
        if depth == 1:
            return (num_layers - 1,)
        # Round half up: i * (L - 1) / (d - 1) + 1/2, in integers.
        return tuple((2 * i * (num_layers - 1) + depth - 1) // (2 * (depth - 1)) for i in range(depth))
    raise ConfigError(f"unknown depth rule {rule!r}; use one of {DEPTH_RULES}")


@dataclass(frozen=True)
class BertShape:
    """Everything needed to build the module: the sizes of every parameter, and the head's task."""

    vocab_size: int
    hidden_size: int
    head_dim: int
    heads: tuple[int, ...]
    ffn: tuple[int, ...]
    num_labels: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    pad_token_id: int = 0
    pooling: str = "cls"
    depth_rule: str = "first"

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", tuple(int(h) for h in self.heads))
        object.__setattr__(self, "ffn", tuple(int(f) for f in self.ffn))
        if len(self.heads) != len(self.ffn) or not self.heads:
            raise ConfigError("a BertShape needs one head count and one FFN width per layer, at least one layer")
        if self.hidden_act not in ACT2FN:
            raise ConfigError(f"unknown activation {self.hidden_act!r}; use one of {sorted(ACT2FN)}")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"unknown pooling {self.pooling!r}; use one of {POOLINGS}")
        if self.depth_rule not in DEPTH_RULES:
            raise ConfigError(f"unknown depth rule {self.depth_rule!r}; use one of {DEPTH_RULES}")
        if self.num_labels < 1:
            raise ConfigError(f"num_labels must be >= 1, got {self.num_labels}")

    @property
    def num_layers(self) -> int:
        return len(self.heads)

    def kept_layers(self, depth: int) -> tuple[int, ...]:
        """The layers a sub-network of ``depth`` layers runs (see ``DEPTH_RULES``)."""
        return kept_layers(self.num_layers, depth, self.depth_rule)

    def full_arch(self) -> BertArch:
        return BertArch(heads=self.heads, ffn=self.ffn)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["heads"], data["ffn"] = list(self.heads), list(self.ffn)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BertShape:
        allowed = set(cls.__dataclass_fields__)
        unknown = set(data) - allowed
        if unknown:
            raise ConfigError(f"unknown model-config keys {sorted(unknown)}; allowed: {sorted(allowed)}")
        return cls(**{**data, "heads": tuple(data["heads"]), "ffn": tuple(data["ffn"])})

    def sliced(self, arch: BertArch) -> BertShape:
        """The shape of the sub-network ``arch`` (checked against this shape). It keeps the depth rule,
        which matters only if the sub-network is itself cut down further."""
        check_arch_fits(self, arch)
        return BertShape.from_dict({**self.to_dict(), "heads": list(arch.heads), "ffn": list(arch.ffn)})


def check_arch_fits(shape: BertShape, arch: BertArch) -> None:
    """Raise ArchError unless ``arch`` is a sub-network of ``shape`` (fewer or equal everything)."""
    layers = shape.kept_layers(arch.depth)
    for i, (layer, h, f) in enumerate(zip(layers, arch.heads, arch.ffn, strict=True)):
        if h > shape.heads[layer] or f > shape.ffn[layer]:
            raise ArchError(
                f"layer {i}: architecture asks for {h} heads / FFN {f} "
                f"but the model's layer {layer} has {shape.heads[layer]} heads / FFN {shape.ffn[layer]}"
            )


def count_parameters(shape: BertShape, arch: BertArch | None = None) -> int:
    """Analytic parameter count of sub-network ``arch`` (the whole model when None).

    Used to check ``extract`` and, later, for size accounting without building the module.
    """
    arch = arch or shape.full_arch()
    check_arch_fits(shape, arch)
    h = shape.hidden_size
    total = (shape.vocab_size + shape.max_position_embeddings + shape.type_vocab_size) * h + 2 * h
    for heads, ffn in zip(arch.heads, arch.ffn, strict=True):
        width = heads * shape.head_dim
        total += 3 * (h * width + width) + (width * h + h) + 2 * h  # q, k, v, attention output, LayerNorm
        total += (h * ffn + ffn) + (ffn * h + h) + 2 * h  # FFN in, FFN out, LayerNorm
    if shape.pooling == "cls":
        total += h * h + h  # pooler
    total += h * shape.num_labels + shape.num_labels  # classifier
    return total


def _linear(module: nn.Linear, x: Tensor, out_features: int | None = None, in_features: int | None = None) -> Tensor:
    """Apply ``module`` to ``x``, sliced to its first ``out_features`` rows / ``in_features`` columns.

    The unsliced case calls the module itself so that swapped-in modules (quantized weights,
    observers, torch.export) see a normal call.
    """
    full_out, full_in = module.weight.shape
    out_features = full_out if out_features is None else out_features
    in_features = full_in if in_features is None else in_features
    if out_features == full_out and in_features == full_in:
        return module(x)
    weight = module.weight[:out_features, :in_features]
    bias = None if module.bias is None else module.bias[:out_features]
    return F.linear(x, weight, bias)


class BertEmbeddings(nn.Module):
    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(shape.vocab_size, shape.hidden_size, padding_idx=shape.pad_token_id)
        self.position_embeddings = nn.Embedding(shape.max_position_embeddings, shape.hidden_size)
        self.token_type_embeddings = nn.Embedding(shape.type_vocab_size, shape.hidden_size)
        self.LayerNorm = nn.LayerNorm(shape.hidden_size, eps=shape.layer_norm_eps)
        self.dropout = nn.Dropout(shape.hidden_dropout_prob)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor) -> Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        x = x + self.position_embeddings(positions)[None]
        return self.dropout(self.LayerNorm(x))


class _SelfAttention(nn.Module):
    def __init__(self, hidden: int, width: int) -> None:
        super().__init__()
        self.query = nn.Linear(hidden, width)
        self.key = nn.Linear(hidden, width)
        self.value = nn.Linear(hidden, width)


class _Output(nn.Module):
    def __init__(self, in_features: int, hidden: int, eps: float, dropout: float) -> None:
        super().__init__()
        self.dense = nn.Linear(in_features, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)
        self.dropout = nn.Dropout(dropout)


class _Attention(nn.Module):
    def __init__(self, shape: BertShape, heads: int) -> None:
        super().__init__()
        width = heads * shape.head_dim
        self.self = _SelfAttention(shape.hidden_size, width)
        self.output = _Output(width, shape.hidden_size, shape.layer_norm_eps, shape.hidden_dropout_prob)


class _Intermediate(nn.Module):
    def __init__(self, hidden: int, ffn: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, ffn)


class BertLayer(nn.Module):
    """One transformer layer that can run with fewer heads and FFN neurons than it holds."""

    def __init__(self, shape: BertShape, heads: int, ffn: int) -> None:
        super().__init__()
        self.head_dim = shape.head_dim
        self.num_heads = heads
        self.ffn_size = ffn
        self.attention_dropout = shape.attention_probs_dropout_prob
        self.activation = ACT2FN[shape.hidden_act]
        self.attention = _Attention(shape, heads)
        self.intermediate = _Intermediate(shape.hidden_size, ffn)
        self.output = _Output(ffn, shape.hidden_size, shape.layer_norm_eps, shape.hidden_dropout_prob)

    def attention_context(self, hidden: Tensor, attn_bias: Tensor, heads: int) -> Tensor:
        """The concatenated per-head contexts, before the attention output projection."""
        batch, seq, _ = hidden.shape
        width = heads * self.head_dim
        proj = self.attention.self

        def split(x: Tensor) -> Tensor:
            return x.view(batch, seq, heads, self.head_dim).transpose(1, 2)

        q = split(_linear(proj.query, hidden, out_features=width))
        k = split(_linear(proj.key, hidden, out_features=width))
        v = split(_linear(proj.value, hidden, out_features=width))
        ctx = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_bias, dropout_p=self.attention_dropout if self.training else 0.0
        )
        return ctx.transpose(1, 2).reshape(batch, seq, width)

    def forward(self, hidden: Tensor, attn_bias: Tensor, heads: int | None = None, ffn: int | None = None) -> Tensor:
        heads = self.num_heads if heads is None else heads
        ffn = self.ffn_size if ffn is None else ffn
        ctx = self.attention_context(hidden, attn_bias, heads)
        out = self.attention.output
        attn = out.dropout(_linear(out.dense, ctx, in_features=heads * self.head_dim))
        hidden = out.LayerNorm(attn + hidden)
        inner = self.activation(_linear(self.intermediate.dense, hidden, out_features=ffn))
        out = self.output
        return out.LayerNorm(out.dropout(_linear(out.dense, inner, in_features=ffn)) + hidden)


class BertEncoder(nn.Module):
    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(shape, h, f) for h, f in zip(shape.heads, shape.ffn, strict=True))


class BertPooler(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)

    def forward(self, hidden: Tensor) -> Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


class ElasticBertModel(nn.Module):
    """Embeddings, encoder and pooling; ``forward(..., arch=a)`` runs sub-network ``a`` and returns the
    final hidden states and the pooled sentence vector (see ``POOLINGS``)."""

    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.shape = shape
        self.embeddings = BertEmbeddings(shape)
        self.encoder = BertEncoder(shape)
        self.pooler = BertPooler(shape.hidden_size) if shape.pooling == "cls" else None

    def encode(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        arch: BertArch | None = None,
    ) -> Tensor:
        """Last hidden states of sub-network ``arch`` (the whole model when None)."""
        if arch is not None:
            check_arch_fits(self.shape, arch)
        heads = self.shape.heads if arch is None else arch.heads
        ffn = self.shape.ffn if arch is None else arch.ffn
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        hidden = self.embeddings(input_ids, token_type_ids)
        # Additive bias, the form transformers' BERT uses: masked keys get the dtype's minimum.
        attn_bias = (1.0 - attention_mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
        for index, h, f in zip(self.shape.kept_layers(len(heads)), heads, ffn, strict=True):
            hidden = self.encoder.layer[index](hidden, attn_bias, h, f)
        return hidden

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        arch: BertArch | None = None,
    ) -> tuple[Tensor, Tensor]:
        hidden = self.encode(input_ids, attention_mask, token_type_ids, arch)
        if self.pooler is not None:
            return hidden, self.pooler(hidden)
        if attention_mask is None:
            return hidden, hidden.mean(dim=1)
        weights = attention_mask.to(hidden.dtype)[..., None]
        return hidden, (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class ElasticBertForSequenceClassification(nn.Module):
    """The super-network (uniform shape) or an extracted sub-network (sliced shape); returns logits."""

    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.shape = shape
        self.bert = ElasticBertModel(shape)
        self.dropout = nn.Dropout(shape.hidden_dropout_prob)
        self.classifier = nn.Linear(shape.hidden_size, shape.num_labels)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        arch: BertArch | None = None,
    ) -> Tensor:
        _, pooled = self.bert(input_ids, attention_mask, token_type_ids, arch)
        return self.classifier(self.dropout(pooled))

    def init_head(self, generator: torch.Generator, std: float = 0.02) -> None:
        """Fresh classifier weights, drawn from the given generator (the way BERT initialises linears)."""
        with torch.no_grad():
            self.classifier.weight.normal_(0.0, std, generator=generator)
            self.classifier.bias.zero_()
