"""Hardware profiles: the built-ins, validation errors, user folders, duplicates, machine checks."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from hardware_profiles.errors import ProfileError
from hardware_profiles.hardware import Machine, check_measurable, detect_machine, missing_features, parse_cpuinfo
from hardware_profiles.profile import HardwareProfile, load_profile
from hardware_profiles.registry import builtin_dir, get_profile, load_profiles, profile_names
from supernet.errors import ElastiqError

BUILTIN = ("onnxruntime-cpu-b1", "x86-eager-b1", "x86-inductor-b1", "x86-inductor-b32")


def _valid(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "schema_version": 1,
        "name": "my-box",
        "description": "a test profile",
        "device": "cpu",
        "requires": ["avx2"],
        "runtime": "inductor",
        "runtime_options": {"freezing": True},
        "batch_size": 4,
        "sequence_length": 64,
        "threads": 2,
        "warmup": 1,
        "repeats": 3,
        "precisions": ["fp32", "int8_static"],
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not _DROP}


_DROP = object()


def _write(folder: Path, data: dict[str, Any], stem: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem or data['name']}.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


# --- the built-ins -----------------------------------------------------------------------------------


def test_builtin_profiles_all_load() -> None:
    assert profile_names() == sorted(BUILTIN)
    for name in BUILTIN:
        profile = get_profile(name)
        assert profile.name == name and profile.schema_version == 1
        assert profile.requires == ("avx2",)  # what they need to run at all, nothing aspirational
        assert profile.device == "cpu" and profile.threads == 2 and profile.sequence_length == 128
        assert "fp32" in profile.precisions
        assert HardwareProfile.from_dict(profile.to_dict()) == profile


def test_builtin_profiles_say_what_the_brief_says() -> None:
    b1, b32 = get_profile("x86-inductor-b1"), get_profile("x86-inductor-b32")
    assert (b1.runtime, dict(b1.runtime_options), b1.batch_size) == ("inductor", {"freezing": True}, 1)
    assert (b32.runtime, dict(b32.runtime_options), b32.batch_size) == ("inductor", {"freezing": True}, 32)
    assert "int8_static" in b1.precisions and "int8_static" not in get_profile("x86-eager-b1").precisions
    onnx = get_profile("onnxruntime-cpu-b1")
    assert onnx.runtime == "onnxruntime" and onnx.batch_size == 1
    assert not {"bf16", "int4_weight_only", "int8_static"} & set(onnx.precisions)


def test_builtin_files_live_in_the_package() -> None:
    assert builtin_dir().parent.name == "hardware_profiles"
    assert sorted(p.stem for p in builtin_dir().glob("*.yaml")) == sorted(BUILTIN)


# --- validation ----------------------------------------------------------------------------------------


def test_a_valid_profile_is_frozen_data() -> None:
    profile = HardwareProfile.from_dict(_valid(), source="t.yaml")
    assert profile.precisions == ("fp32", "int8_static")
    with pytest.raises(AttributeError):
        profile.batch_size = 8  # type: ignore[misc]
    with pytest.raises(TypeError):
        profile.runtime_options["freezing"] = False  # type: ignore[index]
    assert HardwareProfile.from_dict(_valid(description=_DROP, runtime_options=_DROP)).runtime_options == {}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"batch": 1}, r"t.yaml: unknown keys \['batch'\]; allowed keys: schema_version, name, description"),
        ({"threads": _DROP, "warmup": _DROP}, r"t.yaml: missing keys \['threads', 'warmup'\]; every profile needs"),
        ({"schema_version": 2}, "schema_version 2 is not supported; this elastiq reads 1"),
        ({"name": "My Box"}, "name 'My Box' must be lowercase letters"),
        ({"device": "tpu"}, "unknown device 'tpu'; use one of cpu, cuda"),
        ({"runtime": "tensorrt"}, "unknown runtime 'tensorrt'; use one of eager, inductor, onnxruntime"),
        ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
        ({"batch_size": True}, "batch_size must be a positive integer, got True"),
        ({"sequence_length": "128"}, "sequence_length must be a positive integer, got '128'"),
        ({"threads": -1}, "threads must be a positive integer, got -1"),
        ({"warmup": -1}, "warmup must be an integer >= 0, got -1"),
        ({"repeats": 0}, "repeats must be a positive integer, got 0"),
        ({"runtime_options": {"fusion": True}}, "runtime inductor has no option 'fusion'; its options: freezing"),
        ({"runtime_options": {"freezing": "yes"}}, "runtime option freezing must be true or false, got 'yes'"),
        ({"runtime_options": [1]}, r"runtime_options must be a mapping, got \[1\]"),
        (
            {"runtime": "onnxruntime", "runtime_options": {"sessions": 0}, "precisions": ["fp32"]},
            "runtime option sessions must be a positive number of sessions, got 0",
        ),
        ({"requires": "avx2"}, "requires must be a list of names, got 'avx2'"),
        ({"requires": ["AVX 2"]}, r"requires \['AVX 2'\] are not feature names; use /proc/cpuinfo flag names"),
        ({"precisions": []}, "precisions is empty; list at least fp32"),
        ({"precisions": ["fp32", "fp32"]}, r"precisions lists \['fp32'\] more than once"),
        ({"precisions": ["fp32", "int3"]}, r"unknown precisions \['int3'\]; known precisions: fp32, bf16"),
    ],
)
def test_bad_profiles_are_clear_errors(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        HardwareProfile.from_dict(_valid(**changes), source="t.yaml")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"runtime": "eager", "runtime_options": {}},
            "precision int8_static cannot run with runtime eager on cpu: int8_static runs only with runtime inductor",
        ),
        (
            {"runtime": "onnxruntime", "runtime_options": {}, "precisions": ["int4_weight_only"]},
            "precision int4_weight_only cannot run with runtime onnxruntime on cpu: .* does not export to ONNX",
        ),
        (
            {"runtime": "onnxruntime", "runtime_options": {}, "precisions": ["bf16"]},
            "precision bf16 cannot run with runtime onnxruntime on cpu: ONNX Runtime's CPU provider has no bf16",
        ),
        (
            {"runtime": "onnxruntime", "runtime_options": {}, "precisions": ["int8_weight_only"]},
            "ONNX Runtime has no weight-only int8 matmul; use int8_dynamic",
        ),
        ({"device": "cuda", "requires": ["cuda"]}, "precision int8_static cannot run with runtime inductor on cuda"),
        ({"device": "cuda", "precisions": ["int4_weight_only"]}, "int4_weight_only is torchao's CPU int4 kernel"),
        ({"device": "cuda", "runtime": "onnxruntime", "runtime_options": {}}, "runtime onnxruntime runs on cpu only"),
    ],
)
def test_precisions_the_runtime_cannot_run_are_rejected(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        HardwareProfile.from_dict(_valid(**changes), source="t.yaml")


def test_cuda_profile_with_supported_precisions_loads() -> None:
    profile = HardwareProfile.from_dict(
        _valid(device="cuda", requires=["cuda"], precisions=["fp32", "bf16", "int8_dynamic", "int8_weight_only"])
    )
    assert profile.device == "cuda"


def test_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n", encoding="utf-8")
    with pytest.raises(ProfileError, match=r"bad.yaml is not valid YAML at line \d+; fix the syntax"):
        load_profile(bad)
    bad.write_text("- just\n- a list\n", encoding="utf-8")
    with pytest.raises(ProfileError, match=r"bad.yaml: a profile is a YAML mapping of keys to values, got list"):
        load_profile(bad)
    with pytest.raises(ProfileError, match=r"cannot read profile .*missing.yaml"):
        load_profile(tmp_path / "missing.yaml")


# --- the registry: user folders, duplicates, unknown names ----------------------------------------------


def test_user_folders_add_profiles(tmp_path: Path) -> None:
    _write(tmp_path / "a", _valid(name="box-a"))
    _write(tmp_path / "b", _valid(name="box-b", batch_size=16))
    profiles = load_profiles(extra_dirs=[tmp_path / "a", str(tmp_path / "b")])
    assert set(profiles) == {*BUILTIN, "box-a", "box-b"}
    assert get_profile("box-b", extra_dirs=[tmp_path / "b"]).batch_size == 16
    assert profiles["box-a"].source == str(tmp_path / "a" / "box-a.yaml")
    assert "box-a" not in profile_names()  # nothing is remembered between calls


def test_duplicate_names_are_an_error(tmp_path: Path) -> None:
    copy = _write(
        tmp_path / "mine", _valid(name="x86-eager-b1", runtime="eager", runtime_options={}, precisions=["fp32"])
    )
    with pytest.raises(
        ProfileError, match=rf"'x86-eager-b1' is defined twice, in .*x86-eager-b1.yaml and {re.escape(str(copy))}"
    ):
        load_profiles(extra_dirs=[tmp_path / "mine"])
    _write(tmp_path / "one", _valid(name="twin"))
    _write(tmp_path / "two", _valid(name="twin"))
    with pytest.raises(ProfileError, match="'twin' is defined twice"):
        load_profiles(extra_dirs=[tmp_path / "one", tmp_path / "two"])


def test_name_must_match_file_and_folders_must_exist(tmp_path: Path) -> None:
    _write(tmp_path / "c", _valid(name="inner"), stem="outer")
    with pytest.raises(ProfileError, match=r"outer.yaml defines profile 'inner'; a profile's name must equal"):
        load_profiles(extra_dirs=[tmp_path / "c"])
    with pytest.raises(ProfileError, match=r"profile folder .*nowhere does not exist"):
        load_profiles(extra_dirs=[tmp_path / "nowhere"])


def test_unknown_profile_lists_the_known_ones() -> None:
    with pytest.raises(
        ProfileError, match="unknown hardware profile 'x86-b1'; known profiles: onnxruntime-cpu-b1, x86"
    ):
        get_profile("x86-b1")


# --- this machine ------------------------------------------------------------------------------------

_X86 = "processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu sse2 avx avx2 fma\n\nprocessor\t: 1\nflags\t: fpu\n"
_ARM = "processor\t: 0\nFeatures\t: fp asimd sve\nCPU implementer\t: 0x41\n"


def test_cpuinfo_is_parsed_on_x86_and_arm() -> None:
    assert parse_cpuinfo(_X86) == (frozenset({"fpu", "sse2", "avx", "avx2", "fma"}), "Test CPU")
    assert parse_cpuinfo(_ARM)[0] == frozenset({"fp", "asimd", "sve"})


def test_this_machine_can_measure_the_builtin_profiles_iff_it_has_avx2() -> None:
    machine = detect_machine()
    for name in BUILTIN:
        if "avx2" in machine.features:  # the development/CI machine: an AVX2 x86 CPU
            check_measurable(get_profile(name), machine)
        else:
            with pytest.raises(ProfileError, match="it lacks avx2"):
                check_measurable(get_profile(name), machine)


def test_missing_hardware_names_the_features_and_keeps_prediction_possible(tmp_path: Path) -> None:
    profile = HardwareProfile.from_dict(_valid(name="future", requires=["avx2", "fake_accelerator"]))
    with pytest.raises(ProfileError) as caught:
        check_measurable(profile)  # the real machine has avx2 but no fake_accelerator
    message = str(caught.value)
    assert "profile future cannot be measured on this machine: it lacks fake_accelerator (" in message
    assert "avx2," not in message
    assert message.endswith("the profile can still be used for prediction from stored latency tables")
    assert isinstance(caught.value, ElastiqError)

    amx = Machine(architecture="x86_64", cpu_model="Old Xeon", cpu_flags=frozenset({"avx2"}), cuda=False)
    spr = HardwareProfile.from_dict(_valid(name="spr", requires=["avx512_vnni", "amx_tile"]))
    assert missing_features(spr, amx) == ("avx512_vnni", "amx_tile")
    gpu = HardwareProfile.from_dict(_valid(name="gpu", device="cuda", requires=[], precisions=["bf16"]))
    with pytest.raises(ProfileError, match="it lacks cuda \\(Old Xeon\\)"):
        check_measurable(gpu, amx)
