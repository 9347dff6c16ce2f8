"""`wavefront FUNCTION XSIZE YSIZE INPUT OUTPUT`: a 2-D recurrence, as the classic wavefront master."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from ..abstractions import Wavefront
from ..errors import TaskFailures, UsageError
from ..models.common import Measured
from ..models.plot import check_plot_path, plot_predictions
from ..storage import parse_cell_line
from .common import (
    Parser,
    add_engine_options,
    add_timing_options,
    engine_from,
    run_command,
    show_prediction,
)

DESCRIPTION = """\
Compute R[x,y] = F(R[x-1,y], R[x,y-1], R[x-1,y-1]) for 1 <= x <= XSIZE and
1 <= y <= YSIZE, from the boundary row R[x,0] and column R[0,y].

INPUT holds the boundary: lines `x y value` for every cell with x = 0 or
y = 0 (x = 0..XSIZE, y = 0..YSIZE; R is (XSIZE+1) x (YSIZE+1), as in the
classic wavefront master). A value is any text, the rest of the line.
FUNCTION is an executable called as `FUNCTION x y xfile yfile dfile`, where
the three files hold R[x-1,y], R[x,y-1] and R[x-1,y-1]; its stripped stdout
(one line) is R[x,y]. A Python `module:function` is called as
F(x, y, left, below, diag) with numbers where the text is numeric.

OUTPUT receives a line `x y value` for every computed cell, as blocks of
cells finish (in OUTPUT.part until the run ends); --resume reads it back and
computes only the cells it lacks. Exit status: 0 all cells computed, 1 some
failed (each named; cells depending on them are not computed), 2 bad input.
"""


def build_parser() -> Parser:
    p = Parser(prog="wavefront", description=DESCRIPTION,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("function", metavar="FUNCTION")
    p.add_argument("xsize", metavar="XSIZE", help="cells to compute along x (x = 1..XSIZE)")
    p.add_argument("ysize", metavar="YSIZE", help="cells to compute along y (y = 1..YSIZE)")
    p.add_argument("input", metavar="INPUT", help="the boundary cells, lines `x y value`")
    p.add_argument("output", metavar="OUTPUT", help="the computed cells, lines `x y value`")
    p.add_argument("-b", "--block-size", default="auto", metavar="N|auto",
                   help="cells per side of the block one task computes (default: auto, "
                        "chosen by the performance model)")
    add_timing_options(p, measured="measured on the first cells")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run: compute only the cells OUTPUT lacks")
    p.add_argument("--predict", action="store_true",
                   help="print the predicted time per block size (after timing F on a few "
                        "cells); the last line is `block_size=B predicted_seconds=T`")
    p.add_argument("--plot", metavar="FILE.png",
                   help="draw predicted time against block size (and this run's measured "
                        "time); needs matplotlib (pip install 'abengine[plot]')")
    add_engine_options(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("wavefront", lambda: _run(args))


def positive_size(text: str, name: str) -> int:
    if not re.fullmatch(r"\s*\+?\d+\s*", text) or int(text) < 1:
        raise UsageError(f"{name} must be a positive integer, not {text!r}")
    return int(text)


def block_size(text: str) -> int | str:
    if text.strip().lower() == "auto":
        return "auto"
    if not re.fullmatch(r"\s*\+?\d+\s*", text) or int(text) < 1:
        raise UsageError(f"-b/--block-size must be a positive integer or auto, not {text!r}")
    return int(text)


def read_boundary(path: str, X: int, Y: int) -> tuple[list[str], list[str]]:
    """R[x,0] for x = 0..X and R[0,y] for y = 0..Y from INPUT's `x y value` lines."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise UsageError(f"INPUT {path}: not found") from None
    except OSError as exc:
        raise UsageError(f"INPUT {path}: cannot read it: {exc.strerror}") from None
    cells: dict[tuple[int, int], str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"INPUT {path} line {number}"
        x, y, value = parse_cell_line(line, where)
        if not (0 <= x <= X and 0 <= y <= Y):
            raise UsageError(f"{where}: cell ({x}, {y}) is outside the matrix "
                             f"(x = 0..{X}, y = 0..{Y})")
        if x and y:
            raise UsageError(f"{where}: cell ({x}, {y}) is not a boundary cell (x = 0 or y = 0)")
        if cells.get((x, y), value) != value:
            raise UsageError(f"{where}: cell ({x}, {y}) was given before with another value "
                             f"({cells[(x, y)]!r})")
        cells[(x, y)] = value
    wanted = [(x, 0) for x in range(X + 1)] + [(0, y) for y in range(1, Y + 1)]
    missing = [cell for cell in wanted if cell not in cells]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UsageError(f"INPUT {path}: boundary cell ({missing[0][0]}, {missing[0][1]}) is "
                         f"missing{more}")
    return [cells[(x, 0)] for x in range(X + 1)], [cells[(0, y)] for y in range(Y + 1)]


def _run(args: argparse.Namespace) -> int:
    X = positive_size(args.xsize, "XSIZE")
    Y = positive_size(args.ysize, "YSIZE")
    block = block_size(args.block_size)
    plot = check_plot_path(args.plot) if args.plot else None
    x_boundary, y_boundary = read_boundary(args.input, X, Y)
    job = Wavefront(args.function, x_boundary, y_boundary, block_size=block,
                    seconds_per_cell=args.seconds_per_cell, timeout=args.timeout, text=True)
    if not args.quiet:
        job.announce = lambda text: print(f"wavefront: {text}", file=sys.stderr, flush=True)
    with engine_from(args) as engine:
        if args.predict:
            prediction = job.run(engine=engine, predict=True, progress=False)
            return show_prediction(prediction, plot, args.engine, _title(job, args))
        try:
            job.run(args.output, resume=args.resume, engine=engine, retries=args.retries,
                    progress=not args.quiet, numeric=False)
        except TaskFailures as exc:
            blocked = job.not_computed - sum(f.where.startswith("cell ") for f in exc.failures)
            if blocked > 0:
                print(f"wavefront: {blocked} cells depend on a failed cell and were not "
                      "computed (--resume computes them once F is fixed)", file=sys.stderr)
            raise
        finally:
            if plot and job.measured is not None and job.elapsed > 0:
                _plot_run(plot, job, args)
    return 0


def _plot_run(path: Path, job: Wavefront, args: argparse.Namespace) -> None:
    """The model's curve, and this run's own time at the block it used."""
    measured = job.measured
    if not measured.seconds_per_cell and job.seconds_observed:
        measured = Measured(job.seconds_observed, measured.resources, job.cells_observed)
    prediction = job.prediction(measured)
    points = {args.engine: {job.block: job.elapsed}} if job.block else None
    plot_predictions(path, [(args.engine, prediction)], points, title=_title(job, args))


def _title(job: Wavefront, args: argparse.Namespace) -> str:
    X, Y = job.cells
    return f"wavefront {Path(args.function).name} {X} x {Y} ({args.engine})"
