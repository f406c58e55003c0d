"""The main job, timed: `make demo`'s run in a fresh folder, its wall time and peak memory, and how its
Pareto front compares with the full-model baselines.

    python benchmarks/demo.py --out benchmarks/results [--config examples/demo.yaml] [--run-dir runs/bench-demo]

The issue's targets for `make demo` are a wall time of at most 20 minutes on this 2-core CPU and a front
that dominates the full model in int8_static on the profile. This runs ``elastiq run --config CONFIG
--run-dir RUN_DIR`` as a child process (``--run-dir`` must not exist: a resumed run would not be timed
honestly), then reads the run folder and writes ``demo.json`` and ``demo.md``:

* wall time, the child's peak resident memory, and when each stage's output appeared (training,
  evaluation, search, front re-measurement, baselines, exports), in seconds from the start;
* per baseline (the full model in fp32, bf16 and int8_static), the front members that dominate it
  (at least as accurate and at least as fast, better in one) by the profile's latency *estimate*, which
  is what the search optimises, and by the end-to-end *measurements* of this run;
* the fastest front member within 1 point of the full fp32 model's accuracy, and its speed-ups.

Accuracies are on the search's validation subset, so one sentence is 1/``validation_examples``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search.report import REPORT_DIR, dominating
from search.results import BASELINES_JSON, EVALUATIONS_CSV, FRONT_MEASURED_CSV, SEARCH_DIR, load_front
from supernet.atomic import atomic_write_text

TARGET_SECONDS = 20 * 60
#: Accuracy a front member may lose against full fp32 and still count as keeping accuracy (points).
ACCURACY_LOSS_POINTS = 1.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path("examples/demo.yaml"))
    parser.add_argument("--run-dir", type=Path, default=Path("runs/bench-demo"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--name", default="demo", help="stem of the result files")
    parser.add_argument("--note", default="", help="a line for the Markdown (e.g. what else ran)")
    return parser


def _stages(run_dir: Path, folder: Path, start: float) -> dict[str, float | None]:
    """Seconds from the start at which each stage's last output was written (None: not written)."""
    outputs = {
        "training": run_dir / "training" / "checkpoint.pt",
        "evaluation": run_dir / "evaluation.json",
        "search": folder / EVALUATIONS_CSV,
        "front_remeasured": folder / FRONT_MEASURED_CSV,
        "baselines": folder / BASELINES_JSON,
        "report": folder / REPORT_DIR / "report.html",
    }
    stages: dict[str, float | None] = {
        name: round(path.stat().st_mtime - start, 1) if path.exists() else None for name, path in outputs.items()
    }
    exported = [p.stat().st_mtime for p in (run_dir / "exported").rglob("model_card.json")]
    stages["exports"] = round(max(exported) - start, 1) if exported else None
    return stages


def _member(row: pd.Series) -> dict[str, Any]:
    out = {"key": row["key"], "accuracy": float(row["accuracy"]), "latency_ms": float(row["latency_ms"])}
    if "measured_latency_ms" in row and not pd.isna(row["measured_latency_ms"]):
        out["measured_latency_ms"] = float(row["measured_latency_ms"])
    out["size_mb"] = float(row["size_mb"])
    out["description"] = json.loads(row["description"]) if "description" in row else None
    return out


def summarise(run_dir: Path, profile: str) -> dict[str, Any]:
    """Front vs baselines of a finished run (see the module docstring)."""
    folder = run_dir / SEARCH_DIR / profile
    front = load_front(folder)  # the re-measured front when there is one
    if "measured_latency_ms" not in front:
        front["measured_latency_ms"] = float("nan")
    baselines = json.loads((folder / BASELINES_JSON).read_text())
    per_baseline = {}
    for b in baselines:
        by_estimate, by_measured = dominating(front, b), dominating(front, b, "measured_latency_ms")
        per_baseline[b["precision"]] = {
            "accuracy": b["accuracy"],
            "latency_ms": b["latency_ms"],
            "measured_latency_ms": b["measured_latency_ms"],
            "size_mb": b["size_mb"],
            "dominated_by_estimate": [_member(r) for _, r in by_estimate.iterrows()],
            "dominated_by_measurement": [_member(r) for _, r in by_measured.iterrows()],
        }
    fp32 = next(b for b in baselines if b["precision"] == "fp32")
    keeping = front[front["accuracy"] >= fp32["accuracy"] - ACCURACY_LOSS_POINTS / 100]
    fastest = keeping.sort_values("latency_ms").iloc[0] if len(keeping) else None
    speedups = {}
    if fastest is not None:
        for b in baselines:
            speedups[b["precision"]] = {
                "estimate": b["latency_ms"] / fastest["latency_ms"],
                "size": b["size_mb"] / fastest["size_mb"],
            }
            if b["measured_latency_ms"] is not None and not pd.isna(fastest["measured_latency_ms"]):
                speedups[b["precision"]]["measured"] = b["measured_latency_ms"] / fastest["measured_latency_ms"]
    return {
        "front_size": len(front),
        "front_remeasured": int(front["measured_latency_ms"].notna().sum()),
        "baselines": per_baseline,
        "fastest_within_1_point_of_fp32": None if fastest is None else _member(fastest),
        "speedups_of_that_member": speedups,
    }


def _markdown(result: dict[str, Any]) -> str:
    s = result["summary"]
    lines = [
        "# The main job, timed (`make demo`'s run)",
        "",
        f"Command: `{result['command']}`  ",
        f"Ran `{result['run_command']}` from {result['started_utc']} UTC on {result['machine']}.",
        "",
        f"- Wall time **{result['wall_seconds'] / 60:.1f} min** ({result['wall_seconds']:.0f} s; "
        f"target <= {TARGET_SECONDS // 60} min: {'met' if result['wall_seconds'] <= TARGET_SECONDS else 'MISSED'}); "
        f"peak resident memory {result['peak_rss_gb']:.2f} GB; exit code {result['returncode']}.",
        "- Stage outputs written at (s from start): "
        + ", ".join(f"{k} {v:.0f}" for k, v in result["stages"].items() if v is not None)
        + ".",
        f"- Front: {s['front_size']} members, all really evaluated; {s['front_remeasured']} re-measured end to end.",
    ]
    if result["note"]:
        lines.append(f"- {result['note']}")
    lines += [
        "",
        "| baseline (full model) | accuracy | latency est. (ms) | measured (ms) | size (MB) "
        "| front members dominating it: by estimate | by measurement |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, b in s["baselines"].items():
        measured = "-" if b["measured_latency_ms"] is None else f"{b['measured_latency_ms']:.2f}"

        def listed(members: list[dict[str, Any]]) -> str:
            if not members:
                return "none"
            return "; ".join(
                f"{m['accuracy']:.2%} at {m['latency_ms']:.2f} ms est."
                + (f" / {m['measured_latency_ms']:.2f} measured" if "measured_latency_ms" in m else "")
                for m in members
            )

        lines.append(
            f"| {name} | {b['accuracy']:.2%} | {b['latency_ms']:.2f} | {measured} | {b['size_mb']:.1f} "
            f"| {listed(b['dominated_by_estimate'])} | {listed(b['dominated_by_measurement'])} |"
        )
    fastest = s["fastest_within_1_point_of_fp32"]
    if fastest is not None:
        arch = fastest["description"]["arch"] if fastest["description"] else {}
        lines += [
            "",
            f"Fastest front member within {ACCURACY_LOSS_POINTS:g} point of full fp32: {fastest['accuracy']:.2%} at "
            f"{fastest['latency_ms']:.2f} ms est., {fastest['size_mb']:.1f} MB, arch {json.dumps(arch)}. Speed-ups: "
            + "; ".join(
                f"vs {name} {v['estimate']:.2f}x est." + (f", {v['measured']:.2f}x measured" if "measured" in v else "")
                for name, v in s["speedups_of_that_member"].items()
            )
            + ".",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.run_dir.exists():
        print(f"demo: error: {args.run_dir} exists: a resumed run is not timed honestly; remove it or pass --run-dir")
        return 2
    profile = yaml.safe_load(args.config.read_text())["search"]["profile"]
    run = ["run", "--config", str(args.config), "--run-dir", str(args.run_dir)]
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M")
    start = time.time()
    returncode = subprocess.call([sys.executable, "-m", "search.entry", *run])
    wall = time.time() - start
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result = {
        "command": "python " + shlex.join(["benchmarks/demo.py", *(sys.argv[1:] if argv is None else argv)]),
        "run_command": shlex.join(["elastiq", *run]),
        "started_utc": started,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
        "returncode": returncode,
        "wall_seconds": wall,
        "peak_rss_gb": peak_kb / 1e6,
        "stages": _stages(args.run_dir, args.run_dir / SEARCH_DIR / profile, start),
        "note": args.note,
        "summary": summarise(args.run_dir, profile) if returncode == 0 else None,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / f"{args.name}.json", json.dumps(result, indent=2))
    if result["summary"] is not None:
        atomic_write_text(args.out / f"{args.name}.md", _markdown(result))
    print(f"wall {wall / 60:.1f} min, peak {peak_kb / 1e6:.2f} GB; results in {args.out}/{args.name}.{{json,md}}")
    return returncode


if __name__ == "__main__":
    raise SystemExit(main())
