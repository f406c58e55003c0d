"""The measurement protocol of a hardware profile: pinned threads, warm-up, then the median of repeats.

Every latency elastiq reports, for a lookup-table block or a whole sub-network, goes through
``time_runner`` so that blocks and end-to-end measurements are comparable: same thread count, same
CPU affinity, same clock (``perf_counter_ns``), same statistic. The median, not the mean, because a
shared machine produces rare long outliers (another process, a page fault) that say nothing about the
model; the spread (p10/p90) is kept so that a noisy measurement is visible in the stored data.

Where one prepared copy of a model (an ONNX Runtime session) runs steadily but the next copy of the
same file runs 20-40% faster or slower, a profile times several copies: ``time_runners`` reports the
median across them.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from hardware_profiles.errors import ProfileError


@dataclass(frozen=True)
class LatencyStats:
    """Milliseconds per call of one measured thing, over ``repeats`` timed calls after ``warmup`` calls."""

    median_ms: float
    mean_ms: float
    p10_ms: float
    p90_ms: float
    warmup: int
    repeats: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def scaled(self, factor: float) -> LatencyStats:
        """The times multiplied by ``factor`` (e.g. per copy, when a block ran several copies of a layer)."""
        return replace(
            self,
            median_ms=self.median_ms * factor,
            mean_ms=self.mean_ms * factor,
            p10_ms=self.p10_ms * factor,
            p90_ms=self.p90_ms * factor,
        )


def _quantile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


@contextlib.contextmanager
def pinned_threads(threads: int) -> Iterator[None]:
    """Run with ``threads`` intra-op threads pinned to the first ``threads`` CPUs this process may use.

    Pinning keeps the OS from migrating the worker threads between cores during a measurement. The
    previous thread count and affinity are restored on exit, so measuring has no lasting side effect.
    """
    if threads < 1:
        raise ProfileError(f"threads must be >= 1, got {threads}")
    previous_threads = torch.get_num_threads()
    affinity = getattr(os, "sched_getaffinity", None)
    previous_cpus = affinity(0) if affinity is not None else None
    if previous_cpus is not None and len(previous_cpus) < threads:
        raise ProfileError(
            f"the profile asks for {threads} threads but this process may use {len(previous_cpus)} CPUs; "
            "use a profile with fewer threads or a larger machine"
        )
    torch.set_num_threads(threads)
    if previous_cpus is not None:
        os.sched_setaffinity(0, sorted(previous_cpus)[:threads])
    try:
        yield
    finally:
        torch.set_num_threads(previous_threads)
        if previous_cpus is not None:
            os.sched_setaffinity(0, previous_cpus)


#: Timed calls always made, even past the time budget: the median of fewer says too little.
MIN_REPEATS = 5


def time_runners(
    runs: Sequence[Callable[[], object]], warmup: int, repeats: int, max_seconds: float | None = None
) -> LatencyStats:
    """``time_runner`` on each of ``runs`` (independently prepared copies of one model: fresh sessions)
    in turn, and per statistic the median across them; warm-up and repeat counts are the totals."""
    if not runs:
        raise ProfileError("nothing to time: give at least one runner")
    each = [time_runner(run, warmup, repeats, max_seconds) for run in runs]
    return LatencyStats(
        median_ms=statistics.median(s.median_ms for s in each),
        mean_ms=statistics.median(s.mean_ms for s in each),
        p10_ms=statistics.median(s.p10_ms for s in each),
        p90_ms=statistics.median(s.p90_ms for s in each),
        warmup=sum(s.warmup for s in each),
        repeats=sum(s.repeats for s in each),
    )


def time_runner(run: Callable[[], object], warmup: int, repeats: int, max_seconds: float | None = None) -> LatencyStats:
    """Call ``run`` ``warmup`` times untimed, then ``repeats`` times timed; threads are the caller's
    (see ``measure``). Torch runs under ``no_grad`` (the grad mode compiled runners were traced in), so
    autograd bookkeeping is not timed.

    ``max_seconds`` caps the timed phase: once it is spent and at least ``MIN_REPEATS`` calls are
    timed, timing stops (``repeats`` in the result says how many were made). Without it a sub-network
    whose layers hit a slow kernel (int4 on a CPU without its fast path: ~0.1 s per Linear here) would
    take minutes per measurement; the median of the calls made is still a median. Warm-up stops early
    too, after a quarter of that budget (one call always runs).
    """
    if repeats < 1:
        raise ProfileError(f"repeats must be >= 1, got {repeats}")
    samples: list[float] = []
    with torch.no_grad():
        warm_start, warm_calls = time.perf_counter(), 0
        for _ in range(warmup):
            run()
            warm_calls += 1
            if max_seconds is not None and time.perf_counter() - warm_start > max_seconds / 4:
                break  # at least one warm-up call was made: compiled/first-call work is done
        for _ in range(repeats):
            start = time.perf_counter_ns()
            run()
            samples.append((time.perf_counter_ns() - start) / 1e6)
            if max_seconds is not None and len(samples) >= MIN_REPEATS and sum(samples) / 1e3 > max_seconds:
                break
    ordered = sorted(samples)
    return LatencyStats(
        median_ms=statistics.median(ordered),
        mean_ms=statistics.fmean(ordered),
        p10_ms=_quantile(ordered, 0.1),
        p90_ms=_quantile(ordered, 0.9),
        warmup=warm_calls,
        repeats=len(samples),
    )
