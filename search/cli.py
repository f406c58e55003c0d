"""The ``elastiq`` command line: each subcommand parses its arguments, calls one library function in
``search.pipeline``, and prints where the results are. Bad input ends with one line on stderr and
exit code 2, never a traceback."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from hardware_profiles.latency_model import validation_rows
from search.config import load_run_config
from search.pipeline import (
    evaluate_run,
    export_run_dir,
    extract_run,
    measure_run,
    profile_run,
    report_run,
    run_pipeline,
    train_run,
    with_search_profile,
)
from search.search_run import search_run
from supernet.errors import ConfigError, ElastiqError

EXIT_BAD_INPUT = 2


def _print_table(rows: Sequence[dict[str, object]]) -> None:
    print(f"{'sub-network':<12} {'depth':>5} {'params (M)':>10} {'accuracy':>9}")
    for row in rows:
        arch = row["arch"]
        assert isinstance(arch, dict)
        params = row["params"]
        accuracy = row["accuracy"]
        assert isinstance(params, int) and isinstance(accuracy, float)
        print(f"{row['name']!s:<12} {len(arch['heads']):>5} {params / 1e6:>10.2f} {100 * accuracy:>8.2f}%")


def _cmd_train(args: argparse.Namespace) -> None:
    config = load_run_config(args.config, run_dir=args.run_dir)
    out = train_run(config, progress=not args.quiet)
    print(f"super-network saved in {out}")


def _cmd_evaluate(args: argparse.Namespace) -> None:
    rows = evaluate_run(
        args.run_dir,
        args.arch or ["largest", "smallest"],
        split=args.split,
        num_random=args.random,
        progress=not args.quiet,
    )
    _print_table(rows)
    print(f"results in {args.run_dir}/evaluation.json")


def _cmd_extract(args: argparse.Namespace) -> None:
    out = extract_run(args.run_dir, args.arch, args.out)
    print(f"sub-network saved in {out}")


def _cmd_run(args: argparse.Namespace) -> None:
    config = load_run_config(args.config, run_dir=args.run_dir)
    artifacts = run_pipeline(config, progress=not args.quiet)
    _print_table(artifacts.evaluation)
    for card in artifacts.exported or []:
        program = card["exported_program"]
        latency = program.get("measured_latency_ms")
        measured = f", {latency:.1f} ms measured" if latency is not None else ""
        status = _check_status(card)
        print(f"exported {card['name']}: accuracy {100 * program['accuracy']:.2f}%{measured} ({status})")
    print(f"report: {artifacts.report}")
    print(f"run folder: {artifacts.run_dir}")


def _cmd_profile(args: argparse.Namespace) -> None:
    if args.arch is not None:
        result = measure_run(
            args.profile,
            args.arch,
            args.policy,
            profile_dirs=args.profile_dir,
            checkpoint=args.checkpoint,
            tables_dir=args.out,
        )
        print(json.dumps(result, indent=2))
        return
    if args.policy is not None:
        raise ConfigError("--policy measures one sub-network and needs --arch too (e.g. --arch largest)")
    run = profile_run(
        args.profile,
        profile_dirs=args.profile_dir,
        checkpoint=args.checkpoint,
        out=args.out,
        n_validation=args.validate,
        seed=args.seed,
        rounds=args.rounds,
        max_seconds=args.max_seconds,
        progress=not args.quiet,
    )
    for row in validation_rows(run.model.validation or {}):
        mark = "  <- the estimates" if row["used"] else ""
        print(f"{row['estimate']:<44} MAPE {row['mape_percent']:6.2f}%   Kendall tau {row['kendall_tau']:.3f}{mark}")
    print(f"latency table, validation and calibration in {run.folder}")


def _cmd_search(args: argparse.Namespace) -> None:
    config = with_search_profile(load_run_config(args.config, run_dir=args.run_dir), args.profile)
    artifacts = search_run(config, progress=not args.quiet)
    front = artifacts.result.front
    print(f"{len(artifacts.result.history)} candidates evaluated; {len(front)} on the Pareto front")
    print(f"results in {artifacts.folder}")


def _cmd_report(args: argparse.Namespace) -> None:
    print(f"report: {report_run(args.run_dir, args.profile)}")


def _check_status(card: dict) -> str:
    if not card["accuracy_check_passed"]:
        return "ACCURACY CHECK FAILED, see model_card.json"
    if not card["latency_check_passed"]:
        return "latency differs from the search's record, see model_card.json"
    return "checks passed"


def _cmd_export(args: argparse.Namespace) -> None:
    cards = export_run_dir(args.run_dir, args.profile, args.out, ranks=args.rank, rules=args.rule)
    for card in cards:
        status = _check_status(card)
        exported = card["exported_program"]
        print(f"{card['name']}: accuracy {100 * exported['accuracy']:.2f}%, {', '.join(card['formats'])} ({status})")
    print(f"exported to {args.out or Path(args.run_dir) / 'exported' / args.profile}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="elastiq", description=__doc__)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is loaded and initialised")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, handler: Callable[[argparse.Namespace], None], help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(handler=handler)
        return p

    p = command("train", _cmd_train, "fine-tune a pretrained checkpoint into a super-network (InstaTune)")
    p.add_argument("--config", required=True, help="YAML run config (see examples/)")
    p.add_argument("--run-dir", help="run folder (overrides the config's run_dir)")

    p = command("evaluate", _cmd_evaluate, "evaluate sub-networks of a trained run on a data split")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--arch", action="append", help="'largest', 'smallest' or JSON {heads, ffn}; repeatable")
    p.add_argument("--random", type=int, default=0, help="also evaluate N random sub-networks")
    p.add_argument("--split", default="test", choices=["train", "validation", "test"])

    p = command("extract", _cmd_extract, "save one sub-network as a standalone model folder")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--arch", required=True, help="'largest', 'smallest' or JSON {heads, ffn}")
    p.add_argument("--out", required=True, help="folder to write (safetensors + JSON config + tokenizer)")

    p = command("profile", _cmd_profile, "measure a hardware profile's latency table on this machine and validate it")
    p.add_argument("--profile", required=True, help="profile name (built-in or from --profile-dir)")
    p.add_argument("--profile-dir", action="append", default=[], help="folder of your own <name>.yaml profiles")
    p.add_argument("--checkpoint", default="default", help="super-network or pretrained folder ('default': MiniLM)")
    p.add_argument("--out", default="runs/profiles", help="where <profile>/ with the measurements is written")
    p.add_argument("--validate", type=int, default=30, help="random (arch, policy) pairs measured end to end")
    p.add_argument("--seed", type=int, default=0, help="seed of the validation pairs")
    p.add_argument("--rounds", type=int, default=1, help="measurements of every validation pair (median taken)")
    p.add_argument("--max-seconds", type=float, default=10.0, help="cap on the timed phase of one measurement")
    p.add_argument("--arch", help="measure only this sub-network end to end: 'largest', 'smallest' or JSON")
    p.add_argument("--policy", help="JSON quantization policy file for --arch (default: all fp32)")

    p = command("search", _cmd_search, "joint architecture x quantization search of a trained run, per profile")
    p.add_argument("--config", required=True, help="the run's YAML config (its search: section)")
    p.add_argument("--run-dir", help="run folder (overrides the config's run_dir)")
    p.add_argument("--profile", help="target profile (overrides search.profile)")

    p = command("report", _cmd_report, "plots and an HTML report of a search's Pareto front")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--profile", required=True, help="which profile's search to report")

    p = command("export", _cmd_export, "export chosen Pareto-front sub-networks as deployable models (.pt2, ONNX, ...)")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--profile", required=True, help="which profile's search to export from")
    p.add_argument("--rank", type=int, action="append", help="front member by rank (0 = best first objective)")
    p.add_argument("--rule", action="append", help="e.g. 'fastest: accuracy >= 0.8', 'smallest', 'most_accurate'")
    p.add_argument("--out", help="output folder (default: <run-dir>/exported/<profile>)")

    p = command("run", _cmd_run, "the whole pipeline from one YAML config")
    p.add_argument("--config", required=True)
    p.add_argument("--run-dir", help="run folder (overrides the config's run_dir)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        args.handler(args)
    except ElastiqError as exc:
        print(f"elastiq: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("elastiq: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
