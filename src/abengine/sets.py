"""How users give a set of elements, and how its elements are read inside tasks.

A set is either files (list file, directory, glob, sequence of paths) or rows
of an array (2-D numpy array, .npy file, HDF5 dataset). Everything is checked
before any work starts, so a missing element is one clear line, not a failed
run. Relative paths in a list file resolve against the list file's directory,
so a data directory with its list can be moved or shared as it is.
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UsageError

HDF5_SUFFIXES = (".h5", ".hdf5", ".he5")


@dataclass
class ElementSet:
    """The elements of one set: file paths or array rows, with display names.

    `names` are what text output shows: entries exactly as the user wrote them.
    `array` may be an ndarray, a memory-mapped .npy, or an h5py Dataset; it is
    read a block of rows at a time, never whole.
    """

    names: list[str]
    paths: list[Path] | None = None
    array: Any = None
    source: str = ""  # the file the rows live in (.npy/.h5), if any
    dataset: str = ""  # the HDF5 dataset name, if any
    label: str = "set"
    #: The not-yet-computed result of another abstraction these rows will be
    #: (abstractions.compose.Lazy); `array` is bound to its store when the
    #: pipeline runs.
    lazy: Any = None
    _digest: str = field(default="", repr=False)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def is_files(self) -> bool:
        return self.paths is not None

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows start..stop as a 2-D array (elements flattened to vectors)."""
        block = np.asarray(self.array[start:stop])
        return block.reshape(block.shape[0], -1)

    @property
    def width(self) -> int:
        """Vector length of each element (array sets only)."""
        return int(np.prod(self.array.shape[1:], dtype=np.int64))

    def fingerprint(self) -> str:
        """A digest of names and content, so --resume never mixes two different sets."""
        if self.lazy is not None:
            return self.lazy.fingerprint()
        if not self._digest:
            h = hashlib.sha256()
            for name in self.names:
                h.update(name.encode() + b"\0")
            if self.paths is not None:
                for p in self.paths:
                    st = p.stat()
                    h.update(f"{st.st_size}:{st.st_mtime_ns}\0".encode())
            else:
                h.update(f"{self.array.shape}{self.array.dtype}".encode())
                step = max(1, (1 << 24) // max(1, self.width * self.array.dtype.itemsize))
                for start in range(0, len(self), step):
                    h.update(np.ascontiguousarray(self.rows(start, start + step)).tobytes())
            self._digest = h.hexdigest()
        return self._digest


def load_set(spec: Any, label: str = "set") -> ElementSet:
    """Turn anything a user may pass as a set into a checked `ElementSet`."""
    if isinstance(spec, ElementSet):
        return spec
    if hasattr(spec, "element_set"):  # another abstraction's lazy result
        return spec.element_set(label)
    if isinstance(spec, np.ndarray):
        return _array_set(spec, label)
    if _is_h5_dataset(spec):
        if spec.file.mode == "r+":
            spec.file.flush()  # tasks read the file itself: let them see what was written
        return _array_set(spec, label, source=spec.file.filename, dataset=spec.name)
    if isinstance(spec, (str, os.PathLike)):
        return _set_from_path(os.fspath(spec), label)
    if isinstance(spec, Sequence) and not isinstance(spec, (bytes, bytearray)):
        if all(isinstance(item, (str, os.PathLike)) for item in spec):
            names = [os.fspath(item) for item in spec]
            return _file_set(names, [Path(n) for n in names], label, "the sequence")
        return _array_set(np.asarray(spec), label)
    raise UsageError(f"{label}: cannot use a {type(spec).__name__} as a set")


def _is_h5_dataset(obj: Any) -> bool:
    return type(obj).__module__.startswith("h5py") and hasattr(obj, "shape") and hasattr(obj, "file")


def _array_set(array: Any, label: str, source: str = "", dataset: str = "") -> ElementSet:
    """Rows are elements; a 1-D array is a set of single numbers."""
    if isinstance(array, np.ndarray) and array.ndim == 1:
        array = array.reshape(-1, 1)
    if array.ndim == 0 or array.shape[0] == 0:
        raise UsageError(f"{label}: empty set (no rows)")
    if not np.issubdtype(array.dtype, np.number) and array.dtype != np.bool_:
        raise UsageError(f"{label}: array of {array.dtype} is not numeric")
    names = [str(i) for i in range(array.shape[0])]
    return ElementSet(names, array=array, source=source, dataset=dataset, label=label)


def _set_from_path(spec: str, label: str) -> ElementSet:
    h5 = _split_h5(spec)
    if h5 is not None:
        return _h5_set(*h5, label)
    path = Path(spec)
    if spec.endswith(".npy") and path.is_file():
        try:
            array = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise UsageError(f"{label}: cannot read {spec}: {exc}") from None
        return _array_set(array, label, source=str(path))
    if path.is_dir():
        names = sorted(
            os.path.join(spec, e.name)
            for e in os.scandir(path)
            if not e.name.startswith(".") and e.is_file()
        )
        if not names:
            raise UsageError(f"{label}: empty set (directory {spec} holds no files)")
        return _file_set(names, [Path(n) for n in names], label, f"directory {spec}")
    if path.is_file():
        return _list_file_set(path, label)
    if glob.has_magic(spec):
        names = sorted(n for n in glob.glob(spec) if os.path.isfile(n))
        if not names:
            raise UsageError(f"{label}: no files match {spec}")
        return _file_set(names, [Path(n) for n in names], label, f"pattern {spec}")
    raise UsageError(f"{label}: {spec} not found")


def _list_file_set(path: Path, label: str) -> ElementSet:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{label}: cannot read list file {path}: {exc}") from None
    names, paths = [], []
    base = path.parent
    for line in text.splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        names.append(entry)
        paths.append(Path(entry) if os.path.isabs(entry) else base / entry)
    if not names:
        raise UsageError(f"{label}: empty set (list file {path} has no entries)")
    return _file_set(names, paths, label, f"list file {path}")


def _file_set(names: list[str], paths: list[Path], label: str, origin: str) -> ElementSet:
    if not names:
        raise UsageError(f"{label}: empty set ({origin} has no entries)")
    for name, p in zip(names, paths):
        if not p.is_file():
            why = "is not a regular file" if p.exists() else "not found"
            raise UsageError(f"{label}: element {name} ({p}) {why}")
        if not os.access(p, os.R_OK):
            raise UsageError(f"{label}: element {name} ({p}) is not readable")
    return ElementSet(names, paths=paths, label=label)


def _split_h5(spec: str) -> tuple[str, str] | None:
    """`file.h5` or `file.h5:/dataset` → (file, dataset or '')."""
    for suffix in HDF5_SUFFIXES:
        if spec.endswith(suffix):
            return spec, ""
        marker = suffix + ":"
        if marker in spec:
            head, _, name = spec.partition(marker)
            return head + suffix, name
    return None


def _h5_set(filename: str, dataset: str, label: str) -> ElementSet:
    import h5py

    if not os.path.isfile(filename):
        raise UsageError(f"{label}: {filename} not found")
    try:
        f = h5py.File(filename, "r")
    except OSError as exc:
        raise UsageError(f"{label}: cannot open {filename} as HDF5: {exc}") from None
    if not dataset:
        names: list[str] = []
        f.visititems(lambda n, obj: names.append(n) if isinstance(obj, h5py.Dataset) else None)
        if len(names) != 1:
            listed = ", ".join(names) or "none"
            raise UsageError(f"{label}: say which dataset of {filename} to use, as "
                             f"{filename}:NAME (datasets: {listed})")
        dataset = names[0]
    if dataset not in f or not isinstance(f[dataset], h5py.Dataset):
        raise UsageError(f"{label}: {filename} has no dataset {dataset}")
    return _array_set(f[dataset], label, source=filename, dataset=f[dataset].name)


def read_vector(path: str | Path) -> np.ndarray:
    """One file element as a vector: .npy, netpbm image (.pgm/.ppm/.pbm), or text numbers."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.load(path).ravel()
    data = path.read_bytes()
    if suffix in (".pgm", ".ppm", ".pbm", ".pnm") or data[:2] in (b"P2", b"P5", b"P3", b"P6"):
        return _read_netpbm(data, path)
    try:
        return np.array(data.replace(b",", b" ").split(), dtype=np.float64)
    except ValueError:
        raise ValueError(f"{path.name} is not a list of numbers") from None


def _read_netpbm(data: bytes, path: Path) -> np.ndarray:
    """Grey or colour netpbm (P2/P3 text, P5/P6 binary) as a flat float vector."""
    tokens: list[bytes] = []
    pos = 0
    while len(tokens) < 4:
        while pos < len(data) and data[pos : pos + 1].isspace():
            pos += 1
        if data[pos : pos + 1] == b"#":
            pos = data.index(b"\n", pos)
            continue
        end = pos
        while end < len(data) and not data[end : end + 1].isspace():
            end += 1
        if end == pos:
            raise ValueError(f"{path.name}: truncated netpbm header")
        tokens.append(data[pos:end])
        pos = end
    magic, width, height, maxval = tokens[0], int(tokens[1]), int(tokens[2]), int(tokens[3])
    channels = 3 if magic in (b"P3", b"P6") else 1
    count = width * height * channels
    if magic in (b"P2", b"P3"):
        values = np.array(data[pos:].split()[:count], dtype=np.float64)
    else:
        dtype = np.uint8 if maxval < 256 else np.dtype(">u2")
        values = np.frombuffer(data, dtype=dtype, count=count, offset=pos + 1).astype(np.float64)
    if values.size != count:
        raise ValueError(f"{path.name}: truncated netpbm image")
    return values
