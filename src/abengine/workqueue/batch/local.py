"""Workers as processes of this machine, each in a session of its own."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from .base import RUNNING, Batch, kill_processes_in


class LocalBatch(Batch):
    """Runs each job script with /bin/sh here; the job id is the worker's process id."""

    name = "local"
    poll_interval = 1.0
    remote = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.processes: dict[str, subprocess.Popen] = {}

    def job_script(self, **worker) -> str:
        # Caches and sandboxes under the run directory: whatever a task leaves running
        # is found there by close().
        worker.setdefault("workdir", str(self.run_dir))
        return super().job_script(**worker)

    def submit(self, script: Path) -> str:
        log = self.run_dir / f"worker-{len(self.processes) + 1}.log"
        with open(log, "wb") as out:
            # Its own session: a Ctrl-C at the terminal reaches us, and we remove it.
            proc = subprocess.Popen(["/bin/sh", str(script)], stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        job = str(proc.pid)
        os.replace(log, self.log_path(job))
        self.processes[job] = proc
        return job

    def status(self, job_ids: Sequence[str]) -> dict[str, str]:
        return {job: RUNNING for job in job_ids
                if job in self.processes and self.processes[job].poll() is None}

    def cancel(self, job_ids: Sequence[str], grace: float = 5.0) -> None:
        procs = [self.processes[j] for j in job_ids if j in self.processes]
        for proc in procs:
            _signal_group(proc, signal.SIGTERM)  # the worker kills its tasks and cleans up
        deadline = time.monotonic() + grace
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            _signal_group(proc, signal.SIGKILL)  # and whatever is left of its session
            proc.wait()

    def close(self) -> None:
        kill_processes_in(self.run_dir)
        super().close()

    def removal_hint(self, job_ids: Sequence[str]) -> str:
        return "kill -TERM " + " ".join(f"-{j}" for j in job_ids)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
