"""The precision registry: canonical names, duplicates, unknown names, options, device support."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from torch import nn

from quant import registry
from quant.errors import PrecisionError
from quant.registry import Calibration, Precision, get_precision, precision_names, register_precision
from supernet.errors import ElastiqError

CANONICAL = ("fp32", "bf16", "int8_dynamic", "int8_weight_only", "int4_weight_only", "int8_static")


def test_builtin_precisions_are_registered_under_their_canonical_names() -> None:
    assert precision_names() == CANONICAL
    for name in CANONICAL:
        precision = get_precision(name)
        assert precision.name == name
        assert 0 < precision.bits_per_weight <= 32


def test_unknown_name_lists_the_known_names() -> None:
    with pytest.raises(PrecisionError, match=r"unknown precision 'int3'; known precisions: fp32, bf16, .*int8_static"):
        get_precision("int3")


def test_duplicate_name_is_an_error() -> None:
    with pytest.raises(PrecisionError, match="'fp32' is already registered by Fp32; pick another name"):

        @register_precision("fp32")
        class Again(Precision):
            bits_per_weight = 32

            def weight_bytes(self, out_features: int, in_features: int) -> int:
                return 0

            def apply(self, model: nn.Module, fqns: Sequence[str], calibration: Calibration | None = None) -> nn.Module:
                return model

    assert get_precision("fp32").__class__.__name__ == "Fp32"


def test_a_new_precision_is_one_decorated_class(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # undone after the test

    @register_precision("identity8")
    class Identity8(Precision):
        bits_per_weight = 8

        def weight_bytes(self, out_features: int, in_features: int) -> int:
            return out_features * in_features

        def apply(self, model: nn.Module, fqns: Sequence[str], calibration: Calibration | None = None) -> nn.Module:
            return model

    assert precision_names()[-1] == "identity8"
    assert isinstance(get_precision("identity8"), Identity8)


def test_options_are_checked() -> None:
    assert get_precision("int4_weight_only").options() == {"group_size": 32}
    assert get_precision("int4_weight_only", group_size=128).options() == {"group_size": 128}
    with pytest.raises(PrecisionError, match=r"group_size 48 is not supported; use one of \[32, 64, 128\]"):
        get_precision("int4_weight_only", group_size=48)
    with pytest.raises(PrecisionError, match=r"bad options .* for precision 'bf16'"):
        get_precision("bf16", group_size=32)
    with pytest.raises(ElastiqError, match="reduce_range must be true, false or null"):
        get_precision("int8_static", reduce_range="yes")


def test_device_support_says_why_not() -> None:
    for name in ("fp32", "bf16", "int8_dynamic", "int8_weight_only"):
        assert get_precision(name).supported("cpu")
    int4_cuda = get_precision("int4_weight_only").supported("cuda")
    assert not int4_cuda and "CPU only" in int4_cuda.reason
    static_cuda = get_precision("int8_static").supported("cuda")
    assert not static_cuda and "x86 CPUs" in static_cuda.reason


def test_int4_layer_constraints_are_explained() -> None:
    int4 = get_precision("int4_weight_only")
    assert int4.layer_problem(32, 64) is None
    assert int4.layer_problem(2, 32) == "out_features 2 is not a multiple of 16 (CPU int4 packing)"
    assert int4.layer_problem(32, 48) == "in_features 48 is not a multiple of the int4 group size 32"
