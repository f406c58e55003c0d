"""The ``elastiq`` command line: each subcommand parses its arguments, calls one library function in
``search.pipeline``, and prints where the results are. Bad input ends with one line on stderr and
exit code 2, never a traceback."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from search.config import load_run_config
from search.pipeline import evaluate_run, extract_run, run_pipeline, train_run
from supernet.errors import ElastiqError

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
    print(f"run folder: {artifacts.run_dir}")


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
