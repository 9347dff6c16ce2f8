"""Where results go as tasks finish: memory, .npy, .h5 or text lines.

Sinks take one block at a time, so memory is bounded by the block size, not
the matrix. Files are written under `NAME.part` and renamed when the run ends,
so nothing half-written sits under the name a rerun or a script would trust.
The HDF5 sink also keeps a mask of finished blocks beside the data, flushed
as it goes: `--resume` trusts only blocks marked there.
"""

from __future__ import annotations

import ast
import os
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from .errors import UsageError

Index = tuple[slice, ...]
SUFFIXES = (".txt", ".npy", ".h5", ".hdf5")


def part_path(path: Path) -> Path:
    return path.with_name(path.name + ".part")


def output_kind(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise UsageError(f"output {path}: unknown type {suffix or '(none)'}; use .txt, .npy or .h5")
    return "h5" if suffix == ".hdf5" else suffix[1:]


def check_writable(path: str | Path) -> None:
    """Fail before any work if the output cannot be written."""
    path = Path(path)
    output_kind(path)
    if path.is_dir():
        raise UsageError(f"output {path}: is a directory")
    part = part_path(path)
    existed = part.exists()
    try:
        with open(part, "ab"):
            pass
    except OSError as exc:
        raise UsageError(f"output {path}: cannot write there: {exc.strerror}") from None
    if not existed:
        part.unlink()


def fill_value(dtype: np.dtype) -> Any:
    """What a cell that could not be computed holds."""
    if dtype.kind == "f":
        return np.nan
    if dtype.kind in "iu":
        return np.iinfo(dtype).min if dtype.kind == "i" else 0
    return None


def shown(value: Any) -> Any:
    """A value as an error line quotes it: whole when short, else its first 57 characters."""
    return value if len(str(value)) < 60 else str(value)[:57] + "..."


def format_value(value: Any) -> str:
    if isinstance(value, (list, tuple, np.ndarray)):  # a vector: its numbers on one line
        return " ".join(format_value(v) for v in np.ravel(np.asarray(value, dtype=object)))
    if isinstance(value, (float, np.floating)):
        return repr(float(value)) if isinstance(value, (float, np.float64)) else str(value)
    return str(value)


class Sink(ABC):
    """Receives blocks of a result of known shape; `finish` returns what the caller gets."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.shape = shape
        self.dtype = np.dtype(dtype)

    @abstractmethod
    def write(self, index: Index, values: np.ndarray, failed: np.ndarray | None) -> None:
        """Store a block; cells marked in `failed` hold no result."""

    def mark_done(self, key: tuple[int, ...]) -> None:
        """Record that block `key` is complete (for --resume)."""

    def done(self) -> set[tuple[int, ...]]:
        """Blocks a previous run completed and this one may skip."""
        return set()

    @abstractmethod
    def finish(self, complete: bool) -> Any:
        """Close the sink after the run; `complete` says every cell was computed."""

    def abort(self) -> None:
        """The run stopped early: keep what can be resumed, drop the rest."""


class MemorySink(Sink):
    """The result as an ndarray. Left unfilled: every block is written (failed
    cells and blocks with the fill value), so a NaN pass would be wasted."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        super().__init__(shape, dtype)
        self.array = np.empty(shape, dtype=self.dtype)

    def write(self, index: Index, values: np.ndarray, failed: np.ndarray | None) -> None:
        self.array[index] = values

    def finish(self, complete: bool) -> np.ndarray:
        return self.array


class NpySink(Sink):
    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
        super().__init__(shape, dtype)
        if self.dtype == object:
            raise UsageError(f"output {path}: .npy needs numeric results; use .txt for text")
        self.path, self.part = path, part_path(path)
        # Unfilled, like MemorySink: every block gets written, failed ones with the fill value.
        self.array = np.lib.format.open_memmap(self.part, mode="w+", dtype=self.dtype, shape=shape)

    def write(self, index: Index, values: np.ndarray, failed: np.ndarray | None) -> None:
        self.array[index] = values

    def finish(self, complete: bool) -> Path:
        self.array.flush()
        del self.array
        os.replace(self.part, self.path)
        return self.path

    def abort(self) -> None:
        del self.array
        self.part.unlink(missing_ok=True)


class TextSink(Sink):
    """Lines `nameA<TAB>nameB<TAB>value` (one name per axis), streamed as blocks finish."""

    def __init__(self, path: Path | None, names: Sequence[Sequence[str]], shape: tuple[int, ...],
                 dtype: np.dtype, stream: IO[str] | None = None) -> None:
        super().__init__(shape, dtype)
        self.names = names
        self.path = path
        self.part = part_path(path) if path else None
        self.out: IO[str] = open(self.part, "w") if self.part else (stream or sys.stdout)  # noqa: SIM115

    def write(self, index: Index, values: np.ndarray, failed: np.ndarray | None) -> None:
        starts = [s.start for s in index]
        lines = []
        for pos in np.ndindex(*values.shape[:len(index)]):  # a trailing axis is a vector cell
            if failed is not None and failed[pos]:
                continue
            labels = [self.names[k][starts[k] + i] for k, i in enumerate(pos)]
            lines.append("\t".join(labels) + "\t" + format_value(values[pos]) + "\n")
        self.out.write("".join(lines))

    def finish(self, complete: bool) -> Path | None:
        self.out.flush()
        if self.part:
            self.out.close()
            os.replace(self.part, self.path)
        return self.path

    def abort(self) -> None:
        if self.part:
            self.out.close()
            self.part.unlink(missing_ok=True)
        else:
            self.out.flush()


class H5Sink(Sink):
    """A chunked HDF5 dataset `result`, plus `done` (one flag per block) for --resume.

    `meta` (function identity, set fingerprints, block shape) is stored as
    attributes; resuming checks it so a file is never completed with results
    of a different F, different sets or a different blocking.
    """

    FLUSH_EVERY = 1.0  # seconds: the most work a kill -9 can cost a resumed run

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype, grid: tuple[int, ...],
                 chunks: tuple[int, ...], meta: dict[str, str], names: Sequence[Sequence[str]],
                 resume: bool) -> None:
        import h5py

        super().__init__(shape, dtype)
        if self.dtype == object:
            raise UsageError(f"output {path}: .h5 needs numeric results; use .txt for text")
        self.path, self.part = path, part_path(path)
        existing = self._resumable() if resume else None
        if existing is not None:
            self.file = self._open_for_resume(existing)
            self._check_meta(existing, shape, meta)
            if existing != self.part:
                os.replace(existing, self.part)
            self.mask = self.file["done"][...]
        else:
            self.part.unlink(missing_ok=True)
            self.file = h5py.File(self.part, "w")
            fill = fill_value(self.dtype)
            self.file.create_dataset("result", shape=shape, dtype=self.dtype, chunks=chunks,
                                     fillvalue=fill if fill is not None else 0)
            self.file.create_dataset("done", data=np.zeros(grid, dtype=np.uint8))
            for k, axis_names in enumerate(names):
                self.file.create_dataset(f"names_{k}", data=list(axis_names),
                                         dtype=h5py.string_dtype())
            self.file.attrs.update(meta)
            self.file.attrs["complete"] = False
            self.mask = np.zeros(grid, dtype=np.uint8)
        self.result = self.file["result"]
        self._last_flush = time.monotonic()

    def _resumable(self) -> Path | None:
        for candidate in (self.part, self.path):
            if candidate.exists():
                return candidate
        return None

    @staticmethod
    def _open_for_resume(where: Path) -> Any:
        import h5py

        try:
            f = h5py.File(where, "r+")
        except OSError as exc:
            raise UsageError(f"cannot resume {where}: not a readable HDF5 file ({exc})") from None
        if not all(isinstance(f.get(name), h5py.Dataset) for name in ("result", "done")):
            f.close()
            raise UsageError(f"cannot resume {where}: it is not an abengine output "
                             "(no 'result' and 'done' datasets)")
        return f

    def _check_meta(self, where: Path, shape: tuple[int, ...], meta: dict[str, str]) -> None:
        stored = dict(self.file.attrs)
        stored_shape = tuple(self.file["result"].shape)
        problem = ""
        if stored_shape != shape:
            problem = f"it holds a {stored_shape} result, this run makes {shape}"
        else:
            for key, value in meta.items():
                if str(stored.get(key, "")) != str(value):
                    problem = (f"it was made with a different {key} "
                               f"({stored.get(key, '?')!s} ≠ {value})")
                    break
        if problem:
            self.file.close()
            raise UsageError(f"cannot resume {where}: {problem}; remove it or drop --resume")

    def write(self, index: Index, values: np.ndarray, failed: np.ndarray | None) -> None:
        self.result[index] = values

    def mark_done(self, key: tuple[int, ...]) -> None:
        self.mask[key] = 1
        if time.monotonic() - self._last_flush > self.FLUSH_EVERY:
            self._flush()

    def mark_cells(self, index: Index, done: np.ndarray) -> None:
        """Record the finished cells inside `index` (a `done` mask of one flag per cell)."""
        self.mask[index] |= done.astype(np.uint8)
        if time.monotonic() - self._last_flush > self.FLUSH_EVERY:
            self._flush()

    def done(self) -> set[tuple[int, ...]]:
        return {tuple(int(i) for i in key) for key in np.argwhere(self.mask)}

    def _flush(self) -> None:
        self.file.flush()  # block data reaches the file before the flags that vouch for it
        self.file["done"][...] = self.mask
        self.file.flush()
        self._last_flush = time.monotonic()

    def finish(self, complete: bool) -> Path:
        self._flush()
        self.file.attrs["complete"] = bool(complete)
        self.file.close()
        os.replace(self.part, self.path)
        return self.path

    def abort(self) -> None:
        self._flush()
        self.file.close()


# -- Wavefront's stores: cells arrive a block at a time and resume cell by cell --------


class CellStore(ABC):
    """Where Wavefront's cells go as blocks finish; `load` gives back what a killed run kept.

    The result is one matrix R (boundary row and column included); a store
    records which cells hold a result, so a resumed run computes only the others.
    """

    def __init__(self, shape: tuple[int, int]) -> None:
        self.shape = shape

    def load(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(values, done mask) of an earlier run, or None."""
        return None

    @abstractmethod
    def write(self, x0: int, y0: int, values: np.ndarray, computed: np.ndarray) -> None:
        """Store the cells of `values` (placed at x0, y0) that `computed` marks."""

    @abstractmethod
    def finish(self, complete: bool) -> Path:
        """Close the store and give it its final name."""

    def abort(self) -> None:
        """The run stopped early: keep what is stored for --resume."""


class TextCellStore(CellStore):
    """Lines `x y value`, one per computed cell, as the classic wavefront writes OUTPUT.

    Lines are appended to `NAME.part` as blocks finish (flushed at once, so a
    killed run loses at most a torn last line); `--resume` reads them back.
    Boundary cells are not written: they are INPUT's.
    """

    def __init__(self, path: Path, shape: tuple[int, int], resume: bool) -> None:
        super().__init__(shape)
        self.path, self.part = path, part_path(path)
        self._loaded: tuple[np.ndarray, np.ndarray] | None = None
        if path.is_dir():
            raise UsageError(f"output {path}: is a directory")
        source = next((p for p in (self.part, self.path) if p.exists()), None) if resume else None
        try:
            if source is not None:
                self._loaded, good_bytes = read_cell_lines(source, shape)
                if source != self.part:
                    os.replace(source, self.part)
                with open(self.part, "r+b") as f:  # drop a line torn by a kill
                    f.truncate(good_bytes)
                self.out: IO[str] = open(self.part, "a")  # noqa: SIM115
            else:
                self.out = open(self.part, "w")  # noqa: SIM115
        except OSError as exc:
            raise UsageError(f"output {path}: cannot write there: {exc.strerror}") from None

    def load(self) -> tuple[np.ndarray, np.ndarray] | None:
        return self._loaded

    def write(self, x0: int, y0: int, values: np.ndarray, computed: np.ndarray) -> None:
        lines = []
        for (i, j) in zip(*np.nonzero(computed)):
            x, y = x0 + int(i), y0 + int(j)
            if x > 0 and y > 0:
                lines.append(f"{x} {y} {format_value(values[i, j])}\n")
        if lines:
            self.out.write("".join(lines))
            self.out.flush()

    def finish(self, complete: bool) -> Path:
        self.out.close()
        os.replace(self.part, self.path)
        return self.path

    def abort(self) -> None:
        self.out.close()


def read_cell_lines(path: Path, shape: tuple[int, int]) -> tuple[tuple[np.ndarray, np.ndarray], int]:
    """The cells of an OUTPUT file (`x y value` lines) and how many bytes of it are whole lines.

    A last line without its newline was torn by a kill and is dropped; any
    other line that is not a computed cell of this matrix is an error naming it.
    """
    values = np.empty(shape, dtype=object)
    done = np.zeros(shape, dtype=bool)
    data = path.read_bytes()
    good = data.rfind(b"\n") + 1
    for number, raw in enumerate(data[:good].decode("utf-8", "replace").splitlines(), 1):
        if not raw.strip():
            continue
        x, y, value = parse_cell_line(raw, f"{path} line {number}")
        if not (1 <= x < shape[0] and 1 <= y < shape[1]):
            raise UsageError(f"{path} line {number}: cell ({x}, {y}) is not a computed cell of "
                             f"this {shape[0] - 1} x {shape[1] - 1} wavefront; is it the output "
                             "of another run?")
        values[x, y], done[x, y] = value, True
    return (values, done), good


def parse_cell_line(line: str, where: str) -> tuple[int, int, str]:
    """`x y value` (the value: the rest of the line, any text) or a UsageError naming `where`."""
    parts = line.split(None, 2)
    try:
        if len(parts) < 3:
            raise ValueError
        x, y = int(parts[0]), int(parts[1])
    except ValueError:
        raise UsageError(f"{where}: expected `x y value`, got {shown(line.strip())!r}") from None
    return x, y, parts[2].strip()


class H5CellStore(CellStore):
    """The matrix as dataset `result` of an HDF5 file, with a `done` flag per cell."""

    def __init__(self, path: Path, shape: tuple[int, int], dtype: np.dtype, meta: dict[str, str],
                 resume: bool) -> None:
        super().__init__(shape)
        chunks = tuple(min(n, 256) for n in shape)
        self.sink = H5Sink(path, shape, dtype, grid=shape, chunks=chunks, meta=meta, names=[],
                           resume=resume)

    def load(self) -> tuple[np.ndarray, np.ndarray] | None:
        done = self.sink.mask.astype(bool)
        return (self.sink.result[...], done) if done.any() else None

    def write(self, x0: int, y0: int, values: np.ndarray, computed: np.ndarray) -> None:
        index = (slice(x0, x0 + values.shape[0]), slice(y0, y0 + values.shape[1]))
        self.sink.write(index, values, None)
        self.sink.mark_cells(index, computed)

    def finish(self, complete: bool) -> Path:
        return self.sink.finish(complete)

    def abort(self) -> None:
        self.sink.abort()


def open_cell_store(output: str | Path, shape: tuple[int, int], dtype: np.dtype | None,
                    meta: dict[str, str], resume: bool) -> CellStore:
    """An `.h5` output (numeric `dtype`) or, for any other name, `x y value` text lines."""
    path = Path(output)
    if path.suffix.lower() == ".npy":
        raise UsageError(f"output {path}: Wavefront writes .h5 (resumable numbers) or any "
                         "other name for `x y value` lines, not .npy")
    if path.suffix.lower() in (".h5", ".hdf5"):
        if dtype is None or np.dtype(dtype).kind not in "biuf":
            raise UsageError(f"output {path}: .h5 needs numeric results; use a text output")
        return H5CellStore(path, shape, dtype, meta, resume)
    return TextCellStore(path, shape, resume)


def resumable_block(output: str | Path) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """The block shape an interrupted .h5 run used, so resuming cuts the same blocks, and
    the shape of its whole result."""
    import h5py

    path = Path(output)
    for candidate in (part_path(path), path):
        if candidate.exists():
            try:
                with h5py.File(candidate, "r") as f:
                    stored = ast.literal_eval(str(f.attrs["block"]))
                    shape = tuple(f["result"].shape)
                return tuple(int(b) for b in stored), shape
            except (OSError, KeyError, ValueError, SyntaxError, TypeError):
                return None  # opening the sink will say what is wrong with it
    return None


class OpenOnFirstWrite(Sink):
    """A sink whose cells' shape (scalar or vector) is learnt from the first block it gets,
    so F need not run once more beforehand just to tell."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype,
                 opener: Callable[[tuple[int, ...]], Sink]) -> None:
        super().__init__(shape, dtype)
        self.opener = opener
        self.sink: Sink | None = None

    def open(self, cell_shape: tuple[int, ...]) -> Sink:
        if self.sink is None:
            self.sink = self.opener(cell_shape)
            self.shape = self.sink.shape
        return self.sink

    def write(self, index: Index, values: np.ndarray, failed: np.ndarray | None) -> None:
        self.open(values.shape[len(index):]).write(index, values, failed)

    def mark_done(self, key: tuple[int, ...]) -> None:
        self.open(()).mark_done(key)

    def finish(self, complete: bool) -> Any:
        return self.open(()).finish(complete)

    def abort(self) -> None:
        if self.sink is not None:
            self.sink.abort()


def open_sink(output: str | Path | None, shape: tuple[int, ...], dtype: np.dtype, *,
              names: Sequence[Sequence[str]], grid: tuple[int, ...], chunks: tuple[int, ...],
              meta: dict[str, str], resume: bool, stream: IO[str] | None = None) -> Sink:
    """The sink for `output`: None → memory, '-' → text on stdout, else by extension."""
    if output is None:
        if resume:
            raise UsageError("--resume needs an .h5 output to resume from")
        return MemorySink(shape, dtype)
    if str(output) == "-":
        if resume:
            raise UsageError("--resume needs an .h5 output to resume from")
        return TextSink(None, names, shape, dtype, stream)
    path = Path(output)
    kind = output_kind(path)
    if resume and kind != "h5":
        raise UsageError(f"--resume needs an .h5 output, not {path.suffix}")
    if kind == "h5":
        return H5Sink(path, shape, dtype, grid, chunks, meta, names, resume)
    if kind == "npy":
        return NpySink(path, shape, dtype)
    return TextSink(path, names, shape, dtype)


def to_numeric(values: list[Any], dtype: np.dtype, failed: Sequence[bool],
               culprit: Callable[[int], str]) -> np.ndarray:
    """Raw cell values → numbers of `dtype`; a value that is not a number names its cell."""
    out = np.empty(len(values), dtype=dtype)
    fill = fill_value(dtype)
    for k, value in enumerate(values):
        if failed[k]:
            out[k] = fill
            continue
        try:
            out[k] = float(value) if dtype.kind == "f" else value
        except (TypeError, ValueError):
            raise UsageError(f"{culprit(k)}: output {shown(value)!r} is not a number "
                             "(a numeric result was asked for)") from None
    return out
