"""The registry of precisions a quantization policy may name.

One decorator, ``@register_precision("name")``, fills the registry at import time (as timm's
``register_model`` does), so a new precision is one class in one module and nothing else changes:
policies, size accounting and hardware profiles all look precisions up here by name.

A precision knows four things: whether it can run on a device (``supported``), whether it can take a
Linear of a given shape (``layer_problem``), how many bytes one such Linear's weight occupies once
quantized (``weight_bytes``, for size accounting without building the model), and how to turn the
named Linears of a model into that precision (``apply``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor, nn

from quant.errors import PrecisionError

#: Calibration data: batches as the tokenizer/``supernet.data.make_batches`` give them (a mapping with
#: ``input_ids``, ``attention_mask`` and ``token_type_ids``; other keys such as ``labels`` are ignored).
Calibration = Iterable[Mapping[str, Tensor]]


@dataclass(frozen=True)
class Support:
    """Whether a precision runs on a device, and why not (or a caveat) in one line; truthy when it runs."""

    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


class Precision(ABC):
    """One way to store and run a Linear layer. Subclasses are registered with ``register_precision``.

    Options (such as int4's group size) are keyword arguments of ``__init__`` and are reported by
    ``options()`` so that a policy can store them in its JSON and rebuild the same precision.
    """

    #: The registered name; set by ``register_precision``.
    name: ClassVar[str] = ""
    #: Nominal bits of one weight element, before per-group/per-channel scales (those are in ``weight_bytes``).
    bits_per_weight: ClassVar[float]
    #: True when the precision rewrites the whole model into a graph (PT2E); such precisions are applied
    #: first, on the float model, and the module-level ones afterwards (see ``quant.apply``).
    graph_level: ClassVar[bool] = False
    #: State-dict entries a quantized Linear stores besides its weight and bias (PT2E: scale and zero-point),
    #: for the container overhead in ``quant.size.estimate_size_bytes``.
    extra_state_entries: ClassVar[int] = 0

    def options(self) -> dict[str, Any]:
        """The keyword options this instance was built with (JSON-serialisable)."""
        return {}

    def supported(self, device: torch.device | str = "cpu") -> Support:
        """Whether this precision runs on ``device`` of *this* machine, with the reason when it does not."""
        return Support(True)

    def layer_problem(self, out_features: int, in_features: int) -> str | None:
        """Why a Linear of this shape cannot take this precision, or None when it can."""
        return None

    @abstractmethod
    def weight_bytes(self, out_features: int, in_features: int) -> int:
        """Bytes of one quantized Linear weight as serialised, scales and zero-points included, bias excluded
        (every precision keeps the bias in fp32)."""

    @abstractmethod
    def apply(self, model: nn.Module, fqns: Sequence[str], calibration: Calibration | None = None) -> nn.Module:
        """Quantize the Linears named ``fqns`` of ``model`` (which the caller owns and may be changed in place);
        return the model to use from now on (the same object, or a new one for graph-level precisions)."""


_P = TypeVar("_P", bound=type[Precision])
_REGISTRY: dict[str, type[Precision]] = {}


def register_precision(name: str) -> Callable[[_P], _P]:
    """Class decorator: register a Precision subclass under ``name`` (a duplicate name is an error)."""

    def decorate(cls: _P) -> _P:
        if not (isinstance(cls, type) and issubclass(cls, Precision)):
            raise TypeError(f"@register_precision({name!r}) decorates Precision subclasses, got {cls!r}")
        if name in _REGISTRY:
            raise PrecisionError(
                f"precision {name!r} is already registered by {_REGISTRY[name].__qualname__}; pick another name"
            )
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def precision_names() -> tuple[str, ...]:
    """Registered precision names, in registration order (the built-ins first)."""
    return tuple(_REGISTRY)


def get_precision(name: str, **options: Any) -> Precision:
    """The precision registered as ``name``, built with ``options`` (e.g. ``group_size=128`` for int4)."""
    try:
        cls = _REGISTRY[name]
    except (KeyError, TypeError):
        raise PrecisionError(f"unknown precision {name!r}; known precisions: {', '.join(_REGISTRY)}") from None
    try:
        return cls(**options)
    except TypeError as exc:
        raise PrecisionError(f"bad options {options} for precision {name!r}: {exc}; see its docstring") from None
