"""Random (arch, policy) pairs for validating latency estimates.

A third of the policies are uniform (every Linear in one precision: the deployments people try
first); the rest mix two or three of the profile's precisions per Linear (what a joint search
explores). Mixing a random *subset* rather than all precisions keeps fast all-int8 mixes in the
sample: with every precision in every policy, nearly all pairs would hold a few of the slowest Linears
(int4 or bf16 on CPUs without their fast kernels) and the validation would only test how well the
table counts those. Per Linear, precisions that cannot take its shape (int4 on a 2-label classifier)
are skipped, so every pair can be measured.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from quant.policy import QuantPolicy
from quant.registry import get_precision
from quant.targets import linear_shapes
from supernet.arch import BertArch, BertElasticSpace
from supernet.bert import BertShape

UNIFORM_SHARE = 1 / 3


def random_policy(shape: BertShape, arch: BertArch, precisions: Sequence[str], rng: np.random.Generator) -> QuantPolicy:
    """A policy for ``arch`` mixing ``precisions``, one drawn per Linear (fp32 where none can take it)."""
    built = {name: get_precision(name) for name in precisions}
    layers: dict[str, str] = {}
    for fqn, (out_features, in_features) in linear_shapes(shape, arch).items():
        allowed = [n for n, p in built.items() if p.layer_problem(out_features, in_features) is None] or ["fp32"]
        layers[fqn] = str(rng.choice(allowed))
    return QuantPolicy(layers)


def random_candidates(
    space: BertElasticSpace, shape: BertShape, precisions: Sequence[str], n: int, seed: int
) -> list[tuple[BertArch, QuantPolicy]]:
    """``n`` distinct (arch, policy) pairs, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    seen: set[tuple[BertArch, QuantPolicy]] = set()
    out: list[tuple[BertArch, QuantPolicy]] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 100 * n:
            raise ValueError(f"could not draw {n} distinct candidates from this space; ask for fewer")
        arch = space.sample(rng)
        size = 1 if rng.random() < UNIFORM_SHARE else int(rng.integers(2, min(3, len(precisions)) + 1))
        mix = [str(p) for p in rng.choice(list(precisions), size=min(size, len(precisions)), replace=False)]
        policy = random_policy(shape, arch, mix, rng)
        if (arch, policy) not in seen:
            seen.add((arch, policy))
            out.append((arch, policy))
    return out
