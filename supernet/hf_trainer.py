"""InstaTune as a drop-in for transformers' ``Trainer``.

Users who already fine-tune with ``Trainer`` swap the class and keep their arguments, callbacks,
logging and checkpointing. The step is the same ``sandwich_step`` elastiq's own loop runs; the
sub-networks of each step are derived from ``(args.seed, global_step)``, so a run resumed with
``trainer.train(resume_from_checkpoint=...)`` samples what an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase, Trainer

from supernet.arch import BertElasticSpace
from supernet.bert import ElasticBertForSequenceClassification
from supernet.data import TextSplit
from supernet.instatune import InstaTuneConfig, sandwich_step, step_archs, step_rng


class TextSplitDataset(Dataset[dict[str, Any]]):
    """A ``TextSplit`` as a map-style dataset of raw examples; tokenisation happens in the collator."""

    def __init__(self, split: TextSplit) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"text": self.split.texts[index], "label": self.split.labels[index]}


def text_collator(
    tokenizer: PreTrainedTokenizerBase, max_length: int
) -> Callable[[Sequence[dict[str, Any]]], dict[str, torch.Tensor]]:
    """Tokenise a list of raw examples with dynamic padding (pad to the longest in the batch)."""

    def collate(examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        encoded = tokenizer(
            [e["text"] for e in examples],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        batch = {k: encoded[k] for k in ("input_ids", "attention_mask")}
        batch["token_type_ids"] = encoded.get("token_type_ids", torch.zeros_like(encoded["input_ids"]))
        batch["labels"] = torch.tensor([e["label"] for e in examples], dtype=torch.long)
        return batch

    return collate


class InstaTuneTrainer(Trainer):
    """``Trainer`` whose loss is InstaTune's sandwich loss over ``space``.

    Pass ``remove_unused_columns=False`` in the ``TrainingArguments`` when the dataset yields raw
    text (as ``TextSplitDataset`` does), because the collator, not the model, consumes those columns.
    """

    def __init__(
        self,
        *args: Any,
        space: BertElasticSpace,
        instatune: InstaTuneConfig | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.space = space
        self.instatune = instatune or InstaTuneConfig()

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        unwrapped = self.accelerator.unwrap_model(model) if hasattr(self, "accelerator") else model
        if not isinstance(unwrapped, ElasticBertForSequenceClassification):
            raise TypeError("InstaTuneTrainer trains an elastiq ElasticBertForSequenceClassification")
        if not model.training:  # evaluation: the largest sub-network with the plain task loss
            logits = model(inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"])
            loss = torch.nn.functional.cross_entropy(logits, inputs["labels"])
            return (loss, {"logits": logits}) if return_outputs else loss
        archs = step_archs(self.space, self.instatune, step_rng(self.args.seed, self.state.global_step))
        out = sandwich_step(unwrapped, inputs, archs, self.instatune, backward=False)
        return (out.loss, {"logits": out.teacher_logits}) if return_outputs else out.loss
