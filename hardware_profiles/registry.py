"""The profiles elastiq knows: the built-in ones plus the user's folders, passed explicitly.

Profiles are data, so this registry is filled from folders of ``<name>.yaml`` files rather than by a
decorator: ``hardware_profiles/builtin/`` (shipped as package data) and any ``extra_dirs`` the caller
names. Nothing is read from the environment or a global config; a name defined twice is an error, as
is a file whose profile name differs from its file name (so ``get_profile(name)`` always tells where
a profile lives).
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import resources
from pathlib import Path

from hardware_profiles.errors import ProfileError
from hardware_profiles.profile import HardwareProfile, load_profile

_SUFFIXES = (".yaml", ".yml")


def builtin_dir() -> Path:
    """The folder of the profiles shipped with elastiq."""
    return Path(str(resources.files("hardware_profiles").joinpath("builtin")))


def _profile_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise ProfileError(f"profile folder {folder} does not exist; give a folder of <name>.yaml profiles")
    return sorted(p for p in folder.iterdir() if p.suffix in _SUFFIXES and p.is_file())


def load_profiles(extra_dirs: Iterable[str | Path] = ()) -> dict[str, HardwareProfile]:
    """Every profile, by name: the built-ins first, then each of ``extra_dirs`` in order."""
    profiles: dict[str, HardwareProfile] = {}
    for folder in [builtin_dir(), *(Path(d) for d in extra_dirs)]:
        for path in _profile_files(folder):
            profile = load_profile(path)
            if profile.name != path.stem:
                raise ProfileError(
                    f"{path} defines profile {profile.name!r}; a profile's name must equal its file name "
                    f"({path.stem!r}): rename the file or the profile"
                )
            if profile.name in profiles:
                raise ProfileError(
                    f"profile {profile.name!r} is defined twice, in {profiles[profile.name].source} and {path}; "
                    "rename one of them"
                )
            profiles[profile.name] = profile
    return profiles


def profile_names(extra_dirs: Iterable[str | Path] = ()) -> list[str]:
    return sorted(load_profiles(extra_dirs))


def get_profile(name: str, extra_dirs: Iterable[str | Path] = ()) -> HardwareProfile:
    """The profile called ``name`` among the built-ins and ``extra_dirs``."""
    profiles = load_profiles(extra_dirs)
    if name not in profiles:
        raise ProfileError(f"unknown hardware profile {name!r}; known profiles: {', '.join(sorted(profiles))}")
    return profiles[name]
