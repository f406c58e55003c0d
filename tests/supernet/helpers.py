"""Small builders shared by the supernet tests."""

from __future__ import annotations

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from supernet.checkpoint import default_checkpoint_dir
from supernet.data import TextClassificationData, split_stratified

_POSITIVE = [
    "a gripping, funny and warm film",
    "wonderful acting and a clever script",
    "a delight from start to end",
    "moving, smart and beautifully shot",
    "the best comedy of the year",
    "charming and full of heart",
]
_NEGATIVE = [
    "a dull, lifeless mess",
    "boring plot and wooden acting",
    "a tedious waste of two hours",
    "clumsy, loud and empty",
    "the worst sequel so far",
    "flat jokes and no story",
]


def toy_sentiment(n_per_class: int = 40, seed: int = 0) -> TextClassificationData:
    """A small two-class text dataset with real words, so the real tokenizer gives real ids."""
    texts, labels = [], []
    for i in range(n_per_class):
        texts.append(f"{_POSITIVE[i % len(_POSITIVE)]} #{i}")
        labels.append(1)
        texts.append(f"{_NEGATIVE[i % len(_NEGATIVE)]} #{i}")
        labels.append(0)
    return split_stratified(texts, labels, ("negative", "positive"), seed=seed)


def real_tokenizer() -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(default_checkpoint_dir())
