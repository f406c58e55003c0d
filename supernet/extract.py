"""Cut a standalone sub-network out of a super-network.

The result is a real, smaller ``nn.Module`` (same class, sliced shape) that owns copies of the
first ``heads[i]`` heads and ``ffn[i]`` neurons of each kept layer, so it can be quantized, exported
or saved without the super-network it came from.
"""

from __future__ import annotations

import torch

from supernet.arch import BertArch
from supernet.bert import ElasticBertForSequenceClassification


def _slice_for(key: str, value: torch.Tensor, arch: BertArch, head_dim: int) -> torch.Tensor:
    """The part of super-network parameter ``key`` that sub-network ``arch`` keeps."""
    parts = key.split(".")
    if parts[:3] != ["bert", "encoder", "layer"]:
        return value
    layer = int(parts[3])
    width, ffn = arch.heads[layer] * head_dim, arch.ffn[layer]
    rest = ".".join(parts[4:])
    if rest.startswith("attention.self."):  # query/key/value: output rows are the heads
        return value[:width]
    if rest == "attention.output.dense.weight":  # input columns are the heads
        return value[:, :width]
    if rest.startswith("intermediate.dense."):  # output rows are the FFN neurons
        return value[:ffn]
    if rest == "output.dense.weight":  # input columns are the FFN neurons
        return value[:, :ffn]
    return value


def extract(model: ElasticBertForSequenceClassification, arch: BertArch) -> ElasticBertForSequenceClassification:
    """A standalone copy of sub-network ``arch``: same outputs as ``model(..., arch=arch)``."""
    shape = model.shape.sliced(arch)
    sub = ElasticBertForSequenceClassification(shape)
    state = {}
    for key, value in model.state_dict().items():
        parts = key.split(".")
        if parts[:3] == ["bert", "encoder", "layer"] and int(parts[3]) >= arch.depth:
            continue
        state[key] = _slice_for(key, value, arch, shape.head_dim).clone()
    sub.load_state_dict(state, strict=True)
    sub.train(model.training)
    return sub.to(next(model.parameters()).device)
