"""Apply a quantization policy to a sub-network: a really quantized copy, the input left untouched.

Everything that can be checked without quantizing is checked first (unknown layers, layers a
precision cannot take, precisions this machine cannot run, missing calibration data), so that a bad
policy fails in milliseconds with one line naming the layer and the fix.

Order: the graph-level precision (int8_static, PT2E) runs first on the float copy, then the
module-level ones (bf16, torchao int8/int4). The other order fails inside torchao's
X86InductorQuantizer (see ``quant.static``); this one mixes any precisions per layer. The result is
in eval mode and keeps the call ``model(input_ids, attention_mask, token_type_ids)``; with
int8_static anywhere it is an inference-only ``torch.fx.GraphModule`` (no ``arch`` argument, since
an extracted sub-network needs none).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from quant.errors import PolicyError, PrecisionError
from quant.policy import QuantPolicy, model_shape
from quant.registry import Calibration, Precision
from quant.targets import linear_shapes


def _model_device(model: nn.Module) -> torch.device:
    first = next(iter(model.parameters()), None)
    return torch.device("cpu") if first is None else first.device


def plan(model: nn.Module, policy: QuantPolicy) -> list[tuple[Precision, list[str]]]:
    """The (precision, layers) groups ``apply_policy`` will run, in order; raises on any problem it can see."""
    shapes = linear_shapes(model_shape(model))
    unknown = [fqn for fqn in policy if fqn not in shapes]
    if unknown:
        raise PolicyError(
            f"the policy names {len(unknown)} layer(s) the model does not have as a target (e.g. {unknown[:3]}); "
            "use names from quant.policy.policy_targets(model)"
        )
    groups: dict[str, list[str]] = {}
    for fqn in shapes:  # forward order, so the result does not depend on the policy's key order
        name = policy.precision_for(fqn)
        if name != "fp32":
            groups.setdefault(name, []).append(fqn)
    device = _model_device(model)
    steps = []
    for name, fqns in groups.items():
        precision = policy.build(name)
        support = precision.supported(device)
        if not support:
            raise PrecisionError(f"{name} cannot run here: {support.reason}")
        for fqn in fqns:
            problem = precision.layer_problem(*shapes[fqn])
            if problem:
                raise PrecisionError(f"{fqn} cannot take {name}: {problem}; give it another precision")
        steps.append((precision, fqns))
    steps.sort(key=lambda step: not step[0].graph_level)  # stable: graph-level first
    return steps


def apply_policy(model: nn.Module, policy: QuantPolicy, calibration_batches: Calibration | None = None) -> nn.Module:
    """A quantized copy of ``model`` (an extracted sub-network) following ``policy``.

    ``calibration_batches`` (tokenizer-style mappings with input_ids, attention_mask, token_type_ids)
    are needed when the policy uses int8_static, and ignored otherwise.
    """
    steps = plan(model, policy)
    if any(p.graph_level for p, _ in steps) and calibration_batches is None:
        raise PrecisionError("the policy uses int8_static, which needs calibration_batches; pass a few task batches")
    quantized = copy.deepcopy(model).eval()
    with torch.no_grad():
        for precision, fqns in steps:
            quantized = precision.apply(quantized, fqns, calibration_batches)
    return quantized
