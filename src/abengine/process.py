"""Running one program for a task: output captured, its whole process group
killed at a deadline, and every running group killed when the engine stops.

Each program gets a session of its own, so a kill reaches the children it
started too (a shell script's `sleep` would otherwise keep the pipes open
and the caller waiting). Programs are registered under the engine that runs
them (its stop signal, from the task's context), so stopping one engine never
touches another's.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from .graph import _stop

#: Programs running now, each with the stop signal of the engine that started it.
_running: dict[subprocess.Popen, object] = {}
_lock = threading.Lock()


@dataclass
class Finished:
    returncode: int | None  # None: killed at its deadline
    stdout: bytes
    stderr: bytes


def run(args: list[str] | str, cwd: Path, timeout: float | None = None,
        shell: bool = False) -> Finished:
    """Run a program to its end or its deadline; raises OSError if it cannot start."""
    proc = subprocess.Popen(
        args, cwd=cwd, shell=shell, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, start_new_session=True,
    )
    with _lock:
        _running[proc] = _stop.get()
    try:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            out, err = proc.communicate()
            return Finished(None, out, err)
        return Finished(proc.returncode, out, err)
    finally:
        with _lock:
            _running.pop(proc, None)


def kill_all(owner: object) -> None:
    """Stop every program still running for the engine whose stop signal is `owner`."""
    with _lock:
        procs = [proc for proc, started_by in _running.items() if started_by is owner]
    for proc in procs:
        _kill_group(proc)


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
