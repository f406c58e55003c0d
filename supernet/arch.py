"""Architectures of an elastic BERT and the space of choices they are drawn from.

An architecture is plain, hashable data: the number of heads and the FFN width of each *kept* layer
(the depth is the number of kept layers; which layers of the super-network they are is the model's depth
rule, ``supernet.bert.DEPTH_RULES``: the first ones by default). Keeping only the kept
layers makes the representation canonical: two architectures that differ only in layers that are
dropped anyway cannot exist, so a results store can key on `arch.to_dict()` directly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from supernet.errors import ArchError, ConfigError


@dataclass(frozen=True)
class BertArch:
    """One sub-network: ``heads[i]`` attention heads and ``ffn[i]`` FFN neurons in layer ``i``."""

    heads: tuple[int, ...]
    ffn: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.heads) != len(self.ffn):
            raise ArchError(
                f"architecture has {len(self.heads)} head counts but {len(self.ffn)} FFN widths; "
                "give one of each per kept layer"
            )
        if not self.heads:
            raise ArchError("architecture keeps no layer; keep at least one")
        if any(int(h) < 1 for h in self.heads) or any(int(f) < 1 for f in self.ffn):
            raise ArchError(f"head counts and FFN widths must be >= 1, got heads={self.heads} ffn={self.ffn}")
        object.__setattr__(self, "heads", tuple(int(h) for h in self.heads))
        object.__setattr__(self, "ffn", tuple(int(f) for f in self.ffn))

    @property
    def depth(self) -> int:
        return len(self.heads)

    def to_dict(self) -> dict[str, list[int]]:
        return {"heads": list(self.heads), "ffn": list(self.ffn)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BertArch:
        unknown = set(data) - {"heads", "ffn"}
        if unknown or "heads" not in data or "ffn" not in data:
            raise ArchError(f"an architecture is a mapping with exactly the keys 'heads' and 'ffn', got {sorted(data)}")
        return cls(heads=tuple(data["heads"]), ffn=tuple(data["ffn"]))


def _checked_choices(name: str, values: Sequence[int], upper: int) -> tuple[int, ...]:
    choices = tuple(sorted({int(v) for v in values}))
    if not choices:
        raise ConfigError(f"{name} has no choices; give at least one value in 1..{upper}")
    if choices[0] < 1 or choices[-1] > upper:
        raise ConfigError(f"{name} choices {list(choices)} must lie in 1..{upper} (the checkpoint's size)")
    if choices[-1] != upper:
        raise ConfigError(
            f"{name} choices {list(choices)} must include the full size {upper}, "
            "so that the largest sub-network is the pretrained model"
        )
    return choices


def _fractions_of(full: int, fractions: Sequence[float]) -> tuple[int, ...]:
    return tuple(sorted({max(1, math.ceil(full * f)) for f in fractions}))


@dataclass(frozen=True)
class BertElasticSpace:
    """The finite choices per elastic dimension; the same head and FFN choices apply to every layer."""

    num_layers: int
    num_heads: int
    intermediate_size: int
    depth_choices: tuple[int, ...]
    head_choices: tuple[int, ...]
    ffn_choices: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "depth_choices", _checked_choices("depth", self.depth_choices, self.num_layers))
        object.__setattr__(self, "head_choices", _checked_choices("heads", self.head_choices, self.num_heads))
        object.__setattr__(self, "ffn_choices", _checked_choices("ffn", self.ffn_choices, self.intermediate_size))

    @classmethod
    def default(cls, num_layers: int, num_heads: int, intermediate_size: int) -> BertElasticSpace:
        """Defaults derived from the checkpoint: depth from a third of the layers up, and a quarter,
        half, three quarters and all of the heads and FFN neurons (the grid DynaBERT-style width
        multipliers use), which gives roughly 10x between the smallest and the largest sub-network."""
        return cls(
            num_layers=num_layers,
            num_heads=num_heads,
            intermediate_size=intermediate_size,
            depth_choices=tuple(range(max(1, math.ceil(num_layers / 3)), num_layers + 1)),
            head_choices=_fractions_of(num_heads, (0.25, 0.5, 0.75, 1.0)),
            ffn_choices=_fractions_of(intermediate_size, (0.25, 0.5, 0.75, 1.0)),
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BertElasticSpace:
        allowed = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - allowed
        if unknown:
            raise ConfigError(f"unknown elastic-space keys {sorted(unknown)}; allowed: {sorted(allowed)}")
        return cls(
            num_layers=int(data["num_layers"]),
            num_heads=int(data["num_heads"]),
            intermediate_size=int(data["intermediate_size"]),
            depth_choices=tuple(data["depth_choices"]),
            head_choices=tuple(data["head_choices"]),
            ffn_choices=tuple(data["ffn_choices"]),
        )

    def with_choices(self, overrides: Mapping[str, Sequence[int]] | None) -> BertElasticSpace:
        """A copy with some choice lists replaced (e.g. from a YAML config); unknown keys are errors."""
        if not overrides:
            return self
        allowed = {"depth_choices", "head_choices", "ffn_choices"}
        unknown = set(overrides) - allowed
        if unknown:
            raise ConfigError(f"unknown elastic-space keys {sorted(unknown)}; allowed: {sorted(allowed)}")
        data = self.to_dict()
        data.update({k: list(v) for k, v in overrides.items()})
        return BertElasticSpace.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "intermediate_size": self.intermediate_size,
            "depth_choices": list(self.depth_choices),
            "head_choices": list(self.head_choices),
            "ffn_choices": list(self.ffn_choices),
        }

    def largest(self) -> BertArch:
        depth = self.depth_choices[-1]
        return BertArch(heads=(self.head_choices[-1],) * depth, ffn=(self.ffn_choices[-1],) * depth)

    def smallest(self) -> BertArch:
        depth = self.depth_choices[0]
        return BertArch(heads=(self.head_choices[0],) * depth, ffn=(self.ffn_choices[0],) * depth)

    def sample(self, rng: np.random.Generator) -> BertArch:
        """A uniformly random architecture: depth, then each kept layer's heads and FFN width."""
        depth = int(rng.choice(self.depth_choices))
        heads = tuple(int(h) for h in rng.choice(self.head_choices, size=depth))
        ffn = tuple(int(f) for f in rng.choice(self.ffn_choices, size=depth))
        return BertArch(heads=heads, ffn=ffn)

    def validate(self, arch: BertArch) -> BertArch:
        """Return ``arch`` if it belongs to this space, else raise an ArchError saying what is off."""
        if arch.depth not in self.depth_choices:
            raise ArchError(f"depth {arch.depth} is not one of the space's depth choices {self.depth_choices}")
        for i, (h, f) in enumerate(zip(arch.heads, arch.ffn, strict=True)):
            if h not in self.head_choices:
                raise ArchError(f"layer {i}: {h} heads is not one of the head choices {self.head_choices}")
            if f not in self.ffn_choices:
                raise ArchError(f"layer {i}: FFN width {f} is not one of the FFN choices {self.ffn_choices}")
        return arch

    def __contains__(self, arch: object) -> bool:
        if not isinstance(arch, BertArch):
            return False
        try:
            self.validate(arch)
        except ArchError:
            return False
        return True
