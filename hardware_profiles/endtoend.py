"""Measure one (arch, policy) of a super-network end to end, for real, under a profile.

This is the ground truth every latency estimate is checked against: the sub-network is extracted,
quantized with its policy exactly as it would be deployed (``quant.apply_policy``; for ONNX Runtime,
exported float and quantized by ONNX Runtime), prepared by the profile's runtime, and timed with the
profile's protocol on inputs of the profile's batch and sequence length.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from hardware_profiles.errors import ProfileError
from hardware_profiles.hardware import check_measurable
from hardware_profiles.profile import HardwareProfile
from hardware_profiles.runtimes import onnx_runners, torch_runner
from hardware_profiles.timing import LatencyStats, pinned_threads, time_runners
from quant.apply import apply_policy, plan
from quant.policy import QuantPolicy
from quant.registry import Calibration
from supernet.arch import BertArch
from supernet.bert import ElasticBertForSequenceClassification
from supernet.extract import extract

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
#: Default cap on the timed phase of one measurement (see ``timing.time_runner``).
MAX_SECONDS = 10.0


def profile_inputs(
    model: ElasticBertForSequenceClassification, profile: HardwareProfile, seed: int = 0
) -> tuple[Tensor, ...]:
    """Token ids of the profile's batch × sequence, every position a real token (latency does not depend
    on which tokens, only on how many, since attention runs over the padded length anyway)."""
    generator = torch.Generator().manual_seed(seed)
    shape = model.shape
    if profile.sequence_length > shape.max_position_embeddings:
        raise ProfileError(
            f"profile {profile.name} uses sequence length {profile.sequence_length}, longer than the model's "
            f"{shape.max_position_embeddings} positions; use a profile with a shorter sequence"
        )
    ids = torch.randint(1000, shape.vocab_size, (profile.batch_size, profile.sequence_length), generator=generator)
    return ids, torch.ones_like(ids), torch.zeros_like(ids)


def calibration_from(inputs: tuple[Tensor, ...]) -> list[dict[str, Tensor]]:
    """A calibration batch built from measurement inputs, for int8_static when no task data is given:
    scales from random tokens cost accuracy, not speed, and only speed is measured here."""
    return [dict(zip(INPUT_NAMES, inputs, strict=True))]


def measure_subnetwork(
    model: ElasticBertForSequenceClassification,
    arch: BertArch,
    policy: QuantPolicy,
    profile: HardwareProfile,
    workdir: str | Path,
    *,
    calibration: Calibration | None = None,
    max_seconds: float | None = MAX_SECONDS,
    check_machine: bool = True,
) -> LatencyStats:
    """The real latency of sub-network ``arch`` of ``model`` under ``policy`` on this machine."""
    if check_machine:
        check_measurable(profile)
    bad = sorted({policy.precision_for(fqn) for fqn in policy} - set(profile.precisions) - {"fp32"})
    if bad:
        raise ProfileError(
            f"profile {profile.name} does not support precision(s) {', '.join(bad)}; "
            f"it supports {', '.join(profile.precisions)}"
        )
    sub = extract(model, arch).eval()
    plan(sub, policy)  # names and per-layer checks, before any slow work
    inputs = profile_inputs(model, profile)
    with pinned_threads(profile.threads):
        if profile.runtime == "onnxruntime":
            int8 = [fqn for fqn in policy if policy[fqn] == "int8_dynamic"]
            runs = onnx_runners(sub, inputs, INPUT_NAMES, profile, Path(workdir), int8_dynamic_linears=int8)
        else:
            quantized = apply_policy(sub, policy, calibration if calibration is not None else calibration_from(inputs))
            runs = [torch_runner(quantized, inputs, profile)]
        return time_runners(runs, profile.warmup, profile.repeats, max_seconds=max_seconds)
