"""The Work Queue engine: every task of a graph on workers connected to a master.

`WorkQueueEngine(workers=N, batch="slurm")` starts N workers as jobs of a
batch system (local processes by default; ssh, slurm, sge, condor), waits for
the first to connect, keeps N while tasks remain (replacing jobs that end)
and removes every job when it shuts down, whatever the reason.
`WorkQueueEngine(port=P)` only listens on P and prints the command that
starts a worker by hand. A PythonTask travels as a command
(`python -m abengine.engines.pyrun`) with its call pickled by value as an
input file and its return value as an output file.

Before a graph runs, its shared inputs (cached files many tasks use: the
sets and F) can be spread to every worker by spanning tree rather than sent
by the master to each worker that needs them: the graph says which files and
how (`TaskGraph.spread`, which the abstractions fill in from the distribution
model, models/distribution.py); `distribute="tree"|"direct"|"auto"` is the
user's word they start from.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import shlex
import shutil
import ssl
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import Future, InvalidStateError
from pathlib import Path

import cloudpickle

from ..errors import UsageError
from ..graph import PythonTask, Spread, Task, TaskGraph, TaskResult, describe_exit
from ..workqueue import master as wq
from ..workqueue.batch import make_batch
from ..workqueue.batch.base import default_address
from ..workqueue.batch.pool import WorkerPool, say
from .base import DISTRIBUTE_MODES, Engine, OnResult, RunReport


class WorkQueueEngine(Engine):
    """Runs tasks through a Work Queue master on its workers."""

    dispatch_latency = 5e-3

    def __init__(self, workers: int | None = None, port: int = 0, cores_per_worker: int = 1,
                 python: str = sys.executable, batch: str = "local",
                 hosts: Sequence[str] = (), batch_options: str = "",
                 wall_time: float | None = None, memory: int | None = None,
                 master_address: str | None = None, connect_timeout: float = 60.0,
                 tls_cert: str | Path | None = None, tls_key: str | Path | None = None,
                 distribute: str = "auto", **batch_settings) -> None:
        """`batch_settings` go to the batch system: `ssh_key`, `known_hosts`, `log_dir`,
        `idle_timeout`, `prologue`, `worker_python` (the workers' interpreter).

        `distribute`: "tree" spreads each graph's shared inputs to every worker by
        spanning tree before its tasks need them; "direct" lets the master send each
        worker what its tasks use; "auto" lets the distribution model choose (the
        abstractions ask it, and note the answer on the graph they run)."""
        if distribute not in DISTRIBUTE_MODES:
            raise UsageError(f"distribute must be one of {', '.join(DISTRIBUTE_MODES)}, "
                             f"not {distribute!r}")
        self.distribute = distribute
        #: What the last run did with its shared inputs: "tree", "direct", or "" (none).
        self.distributed = ""
        try:
            self.queue = wq.WorkQueue(port=port, tls_cert=tls_cert, tls_key=tls_key)
        except ssl.SSLError as exc:
            raise UsageError(f"--tls-cert {tls_cert}: not a usable certificate and key "
                             f"({exc.reason or exc})") from None
        except OSError as exc:
            what = f"--tls-cert {tls_cert}" if exc.filename else f"cannot listen on port {port}"
            raise UsageError(f"{what}: {exc.strerror}") from None
        except ValueError as exc:  # the environment's upload cap (a benchmark knob)
            raise UsageError(str(exc)) from None
        if tls_cert:  # workers trust the master's own certificate (self-signed or not)
            batch_settings.setdefault("tls_ca", str(tls_cert))
        self.python = python
        # Workers this engine starts export the interpreter that has abengine where they
        # run (ABENGINE_PYTHON); workers started by hand fall back to `python`.
        plain = re.fullmatch(r"[\w/.+-]+", python)
        self._task_python = f'"${{ABENGINE_PYTHON:-{python}}}"' if plain else shlex.quote(python)
        self._scratch = Path(tempfile.mkdtemp(prefix="abengine-wq-"))
        self._ids = itertools.count(1)
        self._inflight: set[int] = set()
        self._fatal: UsageError | None = None
        self.pool: WorkerPool | None = None
        self._expected = (workers or 0) * cores_per_worker
        self._workers = workers or 0
        try:
            if workers:
                python_there = batch_settings.pop("worker_python", None)
                settings = dict(batch_settings, cores=cores_per_worker, wall_time=wall_time,
                                memory=memory, options=batch_options, python=python_there)
                self._start_workers(workers, batch, list(hosts), master_address,
                                    connect_timeout, settings)
            else:
                self._tell_how_to_start_workers(master_address)
        except BaseException:
            self.shutdown()
            raise

    def _start_workers(self, workers: int, batch: str, hosts: list[str], address: str | None,
                       connect_timeout: float, settings: dict) -> None:
        """Submit the jobs, wait for the first worker, then keep them in a thread."""
        ssh_only = ["hosts"] * bool(hosts) + [k for k in ("ssh_key", "known_hosts")
                                               if settings.get(k)]
        if batch == "ssh":
            settings["hosts"] = hosts
        elif ssh_only:
            raise UsageError(f"{', '.join(ssh_only)}: only for the ssh batch system, "
                             f"not {batch}")
        else:
            settings = {k: v for k, v in settings.items() if k not in ("ssh_key", "known_hosts")}
        system = make_batch(batch, address, self.queue.port, self.queue.secret, **settings)
        self.pool = WorkerPool(system, workers, self.queue.stats,
                               connect_timeout=connect_timeout)
        jobs = self.pool.start()
        say(f"master listening on port {self.queue.port}; {len(jobs)} {batch} worker job(s) "
            f"({' '.join(jobs)}) connect to {system.address} (--master-address to change)")
        seconds = self.pool.wait_for_first_worker()
        say(f"first worker connected after {seconds:.1f} s")
        self.pool.watch(self._give_up)

    def _tell_how_to_start_workers(self, address: str | None) -> None:
        address = address or default_address()
        argv = self.queue.worker_command(host=address)
        command = shlex.join(argv)
        secret = argv[argv.index("--password-file") + 1]
        say(f"master listening on {address}:{self.queue.port}; start workers with:\n"
            f"  {command}\nor as batch jobs: abengine submit-workers -T slurm|sge|condor|ssh "
            f"{address} {self.queue.port} N --password-file {secret}")

    def _give_up(self, error: UsageError) -> None:
        """The workers cannot work: stop the run (from the pool's thread)."""
        self._fatal = error
        for task_id in list(self._inflight):
            self.queue.cancel(task_id)

    @property
    def slots(self) -> int:  # type: ignore[override]
        return max(1, self._expected, self.queue.stats()["cores"])

    def run(self, graph: TaskGraph, on_result: OnResult, retries: int = 2) -> RunReport:
        self._distribute(graph)
        report = super().run(graph, on_result, retries)
        if self._fatal is not None:
            raise self._fatal
        return report

    @property
    def hosts(self) -> int:  # type: ignore[override]
        return max(1, self._workers, self.queue.stats()["workers"])

    def _distribute(self, graph: TaskGraph) -> None:
        """Spread the graph's shared inputs by tree when its `spread` says so (or, for a
        graph that says nothing, when this engine was told "tree").

        Tasks then run wherever their inputs have arrived, at once; the rest wait
        for the tree rather than make the master send a copy of its own.
        """
        spread = graph.spread
        if spread is None and self.distribute == "tree":
            uses, _ = graph.shared_inputs()
            spread = Spread(sorted(uses)) if uses else None
        if spread is not None and spread.mode == "tree" and not self.queue.peer_transfers:
            spread = Spread(spread.files, "direct")  # TLS: no tree; on demand starts sooner
        self.distributed = spread.mode if spread is not None else ""
        if spread is not None and spread.mode == "tree" and spread.files:
            self.queue.distribute(spread.files, mode="tree", feed=spread.feed)

    def submit(self, task: Task) -> Future[TaskResult]:
        if self._fatal is not None:
            raise self._fatal
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
            job.command = (f"{self._task_python} -m abengine.engines.pyrun "
                           "abengine-call.pkl abengine-result.pkl")
            job.add_input(call, "abengine-call.pkl", cache=False)
            job.add_output("abengine-result.pkl", result_file)
        out: Future[TaskResult] = Future()
        done = self.queue.submit_future(job)
        self._inflight.add(job.id)

        def finished(f: Future[wq.Task]) -> None:
            self._inflight.discard(job.id)
            result = self._result(task, f.result(), result_file)
            with contextlib.suppress(InvalidStateError):  # the run stopped and cancelled it
                out.set_result(result)

        def cancelled(f: Future[TaskResult]) -> None:
            if f.cancelled():  # Ctrl-C or a fatal error: nobody wants this task any more
                self.queue.cancel(job.id)

        done.add_done_callback(finished)
        out.add_done_callback(cancelled)
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
        """Remove every worker job (also on errors and Ctrl-C), then close the master."""
        pool, self.pool = self.pool, None
        try:
            if pool is not None:
                try:
                    pool.remove()
                finally:
                    pool.batch.close()
        finally:
            self.queue.close()
            shutil.rmtree(self._scratch, ignore_errors=True)

