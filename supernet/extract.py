"""Cut a standalone sub-network out of a super-network.

The result is a real, smaller ``nn.Module`` (same class, sliced shape) that owns copies of the
first ``heads[i]`` heads and ``ffn[i]`` neurons of each kept layer, so it can be quantized, exported
or saved without the super-network it came from.
"""

from __future__ import annotations

import torch

from supernet.arch import BertArch
from supernet.bert import ElasticBertForSequenceClassification


def _slice_for(rest: str, value: torch.Tensor, heads: int, ffn: int, head_dim: int) -> torch.Tensor:
    """The part of a layer's parameter ``rest`` (its name within the layer) that ``heads`` heads and
    ``ffn`` FFN neurons keep."""
    width = heads * head_dim
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
    position = {layer: i for i, layer in enumerate(model.shape.kept_layers(arch.depth))}
    state = {}
    for key, value in model.state_dict().items():
        parts = key.split(".")
        if parts[:3] != ["bert", "encoder", "layer"]:
            state[key] = value.clone()
            continue
        i = position.get(int(parts[3]))
        if i is None:  # a dropped layer
            continue
        rest = ".".join(parts[4:])
        sliced = _slice_for(rest, value, arch.heads[i], arch.ffn[i], shape.head_dim)
        state[f"bert.encoder.layer.{i}.{rest}"] = sliced.clone()
    sub.load_state_dict(state, strict=True)
    sub.train(model.training)
    return sub.to(next(model.parameters()).device)
