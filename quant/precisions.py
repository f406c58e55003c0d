"""The module-level precisions: fp32, bf16, and torchao's int8 and int4 weight formats.

Each one swaps the weight of named ``nn.Linear`` modules (torchao ``quantize_`` with a ``filter_fn``
on the names) or the module itself (bf16). torchao is imported inside ``apply`` so that importing
the registry (e.g. to validate a hardware profile) does not pay for loading torchao.

Every torchao config is built with ``set_inductor_config=False``: torchao would otherwise change
``torch._inductor.config`` process-wide as a side effect of quantizing; compile options belong to the
hardware profile's runtime, not to the precision.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from quant.errors import PrecisionError
from quant.modules import Bf16Linear, linear_at, set_module
from quant.registry import Calibration, Precision, Support, register_precision


def _device_type(device: torch.device | str) -> str:
    return torch.device(device).type


def _quantize_linears(model: nn.Module, fqns: Sequence[str], config: Any) -> nn.Module:
    """Run torchao's ``quantize_`` with ``config`` on exactly the Linears named ``fqns``."""
    from torchao.quantization import quantize_

    names = set(fqns)
    for fqn in fqns:
        linear_at(model, fqn)  # materialises Linears of an exported graph; checks the names

    def chosen(module: nn.Module, fqn: str) -> bool:
        return isinstance(module, nn.Linear) and fqn in names

    quantize_(model, config, filter_fn=chosen)
    return model


@register_precision("fp32")
class Fp32(Precision):
    """The float baseline: the layer is left as it is."""

    bits_per_weight = 32

    def weight_bytes(self, out_features: int, in_features: int) -> int:
        return 4 * out_features * in_features

    def apply(self, model: nn.Module, fqns: Sequence[str], calibration: Calibration | None = None) -> nn.Module:
        for fqn in fqns:
            linear_at(model, fqn)  # only checks that the names exist
        return model


@register_precision("bf16")
class Bf16(Precision):
    """bfloat16 weights and matmul for one layer, fp32 around it (``quant.modules.Bf16Linear``).

    Runs on every CPU; it is fast only where the CPU has native bf16 (AVX512-BF16, AMX), which is a
    question for the hardware profile's measurements, not for whether it runs.
    """

    bits_per_weight = 16

    def weight_bytes(self, out_features: int, in_features: int) -> int:
        return 2 * out_features * in_features

    def apply(self, model: nn.Module, fqns: Sequence[str], calibration: Calibration | None = None) -> nn.Module:
        for fqn in fqns:
            set_module(model, fqn, Bf16Linear.from_linear(linear_at(model, fqn)))
        return model


class _Int8PerChannel(Precision):
    """torchao ``Int8Tensor`` weights: int8 values, and per output channel an fp32 scale and an int8
    zero-point (always 0, the mapping is symmetric, but stored)."""

    bits_per_weight = 8
    _config_factory: Callable[[], Any]

    def weight_bytes(self, out_features: int, in_features: int) -> int:
        return out_features * in_features + (4 + 1) * out_features

    def apply(self, model: nn.Module, fqns: Sequence[str], calibration: Calibration | None = None) -> nn.Module:
        return _quantize_linears(model, fqns, self._config_factory())


def _int8_dynamic_config() -> Any:
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig

    return Int8DynamicActivationInt8WeightConfig(set_inductor_config=False)


def _int8_weight_only_config() -> Any:
    from torchao.quantization import Int8WeightOnlyConfig

    return Int8WeightOnlyConfig(set_inductor_config=False)


@register_precision("int8_dynamic")
class Int8Dynamic(_Int8PerChannel):
    """W8A8 with dynamic per-token activation scales (torchao ``Int8DynamicActivationInt8WeightConfig``).

    No calibration. Without ``torch.compile`` it is slower than fp32 on CPU (the activation quantization
    runs as separate eager ops); with inductor the int8 matmul is fused.
    """

    _config_factory = staticmethod(_int8_dynamic_config)


@register_precision("int8_weight_only")
class Int8WeightOnly(_Int8PerChannel):
    """int8 per-channel weights, float activations (torchao ``Int8WeightOnlyConfig``): halves memory traffic."""

    _config_factory = staticmethod(_int8_weight_only_config)


#: Group sizes torchao's CPU int4 packing accepts (``Int4OpaqueTensor.from_hp`` asserts these).
INT4_GROUP_SIZES = (32, 64, 128)
#: ``aten._convert_weight_to_int4pack_for_cpu`` packs output channels in blocks of 16.
INT4_OUT_MULTIPLE = 16


def _probe_int4_cpu() -> Support:
    """Quantize and run one small Linear with the CPU int4 path; the exception text is the reason."""
    try:
        from torchao.prototype.quantization.int4.inference_workflow import PrototypeInt4WeightOnlyConfig
        from torchao.quantization import quantize_

        probe = nn.Sequential(nn.Linear(32, INT4_OUT_MULTIPLE))
        quantize_(probe, PrototypeInt4WeightOnlyConfig(group_size=32, set_inductor_config=False))
        with torch.no_grad():
            probe(torch.ones(2, 32))
    except Exception as exc:  # any failure of the kernel or its import means "cannot run here"
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return Support(False, f"torchao's CPU int4 path (Int4OpaqueTensor) fails on this machine: {first}")
    return Support(True)


@register_precision("int4_weight_only")
class Int4WeightOnly(Precision):
    """Group-wise int4 weights, float activations, on CPU.

    torchao 0.18's ``Int4WeightOnlyConfig`` has no packing format that runs on a CPU: ``plain`` and
    ``preshuffled`` need the ``mslk`` package (CUDA kernels), ``plain_int32`` raises "does not support
    device 'cpu'", and ``tile_packed_to_4d`` needs bfloat16 weights on CUDA. torchao's CPU int4 path is
    ``torchao.prototype.quantization.int4.PrototypeInt4WeightOnlyConfig`` (``Int4OpaqueTensor`` with
    ``aten._weight_int4pack_mm_for_cpu``, asymmetric, one fp32 scale and zero-point per group), which
    is what this precision uses. It needs ``in_features`` divisible by the group size and
    ``out_features`` divisible by 16, so e.g. a 2-label classifier cannot take it.

    ``group_size`` is 32 by default: it divides every attention width of a BERT sub-network
    (multiples of the head size 64, or 32 for half-size heads) and is the most accurate choice;
    128 stores fewer scales (4.5 instead of 6 bits per weight) but fits fewer layers.
    """

    bits_per_weight = 4

    def __init__(self, group_size: int = 32) -> None:
        if group_size not in INT4_GROUP_SIZES:
            raise PrecisionError(
                f"int4_weight_only group_size {group_size!r} is not supported; use one of {list(INT4_GROUP_SIZES)}"
            )
        self.group_size = group_size

    def options(self) -> dict[str, Any]:
        return {"group_size": self.group_size}

    def supported(self, device: torch.device | str = "cpu") -> Support:
        if _device_type(device) != "cpu":
            return Support(
                False,
                f"int4_weight_only is implemented for CPU only (device {device}); on CUDA torchao's own "
                "Int4WeightOnlyConfig with a bfloat16 model is the path, not wired in yet",
            )
        return _probe_int4_cpu()

    def layer_problem(self, out_features: int, in_features: int) -> str | None:
        if in_features % self.group_size:
            return f"in_features {in_features} is not a multiple of the int4 group size {self.group_size}"
        if out_features % INT4_OUT_MULTIPLE:
            return f"out_features {out_features} is not a multiple of {INT4_OUT_MULTIPLE} (CPU int4 packing)"
        return None

    def weight_bytes(self, out_features: int, in_features: int) -> int:
        groups = in_features // self.group_size
        return out_features * in_features // 2 + 2 * 4 * out_features * groups  # packed nibbles + fp32 scale/zero

    def apply(self, model: nn.Module, fqns: Sequence[str], calibration: Calibration | None = None) -> nn.Module:
        support = self.supported("cpu")
        if not support:
            raise PrecisionError(support.reason)
        from torchao.prototype.quantization.int4.inference_workflow import PrototypeInt4WeightOnlyConfig

        for fqn in fqns:
            linear = linear_at(model, fqn)
            problem = self.layer_problem(linear.out_features, linear.in_features)
            if problem:
                raise PrecisionError(f"{fqn} cannot take int4_weight_only: {problem}; give it another precision")
        config = PrototypeInt4WeightOnlyConfig(group_size=self.group_size, set_inductor_config=False)
        return _quantize_linears(model, fqns, config)
