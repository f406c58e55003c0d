"""Test-retest of end-to-end latency: how closely the measurements a latency table is validated against
agree with themselves.

    python benchmarks/latency_retest.py --out benchmarks/results [--profiles x86-eager-b1 ...] [--passes 2]

A profile's table is scored (MAPE, Kendall tau) against end-to-end measurements of 30 random
(arch, policy) pairs (its shipped ``validation.csv``). No estimator can be scored closer to those
measurements than the measurements agree with themselves, so this re-measures the same pairs on this
machine, ``--passes`` times, every pair once per pass (a slow spell of the machine then spreads over the
pairs instead of landing on one), and reports per profile:

* **within this session**: pass 1 vs pass 2 (MAPE of pass 2 against pass 1, Kendall tau);
* **between sessions**: this session's per-pair median over passes vs the stored measurement (the one
  the shipped validation and calibration used), and the median ratio of the two (a machine-wide drift);
* **the shipped estimate** (calibrated on the stored measurements) against the stored measurements and
  against this session's, so a miss can be told apart from a drift.

Each pair's measurement is written to ``--work`` as soon as it is taken; a killed run started again
skips what it has.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _cache import cached

from hardware_profiles.endtoend import MAX_SECONDS, measure_subnetwork
from hardware_profiles.latency_model import accuracy_metrics
from hardware_profiles.profiling import find_latency_model, load_validation_pairs, shipped_tables_dir
from hardware_profiles.registry import get_profile
from quant.policy import QuantPolicy
from search.pipeline import load_for_profiling
from supernet.arch import BertArch
from supernet.atomic import atomic_write_text
from supernet.bert import ElasticBertForSequenceClassification

DEFAULT_PROFILES = ("x86-eager-b1", "onnxruntime-cpu-b1", "x86-inductor-b1")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--work", type=Path, default=Path("runs/bench-latency-retest"))
    parser.add_argument("--profiles", nargs="+", default=list(DEFAULT_PROFILES))
    parser.add_argument("--passes", type=int, default=2, help="measurements of every pair in this session")
    parser.add_argument("--name", default="latency_retest", help="stem of the result files")
    parser.add_argument("--note", action="append", default=[], help="a line for the report's Notes section")
    return parser


def stored_pairs(profile_name: str) -> pd.DataFrame:
    """The shipped validation pairs of ``profile_name`` and their stored measurements (median over the
    validation's rounds), by ``index``."""
    return load_validation_pairs(shipped_tables_dir() / profile_name).set_index("index", drop=False)


def measure_pairs(
    model: ElasticBertForSequenceClassification, profile_name: str, stored: pd.DataFrame, passes: int, work: Path
) -> pd.DataFrame:
    """Every pair of ``stored`` measured ``passes`` times (pass-major order)."""
    profile = get_profile(profile_name)
    rows = []
    for pass_index in range(passes):
        for index, arch_json, policy_json in zip(stored["index"], stored["arch"], stored["policy"], strict=True):
            arch = BertArch.from_dict(json.loads(str(arch_json)))
            policy = QuantPolicy.from_json(str(policy_json))

            def measure(arch: BertArch = arch, policy: QuantPolicy = policy) -> dict[str, Any]:
                with tempfile.TemporaryDirectory(prefix="elastiq-retest-") as scratch:
                    stats = measure_subnetwork(model, arch, policy, profile, scratch, max_seconds=MAX_SECONDS)
                return {
                    "median_ms": stats.median_ms,
                    "p10_ms": stats.p10_ms,
                    "repeats": stats.repeats,
                    "at": time.time(),
                }

            path = work / profile_name / f"pass{pass_index}-pair{index}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            taken = cached(path, measure)
            rows.append({"pass": pass_index, "index": int(index), **taken})
    return pd.DataFrame(rows)


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(seconds))


def summarise(
    model: ElasticBertForSequenceClassification, profile_name: str, stored: pd.DataFrame, measured: pd.DataFrame
) -> dict[str, Any]:
    """The within-session, between-session and estimate-vs-measurement agreement of one profile."""
    wide = measured.pivot(index="index", columns="pass", values="median_ms").loc[stored.index]
    session = wide.median(axis=1).to_numpy()
    stored_ms = stored["measured_ms"].to_numpy()
    latency = find_latency_model(profile_name)
    estimate = [
        latency.predict_ms(model.shape, BertArch.from_dict(json.loads(a)), QuantPolicy.from_json(p))
        for a, p in zip(stored["arch"], stored["policy"], strict=True)
    ]
    taken_at = measured["at"]
    out: dict[str, Any] = {
        "pairs": len(stored),
        "measured_utc": [_utc(taken_at.min()), _utc(taken_at.max())],
        "passes": int(wide.shape[1]),
        "between_sessions": accuracy_metrics(stored_ms, session),
        "drift_median_ratio": float(np.median(session / stored_ms)),
        "estimate_vs_stored": accuracy_metrics(stored_ms, estimate),
        "estimate_vs_this_session": accuracy_metrics(session, estimate),
        "estimate_source": latency.design,
    }
    if wide.shape[1] >= 2:
        out["within_session"] = accuracy_metrics(wide[0].to_numpy(), wide[1].to_numpy())
        if "p10_ms" in measured:  # measurements cached before p10 was recorded have none
            low = measured.pivot(index="index", columns="pass", values="p10_ms").loc[stored.index]
            out["within_session_p10"] = accuracy_metrics(low[0].to_numpy(), low[1].to_numpy())
    return out


def markdown(result: dict[str, Any]) -> str:
    profiles = result["profiles"]
    lines = [
        "# End-to-end latency test-retest",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {result['machine']}; {result['passes']} passes per pair; measured (UTC): "
        + "; ".join(f"{name} {s['measured_utc'][0]} to {s['measured_utc'][1]}" for name, s in profiles.items()),
        "",
        "MAPE of the second column against the first (as the tables are scored) and Kendall tau. *Stored*: the",
        "measurements in the shipped `validation.csv` (which the calibration was fitted on); *session*: this",
        "run's per-pair median over passes; *estimate*: the shipped latency model's prediction.",
        "",
        "| profile | pass 1 vs pass 2 | stored vs session | drift (session / stored) | stored vs estimate "
        "| session vs estimate |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in profiles.items():
        cells = []
        for key in ("within_session", "between_sessions"):
            m = s.get(key)
            cells.append(f"{m['mape_percent']:.1f}% / {m['kendall_tau']:.3f}" if m else "n/a")
        cells.append(f"{s['drift_median_ratio']:.3f}")
        for key in ("estimate_vs_stored", "estimate_vs_this_session"):
            m = s[key]
            cells.append(f"{m['mape_percent']:.1f}% / {m['kendall_tau']:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    with_p10 = {name: s for name, s in profiles.items() if "within_session_p10" in s}
    if with_p10:
        lines += [
            "",
            "Pass 1 vs pass 2 by another statistic of each measurement's timed calls: the median (as",
            "elastiq reports) or the 10th percentile (p10), each the median across sessions where a profile",
            "times several.",
            "",
            "| profile | median | p10 |",
            "|---|---|---|",
        ]
        for name, s in with_p10.items():
            cells = [s[key] for key in ("within_session", "within_session_p10")]
            scored = (f"{m['mape_percent']:.1f}% / {m['kendall_tau']:.3f}" for m in cells)
            lines.append(f"| {name} | " + " | ".join(scored) + " |")
    lines += ["", "## Notes", ""] + [f"- {note}" for note in result["notes"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parser().parse_args(argv)
    if args.passes < 1:
        raise SystemExit("--passes must be positive")
    model, _ = load_for_profiling("default")  # latency depends on shapes only: one model serves every profile
    model.eval()
    summaries = {}
    for name in args.profiles:
        stored = stored_pairs(name)
        measured = measure_pairs(model, name, stored, args.passes, args.work)
        summaries[name] = summarise(model, name, stored, measured)
        print(name, json.dumps(summaries[name]), flush=True)
    arguments = argv if argv is not None else sys.argv[1:]
    result = {
        "command": "python " + shlex.join(["benchmarks/latency_retest.py", *arguments]),
        "machine": f"{platform.platform()}, Python {platform.python_version()}",
        "passes": args.passes,
        "profiles": summaries,
        "notes": list(args.note),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / f"{args.name}.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(args.out / f"{args.name}.md", markdown(result))
    return result


if __name__ == "__main__":
    main()
