"""All-Pairs: F applied to every pair of elements of two sets, the result a matrix.

The matrix is cut into blocks of x × y cells, one task each, sized by the
model so that a task carries enough work to hide its dispatch cost. With
`symmetric=True` (A and B the same set) only blocks on and above the diagonal
are computed and mirrored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import UsageError
from .base import Grid, load_sets
from .compose import Lazy


class AllPairs(Grid):
    """M[i, j] = F(A[i], B[j]) for every element of A and every element of B."""

    prefixes = ("a", "b")

    def __init__(self, A: Any, B: Any, F: Any, **options: Any) -> None:
        symmetric = options.get("symmetric", False)
        if B is None:
            B = A
        sets = load_sets([A, B], ["SET_A", "SET_B"])
        if symmetric and (len(sets[0]) != len(sets[1])
                          or sets[0].fingerprint() != sets[1].fingerprint()):
            raise UsageError("--symmetric needs SET_A and SET_B to be the same set")
        super().__init__(sets, F, **options)


def allpairs(A: Any, B: Any, F: Any, *, output: str | Path | None = None, resume: bool = False,
             engine: Any = None, cores: int | None = None, retries: int = 2,
             progress: bool = True, lazy: bool = False, memo: Any = None,
             **options: Any) -> Any:
    """M[i, j] = F(A[i], B[j]) as a numpy array, or written to `output` (.npy, .h5, .txt).

    A, B: list file, directory, glob, sequence of paths, 2-D array (rows are
    elements), .npy file or HDF5 dataset. F: builtin name ("cosine",
    "euclidean", "dot", "BITWISE", ...), a callable f(a, b), a block callable
    (`abengine.vectorized(f)` or `vectorized=True`), "module:function", or an
    executable called `F [extra_args] fileA fileB`.
    Options: block=(x, y), seconds_per_cell, symmetric, extra_args,
    extra_files, dtype, timeout (seconds per call of an executable F).
    Returns the array, or the output's path when given.

    A or B may be another abstraction's lazy result (`map(..., lazy=True)`):
    its rows are the elements, and both run as one task graph. `lazy=True`
    returns this result lazily in turn. `memo`: reuse results of tasks whose
    F and inputs are unchanged since an earlier run (on by default for
    chained abstractions; True, a directory, or False).
    """
    job = AllPairs(A, B, F, **options)
    if lazy:
        return Lazy(job, output=output, resume=resume, engine=engine, cores=cores,
                    retries=retries, progress=progress, memo=memo)
    return job.run(output, resume=resume, engine=engine, cores=cores, retries=retries,
                   progress=progress, memo=memo)
