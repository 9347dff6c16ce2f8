"""What runs inside a task: F applied to the cells of one block.

These functions execute in the task's sandbox, on whatever engine runs the
task, so they take only picklable descriptions (`Axis`, a builtin's name or a
pickled callable) and return raw values plus per-cell failures. Turning values
into numbers and placing them is the master's job (see storage.py).
"""

from __future__ import annotations

import functools
import itertools
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np

from . import process
from .graph import STDERR_TAIL, check_cancelled, current_sandbox, describe_exit

Cell = tuple[int, ...]


@dataclass
class Axis:
    """The elements of one side of a block, as the task sees them.

    Exactly one form is used: `files` (names inside the sandbox), `rows`
    (vectors shipped with the task), or `source` (rows start..stop read from a
    .npy or HDF5 file that is one of the task's inputs).
    """

    files: list[str] | None = None
    rows: np.ndarray | None = None
    source: str = ""
    dataset: str = ""
    start: int = 0
    stop: int = 0

    def __len__(self) -> int:
        if self.files is not None:
            return len(self.files)
        if self.rows is not None:
            return len(self.rows)
        return self.stop - self.start

    def paths(self) -> list[str]:
        base = current_sandbox()
        return [str(base / name) for name in self.files or []]

    def vectors(self) -> np.ndarray:
        """The elements as a 2-D array, one row each."""
        if self.rows is not None:
            return self.rows
        if self.files is not None:
            from .sets import read_vector

            return np.stack([read_vector(p) for p in self.paths()])
        path = current_sandbox() / self.source
        if self.dataset:
            block = _read_h5_rows(path, self.dataset, self.start, self.stop)
        else:
            block = np.load(path, mmap_mode="r")[self.start : self.stop]
        block = np.asarray(block)
        return block.reshape(len(block), -1)

    def elements(self) -> Sequence[Any]:
        """What a per-cell Python function receives: a path or a row vector."""
        return self.paths() if self.files is not None else self.vectors()


def _read_h5_rows(path: Path, dataset: str, start: int, stop: int) -> np.ndarray:
    """Rows of an HDF5 dataset, even while the user's own program holds the file open.

    HDF5 wants the same locking flags for every open of a file within one
    process, and refuses a locked open while a writer holds the file: so try
    the default, then without locking (the set loader flushed writers' data).
    """
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return f[dataset][start:stop]
    except OSError:
        with h5py.File(path, "r", locking=False) as f:
            return f[dataset][start:stop]


@dataclass
class BlockOut:
    """Raw values of a block, in cell order or as an array, and the cells that failed."""

    values: Any
    failures: list[tuple[Cell, str, str]] = field(default_factory=list)  # (cell, reason, stderr)
    cells: list[Cell] | None = None  # None: every cell of the block, row-major
    seconds: float = 0.0  # time spent in F itself, without the task's set-up (for the models)


@functools.lru_cache(maxsize=16)
def load_function(ref: bytes | str) -> Callable[..., Any]:
    """A builtin by name, or a cloudpickled callable (unpickled once per process)."""
    if isinstance(ref, str):
        from .functions import BUILTINS

        return BUILTINS[ref.lower()].kernel
    return cloudpickle.loads(ref)


def all_cells(axes: Sequence[Axis]) -> Iterable[Cell]:
    return itertools.product(*(range(len(a)) for a in axes))


def run_kernel(ref: bytes | str, axes: list[Axis], on_files: bool = False) -> BlockOut:
    """A vectorised kernel on the whole block: f(A_rows, B_rows) -> 2-D (or f(rows) -> 1-D)."""
    fn = load_function(ref)
    inputs = [a.paths() for a in axes] if on_files else [a.vectors() for a in axes]
    start = time.perf_counter()
    values = np.asarray(fn(*inputs))
    seconds = time.perf_counter() - start
    expected = tuple(len(a) for a in axes)
    if values.shape[:len(expected)] != expected or (len(axes) > 1 and values.ndim != 2):
        name = getattr(fn, "__name__", "F")
        raise ValueError(f"{name} returned shape {values.shape} for a block of {expected}")
    return BlockOut(values, seconds=seconds)


class CellFailed(Exception):
    """F failed on one cell: why, and the tail of what it said on stderr."""

    def __init__(self, reason: str, stderr: str = "") -> None:
        super().__init__(reason)
        self.reason, self.stderr = reason, stderr


def each_cell(order: Iterable[Cell], compute: Callable[[Cell], Any]) -> BlockOut:
    """F on every cell in `order`; a `CellFailed` fails that cell only."""
    values: list[Any] = []
    failures = []
    start = time.perf_counter()
    for cell in order:
        check_cancelled()
        try:
            values.append(compute(cell))
        except CellFailed as failed:
            values.append(None)
            failures.append((cell, failed.reason, failed.stderr))
    return BlockOut(values, failures, seconds=time.perf_counter() - start)


def call_cells(ref: bytes | str, axes: list[Axis], cells: list[Cell] | None = None) -> BlockOut:
    """A Python function cell by cell; an exception fails that cell only."""
    fn = load_function(ref)
    elements = [a.elements() for a in axes]

    def compute(cell: Cell) -> Any:
        try:
            return fn(*(elements[k][i] for k, i in enumerate(cell)))
        except Exception as exc:
            tail = "".join(traceback.format_exception(exc)[-3:])[-STDERR_TAIL:]
            raise CellFailed(f"raised {type(exc).__name__}: {exc}", tail) from None

    out = each_cell(all_cells(axes) if cells is None else cells, compute)
    out.cells = cells
    return out


def run_program(argv: list[str], timeout: float | None = None) -> str:
    """One call of an executable F in the running task's sandbox: its stdout, or CellFailed
    saying why not. `./NAME` means the copy of F shipped into the sandbox; a call that
    outlives `timeout` seconds is killed with everything it started."""
    sandbox = current_sandbox()
    argv = [str(sandbox / a[2:]) if a.startswith("./") else a for a in argv]
    try:
        done = process.run(argv, sandbox, timeout)
    except OSError as exc:
        raise CellFailed(f"could not start: {exc.strerror}") from None
    stderr = done.stderr.decode("utf-8", "replace")[-STDERR_TAIL:]
    if done.returncode is None:
        raise CellFailed(f"killed after the time limit of {timeout:g} s", stderr)
    if done.returncode != 0:
        raise CellFailed(describe_exit(done.returncode), stderr)
    return done.stdout.decode("utf-8", "replace")


def exec_cells(
    argv: list[str], axes: list[Axis], cells: list[Cell] | None = None,
    timeout: float | None = None,
) -> BlockOut:
    """An executable per cell, `argv... fileA fileB`, in the sandbox; stripped stdout is the value.

    A call that outlives `timeout` seconds is killed with everything it started.
    """
    paths = [a.paths() for a in axes]

    def compute(cell: Cell) -> str:
        return run_program([*argv, *(paths[k][i] for k, i in enumerate(cell))], timeout).strip()

    out = each_cell(all_cells(axes) if cells is None else cells, compute)
    out.cells = cells
    return out


def sandbox_name(prefix: str, index: int, path: Path) -> str:
    """The name an element file gets inside a sandbox: unique, keeping its base name."""
    return f"{prefix}{index}_{path.name}"
