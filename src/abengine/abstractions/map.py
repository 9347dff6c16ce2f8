"""Map: F applied to every element of one set, batched into tasks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import Grid, load_sets


class Map(Grid):
    """R[i] = F(S[i]) for every element of S."""

    prefixes = ("x",)

    def __init__(self, S: Any, F: Any, **options: Any) -> None:
        if options.get("symmetric"):
            from ..errors import UsageError

            raise UsageError("symmetric applies to All-Pairs, not Map")
        super().__init__(load_sets([S], ["SET"]), F, **options)

    def describe_cell(self, index: Any) -> str:
        return f"element {self.sets[0].names[index[0]]}"


def map(S: Any, F: Any, *, output: str | Path | None = None, resume: bool = False,  # noqa: A001
        engine: Any = None, cores: int | None = None, retries: int = 2, progress: bool = True,
        **options: Any) -> Any:
    """R[i] = F(S[i]) as a 1-D numpy array (or written to `output`), batched into tasks.

    F takes one element: an executable called `F [extra_args] file`, a
    callable f(x), "module:function", or a block callable f(rows) -> 1-D
    array. Options as for `allpairs`; `block` is the batch size.
    """
    job = Map(S, F, **options)
    return job.run(output, resume=resume, engine=engine, cores=cores, retries=retries,
                   progress=progress)
