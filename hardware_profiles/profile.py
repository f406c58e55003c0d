"""One hardware profile: a deployment target as versioned data (YAML), validated into a frozen dataclass.

A profile says how latency is measured for that target (device, runtime and its options, batch size,
sequence length, threads, warm-up and repeats) and which precisions the search may use there. It is
loaded with ``yaml.safe_load`` and every value is checked once, here, so that the rest of elastiq can
trust it; each error is one line naming the file, the key and the fix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from hardware_profiles import compat
from hardware_profiles.errors import ProfileError
from quant.registry import precision_names

SCHEMA_VERSION = 1
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_FEATURE = re.compile(r"^[a-z0-9][a-z0-9_.]*$")  # /proc/cpuinfo flag syntax, plus "cuda"
_OPTIONAL = {"description": "", "runtime_options": {}}


@dataclass(frozen=True)
class HardwareProfile:
    """A validated profile. ``requires`` lists the machine features needed to *measure* it here
    (CPU flags as /proc/cpuinfo names them, or ``cuda``); any machine can use it for prediction."""

    schema_version: int
    name: str
    description: str
    device: str
    requires: tuple[str, ...]
    runtime: str
    runtime_options: Mapping[str, Any]
    batch_size: int
    sequence_length: int
    threads: int
    warmup: int
    repeats: int
    precisions: tuple[str, ...]
    source: str = field(default="", compare=False)  # where it was loaded from, for messages only

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """The keys a profile file may hold."""
        return tuple(f.name for f in fields(cls) if f.name != "source")

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> HardwareProfile:
        """Validate ``data`` (a parsed YAML mapping) into a profile; ``source`` names it in errors."""
        if not isinstance(data, Mapping):
            raise ProfileError(f"{source}: a profile is a YAML mapping of keys to values, got {type(data).__name__}")
        allowed = cls.keys()
        unknown = sorted(str(k) for k in set(data) - set(allowed))
        if unknown:
            raise ProfileError(f"{source}: unknown keys {unknown}; allowed keys: {', '.join(allowed)}")
        missing = [k for k in allowed if k not in data and k not in _OPTIONAL]
        if missing:
            raise ProfileError(f"{source}: missing keys {missing}; every profile needs {', '.join(allowed)}")
        values = {**_OPTIONAL, **data}

        version = values["schema_version"]
        if version != SCHEMA_VERSION:
            raise ProfileError(f"{source}: schema_version {version!r} is not supported; this elastiq reads 1")
        name = _text(values, "name", source)
        if not _NAME.match(name):
            raise ProfileError(f"{source}: name {name!r} must be lowercase letters, digits, '.', '_' or '-'")
        device = _choice(values, "device", compat.DEVICES, source)
        runtime = _choice(values, "runtime", compat.RUNTIMES, source)
        problem = compat.runtime_device_problem(runtime, device)
        if problem:
            raise ProfileError(f"{source}: {problem}; change device or runtime")

        options = values["runtime_options"] if values["runtime_options"] is not None else {}
        if not isinstance(options, Mapping):
            raise ProfileError(f"{source}: runtime_options must be a mapping, got {options!r}")
        for option, value in options.items():
            problem = compat.runtime_option_problem(runtime, str(option), value)
            if problem:
                raise ProfileError(f"{source}: {problem}")

        return cls(
            schema_version=SCHEMA_VERSION,
            name=name,
            description=_text(values, "description", source, allow_empty=True),
            device=device,
            requires=_features(values["requires"], source),
            runtime=runtime,
            runtime_options=MappingProxyType(dict(options)),
            batch_size=_integer(values, "batch_size", source, minimum=1),
            sequence_length=_integer(values, "sequence_length", source, minimum=1),
            threads=_integer(values, "threads", source, minimum=1),
            warmup=_integer(values, "warmup", source, minimum=0),
            repeats=_integer(values, "repeats", source, minimum=1),
            precisions=_precisions(values["precisions"], runtime, device, source),
            source=source,
        )

    def to_dict(self) -> dict[str, Any]:
        """The profile as plain data (what its YAML file holds), e.g. to write next to measurements."""
        data = {f: getattr(self, f) for f in self.keys()}
        data["requires"], data["precisions"] = list(self.requires), list(self.precisions)
        data["runtime_options"] = dict(self.runtime_options)
        return data


def load_profile(path: str | Path) -> HardwareProfile:
    """Read and validate one profile file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProfileError(f"cannot read profile {path}: {exc.strerror or exc}; check the path") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise ProfileError(f"{path} is not valid YAML{at}; fix the syntax") from None
    return HardwareProfile.from_dict(data, source=str(path))


def _text(values: Mapping[str, Any], key: str, source: str, *, allow_empty: bool = False) -> str:
    value = values[key]
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise ProfileError(f"{source}: {key} must be a {'' if allow_empty else 'non-empty '}string, got {value!r}")
    return value


def _choice(values: Mapping[str, Any], key: str, choices: tuple[str, ...], source: str) -> str:
    value = values[key]
    if value not in choices:
        raise ProfileError(f"{source}: unknown {key} {value!r}; use one of {', '.join(choices)}")
    return str(value)


def _integer(values: Mapping[str, Any], key: str, source: str, *, minimum: int) -> int:
    value = values[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ProfileError(f"{source}: {key} must be {what}, got {value!r}")
    return value


def _string_list(value: Any, key: str, source: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProfileError(f"{source}: {key} must be a list of names, got {value!r}")
    duplicates = sorted({v for v in value if value.count(v) > 1})
    if duplicates:
        raise ProfileError(f"{source}: {key} lists {duplicates} more than once; list each once")
    return tuple(value)


def _features(value: Any, source: str) -> tuple[str, ...]:
    features = _string_list(value, "requires", source)
    bad = [f for f in features if not _FEATURE.match(f)]
    if bad:
        raise ProfileError(
            f"{source}: requires {bad} are not feature names; use /proc/cpuinfo flag names (avx2, avx512_vnni, "
            "amx_tile, ...) or cuda"
        )
    return features


def _precisions(value: Any, runtime: str, device: str, source: str) -> tuple[str, ...]:
    names = _string_list(value, "precisions", source)
    if not names:
        raise ProfileError(f"{source}: precisions is empty; list at least fp32")
    known = precision_names()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ProfileError(f"{source}: unknown precisions {unknown}; known precisions: {', '.join(known)}")
    for name in names:
        problem = compat.precision_problem(name, runtime, device)
        if problem:
            raise ProfileError(f"{source}: precision {name} cannot run with runtime {runtime} on {device}: {problem}")
    return names
