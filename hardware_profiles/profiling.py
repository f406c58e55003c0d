"""``elastiq profile``: measure a profile's latency table on this machine, validate it against real
end-to-end measurements of random (arch, policy) pairs, calibrate, and store everything as data.

A profile's folder (``<out>/<profile name>/``) holds:

* ``profile.yaml``: the profile as measured;
* ``latency_table.csv`` / ``.json``: one row per block (median, mean, p10, p90 in ms), and where;
* ``validation.csv``: one row per random pair and round: arch and policy (JSON), the measured latency
  and the raw table estimate (a pair's latency is the median over its rounds);
* ``latency_model.json``: the calibration and its quality (raw and leave-one-out MAPE and Kendall tau).

Every row is saved as soon as it is measured; running the same command again resumes, skipping what
is already there (and refusing a folder measured for another profile or model).

Latency tables shipped with elastiq live in ``hardware_profiles/tables/<profile>/``, so that a
profile can be used for prediction on a machine that cannot measure it.
"""

from __future__ import annotations

import itertools
import json
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pandas as pd
import yaml

from hardware_profiles.blocks import BlockKey
from hardware_profiles.candidates import random_candidates
from hardware_profiles.endtoend import MAX_SECONDS, measure_subnetwork
from hardware_profiles.errors import ProfileError
from hardware_profiles.hardware import check_measurable
from hardware_profiles.latency_model import LatencyModel
from hardware_profiles.lut import LatencyTable, build_table, required_blocks
from hardware_profiles.profile import HardwareProfile
from hardware_profiles.timing import LatencyStats
from quant.policy import QuantPolicy
from supernet.arch import BertArch, BertElasticSpace
from supernet.atomic import atomic_write, atomic_write_text
from supernet.bert import ElasticBertForSequenceClassification

VALIDATION_CSV = "validation.csv"
#: Fewest end-to-end pairs a calibration is fitted on (three coefficients, plus one left out).
MIN_VALIDATION = 4
_VALIDATION_COLUMNS = (
    "index",
    "round",
    "arch",
    "policy",
    "measured_ms",
    "p10_ms",
    "p90_ms",
    "repeats",
    "table_ms",
    "depth",
)

#: Called with a short description of each step as it finishes (a progress bar, a log line).
Progress = Callable[[str], None]


@dataclass(frozen=True)
class ProfileRun:
    folder: Path
    model: LatencyModel
    validation: pd.DataFrame


def shipped_tables_dir() -> Path:
    """Where elastiq's own measured tables are (package data)."""
    return Path(str(resources.files("hardware_profiles").joinpath("tables")))


def find_latency_model(profile: str, search_dirs: Iterable[str | Path] = ()) -> LatencyModel:
    """The latency model of ``profile`` from the first of ``search_dirs`` (then the shipped tables)
    that has one: ``<dir>/<profile>/latency_table.json``."""
    dirs = [Path(d) for d in search_dirs] + [shipped_tables_dir()]
    for folder in dirs:
        if (folder / profile / "latency_table.json").is_file():
            return LatencyModel.load(folder / profile)
    raise ProfileError(
        f"no latency table for profile {profile} in {', '.join(str(d) for d in dirs)}; "
        f"run `elastiq profile --profile {profile}` on a machine that can measure it"
    )


def _save_frame(path: Path, frame: pd.DataFrame) -> None:
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


def _load_validation(path: Path) -> pd.DataFrame:
    if not path.is_file():
        return pd.DataFrame(columns=list(_VALIDATION_COLUMNS))
    frame = pd.read_csv(path)
    if "round" not in frame:  # written before validation had rounds: each pair was measured once
        frame.insert(1, "round", 0)
    return frame


def _check_rounds(rounds: int) -> None:
    if rounds < 1:
        raise ProfileError(f"validation rounds must be >= 1, got {rounds}; measure every pair at least once")


def load_validation_pairs(folder: str | Path) -> pd.DataFrame:
    """The validation stored in ``folder`` (a profile's folder), one row per pair (``per_pair``)."""
    return per_pair(_load_validation(Path(folder) / VALIDATION_CSV))


def per_pair(validation: pd.DataFrame) -> pd.DataFrame:
    """One row per pair of a ``validation.csv`` frame: its median measurement over rounds (arch, policy,
    table estimate and depth are the same in every round)."""
    first = validation.sort_values(["index", "round"]).groupby("index", as_index=False).first()
    measured = validation.groupby("index")["measured_ms"].median()
    first["measured_ms"] = first["index"].map(measured)
    first["rounds"] = first["index"].map(validation.groupby("index").size())
    return first.drop(columns=["round"])


def validate_table(
    model: ElasticBertForSequenceClassification,
    space: BertElasticSpace,
    profile: HardwareProfile,
    table: LatencyTable,
    folder: Path,
    *,
    n: int,
    seed: int,
    rounds: int = 1,
    max_seconds: float | None = MAX_SECONDS,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Measure ``n`` random (arch, policy) pairs end to end, ``rounds`` times each (resuming
    ``validation.csv``), beside the table's raw estimate; one row per pair (``per_pair``). A stored row
    for another pair at the same index (another seed) is an error.

    Rounds go over all pairs in turn (every pair once, then every pair again): a slow spell of a shared
    machine then lands on one measurement of several pairs rather than on every measurement of one, and
    the median over rounds votes it out."""
    _check_rounds(rounds)
    path = folder / VALIDATION_CSV
    rows = _load_validation(path).to_dict("records")
    done = {(int(r["index"]), int(r["round"])): r for r in rows}
    candidates = random_candidates(space, model.shape, profile.precisions, n, seed)
    for round_index, (index, (arch, policy)) in itertools.product(range(rounds), enumerate(candidates)):
        arch_json, policy_json = json.dumps(arch.to_dict()), policy.to_json(indent=None)
        if (index, round_index) in done:
            if done[index, round_index]["arch"] != arch_json or done[index, round_index]["policy"] != policy_json:
                raise ProfileError(
                    f"{path} row {index} holds another sub-network than seed {seed} draws; "
                    "use the seed it was measured with, or another output folder"
                )
            continue
        with tempfile.TemporaryDirectory(prefix="elastiq-onnx-") as workdir:  # exported files are scratch
            stats = measure_subnetwork(
                model, arch, policy, profile, workdir, max_seconds=max_seconds, check_machine=False
            )
        rows.append(
            {
                "index": index,
                "round": round_index,
                "arch": arch_json,
                "policy": policy_json,
                "measured_ms": stats.median_ms,
                "p10_ms": stats.p10_ms,
                "p90_ms": stats.p90_ms,
                "repeats": stats.repeats,
                "table_ms": table.estimate_ms(model.shape, arch, policy),
                "depth": arch.depth,
            }
        )
        _save_frame(path, pd.DataFrame(rows, columns=list(_VALIDATION_COLUMNS)).sort_values(["index", "round"]))
        if progress is not None:
            where = f"round {round_index + 1}/{rounds}, " if rounds > 1 else ""
            progress(
                f"{where}pair {index + 1}/{n}: {stats.median_ms:.2f} ms measured, table {rows[-1]['table_ms']:.2f} ms"
            )
    # The table may have been re-measured since a row was (the end-to-end measurements do not depend on it):
    # every row's estimate comes from the current table.
    for row in rows:
        arch = BertArch.from_dict(json.loads(row["arch"]))
        row["table_ms"] = table.estimate_ms(model.shape, arch, QuantPolicy.from_json(row["policy"]))
    frame = pd.DataFrame(rows, columns=list(_VALIDATION_COLUMNS)).sort_values(["index", "round"])
    _save_frame(path, frame)
    return per_pair(frame[(frame["index"] < n) & (frame["round"] < rounds)]).reset_index(drop=True)


def profile_target(
    model: ElasticBertForSequenceClassification,
    space: BertElasticSpace,
    profile: HardwareProfile,
    out_dir: str | Path,
    *,
    n_validation: int = 30,
    seed: int = 0,
    rounds: int = 1,
    max_seconds: float | None = MAX_SECONDS,
    progress: Progress | None = None,
) -> ProfileRun:
    """Table, validation and calibration of ``profile`` for ``model``'s shape and ``space``'s choices."""
    if n_validation < MIN_VALIDATION:
        raise ProfileError(f"validation needs at least {MIN_VALIDATION} sub-networks to calibrate, got {n_validation}")
    _check_rounds(rounds)
    check_measurable(profile)
    folder = Path(out_dir) / profile.name
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "profile.yaml", yaml.safe_dump(profile.to_dict(), sort_keys=False))
    keys = required_blocks(model.shape, profile, space.head_choices, space.ffn_choices)

    def on_entry(key: BlockKey, stats: LatencyStats) -> None:
        if progress is not None:
            progress(f"block {key.label()}: {stats.median_ms:.3f} ms")

    table = build_table(model.shape, profile, keys, folder, on_entry=on_entry)
    validation = validate_table(
        model,
        space,
        profile,
        table,
        folder,
        n=n_validation,
        seed=seed,
        rounds=rounds,
        max_seconds=max_seconds,
        progress=progress,
    )
    latency_model = LatencyModel.calibrate(
        table, validation["table_ms"].tolist(), validation["depth"].tolist(), validation["measured_ms"].tolist()
    )
    latency_model.save(folder)
    return ProfileRun(folder, latency_model, validation)
