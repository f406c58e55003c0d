"""Static int8 (PT2E): calibrated per-tensor activation scales, per-channel int8 weights, for x86 CPUs.

This is a graph-level precision: the model is exported with ``torch.export``, the named Linears are
annotated by torchao's ``X86InductorQuantizer`` (``set_module_name_qconfig`` per layer, nothing
global, so unnamed layers such as the pooler stay float), observers are calibrated on the given
batches, and ``convert_pt2e`` folds the weights to int8. The result is a ``torch.fx.GraphModule``
that runs eagerly as a reference (dequantize, then a float matmul) and fast under ``torch.compile``
with inductor and ``freezing`` (oneDNN int8 kernels).

Why this precision is applied *before* the module-level ones (``quant.apply``): when a model whose
other Linears already hold torchao tensor subclasses is exported, those Linears no longer appear as
``aten.linear`` nodes, and ``X86InductorQuantizer`` rejects the whole graph
(``ValueError: to_3 is not an aten linear operator``, raised for every Linear partition before its
module-name filter is consulted). Quantizing the float model first and then materialising the other
Linears as modules (``quant.modules.linear_at``) works, eagerly and compiled.
"""

from __future__ import annotations

import platform
import types
from collections.abc import Sequence
from typing import Any

import torch
import torchao.utils
from torch import Tensor, fx, nn

from quant.errors import PrecisionError
from quant.registry import Calibration, Precision, Support, register_precision

_INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


def _vnni_supported() -> bool:
    """True when the CPU has VNNI (AVX512-VNNI or AVX-VNNI); False when it cannot be told."""
    probe = getattr(torch.cpu, "_is_vnni_supported", None)
    return bool(probe()) if callable(probe) else False


def _batches(calibration: Calibration | None) -> list[tuple[Tensor, Tensor, Tensor]]:
    if calibration is None:
        raise PrecisionError("int8_static needs calibration batches; pass calibration_batches=[batch, ...]")
    batches = []
    for batch in calibration:
        try:
            ids, mask, token_types = (batch[name] for name in _INPUT_NAMES)
        except (KeyError, TypeError, IndexError):
            raise PrecisionError(
                f"calibration batches must be mappings with keys {list(_INPUT_NAMES)} (tokenizer output); "
                f"got {type(batch).__name__}"
            ) from None
        batches.append((ids, mask, token_types))
    if not batches:
        raise PrecisionError("int8_static got no calibration batches; pass at least one batch of task text")
    return batches


def _forget_cached_models() -> None:
    """Clear the unbounded per-module device caches of torchao and torch.ao's quantization utilities.

    ``torchao.utils._assert_and_get_unique_device`` (torchao 0.18) and
    ``torch.ao.quantization.fx.utils.assert_and_get_unique_device`` (torch 2.13) are
    ``functools.cache``-decorated and keyed by the module itself, so every model that goes through
    ``prepare_pt2e``/``convert_pt2e`` stays referenced forever: measured +100 MB per int8_static
    candidate of MiniLM, which ran a 300-candidate search towards the machine's memory limit. The
    caches only save a walk over a module's parameters.
    """
    import torch.ao.quantization.fx.utils as fx_utils

    for cached in (
        getattr(torchao.utils, "_assert_and_get_unique_device", None),
        getattr(fx_utils, "assert_and_get_unique_device", None),
    ):
        if cached is not None and hasattr(cached, "cache_clear"):
            cached.cache_clear()


def _export_example(batch: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """At least two rows, so that torch.export keeps the batch dimension dynamic (it specialises size 1)."""
    if batch[0].shape[0] >= 2:
        return batch
    return tuple(t.expand(2, *t.shape[1:]).contiguous() for t in batch)


def _dynamic_shapes(max_positions: int | None) -> dict[str, dict[int, Any]]:
    from torch.export import Dim

    batch = Dim("batch", min=1, max=65536)
    seq = Dim("seq", min=2, max=max_positions) if max_positions else Dim("seq", min=2)
    return {name: {0: batch, 1: seq} for name in _INPUT_NAMES}


def _drop_unused_state(gm: fx.GraphModule) -> None:
    """Delete parameters and buffers the graph no longer reads (the float weights convert_pt2e replaced),
    so that the model really is smaller and its size can be measured from its state_dict."""
    used = {str(node.target) for node in gm.graph.nodes if node.op == "get_attr"}
    for name, _ in list(gm.named_parameters()) + list(gm.named_buffers()):
        if name not in used:
            owner_name, _, attr = name.rpartition(".")
            delattr(gm.get_submodule(owner_name) if owner_name else gm, attr)


def _inference_only(gm: fx.GraphModule) -> None:
    """Make ``eval()``/``train(False)`` no-ops and ``train(True)`` a clear error.

    An exported module raises NotImplementedError on ``eval()``, which breaks ordinary evaluation code;
    its graph was traced in eval mode, so eval is already what it does, and training it is not supported.
    """

    def train(self: nn.Module, mode: bool = True) -> nn.Module:
        if mode:
            raise PrecisionError("a statically quantized (int8_static) model is inference-only; train the float model")
        self.training = False
        return self

    def eval_(self: nn.Module) -> nn.Module:
        return train(self, False)

    gm.train = types.MethodType(train, gm)  # type: ignore[method-assign]
    gm.eval = types.MethodType(eval_, gm)  # type: ignore[method-assign]
    gm.training = False


@register_precision("int8_static")
class Int8Static(Precision):
    """PT2E static int8 with ``X86InductorQuantizer``, calibrated on the batches given to ``apply``.

    ``reduce_range`` quantizes activations to 7 bits. Without VNNI, oneDNN's u8×s8 int8 kernels add
    pairs of products in saturating int16 and overflow on 8-bit activations: measured on an AVX2-only
    EPYC, compiled outputs deviated 5× more from fp32 than the eager reference with full range, and
    matched it with ``reduce_range=True``. The default (None) therefore chooses ``reduce_range`` when
    this CPU lacks VNNI; pass a bool to quantize for another machine.
    """

    bits_per_weight = 8
    graph_level = True
    extra_state_entries = 2

    def __init__(self, reduce_range: bool | None = None) -> None:
        if reduce_range is not None and not isinstance(reduce_range, bool):
            raise PrecisionError(f"int8_static reduce_range must be true, false or null, got {reduce_range!r}")
        self.reduce_range = reduce_range

    def options(self) -> dict[str, Any]:
        return {"reduce_range": self.reduce_range}

    def supported(self, device: torch.device | str = "cpu") -> Support:
        if torch.device(device).type != "cpu":
            return Support(False, f"int8_static uses X86InductorQuantizer, which targets x86 CPUs, not {device}")
        machine = platform.machine().lower()
        if machine not in {"x86_64", "amd64", "i386", "i686"}:
            return Support(False, f"int8_static uses X86InductorQuantizer, which targets x86 CPUs, not {machine}")
        return Support(True)

    def weight_bytes(self, out_features: int, in_features: int) -> int:
        # int8 weight, then per output channel an fp32 scale and an int64 zero-point (as convert_pt2e stores them)
        return out_features * in_features + (4 + 8) * out_features

    def apply(self, model: nn.Module, fqns: Sequence[str], calibration: Calibration | None = None) -> nn.Module:
        support = self.supported("cpu")
        if not support:
            raise PrecisionError(support.reason)
        if isinstance(model, fx.GraphModule):
            raise PrecisionError("int8_static must be applied to an eager model, once; apply the whole policy at once")
        batches = _batches(calibration)
        reduce_range = (not _vnni_supported()) if self.reduce_range is None else self.reduce_range
        shape = getattr(model, "shape", None)
        max_positions = getattr(shape, "max_position_embeddings", None)
        converted = quantize_linears_pt2e(
            model,
            fqns,
            example_args=_export_example(batches[0]),
            calibration_args=batches,
            dynamic_shapes=_dynamic_shapes(max_positions),
            reduce_range=reduce_range,
        )
        if shape is not None:
            converted.shape = shape  # keeps policy_targets / size accounting working on the result
        return converted


def quantize_linears_pt2e(
    model: nn.Module,
    fqns: Sequence[str],
    *,
    example_args: tuple[Tensor, ...],
    calibration_args: Sequence[tuple[Tensor, ...]],
    dynamic_shapes: Any = None,
    reduce_range: bool | None = None,
) -> fx.GraphModule:
    """PT2E static int8 on exactly the Linears ``fqns`` of any module whose forward takes positional tensors.

    The BERT precision above calls it with tokenizer batches; latency lookup tables call it on a lone
    Linear fed activations, so that both quantize with the same quantizer, config and conversion.
    ``reduce_range=None`` chooses 7-bit activations when this CPU lacks VNNI (see ``Int8Static``).
    """
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    for fqn in fqns:
        if not isinstance(model.get_submodule(fqn), nn.Linear):
            raise PrecisionError(f"int8_static quantizes Linear layers; {fqn!r} is not one")
    if reduce_range is None:
        reduce_range = not _vnni_supported()
    config = get_default_x86_inductor_quantization_config(reduce_range=reduce_range)
    quantizer = X86InductorQuantizer()
    for fqn in fqns:
        quantizer.set_module_name_qconfig(fqn, config)
    model.eval()
    try:
        exported = torch.export.export(model, example_args, dynamic_shapes=dynamic_shapes, strict=False)
    except Exception as exc:  # export fails in many ways; the first line names the construct
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PrecisionError(f"torch.export could not trace the model for int8_static: {first}") from exc
    prepared = prepare_pt2e(exported.module(), quantizer)
    with torch.no_grad():
        for args in calibration_args:
            prepared(*args)
    converted = convert_pt2e(prepared)
    _forget_cached_models()
    _drop_unused_state(converted)
    _inference_only(converted)
    return converted
