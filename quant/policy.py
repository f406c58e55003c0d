"""A quantization policy: which precision each Linear layer of a sub-network gets.

Like torchao's ``FqnToConfig``, a policy maps module names (``bert.encoder.layer.0.attention.self.query``)
to precisions, but by registered *name*, so that it is plain data: hashable, comparable, and
round-tripping through JSON with a version field. Precision options (int4's group size, int8_static's
``reduce_range``) live next to the map, one set per precision, so a stored policy rebuilds exactly the
precisions it was applied with. Layers the policy does not name stay fp32.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from torch import nn

from quant.errors import PolicyError
from quant.registry import Precision, get_precision, precision_names
from quant.targets import linear_shapes
from supernet.bert import BertShape

POLICY_VERSION = 1
_JSON_KEYS = ("version", "layers", "options")


class QuantPolicy(Mapping[str, str]):
    """Frozen mapping ``{module fqn: precision name}`` plus per-precision options ``{name: {option: value}}``."""

    __slots__ = ("_layers", "_options")

    def __init__(
        self, layers: Mapping[str, str] | None = None, options: Mapping[str, Mapping[str, Any]] | None = None
    ) -> None:
        known = precision_names()
        checked: dict[str, str] = {}
        for fqn, name in (layers or {}).items():
            if not isinstance(fqn, str) or not fqn:
                raise PolicyError(f"policy layer names must be non-empty strings, got {fqn!r}")
            if name not in known:
                raise PolicyError(f"layer {fqn!r} has unknown precision {name!r}; known precisions: {', '.join(known)}")
            checked[fqn] = name
        opts: dict[str, dict[str, Any]] = {}
        for name, values in (options or {}).items():
            if name not in known:
                raise PolicyError(f"options given for unknown precision {name!r}; known precisions: {', '.join(known)}")
            if not isinstance(values, Mapping):
                raise PolicyError(f"options of {name!r} must be a mapping of option names to values, got {values!r}")
            if values:
                get_precision(name, **values)  # validates the options now, not when the policy is applied
                opts[name] = dict(values)
        self._layers = checked
        self._options = opts

    # Mapping interface -------------------------------------------------------------------------------
    def __getitem__(self, fqn: str) -> str:
        return self._layers[fqn]

    def __iter__(self) -> Iterator[str]:
        return iter(self._layers)

    def __len__(self) -> int:
        return len(self._layers)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QuantPolicy):
            return NotImplemented
        return self._layers == other._layers and self._options == other._options

    def __hash__(self) -> int:
        return hash((frozenset(self._layers.items()), json.dumps(self._options, sort_keys=True)))

    def __repr__(self) -> str:
        return f"QuantPolicy({self._layers!r}, options={self._options!r})"

    # Policy-specific -------------------------------------------------------------------------------
    @property
    def options(self) -> dict[str, dict[str, Any]]:
        """A copy of the per-precision options."""
        return {name: dict(values) for name, values in self._options.items()}

    def precision_for(self, fqn: str) -> str:
        """The precision of layer ``fqn``; fp32 for layers the policy does not name."""
        return self._layers.get(fqn, "fp32")

    def build(self, name: str) -> Precision:
        """The precision ``name`` built with this policy's options for it."""
        return get_precision(name, **self._options.get(name, {}))

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": POLICY_VERSION,
            "layers": dict(sorted(self._layers.items())),
            "options": {name: dict(sorted(values.items())) for name, values in sorted(self._options.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QuantPolicy:
        if not isinstance(data, Mapping):
            raise PolicyError(f"a policy is a JSON object with keys {list(_JSON_KEYS)}, got {type(data).__name__}")
        unknown = sorted(set(data) - set(_JSON_KEYS))
        if unknown:
            raise PolicyError(f"unknown policy keys {unknown}; allowed: {list(_JSON_KEYS)}")
        if "version" not in data or "layers" not in data:
            raise PolicyError(f"a policy needs the keys 'version' and 'layers', got {sorted(data)}")
        if data["version"] != POLICY_VERSION:
            raise PolicyError(
                f"policy version {data['version']!r} is not supported; this elastiq reads version {POLICY_VERSION}"
            )
        if not isinstance(data["layers"], Mapping):
            raise PolicyError("policy 'layers' must be an object mapping module names to precision names")
        options = data.get("options") or {}
        if not isinstance(options, Mapping):
            raise PolicyError("policy 'options' must be an object mapping precision names to their options")
        return cls(data["layers"], options)

    def to_json(self, indent: int | None = 2) -> str:
        """Canonical JSON (sorted keys), with ``"version": 1``."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> QuantPolicy:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PolicyError(f"policy is not valid JSON ({exc}); fix the file") from None
        return cls.from_dict(data)


def model_shape(model: nn.Module) -> BertShape:
    """The ``BertShape`` of an elastiq model (eager or quantized); a clear error for other modules."""
    shape = getattr(model, "shape", None)
    if not isinstance(shape, BertShape):
        raise PolicyError(
            f"{type(model).__name__} has no elastiq BertShape; quantization policies apply to models from "
            "supernet.checkpoint / supernet.extract"
        )
    return shape


def policy_targets(model: nn.Module) -> list[str]:
    """The Linear layers a policy may name: q, k, v, attention output, FFN in, FFN out of every layer,
    and the classifier (not the pooler; see ``quant.targets``). For an extracted sub-network, as is."""
    return list(linear_shapes(model_shape(model)))


def uniform_policy(
    model: nn.Module,
    precision: str,
    *,
    options: Mapping[str, Any] | None = None,
    fallback: str | None = "fp32",
) -> QuantPolicy:
    """Every target layer in ``precision``.

    Layers the precision cannot take (int4 needs ``out_features`` divisible by 16, so a 2-label
    classifier cannot) get ``fallback`` explicitly; with ``fallback=None`` they are an error instead.
    """
    built = get_precision(precision, **(options or {}))
    if fallback is not None:
        get_precision(fallback)
    layers: dict[str, str] = {}
    for fqn, (out_features, in_features) in linear_shapes(model_shape(model)).items():
        problem = built.layer_problem(out_features, in_features)
        if problem is None:
            layers[fqn] = precision
        elif fallback is None:
            raise PolicyError(f"{fqn} cannot take {precision}: {problem}; pass a fallback precision for such layers")
        else:
            layers[fqn] = fallback
    return QuantPolicy(layers, {precision: dict(options)} if options else None)
