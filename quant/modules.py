"""Finding and replacing the Linear layers a policy names, in eager models and in exported graphs.

Module-level precisions act on ``nn.Linear`` modules. In an eager model they are there already. In a
model that a graph-level precision (PT2E static int8) has turned into a ``torch.fx.GraphModule``,
a Linear has become a call of ``aten.linear`` on parameters held by a plain container module; torchao's
tensor subclasses cannot be swapped into such a call (``aten.linear`` decomposes into ``aten.t`` +
``aten.addmm``, which torchao's ``Int8Tensor`` does not implement). ``linear_at`` therefore turns such a
call back into a real ``nn.Linear`` holding the same parameters and a ``call_module`` node, so every
module-level precision works the same way on both kinds of model, eagerly and under ``torch.compile``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from quant.errors import PolicyError


class Bf16Linear(nn.Linear):
    """A Linear whose weight is stored in bfloat16 and whose matmul runs in bfloat16.

    Input and output stay fp32, so the layer drops into an fp32 model one layer at a time (torchao has
    no per-layer bf16 config; ``model.to(bfloat16)`` converts everything). The bias stays fp32 and is
    added after the bf16 matmul, as every other precision here keeps biases in fp32.
    """

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Bf16Linear:
        new = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        new.weight = nn.Parameter(linear.weight.detach().to(torch.bfloat16), requires_grad=False)
        if linear.bias is not None:
            new.bias = nn.Parameter(linear.bias.detach().float(), requires_grad=False)
        return new

    def forward(self, x: Tensor) -> Tensor:
        y = F.linear(x.to(torch.bfloat16), self.weight).to(x.dtype)
        return y if self.bias is None else y + self.bias


def set_module(model: nn.Module, fqn: str, module: nn.Module) -> None:
    """Put ``module`` at the dotted name ``fqn`` of ``model`` (replacing what is there)."""
    parent_name, _, child = fqn.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def linear_at(model: nn.Module, fqn: str) -> nn.Linear:
    """The ``nn.Linear`` named ``fqn`` in ``model``; in an exported GraphModule it is materialised first."""
    try:
        module = model.get_submodule(fqn)
    except AttributeError:
        raise PolicyError(f"the model has no module {fqn!r}; name Linear layers from policy_targets(model)") from None
    if isinstance(module, nn.Linear):
        return module
    if isinstance(model, fx.GraphModule):
        return _materialise_linear(model, fqn)
    raise PolicyError(f"{fqn!r} is a {type(module).__name__}, not a Linear; name layers from policy_targets(model)")


def _materialise_linear(gm: fx.GraphModule, fqn: str) -> nn.Linear:
    """Replace the one ``aten.linear(x, <fqn>.weight, <fqn>.bias)`` call of ``gm`` by ``call_module(fqn)``."""
    calls = [
        node
        for node in gm.graph.nodes
        if node.op == "call_function"
        and node.target is torch.ops.aten.linear.default
        and isinstance(node.args[1], fx.Node)
        and node.args[1].op == "get_attr"
        and node.args[1].target == f"{fqn}.weight"
    ]
    if len(calls) != 1:
        raise PolicyError(
            f"{fqn!r} is called {len(calls)} times as a float linear in the exported graph (expected once); "
            "it was quantized already or is shared: give each layer one precision"
        )
    call = calls[0]
    weight_node = call.args[1]
    bias_node = call.args[2] if len(call.args) > 2 else call.kwargs.get("bias")
    weight = gm.get_parameter(f"{fqn}.weight")
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias_node is not None, device="meta")
    linear.weight = weight
    if bias_node is not None:
        linear.bias = gm.get_parameter(str(bias_node.target))
    set_module(gm, fqn, linear)
    with gm.graph.inserting_before(call):
        new = gm.graph.call_module(fqn, (call.args[0],))
    new.meta = dict(call.meta)
    call.replace_all_uses_with(new)
    gm.graph.erase_node(call)
    for node in (weight_node, bias_node):
        if isinstance(node, fx.Node) and not node.users:
            gm.graph.erase_node(node)
    gm.recompile()
    return linear
