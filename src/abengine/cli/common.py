"""What every command shares: engine options, and turning errors into exit statuses.

A user's mistake is one line on stderr and exit status 2; failed tasks are
listed (what failed and why) with exit status 1; Ctrl-C keeps what finished.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from ..engines import Engine, make_engine
from ..errors import TaskFailures, UsageError

EXIT_INTERRUPTED = 130


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line, like every other error here."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_engine_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("engine")
    g.add_argument("--engine", default="local", choices=["local", "workqueue"],
                   help="where tasks run: local (all cores of this machine, the default) or "
                        "workqueue (a master that workers connect to)")
    g.add_argument("--cores", type=int, metavar="N",
                   help="cores to use (local: default all; workqueue: cores per worker)")
    g.add_argument("--workers", type=int, metavar="N",
                   help="workqueue: start N workers on this machine (and remove them after)")
    g.add_argument("--port", type=int, metavar="P",
                   help="workqueue: listen on port P (default: any free port); without "
                        "--workers, print the command that starts workers by hand")
    g.add_argument("--retries", type=int, default=2, metavar="N",
                   help="extra attempts for a task that fails (default: 2)")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def add_function_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-e", "--extra-args", default="", metavar="ARGS",
                   help="extra arguments for an executable F, placed before the file names "
                        "(write -e='-k 3' when they start with a dash)")
    p.add_argument("-f", "--extra-file", action="append", default=[], metavar="FILE",
                   help="an extra input file F needs, placed in its working directory "
                        "(repeatable)")
    p.add_argument("-t", "--seconds-per-cell", type=float, metavar="S",
                   help="estimated seconds per call of F (default: measured)")
    p.add_argument("--timeout", type=float, metavar="S",
                   help="seconds one call of an executable F may take; a call that takes longer "
                        "is killed (with what it started) and reported as failed")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="write the result to FILE (.txt, .npy or .h5) instead of stdout")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run: compute only blocks missing from the .h5 "
                        "output")


def engine_from(args: argparse.Namespace) -> Engine:
    """The engine the engine options ask for (the caller shuts it down)."""
    if args.engine == "local" and (args.workers is not None or args.port is not None):
        raise UsageError("--workers and --port go with --engine workqueue")
    return make_engine(args.engine, args.cores, args.workers, args.port)


def extra_args(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"-e {text!r}: {exc}") from None


def run_command(prog: str, body: Callable[[], int | None]) -> int:
    """Run a command's body and map what it raises to an exit status."""
    try:
        return body() or 0
    except UsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except TaskFailures as exc:
        for failure in exc.failures:
            print(f"{prog}: {failure}", file=sys.stderr)
        kept = f"; the other results are in {exc.result}" if isinstance(exc.result, Path) else ""
        noun = "failure" if len(exc.failures) == 1 else "failures"
        print(f"{prog}: {len(exc.failures)} {noun}{kept}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; finished blocks of an .h5 output are kept for --resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. piped into `head`: not an error of ours
        sys.stderr.close()
        return 0
