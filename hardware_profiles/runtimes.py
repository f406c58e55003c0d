"""Turn a (quantized) module and fixed inputs into a zero-argument callable that runs it the way a
profile's runtime would: PyTorch eager, ``torch.compile`` with inductor, or ONNX Runtime.

Lookup-table blocks and whole sub-networks are prepared by the same function, so a table entry and
an end-to-end measurement differ only in what is measured, never in how.

Inductor details that matter for the numbers:

* ``torch._dynamo.reset()`` before every compile. All sub-networks share one ``forward`` code object;
  without a reset dynamo would pile guards onto it and, past its cache limit, silently run eager.
* Compilation (the first call) happens under the profile's thread count, because inductor's C++
  kernels bake the OpenMP thread count in at code generation, and under ``no_grad`` (freezing needs
  it, and the timing loop runs in it too, so no guard fails and nothing recompiles).
* ``freezing`` is a process-wide inductor setting; it is set with ``config.patch`` around that first
  call only, so preparing a runner has no lasting side effect.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from hardware_profiles.errors import ProfileError
from hardware_profiles.profile import HardwareProfile

Runner = Callable[[], object]


def torch_runner(model: nn.Module, inputs: tuple[Tensor, ...], profile: HardwareProfile) -> Runner:
    """A runner for a torch runtime (``eager`` or ``inductor``); call it under the profile's threads
    (``timing.pinned_threads``): for inductor, the first call here compiles with them."""
    model.eval()
    if profile.runtime == "eager":
        return lambda: model(*inputs)
    if profile.runtime != "inductor":
        raise ProfileError(f"runtime {profile.runtime} is not a torch runtime; use onnx_runners for it")
    import torch._inductor.config as inductor_config

    options = dict(profile.runtime_options)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="inductor", mode=options.get("mode"), dynamic=options.get("dynamic", False))
    with inductor_config.patch(freezing=bool(options.get("freezing", False))), torch.no_grad():
        compiled(*inputs)  # compiles now, with the settings above
    return lambda: compiled(*inputs)


def onnx_runners(
    float_model: nn.Module,
    inputs: tuple[Tensor, ...],
    input_names: Sequence[str],
    profile: HardwareProfile,
    workdir: Path,
    int8_dynamic_linears: Sequence[str] = (),
    dynamic: bool = True,
) -> list[Runner]:
    """Runners for ``onnxruntime``: the *float* module is exported and the named Linears are quantized
    by ONNX Runtime itself (torchao's quantized weights do not export; see ``compat``). ``dynamic=False``
    exports at the inputs' exact shapes (lookup-table blocks, whose inputs are not all batch x sequence).

    One runner per session the profile times (runtime option ``sessions``, default 1), each a fresh
    ``InferenceSession`` of the one exported file, so that a measurement does not hang on where one
    session's memory happened to land (``timing.time_runners`` takes the median across them)."""
    from hardware_profiles.onnx_runner import onnx_model_for

    onnx_model = onnx_model_for(
        float_model,
        inputs,
        input_names,
        workdir,
        threads=profile.threads,
        runtime_options=profile.runtime_options,
        int8_dynamic_linears=int8_dynamic_linears,
        dynamic=dynamic,
    )
    more = [onnx_model.fresh_session() for _ in range(int(profile.runtime_options.get("sessions", 1)) - 1)]
    return [model.runner(*inputs) for model in (onnx_model, *more)]
