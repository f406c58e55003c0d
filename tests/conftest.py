"""Shared fixtures: tiny randomly-initialised BERT checkpoints of the real family, saved the HF way."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertModel

from supernet.checkpoint import default_checkpoint_dir

TINY = dict(
    vocab_size=30522,  # the real vocabulary, so that the real (fast, local) tokenizer works with it
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=128,
)


def save_tiny_bert(folder: Path, *, seed: int = 0, classifier_labels: int | None = None, **overrides: object) -> Path:
    """Save a random tiny BertModel (or BertForSequenceClassification) as a checkpoint folder."""
    torch.manual_seed(seed)
    config = BertConfig(**{**TINY, **overrides})
    if classifier_labels is None:
        model: torch.nn.Module = BertModel(config)
    else:
        config.num_labels = classifier_labels
        model = BertForSequenceClassification(config)
    model.save_pretrained(folder)  # type: ignore[operator]
    return folder


@pytest.fixture
def tiny_bert_dir(tmp_path: Path) -> Path:
    return save_tiny_bert(tmp_path / "tiny-bert")


@pytest.fixture(scope="session")
def real_checkpoint_dir() -> Path:
    return default_checkpoint_dir()
