"""The local engine: every task of a graph on the cores of this machine.

Each task gets a fresh sandbox directory with its inputs linked in and its
outputs moved out afterwards. Shell commands and GIL-free Python tasks (numpy
kernels, runners that drive subprocesses) run on threads of this process, so
arrays are never copied between processes; other Python tasks run in a pool of
worker processes. At most `cores` tasks run at once either way: every task
holds one of `cores` threads, and a process-pool task's thread waits for it.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import cloudpickle
from threadpoolctl import threadpool_limits

from .. import process
from ..graph import (
    STDERR_TAIL,
    File,
    PythonTask,
    Task,
    TaskGraph,
    TaskResult,
    _sandbox,
    _stop,
    describe_exit,
)
from ..workqueue.cache import safe_name  # one rule for sandbox names, local or remote
from .base import Engine, OnResult, RunReport


def link_into(sandbox: Path, files: list[File]) -> None:
    """Put each input in the sandbox: a hard link where possible, else a symlink."""
    for f in files:
        target = sandbox / safe_name(f.remote)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(f.local, target)
        except OSError:
            os.symlink(os.path.abspath(f.local), target)


def collect_from(sandbox: Path, files: list[File]) -> str:
    """Move outputs out of the sandbox; return what was missing, if anything."""
    missing = []
    for f in files:
        source = sandbox / safe_name(f.remote)
        if source.is_symlink() or not source.is_file():  # a link could point anywhere
            missing.append(f.remote)
            continue
        f.local.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(source, f.local)
    return f"outputs not produced (or not regular files): {', '.join(missing)}" if missing else ""


def _call_in_sandbox(payload: bytes, sandbox: str) -> Any:
    """Process-pool entry point: unpickle the call, run it inside its sandbox."""
    fn, args = cloudpickle.loads(payload)
    os.chdir(sandbox)
    token = _sandbox.set(Path(sandbox))
    try:
        return fn(*args)
    finally:
        _sandbox.reset(token)
        os.chdir("/")


def blas_threads(tasks_at_once: int) -> int:
    """BLAS threads per task so that tasks × threads fills the machine without oversubscribing it.

    Two tasks each running a two-thread matrix multiply on two cores run
    slower than one thread each: the threads fight over the cores and caches.
    """
    return max(1, (os.cpu_count() or 1) // tasks_at_once)


def _limit_blas(threads: int) -> None:
    """Process-pool initializer: the same BLAS thread limit in every worker process."""
    threadpool_limits(threads, user_api="blas")


class LocalEngine(Engine):
    """Runs tasks on `cores` cores of this machine (default: all of them)."""

    def __init__(self, cores: int | None = None, scratch: str | Path | None = None) -> None:
        self.cores = cores or os.cpu_count() or 1
        if self.cores < 1:
            raise ValueError("cores must be at least 1")
        self.slots = self.cores
        self.dispatch_latency = 2e-4
        self._threads = ThreadPoolExecutor(self.cores, thread_name_prefix="abengine")
        self._processes: ProcessPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._alone_lock = threading.Lock()
        self._scratch = Path(tempfile.mkdtemp(prefix="abengine-", dir=scratch))
        self._attempts = itertools.count(1)
        self._stopping = threading.Event()

    # -- the Engine interface ---------------------------------------------
    def submit(self, task: Task) -> Future[TaskResult]:
        return self._threads.submit(self._attempt_task, task)

    def run(self, graph: TaskGraph, on_result: OnResult, retries: int = 2) -> RunReport:
        # Tasks on our threads share this process's BLAS: one slot's worth of threads each.
        with threadpool_limits(blas_threads(self.cores), user_api="blas"):
            return super().run(graph, on_result, retries)

    def shutdown(self) -> None:
        self._stopping.set()  # running cell loops give up at their next cell
        process.kill_all(self._stopping)  # and the programs they are waiting on end now
        self._threads.shutdown(wait=True, cancel_futures=True)
        if self._processes is not None:
            self._processes.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self._scratch, ignore_errors=True)

    # -- one attempt -----------------------------------------------------
    def _attempt_task(self, task: Task) -> TaskResult:
        sandbox = self._scratch / f"t{task.id}.{next(self._attempts)}"
        start = time.perf_counter()
        stop_token = _stop.set(self._stopping)  # what this task starts, this engine may stop
        try:
            sandbox.mkdir()
            link_into(sandbox, task.inputs)
            if isinstance(task, PythonTask):
                result = self._run_python(task, sandbox)
            else:
                result = self._run_command(task, sandbox)
            if result.ok:
                missing = collect_from(sandbox, task.outputs)
                if missing:
                    result.ok, result.error = False, missing
        except Exception as exc:  # an attempt's failure is a result, never an exception
            result = TaskResult(task, ok=False, error=f"{type(exc).__name__}: {exc}")
        finally:
            _stop.reset(stop_token)
            shutil.rmtree(sandbox, ignore_errors=True)
        result.elapsed = time.perf_counter() - start
        return result

    def _run_command(self, task: Task, sandbox: Path) -> TaskResult:
        done = process.run(task.command, sandbox, task.wall_time, shell=True)
        out, err = _text(done.stdout), _text(done.stderr)[-STDERR_TAIL:]
        if done.returncode is None:
            return TaskResult(task, ok=False, stdout=out, stderr=err,
                              error=f"wall time of {task.wall_time:g} s exceeded")
        ok = done.returncode == 0
        return TaskResult(task, ok=ok, exit_code=done.returncode, stdout=out, stderr=err,
                          error="" if ok else describe_exit(done.returncode))

    def _run_python(self, task: PythonTask, sandbox: Path) -> TaskResult:
        if task.gil_free:
            token = _sandbox.set(sandbox)
            try:
                value = task.fn(*task.args)
            finally:
                _sandbox.reset(token)
            return TaskResult(task, ok=True, value=value)
        payload = cloudpickle.dumps((task.fn, task.args))
        pool = self._process_pool()
        try:
            value = pool.submit(_call_in_sandbox, payload, str(sandbox)).result()
        except BrokenProcessPool:
            # Any task of the pool may have killed it; run this one alone to know.
            self._replace_broken(pool)
            return self._run_alone(task, payload, sandbox)
        return TaskResult(task, ok=True, value=value)

    def _run_alone(self, task: PythonTask, payload: bytes, sandbox: Path) -> TaskResult:
        """Run a task in a process of its own, so a crash is charged to the task that crashed."""
        with self._alone_lock, ProcessPoolExecutor(1, mp_context=get_context("forkserver")) as solo:
            try:
                value = solo.submit(_call_in_sandbox, payload, str(sandbox)).result()
            except BrokenProcessPool:
                return TaskResult(task, ok=False, error="its process died (killed, or crashed)")
        return TaskResult(task, ok=True, value=value)

    def _process_pool(self) -> ProcessPoolExecutor:
        with self._pool_lock:
            if self._processes is None:
                self._processes = ProcessPoolExecutor(
                    self.cores, mp_context=get_context("forkserver"),
                    initializer=_limit_blas, initargs=(blas_threads(self.cores),),
                )
            return self._processes

    def _replace_broken(self, pool: ProcessPoolExecutor) -> None:
        with self._pool_lock:
            if self._processes is pool:
                pool.shutdown(wait=False, cancel_futures=True)
                self._processes = None


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")
