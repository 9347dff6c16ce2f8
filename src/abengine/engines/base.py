"""The engine interface: `submit(task) -> Future[TaskResult]`, and a graph runner on top.

Like `concurrent.futures.Executor`, an engine only knows how to run one task
attempt. `Engine.run` turns that into running a whole `TaskGraph`: dispatch
what is ready, release dependents as results arrive, retry failures a bounded
number of times, and skip what depends on a task that finally failed. The
abstractions never look past this interface, so any engine runs any of them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field

from ..graph import Finished, Node, Task, TaskGraph, TaskResult

OnResult = Callable[[Task, TaskResult], None]
#: How an engine that sends inputs may get the shared ones to its workers (--distribute).
DISTRIBUTE_MODES = ("auto", "tree", "direct")


@dataclass
class RunReport:
    """How a graph run ended: each finally-failed task with every attempt's result."""

    done: int = 0
    failed: dict[Task, list[TaskResult]] = field(default_factory=dict)
    skipped: list[Node] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.skipped


class Engine(ABC):
    """Runs task attempts; `run` schedules a graph of them."""

    #: How many tasks the engine can run at once (cores or worker slots).
    slots: int = 1
    #: Seconds of overhead to dispatch one task and collect its result: the
    #: performance models weigh it against the work a task carries.
    dispatch_latency: float = 1e-3
    #: How an engine that sends inputs to workers gets the ones many tasks share there:
    #: "auto" (the distribution model chooses), "tree" or "direct"; None: inputs are
    #: linked where they are, nothing travels (see TaskGraph.spread).
    distribute: str | None = None
    #: Machines the slots are spread over (copies of a shared input that must exist).
    hosts: int = 1

    @abstractmethod
    def submit(self, task: Task) -> Future[TaskResult]:
        """Start one attempt of `task`. The future never raises: failures are results."""

    def shutdown(self) -> None:
        """Release workers and scratch space."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def run(self, graph: TaskGraph, on_result: OnResult, retries: int = 2) -> RunReport:
        """Run every task of `graph`; call `on_result` in this thread as each succeeds.

        An exception from `on_result` (say, a result that cannot be stored)
        stops the run: tasks not yet started are cancelled and it propagates.
        """
        graph.check()
        report = RunReport()
        missing = {node: len(graph.dependencies(node)) for node in graph}
        # (node, its task once built): deferred nodes become tasks only here, and a
        # finished task is dropped, so memory holds just the tasks in flight.
        ready: deque[tuple[Node, Task | None]] = deque((node, None) for node in graph.roots())
        attempts: dict[Node, list[TaskResult]] = {}
        running: dict[Future[TaskResult], tuple[Node, Task]] = {}
        # Keep a few tasks queued beyond the slots so no slot idles between results.
        window = 2 * self.slots

        def succeeded(node: Node, task: Task, result: TaskResult) -> None:
            report.done += 1
            attempts.pop(node, None)
            on_result(task, result)
            for dependent in graph.dependents(node):
                missing[dependent] -= 1
                if missing[dependent] == 0:
                    ready.append((dependent, None))

        try:
            while ready or running:
                while ready and len(running) < window:
                    node, task = ready.popleft()
                    task = task or graph.materialize(node)
                    if isinstance(task, Finished):  # known already: nothing to run
                        succeeded(node, task, TaskResult(task, ok=True, value=task.value))
                    else:
                        running[self.submit(task)] = (node, task)
                if not running:
                    continue
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    node, task = running.pop(future)
                    result = future.result()
                    if result.ok:
                        succeeded(node, task, result)
                        continue
                    tries = attempts.setdefault(node, [])
                    tries.append(result)
                    if len(tries) <= retries:
                        ready.appendleft((node, task))
                    else:
                        report.failed[task] = attempts.pop(node)
                        report.skipped.extend(graph.descendants(node) - set(report.skipped))
        finally:
            for future in running:
                future.cancel()
        return report
