"""Write benchmark and test inputs for abengine (stdlib + numpy only).

Everything here is deterministic: random inputs depend only on ``--seed`` (default 0),
so a benchmark or a failing test can be reproduced from its command line alone.

    python datasets/generate.py digits-images OUTDIR [--limit N] [--csv PATH]
    python datasets/generate.py vectors OUT.npy --rows N --dim D [--dtype float64|float32]
    python datasets/generate.py files OUTDIR --count N [--size BYTES]
    python datasets/generate.py sequences OUTDIR --count N --length L
    python datasets/generate.py script OUT --prints VALUE

Tests and demos can ``import generate`` (after putting datasets/ on sys.path) and call
the ``write_*`` / ``read_*`` functions directly. They raise ``InputError`` (a ValueError)
for bad arguments and plain ``OSError`` for filesystem trouble; the command line turns
both into one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import errno
import shlex
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NoReturn

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_DIGITS_CSV = HERE / "digits" / "digits.csv"
DIGIT_SIDE = 8
DIGIT_PIXELS = DIGIT_SIDE * DIGIT_SIDE
DIGIT_MAXVAL = 16
DIGITS_HEADER = [f"p{i}" for i in range(DIGIT_PIXELS)] + ["label"]
DEFAULT_FILE_SIZE = 1024
DNA = np.frombuffer(b"ACGT", dtype=np.uint8)


class InputError(ValueError):
    """A bad argument or malformed input file: the caller's fault, reported without a traceback."""


def _positive(name: str, value: int) -> int:
    """Reject zero/negative counts early, naming the argument, instead of writing nothing."""
    if value <= 0:
        raise InputError(f"{name} must be a positive integer, got {value}")
    return value


def _make_dir(path: Path) -> Path:
    """Create an output directory, saying plainly when a file is in the way."""
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "exists and is not a directory", str(path))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _write_list(path: Path, names: Iterable[str]) -> Path:
    """Write one name per line; names are relative to the list file's own directory."""
    path.write_text("".join(f"{name}\n" for name in names), encoding="utf-8")
    return path


# --- digits -------------------------------------------------------------------------------


def read_digits(csv_path: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load the committed digits CSV as (X[n, 64], y[n]) integer arrays, validating its shape.

    Reads the CSV written once by make_digits.py, so nothing needs scikit-learn at run time.
    """
    path = Path(csv_path) if csv_path is not None else DEFAULT_DIGITS_CSV
    try:
        lines = path.read_text(encoding="ascii").splitlines()
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a text CSV file") from exc
    if not lines or lines[0].strip().split(",") != DIGITS_HEADER:
        raise InputError(f"{path}: header is not p0,...,p63,label")
    if not any(line.strip() for line in lines[1:]):
        raise InputError(f"{path}: no digit rows after the header")
    try:
        data = np.loadtxt(lines[1:], delimiter=",", dtype=np.int64, ndmin=2)
    except ValueError as exc:
        raise InputError(f"{path}: {exc}") from exc
    if data.shape[0] == 0 or data.shape[1] != DIGIT_PIXELS + 1:
        raise InputError(f"{path}: expected rows of {DIGIT_PIXELS + 1} integers")
    X, y = data[:, :DIGIT_PIXELS], data[:, DIGIT_PIXELS]
    if X.min() < 0 or X.max() > DIGIT_MAXVAL or y.min() < 0 or y.max() > 9:
        raise InputError(f"{path}: pixel or label out of range")
    return X, y


def pgm_bytes(pixels: Sequence[int] | np.ndarray) -> bytes:
    """Encode 64 intensities (row-major) as a binary PGM: the simplest image format to parse."""
    arr = np.asarray(pixels, dtype=np.uint8).reshape(-1)
    if arr.size != DIGIT_PIXELS:
        raise InputError(f"a digit image needs {DIGIT_PIXELS} pixels, got {arr.size}")
    header = f"P5\n{DIGIT_SIDE} {DIGIT_SIDE}\n{DIGIT_MAXVAL}\n".encode("ascii")
    return header + arr.tobytes()


def read_pgm(path: str | Path) -> np.ndarray:
    """Read back a PGM written by pgm_bytes as an 8x8 int array (for tests and demos)."""
    data = Path(path).read_bytes()
    fields = data.split(maxsplit=4)
    if len(fields) < 5 or fields[0] != b"P5":
        raise InputError(f"{path}: not a binary (P5) PGM file")
    width, height, maxval = int(fields[1]), int(fields[2]), int(fields[3])
    if maxval > 255:
        raise InputError(f"{path}: 16-bit PGM not supported")
    pixels = data[len(data) - width * height :]
    return np.frombuffer(pixels, dtype=np.uint8).reshape(height, width).astype(np.int64)


def digit_filename(index: int, label: int) -> str:
    """Name that sorts in data order and shows the label, e.g. digit_0042_7.pgm."""
    return f"digit_{index:04d}_{label}.pgm"


def write_digit_images(
    outdir: str | Path, limit: int | None = None, csv_path: str | Path | None = None
) -> Path:
    """Write digits as PGM files plus digits.list and labels.txt; return the list file path.

    ``limit`` keeps the first N images (all of them if N exceeds the data set).
    """
    X, y = read_digits(csv_path)
    if limit is not None:
        _positive("--limit", limit)
        X, y = X[:limit], y[:limit]
    out = _make_dir(Path(outdir))
    names = []
    for index, (pixels, label) in enumerate(zip(X, y, strict=True)):
        name = digit_filename(index, int(label))
        (out / name).write_bytes(pgm_bytes(pixels))
        names.append(name)
    _write_list(out / "labels.txt", (str(int(label)) for label in y))
    return _write_list(out / "digits.list", names)


# --- random inputs ------------------------------------------------------------------------


def make_vectors(rows: int, dim: int, dtype: str = "float64", seed: int = 0) -> np.ndarray:
    """Uniform [0, 1) vectors, one element per row; same seed and dtype give the same array."""
    _positive("--rows", rows)
    _positive("--dim", dim)
    if dtype not in ("float64", "float32"):
        raise InputError(f"--dtype must be float64 or float32, got {dtype!r}")
    return np.random.default_rng(seed).random((rows, dim), dtype=np.dtype(dtype))


def write_vectors(
    out: str | Path, rows: int, dim: int, dtype: str = "float64", seed: int = 0
) -> Path:
    """Save make_vectors(...) with numpy.save to exactly ``out`` (no .npy suffix is added)."""
    array = make_vectors(rows, dim, dtype, seed)
    path = Path(out)
    _make_dir(path.parent)
    with path.open("wb") as fh:
        np.save(fh, array)
    return path


def write_files(
    outdir: str | Path, count: int, size: int = DEFAULT_FILE_SIZE, seed: int = 0
) -> Path:
    """Write ``count`` random binary files f_00000.bin... and files.list; return the list path."""
    _positive("--count", count)
    if size < 0:
        raise InputError(f"--size must be zero or more bytes, got {size}")
    rng = np.random.default_rng(seed)
    out = _make_dir(Path(outdir))
    names = [f"f_{i:05d}.bin" for i in range(count)]
    for name in names:
        (out / name).write_bytes(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
    return _write_list(out / "files.list", names)


def write_sequences(outdir: str | Path, count: int, length: int, seed: int = 0) -> Path:
    """Write ``count`` random ACGT sequences, one per file, and sequences.list; return its path."""
    _positive("--count", count)
    _positive("--length", length)
    rng = np.random.default_rng(seed)
    out = _make_dir(Path(outdir))
    names = [f"seq_{i:05d}.txt" for i in range(count)]
    for name in names:
        sequence = DNA[rng.integers(0, 4, length)].tobytes()
        (out / name).write_bytes(sequence + b"\n")
    return _write_list(out / "sequences.list", names)


# --- comparison function ------------------------------------------------------------------


def write_script(out: str | Path, prints: str) -> Path:
    """Write a ``#!/bin/sh`` script that echoes ``prints``: a trivial executable function F."""
    path = Path(out)
    _make_dir(path.parent)
    path.write_text(f"#!/bin/sh\necho {shlex.quote(prints)}\n", encoding="utf-8")
    path.chmod(0o755)
    return path


# --- command line -------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are a single stderr line (no usage dump), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="generate.py", description="Write abengine benchmark/test inputs.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    seeded = argparse.ArgumentParser(add_help=False)
    seeded.add_argument("--seed", type=int, default=0, help="random seed (default 0)")

    p = sub.add_parser("digits-images", help="digits CSV -> 8x8 PGM files + digits.list")
    p.add_argument("outdir", type=Path, metavar="OUTDIR")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N images")
    p.add_argument("--csv", type=Path, metavar="PATH", help=f"default {DEFAULT_DIGITS_CSV}")

    p = sub.add_parser("vectors", parents=[seeded], help="random uniform vectors (.npy)")
    p.add_argument("out", type=Path, metavar="OUT.npy")
    p.add_argument("--rows", type=int, required=True, metavar="N")
    p.add_argument("--dim", type=int, required=True, metavar="D")
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64")

    p = sub.add_parser("files", parents=[seeded], help="random binary files + files.list")
    p.add_argument("outdir", type=Path, metavar="OUTDIR")
    p.add_argument("--count", type=int, required=True, metavar="N")
    p.add_argument("--size", type=int, default=DEFAULT_FILE_SIZE, metavar="BYTES")

    p = sub.add_parser("sequences", parents=[seeded], help="random DNA sequences + list")
    p.add_argument("outdir", type=Path, metavar="OUTDIR")
    p.add_argument("--count", type=int, required=True, metavar="N")
    p.add_argument("--length", type=int, required=True, metavar="L")

    p = sub.add_parser("script", help="executable /bin/sh script that echoes VALUE")
    p.add_argument("out", type=Path, metavar="OUT")
    p.add_argument("--prints", required=True, metavar="VALUE")
    return parser


def run(args: argparse.Namespace) -> str:
    """Do what the parsed command asks and return the one-line summary to print."""
    if args.command == "digits-images":
        listing = write_digit_images(args.outdir, args.limit, args.csv)
        count = len(listing.read_text(encoding="utf-8").splitlines())
        return f"wrote {count} digit images, {listing} and {listing.parent / 'labels.txt'}"
    if args.command == "vectors":
        path = write_vectors(args.out, args.rows, args.dim, args.dtype, args.seed)
        return f"wrote {args.rows} x {args.dim} {args.dtype} vectors to {path}"
    if args.command == "files":
        listing = write_files(args.outdir, args.count, args.size, args.seed)
        return f"wrote {args.count} files of {args.size} bytes and {listing}"
    if args.command == "sequences":
        listing = write_sequences(args.outdir, args.count, args.length, args.seed)
        return f"wrote {args.count} sequences of length {args.length} and {listing}"
    if args.command == "script":
        path = write_script(args.out, args.prints)
        return f"wrote executable script {path} printing {args.prints}"
    raise AssertionError(f"unhandled command {args.command}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        summary = run(args)
    except InputError as exc:
        parser.exit(2, f"{parser.prog} {args.command}: error: {exc}\n")
    except OSError as exc:
        culprit = f"{exc.filename}: " if exc.filename is not None else ""
        parser.exit(2, f"{parser.prog} {args.command}: error: {culprit}{exc.strerror or exc}\n")
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
