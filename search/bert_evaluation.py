"""Real evaluation of joint (architecture, policy) candidates of a trained BERT super-network.

``BertEvaluator`` is the ``evaluate`` function ``search.engine.run_search`` calls for a population:
each candidate is extracted from the super-network (shared weights, no retraining), quantized with its
policy as it would be deployed (``quant.apply_policy``; int8_static calibrated on task batches), and
scored on a fixed validation subset. Latency comes from the profile's *validated* latency model (the
lookup table with its calibration, whose MAPE and Kendall tau against real measurements are stored
with it); the final front is re-measured for real by the pipeline. Size is the exact serialized size
of the quantized model; MACs are analytic.

``exact_metrics`` gives the metrics that need no model at all (latency estimate, analytic size, MACs)
for whole populations, so the predictor-in-the-loop search predicts only accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from transformers import PreTrainedTokenizerBase

from hardware_profiles.latency_model import LatencyModel
from predictors.features import macs_for
from quant.apply import apply_policy
from quant.policy import QuantPolicy
from quant.size import estimate_size_bytes, serialized_size_bytes
from search.bert_space import BertJointSpace
from supernet.arch import BertArch
from supernet.bert import ElasticBertForSequenceClassification
from supernet.data import TextSplit
from supernet.evaluate import evaluate
from supernet.extract import extract

#: Metric names a BERT search reports (objectives and constraints may use any of them).
METRICS = ("accuracy", "latency_ms", "size_mb", "macs_m")


@dataclass
class BertEvaluator:
    """Evaluate rows of ``space`` for real; see the module docstring for what each metric is."""

    model: ElasticBertForSequenceClassification
    space: BertJointSpace
    tokenizer: PreTrainedTokenizerBase
    split: TextSplit
    latency: LatencyModel
    calibration: Sequence[Mapping[str, Any]]
    sequence_length: int = 128
    batch_size: int = 64
    max_length: int = 128

    def __call__(self, X: np.ndarray) -> list[dict[str, float]]:
        return [self.evaluate_candidate(*self.space.decode(row)) for row in self.space.canonical(X)]

    def evaluate_candidate(self, arch: BertArch, policy: QuantPolicy) -> dict[str, float]:
        """The metrics of one (arch, policy), also for candidates outside the space (baselines)."""
        quantized = apply_policy(extract(self.model, arch), policy, list(self.calibration))
        result = evaluate(quantized, self.split, self.tokenizer, batch_size=self.batch_size, max_length=self.max_length)
        return {
            "accuracy": result.accuracy,
            "latency_ms": self.latency.predict_ms(self.model.shape, arch, policy),
            "size_mb": serialized_size_bytes(quantized) / 1e6,
            "macs_m": macs_for(self.model.shape, arch, self.sequence_length) / 1e6,
        }

    def exact_metrics(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """Latency estimate, analytic size (within 0.3% of serialized, see ``quant.size``) and MACs."""
        shape = self.model.shape
        decoded = [self.space.decode(row) for row in self.space.canonical(X)]
        return {
            "latency_ms": np.array([self.latency.predict_ms(shape, a, p) for a, p in decoded]),
            "size_mb": np.array([estimate_size_bytes(shape, a, p) / 1e6 for a, p in decoded]),
            "macs_m": np.array([macs_for(shape, a, self.sequence_length) / 1e6 for a, _ in decoded]),
        }
