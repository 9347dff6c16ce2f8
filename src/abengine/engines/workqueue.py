"""The Work Queue engine: every task of a graph on workers connected to a master.

`WorkQueueEngine(workers=N)` starts N local workers and removes them at the
end; `WorkQueueEngine(port=P)` listens on P and prints the command line that
starts a worker by hand, anywhere that can reach this machine. A PythonTask
travels as a command (`python -m abengine.engines.pyrun`) with its call
pickled by value as an input file and its return value as an output file.
"""

from __future__ import annotations

import itertools
import shlex
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import Future
from pathlib import Path

import cloudpickle

from ..graph import PythonTask, Task, TaskResult, describe_exit
from ..workqueue import master as wq
from .base import Engine


class WorkQueueEngine(Engine):
    """Runs tasks through a Work Queue master on its workers."""

    dispatch_latency = 5e-3

    def __init__(self, workers: int | None = None, port: int = 0, cores_per_worker: int = 1,
                 python: str = sys.executable) -> None:
        self.queue = wq.WorkQueue(port=port)
        self.python = python
        self._scratch = Path(tempfile.mkdtemp(prefix="abengine-wq-"))
        self._ids = itertools.count(1)
        self._workers: list[subprocess.Popen] = []
        self._expected = (workers or 0) * cores_per_worker
        for _ in range(workers or 0):
            self._workers.append(subprocess.Popen(
                self.queue.worker_command(cores=cores_per_worker), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        if not workers:
            command = " ".join(shlex.quote(a) for a in self.queue.worker_command())
            print(f"abengine: master listening on port {self.queue.port}; start workers with:\n"
                  f"  {command}\n(use this machine's address in place of 127.0.0.1 elsewhere)",
                  file=sys.stderr)

    @property
    def slots(self) -> int:  # type: ignore[override]
        return max(1, self._expected, self.queue.stats()["cores"])

    def submit(self, task: Task) -> Future[TaskResult]:
        job = wq.Task(task.command, cores=task.cores, wall_time=task.wall_time)
        for f in task.inputs:
            job.add_input(f.local, f.remote, f.cache)
        for f in task.outputs:
            job.add_output(f.remote, f.local)
        result_file = None
        if isinstance(task, PythonTask):
            n = next(self._ids)
            call = self._scratch / f"call-{n}.pkl"
            result_file = self._scratch / f"result-{n}.pkl"
            with open(call, "wb") as f:
                cloudpickle.dump((task.fn, task.args), f)
            job.command = (f"{shlex.quote(self.python)} -m abengine.engines.pyrun "
                           "abengine-call.pkl abengine-result.pkl")
            job.add_input(call, "abengine-call.pkl", cache=False)
            job.add_output("abengine-result.pkl", result_file)
        out: Future[TaskResult] = Future()
        done = self.queue.submit_future(job)
        done.add_done_callback(lambda f: out.set_result(self._result(task, f.result(),
                                                                     result_file)))
        return out

    @staticmethod
    def _result(task: Task, job: wq.Task, result_file: Path | None) -> TaskResult:
        if job.state != wq.DONE:
            return TaskResult(task, ok=False, stdout=job.stdout, stderr=job.stderr,
                              error=job.error or job.state, elapsed=job.elapsed)
        code = job.exit_code if job.exit_code is not None else -(job.signal or 9)
        ok = code == 0
        value = None
        if ok and result_file is not None:
            with open(result_file, "rb") as f:
                value = cloudpickle.load(f)
        if result_file is not None:
            result_file.unlink(missing_ok=True)
            (result_file.parent / result_file.name.replace("result", "call")).unlink(
                missing_ok=True)
        return TaskResult(task, ok=ok, value=value, exit_code=code, stdout=job.stdout,
                          stderr=job.stderr, error="" if ok else describe_exit(code),
                          elapsed=job.elapsed)

    def shutdown(self) -> None:
        self.queue.close()
        for proc in self._workers:
            proc.terminate()
        for proc in self._workers:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(self._scratch, ignore_errors=True)
