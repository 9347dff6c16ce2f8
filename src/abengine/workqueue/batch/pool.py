"""Keep N worker jobs for a master while it has work; remove every one of them at the end.

The pool knows the master only through a `status()` callable returning its
status fields (`workers_joined`, `waiting`, `running`), or None when it cannot
be reached: the engine passes its queue's `stats`, `submit-workers` asks a
master elsewhere over the network.

A job that ends before its worker ever connected means a broken set-up (a
wrong address, a python without abengine, a refused secret): its log is shown,
and after a few such jobs the pool gives up instead of resubmitting forever.
Without a per-worker listing from the master, "ended before connecting" is
counted in aggregate: jobs ended minus workers joined.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator

from ...errors import UsageError
from .base import PENDING, RUNNING, Batch

Status = Callable[[], "dict | None"]
#: Seconds to wait for the system to confirm that removed jobs are gone.
REMOVE_WAIT = 20.0


class Broken(UsageError):
    """The workers cannot work: each ends, or never connects."""


def say(message: str) -> None:
    print(f"abengine: {message}", file=sys.stderr, flush=True)


class WorkerPool:
    """`size` jobs of `batch`, replaced while the master has tasks, all removed by `remove`."""

    def __init__(self, batch: Batch, size: int, status: Status, *,
                 connect_timeout: float = 60.0, max_failed_starts: int | None = None) -> None:
        self.batch, self.size, self.master_status = batch, size, status
        self.connect_timeout = connect_timeout
        self.max_failed_starts = max_failed_starts or max(3, size)
        self.submitted: list[str] = []  # every job, in order
        self.alive: list[str] = []  # pending or running when last seen
        self.gone: set[str] = set()  # no longer listed by the system
        self.ended = 0  # jobs seen to end (or fall out of the list)
        self.reported = 0  # of the jobs that ended unconnected, how many were reported
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- starting ---------------------------------------------------------------------
    def start(self, count: int | None = None) -> list[str]:
        jobs = self.batch.start(self.size if count is None else count)
        self.submitted += jobs
        self.alive += jobs
        return jobs

    def wait_for_first_worker(self) -> float:
        """Block until a worker connects; seconds waited. Raise Broken when none can."""
        start = time.monotonic()
        next_poll = start
        running_since: float | None = None
        told_pending = False
        errors = 0
        states: dict[str, str] = {}
        while True:
            fields = self.master_status()
            if fields and fields.get("workers_joined", 0) > 0:
                return time.monotonic() - start
            now = time.monotonic()
            if now >= next_poll:
                next_poll = now + self.batch.poll_interval
                try:
                    states = self.refresh()
                    errors = 0
                except UsageError as exc:  # a scheduler command failing now and then
                    errors += 1
                    if errors >= 5:
                        raise
                    if errors == 1:
                        say(f"cannot check the {self.batch.name} jobs (trying again): {exc}")
                    continue
                if not self.alive:
                    job = self.submitted[-1]
                    raise self.broken(f"every worker job ended before connecting to "
                                      f"{self.batch.address}:{self.batch.port}", job)
                if running_since is None and RUNNING in states.values():
                    running_since = now
                if running_since is None and not told_pending and now - start > 2:
                    say(f"{len(self.alive)} {self.batch.name} jobs queued; waiting for the "
                        "scheduler to start them (Ctrl-C gives up and removes them)")
                    told_pending = True
            if running_since is not None and now - running_since > self.connect_timeout:
                job = next((j for j in self.alive if states.get(j) == RUNNING), self.alive[0])
                raise self.broken(f"no worker connected to {self.batch.address}:"
                                  f"{self.batch.port} within {self.connect_timeout:g} s of "
                                  "its job starting", job)
            time.sleep(0.05)

    # -- keeping them -------------------------------------------------------------------
    def refresh(self) -> dict[str, str]:
        """Ask the system which jobs are alive; forget the ones that ended."""
        states = self.batch.status(self.alive) if self.alive else {}
        still = [j for j in self.alive if states.get(j) in (PENDING, RUNNING)]
        for job in self.alive:
            if job not in still:
                self.ended += 1
                if job not in states:
                    self.gone.add(job)
        self.alive = still
        return states

    def check(self) -> None:
        """One round: note ended jobs, give up on a broken set-up, replace what is missing."""
        before = list(self.alive)
        self.refresh()
        fields = self.master_status()
        if fields is None:
            return
        unconnected = self.ended - int(fields.get("workers_joined", 0))
        if unconnected > self.reported:
            ended = [j for j in before if j not in self.alive]
            for job in ended[-(unconnected - self.reported):]:
                self.show_log(job, f"{self.batch.name} job {job} ended before its worker "
                                   "connected; its log")
            self.reported = unconnected
        if unconnected >= self.max_failed_starts:
            raise self.broken(f"{unconnected} worker jobs ended without connecting to "
                              f"{self.batch.address}:{self.batch.port}", self.submitted[-1])
        missing = self.size - len(self.alive)
        if missing > 0 and int(fields.get("waiting", 0)) + int(fields.get("running", 0)) > 0:
            jobs = self.start(missing)
            say(f"replacing {missing} ended worker job(s): {' '.join(jobs)}")

    def watch(self, on_fatal: Callable[[UsageError], None]) -> None:
        """Run `check` every poll interval in a thread; a broken set-up goes to `on_fatal`."""
        def loop() -> None:
            errors = 0
            while not self._stop.wait(self.batch.poll_interval):
                try:
                    self.check()
                    errors = 0
                except Broken as exc:
                    on_fatal(exc)
                    return
                except Exception as exc:  # a scheduler command failing now and then
                    errors += 1
                    if errors == 1:
                        say(f"cannot check the {self.batch.name} workers: {exc}")
                    if errors >= 5:
                        on_fatal(UsageError(f"cannot check the {self.batch.name} workers "
                                            f"5 times in a row: {exc}"))
                        return

        self._thread = threading.Thread(target=loop, name="abengine-workers", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    # -- ending -------------------------------------------------------------------------
    def remove(self, wait: float = REMOVE_WAIT) -> list[str]:
        """Cancel every job and wait until the system no longer lists them; those left."""
        self.stop()
        jobs = [j for j in self.submitted if j not in self.gone]
        left: list[str] = []
        with shielded_from_ctrl_c():
            try:
                self.batch.cancel(jobs)
                deadline = time.monotonic() + wait
                left = list(self.batch.status(jobs))
                while left and time.monotonic() < deadline:
                    time.sleep(min(1.0, self.batch.poll_interval / 4))
                    left = list(self.batch.status(left))
            except Exception as exc:
                say(f"could not confirm that the workers are gone: {exc}")
                left = jobs
            if left:
                say(f"{len(left)} worker job(s) still listed: {' '.join(left)}; remove them "
                    f"with: {self.batch.removal_hint(left)}")
            self.gone.update(j for j in jobs if j not in left)
        return left

    # -- reporting ----------------------------------------------------------------------
    def broken(self, why: str, job: str) -> Broken:
        """The error for a set-up that cannot work, after showing `job`'s log."""
        tail = self.show_log(job, f"the log of {self.batch.name} job {job}")
        last = tail.splitlines()[-1].strip() if tail else "(its log is empty)"
        return Broken(f"{why}; the last line of {self.batch.log_path(job)}: {last}")

    def show_log(self, job: str, headline: str) -> str:
        tail = self.batch.log_tail(job)
        if tail:
            say(f"{headline} ({self.batch.log_path(job)}):\n    " + tail.replace("\n", "\n    "))
        return tail


@contextlib.contextmanager
def shielded_from_ctrl_c() -> Iterator[None]:
    """While removing workers, a Ctrl-C says to wait instead of leaving them running."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def wait_please(*_: object) -> None:
        say("removing the workers; one moment")

    previous = signal.signal(signal.SIGINT, wait_please)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
