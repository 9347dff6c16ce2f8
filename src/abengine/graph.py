"""Tasks (the put/exec/get unit) and the graph that orders them.

A `Task` is files in, a command, files out: exactly what a remote worker can
run. A `PythonTask` is a Python call with the same file semantics; an engine
may run it in-process, and a remote engine ships it as a command that unpickles
and calls it. Abstractions build a `TaskGraph`; engines only ever see tasks.
"""

from __future__ import annotations

import contextvars
import itertools
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx

_ids = itertools.count(1)

#: Characters of a failing program's stderr kept for the report.
STDERR_TAIL = 2000

#: The sandbox directory of the task running in this thread or process.
_sandbox: contextvars.ContextVar[Path | None] = contextvars.ContextVar("sandbox", default=None)


#: Set by the engine when the run is being stopped (Ctrl-C, a fatal error).
_stop: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar("stop", default=None)


class TaskCancelled(Exception):
    """The run is stopping: a task that loops over cells gives up between two of them."""


def check_cancelled() -> None:
    """Raise `TaskCancelled` if the engine is stopping; cheap enough to call per cell."""
    event = _stop.get()
    if event is not None and event.is_set():
        raise TaskCancelled("the run was stopped")


def current_sandbox() -> Path:
    """The fresh directory the running task owns; its input files are linked here."""
    path = _sandbox.get()
    if path is None:
        raise RuntimeError("current_sandbox() called outside a running task")
    return path


@dataclass(frozen=True)
class File:
    """A file crossing the sandbox boundary: `local` outside, `remote` inside."""

    local: Path
    remote: str
    cache: bool = True


@dataclass(eq=False)
class Task:
    """A shell command run in a fresh sandbox holding its inputs; outputs are fetched back.

    `tag` is opaque to engines: the abstraction uses it to place the result.
    `retries` bounds how many more attempts a failed task gets.
    """

    command: str = ""
    inputs: list[File] = field(default_factory=list)
    outputs: list[File] = field(default_factory=list)
    cores: int = 1
    wall_time: float | None = None
    tag: Any = None
    id: int = field(default_factory=lambda: next(_ids))

    def add_input(self, local: str | Path, remote: str | None = None, cache: bool = True) -> None:
        local = Path(local)
        self.inputs.append(File(local, remote or local.name, cache))

    def add_output(self, remote: str, local: str | Path) -> None:
        self.outputs.append(File(Path(local), remote, cache=False))

    def describe(self) -> str:
        return f"task {self.id} ({self.command})" if self.command else f"task {self.id}"


@dataclass(eq=False)
class PythonTask(Task):
    """`fn(*args)` run in a fresh sandbox; its return value is the task's value.

    `gil_free` declares that the call spends its time outside the GIL (numpy
    kernels, waiting on subprocesses) and never relies on the process's working
    directory (it asks `current_sandbox()` instead), so an engine may run it on
    a thread of the master and skip copying arrays between processes.
    """

    fn: Callable[..., Any] | None = None
    args: tuple = ()
    gil_free: bool = False

    def describe(self) -> str:
        name = getattr(self.fn, "__qualname__", repr(self.fn))
        return f"task {self.id} ({name})"


def describe_exit(code: int) -> str:
    """'exit code 3' or 'killed by signal SIGKILL': how a program ended, for reports."""
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


@dataclass(eq=False)
class Finished(Task):
    """A task whose value is already known (say, memoised from an earlier run).

    A factory may return one instead of work: the graph runner hands the value
    on at once and releases the dependents, and no engine ever sees it.
    """

    value: Any = None

    def describe(self) -> str:
        return f"task {self.id} (known result)"


@dataclass
class TaskResult:
    """What one attempt of a task produced."""

    task: Task
    ok: bool
    value: Any = None  # PythonTask: the return value
    exit_code: int | None = None  # Task: the command's exit status
    stdout: str = ""
    stderr: str = ""
    error: str = ""  # why the attempt failed, when it did
    elapsed: float = 0.0


@dataclass(eq=False)
class Deferred:
    """A graph node whose task is built only when it is dispatched.

    A large All-Pairs has thousands of blocks each naming hundreds of input
    files; building them all up front would hold them all in memory at once.
    """

    factory: Callable[[], Task]
    tag: Any = None

    def describe(self) -> str:
        return f"deferred task {self.tag}"


Node = Task | Deferred

#: Tasks of a graph looked at to find the inputs they share (a sample beyond that).
SCAN_TASKS = 10_000


@dataclass
class Spread:
    """Input files many of a graph's tasks read, and how they should reach the workers.

    Set by whoever builds the graph (an abstraction knows its sets and F, and
    its model weighs a spanning tree against the master sending on demand).
    An engine that sends inputs to workers spreads `files` to `feed` workers
    (None: all) by tree before the tasks need them when `mode` is "tree";
    "direct" leaves the master to send each worker what its tasks use.
    """

    files: list[Path]
    mode: str = "tree"
    feed: int | None = None


class TaskGraph:
    """Tasks (or deferred tasks) and the dependencies between them, on a networkx DiGraph.

    An edge u → v means v needs u's outputs: v is dispatched only after u
    finished successfully.
    """

    def __init__(self) -> None:
        self._g = nx.DiGraph()
        #: How the inputs its tasks share reach the workers (None: nobody said).
        self.spread: Spread | None = None

    def add(self, task: Node, after: Iterable[Node] = ()) -> Node:
        self._g.add_node(task)
        for dep in after:
            if dep not in self._g:
                raise ValueError(f"{dep.describe()} is not in the graph")
            self._g.add_edge(dep, task)
        return task

    def __len__(self) -> int:
        return self._g.number_of_nodes()

    def __iter__(self) -> Iterator[Node]:
        return iter(self._g.nodes)

    def __contains__(self, task: object) -> bool:
        return task in self._g

    def dependencies(self, task: Node) -> list[Node]:
        return list(self._g.predecessors(task))

    def dependents(self, task: Node) -> list[Node]:
        return list(self._g.successors(task))

    def roots(self) -> list[Node]:
        """Tasks that can start at once."""
        return [t for t in self._g.nodes if self._g.in_degree(t) == 0]

    def descendants(self, task: Node) -> set[Node]:
        return nx.descendants(self._g, task)

    @staticmethod
    def materialize(node: Node) -> Task:
        """The task a node stands for (built now if it was deferred)."""
        if isinstance(node, Deferred):
            task = node.factory()
            task.tag = node.tag if task.tag is None else task.tag
            return task
        return node

    def shared_inputs(self, limit: int = SCAN_TASKS) -> tuple[dict[Path, int], int]:
        """The cached input files more than one task reads, with how many read each, and the
        number of tasks looked at (the first `limit` that can be built now).

        A deferred task that waits for others is built from their results
        (Wavefront's edges), so only those depending on nothing are built
        here, and built again when dispatched.
        """
        counts: dict[Path, int] = {}
        tasks = 0
        nodes = (n for n in self if isinstance(n, Task) or not self.dependencies(n))
        for node in itertools.islice(nodes, limit):
            for f in self.materialize(node).inputs:
                if f.cache:
                    counts[f.local] = counts.get(f.local, 0) + 1
            tasks += 1
        return {path: n for path, n in counts.items() if n > 1}, tasks

    def check(self) -> None:
        """Refuse a cyclic graph before anything runs."""
        if not nx.is_directed_acyclic_graph(self._g):
            cycle = nx.find_cycle(self._g)
            raise ValueError("task graph has a cycle: " + " -> ".join(t.describe() for t, _ in cycle))
