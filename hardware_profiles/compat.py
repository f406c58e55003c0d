"""What each runtime can run: devices, precisions and options, in one table with the reason for every "no".

Profiles are validated against this table when they are loaded, on any machine (a profile can be used
for prediction on a machine that cannot measure it), so it encodes what a runtime can do in
principle, not what this machine has; ``hardware_profiles.hardware`` answers the latter.

Why each exclusion:

* ``int8_static`` is a PT2E graph whose int8 kernels (oneDNN, x86) appear only when inductor lowers it
  with freezing; run eagerly it executes its dequantize-then-float reference path, slower than fp32,
  and it is not exported to ONNX. Hence inductor on CPU only.
* ``int4_weight_only`` is torchao's CPU int4 kernel (``aten._weight_int4pack_mm_for_cpu``) behind a
  tensor subclass: it does not export to ONNX and is not wired for CUDA.
* ``bf16`` on ONNX Runtime's CPU provider: it has no bf16 MatMul/Gemm kernels.
* ``int8_weight_only`` on ONNX Runtime: there is no weight-only int8 matmul on its CPU provider.
* ``int8_dynamic`` on ONNX Runtime is realised with ONNX Runtime's own dynamic quantization
  (``onnxruntime.quantization.quantize_dynamic``: per-tensor/-channel int8 weights, dynamic int8
  activations), the same W8A8-dynamic scheme as torchao's, since torchao's tensor subclasses do not
  export to ONNX.
* ``onnxruntime`` only on CPU: the ``onnxruntime`` package elastiq depends on is the CPU build.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

RUNTIMES = ("eager", "inductor", "onnxruntime")
DEVICES = ("cpu", "cuda")

_RUNTIME_DEVICES = {"eager": ("cpu", "cuda"), "inductor": ("cpu", "cuda"), "onnxruntime": ("cpu",)}

# (precision, runtime or "*", device or "*") -> why that combination cannot run. Checked in order.
_EXCLUSIONS: tuple[tuple[str, str, str, str], ...] = (
    ("int8_static", "eager", "*", "int8_static runs only with runtime inductor on cpu (eager runs its slow reference)"),
    ("int8_static", "onnxruntime", "*", "int8_static runs only with runtime inductor on cpu (no ONNX export)"),
    ("int8_static", "*", "cuda", "int8_static runs only with runtime inductor on cpu (X86InductorQuantizer)"),
    ("int4_weight_only", "onnxruntime", "*", "int4_weight_only does not export to ONNX (torchao tensor subclass)"),
    ("int4_weight_only", "*", "cuda", "int4_weight_only is torchao's CPU int4 kernel; it does not run on cuda"),
    ("bf16", "onnxruntime", "cpu", "ONNX Runtime's CPU provider has no bf16 MatMul/Gemm kernels"),
    ("int8_weight_only", "onnxruntime", "*", "ONNX Runtime has no weight-only int8 matmul; use int8_dynamic"),
)


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _one_of(*choices: str) -> Callable[[Any], bool]:
    return lambda value: value in choices


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


#: Options each runtime accepts in ``runtime_options``: name -> (check, what a valid value is).
RUNTIME_OPTIONS: Mapping[str, Mapping[str, tuple[Callable[[Any], bool], str]]] = {
    "eager": {},
    "inductor": {
        "freezing": (_is_bool, "true or false"),  # constant-folds weights; PT2E int8 needs it to be fast
        "mode": (
            _one_of("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
            "one of default, reduce-overhead, max-autotune, max-autotune-no-cudagraphs",
        ),
        "dynamic": (_is_bool, "true or false"),
    },
    "onnxruntime": {
        "graph_optimization_level": (_one_of("disable", "basic", "extended", "all"), "disable, basic, extended or all"),
        "opset": (_positive_int, "a positive ONNX opset number"),
        # Fresh InferenceSessions of one exported file timed one after another (median across them): on a
        # virtual machine each session's speed depends on where its memory landed (seen: 20-40% apart).
        "sessions": (_positive_int, "a positive number of sessions"),
    },
}


def runtime_device_problem(runtime: str, device: str) -> str | None:
    """Why ``runtime`` cannot run on ``device``, or None."""
    if device not in _RUNTIME_DEVICES[runtime]:
        return f"runtime {runtime} runs on {', '.join(_RUNTIME_DEVICES[runtime])} only (the CPU build is installed)"
    return None


def precision_problem(precision: str, runtime: str, device: str) -> str | None:
    """Why ``runtime`` on ``device`` cannot run ``precision``, or None when it can."""
    for name, rule_runtime, rule_device, reason in _EXCLUSIONS:
        if name == precision and rule_runtime in ("*", runtime) and rule_device in ("*", device):
            return reason
    return None


def runtime_option_problem(runtime: str, option: str, value: Any) -> str | None:
    """Why ``option: value`` is not valid for ``runtime``, or None."""
    allowed = RUNTIME_OPTIONS[runtime]
    if option not in allowed:
        names = ", ".join(allowed) if allowed else "none"
        return f"runtime {runtime} has no option {option!r}; its options: {names}"
    check, expected = allowed[option]
    if not check(value):
        return f"runtime option {option} must be {expected}, got {value!r}"
    return None
