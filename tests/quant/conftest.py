"""Tiny elastiq sub-networks to quantize, built the way users get them: HF checkpoint -> load -> extract."""

from __future__ import annotations

import pytest
import torch

from supernet.arch import BertArch
from supernet.bert import ElasticBertForSequenceClassification
from supernet.checkpoint import load_pretrained
from supernet.extract import extract
from tests.conftest import save_tiny_bert

#: Kept widths are multiples of 32 so that every encoder Linear can also take int4 (group size 32,
#: out_features a multiple of 16); the 2-label classifier cannot, which the tests rely on.
TINY_ARCH = BertArch(heads=(4, 4), ffn=(64, 32))


@pytest.fixture(scope="package")
def tiny_subnet(tmp_path_factory: pytest.TempPathFactory) -> ElasticBertForSequenceClassification:
    """A 2-layer sub-network of the tiny random BERT, with a classifier drawn at std 1.0.

    BERT's usual std 0.02 head makes the logits almost constant, so that quantization errors in the
    encoder would hardly show in them; a unit-std head makes the logits a sensitive probe.
    """
    folder = save_tiny_bert(tmp_path_factory.mktemp("quant") / "tiny", classifier_labels=2)
    model = load_pretrained(folder, num_labels=2).eval()
    model.init_head(torch.Generator().manual_seed(1), std=1.0)
    return extract(model, TINY_ARCH).eval()


def make_batch(seed: int = 0, batch: int = 8, seq: int = 24) -> dict[str, torch.Tensor]:
    """Random token ids with a padded row and a second segment, as the tokenizer would give them."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 30000, (batch, seq), generator=gen)
    mask = torch.ones_like(ids)
    mask[-1, seq // 2 :] = 0
    types = torch.zeros_like(ids)
    types[0, seq // 3 :] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])


@pytest.fixture(scope="package")
def calibration() -> list[dict[str, torch.Tensor]]:
    return [make_batch(seed) for seed in range(10, 13)]
