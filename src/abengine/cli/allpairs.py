"""`allpairs SET_A SET_B FUNCTION`: compare every element of one set with every element of another."""

from __future__ import annotations

import argparse

from ..abstractions import AllPairs
from ..functions import BUILTINS
from ..models.plot import check_plot_path, plot_predictions
from .common import (
    Parser,
    add_engine_options,
    add_function_options,
    engine_from,
    extra_args,
    run_command,
    show_prediction,
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
                   help="print the predicted time for candidate block sizes (after timing F "
                        "on a probe block, unless -t); the last line is "
                        "`block_size=XxY predicted_seconds=T`")
    p.add_argument("--plot", metavar="FILE.png",
                   help="draw predicted time against block size (and this run's measured "
                        "time); needs matplotlib (pip install 'abengine[plot]')")
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
    plot = check_plot_path(args.plot) if args.plot else None
    with engine_from(args) as engine:
        if args.predict:
            prediction = job.prediction(engine)
            return show_prediction(prediction, plot, args.engine, _title(job, args))
        try:
            job.run(args.output or "-", resume=args.resume, engine=engine, retries=args.retries,
                    progress=not args.quiet, memo=args.memo)
        finally:
            if plot and getattr(job, "elapsed", None) is not None:
                _plot_run(plot, job, engine, args)
    return 0


def _plot_run(path, job: AllPairs, engine, args) -> None:
    """The model's curve (with the parameters this run used) and the run's own time."""
    prediction = job.prediction(engine)
    block = job.block or job.choose_block(engine)
    points = {args.engine: {block[0] * block[1]: job.elapsed}}
    plot_predictions(path, [(args.engine, prediction)], points, title=_title(job, args))


def _title(job: AllPairs, args) -> str:
    n, m = job.shape
    return f"allpairs {args.function} {n} x {m} ({args.engine})"
