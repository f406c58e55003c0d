"""What this machine has, and whether it can measure a profile.

Features use the names ``/proc/cpuinfo`` gives CPU flags (``avx2``, ``avx512_vnni``, ``amx_tile``, ...),
plus ``cuda`` when torch sees a CUDA device, plus the normalised architecture (``x86_64``,
``aarch64``). A profile whose ``requires`` this machine lacks cannot be *measured* here, but stays
valid for *prediction* from latency tables measured elsewhere, so the check is a separate step that
only measurement code calls.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

import torch

from hardware_profiles.errors import ProfileError
from hardware_profiles.profile import HardwareProfile

CPUINFO = Path("/proc/cpuinfo")
_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}
# Fallback where /proc/cpuinfo does not exist: the ISA level torch dispatches its CPU kernels to.
_CAPABILITY_FLAGS = {"AVX2": {"avx2"}, "AVX512": {"avx2", "avx512f"}}


@dataclass(frozen=True)
class Machine:
    """The features of one machine (CPU flags, architecture, CUDA)."""

    architecture: str
    cpu_model: str
    cpu_flags: frozenset[str]
    cuda: bool
    cuda_devices: tuple[str, ...] = ()

    @property
    def features(self) -> frozenset[str]:
        """Every name a profile's ``requires`` can match on this machine."""
        extra = {self.architecture} | ({"cuda"} if self.cuda else set())
        return self.cpu_flags | extra


def parse_cpuinfo(text: str) -> tuple[frozenset[str], str]:
    """CPU flags (``flags`` on x86, ``Features`` on ARM) and model name from /proc/cpuinfo text.

    Only the first processor block is read: flags are the same on every core of a machine.
    """
    flags: frozenset[str] = frozenset()
    model = ""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        if key in ("flags", "features") and not flags:
            flags = frozenset(value.split())
        elif key == "model name" and not model:
            model = value.strip()
    return flags, model


def detect_machine(cpuinfo: Path = CPUINFO) -> Machine:
    """This machine's features (reads ``cpuinfo`` and asks torch about CUDA)."""
    try:
        flags, model = parse_cpuinfo(cpuinfo.read_text(encoding="utf-8", errors="replace"))
    except OSError:  # not Linux: fall back to the ISA level torch reports
        flags = frozenset(_CAPABILITY_FLAGS.get(torch.backends.cpu.get_cpu_capability(), set()))
        model = platform.processor()
    arch = platform.machine().lower()
    cuda = torch.cuda.is_available()
    devices = tuple(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())) if cuda else ()
    return Machine(
        architecture=_ARCH_ALIASES.get(arch, arch),
        cpu_model=model,
        cpu_flags=flags,
        cuda=cuda,
        cuda_devices=devices,
    )


def missing_features(profile: HardwareProfile, machine: Machine) -> tuple[str, ...]:
    """What ``profile`` needs that ``machine`` lacks (a cuda device counts as needing ``cuda``)."""
    needed = list(profile.requires)
    if profile.device == "cuda" and "cuda" not in needed:
        needed.append("cuda")
    return tuple(f for f in needed if f not in machine.features)


def check_measurable(profile: HardwareProfile, machine: Machine | None = None) -> None:
    """Raise ProfileError unless this machine (or ``machine``) has everything ``profile`` requires."""
    machine = machine or detect_machine()
    missing = missing_features(profile, machine)
    if missing:
        raise ProfileError(
            f"profile {profile.name} cannot be measured on this machine: it lacks {', '.join(missing)} "
            f"({machine.cpu_model or machine.architecture}); the profile can still be used for prediction "
            "from stored latency tables"
        )
