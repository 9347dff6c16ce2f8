"""`allpairs SET_A SET_B FUNCTION`: compare every element of one set with every element of another."""

from __future__ import annotations

import argparse
import sys

from ..abstractions import AllPairs
from ..functions import BUILTINS
from ..models.allpairs import Resources, block_tasks, predict_block
from .common import (
    Parser,
    add_engine_options,
    add_function_options,
    engine_from,
    extra_args,
    run_command,
)

DESCRIPTION = """\
Compute F(a, b) for every element a of SET_A and b of SET_B.

SET_A and SET_B are list files (one path per line; relative paths are relative
to the list file), directories, quoted glob patterns, .npy files or HDF5
datasets (FILE.h5:NAME). FUNCTION is an executable called as
`FUNCTION [EXTRA_ARGS] fileA fileB` whose stripped stdout is the cell, a
Python `module:function`, or a builtin: {builtins}.

Without -o, each cell is printed as `entryA<TAB>entryB<TAB>result`.
Exit status: 0 all cells computed, 1 some failed (each reported), 2 bad input.
"""


def build_parser() -> Parser:
    p = Parser(prog="allpairs", description=DESCRIPTION.format(
        builtins=", ".join(BUILTINS[k].name for k in BUILTINS)),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("set_a", metavar="SET_A")
    p.add_argument("set_b", metavar="SET_B")
    p.add_argument("function", metavar="FUNCTION")
    p.add_argument("-x", "--block-width", type=int, metavar="N",
                   help="rows of SET_A per task (default: chosen by the model)")
    p.add_argument("-y", "--block-height", type=int, metavar="N",
                   help="elements of SET_B per task (default: chosen by the model)")
    p.add_argument("--symmetric", action="store_true",
                   help="F(a, b) = F(b, a) and SET_A = SET_B: compute one triangle, mirror it")
    p.add_argument("--predict", action="store_true",
                   help="print the predicted time for candidate block sizes, run nothing")
    add_function_options(p)
    add_engine_options(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("allpairs", lambda: _run(args))


def _run(args) -> int:
    block = None
    if args.block_width is not None or args.block_height is not None:
        width = args.block_width if args.block_width is not None else args.block_height
        height = args.block_height if args.block_height is not None else args.block_width
        block = (width, height)
    job = AllPairs(
        args.set_a, args.set_b, args.function, extra_args=extra_args(args.extra_args),
        extra_files=args.extra_file, block=block, seconds_per_cell=args.seconds_per_cell,
        symmetric=args.symmetric, timeout=args.timeout,
    )
    if args.predict:
        return _predict(job, args)
    with engine_from(args) as engine:
        job.run(args.output or "-", resume=args.resume, engine=engine, retries=args.retries,
                progress=not args.quiet)
    return 0


def _predict(job: AllPairs, args) -> int:
    """The model's predicted time for square blocks of doubling sides."""
    with engine_from(args) as engine:
        t = job.seconds_per_cell or job.measure(engine)
        res = Resources(engine.slots, engine.dispatch_latency)
        chosen = job.block or job.choose_block(engine)
    n, m = job.shape
    candidates = {chosen}
    side = 1
    while side < max(n, m):
        candidates.add((min(side, n), min(side, m)))
        side *= 2
    print(f"# F: {t:.3g} s per cell, {res.slots} slots, dispatch {res.dispatch_latency:.2g} s")
    print(f"{'block':>12} {'tasks':>8} {'predicted_s':>12}")
    for bx, by in sorted(candidates):
        tasks = block_tasks(n, m, bx, by, job.symmetric)
        seconds = predict_block(n, m, bx, by, t, res, job.symmetric)
        mark = "  <- chosen" if (bx, by) == chosen else ""
        print(f"{bx:>5}x{by:<6} {tasks:>8} {seconds:>12.3f}{mark}")
    bx, by = chosen
    seconds = predict_block(n, m, bx, by, t, res, job.symmetric)
    print(f"block_size={bx}x{by} predicted_seconds={seconds:.3f}")
    sys.stdout.flush()
    return 0
