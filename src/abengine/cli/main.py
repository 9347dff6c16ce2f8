"""`abengine SUBCOMMAND`: the umbrella command (map, allpairs, worker, status, submit-workers,
builtins)."""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..abstractions import Map
from ..functions import BUILTINS
from . import allpairs as allpairs_cli
from . import classify as classify_cli
from .common import (
    Parser,
    add_engine_options,
    add_function_options,
    engine_from,
    extra_args,
    run_command,
)


def build_parser() -> Parser:
    p = Parser(prog="abengine", description="Abstractions for large workloads.")
    p.add_argument("--version", action="version", version=f"abengine {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    m = sub.add_parser("map", help="apply FUNCTION to every element of SET",
                       description="Apply FUNCTION to every element of SET: an executable "
                       "called `FUNCTION [EXTRA_ARGS] file` whose stripped stdout is the result, "
                       "or a Python module:function. Prints `entry<TAB>result` lines.")
    m.add_argument("set", metavar="SET")
    m.add_argument("function", metavar="FUNCTION")
    # -b's long form is --block-size: --batch names where workers run (engine options).
    m.add_argument("-b", "--block-size", type=int, metavar="N",
                   help="elements per task (default: chosen by the model)")
    add_function_options(m)
    add_engine_options(m)
    sub.add_parser("allpairs", help="same as the `allpairs` command", add_help=False)
    sub.add_parser("worker", help="run tasks for a master: abengine worker HOST PORT",
                   add_help=False)
    sub.add_parser("status", help="workers and tasks of a master: abengine status HOST PORT",
                   add_help=False)
    sub.add_parser("submit-workers", add_help=False,
                   help="workers for a master as batch jobs: abengine submit-workers -T "
                        "local|ssh|slurm|sge|condor HOST PORT N")
    classify_cli.add_parser(sub)
    sub.add_parser("builtins", help="list the builtin functions")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["allpairs"]:
        return allpairs_cli.main(argv[1:])
    if argv[:1] == ["worker"]:
        from ..workqueue.worker import main as worker_main

        return worker_main(argv[1:])
    if argv[:1] == ["status"]:
        from ..workqueue.status import main as status_main

        return status_main(argv[1:])
    if argv[:1] == ["submit-workers"]:
        from .submit_workers import main as submit_main

        return submit_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "map":
        return run_command("abengine map", lambda: _map(args))
    if args.command == "classify":
        return run_command("abengine classify", lambda: classify_cli.run(args))
    if args.command == "builtins":
        for builtin in BUILTINS.values():
            print(f"{builtin.name:<12} {builtin.help}")
        return 0
    print("abengine: error: say which command: map, allpairs, classify, worker, status, "
          "submit-workers or builtins (see abengine --help)", file=sys.stderr)
    return 2


def _map(args: argparse.Namespace) -> int:
    job = Map(args.set, args.function, extra_args=extra_args(args.extra_args),
              extra_files=args.extra_file, block=args.block_size,
              seconds_per_cell=args.seconds_per_cell, timeout=args.timeout)
    with engine_from(args) as engine:
        job.run(args.output or "-", resume=args.resume, engine=engine, retries=args.retries,
                progress=not args.quiet, memo=args.memo)
    return 0
