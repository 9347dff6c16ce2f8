"""The two kinds of trouble a user can meet, and the exit status each maps to.

A `UsageError` is the user's own mistake (bad input, bad option): the CLI prints
its one-line message and exits 2, never a traceback. A `TaskFailures` means the
run itself went through but some tasks failed: every failure is listed, every
finished result is kept, and the CLI exits 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class AbengineError(Exception):
    """Base class of errors abengine reports to users as one clear line."""

    exit_status = 2


class UsageError(AbengineError):
    """Bad usage or bad input: names the culprit, exit status 2."""


@dataclass(frozen=True)
class Failure:
    """One thing that failed: which elements, and why."""

    where: str  # e.g. "cell (a.txt, b.txt)" or "task 17"
    reason: str  # e.g. "exit code 3" or "killed by signal 9"
    stderr: str = ""  # tail of the failing program's stderr

    def __str__(self) -> str:
        text = f"{self.where}: {self.reason}"
        if self.stderr.strip():
            tail = self.stderr.strip().replace("\n", "\n    ")
            text += f"\n    {tail}"
        return text


class TaskFailures(AbengineError):
    """Some tasks or cells failed; the rest were computed and kept.

    `result` holds what was computed (failed numeric cells are NaN) so a caller
    loses nothing; `failures` lists every failure.
    """

    exit_status = 1

    def __init__(self, failures: list[Failure], result: Any = None, skipped: int = 0) -> None:
        self.failures = failures
        self.result = result
        self.skipped = skipped
        noun = "failure" if len(failures) == 1 else "failures"
        message = f"{len(failures)} {noun}"
        if skipped:
            message += f", {skipped} tasks not run because something they needed failed"
        super().__init__(message + "; first: " + str(failures[0]).splitlines()[0])
