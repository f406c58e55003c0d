"""InstaTune vs standard fine-tuning vs standalone small models, on the real default.

    python benchmarks/instatune.py --out benchmarks/results [--steps 400] [--seed 0] [--no-reordered-twins]

One seed's margins are within training and test-set noise: `make bench-instatune` runs several seeds and
`benchmarks/instatune_seeds.py` judges the targets over them.

Runs, on all-MiniLM-L6-v2 + Rotten Tomatoes, each for the same number of steps and batch size:
  1. standard fine-tuning of the full model (largest sub-network only, no reordering), twice: the second
     time after the importance reordering, which leaves the model's function unchanged but lets dropout
     fall on other units, so the two runs differ only by training noise (the noise reference);
  2. elastiq's super-network fine-tuning (importance reordering + sandwich + in-place KD);
  3. each small architecture (the smallest and three middle ones) cut from the pretrained weights and
     fine-tuned standalone, twice: by plain truncation, and after the same importance reordering as run 2.
Then it evaluates every model on the test split, and times standard vs sandwich steps *interleaved*
on the same batches, so the wall-time ratio is not skewed by other load on the machine.

Each phase's result is written (atomically) as soon as it exists, and every training run keeps its
checkpoints, so a killed benchmark started again continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _cache import cached

from supernet.arch import BertArch, BertElasticSpace
from supernet.atomic import atomic_write_text
from supernet.bert import DEPTH_RULES, count_parameters
from supernet.checkpoint import default_checkpoint_dir, load_pretrained, load_tokenizer
from supernet.data import load_rotten_tomatoes, make_batches
from supernet.evaluate import evaluate
from supernet.extract import extract
from supernet.instatune import InstaTuneConfig, sandwich_step, step_archs, step_rng
from supernet.reorder import compute_importance, reorder_by_importance
from supernet.train import TrainConfig, standard_finetuning, train_supernet

MIDDLE = [
    BertArch(heads=(6,) * 3, ffn=(768,) * 3),
    BertArch(heads=(9,) * 4, ffn=(1152,) * 4),
    BertArch(heads=(6,) * 5, ffn=(768,) * 5),
]


def _time_steps(
    model: torch.nn.Module,
    space: BertElasticSpace,
    batches: list[dict[str, torch.Tensor]],
    configs: dict[str, InstaTuneConfig],
) -> dict[str, float]:
    """Median seconds per optimizer step for each config, steps interleaved on the same batches."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    times: dict[str, list[float]] = {name: [] for name in configs}
    model.train()
    for i, batch in enumerate(batches):
        for name, cfg in configs.items():
            tic = time.perf_counter()
            sandwich_step(model, batch, step_archs(space, cfg, step_rng(0, i)), cfg, backward=True)  # type: ignore[arg-type]
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if i >= 2:  # the first steps warm up allocator and caches
                times[name].append(time.perf_counter() - tic)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--work", type=Path, default=Path("runs/bench-instatune"))
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timing-steps", type=int, default=12)
    parser.add_argument(
        "--lr", type=float, default=1e-4, help="peak learning rate of every run (standard, super-network, twins)"
    )
    parser.add_argument("--label-weight", type=float, default=None, help="InstaTune label_weight (default: library's)")
    parser.add_argument(
        "--largest-weight", type=float, default=None, help="InstaTune largest_weight (default: library's)"
    )
    parser.add_argument(
        "--no-student-dropout",
        action="store_true",
        help="InstaTune student_dropout=False: only the largest sub-network trains with dropout (BigNAS)",
    )
    parser.add_argument(
        "--depth-rule",
        choices=DEPTH_RULES,
        default="first",
        help="which layers a shallower sub-network keeps, for the super-network and the twins alike",
    )
    parser.add_argument("--tag", default="", help="suffix of the result files and of the super-network phase")
    parser.add_argument(
        "--no-reordered-twins",
        action="store_true",
        help="skip the stricter reordered twins (not in the issue's targets; saves about 15 min per seed)",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work
    phases = work / "phases"
    phases.mkdir(parents=True, exist_ok=True)
    # Cached phases are only valid for the settings they were run with: refuse to mix them.
    settings = {"steps": args.steps, "seed": args.seed, "lr": args.lr}
    if args.depth_rule != "first":  # folders from before the option hold "first" runs and no such key
        settings["depth_rule"] = args.depth_rule
    stored = cached(phases / "settings.json", lambda: settings)
    if stored != settings:
        parser.error(f"{work} holds runs with {stored}, not {settings}; give another --work")

    checkpoint = default_checkpoint_dir()
    tokenizer = load_tokenizer(checkpoint)
    data = load_rotten_tomatoes(seed=args.seed)
    space = BertElasticSpace.default(6, 12, 1536)
    overrides = {
        "label_weight": args.label_weight,
        "largest_weight": args.largest_weight,
        "student_dropout": False if args.no_student_dropout else None,
    }
    instatune = InstaTuneConfig(**{k: v for k, v in overrides.items() if v is not None})
    config = TrainConfig(
        steps=args.steps,
        batch_size=32,
        learning_rate=args.lr,
        max_length=128,
        seed=args.seed,
        checkpoint_every=100,
        log_every=10,
        instatune=instatune,
    )
    suffix = f"-{args.tag}" if args.tag else ""
    # Phases live in a per-seed work folder (the settings guard), but result files share --out: name them by
    # seed, keeping seed 0's historical name.
    result_name = f"instatune{suffix}" + (f"-seed{args.seed}" if args.seed else "")
    # The standard and standalone phases do not depend on InstaTune settings: a tagged run in the same
    # work folder reuses them and trains only its own super-network.
    standard = standard_finetuning(config)

    def fresh(depth_rule: str = "first") -> Any:
        return load_pretrained(checkpoint, num_labels=data.num_classes, seed=args.seed, depth_rule=depth_rule)

    def evaluate_test(model: Any, arch: BertArch | None = None) -> float:
        return evaluate(model, data.test, tokenizer, arch=arch, batch_size=128, progress=True).accuracy

    def run_standard() -> dict[str, Any]:
        model = fresh()
        result = train_supernet(model, space, data, tokenizer, standard, work / "standard")
        return {
            "test_accuracy": evaluate_test(model),
            "median_step_seconds": result.median_step_seconds,
            "train_seconds": sum(result.step_seconds) or None,
        }

    def run_supernet() -> dict[str, Any]:
        model = fresh(args.depth_rule)
        result = train_supernet(model, space, data, tokenizer, config, work / f"supernet{suffix}")
        archs = {
            "largest": space.largest(),
            "smallest": space.smallest(),
            **{f"middle{i + 1}": a for i, a in enumerate(MIDDLE)},
        }
        return {
            "median_step_seconds": result.median_step_seconds,
            "train_seconds": sum(result.step_seconds) or None,
            "subnets": {
                name: {
                    "arch": a.to_dict(),
                    "params": count_parameters(model.shape, a),
                    "test_accuracy": evaluate_test(model, a),
                }
                for name, a in archs.items()
            },
        }

    def run_standalone(arch: BertArch, name: str, reordered: bool) -> dict[str, Any]:
        model = fresh(args.depth_rule)  # a twin keeps the same layers as its super-network sub-network
        if reordered:
            scores = compute_importance(  # the same scores train_supernet computed for run 2
                model,
                make_batches(data.train, tokenizer, batch_size=32, max_length=128, shuffle_seed=args.seed),
                criterion=config.importance_criterion,
                max_batches=config.importance_batches,
            )
            reorder_by_importance(model, scores)
        small = extract(model, arch)
        small_space = BertElasticSpace(
            arch.depth, arch.heads[0], arch.ffn[0], (arch.depth,), (arch.heads[0],), (arch.ffn[0],)
        )
        folder = f"standalone-{name}" if reordered else f"truncated-{name}"
        result = train_supernet(small, small_space, data, tokenizer, standard, work / folder)
        return {
            "arch": arch.to_dict(),
            "test_accuracy": evaluate_test(small),
            "median_step_seconds": result.median_step_seconds,
        }

    def run_noise_reference() -> dict[str, Any]:
        model = fresh()
        train_supernet(model, space, data, tokenizer, replace(standard, reorder=True), work / "standard-reordered")
        return {"test_accuracy": evaluate_test(model)}

    std = cached(phases / "standard.json", run_standard)
    noise_reference = cached(phases / "standard-reordered.json", run_noise_reference)
    sup = cached(phases / f"supernet{suffix}.json", run_supernet)
    small_archs = [("smallest", space.smallest()), *((f"middle{i + 1}", a) for i, a in enumerate(MIDDLE))]
    # Two kinds of standalone twin: plain truncation of the pretrained weights (the baseline, what a
    # user gets without elastiq), and truncation after the same importance reordering (a stricter baseline).
    truncated = {
        name: cached(phases / f"truncated-{name}.json", lambda a=a, n=name: run_standalone(a, n, reordered=False))
        for name, a in small_archs
    }
    standalone = {
        name: cached(phases / f"standalone-{name}.json", lambda a=a, n=name: run_standalone(a, n, reordered=True))
        for name, a in small_archs
        if not args.no_reordered_twins
    }

    def run_timing() -> dict[str, float]:
        batches = list(make_batches(data.train, tokenizer, batch_size=32, max_length=128, shuffle_seed=99))
        return _time_steps(
            fresh(args.depth_rule),
            space,
            batches[: args.timing_steps],
            {"standard": standard.instatune, "instatune": config.instatune},
        )

    timing = cached(phases / f"timing{suffix}.json", run_timing)
    ratio = timing["instatune"] / timing["standard"]

    def accuracy_of(twins: dict[str, Any], name: str) -> float | None:
        return twins[name]["test_accuracy"] if name in twins else None

    rows = [
        {
            "subnet": name,
            "params_M": sub["params"] / 1e6,
            "instatune_acc": sub["test_accuracy"],
            "truncated_acc": accuracy_of(truncated, name),
            "reordered_acc": accuracy_of(standalone, name),
        }
        for name, sub in sup["subnets"].items()
    ]
    largest_gap = 100 * (std["test_accuracy"] - sup["subnets"]["largest"]["test_accuracy"])

    def beats(column: str) -> bool:
        return all(r["instatune_acc"] >= r[column] for r in rows if r[column] is not None)

    targets = {
        "largest_within_0.5_points_of_standard": largest_gap <= 0.5,
        "every_small_subnet_at_least_its_truncated_twin": beats("truncated_acc"),
        "every_small_subnet_at_least_its_reordered_twin (stricter, not in the issue)": (
            beats("reordered_acc") if standalone else None
        ),
        "step_time_ratio_at_most_2.5": ratio <= 2.5,
    }
    results = {
        "command": "python " + " ".join(sys.argv),
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "data": {"train": len(data.train), "validation": len(data.validation), "test": len(data.test)},
        "config": config.to_dict(),
        "depth_rule": args.depth_rule,
        "standard_finetuning": std,
        "standard_finetuning_noise_reference": noise_reference,
        "supernet": sup,
        "standalone_truncated": truncated,
        "standalone_reordered": standalone,
        "interleaved_step_seconds": timing,
        "step_time_ratio": ratio,
        "largest_gap_points": largest_gap,
        "targets_met": targets,
    }
    atomic_write_text(args.out / f"{result_name}.json", json.dumps(results, indent=2))
    lines = [
        "# InstaTune benchmark (all-MiniLM-L6-v2, Rotten Tomatoes)",
        "",
        f"Command: `{results['command']}`  ",
        f"{args.steps} steps, batch 32, lr {config.learning_rate}, seed {args.seed}, InstaTune "
        f"{config.instatune.to_dict()}, depth rule {args.depth_rule!r}, "
        f"{torch.get_num_threads()} threads; test split of {len(data.test)} sentences.",
        "",
        f"- Standard fine-tuning of the full model: test accuracy **{100 * std['test_accuracy']:.2f}%**",
        f"- The same, after the function-preserving reordering (noise reference): "
        f"**{100 * noise_reference['test_accuracy']:.2f}%**: two runs of one method differ by "
        f"{100 * abs(noise_reference['test_accuracy'] - std['test_accuracy']):.2f} points from training noise alone",
        f"- Super-network, largest sub-network: **{100 * sup['subnets']['largest']['test_accuracy']:.2f}%** "
        f"(gap {largest_gap:+.2f} points; target <= 0.5)",
        f"- Step time, interleaved median: standard {timing['standard']:.3f} s, InstaTune {timing['instatune']:.3f} s, "
        f"ratio **{ratio:.2f}x** (target <= 2.5x)",
        "",
        "Standalone twins are the same architecture fine-tuned alone for the same steps, cut from the pretrained",
        "weights either by plain truncation (first heads / neurons; the layers the depth rule keeps) or after",
        "elastiq's importance reordering.",
        "",
        "| sub-network | arch (heads x depth, FFN) | params (M) | InstaTune test acc | truncated twin "
        "| reordered twin |",
        "|---|---|---|---|---|---|",
    ]

    def percent(value: float | None) -> str:
        return "" if value is None else f"{100 * value:.2f}%"

    for row in rows:
        arch = sup["subnets"][row["subnet"]]["arch"]
        lines.append(
            f"| {row['subnet']} | {arch['heads'][0]} x {len(arch['heads'])}, {arch['ffn'][0]} | "
            f"{row['params_M']:.2f} | {percent(row['instatune_acc'])} | {percent(row['truncated_acc'])} | "
            f"{percent(row['reordered_acc'])} |"
        )
    verdict = {True: "yes", False: "NO", None: "not run"}
    lines += ["", "Targets met: " + ", ".join(f"{k}: {verdict[v]}" for k, v in targets.items())]
    atomic_write_text(args.out / f"{result_name}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
