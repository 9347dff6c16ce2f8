"""Map: F applied to every element of one set, batched into tasks.

F may give a number or a vector per element: vectors (a numpy array, a list,
or an executable printing several numbers on its line) make the result an
n × w array, w fixed by the first element, which is what a feature extractor
feeding All-Pairs or Classify gives.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..engines import Engine
from ..errors import Failure, UsageError
from ..runners import BlockOut
from ..storage import Sink, fill_value, shown
from .base import Grid, Key, load_sets
from .compose import Lazy


class Map(Grid):
    """R[i] = F(S[i]) for every element of S."""

    prefixes = ("x",)

    def __init__(self, S: Any, F: Any, **options: Any) -> None:
        if options.get("symmetric"):
            raise UsageError("symmetric applies to All-Pairs, not Map")
        super().__init__(load_sets([S], ["SET"]), F, **options)

    def describe_cell(self, index: Any) -> str:
        return f"element {self.sets[0].names[index[0]]}"

    def value_shape(self, engine: Engine, dtype: np.dtype,
                    learn_later: bool = False) -> tuple[int, ...] | None:
        """(w,) when F gives vectors of w numbers, read off the probe's first value; with no
        probe, None (learnt from the first result) or, when the shape is needed before
        any result, one element computed for the purpose."""
        if dtype.kind not in "fiub":
            return ()
        if self.probe_out is None:
            if learn_later:
                return None
            self._time_probe(engine, [1])
        return _shape_of(self.probe_out)

    @property
    def width(self) -> int:
        return self.cell_shape[0]

    def _place(self, key: Key, block: Key, out: BlockOut, sink: Sink) -> list[Failure]:
        if self.cell_shape is None:  # the first result: it says scalar or vector
            self.cell_shape = _shape_of(out)
        if not self.cell_shape:
            return super()._place(key, block, out, sink)
        (lo, hi), = self.bounds(key, block)
        failed = np.zeros(hi - lo, dtype=bool)
        failures = []
        for (i,), reason, stderr in out.failures:
            failed[i] = True
            failures.append(Failure(self.describe_cell([lo + i]), reason, stderr))
        rows = np.full((hi - lo, self.width), fill_value(sink.dtype), dtype=sink.dtype)
        for i, value in enumerate(out.values):
            if not failed[i]:
                rows[i] = self._vector(value, lo + i, sink.dtype)
        sink.write((slice(lo, hi),), rows, failed)
        if not failures:
            sink.mark_done(key)
        return failures

    def _vector(self, value: Any, index: int, dtype: np.dtype) -> np.ndarray:
        """One element's value as w numbers, or a clear line naming the element."""
        try:
            vector = np.asarray(value.split() if isinstance(value, str) else value,
                                dtype=dtype).ravel()
        except (TypeError, ValueError):
            raise UsageError(f"{self.describe_cell([index])}: output {shown(str(value))!r} is not "
                             "numbers (a numeric result was asked for)") from None
        if vector.shape != (self.width,):
            raise UsageError(f"{self.describe_cell([index])}: F gave {vector.size} values, "
                             f"but {self.width} for the first element (a result row needs "
                             "the same length for every element)")
        return vector


def _shape_of(out: BlockOut | None) -> tuple[int, ...]:
    """(w,) when the block's values are vectors of w numbers, else () (scalars, or none)."""
    width = _width(out)
    return () if width is None else (width,)


def _width(out: BlockOut | None) -> int | None:
    if out is None:
        return None
    if isinstance(out.values, np.ndarray):
        return int(np.prod(out.values.shape[1:])) if out.values.ndim > 1 else None
    failed = {cell for cell, _, _ in out.failures}
    cells = out.cells or [(i,) for i in range(len(out.values))]
    for cell, value in zip(cells, out.values):
        if cell in failed:
            continue
        if isinstance(value, str):
            tokens = value.split()
            return len(tokens) if len(tokens) > 1 else None
        if isinstance(value, (np.ndarray, Sequence)) and np.ndim(value) >= 1:
            return int(np.size(value))
        return None
    return None


def map(S: Any, F: Any, *, output: str | Path | None = None, resume: bool = False,  # noqa: A001
        engine: Any = None, cores: int | None = None, retries: int = 2, progress: bool = True,
        lazy: bool = False, memo: Any = None, **options: Any) -> Any:
    """R[i] = F(S[i]) as a numpy array (or written to `output`), batched into tasks.

    F takes one element: an executable called `F [extra_args] file`, a
    callable f(x), "module:function", or a block callable f(rows) -> 1-D (or
    2-D) array. A vector per element gives an n × w result. Options as for
    `allpairs`; `block` is the batch size. `lazy=True` returns a `Lazy`
    result that another abstraction takes as a set, computing both in one
    task graph; `memo` as for `allpairs`.
    """
    job = Map(S, F, **options)
    if lazy:
        return Lazy(job, output=output, resume=resume, engine=engine, cores=cores,
                    retries=retries, progress=progress, memo=memo)
    return job.run(output, resume=resume, engine=engine, cores=cores, retries=retries,
                   progress=progress, memo=memo)
