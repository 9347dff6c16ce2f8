"""Abstractions chained into one task graph, and the run of a graph of stages.

    feats = abengine.map(images, extract, lazy=True)     # nothing runs yet
    sim = abengine.allpairs(feats, feats, "cosine")       # one DAG: Map batches, then blocks

A `Lazy` is an abstraction's result before it is computed. Given as a set to
another abstraction, its rows become that abstraction's elements: the run
puts both stages in one `TaskGraph`, where each All-Pairs block depends only
on the Map batches that produce its rows, so blocks start as soon as their
rows exist and every element's features are computed once. Intermediate
results live in a scratch directory of the run and are removed at its end.

A run of one abstraction is a pipeline of one stage: `Pipeline` is also what
`Grid.run` uses, so resume, memoisation, failures and progress behave the same
whether or not stages are chained.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from ..engines import Engine, make_engine
from ..errors import Failure, TaskFailures, UsageError
from ..graph import Deferred, Finished, Node, PythonTask, Task, TaskGraph, TaskResult
from ..memo import Memo
from ..progress import progress_bar
from ..sets import ElementSet
from ..storage import (
    NpySink,
    OpenOnFirstWrite,
    Sink,
    check_writable,
    open_sink,
    output_kind,
    resumable_block,
)
from .spread import spread_inputs

if TYPE_CHECKING:
    from .base import Grid, Key


class Lazy:
    """The result of an abstraction, computed only when something needs it.

    Give it to another abstraction as a set (its rows are the elements), or
    call `compute()` (or `numpy.asarray`) for the array itself.
    """

    def __init__(self, job: Grid, **run_options: Any) -> None:
        self.job = job
        self.run_options = run_options

    def __len__(self) -> int:
        return self.job.shape[0]

    def __repr__(self) -> str:
        return f"<lazy {type(self.job).__name__} of {self.job.function.name}, {len(self)} rows>"

    @property
    def names(self) -> list[str]:
        return self.job.sets[0].names

    def element_set(self, label: str) -> ElementSet:
        """A set whose elements are this result's rows, bound when the pipeline runs."""
        return ElementSet(list(self.names), lazy=self, label=label)

    def fingerprint(self) -> str:
        """What the rows depend on: F and the input sets (for --resume of a consumer)."""
        h = hashlib.sha256(self.job.function.identity.encode())
        for s in self.job.sets:
            h.update(s.fingerprint().encode())
        return h.hexdigest()

    def compute(self, **options: Any) -> Any:
        return self.job.run(**{**self.run_options, **options})

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self.compute(), dtype=dtype)


@dataclass(eq=False)
class Stage:
    """One abstraction inside a run: its blocks, where they go, and how it went."""

    index: int
    job: Grid
    block: Key = ()
    sink: Sink | None = None
    done: set = field(default_factory=set)  # blocks finished before the graph runs
    memo_keys: dict = field(default_factory=dict)  # task id -> memo key
    failures: list[Failure] = field(default_factory=list)

    def cells(self, keys: Any) -> int:
        return sum(self.job.cells_in(k, self.block) for k in keys)


def upstream_jobs(job: Grid) -> list[Grid]:
    """Every job whose lazy result `job` reads, upstream first, each once."""
    order: list[Grid] = []

    def visit(j: Grid) -> None:
        for s in j.sets:
            if s.lazy is not None and all(s.lazy.job is not o for o in order):
                visit(s.lazy.job)
        order.append(j)

    visit(job)
    return order


class Pipeline:
    """Runs a job and the lazy results it reads as one task graph on one engine."""

    def __init__(self, final: Grid) -> None:
        self.stages = [Stage(k, job) for k, job in enumerate(upstream_jobs(final))]
        self.final = self.stages[-1]

    def stage_of(self, job: Grid) -> Stage:
        return next(s for s in self.stages if s.job is job)

    def run(self, output: str | Path | None = None, *, resume: bool = False,
            engine: str | Engine | None = None, cores: int | None = None, retries: int = 2,
            progress: bool = True, stream: IO[str] | None = None,
            memo: bool | str | Path | None = None) -> Any:
        """Compute every stage; return the final array (no output) or the output's path.

        Raises `TaskFailures` when some cells failed, after storing every other
        result. Memoisation is on for chained stages unless `memo=False`, and for
        a single abstraction when asked (`memo=True` or a directory).
        """
        if output is not None and str(output) != "-":
            check_writable(output)
        self.memo = _open_memo(memo, chained=len(self.stages) > 1)
        own_engine = not isinstance(engine, Engine)
        eng = make_engine(engine, cores)
        self.scratch = Path(tempfile.mkdtemp(prefix="abengine-pipeline-"))
        self.retries = retries
        try:
            for stage in self.stages:
                self._prepare(stage, eng, output, resume, stream)
            self._execute(eng, progress)
        except BaseException:
            if self.final.sink is not None:
                self.final.sink.abort()
            raise
        finally:
            if own_engine:
                eng.shutdown()
            if self.memo is not None:
                self.memo.close()
            self._remove_intermediates()
        failures = [f for stage in self.stages for f in stage.failures]
        result = self.final.sink.finish(complete=not failures)
        if failures:
            raise TaskFailures(failures, result=result)
        return result

    # -- before the graph: block shapes and sinks -----------------------------
    def _prepare(self, stage: Stage, eng: Engine, output: Any, resume: bool,
                 stream: IO[str] | None) -> None:
        job = stage.job
        self._bind_inputs(job)
        final = stage is self.final
        dtype = job.result_dtype(output if final else None)
        if not final and dtype.kind not in "fiub":
            raise UsageError(f"a lazy result is read as rows of numbers, but "
                             f"{job.function.name} gives {dtype} values; ask for dtype=float")
        to_h5 = final and output is not None and str(output) != "-" and output_kind(output) == "h5"
        plan_key = job.plan_key(dtype)
        known = self.memo.plan(plan_key) if self.memo is not None else None
        stored = resumable_block(output) if resume and to_h5 else None
        value_shape: tuple[int, ...] | None
        if stored is not None:  # resuming cuts the blocks, and makes the cells, it began with
            block, value_shape = job.block or stored[0], stored[1][len(job.shape):]
        elif known is not None:
            block, value_shape = _parse_plan(known)
        else:
            if job.block is None:
                self._warm_up(job, eng)
            block = job.choose_block(eng)
            value_shape = job.value_shape(eng, dtype, learn_later=final)
            if self.memo is not None and value_shape is not None:
                self.memo.set_plan(plan_key, repr((block, value_shape)))
        stage.block, job.cell_shape = block, value_shape
        if final:
            def opener(cells: tuple[int, ...]) -> Sink:
                return open_sink(
                    output, job.shape + cells, dtype, names=[s.names for s in job.sets],
                    grid=job.grid(block), chunks=block + cells,
                    meta=job.meta(block) if to_h5 else {}, resume=resume, stream=stream)

            stage.sink = (opener(value_shape) if value_shape is not None
                          else OpenOnFirstWrite(job.shape, dtype, opener))
            stage.done = stage.sink.done()
        else:
            stage.sink = NpySink(self.scratch / f"stage{stage.index}.npy",
                                 job.shape + value_shape, dtype)

    def _bind_inputs(self, job: Grid) -> None:
        """Point the job's lazy sets at their stages' stores, then check them as sets."""
        lazy = [s for s in job.sets if s.lazy is not None]
        for s in lazy:
            array = self.stage_of(s.lazy.job).sink.array
            s.array = array if array.ndim > 1 else array.reshape(-1, 1)
        if lazy:
            job.check_function_fits_sets()

    def _warm_up(self, job: Grid, eng: Engine) -> None:
        """Compute the first rows of the job's lazy inputs, so its probe has rows to time F on."""
        wanted: dict[int, set] = {}
        for s in job.sets:
            if s.lazy is not None:
                up = self.stage_of(s.lazy.job)
                rows = min(job.probe_rows(), len(s))
                wanted.setdefault(up.index, set()).update(up.job.covering(0, rows, up.block))
        wanted = self._with_upstream(wanted)
        if wanted:
            report = eng.run(self._graph(wanted), self._place, retries=self.retries)
            self._record_failures(report)
            for index, keys in wanted.items():
                self.stages[index].done |= keys

    def _with_upstream(self, wanted: dict[int, set]) -> dict[int, set]:
        """`wanted` blocks not done yet, plus every upstream block they read."""
        for stage in reversed(self.stages):  # downstream first: stages are in upstream order
            keys = wanted.get(stage.index, set()) - stage.done
            wanted[stage.index] = keys
            for key in keys:
                for s, (lo, hi) in zip(stage.job.sets, stage.job.bounds(key, stage.block)):
                    if s.lazy is not None:
                        up = self.stage_of(s.lazy.job)
                        wanted.setdefault(up.index, set()).update(up.job.covering(lo, hi, up.block))
        return {index: keys for index, keys in wanted.items() if keys}

    # -- the graph ---------------------------------------------------------
    def _graph(self, wanted: dict[int, set]) -> TaskGraph:
        """The wanted blocks of every stage, each after the upstream blocks that make its rows."""
        graph = TaskGraph()
        nodes: dict[tuple[int, Key], Node] = {}
        for stage in self.stages:
            job, block = stage.job, stage.block
            for key in sorted(wanted.get(stage.index, ())):  # row-major, as keys() gives them
                after: dict[int, Node] = {}
                for s, (lo, hi) in zip(job.sets, job.bounds(key, block)):
                    if s.lazy is None:
                        continue
                    up = self.stage_of(s.lazy.job)
                    for k in up.job.covering(lo, hi, up.block):
                        if (up.index, k) in nodes:
                            after[id(nodes[up.index, k])] = nodes[up.index, k]
                node = Deferred(functools.partial(self._task, stage, key), tag=(stage.index, key))
                nodes[stage.index, key] = graph.add(node, after=after.values())
        return graph

    def _task(self, stage: Stage, key: Key) -> Task:
        """Block `key` of a stage, built at dispatch time (its lazy rows exist by then);
        a memoised value comes back as a finished task and never reaches the engine."""
        task = stage.job.task(key, stage.block)
        task.tag = (stage.index, key)
        if self.memo is not None and isinstance(task, PythonTask):
            digest = self.memo.key(stage.job.function.identity, task)
            hit, value = self.memo.get(digest)
            if hit:
                return Finished(value=value, tag=task.tag)
            stage.memo_keys[task.id] = digest
        return task

    def _place(self, task: Task, result: TaskResult) -> None:
        index, key = task.tag
        stage = self.stages[index]
        failures = stage.job._place(key, stage.block, result.value, stage.sink)
        stage.failures.extend(failures)
        digest = stage.memo_keys.pop(task.id, None)
        if digest is not None and not failures:
            self.memo.put(digest, result.value)
        if self._bar is not None:
            self._bar.update(stage.job.cells_in(key, stage.block))

    _bar: Any = None

    def _shared_inputs(self) -> tuple[dict[Path, int], int]:
        """The files the stages' blocks read, with how many blocks read each; the blocks."""
        uses: dict[Path, int] = {}
        tasks = 0
        for stage in self.stages:
            tasks += len(stage.job.keys(stage.block))
            for path, n in stage.job.shared_inputs(stage.block).items():
                uses[path] = uses.get(path, 0) + n
        return uses, tasks

    def _work(self, wanted: dict[int, set]) -> float | None:
        """Seconds of F in the wanted blocks, if every stage's time per cell is known."""
        total = 0.0
        for stage in self.stages:
            t = stage.job.known_seconds_per_cell()
            if t is None:
                return None
            total += t * stage.cells(wanted[stage.index])
        return total

    def _execute(self, eng: Engine, progress: bool) -> None:
        total = sum(stage.cells(stage.job.keys(stage.block)) for stage in self.stages)
        done = sum(stage.cells(stage.done) for stage in self.stages)
        wanted = {stage.index: set(stage.job.keys(stage.block)) - stage.done
                  for stage in self.stages}
        for stage in self.stages:
            stage.job.arrays_travel = eng.distribute is not None
        graph = self._graph(wanted)
        spread_inputs(eng, graph, *self._shared_inputs(), compute_seconds=self._work(wanted))
        self._bar = progress_bar(total, enabled=progress, initial=done)
        start = time.perf_counter()
        try:
            report = eng.run(graph, self._place, retries=self.retries)
        finally:
            self._bar.close()
            self._bar = None
        for stage in self.stages:
            stage.job.elapsed = time.perf_counter() - start
        self._record_failures(report)

    def _record_failures(self, report: Any) -> None:
        """Blank and report the blocks that failed, and those that never ran because
        a block they needed failed."""
        for task, attempts in report.failed.items():
            index, key = task.tag
            last = attempts[-1]
            stage = self.stages[index]
            stage.failures.append(stage.job.blank_block(
                key, stage.block, stage.sink, f"{last.error} (after {len(attempts)} attempts)",
                last.stderr))
        for node in report.skipped:
            index, key = node.tag
            stage = self.stages[index]
            stage.failures.append(stage.job.blank_block(
                key, stage.block, stage.sink, "not computed: rows it needs failed upstream"))


    def _remove_intermediates(self) -> None:
        """Intermediate stores end with the run: drop them, and every view of them."""
        for stage in self.stages:
            for s in stage.job.sets:
                if s.lazy is not None:
                    s.array = None
            if stage is not self.final and stage.sink is not None:
                stage.sink.abort()
                stage.sink = None
        shutil.rmtree(self.scratch, ignore_errors=True)


def _open_memo(memo: bool | str | Path | None, chained: bool) -> Memo | None:
    if memo is None:
        memo = chained
    if memo is False:
        return None
    return Memo(None if memo is True else memo)


def _parse_plan(text: str) -> tuple[Key, tuple[int, ...]]:
    block, value_shape = ast.literal_eval(text)
    return tuple(block), tuple(value_shape)
