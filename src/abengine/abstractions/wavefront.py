"""Wavefront: R[x, y] = F(R[x-1, y], R[x, y-1], R[x-1, y-1]) from a boundary row and column.

R has X + 1 rows and Y + 1 columns: row x = 0 and column y = 0 are the
boundary, given; the X × Y cells with x, y ≥ 1 are computed (the classic
wavefront's `XSIZE YSIZE`). They are cut into b × b blocks, one task each,
which computes its cells one by one (or all at once with a block kernel).
A block depends on its left, lower and diagonal neighbours and is dispatched
the moment they are done; it receives only what it needs from them, as three
files: the column to its left, the row below it and the corner cell.

F is any Python callable `F(x, y, left, below, diag)`, a block kernel
`F(xs, ys, left, below, corner) -> array (len(xs), len(ys))` (marked with
`abengine.vectorized`), or an executable run as `F x y xfile yfile dfile`
whose stripped stdout is the value. The block side comes from the model in
models/wavefront.py, fed with F's time sampled on the first cells (which are
kept, not thrown away) and the latency measured on the engine in use.

A cell whose F fails is named; cells that depend on it are never computed
(a block all of whose cells do is passed over with an empty `:` task), every
other cell is. An output store (`.h5`, or `x y value` text lines) keeps each
finished cell, so `resume` computes only the cells it lacks.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import statistics
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np

from ..engines import Engine, make_engine
from ..errors import Failure, TaskFailures, UsageError
from ..functions import Function, resolve_function
from ..graph import (
    STDERR_TAIL,
    Deferred,
    File,
    PythonTask,
    Task,
    TaskGraph,
    TaskResult,
    check_cancelled,
    current_sandbox,
)
from ..models import wavefront as model
from ..models.allpairs import MAX_BLOCK_CELLS, MAX_PER_CELL_BLOCK
from ..models.common import Measured, Prediction, Resources
from ..progress import progress_bar
from ..runners import CellFailed, load_function, run_program
from ..storage import CellStore, fill_value, format_value, open_cell_store
from .spread import spread_inputs

Key = tuple[int, int]
#: F is timed on pairs of strips growing until it has run about PROBE_SECONDS / 4 (at
#: most PROBE_SIDE² cells a strip, PROBE_ROUNDS pairs and 1/PROBE_SHARE of the cells);
#: then, if a task costs less than CHEAP_TASK seconds, the latency on LATENCY_SAMPLES
#: single cells.
PROBE_SECONDS = 0.2
PROBE_SIDE = 16
PROBE_ROUNDS = 3
PROBE_SHARE = 50
CHEAP_TASK = 0.02
LATENCY_SAMPLES = 3
#: The names a block's inputs have in its sandbox.
EDGES = ("edge.left", "edge.below", "edge.corner")


# -- how a value is kept, and what F receives ---------------------------------------------


@dataclass(frozen=True)
class Codec:
    """How F's values are kept: "raw" (as returned), "dtype" (cast to a numpy type, as an
    .h5 store needs) or "text" (as the classic OUTPUT holds them; a Python F receives
    numbers where the text is one). F always receives what is kept, so a resumed run
    sees exactly what an uninterrupted one would have."""

    kind: str = "raw"
    dtype: str = ""

    def encode(self, value: Any) -> Any:
        if self.kind == "dtype":
            try:
                if value is None:
                    raise TypeError
                return np.dtype(self.dtype).type(value).item()
            except (TypeError, ValueError, OverflowError):
                raise CellFailed(f"returned {_shown(value)}, not a {self.dtype}") from None
        if self.kind == "text":
            return one_line(value if isinstance(value, str) else format_value(value))
        return value

    def decode(self, value: Any) -> Any:
        return parse_text(value) if self.kind == "text" and isinstance(value, str) else value


_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|infinity|nan)", re.I)


def parse_text(text: str) -> Any:
    """An int or float where the text is one, else the text."""
    text = text.strip()
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    return text


def one_line(text: str) -> str:
    """A value kept as text must be one non-empty line (it becomes a line `x y value`)."""
    text = text.strip()
    if not text:
        raise CellFailed("printed nothing (a value is one line of text)")
    if "\n" in text:
        raise CellFailed(f"printed {text.count(chr(10)) + 1} lines (a value is one line of text)")
    return text


def as_text(value: Any) -> str:
    return value if isinstance(value, str) else format_value(value)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 60 else text[:57] + "..."


# -- what runs inside a task ------------------------------------------------------------------


@dataclass
class BlockSpec:
    """What a block task needs besides its three edge files: F, where the block is, and the
    cells of it an earlier run already computed (`known`: values and mask)."""

    kind: str  # "callable" | "block" | "executable"
    fn: bytes | list[str]  # a pickled callable, or the argv of an executable
    x0: int
    y0: int
    w: int
    h: int
    codec: Codec
    known: tuple[np.ndarray, np.ndarray] | None = None
    timeout: float | None = None


@dataclass
class BlockOut:
    """A block's values (w × h), which of them this task computed, and why others failed."""

    values: np.ndarray
    computed: np.ndarray
    failures: list[tuple[tuple[int, int], str, str]] = field(default_factory=list)
    seconds: float = 0.0  # time in the cell loop: F, plus what each cell costs around it
    cpu: float = 0.0  # CPU of the thread that ran the loop, meanwhile
    pid: int = 0  # the process that ran it (the master's own, for a task run on its thread)
    thread: int = 0  # ... and its thread


def read_edge(name: str) -> tuple[list[Any], list[bool]]:
    with open(current_sandbox() / name, "rb") as f:
        return cloudpickle.load(f)


def compute_block(spec: BlockSpec) -> BlockOut:
    """Task entry point: read the block's edges from the sandbox and compute its cells."""
    left, left_missing = read_edge(EDGES[0])
    below, below_missing = read_edge(EDGES[1])
    corner, corner_missing = read_edge(EDGES[2])
    if spec.kind == "block":
        return _kernel_block(spec, left, below, corner[0],
                             any(left_missing) or any(below_missing) or corner_missing[0])
    # V[i][j] is R[x0 - 1 + i, y0 - 1 + j]: the block with its inputs around it.
    V: list[list[Any]] = [[None] * (spec.h + 1) for _ in range(spec.w + 1)]
    M: list[list[bool]] = [[True] * (spec.h + 1) for _ in range(spec.w + 1)]
    V[0][0], M[0][0] = corner[0], corner_missing[0]
    V[0][1:], M[0][1:] = list(left), list(left_missing)
    for i in range(spec.w):
        V[i + 1][0], M[i + 1][0] = below[i], below_missing[i]
    return _cell_loop(spec, V, M, _cell_function(spec))


def _cell_loop(spec: BlockSpec, V: list[list[Any]], M: list[list[bool]], call) -> BlockOut:
    """Every cell in order; a cell whose inputs are missing (an earlier failure) is skipped."""
    computed = np.zeros((spec.w, spec.h), dtype=bool)
    failures = []
    known_values, known = spec.known if spec.known is not None else (None, None)
    x0, y0 = spec.x0 - 1, spec.y0 - 1
    start, cpu = time.perf_counter(), time.thread_time()
    for j in range(1, spec.h + 1):
        for i in range(1, spec.w + 1):
            if known is not None and known[i - 1, j - 1]:
                V[i][j], M[i][j] = known_values[i - 1, j - 1], False
                continue
            if M[i - 1][j] or M[i][j - 1] or M[i - 1][j - 1]:
                continue
            check_cancelled()
            try:
                V[i][j] = call(x0 + i, y0 + j, V[i - 1][j], V[i][j - 1], V[i - 1][j - 1])
            except CellFailed as failed:
                failures.append(((i - 1, j - 1), failed.reason, failed.stderr))
                continue
            M[i][j] = False
            computed[i - 1, j - 1] = True
    seconds, cpu = time.perf_counter() - start, time.thread_time() - cpu
    values = np.empty((spec.w, spec.h), dtype=object)
    for i in range(spec.w):
        row = V[i + 1]
        for j in range(spec.h):
            values[i, j] = row[j + 1]
    return BlockOut(values, computed, failures, seconds, cpu, os.getpid(),
                    threading.get_ident())


def _cell_function(spec: BlockSpec):
    """F for one cell, taking and returning kept values; a failure raises CellFailed."""
    codec = spec.codec
    if spec.kind == "executable":
        return functools.partial(_run_executable, list(spec.fn), codec, spec.timeout)
    fn = load_function(spec.fn)

    def call(x: int, y: int, left: Any, below: Any, diag: Any) -> Any:
        try:
            value = fn(x, y, codec.decode(left), codec.decode(below), codec.decode(diag))
        except Exception as exc:
            tail = "".join(traceback.format_exception(exc)[-3:])[-STDERR_TAIL:]
            raise CellFailed(f"raised {type(exc).__name__}: {exc}", tail) from None
        return codec.encode(value)

    return call


def _run_executable(argv: list[str], codec: Codec, timeout: float | None, x: int, y: int,
                    left: Any, below: Any, diag: Any) -> Any:
    """`F x y xfile yfile dfile` in the sandbox, as the classic wavefront calls it."""
    sandbox = current_sandbox()
    for name, value in (("xfile", left), ("yfile", below), ("dfile", diag)):
        (sandbox / name).write_text(as_text(value) + "\n")
    stdout = run_program([*argv, str(x), str(y), "xfile", "yfile", "dfile"], timeout)
    return codec.encode(one_line(stdout))


def _kernel_block(spec: BlockSpec, left: list, below: list, corner: Any,
                  missing: bool) -> BlockOut:
    """A block kernel computes the whole block at once; it raises to fail the block."""
    values = np.empty((spec.w, spec.h), dtype=object)
    computed = np.zeros((spec.w, spec.h), dtype=bool)
    if missing:  # an input failed: nothing here can be computed
        return BlockOut(values, computed)
    kernel = load_function(spec.fn)
    dec = spec.codec.decode
    xs, ys = np.arange(spec.x0, spec.x0 + spec.w), np.arange(spec.y0, spec.y0 + spec.h)
    start, cpu = time.perf_counter(), time.thread_time()
    out = np.asarray(kernel(xs, ys, np.asarray([dec(v) for v in left]),
                            np.asarray([dec(v) for v in below]), dec(corner)))
    seconds, cpu = time.perf_counter() - start, time.thread_time() - cpu
    if out.shape != (spec.w, spec.h):
        name = getattr(kernel, "__name__", "F")
        raise ValueError(f"{name} returned shape {out.shape} for a block of {(spec.w, spec.h)}")
    if spec.codec.kind == "dtype":
        values = out.astype(spec.codec.dtype)
    else:
        for index, value in np.ndenumerate(out):
            values[index] = spec.codec.encode(value.item() if hasattr(value, "item") else value)
    computed[...] = True
    if spec.known is not None:
        computed &= ~spec.known[1]
    return BlockOut(values, computed, seconds=seconds, cpu=cpu, pid=os.getpid(),
                    thread=threading.get_ident())


# -- the abstraction ---------------------------------------------------------------------------


def _boundary(values: Any, name: str) -> list[Any]:
    """A boundary as a list of plain Python values (numpy scalars become int/float)."""
    if isinstance(values, (str, bytes)):
        raise UsageError(f"{name} must be a sequence of values, not a string")
    try:
        array = np.asarray(values) if not isinstance(values, list) else None
        items = array.tolist() if array is not None and array.dtype != object else list(values)
    except TypeError:
        raise UsageError(f"{name} must be a sequence of values, not {type(values).__name__}"
                         ) from None
    if array is not None and array.ndim != 1:
        raise UsageError(f"{name} must be one-dimensional, not of shape {array.shape}")
    if len(items) < 2:
        raise UsageError(f"{name} needs at least 2 values (R[0] and one more), got {len(items)}")
    return items


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise UsageError(f"{what} must be a positive integer, not {value!r}")
    return int(value)


class Wavefront:
    """R[x, y] = F(x, y, R[x-1, y], R[x, y-1], R[x-1, y-1]) for 1 ≤ x ≤ X, 1 ≤ y ≤ Y."""

    def __init__(self, F: Any, x_boundary: Any, y_boundary: Any, *,
                 block_size: int | str | None = "auto", seconds_per_cell: float | None = None,
                 dtype: Any = None, vectorized: bool = False, timeout: float | None = None,
                 text: bool = False) -> None:
        """`text=True` keeps values as text, as the classic wavefront's files hold them."""
        self.function: Function = resolve_function(F, (), vectorized)
        if self.function.kind == "builtin":
            raise UsageError(f"F: {self.function.name} is an All-Pairs builtin; Wavefront "
                             "needs F(x, y, left, below, diag)")
        self.x_boundary = _boundary(x_boundary, "x_boundary")
        self.y_boundary = _boundary(y_boundary, "y_boundary")
        if not _same(self.x_boundary[0], self.y_boundary[0]):
            raise UsageError(f"x_boundary[0] and y_boundary[0] are both R[0, 0] but differ "
                             f"({_shown(self.x_boundary[0])} ≠ {_shown(self.y_boundary[0])})")
        self.shape = (len(self.x_boundary), len(self.y_boundary))
        self.block_size = None if block_size in (None, "auto") else _positive_int(
            block_size, "block size")
        self.seconds_per_cell = None
        if seconds_per_cell is not None:
            if not isinstance(seconds_per_cell, (int, float)) or not seconds_per_cell > 0:
                raise UsageError(f"seconds per cell must be a positive number, not "
                                 f"{seconds_per_cell!r}")
            self.seconds_per_cell = float(seconds_per_cell)
        if timeout is not None and (not isinstance(timeout, (int, float)) or not timeout > 0):
            raise UsageError(f"timeout must be a positive number of seconds, not {timeout!r}")
        if timeout is not None and self.function.kind != "executable":
            raise UsageError("timeout applies to an executable F (a Python call cannot be "
                             "stopped without its process)")
        self.timeout = timeout
        try:
            self.dtype = None if dtype is None else np.dtype(dtype)
        except TypeError:
            raise UsageError(f"dtype {dtype!r} is not a numpy data type") from None
        self.text = text
        #: Filled in by a run: what the model was given, and the wall time of the run.
        self.measured: Measured | None = None
        self.block: int | None = None
        self.elapsed = 0.0
        self.not_computed = 0  # cells left without a value (they depend on a failure)
        #: F's time per cell over the whole run, and over how many cells (for pictures).
        self.seconds_observed = 0.0
        self.cells_observed = 0
        #: Told, once the block is chosen, what the run will do (the CLI prints it).
        self.announce: Callable[[str], None] | None = None

    @property
    def cells(self) -> tuple[int, int]:
        """X and Y: the computed cells along each axis (R is (X+1) × (Y+1))."""
        return self.shape[0] - 1, self.shape[1] - 1

    def codec(self, output: str | Path | None) -> Codec:
        """Text for text outputs (and the CLI); the dtype asked for; float64 where an .h5
        store or a block kernel needs numbers and none was asked for; else as F returns."""
        if self.text or (output is not None and Path(output).suffix.lower()
                         not in (".h5", ".hdf5")):
            return Codec("text")
        if self.dtype is not None:
            return Codec("raw") if self.dtype == object else Codec("dtype", self.dtype.str)
        if output is not None or self.function.kind == "block":
            return Codec("dtype", np.dtype(np.float64).str)
        return Codec("raw")

    def fingerprint(self) -> str:
        """Identifies the boundaries, so an .h5 store is only resumed with the same ones."""
        pickled = cloudpickle.dumps((self.x_boundary, self.y_boundary))
        return hashlib.sha256(pickled).hexdigest()

    # -- the model ---------------------------------------------------------------------
    def resources(self, engine: Engine, measured_latency: float | None = None) -> Resources:
        latency = engine.dispatch_latency
        if measured_latency is not None:
            latency = max(latency, measured_latency)
        return Resources(engine.slots, latency)

    def max_cells(self) -> int:
        return MAX_BLOCK_CELLS if self.function.kind == "block" else MAX_PER_CELL_BLOCK

    def choose_block(self, measured: Measured) -> int:
        if self.block_size is not None:
            return self.block_size
        X, Y = self.cells
        return model.choose_block(X, Y, measured.seconds_per_cell, measured.resources,
                                  self.max_cells())

    def prediction(self, measured: Measured) -> Prediction:
        X, Y = self.cells
        return model.prediction(X, Y, min(self.choose_block(measured), max(X, Y)), measured)

    # -- running -----------------------------------------------------------------------
    def run(self, output: str | Path | None = None, *, resume: bool = False,
            engine: str | Engine | None = None, cores: int | None = None,
            workers: int | None = None, retries: int = 2, progress: bool = True,
            predict: bool = False, numeric: bool = True) -> Any:
        """Compute every missing cell; return R (numeric where every value is a number).

        `predict=True` only samples F and returns the model's `Prediction`.
        Raises `TaskFailures` (its `.result` holds R) when some cells failed.
        """
        if resume and output is None:
            raise UsageError("--resume needs an output to resume from")
        if predict:
            output, resume = None, False
        codec = self.codec(output)
        store = None
        if output is not None:
            meta = {"function": self.function.identity, "boundaries": self.fingerprint(),
                    "codec": f"{codec.kind}:{codec.dtype}", "abstraction": "wavefront"}
            store = open_cell_store(output, self.shape, np.dtype(codec.dtype) if codec.dtype
                                    else None, meta, resume)
        own_engine = not isinstance(engine, Engine)
        run = None
        try:
            eng = make_engine(engine if engine is not None or not workers else "workqueue",
                              cores, workers)
            try:
                run = _Run(self, codec, store)
                if predict:
                    return self.prediction(self.measure(eng, run))
                failures = self._execute(eng, run, progress, retries)
            finally:
                if own_engine:
                    eng.shutdown()
        except BaseException:
            if store is not None:
                store.abort()
            raise
        finally:
            if run is not None:
                run.close()
        complete = not failures
        if store is not None:
            store.finish(complete)
        result = run.result(numeric)
        if failures:
            raise TaskFailures(failures, result=result, skipped=run.blocked_blocks)
        return result

    def measure(self, engine: Engine, run: _Run) -> Measured:
        """F's time per cell, and what a task costs beyond F on `engine`, from real cells.

        The samples are tasks of their own and their cells are kept. First one cell alone,
        then rounds of two strips that do not need each other, run at once as the blocks
        of the run will be (so F is timed with the slots busy): the row to the right of
        that cell and the column above it, continued round after round (at most
        PROBE_ROUNDS) until F has run about PROBE_SECONDS/4 in rounds whose strips did
        run at once (a pool may start its second worker late), within 1/PROBE_SHARE of
        the cells; where a task costs CHEAP_TASK or more, one such round. Where a task
        costs little, LATENCY_SAMPLES single cells follow, alone, for the latency (a
        task's wall time beyond F) and the master's CPU per task (medians); where it
        costs much, the strips' own serve.
        """
        if self.seconds_per_cell is not None:
            self.measured = Measured(self.seconds_per_cell, self.resources(engine))
            return self.measured
        anchor = run.first_missing()
        first = run.sample(engine, [(*anchor, 1, 1)]) if anchor is not None else None
        if first is None:
            self.measured = Measured(1e-3, self.resources(engine))
            return self.measured
        X, Y = self.cells
        budget = max(2, X * Y // PROBE_SHARE)  # cells, all rounds together
        row, column = (anchor[0] + 1, anchor[1]), (anchor[0], anchor[1] + 1)
        rounds: list[Sample] = []
        t = max(first.seconds, 1e-9) / first.cells
        while len(rounds) < PROBE_ROUNDS:
            room = min(X + 1 - row[0], Y + 1 - column[1])  # half of it: room for another round
            left = budget - sum(r.cells for r in rounds)
            length = int(max(1, min(PROBE_SIDE ** 2, left // 2, room // 2, PROBE_SECONDS / 8 / t)))
            strips = [(row[0], row[1], min(length, X + 1 - row[0]), 1),
                      (column[0], column[1], 1, min(length, Y + 1 - column[1]))]
            strips = [b for b in strips if b[2] > 0 and b[3] > 0]
            sample = run.sample(engine, strips) if strips and left > 0 else None
            if sample is None:
                break
            rounds.append(sample)
            row, column = (row[0] + length, row[1]), (column[0], column[1] + length)
            timing = timed_rounds(rounds, engine.slots)
            t = statistics.median(r.seconds / r.cells for r in timing)  # a burst hits one round
            timed_well = sample.together or engine.slots < 2
            enough = sum(r.seconds for r in timing) >= PROBE_SECONDS / 4
            if timed_well and (enough or sample.latency >= CHEAP_TASK):  # dear rounds: one
                break
        timed = timed_rounds(rounds, engine.slots) or [first]
        singles = []
        if min(r.latency for r in timed) < CHEAP_TASK:
            while len(singles) < LATENCY_SAMPLES and (anchor := run.first_missing()):
                sample = run.sample(engine, [(*anchor, 1, 1)])
                if sample is None:
                    break
                singles.append(sample)
        timed = singles or timed
        latency = statistics.median(r.latency for r in timed)
        master = statistics.median(r.master for r in timed)
        cells = sum(r.cells for r in [first, *rounds, *singles])
        res = self.resources(engine, latency)
        res = Resources(res.slots, res.dispatch_latency,
                        master_seconds=min(res.dispatch_latency, master))
        self.measured = Measured(t, res, cells, True)
        return self.measured

    def _execute(self, engine: Engine, run: _Run, progress: bool, retries: int) -> list[Failure]:
        start = time.perf_counter()
        bar = progress_bar(run.to_compute, enabled=progress)
        run.bar = bar
        try:
            if self.block_size is None and run.missing():
                self.measure(engine, run)
            else:
                self.measured = Measured(self.seconds_per_cell or 0.0, self.resources(engine))
            block = self.choose_block(self.measured)
            self.block = block
            if self.announce is not None:
                self.announce(self._plan_summary(block))
            graph = run.plan(block)
            spread_inputs(engine, graph)  # F, when it is a program that travels
            report = engine.run(graph, run.place, retries=retries)
        finally:
            bar.close()
        self.elapsed = time.perf_counter() - start
        failures = list(run.failures)
        for task, attempts in report.failed.items():
            last = attempts[-1]
            failures.append(Failure(run.describe_block(task.tag, block),
                                    f"{last.error} (after {len(attempts)} attempts)",
                                    last.stderr))
        run.blocked_blocks += len(report.skipped)
        self.not_computed = int((~run.done).sum())
        self.cells_observed = run.f_cells
        self.seconds_observed = run.f_seconds / run.f_cells if run.f_cells else 0.0
        return failures


    def _plan_summary(self, block: int) -> str:
        X, Y = self.cells
        gx, gy = model.block_grid(X, Y, block)
        text = f"{X} x {Y} cells in blocks of {block} ({gx * gy} tasks)"
        measured = self.measured
        if measured is not None and measured.seconds_per_cell:
            seconds = model.predict_seconds(X, Y, block, measured.seconds_per_cell,
                                            measured.resources)
            text += (f" on {measured.resources.slots} slots; predicted {seconds:.3g} s "
                     f"(F {measured.seconds_per_cell:.3g} s per cell, dispatch "
                     f"{measured.resources.dispatch_latency:.3g} s per task, master "
                     f"{measured.resources.master_seconds:.3g} s)")
        return text


def timed_rounds(rounds: list[Sample], slots: int) -> list[Sample]:
    """The sample rounds that time F as the run will: those whose strips each had a worker
    (a process pool may start its second worker only once the first round is under way,
    and run both strips on the first); all of them where the engine has one slot."""
    return [r for r in rounds if r.together or slots < 2] or rounds


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b) or (a != a and b != b)  # NaN is the same NaN
    except Exception:
        return a is b


@dataclass
class Sample:
    """One timed round of sample tasks run at once: the cells they computed, the seconds
    in their cell loops (summed, and the longest), the round's wall time, the master's
    own CPU per task meanwhile (F's excluded), and how many tasks there were."""

    cells: int
    seconds: float
    longest: float
    wall: float
    master: float
    tasks: int
    together: bool = True  # each task had a worker of its own (one task: trivially)

    @property
    def latency(self) -> float:
        """Wall time beyond F: what a task costs to dispatch and collect."""
        return max(0.0, self.wall - self.longest)


class _Run:
    """One run's state in the master: R, which cells are done, the store, edge files."""

    def __init__(self, job: Wavefront, codec: Codec, store: CellStore | None) -> None:
        self.job, self.codec, self.store = job, codec, store
        self.R, self.done = self._initial()
        self.to_compute = int((~self.done).sum())
        self.scratch = Path(tempfile.mkdtemp(prefix="abengine-wavefront-"))
        self.failures: list[Failure] = []
        self.blocked_blocks = 0
        self.passed: set[Key] = set()
        self.bar = None
        self.f_seconds, self.f_cells = 0.0, 0

    def _initial(self) -> tuple[np.ndarray, np.ndarray]:
        shape = self.job.shape
        typed = self.codec.kind == "dtype"
        R = np.empty(shape, dtype=np.dtype(self.codec.dtype) if typed else object)
        if typed:
            R[...] = fill_value(R.dtype)
        done = np.zeros(shape, dtype=bool)
        xb, yb = self.job.x_boundary, self.job.y_boundary
        if self.codec.kind == "text":
            xb, yb = [as_text(v) for v in xb], [as_text(v) for v in yb]
        try:
            for x, v in enumerate(xb):
                R[x, 0] = self.codec.encode(v) if typed else v
            for y, v in enumerate(yb):
                R[0, y] = self.codec.encode(v) if typed else v
        except CellFailed as failed:
            raise UsageError(f"boundary: {failed.reason}") from None
        done[0, :] = done[:, 0] = True
        loaded = self.store.load() if self.store is not None else None
        if loaded is not None:
            values, known = loaded
            known[0, :] = known[:, 0] = False
            R[known] = values[known]
            done |= known
        if self.store is not None:
            self.store.write(0, 0, R[:, :1], done[:, :1])
            self.store.write(0, 0, R[:1, :], done[:1, :])
        return R, done

    def close(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)

    # -- what is left --------------------------------------------------------------------
    def missing(self) -> bool:
        return not self.done.all()

    def first_missing(self) -> Key | None:
        """The missing cell on the lowest anti-diagonal (then lowest x): its inputs exist."""
        xs, ys = np.nonzero(~self.done)
        if not len(xs):
            return None
        k = np.lexsort((xs, xs + ys))[0]
        return int(xs[k]), int(ys[k])

    def bounds(self, key: Key, block: int) -> tuple[int, int, int, int]:
        """x0, y0, w, h of block `key` (cells 1..X, 1..Y cut into `block`-sided squares)."""
        X, Y = self.job.cells
        x0, y0 = 1 + key[0] * block, 1 + key[1] * block
        return x0, y0, min(block, X + 1 - x0), min(block, Y + 1 - y0)

    def describe_block(self, key: Any, block: int) -> str:
        if isinstance(key, tuple) and key and key[0] == "sample":
            x0, y0, w, h = key[1:]
        else:
            x0, y0, w, h = self.bounds(key, block)
        return f"block x {x0}..{x0 + w - 1}, y {y0}..{y0 + h - 1}"

    # -- planning ------------------------------------------------------------------------
    def plan(self, block: int) -> TaskGraph:
        """One task per block with a missing cell, after its left, lower and diagonal
        neighbours (those that have missing cells themselves)."""
        X, Y = self.job.cells
        gx, gy = model.block_grid(X, Y, block)
        graph = TaskGraph()
        nodes: dict[Key, Deferred] = {}
        for j in range(gy):
            for i in range(gx):
                x0, y0, w, h = self.bounds((i, j), block)
                if self.done[x0:x0 + w, y0:y0 + h].all():
                    continue
                after = [nodes[k] for k in ((i - 1, j), (i, j - 1), (i - 1, j - 1)) if k in nodes]
                node = Deferred(functools.partial(self.task, (i, j), block), tag=(i, j))
                nodes[(i, j)] = graph.add(node, after=after)
        return graph

    def task(self, key: Key, block: int) -> Task:
        """Block `key`'s task, built when its neighbours are done: its edges are known now."""
        return self._block_task(*self.bounds(key, block), tag=key)

    def _block_task(self, x0: int, y0: int, w: int, h: int, tag: Any) -> Task:
        edges = self._edges(x0, y0, w, h)
        if any(any(missing) for _, missing in edges) and not self._computable(x0, y0, w, h):
            self.passed.add(tag)
            return Task(":", tag=tag)  # every cell depends on a failed one: nothing to run
        job, f = self.job, self.job.function
        inputs = []
        for name, edge in zip(EDGES, edges):
            path = self.scratch / f"{x0}_{y0}_{w}_{h}.{name}"
            with open(path, "wb") as out:
                cloudpickle.dump(edge, out)
            inputs.append(File(path, name, cache=False))
        fn: bytes | list[str] = f.pickled
        if f.kind == "executable":
            program = f.executable
            if f.ship:
                inputs.append(File(Path(f.executable), Path(f.executable).name))
                program = "./" + Path(f.executable).name
            fn = [program]
        area = (slice(x0, x0 + w), slice(y0, y0 + h))
        known = self.done[area]
        spec = BlockSpec(f.kind, fn, x0, y0, w, h, self.codec,
                         known=(self.R[area].copy(), known.copy()) if known.any() else None,
                         timeout=job.timeout)
        return PythonTask(fn=compute_block, args=(spec,), gil_free=f.kind == "executable",
                          inputs=inputs, tag=tag)

    def _edges(self, x0: int, y0: int, w: int, h: int) -> list[tuple[list, list]]:
        """The column left of the block, the row below it, the corner: values and missing flags."""
        R, done = self.R, self.done
        parts = (R[x0 - 1, y0:y0 + h], done[x0 - 1, y0:y0 + h]), \
                (R[x0:x0 + w, y0 - 1], done[x0:x0 + w, y0 - 1]), \
                (R[x0 - 1:x0, y0 - 1], done[x0 - 1:x0, y0 - 1])
        return [(values.tolist(), (~ok).tolist()) for values, ok in parts]

    def _computable(self, x0: int, y0: int, w: int, h: int) -> bool:
        """Whether any missing cell of the block has all its inputs (after a failure upstream)."""
        ok = self.done[x0 - 1:x0 + w, y0 - 1:y0 + h].copy()
        for j in range(1, h + 1):
            for i in range(1, w + 1):
                if not ok[i, j] and ok[i - 1, j] and ok[i, j - 1] and ok[i - 1, j - 1]:
                    return True
        return False

    # -- results -------------------------------------------------------------------------
    def place(self, task: Task, result: TaskResult) -> None:
        """Store a finished block's cells; name the cells that failed."""
        if task.tag in self.passed:
            self.blocked_blocks += 1
            return
        for f in task.inputs:
            if f.remote in EDGES:
                f.local.unlink(missing_ok=True)
        spec: BlockSpec = task.args[0]
        out: BlockOut = result.value
        area = (slice(spec.x0, spec.x0 + spec.w), slice(spec.y0, spec.y0 + spec.h))
        new = out.computed & ~self.done[area]
        self.R[area][new] = out.values[new]
        self.done[area] |= new
        self.f_seconds += out.seconds
        self.f_cells += int(out.computed.sum())
        for (i, j), reason, stderr in out.failures:
            self.failures.append(Failure(f"cell ({spec.x0 + i}, {spec.y0 + j})", reason, stderr))
        if self.store is not None and new.any():
            self.store.write(spec.x0, spec.y0, self.R[area], new)
        if self.bar is not None:
            self.bar.update(int(new.sum()))

    def sample(self, engine: Engine, blocks: list[tuple[int, int, int, int]]) -> Sample | None:
        """Compute the missing cells of `blocks` (x0, y0, w, h; independent of each other),
        as tasks run at once on `engine`, timing them; None if they computed nothing."""
        graph = TaskGraph()
        for x0, y0, w, h in blocks:
            graph.add(self._block_task(x0, y0, w, h, tag=("sample", x0, y0, w, h)))
        outs: list[BlockOut] = []
        before = int(self.done.sum())

        def keep(task: Task, result: TaskResult) -> None:
            self.place(task, result)
            if isinstance(result.value, BlockOut):
                outs.append(result.value)

        start, cpu = time.perf_counter(), time.process_time()
        engine.run(graph, keep, retries=0)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        cells = int(self.done.sum()) - before
        if not outs or not cells:
            return None
        ours = sum(out.cpu for out in outs if out.pid == os.getpid())  # F on our own threads
        together = len({(out.pid, out.thread) for out in outs}) == len(outs)
        return Sample(cells, sum(out.seconds for out in outs), max(out.seconds for out in outs),
                      wall, max(0.0, cpu - ours) / len(outs), len(outs), together)

    def result(self, numeric: bool) -> np.ndarray:
        R = self.R
        if self.codec.kind == "dtype" or not numeric:
            return R
        return numeric_or_same(R, self.done)


def numeric_or_same(R: np.ndarray, done: np.ndarray) -> np.ndarray:
    """R as int64 or float64 when every computed value is a number (or numeric text); else R.

    Cells without a value (failed) become NaN, which needs float64.
    """
    numbers = []
    for value in R[done].tolist():
        if isinstance(value, str):
            value = parse_text(value)
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
            return R
        numbers.append(value)
    integral = done.all() and all(isinstance(v, (int, np.integer)) for v in numbers)
    try:
        array = np.array(numbers, dtype=np.int64 if integral else np.float64)
    except OverflowError:
        return R
    out = np.full(R.shape, 0 if integral else np.nan, dtype=array.dtype)
    out[done] = array
    return out


def wavefront(F: Any, x_boundary: Any, y_boundary: Any, *, output: str | Path | None = None,
              resume: bool = False, engine: Any = None, cores: int | None = None,
              workers: int | None = None, retries: int = 2, progress: bool = True,
              predict: bool = False, **options: Any) -> Any:
    """R[x, y] = F(x, y, R[x-1, y], R[x, y-1], R[x-1, y-1]) as a numpy array of
    shape (len(x_boundary), len(y_boundary)).

    `x_boundary[x]` is R[x, 0] and `y_boundary[y]` is R[0, y] (so they share R[0, 0]).
    F: a callable `F(x, y, left, below, diag)`; a block kernel
    `F(xs, ys, left, below, corner) -> array (len(xs), len(ys))` marked with
    `abengine.vectorized` (left = R[xs[0]-1, ys], below = R[xs, ys[0]-1],
    corner = R[xs[0]-1, ys[0]-1]); "module:function"; or an executable called
    `F x y xfile yfile dfile`. Options: block_size (int or "auto"),
    seconds_per_cell, dtype, timeout (executables), output (.h5, or any other
    name for `x y value` lines) with resume, engine / cores / workers,
    retries, progress. `predict=True` samples F and returns the model's
    `Prediction` instead of running.
    """
    job = Wavefront(F, x_boundary, y_boundary, **options)
    return job.run(output, resume=resume, engine=engine, cores=cores, workers=workers,
                   retries=retries, progress=progress, predict=predict)


__all__ = ["BlockSpec", "Codec", "Wavefront", "compute_block", "numeric_or_same", "wavefront"]
