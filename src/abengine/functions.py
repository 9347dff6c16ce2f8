"""How users give F: an executable, `module:function`, a Python callable, a
vectorised block callable, or a builtin name.

Python callables are serialised by value with cloudpickle (once, in the
master), so closures, lambdas and functions defined in `__main__` or a
notebook run on every engine. Builtins on numeric vectors are vectorised
block kernels built on one matrix multiply, the machine's fastest operation.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shlex
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np

from .errors import UsageError

# -- builtin kernels: f(A_block, B_block) -> (len(A), len(B)) ---------------


#: Below this fraction of ||a||² + ||b||², a distance from the matrix-multiply
#: form has lost too many digits and is recomputed directly.
CANCELLATION = 1e-3


def _floating(X: np.ndarray) -> np.ndarray:
    """Integer and boolean vectors as float64 (uint8 products overflow); floats as they are."""
    X = np.asarray(X)
    return X if X.dtype.kind == "f" else X.astype(np.float64)


def _sq_norms(X: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", X, X)


def dot(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Inner products."""
    return _floating(A) @ _floating(B).T


def sqeuclidean(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances ||a||² + ||b||² − 2a·b, in one matrix multiply.

    The norms ride along as two extra columns ([A, ||a||², 1]·[−2B, 1, ||b||²]ᵀ),
    so the block is written once by the multiply instead of three times. Where
    a and b nearly coincide (D ≪ ||a||² + ||b||²) that form has lost its
    digits: rows that may hold such cells are found from their minimum, and
    the cells confirmed there are recomputed directly from a − b.
    """
    A, B = _floating(A), _floating(B)
    a2, b2 = _sq_norms(A), _sq_norms(B)
    ones_a, ones_b = np.ones((len(A), 1), A.dtype), np.ones((len(B), 1), B.dtype)
    D = np.hstack([A, a2[:, None], ones_a]) @ np.hstack([-2.0 * B, ones_b, b2[:, None]]).T
    np.maximum(D, 0.0, out=D)
    if D.size:
        bound = CANCELLATION * (a2 + b2.max())
        suspect = np.nonzero(D.min(axis=1) < bound)[0]
        if suspect.size:
            sub = D[suspect]
            r, cols = np.nonzero(sub < CANCELLATION * (a2[suspect, None] + b2[None, :]))
            rows = suspect[r]
            diff = A[rows] - B[cols]
            D[rows, cols] = np.einsum("ij,ij->i", diff, diff)
    return D


def euclidean(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Euclidean distances."""
    D = sqeuclidean(A, B)
    return np.sqrt(D, out=D)


def _unit_rows(X: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1; all-zero rows stay zero (their similarity is 0)."""
    X = _floating(X)
    norms = np.sqrt(_sq_norms(X))
    scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return X * scale[:, None]


def cosine(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Cosine similarity (1 for parallel vectors; 0 where a vector is all zeros)."""
    return _unit_rows(A) @ _unit_rows(B).T


def correlation(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Pearson correlation coefficient between vectors."""
    A, B = _floating(A), _floating(B)
    return cosine(A - A.mean(axis=1, keepdims=True), B - B.mean(axis=1, keepdims=True))


def _by_cdist(metric: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    def kernel(A: np.ndarray, B: np.ndarray) -> np.ndarray:
        from scipy.spatial.distance import cdist  # imported late: it costs start-up time

        return cdist(A, B, metric)

    kernel.__name__ = metric
    return kernel


manhattan = _by_cdist("cityblock")
chebyshev = _by_cdist("chebyshev")
hamming = _by_cdist("hamming")
jaccard = _by_cdist("jaccard")


def bitwise_files(a_paths: list[str], b_paths: list[str]) -> np.ndarray:
    """Number of differing bytes between each pair of files (a length gap counts in full)."""
    a_data = [np.fromfile(p, dtype=np.uint8) for p in a_paths]
    b_data = [np.fromfile(p, dtype=np.uint8) for p in b_paths]
    out = np.empty((len(a_data), len(b_data)), dtype=np.int64)
    lengths = {len(x) for x in b_data}
    if len(lengths) == 1:  # equal lengths: one vectorised comparison per row
        width = lengths.pop()
        B = np.stack(b_data) if b_data else np.empty((0, width), np.uint8)
        for i, a in enumerate(a_data):
            n = min(len(a), width)
            out[i] = np.count_nonzero(B[:, :n] != a[:n], axis=1) + abs(len(a) - width)
        return out
    for i, a in enumerate(a_data):
        for j, b in enumerate(b_data):
            n = min(len(a), len(b))
            out[i, j] = np.count_nonzero(a[:n] != b[:n]) + abs(len(a) - len(b))
    return out


@dataclass(frozen=True)
class Builtin:
    name: str
    kernel: Callable[..., np.ndarray]
    on_files: bool  # True: the kernel takes file paths; False: vectors
    dtype: type
    help: str


BUILTINS: dict[str, Builtin] = {
    b.name.lower(): b
    for b in [
        Builtin("cosine", cosine, False, np.float64, "cosine similarity of vectors"),
        Builtin("euclidean", euclidean, False, np.float64, "Euclidean distance"),
        Builtin("sqeuclidean", sqeuclidean, False, np.float64, "squared Euclidean distance"),
        Builtin("dot", dot, False, np.float64, "inner product"),
        Builtin("correlation", correlation, False, np.float64, "Pearson correlation"),
        Builtin("manhattan", manhattan, False, np.float64, "sum of absolute differences"),
        Builtin("chebyshev", chebyshev, False, np.float64, "largest absolute difference"),
        Builtin("hamming", hamming, False, np.float64, "fraction of differing components"),
        Builtin("jaccard", jaccard, False, np.float64, "Jaccard distance of boolean vectors"),
        Builtin("BITWISE", bitwise_files, True, np.int64, "number of differing bytes of two files"),
    ]
}


# -- the forms of F ---------------------------------------------------------


@dataclass
class Function:
    """F as resolved from what the user gave; `identity` keys --resume."""

    name: str
    kind: str  # "builtin" | "executable" | "callable" | "block"
    identity: str
    builtin: Builtin | None = None
    executable: str = ""  # path or PATH name of the program
    ship: bool = False  # the executable is the user's own file: send it to the sandbox
    extra_args: list[str] = field(default_factory=list)
    pickled: bytes = b""  # cloudpickled callable

    @property
    def numeric_by_nature(self) -> bool:
        return self.kind in ("builtin", "block")


class vectorized:  # noqa: N801 - used as a decorator, named like one
    """Mark `f(A_block, B_block) -> 2-D array` (or `f(rows) -> 1-D` for map) as a block kernel."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.__name__ = getattr(fn, "__name__", "kernel")
        self.__doc__ = fn.__doc__

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)


def resolve_function(
    spec: Any, extra_args: str | Sequence[str] = (), vectorized_hint: bool = False
) -> Function:
    """Turn the user's F into a `Function`, checking it before any work starts.

    `extra_args` may be a list or one string split as a shell would.
    """
    if isinstance(extra_args, str):
        try:
            extra_args = shlex.split(extra_args)
        except ValueError as exc:
            raise UsageError(f"extra arguments {extra_args!r}: {exc}") from None
    extra = [str(a) for a in extra_args]
    if isinstance(spec, vectorized):
        return _callable(spec.fn, "block", extra)
    if callable(spec):
        return _callable(spec, "block" if vectorized_hint else "callable", extra)
    if not isinstance(spec, (str, os.PathLike)):
        raise UsageError(f"F: cannot use a {type(spec).__name__} as a function")
    text = os.fspath(spec)
    builtin = BUILTINS.get(text.lower())
    if builtin is not None:
        _no_extra_args(extra, text)
        return Function(builtin.name, "builtin", f"builtin:{builtin.name}", builtin=builtin)
    if ":" in text and "/" not in text and not os.path.exists(text):
        return _module_function(text, extra, vectorized_hint)
    return _executable(text, extra)


def _no_extra_args(extra: list[str], name: str) -> None:
    if extra:
        raise UsageError(f"F: extra arguments (-e) apply only to executables, not to {name}")


def _callable(fn: Callable[..., Any], kind: str, extra: list[str]) -> Function:
    _no_extra_args(extra, getattr(fn, "__name__", "a Python callable"))
    module = sys.modules.get(getattr(fn, "__module__", "") or "")
    if module is not None and module.__name__ != "__main__" and not _installed(module):
        # The user's own script or notebook helper: ship its code by value, so
        # workers that lack the file still run it.
        cloudpickle.register_pickle_by_value(module)
    try:
        pickled = cloudpickle.dumps(fn)
    except Exception as exc:
        raise UsageError(f"F: cannot serialise {fn!r} to send it to workers: {exc}") from None
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    identity = f"{kind}:{name}:" + hashlib.sha256(pickled).hexdigest()[:16]
    return Function(name, kind, identity, pickled=pickled)


def _module_function(text: str, extra: list[str], vectorized_hint: bool) -> Function:
    module_name, _, attr = text.partition(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise UsageError(f"F: cannot import module {module_name}: {exc}") from None
    fn = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise UsageError(f"F: module {module_name} has no function {attr}")
    if not callable(fn):
        raise UsageError(f"F: {text} is not callable")
    kind = "block" if vectorized_hint or isinstance(fn, vectorized) else "callable"
    resolved = _callable(fn.fn if isinstance(fn, vectorized) else fn, kind, extra)
    resolved.name = text
    return resolved


def _installed(module: Any) -> bool:
    """Whether a module comes with Python or an installed package (workers will have it)."""
    if module.__name__.split(".")[0] == "abengine":
        return True
    origin = getattr(module, "__file__", None) or ""
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix}
    return not origin or "site-packages" in origin or any(
        origin.startswith(p + os.sep + "lib") for p in prefixes
    )


def _executable(text: str, extra: list[str]) -> Function:
    has_dir = os.sep in text or os.path.exists(text)
    path = text if has_dir else shutil.which(text)
    if path is None or not os.path.exists(path):
        hint = "" if has_dir else f" (not a builtin: {', '.join(b.name for b in BUILTINS.values())})"
        raise UsageError(f"F: {text} not found{hint}")
    if not os.path.isfile(path):
        raise UsageError(f"F: {text} is not a file")
    if not os.access(path, os.X_OK):
        raise UsageError(f"F: {text} is not executable (chmod +x {text})")
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    return Function(
        text, "executable", f"executable:{os.path.abspath(path)}:{digest}:{extra}",
        executable=os.path.abspath(path), ship=has_dir, extra_args=extra,
    )
