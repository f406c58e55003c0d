"""Accuracy and loss of any sub-network on any split, batched, with a progress bar."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from supernet.arch import BertArch
from supernet.bert import ElasticBertForSequenceClassification
from supernet.data import TextSplit, make_batches, num_batches


@dataclass(frozen=True)
class EvalResult:
    accuracy: float
    loss: float
    num_examples: int

    def to_dict(self) -> dict[str, float | int]:
        return {"accuracy": self.accuracy, "loss": self.loss, "num_examples": self.num_examples}


@torch.inference_mode()
def evaluate(
    model: torch.nn.Module,
    split: TextSplit,
    tokenizer: PreTrainedTokenizerBase,
    *,
    arch: BertArch | None = None,
    batch_size: int = 64,
    max_length: int = 128,
    progress: bool = False,
    desc: str = "evaluate",
) -> EvalResult:
    """Evaluate ``model`` (a super-network with ``arch``, or any classifier taking input_ids,
    attention_mask, token_type_ids when ``arch`` is None) in eval mode; the mode is restored after."""
    was_training = model.training
    model.eval()
    correct, loss_sum, seen = 0, 0.0, 0
    device = next(model.parameters()).device
    # order does not change accuracy or mean loss, and length-sorted batches carry almost no padding
    batches = make_batches(split, tokenizer, batch_size=batch_size, max_length=max_length, sort_by_length=True)
    try:
        for batch in tqdm(batches, total=num_batches(split, batch_size), desc=desc, disable=not progress, leave=False):
            inputs = [batch[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids")]
            labels = batch["labels"].to(device)
            if arch is None:
                logits = model(*inputs)
            else:
                if not isinstance(model, ElasticBertForSequenceClassification):
                    raise TypeError("arch is only meaningful for an elastic super-network")
                logits = model(*inputs, arch=arch)
            loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum").item()
            correct += int((logits.argmax(-1) == labels).sum())
            seen += len(labels)
    finally:
        model.train(was_training)
    if seen == 0:
        raise ValueError("cannot evaluate on an empty split")
    return EvalResult(accuracy=correct / seen, loss=loss_sum / seen, num_examples=seen)
