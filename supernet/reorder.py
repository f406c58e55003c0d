"""Importance reordering: move the most important heads and FFN neurons to the front.

Sub-networks keep the *first* k heads / neurons of a layer, so before fine-tuning we score every
head and neuron on task data and permute the weights so that "first k" means "k most important".
A permutation of heads (or neurons) inside a layer does not change the function the full network
computes, which the tests check.

Scores are first-order Taylor estimates of the loss change when a unit is removed (Michel et al.
2019; DynaBERT): ``|sum(activation * d loss / d activation)|`` over the unit's activations,
accumulated per batch. The ``"magnitude"`` criterion instead needs no labels: the mean norm of the
unit's contribution to the residual stream.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from supernet.bert import BertLayer, ElasticBertForSequenceClassification
from supernet.errors import ConfigError

Criterion = Literal["taylor", "magnitude"]


@dataclass(frozen=True)
class Importance:
    """Per-layer scores: ``heads[i]`` has one score per head of layer i, ``ffn[i]`` one per neuron."""

    heads: tuple[Tensor, ...]
    ffn: tuple[Tensor, ...]


class _Capture:
    """Forward pre-hooks that keep the inputs of the output projections (per-head contexts and FFN
    activations) with their gradients."""

    def __init__(self, layers: list[BertLayer]) -> None:
        self.context: dict[int, Tensor] = {}
        self.inner: dict[int, Tensor] = {}
        self.handles = []
        for i, layer in enumerate(layers):
            self.handles.append(layer.attention.output.dense.register_forward_pre_hook(self._keeper(self.context, i)))
            self.handles.append(layer.output.dense.register_forward_pre_hook(self._keeper(self.inner, i)))

    @staticmethod
    def _keeper(store: dict[int, Tensor], index: int):  # type: ignore[no-untyped-def]
        def hook(_module: torch.nn.Module, args: tuple[Tensor, ...]) -> None:
            if args[0].requires_grad:
                args[0].retain_grad()
            store[index] = args[0]

        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def compute_importance(
    model: ElasticBertForSequenceClassification,
    batches: Iterable[Mapping[str, Tensor]],
    *,
    criterion: Criterion = "taylor",
    max_batches: int | None = None,
) -> Importance:
    """Score heads and FFN neurons of every layer on ``batches`` (dicts with input_ids, attention_mask,
    token_type_ids and labels). The model's weights are not changed; its gradients are cleared."""
    if criterion not in ("taylor", "magnitude"):
        raise ConfigError(f"unknown importance criterion {criterion!r}; use 'taylor' or 'magnitude'")
    layers: list[BertLayer] = list(model.bert.encoder.layer)  # type: ignore[arg-type]
    head_dim = model.shape.head_dim
    head_scores = [torch.zeros(layer.num_heads, dtype=torch.float64) for layer in layers]
    ffn_scores = [torch.zeros(layer.ffn_size, dtype=torch.float64) for layer in layers]
    was_training = model.training
    model.eval()  # no dropout: scores should not depend on the dropout draw
    capture = _Capture(layers)
    seen = 0
    try:
        for batch in batches:
            if max_batches is not None and seen >= max_batches:
                break
            seen += 1
            mask = batch["attention_mask"].to(torch.float32)[..., None]  # ignore padded positions
            with torch.enable_grad():
                logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
                if criterion == "taylor":
                    F.cross_entropy(logits, batch["labels"]).backward()
            for i, layer in enumerate(layers):
                ctx, inner = capture.context[i], capture.inner[i]
                if criterion == "taylor":
                    assert ctx.grad is not None and inner.grad is not None
                    per_head = (ctx * ctx.grad * mask).sum(dim=(0, 1)).view(layer.num_heads, head_dim).sum(1)
                    head_scores[i] += per_head.abs().double().detach()
                    ffn_scores[i] += (inner * inner.grad * mask).sum(dim=(0, 1)).abs().double().detach()
                else:
                    head_scores[i] += _head_contribution(layer, ctx.detach(), mask).double()
                    weight_norm = layer.output.dense.weight.detach().norm(dim=0)
                    ffn_scores[i] += ((inner.detach().abs() * mask).sum(dim=(0, 1)) * weight_norm).double()
            model.zero_grad(set_to_none=True)
    finally:
        capture.remove()
        model.train(was_training)
    if seen == 0:
        raise ConfigError("importance scoring got no batches; give it task data")
    return Importance(heads=tuple(head_scores), ffn=tuple(ffn_scores))


def _head_contribution(layer: BertLayer, ctx: Tensor, mask: Tensor) -> Tensor:
    """Sum over positions of the norm of each head's share of the attention output projection."""
    batch, seq, _ = ctx.shape
    weight = layer.attention.output.dense.weight.detach()  # (hidden, heads * head_dim)
    per_head_ctx = ctx.view(batch, seq, layer.num_heads, layer.head_dim)
    per_head_w = weight.view(weight.shape[0], layer.num_heads, layer.head_dim)
    out = torch.einsum("bthd,ohd->btho", per_head_ctx, per_head_w)
    return (out.norm(dim=-1) * mask).sum(dim=(0, 1))


@torch.no_grad()
def permute_layer(layer: BertLayer, head_order: Tensor, ffn_order: Tensor) -> None:
    """Reorder the heads and FFN neurons of one layer in place; the layer's function is unchanged."""
    d, heads = layer.head_dim, layer.num_heads
    rows = (head_order[:, None] * d + torch.arange(d)[None]).reshape(-1)
    for proj in (layer.attention.self.query, layer.attention.self.key, layer.attention.self.value):
        proj.weight.copy_(proj.weight[rows])
        proj.bias.copy_(proj.bias[rows])
    out = layer.attention.output.dense
    out.weight.copy_(out.weight[:, rows])
    assert rows.numel() == heads * d
    inter, ffn_out = layer.intermediate.dense, layer.output.dense
    inter.weight.copy_(inter.weight[ffn_order])
    inter.bias.copy_(inter.bias[ffn_order])
    ffn_out.weight.copy_(ffn_out.weight[:, ffn_order])


def reorder_by_importance(model: ElasticBertForSequenceClassification, importance: Importance) -> None:
    """Permute every layer so that its most important heads and neurons come first (stable order)."""
    for layer, head_score, ffn_score in zip(model.bert.encoder.layer, importance.heads, importance.ffn, strict=True):
        head_order = torch.argsort(head_score, descending=True, stable=True)
        ffn_order = torch.argsort(ffn_score, descending=True, stable=True)
        permute_layer(layer, head_order, ffn_order)  # type: ignore[arg-type]
