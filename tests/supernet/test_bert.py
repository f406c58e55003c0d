"""The elastic BERT against transformers, and sub-network slicing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import BertModel

from supernet.arch import BertArch, BertElasticSpace
from supernet.bert import DEPTH_RULES, BertShape, count_parameters, kept_layers
from supernet.checkpoint import load_model, load_pretrained, save_model
from supernet.errors import ArchError, ConfigError
from supernet.extract import extract


def _inputs(seed: int = 0, batch: int = 3, seq: int = 11) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 30000, (batch, seq), generator=gen)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[1, 7:] = 0  # a padded row
    mask[2, 4:] = 0
    types = torch.zeros(batch, seq, dtype=torch.long)
    types[0, 5:] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def test_full_arch_matches_transformers(tiny_bert_dir: Path) -> None:
    reference = BertModel.from_pretrained(tiny_bert_dir).eval()
    model = load_pretrained(tiny_bert_dir, num_labels=2, pooling="cls").eval()
    inputs = _inputs()
    with torch.no_grad():
        ref = reference(**inputs)
        hidden, pooled = model.bert(**inputs)
        hidden_full_arch, _ = model.bert(**inputs, arch=model.shape.full_arch())
    assert (hidden - ref.last_hidden_state).abs().max().item() <= 1e-5
    assert (pooled - ref.pooler_output).abs().max().item() <= 1e-5
    assert torch.equal(hidden, hidden_full_arch)


def test_subnet_differs_from_full_and_uses_fewer_parameters(tiny_bert_dir: Path) -> None:
    model = load_pretrained(tiny_bert_dir, num_labels=2).eval()
    arch = BertArch(heads=(1, 2), ffn=(16, 32))
    with torch.no_grad():
        full = model(**_inputs())
        sub = model(**_inputs(), arch=arch)
    assert not torch.allclose(full, sub)
    assert count_parameters(model.shape, arch) < count_parameters(model.shape)


def test_analytic_parameter_count_matches_module(tiny_bert_dir: Path) -> None:
    model = load_pretrained(tiny_bert_dir, num_labels=3)
    assert count_parameters(model.shape) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("seed", range(5))
def test_extract_matches_supernet_and_analytic_count(tiny_bert_dir: Path, tmp_path: Path, seed: int) -> None:
    model = load_pretrained(tiny_bert_dir, num_labels=2).eval()
    space = BertElasticSpace.default(3, 4, 64)
    arch = space.sample(np.random.default_rng(seed))
    sub = extract(model, arch).eval()
    inputs = _inputs(seed)
    with torch.no_grad():
        expected = model(**inputs, arch=arch)
        got = sub(**inputs)
    assert (expected - got).abs().max().item() <= 1e-5
    assert sum(p.numel() for p in sub.parameters()) == count_parameters(model.shape, arch)
    assert sub.shape.heads == arch.heads and sub.shape.ffn == arch.ffn

    save_model(sub, tmp_path / "sub")
    del model  # the saved sub-network must load on its own
    reloaded = load_model(tmp_path / "sub").eval()
    with torch.no_grad():
        assert torch.equal(reloaded(**inputs), got)


@pytest.mark.parametrize(
    ("depth", "expected"), [(1, (5,)), (2, (0, 5)), (3, (0, 3, 5)), (4, (0, 2, 3, 5)), (5, (0, 1, 3, 4, 5))]
)
def test_spread_rule_keeps_evenly_spaced_layers_ending_with_the_last(depth: int, expected: tuple[int, ...]) -> None:
    assert kept_layers(6, depth, "spread") == expected
    assert kept_layers(6, depth, "first") == tuple(range(depth))


@pytest.mark.parametrize("num_layers", range(1, 25))
def test_every_rule_keeps_distinct_increasing_layers_and_all_at_full_depth(num_layers: int) -> None:
    for rule in DEPTH_RULES:
        assert kept_layers(num_layers, num_layers, rule) == tuple(range(num_layers))
        for depth in range(1, num_layers + 1):
            layers = kept_layers(num_layers, depth, rule)
            assert len(layers) == depth and list(layers) == sorted(set(layers))
            assert layers[0] >= 0 and layers[-1] < num_layers
            if rule == "spread":
                assert layers[-1] == num_layers - 1 and (depth == 1 or layers[0] == 0)
                gaps = np.diff(layers)
                assert depth < 2 or gaps.max() - gaps.min() <= 1  # as even as whole layers allow


def test_unknown_depth_rule_and_depth_out_of_range_are_refused(tiny_bert_dir: Path) -> None:
    with pytest.raises(ConfigError, match="unknown depth rule 'last'"):
        load_pretrained(tiny_bert_dir, num_labels=2, depth_rule="last")
    with pytest.raises(ArchError, match="keeps 7 layers"):
        kept_layers(6, 7, "spread")


def test_spread_subnetwork_runs_and_extracts_the_spread_layers(tiny_bert_dir: Path, tmp_path: Path) -> None:
    spread = load_pretrained(tiny_bert_dir, num_labels=2, depth_rule="spread").eval()
    first = load_pretrained(tiny_bert_dir, num_labels=2).eval()
    arch = BertArch(heads=(2, 3), ffn=(32, 48))  # layers 0 and 2 of 3 under "spread"
    inputs = _inputs(1)
    sub = extract(spread, arch).eval()
    layer2 = spread.bert.encoder.layer[2].attention.self.query.weight[: 3 * spread.shape.head_dim]
    assert torch.equal(sub.bert.encoder.layer[1].attention.self.query.weight, layer2)
    with torch.no_grad():
        expected = spread(**inputs, arch=arch)
        assert (expected - sub(**inputs)).abs().max().item() <= 1e-5
        assert (expected - first(**inputs, arch=arch)).abs().max().item() > 1e-3  # another sub-network
        # The full architecture is the same network under either rule.
        assert torch.equal(spread(**inputs), first(**inputs))
    assert sum(p.numel() for p in sub.parameters()) == count_parameters(spread.shape, arch)
    save_model(sub, tmp_path / "sub")
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "sub").eval()(**inputs), sub(**inputs))


def test_a_shape_saved_before_depth_rules_reads_as_first(tiny_bert_dir: Path) -> None:
    data = load_pretrained(tiny_bert_dir, num_labels=2).shape.to_dict()
    del data["depth_rule"]
    assert BertShape.from_dict(data).depth_rule == "first"


def test_extract_owns_its_weights(tiny_bert_dir: Path) -> None:
    model = load_pretrained(tiny_bert_dir, num_labels=2)
    sub = extract(model, BertArch(heads=(2,), ffn=(32,)))
    with torch.no_grad():
        sub.bert.embeddings.word_embeddings.weight.zero_()
    assert model.bert.embeddings.word_embeddings.weight.abs().sum() > 0


def test_arch_larger_than_model_is_refused(tiny_bert_dir: Path) -> None:
    model = load_pretrained(tiny_bert_dir, num_labels=2)
    with pytest.raises(ArchError, match="layer 0"):
        model(**_inputs(), arch=BertArch(heads=(5,), ffn=(64,)))
    with pytest.raises(ArchError, match="keeps 4 layers"):
        extract(model, BertArch(heads=(4,) * 4, ffn=(64,) * 4))


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_parameter_count_and_extract_for_both_poolings(tiny_bert_dir: Path, pooling: str) -> None:
    model = load_pretrained(tiny_bert_dir, num_labels=2, pooling=pooling).eval()
    assert count_parameters(model.shape) == sum(p.numel() for p in model.parameters())
    assert (model.bert.pooler is None) == (pooling == "mean")
    arch = BertArch(heads=(2, 1), ffn=(32, 16))
    with torch.no_grad():
        assert (model(**_inputs(), arch=arch) - extract(model, arch)(**_inputs())).abs().max() <= 1e-5


def test_auto_pooling_keeps_a_trained_classifier_head_and_otherwise_means(tmp_path: Path) -> None:
    from tests.conftest import save_tiny_bert

    assert load_pretrained(save_tiny_bert(tmp_path / "bare"), num_labels=2).shape.pooling == "mean"
    clf = save_tiny_bert(tmp_path / "clf", classifier_labels=2)
    assert load_pretrained(clf, num_labels=2).shape.pooling == "cls"
    assert load_pretrained(clf, num_labels=2, reinit_classifier=True).shape.pooling == "mean"


def test_mean_pooling_ignores_padding(tiny_bert_dir: Path) -> None:
    model = load_pretrained(tiny_bert_dir, num_labels=2, pooling="mean").eval()
    ids = torch.randint(1000, 30000, (1, 6))
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 6), torch.zeros(1, 4)], dim=1).long()
    with torch.no_grad():
        alone = model(ids)
        with_padding = model(padded, mask)
    assert (alone - with_padding).abs().max() <= 1e-5
