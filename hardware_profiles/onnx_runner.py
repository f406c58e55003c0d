"""The ONNX Runtime path: export a float module to ONNX, quantize chosen Linears the way ONNX Runtime
does, and run it in an ``InferenceSession`` configured from a hardware profile.

Used to measure latency under the ``onnxruntime`` runtime (whole sub-networks and lone lookup-table
blocks alike) and to ship sub-networks as ``.onnx`` files.

Exporter: the dynamo one (``torch.onnx.export(..., dynamo=True)``, torch.export underneath). With
torch 2.13 both exporters produce a correct graph for our BERT, but only dynamo's can be mapped back to
module names: it records every node's module path in the ``pkg.torch.onnx.name_scopes`` metadata,
whereas the TorchScript exporter folds each transposed weight into an initializer renamed
``onnx::MatMul_<n>`` and names nodes by abbreviated, de-duplicated scopes (``/bert/layer.0/dense_1/MatMul``),
so "quantize ``bert.encoder.layer.0.intermediate.dense``" could only be guessed. The TorchScript
exporter is also deprecated (it warns on every call) and its dynamic axes rest on a trace that warns
about shape-dependent Python branches, while torch.export checks symbolic batch and sequence sizes.
Its cost is export time: ~1-6 s instead of ~0.2 s for a tiny model.

int8_dynamic is ONNX Runtime's own ``quantize_dynamic`` (int8 weights with per-channel scales and a 7-bit
range, see ``_REDUCE_RANGE``; uint8 activations quantized per tensor at run time), because torchao's
quantized weights do not export (see ``compat``).
It quantizes ``MatMul`` (into ``MatMulInteger``) and turns every ``Gemm`` (what the exporter emits for
Linears fed 2-D inputs, such as the classifier) into a ``MatMul`` under a new name of its own choosing,
transposing a ``transB`` weight in place: same initializer name, new shape. So before quantizing, every
Gemm on a stored weight is rewritten to ``MatMul`` + ``Add`` here instead (see ``_prepare_for_quantization``):
the requested ones keep their names, so that ``nodes_to_quantize`` can name them, and no weight is
reshaped under a name that the exporter's ``value_info`` (or another node) still reads with its old shape.
"""

from __future__ import annotations

import ast
import contextlib
import logging
import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import helper, numpy_helper
from torch import nn

from hardware_profiles import compat
from hardware_profiles.errors import ProfileError
from quant.errors import PolicyError
from supernet.atomic import atomic_write

_OPTIMIZATION_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}

#: Per-channel weight scales: torchao's int8_dynamic scales weights per output channel too, and with one
#: scale per tensor a single large weight coarsens every other channel's steps.
_PER_CHANNEL = True

#: 7-bit weights. On x86 CPUs without VNNI (AVX2, AVX-512 without VNNI) ONNX Runtime multiplies uint8
#: activations by int8 weights with ``vpmaddubsw``, which adds pairs of products into int16 and saturates:
#: 2 * 255 * 127 > 32767. Measured on an AVX2 machine, a random 64->128 Linear on N(0, 1) inputs erred by
#: 34% of its largest output with 8-bit weights and 1.1% with 7-bit ones (a numpy emulation of exact
#: int8 arithmetic: 0.9%); a 768x768 one 15% vs 1.2%. VNNI machines do not saturate, but one setting
#: everywhere keeps measured accuracy independent of the CPU the profile lands on.
_REDUCE_RANGE = True

#: The dynamo exporter writes opset 18 natively; older opsets go through the ONNX version converter,
#: which drops the node metadata that maps Linears to their MatMuls.
MIN_OPSET = 18
DEFAULT_OPSET = 18

#: Node types a dynamically quantized Linear becomes: ``MatMulInteger`` in the file, fused into
#: ``DynamicQuantizeMatMul`` by ONNX Runtime's graph optimizer once loaded.
QUANTIZED_MATMULS = ("MatMulInteger", "DynamicQuantizeMatMul")

_NAME_SCOPES = "pkg.torch.onnx.name_scopes"
_EXPORT_LOGGERS = (
    "torch.onnx",
    "torch.export",
    "torch._export",
    "torch.fx.experimental.symbolic_shapes",
    "onnxscript",
    "onnx_ir",
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")

# ONNX tensor type -> numpy dtype, for checking what run() is fed.
_NUMPY_TYPES = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(double)": np.dtype(np.float64),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(bool)": np.dtype(np.bool_),
}


class OnnxModel:
    """An ONNX file loaded in an ``InferenceSession``, fed torch tensors in ``input_names`` order."""

    def __init__(self, path: Path, input_names: Sequence[str], session: ort.InferenceSession) -> None:
        self.path = path
        self.input_names = tuple(input_names)
        self.session = session
        self._output_names = [o.name for o in session.get_outputs()]
        self._input_types = {i.name: _NUMPY_TYPES.get(i.type) for i in session.get_inputs()}

    def _feed(self, inputs: Sequence[torch.Tensor]) -> dict[str, np.ndarray]:
        if len(inputs) != len(self.input_names):
            raise ProfileError(
                f"ONNX model {self.path.name} takes {len(self.input_names)} inputs ({', '.join(self.input_names)}), "
                f"got {len(inputs)}; pass one tensor per input, in that order"
            )
        feed = {}
        for name, tensor in zip(self.input_names, inputs, strict=True):
            array = tensor.detach().cpu().contiguous().numpy()
            expected = self._input_types[name]
            if expected is not None and array.dtype != expected:
                raise ProfileError(
                    f"ONNX model {self.path.name} input {name} is {expected}, got {array.dtype}; "
                    f"pass the dtype the model was exported with"
                )
            feed[name] = array
        return feed

    def fresh_session(self) -> OnnxModel:
        """The same file loaded again with this session's options: a new session (and memory placement)
        that computes the same thing, for protocols that time several (``runtimes.onnx_runners``)."""
        options, providers = self.session.get_session_options(), self.session.get_providers()
        return OnnxModel(self.path, self.input_names, ort.InferenceSession(str(self.path), options, providers))

    def run(self, *inputs: torch.Tensor) -> list[np.ndarray]:
        """All outputs of one inference, as numpy arrays (for correctness checks)."""
        return list(self.session.run(self._output_names, self._feed(inputs)))

    def runner(self, *inputs: torch.Tensor) -> Callable[[], object]:
        """A zero-argument callable running one inference on ``inputs``, for timing loops.

        The inputs become ``OrtValue``s once, here, and outputs stay ``OrtValue``s, so that a timed call
        is the session alone: no torch -> numpy conversion or output copy in the measurement, just as a
        timed torch call does not convert its inputs. The inputs are copied: changing the tensors later
        does not change what the runner computes.
        """
        arrays = {name: array.copy() for name, array in self._feed(inputs).items()}
        return _Runner(self.session, self._output_names, arrays)


class _Runner:
    """One inference on fixed inputs. It holds the numpy arrays because its ``OrtValue``s share their memory."""

    def __init__(self, session: ort.InferenceSession, output_names: list[str], arrays: dict[str, np.ndarray]) -> None:
        self._session, self._output_names, self._arrays = session, output_names, arrays
        self._values = {name: ort.OrtValue.ortvalue_from_numpy(array) for name, array in arrays.items()}

    def __call__(self) -> object:
        return self._session.run_with_ort_values(self._output_names, self._values)


def export_onnx(
    model: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    input_names: Sequence[str],
    path: Path,
    *,
    opset: int = DEFAULT_OPSET,
    int8_dynamic_linears: Sequence[str] = (),
    dynamic: bool = True,
) -> Path:
    """Export a float ``model`` (in eval mode) to ONNX at ``path``, batch and sequence sizes dynamic.

    ``model(*example_inputs)`` must run; dimensions 0 and 1 of every input become the symbolic
    ``batch`` and ``sequence`` sizes, so the file runs at any batch and sequence length the model
    itself accepts. When ``int8_dynamic_linears`` names Linear modules (by fqn), exactly those are
    quantized with ONNX Runtime's ``quantize_dynamic``; everything else stays fp32. The file is written
    atomically: a reader never sees a half-written or not-yet-quantized model.
    """
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < MIN_OPSET:
        raise ProfileError(
            f"opset {opset!r} is not supported: elastiq exports with torch's dynamo exporter, which writes opset "
            f"{MIN_OPSET} or newer; set opset >= {MIN_OPSET}"
        )
    linears = _check_linears(model, int8_dynamic_linears)
    if len(input_names) != len(example_inputs):
        raise ProfileError(
            f"{len(example_inputs)} example inputs but {len(input_names)} input names; give one name per input"
        )
    proto = _export(model, example_inputs, input_names, opset, dynamic)
    if not linears:
        return atomic_write(path, lambda tmp: onnx.save_model(proto, tmp))

    names = _prepare_for_quantization(proto.graph, linears)

    def quantize(tmp: str) -> None:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        with _quiet_ort_quantization():
            quantize_dynamic(
                proto,
                tmp,
                op_types_to_quantize=["MatMul"],
                nodes_to_quantize=names,  # never empty here: an empty list would mean "all of them"
                per_channel=_PER_CHANNEL,
                reduce_range=_REDUCE_RANGE,
                weight_type=QuantType.QInt8,
                extra_options={"MatMulConstBOnly": True},
            )
        quantized = count_quantized_matmuls(onnx.load(tmp, load_external_data=False))
        if quantized != len(names):
            raise ProfileError(
                f"ONNX Runtime quantized {quantized} of the {len(names)} MatMuls of {', '.join(linears)}; "
                "export those layers in fp32 or report this as a bug"
            )

    return atomic_write(path, quantize)


def load_onnx(
    path: Path, input_names: Sequence[str], *, threads: int, graph_optimization_level: str = "all"
) -> OnnxModel:
    """Load ``path`` the way a profile measures it: CPU provider, ``threads`` intra-op threads, one
    inter-op thread and sequential execution (a BERT graph is a chain, so parallel operators would
    only add scheduling), and the profile's graph optimisation level (disable|basic|extended|all)."""
    path = Path(path)
    if not path.is_file():
        raise ProfileError(f"no ONNX model at {path}; export one first with export_onnx")
    if graph_optimization_level not in _OPTIMIZATION_LEVELS:
        raise ProfileError(
            f"graph_optimization_level {graph_optimization_level!r} is unknown; "
            f"use one of {', '.join(_OPTIMIZATION_LEVELS)}"
        )
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ProfileError(f"threads must be a positive integer, got {threads!r}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = _OPTIMIZATION_LEVELS[graph_optimization_level]
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as err:  # ORT raises its own pybind exception types, one per status code
        raise ProfileError(
            f"ONNX Runtime cannot load {path}: {_first_line(err)}; re-export it with export_onnx"
        ) from err
    graph_inputs = [i.name for i in session.get_inputs()]
    if sorted(graph_inputs) != sorted(input_names):
        raise ProfileError(
            f"ONNX model {path.name} has inputs {graph_inputs}, not {list(input_names)}; "
            "pass the names it was exported with"
        )
    return OnnxModel(path, input_names, session)


def onnx_model_for(
    model: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    input_names: Sequence[str],
    workdir: Path,
    *,
    threads: int,
    runtime_options: Mapping[str, Any] | None = None,
    int8_dynamic_linears: Sequence[str] = (),
    dynamic: bool = True,
) -> OnnxModel:
    """``export_onnx`` into ``workdir`` and ``load_onnx`` with a profile's ``runtime_options`` (``opset``,
    ``graph_optimization_level``).

    The file is ``workdir/<model class>.onnx`` and the next call for the same class overwrites it, so
    that measuring many candidates does not fill the disk; the returned session holds the model in
    memory and is unaffected. Use ``export_onnx`` with a path of your own to keep a file.
    """
    options = dict(runtime_options or {})
    for option, value in options.items():
        problem = compat.runtime_option_problem("onnxruntime", option, value)
        if problem:
            raise ProfileError(f"{problem}; fix the profile's runtime_options")
    path = Path(workdir) / f"{type(model).__name__}.onnx"
    export_onnx(
        model,
        example_inputs,
        input_names,
        path,
        opset=int(options.get("opset", DEFAULT_OPSET)),
        int8_dynamic_linears=int8_dynamic_linears,
        dynamic=dynamic,
    )
    return load_onnx(
        path, input_names, threads=threads, graph_optimization_level=options.get("graph_optimization_level", "all")
    )


def count_quantized_matmuls(model: onnx.ModelProto) -> int:
    """How many dynamically quantized MatMuls (``QUANTIZED_MATMULS``) ``model``'s graph holds."""
    return sum(node.op_type in QUANTIZED_MATMULS for node in model.graph.node)


# --- export ----------------------------------------------------------------------------------------------


def _check_linears(model: nn.Module, fqns: Sequence[str]) -> list[str]:
    """``fqns`` without repeats, each checked to name an ``nn.Linear`` of ``model`` (before the slow export)."""
    checked: list[str] = []
    for fqn in fqns:
        try:
            module = model.get_submodule(fqn)
        except AttributeError:
            raise PolicyError(
                f"int8_dynamic layer {fqn!r} is not a module of {type(model).__name__}; "
                "name Linears by their fqn (quant.targets.linear_shapes)"
            ) from None
        if not isinstance(module, nn.Linear):
            raise PolicyError(
                f"int8_dynamic layer {fqn!r} is a {type(module).__name__}, not an nn.Linear; "
                "export the float model and name its Linears"
            )
        if fqn not in checked:
            checked.append(fqn)
    return checked


def _export(
    model: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    input_names: Sequence[str],
    opset: int,
    dynamic: bool = True,
) -> onnx.ModelProto:
    """The dynamo export of ``model`` in eval mode (its training flag is restored afterwards)."""
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    dynamic_shapes = (
        tuple({d: dim for d, dim in enumerate((batch, sequence)) if d < x.dim()} for x in example_inputs)
        if dynamic
        else None
    )
    was_training = model.training
    model.eval()
    try:
        with _quiet_export(), torch.no_grad():
            program = torch.onnx.export(
                model,
                tuple(example_inputs),
                None,
                input_names=list(input_names),
                dynamic_shapes=dynamic_shapes,
                opset_version=opset,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
            assert program is not None  # the dynamo exporter always returns its ONNXProgram
            return program.model_proto
    except Exception as err:  # torch.export and the ONNX translation raise many unrelated types
        raise ProfileError(
            f"cannot export {type(model).__name__} to ONNX (opset {opset}): {_root_cause(err)}; "
            "its forward must be traceable by torch.export with dynamic batch and sequence sizes"
        ) from err
    finally:
        model.train(was_training)


def _module_path(node: onnx.NodeProto) -> str | None:
    """The fqn of the innermost module whose forward emitted ``node``, from the dynamo exporter's metadata.

    ``name_scopes`` lists the module fqns from the root ('') inwards, then the FX node's own name.
    """
    for prop in node.metadata_props:
        if prop.key == _NAME_SCOPES:
            scopes = ast.literal_eval(prop.value)
            return str(scopes[-2]) if len(scopes) >= 2 else None
    return None


def _linear_nodes(graph: onnx.GraphProto, fqns: Sequence[str]) -> dict[str, list[onnx.NodeProto]]:
    """The MatMul/Gemm node(s) each Linear ``fqn`` became: one per call of the module."""
    wanted = set(fqns)
    found: dict[str, list[onnx.NodeProto]] = {fqn: [] for fqn in fqns}
    used = {node.name for node in graph.node}
    for i, node in enumerate(graph.node):
        if node.op_type not in ("MatMul", "Gemm"):
            continue
        fqn = _module_path(node)
        if fqn in wanted:
            if not node.name:  # quantize_dynamic selects nodes by name
                _name_node(node, f"{fqn}.matmul_{i}", used)
            found[fqn].append(node)
    initializers = {init.name for init in graph.initializer}
    for fqn, nodes in found.items():
        if not nodes:
            raise PolicyError(
                f"Linear {fqn!r} has no MatMul/Gemm in the exported ONNX graph (is it called through its "
                "module, not F.linear on its weight?); leave it out of int8_dynamic_linears"
            )
        for node in nodes:
            if node.input[1] not in initializers:
                raise PolicyError(
                    f"Linear {fqn!r} exports to a {node.op_type} whose weight is computed, not stored, so ONNX "
                    "Runtime cannot quantize it; leave it out of int8_dynamic_linears"
                )
    return found


def _prepare_for_quantization(graph: onnx.GraphProto, fqns: Sequence[str]) -> list[str]:
    """Get ``graph`` ready for ``quantize_dynamic`` on the Linears ``fqns``; return the names of the MatMuls
    to quantize.

    ``quantize_dynamic`` first turns every ``Gemm`` into a ``MatMul``, transposing a ``transB`` weight *in
    place* (same initializer name, shape (out, in) -> (in, out)), then runs ONNX shape inference. The
    dynamo exporter records a ``value_info`` for every initializer, so a Gemm left to it, such as the
    classifier of a model whose encoder Linears alone are quantized, failed there with "Inferred shape
    and existing shape differ in dimension 0: (hidden) vs (labels)"; and a weight shared with another
    node (tied embeddings) would be transposed under that node too. Hence:

    * the initializers' ``value_info`` is dropped: it only repeats the initializer's own type and shape,
      and goes stale as soon as a weight is rewritten;
    * the requested Linears' Gemms, then every other Gemm ``quantize_dynamic`` would rewrite (one with a
      stored weight, no ``transA``, ``alpha`` = ``beta`` = 1), become ``MatMul`` + ``Add`` here, where a
      transposed weight gets a new name and a shared one is kept. The unrequested ones stay float
      (``nodes_to_quantize`` does not name them); ``quantize_dynamic`` would have turned them into
      MatMuls anyway.
    """
    initializers = {init.name for init in graph.initializer}
    value_info = [info for info in graph.value_info if info.name not in initializers]
    del graph.value_info[:]
    graph.value_info.extend(value_info)

    nodes = _linear_nodes(graph, fqns)
    names = [_as_matmul(graph, node, fqn) for fqn in fqns for node in nodes[fqn]]
    used = {node.name for node in graph.node}
    for i, node in enumerate(list(graph.node)):  # _as_matmul inserts nodes
        if node.op_type != "Gemm" or node.input[1] not in initializers:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            continue  # quantize_dynamic leaves these Gemms as they are
        if not node.name:  # the rewrite names the new weight and Add after the node
            _name_node(node, f"gemm_{i}", used)
        _as_matmul(graph, node, _module_path(node) or node.name)
    return names


def _name_node(node: onnx.NodeProto, name: str, used: set[str]) -> None:
    """Name ``node`` ``name``, with underscores appended until no node in ``used`` has it."""
    while name in used:
        name += "_"
    node.name = name
    used.add(name)


def _as_matmul(graph: onnx.GraphProto, node: onnx.NodeProto, fqn: str) -> str:
    """Turn a Linear's ``Gemm`` into ``MatMul`` (+ ``Add`` of the bias) in place, since ``quantize_dynamic``
    only quantizes MatMuls; return the MatMul's name. MatMul nodes are left as they are."""
    if node.op_type == "MatMul":
        return node.name
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
        raise PolicyError(
            f"Linear {fqn!r} exports to a Gemm with transA, alpha or beta; leave it out of int8_dynamic_linears"
        )
    weight = next(init for init in graph.initializer if init.name == node.input[1])
    if attrs.get("transB", 0):
        transposed = numpy_helper.from_array(np.ascontiguousarray(numpy_helper.to_array(weight).T), f"{node.name}.B")
        graph.initializer.append(transposed)
        weight_name = transposed.name
        if not any(weight.name in n.input for n in graph.node if n is not node):
            graph.initializer.remove(weight)
    else:
        weight_name = weight.name
    inputs, outputs = [node.input[0], weight_name], list(node.output)
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    index = list(graph.node).index(node)
    del node.input[:], node.attribute[:]
    node.op_type = "MatMul"
    node.input.extend(inputs)
    if bias is not None:
        product = f"{node.name}.product"
        node.output[0] = product
        graph.node.insert(index + 1, helper.make_node("Add", [product, bias], outputs, name=f"{node.name}.bias"))
    return node.name


# --- keeping third-party chatter out of the user's console -------------------------------------------------


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
    """Silence the exporter for this export only: Python warnings (deprecations inside torch, notes on
    renamed dynamic axes) and its loggers below ERROR (a "torchvision is not installed" warning per
    torchvision operator, one INFO line per folded constant or de-duplicated initializer). Their levels
    are restored afterwards; errors still raise.

    Not silenced: when torch.export fails it prints the partial graph to stderr; the export then raises
    anyway, and that graph is what one needs to fix the model.
    """
    loggers = [logging.getLogger(name) for name in _EXPORT_LOGGERS]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


class _DropOrtQuantizationWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno <= logging.WARNING and "onnxruntime" in record.pathname)


@contextlib.contextmanager
def _quiet_ort_quantization() -> Iterator[None]:
    """``quantize_dynamic`` logs on the *root* logger (advice to run its pre-processing, which elastiq's
    exported graphs do not need); drop those records while it runs, leave every other logger alone."""
    root, drop = logging.getLogger(), _DropOrtQuantizationWarnings()
    root.addFilter(drop)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.removeFilter(drop)


def _first_line(err: BaseException) -> str:
    text = _ANSI.sub("", str(err)).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _root_cause(err: BaseException) -> str:
    """The first line of the innermost exception: torch.onnx wraps the real reason (a failed guard, an
    unsupported operator) in a generic "Failed to export the model with torch.export" error."""
    while err.__cause__ is not None:
        err = err.__cause__
    return f"{type(err).__name__}: {_first_line(err)}"
