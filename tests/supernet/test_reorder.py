"""Importance reordering keeps the full network's function and puts important units first."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from supernet.checkpoint import load_pretrained
from supernet.data import make_batches
from supernet.reorder import Importance, compute_importance, permute_layer, reorder_by_importance
from tests.supernet.helpers import real_tokenizer, toy_sentiment


@pytest.mark.parametrize("criterion", ["taylor", "magnitude"])
def test_reordering_keeps_the_full_function(tiny_bert_dir: Path, criterion: str) -> None:
    model = load_pretrained(tiny_bert_dir, num_labels=2).eval()
    data, tok = toy_sentiment(), real_tokenizer()
    batch = next(make_batches(data.validation, tok, batch_size=8, max_length=32))
    inputs = (batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    before_weights = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        before = model(*inputs)
    scores = compute_importance(model, make_batches(data.train, tok, batch_size=8, max_length=32), criterion=criterion)
    # Scoring alone changes nothing.
    assert all(torch.equal(before_weights[k], v) for k, v in model.state_dict().items())
    reorder_by_importance(model, scores)
    with torch.no_grad():
        after = model(*inputs)
    assert (before - after).abs().max().item() <= 1e-5
    # Something really moved (random weights have distinct scores).
    assert not torch.equal(
        before_weights["bert.encoder.layer.0.intermediate.dense.weight"],
        model.state_dict()["bert.encoder.layer.0.intermediate.dense.weight"],
    )
    # Re-scoring after the permutation gives scores sorted in descending order.
    rescored = compute_importance(
        model, make_batches(data.train, tok, batch_size=8, max_length=32), criterion=criterion
    )
    for heads, ffn in zip(rescored.heads, rescored.ffn, strict=True):
        assert torch.all(heads[:-1] >= heads[1:] - 1e-9)
        assert torch.all(ffn[:-1] >= ffn[1:] - 1e-9)


def test_permutation_moves_the_named_units_first(tiny_bert_dir: Path) -> None:
    model = load_pretrained(tiny_bert_dir, num_labels=2)
    layer = model.bert.encoder.layer[0]
    q_head2 = layer.attention.self.query.weight[16:24].clone()  # head 2 of 4, head_dim 8
    ffn_unit5 = layer.intermediate.dense.weight[5].clone()
    permute_layer(
        layer,
        torch.tensor([2, 0, 1, 3]),
        torch.cat([torch.tensor([5]), torch.arange(5), torch.arange(6, 64)]),
    )
    assert torch.equal(layer.attention.self.query.weight[:8], q_head2)
    assert torch.equal(layer.intermediate.dense.weight[0], ffn_unit5)


def test_reorder_with_handmade_scores_keeps_the_top_units(tiny_bert_dir: Path) -> None:
    model = load_pretrained(tiny_bert_dir, num_labels=2)
    scores = Importance(
        heads=tuple(torch.tensor([0.0, 3.0, 1.0, 2.0]) for _ in range(3)),
        ffn=tuple(torch.arange(64, dtype=torch.float64) for _ in range(3)),
    )
    value_head1 = model.bert.encoder.layer[1].attention.self.value.weight[8:16].clone()
    last_neuron = model.bert.encoder.layer[1].intermediate.dense.bias[63].clone()
    reorder_by_importance(model, scores)
    assert torch.equal(model.bert.encoder.layer[1].attention.self.value.weight[:8], value_head1)
    assert torch.equal(model.bert.encoder.layer[1].intermediate.dense.bias[0], last_neuron)
