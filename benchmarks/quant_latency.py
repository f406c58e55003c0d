"""The full MiniLM classifier under every precision and every built-in profile, on the real default.

For each precision of ``quant``'s registry, the fine-tuned full model (all-MiniLM-L6-v2 on Rotten
Tomatoes) gets a uniform policy (every target Linear in that precision; the 2-label classifier stays
fp32 where a precision cannot take it) and is measured for:

* test accuracy (1,276 sentences), the quantized model evaluated as applied (int8_static calibrated
  on 8 training batches of 32);
* exact serialized size and the analytic estimate;
* latency, end to end, under each built-in profile that supports the precision (batch 1 and 32;
  torch eager, inductor with freezing, ONNX Runtime), beside the profile's calibrated table estimate.

It then copies each profile's lookup-table validation (``hardware_profiles/tables/<profile>/``,
written by ``elastiq profile``) into the results. The fine-tuned model is trained once (standard
fine-tuning, same recipe as ``benchmarks/instatune.py``) and cached in ``--work``; ``--finetuned``
reuses the standard fine-tuning checkpoint of that benchmark instead. Every finished measurement is
cached in ``--work/phases`` so an interrupted run resumes.

Run from the repository root, with nothing else running (latency is measured):

    python benchmarks/quant_latency.py --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _cache import cached

from hardware_profiles.compat import precision_problem
from hardware_profiles.endtoend import measure_subnetwork
from hardware_profiles.errors import ProfileError
from hardware_profiles.latency_model import estimate_metrics
from hardware_profiles.profiling import find_latency_model
from hardware_profiles.registry import load_profiles
from quant.apply import apply_policy
from quant.policy import uniform_policy
from quant.registry import precision_names
from quant.size import estimate_size_bytes, serialized_size_bytes
from supernet.arch import BertElasticSpace
from supernet.atomic import atomic_write_text
from supernet.checkpoint import default_checkpoint_dir, load_pretrained, load_tokenizer
from supernet.data import load_rotten_tomatoes, make_batches
from supernet.evaluate import evaluate
from supernet.train import TrainConfig, standard_finetuning, train_supernet

CALIBRATION_BATCHES = 8


def _finetuned_model(args: argparse.Namespace, data: Any, tokenizer: Any, space: BertElasticSpace) -> Any:
    model = load_pretrained(default_checkpoint_dir(), num_labels=data.num_classes, seed=args.seed)
    if args.finetuned is not None:
        state = torch.load(args.finetuned, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        return model.eval()
    config = standard_finetuning(
        TrainConfig(steps=args.steps, batch_size=32, learning_rate=1e-4, max_length=128, seed=args.seed)
    )
    train_supernet(model, space, data, tokenizer, config, args.work / "standard")  # resumes from its checkpoint
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--work", type=Path, default=Path("runs/bench-quant"))
    parser.add_argument("--finetuned", type=Path, help="checkpoint.pt of a standard fine-tuning (instatune bench)")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tables", type=Path, default=Path("hardware_profiles/tables"))
    parser.add_argument("--note", action="append", default=[], help="a line for the report's Notes section")
    parser.add_argument(
        "--quality-only", action="store_true", help="only accuracy and size (need no quiet machine); cached for later"
    )
    args = parser.parse_args()
    phases = args.work / "phases"
    phases.mkdir(parents=True, exist_ok=True)
    command = "python " + " ".join(sys.argv)

    tokenizer = load_tokenizer(default_checkpoint_dir())
    data = load_rotten_tomatoes(seed=args.seed)
    space = BertElasticSpace.default(6, 12, 1536)
    model = _finetuned_model(args, data, tokenizer, space)
    shape, arch = model.shape, space.largest()
    calibration = list(make_batches(data.train, tokenizer, batch_size=32, max_length=128))[:CALIBRATION_BATCHES]
    profiles = load_profiles()

    # Latency first (it needs the machine to itself), then accuracy and size (they do not).
    latencies: dict[str, dict[str, Any]] = {}
    for precision in precision_names():
        policy = uniform_policy(model, precision)
        latencies[precision] = {}
        for name, profile in profiles.items():
            if args.quality_only:
                break
            reason = precision_problem(precision, profile.runtime, profile.device)
            if precision not in profile.precisions:
                latencies[precision][name] = {"skipped": reason or "not among the profile's precisions (see its YAML)"}
                continue

            def latency(profile: Any = profile, policy: Any = policy) -> dict[str, Any]:
                with tempfile.TemporaryDirectory() as scratch:
                    stats = measure_subnetwork(model, arch, policy, profile, scratch, calibration=calibration[:1])
                return stats.to_dict()

            measured = cached(phases / f"latency-{name}-{precision}.json", latency)
            try:
                estimate = find_latency_model(name, [args.tables]).predict_ms(shape, arch, policy)
            except ProfileError:
                estimate = None
            latencies[precision][name] = {"measured_ms": measured["median_ms"], "estimated_ms": estimate, **measured}

    rows: list[dict[str, Any]] = []
    for precision in precision_names():
        policy = uniform_policy(model, precision)

        def quality(policy: Any = policy) -> dict[str, Any]:
            quantized = apply_policy(model, policy, calibration)
            tic = time.perf_counter()
            accuracy = evaluate(quantized, data.test, tokenizer, batch_size=64, progress=True).accuracy
            return {
                "test_accuracy": accuracy,
                "eval_seconds": time.perf_counter() - tic,
                "size_bytes": serialized_size_bytes(quantized),
                "size_estimate_bytes": estimate_size_bytes(shape, arch, policy),
            }

        row: dict[str, Any] = {"precision": precision, **cached(phases / f"quality-{precision}.json", quality)}
        print(json.dumps(row), flush=True)
        row["latency"] = latencies[precision]
        rows.append(row)
    if args.quality_only:
        return
    validation = {}
    for name in profiles:
        path = args.tables / name / "latency_model.json"
        if path.is_file():
            validation[name] = json.loads(path.read_text())["validation"]
    result = {"command": command, "model": "all-MiniLM-L6-v2 fine-tuned on Rotten Tomatoes", "rows": rows}
    result["table_validation"] = validation
    result["notes"] = list(args.note)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "quant_latency.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(args.out / "quant_latency.md", _markdown(result, list(profiles)))


def _markdown(result: dict[str, Any], profiles: list[str]) -> str:
    lines = [
        "# Full MiniLM classifier per precision and profile",
        "",
        f"Command: `{result['command']}`",
        "",
        "Uniform policy per precision (the 2-label classifier stays fp32 where a precision cannot take it).",
        "Latency: median ms of one call at the profile's batch x 128 tokens, measured end to end (estimate from",
        "the profile's calibrated lookup table in parentheses). Size: bytes of torch.save(state_dict).",
        "",
        "| precision | test accuracy | size (MB) | size estimate error | " + " | ".join(profiles) + " |",
        "|---|---|---|---|" + "---|" * len(profiles),
    ]
    for row in result["rows"]:
        cells = []
        for name in profiles:
            cell = row["latency"][name]
            if "skipped" in cell:
                cells.append("n/a")
            else:
                estimate = f" ({cell['estimated_ms']:.1f})" if cell["estimated_ms"] is not None else ""
                cells.append(f"{cell['measured_ms']:.1f}{estimate}")
        error = 100 * (row["size_estimate_bytes"] - row["size_bytes"]) / row["size_bytes"]
        lines.append(
            f"| {row['precision']} | {100 * row['test_accuracy']:.2f}% | {row['size_bytes'] / 1e6:.2f} | "
            f"{error:+.2f}% | " + " | ".join(cells) + " |"
        )
    lines += ["", "n/a: the profile does not list the precision; reasons:", ""]
    for row in result["rows"]:
        for name in profiles:
            cell = row["latency"][name]
            if "skipped" in cell:
                lines.append(f"- {row['precision']} on {name}: {cell['skipped']}")
    lines += [
        "",
        "## Lookup-table validation (random (arch, policy) pairs measured end to end)",
        "",
        "| profile | pairs | raw table MAPE | raw table tau | estimate MAPE (nested LOO) | estimate tau | design |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, validation in result["table_validation"].items():
        raw, estimate = validation["raw_table"], estimate_metrics(validation)
        lines.append(
            f"| {name} | {int(raw['n'])} | {raw['mape_percent']:.2f}% | {raw['kendall_tau']:.3f} | "
            f"{estimate['mape_percent']:.2f}% | {estimate['kendall_tau']:.3f} | "
            f"{validation.get('design', validation.get('used', ''))} |"
        )
    if result.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {note}" for note in result["notes"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
