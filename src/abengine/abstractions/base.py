"""What All-Pairs and Map share: a result array with one axis per set, cut into blocks.

`Grid` validates the sets and F, measures F on a small probe block through the
engine that will run the work, chooses the block shape with the model, builds
one task per block, and places each finished block into the sink, reporting
per-cell failures by element name. Subclasses only say how many sets there are
and how a cell is described.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import numbers
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..engines import Engine
from ..errors import Failure, UsageError
from ..functions import Function, resolve_function
from ..graph import File, PythonTask, TaskGraph, TaskResult
from ..models.allpairs import (
    MAX_BLOCK_CELLS,
    MAX_PER_CELL_BLOCK,
    Resources,
    choose_batch,
    choose_block,
    prediction,
)
from ..models.common import Measured, Prediction, measure_bandwidth
from ..runners import Axis, BlockOut, call_cells, exec_cells, run_kernel, sandbox_name
from ..sets import ElementSet, load_set
from ..storage import Sink, fill_value, output_kind, to_numeric

Key = tuple[int, ...]
#: Probe blocks of a vectorised kernel: large enough to time it at speed.
KERNEL_PROBE = 256
#: A per-cell probe grows until it has taken about this long.
PROBE_SECONDS = 0.2


class Grid:
    """An abstraction whose result has one axis per set (Map: 1, All-Pairs: 2)."""

    prefixes = ("a", "b")

    def __init__(
        self,
        sets: Sequence[ElementSet],
        F: Any,
        *,
        extra_args: Sequence[str] = (),
        extra_files: Sequence[str | Path] = (),
        block: int | Sequence[int] | None = None,
        seconds_per_cell: float | None = None,
        symmetric: bool = False,
        vectorized: bool = False,
        dtype: Any = None,
        timeout: float | None = None,
    ) -> None:
        self.sets = list(sets)
        self.function: Function = resolve_function(F, extra_args, vectorized)
        self.extra_files = [_checked_extra_file(p) for p in extra_files]
        self.symmetric = symmetric
        self.seconds_per_cell = _positive(seconds_per_cell, "seconds per cell (-t)", float)
        self.timeout = _positive(timeout, "timeout", float)
        if self.timeout is not None and self.function.kind != "executable":
            raise UsageError("timeout applies to an executable F (a Python call cannot be "
                             "stopped without its process)")
        self.block = self._checked_block(block)
        self.dtype = _checked_dtype(dtype)
        self.check_function_fits_sets()

    # -- validation ------------------------------------------------------
    def _checked_block(self, block: int | Sequence[int] | None) -> Key | None:
        if block is None:
            return None
        if isinstance(block, numbers.Number):
            sizes = (block,) * len(self.sets)
        elif isinstance(block, Sequence) and not isinstance(block, str):
            sizes = tuple(block)
        else:
            raise UsageError(f"block size must be a positive integer or a tuple, not {block!r}")
        if len(sizes) != len(self.sets):
            raise UsageError(f"block needs {len(self.sets)} sizes, got {len(sizes)}")
        checked = tuple(
            min(_positive(b, "block size", int), len(s)) for b, s in zip(sizes, self.sets)
        )
        if self.symmetric and checked[0] != checked[1]:
            raise UsageError("--symmetric needs square blocks (-x equal to -y)")
        return checked

    def check_function_fits_sets(self) -> None:
        """Refuse F and sets that cannot go together (again once lazy rows are bound)."""
        f = self.function
        for s in self.sets:
            form = "the rows of a lazy result" if s.lazy is not None else "an array"
            if f.kind == "executable" and not s.is_files:
                raise UsageError(f"{s.label}: an executable F needs files, but this set is "
                                 f"{form}; save its rows to files or use a Python F")
            if f.builtin is not None and f.builtin.on_files and not s.is_files:
                raise UsageError(f"{s.label}: {f.name} compares files, but this set is {form}")
        if f.kind in ("builtin", "block") and not (f.builtin and f.builtin.on_files):
            widths = {s.width for s in self.sets
                      if not s.is_files and s.array is not None}
            if len(widths) > 1:
                raise UsageError(f"the sets' vectors differ in length ({sorted(widths)}); "
                                 f"{f.name} needs equal lengths")

    # -- planning --------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(s) for s in self.sets)

    def choose_block(self, engine: Engine) -> Key:
        """The block shape: the user's, or the model's from F's measured time."""
        if self.block is not None:
            return self.block
        return self._choose(self.measured(engine))

    def _choose(self, measured: Measured) -> Key:
        t, res = measured.seconds_per_cell, measured.resources
        per_cell = self.function.kind in ("executable", "callable")
        cap = MAX_PER_CELL_BLOCK if per_cell else MAX_BLOCK_CELLS
        if len(self.sets) == 2:
            return choose_block(*self.shape, t, res, symmetric=self.symmetric, max_cells=cap)
        return (choose_batch(self.shape[0], t, res, max_cells=cap),)

    def measured(self, engine: Engine) -> Measured:
        """The model's inputs on `engine`: F's time per cell (given, or timed on a probe
        block), the slots, and the dispatch latency (the probe's, if it ran). Measured once
        per engine: `--predict` and `--plot` show what `choose_block` used."""
        if self._measured is not None and self._measured[0] is engine:
            return self._measured[1]
        sampled = 0
        if self.seconds_per_cell:
            t = self.seconds_per_cell
        else:
            t = self.measure(engine)
            sampled = self.sampled_cells
        latency = max(engine.dispatch_latency, self.measured_latency)
        measured = Measured(t, Resources(engine.slots, latency), sampled,
                            latency_measured=self.measured_latency > engine.dispatch_latency)
        self._measured = (engine, measured)
        return measured

    def known_seconds_per_cell(self) -> float | None:
        """F's time per cell if given or already measured (no probe runs for it)."""
        if self.seconds_per_cell:
            return self.seconds_per_cell
        return self._measured[1].seconds_per_cell if self._measured is not None else None

    def prediction(self, engine: Engine) -> Prediction:
        """What `--predict` prints: the model's time per block shape, with the parameters
        `choose_block` uses, plus the time to send the sets where they travel."""
        measured = self.measured(engine)
        chosen = self.block or self._choose(measured)
        element_bytes = self.element_bytes()
        bandwidth = measure_bandwidth(engine) if element_bytes else None
        if bandwidth:
            res = measured.resources
            measured = Measured(measured.seconds_per_cell,
                                Resources(res.slots, res.dispatch_latency, bandwidth),
                                measured.sampled_cells, measured.latency_measured)
        n = self.shape[0]
        m = self.shape[1] if len(self.shape) == 2 else 1
        return prediction(n, m, (chosen[0], chosen[-1] if len(chosen) == 2 else 1), measured,
                          self.symmetric, element_bytes, tree=engine.distribute != "direct")

    def element_bytes(self) -> float:
        """The mean size of one element as it travels to a worker (files: a sample's sizes)."""
        sizes = []
        for s in self.sets:
            if s.paths is not None:
                step = max(1, len(s.paths) // 100)
                sizes += [p.stat().st_size for p in s.paths[::step]]
            else:
                sizes.append(s.width * np.dtype(s.array.dtype).itemsize)
        return float(np.mean(sizes)) if sizes else 0.0

    #: Seconds a task costs beyond F itself on the engine in use, and the cells F was
    #: timed on, from the probe.
    measured_latency = 0.0
    sampled_cells = 0
    #: Set for an engine that sends inputs to workers: a .npy set's file then travels
    #: (cached by content, spread by tree) and each block reads its rows from it.
    arrays_travel = False
    probe_out: BlockOut | None = None  # what F gave on the last probe block
    #: The shape of one cell's value in the running result; None until the first result.
    cell_shape: tuple[int, ...] | None = ()
    elapsed = 0.0  # seconds the last run's task graph took
    _measured: tuple[Engine, Measured] | None = None

    def measure(self, engine: Engine) -> float:
        """Seconds per cell of F, timed on small blocks run by `engine` itself.

        Also records what the probe cost beyond F's own time (sandbox, dispatch,
        collecting the result) as the engine's measured dispatch latency.
        """
        if self.function.kind in ("builtin", "block"):
            sides = [KERNEL_PROBE] * len(self.sets)
            return self._time_probe(engine, sides) or 1e-6
        side, t = 1, 0.0
        while True:
            sides = [min(side, n) for n in self.shape]
            measured = self._time_probe(engine, sides)
            if measured is None:
                return t or 1e-3
            t = measured
            if t * math.prod(sides) >= PROBE_SECONDS / 4 or sides == list(self.shape) or side >= 16:
                return t
            side = min(16, max(side + 1, math.isqrt(max(1, int(PROBE_SECONDS / t)))))

    def _time_probe(self, engine: Engine, sides: Sequence[int]) -> float | None:
        sides = [min(s, n) for s, n in zip(sides, self.shape)]
        task = self.task(tuple(0 for _ in sides), tuple(sides), probe=True)
        graph = TaskGraph()
        graph.add(task)
        timing: list[float] = []

        def keep(_task: object, result: TaskResult) -> None:
            timing.append(result.value.seconds)
            self.probe_out = result.value

        start = time.perf_counter()
        engine.run(graph, keep, retries=0)
        if not timing:
            return None
        self.measured_latency = max(0.0, time.perf_counter() - start - timing[0])
        self.sampled_cells += math.prod(sides)
        return max(timing[0], 1e-9) / math.prod(sides)

    def grid(self, block: Key) -> Key:
        return tuple(math.ceil(n / b) for n, b in zip(self.shape, block))

    def keys(self, block: Key) -> list[Key]:
        keys = itertools.product(*(range(g) for g in self.grid(block)))
        if self.symmetric:
            return [k for k in keys if k[0] <= k[1]]
        return list(keys)

    def bounds(self, key: Key, block: Key) -> list[tuple[int, int]]:
        return [(k * b, min(n, (k + 1) * b)) for k, b, n in zip(key, block, self.shape)]

    def task(self, key: Key, block: Key, probe: bool = False) -> PythonTask:
        """One task computing the cells of block `key`."""
        f = self.function
        inputs: list[File] = [File(p, p.name) for p in self.extra_files]
        axes = []
        for k, (s, (lo, hi)) in enumerate(zip(self.sets, self.bounds(key, block))):
            axes.append(self._axis(s, lo, hi, self.prefixes[k], inputs))
        cells = None
        if self.symmetric and key[0] == key[1] and not probe and f.kind in ("executable", "callable"):
            n = len(axes[0])
            cells = [(i, j) for i in range(n) for j in range(i, n)]
        if f.kind == "executable":
            program = f.executable
            if f.ship:
                inputs.append(File(Path(f.executable), Path(f.executable).name))
                program = "./" + Path(f.executable).name
            fn, args, gil_free = (
                exec_cells, ([program, *f.extra_args], axes, cells, self.timeout), True)
        elif f.kind == "callable":
            fn, args, gil_free = call_cells, (f.pickled, axes, cells), False
        elif f.kind == "block":
            fn, args, gil_free = run_kernel, (f.pickled, axes), False
        else:
            assert f.builtin is not None
            fn, args, gil_free = run_kernel, (f.builtin.name, axes, f.builtin.on_files), True
        return PythonTask(fn=fn, args=args, gil_free=gil_free, inputs=_unique(inputs), tag=key)

    def shared_inputs(self, block: Key) -> dict[Path, int]:
        """The files the blocks read, with how many blocks read each: an element file is
        read by every block of its row (or column), F and the extra files by all."""
        tasks = len(self.keys(block))
        uses: dict[Path, int] = {p: tasks for p in self.extra_files}
        if self.function.kind == "executable" and self.function.ship:
            uses[Path(self.function.executable)] = tasks
        grid = self.grid(block)
        for k, s in enumerate(self.sets):
            # A symmetric result's block row meets g + 1 blocks, as rows and columns.
            readers = (1 if len(grid) == 1 else math.ceil((grid[0] + 1) / 2) if self.symmetric
                       else grid[1 - k])
            for path in s.paths or ():
                uses[path] = uses.get(path, 0) + readers
            if self._in_file(s):
                uses[Path(s.source)] = tasks
        return uses

    def _in_file(self, s: ElementSet) -> bool:
        """Whether a block reads `s`'s rows from its file (sent once per worker, or spread by
        tree) rather than carrying them: always for HDF5; for .npy where inputs travel and
        many blocks read each row (All-Pairs; a Map batch's rows are its own)."""
        return bool(s.dataset) or (self.arrays_travel and len(self.sets) > 1
                                   and bool(s.source) and s.lazy is None)

    def _axis(self, s: ElementSet, lo: int, hi: int, prefix: str, inputs: list[File]) -> Axis:
        if s.paths is not None:
            names = []
            for i in range(lo, hi):
                name = sandbox_name(prefix, i, s.paths[i])
                inputs.append(File(s.paths[i], name))
                names.append(name)
            return Axis(files=names)
        if self._in_file(s):  # rows stay in their file, which travels as a (cached) input
            remote = f"{prefix}_{Path(s.source).name}"
            inputs.append(File(Path(s.source), remote))
            return Axis(source=remote, dataset=s.dataset, start=lo, stop=hi)
        return Axis(rows=s.rows(lo, hi))

    def covering(self, lo: int, hi: int, block: Key) -> list[Key]:
        """The blocks that write rows lo..hi of the result (what a consumer of those rows
        waits for); a symmetric result's rows are also written by the mirrored blocks."""
        first, last = lo // block[0], (hi - 1) // block[0]
        rows = range(first, last + 1)
        if len(block) == 1:
            return [(i,) for i in rows]
        columns = range(self.grid(block)[1])
        if not self.symmetric:
            return [(i, j) for i in rows for j in columns]
        above = {(i, j) for i in rows for j in columns if i <= j}
        mirrored = {(i, j) for j in rows for i in range(j + 1)}
        return sorted(above | mirrored)

    def probe_rows(self) -> int:
        """How many leading elements of each set a probe may read."""
        return KERNEL_PROBE if self.function.kind in ("builtin", "block") else 16

    def value_shape(self, engine: Engine, dtype: np.dtype,
                    learn_later: bool = False) -> tuple[int, ...] | None:
        """The shape of one cell's value (a scalar here; Map's F may give vectors), or None
        when `learn_later` allows reading it off the first result instead."""
        return ()

    def plan_key(self, dtype: np.dtype) -> str:
        """What fixes the block shape a memoised rerun reuses: F, the sets' names, options."""
        h = hashlib.sha256(f"{type(self).__name__}:{self.function.identity}:{self.shape}:"
                           f"{self.symmetric}:{dtype.str}:{self.timeout}".encode())
        for s in self.sets:
            h.update("\0".join(s.names).encode())
        return h.hexdigest()

    # -- running ---------------------------------------------------------
    def describe_cell(self, index: Sequence[int]) -> str:
        names = [s.names[i] for s, i in zip(self.sets, index)]
        return f"cell ({', '.join(names)})"

    def describe_block(self, key: Key, block: Key) -> str:
        parts = []
        for s, (lo, hi) in zip(self.sets, self.bounds(key, block)):
            parts.append(s.names[lo] if hi - lo == 1 else f"{s.names[lo]}..{s.names[hi - 1]}")
        return f"block ({' × '.join(parts)})"

    def cells_in(self, key: Key, block: Key) -> int:
        sizes = [hi - lo for lo, hi in self.bounds(key, block)]
        if self.symmetric and key[0] == key[1]:
            return sizes[0] * (sizes[0] + 1) // 2
        return math.prod(sizes)

    def result_dtype(self, output: str | Path | None) -> np.dtype:
        if self.dtype is not None:
            return self.dtype
        if self.function.builtin is not None:
            return np.dtype(self.function.builtin.dtype)
        text = output is not None and (str(output) == "-" or output_kind(output) == "txt")
        return np.dtype(object if text and not self.function.numeric_by_nature else np.float64)

    def run(
        self,
        output: str | Path | None = None,
        *,
        resume: bool = False,
        engine: str | Engine | None = None,
        cores: int | None = None,
        retries: int = 2,
        progress: bool = True,
        stream: IO[str] | None = None,
        memo: bool | str | Path | None = None,
    ) -> Any:
        """Compute every cell; return the array (no output) or the output's path.

        Sets that are lazy results of other abstractions are computed in the same
        task graph (see compose.py). Raises `TaskFailures` when some cells
        failed, after storing every other result (failed numeric cells hold NaN).
        """
        from .compose import Pipeline

        return Pipeline(self).run(output, resume=resume, engine=engine, cores=cores,
                                  retries=retries, progress=progress, stream=stream, memo=memo)

    def meta(self, block: Key) -> dict[str, str]:
        meta = {"function": self.function.identity, "block": str(block),
                "symmetric": str(self.symmetric)}
        for k, s in enumerate(self.sets):
            meta[f"set_{k}"] = s.fingerprint()
        return meta

    def blank_block(self, key: Key, block: Key, sink: Sink, reason: str,
                    stderr: str = "") -> Failure:
        """Fill a block that has no result with the fill value; the failure naming it."""
        index = tuple(slice(lo, hi) for lo, hi in self.bounds(key, block))
        shape = tuple(s.stop - s.start for s in index)
        blank = np.full(shape + sink.shape[len(shape):], fill_value(sink.dtype), dtype=sink.dtype)
        sink.write(index, blank, np.ones(shape, dtype=bool))
        if self.symmetric and key[0] != key[1]:
            sink.write(index[::-1], blank.T, np.ones(shape[::-1], dtype=bool))
        return Failure(self.describe_block(key, block), reason, stderr)

    def _numeric_block(self, raw: list[Any], dtype: np.dtype, shape: tuple[int, ...],
                       origin: list[int]) -> np.ndarray:
        """A complete block of raw values as numbers in one numpy call; the slow,
        cell-naming path only when some value is not a number."""
        try:
            return np.array(raw, dtype=dtype).reshape(shape)
        except (TypeError, ValueError):
            cells = list(np.ndindex(*shape))
            flat = to_numeric(raw, dtype, [False] * len(raw), lambda k: self.describe_cell(
                [o + c for o, c in zip(origin, cells[k])]))
            return flat.reshape(shape)

    def _place(self, key: Key, block: Key, out: BlockOut, sink: Sink) -> list[Failure]:
        """Store one finished block; return its per-cell failures."""
        bounds = self.bounds(key, block)
        origin = [lo for lo, _ in bounds]
        shape = tuple(hi - lo for lo, hi in bounds)
        dtype = sink.dtype
        failed = np.zeros(shape, dtype=bool)
        failures = []
        for cell, reason, stderr in out.failures:
            failed[cell] = True
            index = [o + c for o, c in zip(origin, cell)]
            failures.append(Failure(self.describe_cell(index), reason, stderr))
        if isinstance(out.values, np.ndarray) and out.cells is None:
            values = out.values.astype(dtype, copy=False)
        elif out.cells is None and not out.failures and dtype.kind in "fiub":
            values = self._numeric_block(out.values, dtype, shape, origin)
        else:
            cells = out.cells if out.cells is not None else list(np.ndindex(*shape))
            flat_failed = [bool(failed[c]) for c in cells]

            def culprit(k: int) -> str:
                return self.describe_cell([o + c for o, c in zip(origin, cells[k])])

            if dtype.kind == "O":
                flat = np.empty(len(cells), dtype=object)
                flat[:] = out.values
            else:
                flat = to_numeric(out.values, dtype, flat_failed, culprit)
            values = np.empty(shape, dtype=dtype)
            if out.cells is None:
                values[...] = flat.reshape(shape)
            else:
                values[...] = fill_value(dtype)
                for c, v in zip(cells, flat):
                    values[c] = v
        if self.symmetric and key[0] == key[1]:  # the diagonal block: exact mirror of its upper half
            lower = np.tril_indices(shape[0], -1)
            values[lower] = values.T[lower]
            failed[lower] = failed.T[lower]
        index = tuple(slice(lo, hi) for lo, hi in bounds)
        sink.write(index, values, failed)
        if self.symmetric and key[0] != key[1]:
            sink.write(index[::-1], values.T, failed.T)
        if not failures:
            sink.mark_done(key)
        return failures


def _unique(files: list[File]) -> list[File]:
    seen: dict[str, File] = {}
    for f in files:
        seen.setdefault(f.remote, f)
    return list(seen.values())


def _checked_dtype(dtype: Any) -> np.dtype | None:
    if dtype is None:
        return None
    try:
        return np.dtype(dtype)
    except TypeError:
        raise UsageError(f"dtype {dtype!r} is not a numpy data type") from None


def _positive(value: Any, what: str, kind: type) -> Any:
    if value is None:
        return None
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise UsageError(f"{what} must be a positive number, not {value!r}") from None
    if not number > 0 or (kind is int and number != value):
        raise UsageError(f"{what} must be a positive {'integer' if kind is int else 'number'}, "
                         f"not {value!r}")
    return number


def _checked_extra_file(path: str | Path) -> Path:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"extra input file {path}: not found")
    if not os.access(p, os.R_OK):
        raise UsageError(f"extra input file {path}: not readable")
    return p


def load_sets(specs: Sequence[Any], labels: Sequence[str]) -> list[ElementSet]:
    return [load_set(spec, label) for spec, label in zip(specs, labels)]
