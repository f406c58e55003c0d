"""Per-block latency lookup tables: measure each block once per profile, then estimate any (arch, policy)
as a sum of table entries, without building or compiling it.

A table belongs to one profile (its runtime, batch, sequence, threads) and one model *shape* (hidden
size, head size, labels, pooling, activation): the same table serves every sub-network and policy of
that model. It is data (``latency_table.csv`` + ``latency_table.json``), written after every entry so
that an interrupted ``elastiq profile`` resumes where it stopped.
"""

from __future__ import annotations

import json
import platform
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from hardware_profiles.blocks import BlockKey, LinearBlock, build_block, quantize_block
from hardware_profiles.errors import ProfileError
from hardware_profiles.profile import HardwareProfile
from hardware_profiles.runtimes import onnx_runners, torch_runner
from hardware_profiles.timing import LatencyStats, pinned_threads, time_runners
from quant.policy import QuantPolicy
from quant.registry import get_precision
from quant.targets import CLASSIFIER, LAYER_LINEARS
from supernet.arch import BertArch
from supernet.atomic import atomic_write, atomic_write_text
from supernet.bert import BertShape, check_arch_fits

TABLE_CSV = "latency_table.csv"
TABLE_META = "latency_table.json"
TABLE_VERSION = 2  # 2: Linear entries measured over distinct copies (blocks.linear_copies)
_KEY_COLUMNS = tuple(f.name for f in fields(BlockKey))
_STAT_COLUMNS = ("median_ms", "mean_ms", "p10_ms", "p90_ms", "warmup", "repeats")


def shape_key(shape: BertShape) -> dict[str, Any]:
    """The parts of a model's shape that a table's entries depend on (not the per-layer sizes: those are
    in the block keys)."""
    return {
        "hidden_size": shape.hidden_size,
        "head_dim": shape.head_dim,
        "num_labels": shape.num_labels,
        "pooling": shape.pooling,
        "hidden_act": shape.hidden_act,
    }


def layer_linear_shapes(shape: BertShape, heads: int, ffn: int) -> dict[str, tuple[int, int]]:
    """``{relative Linear name: (out, in)}`` of one layer with ``heads`` heads and ``ffn`` FFN neurons."""
    h, width = shape.hidden_size, heads * shape.head_dim
    dims = [(width, h)] * 3 + [(h, width), (ffn, h), (h, ffn)]
    return dict(zip(LAYER_LINEARS, dims, strict=True))


def blocks_of(shape: BertShape, arch: BertArch, policy: QuantPolicy, batch: int, seq: int) -> list[BlockKey]:
    """The blocks sub-network ``arch`` under ``policy`` runs, in forward order (its latency decomposition)."""
    check_arch_fits(shape, arch)
    tokens = batch * seq
    keys = [BlockKey("embeddings")]
    for i, (heads, ffn) in enumerate(zip(arch.heads, arch.ffn, strict=True)):
        linears = layer_linear_shapes(shape, heads, ffn)
        for name, (out_features, in_features) in linears.items():
            precision = policy.precision_for(f"bert.encoder.layer.{i}.{name}")
            keys.append(BlockKey("linear", out_features, in_features, tokens, precision=precision))
        keys.append(BlockKey("attention", heads=heads))
        keys.append(BlockKey("glue", ffn=ffn))
    keys.append(BlockKey("pooling"))
    precision = policy.precision_for(CLASSIFIER)
    keys.append(BlockKey("linear", shape.num_labels, shape.hidden_size, batch, precision=precision))
    return keys


def required_blocks(
    shape: BertShape, profile: HardwareProfile, head_choices: Iterable[int], ffn_choices: Iterable[int]
) -> list[BlockKey]:
    """Every block a sub-network with these head and FFN choices can run under ``profile``'s precisions
    (a precision is skipped for Linear shapes it cannot take, e.g. int4 on a 2-label classifier)."""
    batch, seq = profile.batch_size, profile.sequence_length
    tokens = batch * seq
    linear_dims: set[tuple[int, int, int]] = {(shape.num_labels, shape.hidden_size, batch)}
    for heads in head_choices:
        for ffn in ffn_choices:
            linear_dims.update((o, i, tokens) for o, i in layer_linear_shapes(shape, heads, ffn).values())
    keys = [BlockKey("embeddings"), BlockKey("pooling")]
    keys += [BlockKey("attention", heads=h) for h in sorted(set(head_choices))]
    keys += [BlockKey("glue", ffn=f) for f in sorted(set(ffn_choices))]
    for out_features, in_features, rows in sorted(linear_dims):
        for name in profile.precisions:
            if get_precision(name).layer_problem(out_features, in_features) is None:
                keys.append(BlockKey("linear", out_features, in_features, rows, precision=name))
    return keys


def measure_block(key: BlockKey, shape: BertShape, profile: HardwareProfile, workdir: Path) -> LatencyStats:
    """Build, quantize and prepare one block for ``profile``'s runtime, then time it under its protocol."""
    module, inputs = build_block(key, shape, profile.batch_size, profile.sequence_length)
    with pinned_threads(profile.threads):
        if profile.runtime == "onnxruntime":
            names = [f"input_{i}" for i in range(len(inputs))]
            linears = module.linear_names if isinstance(module, LinearBlock) and key.precision == "int8_dynamic" else []
            runs = onnx_runners(module, inputs, names, profile, workdir, int8_dynamic_linears=linears, dynamic=False)
        else:
            runs = [torch_runner(quantize_block(module, key, inputs), inputs, profile)]
        stats = time_runners(runs, profile.warmup, profile.repeats)
    return stats.scaled(1 / module.copies) if isinstance(module, LinearBlock) else stats


@dataclass
class LatencyTable:
    """Measured block latencies (milliseconds, median) for one profile and one model shape."""

    profile: str
    batch_size: int
    sequence_length: int
    model: dict[str, Any]
    entries: dict[BlockKey, LatencyStats] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)

    def check_shape(self, shape: BertShape) -> None:
        if shape_key(shape) != self.model:
            raise ProfileError(
                f"the latency table of profile {self.profile} was measured for a model with {self.model}, "
                f"not {shape_key(shape)}; run `elastiq profile` with this checkpoint"
            )

    def estimate_ms(self, shape: BertShape, arch: BertArch, policy: QuantPolicy | None = None) -> float:
        """The table's raw estimate for ``arch`` under ``policy``: the sum of its blocks' medians."""
        return sum(self.block_ms(shape, arch, policy or QuantPolicy()).values())

    def block_ms(self, shape: BertShape, arch: BertArch, policy: QuantPolicy) -> dict[int, float]:
        """The latency of each block of the decomposition (by position), for breakdowns and features."""
        self.check_shape(shape)
        keys = blocks_of(shape, arch, policy, self.batch_size, self.sequence_length)
        missing = [k for k in keys if k not in self.entries]
        if missing:
            raise ProfileError(
                f"the latency table of profile {self.profile} has no entry for {missing[0].label()}"
                f" ({len(missing)} missing); run `elastiq profile --profile {self.profile}` with this model's choices"
            )
        return {i: self.entries[k].median_ms for i, k in enumerate(keys)}

    def to_frame(self) -> pd.DataFrame:
        rows = [{**key.__dict__, **stats.to_dict()} for key, stats in sorted(self.entries.items())]
        return pd.DataFrame(rows, columns=[*_KEY_COLUMNS, *_STAT_COLUMNS])

    def save(self, folder: str | Path) -> None:
        """Write the CSV and its JSON metadata atomically (CSV first: metadata never names missing data)."""
        folder = Path(folder)
        frame = self.to_frame()
        atomic_write(folder / TABLE_CSV, lambda tmp: frame.to_csv(tmp, index=False))
        meta = {
            "version": TABLE_VERSION,
            "profile": self.profile,
            "batch_size": self.batch_size,
            "sequence_length": self.sequence_length,
            "model": self.model,
            "machine": self.machine,
        }
        atomic_write_text(folder / TABLE_META, json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> LatencyTable:
        folder = Path(folder)
        meta_path, csv_path = folder / TABLE_META, folder / TABLE_CSV
        if not meta_path.is_file() or not csv_path.is_file():
            raise ProfileError(f"{folder} holds no latency table ({TABLE_META} + {TABLE_CSV}); run `elastiq profile`")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("version") != TABLE_VERSION:
            raise ProfileError(f"{meta_path}: table version {meta.get('version')!r} is not {TABLE_VERSION}; re-profile")
        frame = pd.read_csv(csv_path, keep_default_na=False)
        entries = {}
        for row in frame.to_dict("records"):
            key = BlockKey(
                kind=str(row["kind"]),
                out_features=int(row["out_features"]),
                in_features=int(row["in_features"]),
                rows=int(row["rows"]),
                heads=int(row["heads"]),
                ffn=int(row["ffn"]),
                precision=str(row["precision"]),
            )
            entries[key] = LatencyStats(
                median_ms=float(row["median_ms"]),
                mean_ms=float(row["mean_ms"]),
                p10_ms=float(row["p10_ms"]),
                p90_ms=float(row["p90_ms"]),
                warmup=int(row["warmup"]),
                repeats=int(row["repeats"]),
            )
        return cls(
            profile=meta["profile"],
            batch_size=int(meta["batch_size"]),
            sequence_length=int(meta["sequence_length"]),
            model=dict(meta["model"]),
            entries=entries,
            machine=dict(meta.get("machine", {})),
        )


def machine_summary() -> dict[str, Any]:
    """Where a measurement was taken, stored with it (tables are only valid on comparable machines)."""
    from hardware_profiles.hardware import detect_machine

    machine = detect_machine()
    return {
        "cpu_model": machine.cpu_model,
        "architecture": machine.architecture,
        "vnni": bool({"avx512_vnni", "avx_vnni"} & machine.cpu_flags),
        "amx": "amx_tile" in machine.cpu_flags,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def build_table(
    shape: BertShape,
    profile: HardwareProfile,
    keys: Sequence[BlockKey],
    folder: str | Path,
    *,
    on_entry: Callable[[BlockKey, LatencyStats], None] | None = None,
) -> LatencyTable:
    """Measure every block of ``keys`` not yet in ``folder``'s table and save after each one.

    An existing table for another profile or shape in ``folder`` is an error, not overwritten.
    """
    folder = Path(folder)
    if (folder / TABLE_META).is_file():
        table = LatencyTable.load(folder)
        if table.profile != profile.name or table.model != shape_key(shape):
            raise ProfileError(
                f"{folder} holds the table of profile {table.profile} for {table.model}; use another output folder"
            )
        if (table.batch_size, table.sequence_length) != (profile.batch_size, profile.sequence_length):
            raise ProfileError(f"{folder} was measured at other shapes than profile {profile.name} now has; re-profile")
    else:
        table = LatencyTable(
            profile.name, profile.batch_size, profile.sequence_length, shape_key(shape), machine=machine_summary()
        )
    with tempfile.TemporaryDirectory(prefix="elastiq-onnx-") as workdir:  # exported files are scratch, not data
        for key in keys:
            if key in table.entries:
                continue
            stats = measure_block(key, shape, profile, Path(workdir))
            table.entries[key] = stats
            table.save(folder)
            if on_entry is not None:
                on_entry(key, stats)
    return table
