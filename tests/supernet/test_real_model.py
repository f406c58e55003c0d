"""The real embedded default: all-MiniLM-L6-v2 and Rotten Tomatoes (slow: loads the real weights)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import BertModel

from supernet.arch import BertElasticSpace
from supernet.bert import count_parameters
from supernet.checkpoint import load_pretrained, load_tokenizer
from supernet.data import load_rotten_tomatoes, make_batches
from supernet.evaluate import evaluate
from supernet.extract import extract
from supernet.reorder import compute_importance, reorder_by_importance

pytestmark = pytest.mark.slow


def test_real_minilm_matches_transformers_and_extract_matches(real_checkpoint_dir: Path) -> None:
    tokenizer = load_tokenizer(real_checkpoint_dir)
    data = load_rotten_tomatoes(seed=0)
    batch = next(make_batches(data.test, tokenizer, batch_size=16, max_length=128))
    assert (batch["input_ids"] == tokenizer.unk_token_id).float().mean() < 0.05  # real ids, not all [UNK]
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}

    reference = BertModel.from_pretrained(real_checkpoint_dir).eval()
    model = load_pretrained(real_checkpoint_dir, num_labels=2, pooling="cls").eval()
    assert count_parameters(model.shape) == sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        ref = reference(**inputs)
        hidden, pooled = model.bert(**inputs)
    assert (hidden - ref.last_hidden_state).abs().max().item() <= 1e-5
    assert (pooled - ref.pooler_output).abs().max().item() <= 1e-5

    scores = compute_importance(model, make_batches(data.train, tokenizer, batch_size=16, max_length=64), max_batches=2)
    reorder_by_importance(model, scores)
    with torch.no_grad():
        assert (model.bert(**inputs)[0] - ref.last_hidden_state).abs().max().item() <= 1e-4

    space = BertElasticSpace.default(6, 12, 1536)
    arch = space.sample(np.random.default_rng(0))
    sub = extract(model, arch).eval()
    with torch.no_grad():
        assert (model(**inputs, arch=arch) - sub(**inputs)).abs().max().item() <= 1e-5
    assert sum(p.numel() for p in sub.parameters()) == count_parameters(model.shape, arch)


def test_untrained_classifier_is_at_chance_level(real_checkpoint_dir: Path) -> None:
    """A sanity floor for the benchmark: before fine-tuning, accuracy is no better than the majority class."""
    tokenizer = load_tokenizer(real_checkpoint_dir)
    data = load_rotten_tomatoes(seed=0)
    model = load_pretrained(real_checkpoint_dir, num_labels=2)
    majority = max(np.bincount(data.test.labels)) / len(data.test)
    assert evaluate(model, data.test, tokenizer).accuracy <= majority + 0.05
