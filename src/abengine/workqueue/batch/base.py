"""What every batch system shares: the job script, the private run directory, the commands.

A `Batch` starts workers for one master (address, port, secret) somewhere:
on this machine, over SSH, or as jobs of a scheduler. The base class owns the
job script (shebang, the system's directive lines, the prologue, and the
worker's command line); a subclass says only how to write its directives and
how to submit a job, ask which jobs are still there, and cancel them.

The secret never appears on a command line or in a script: it is written to
a file only this user can read, in a run directory that the machines running
the jobs can see (under the home directory, which clusters share; /tmp is
private to each node), and the worker is given that file's path.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from ...errors import UsageError

PENDING, RUNNING, ENDING = "pending", "running", "ending"
#: Seconds a worker started by a batch system waits for work before it leaves.
IDLE_TIMEOUT = 300.0
#: Seconds any one scheduler command may take.
COMMAND_TIMEOUT = 60.0
WORKER_MODULE = "abengine.workqueue.worker"


class Batch(ABC):
    """Starts, watches and removes worker jobs for one master.

    `job_script()` is public so docs and dry runs can show exactly what is
    submitted. Job ids are strings, as the system prints them.
    """

    #: The name users give with `--batch` / `-T`.
    name: ClassVar[str]
    #: Prefix of the directive lines in the job script ("#SBATCH", "#$"), if any.
    directive: ClassVar[str] = ""
    #: Programs that must be on PATH.
    commands: ClassVar[tuple[str, ...]] = ()
    #: How often (seconds) to ask the system which jobs are still there.
    poll_interval: ClassVar[float] = 5.0
    #: Whether workers run on other machines: then the address they connect to is, by
    #: default, this machine's network address rather than loopback.
    remote: ClassVar[bool] = True

    def __init__(self, address: str | None, port: int, secret: bytes, *, cores: int = 1,
                 wall_time: float | None = None, memory: int | None = None, options: str = "",
                 idle_timeout: float = IDLE_TIMEOUT, log_dir: str | Path | None = None,
                 python: str | None = None, prologue: Sequence[str] = (),
                 tls: bool = False, tls_ca: str | Path | None = None,
                 verify: bool = True) -> None:
        if cores < 1:
            raise UsageError(f"cores per worker must be at least 1, not {cores}")
        if wall_time is not None and wall_time <= 0:
            raise UsageError(f"wall time must be positive, not {wall_time:g} s")
        if memory is not None and memory < 1:
            raise UsageError(f"memory must be at least 1 MB, not {memory}")
        self.address, self.port = address or default_address(self.remote), port
        self.cores, self.wall_time, self.memory = cores, wall_time, memory
        self.idle_timeout = idle_timeout
        self.options = split_options(options, self.name)
        self.python = python or sys.executable
        self.prologue = list(prologue)
        self.tls = tls or tls_ca is not None
        if tls_ca is not None and not os.access(tls_ca, os.R_OK):
            raise UsageError(f"--tls-ca {tls_ca}: no such readable file")
        if verify:
            self.check()
        self.run_dir, self.keep = make_run_dir(log_dir)
        self.secret_file = self.run_dir / "secret"
        self.script_file = self.run_dir / "worker.sh"
        # The master's CA certificate, where the jobs can read it (like the secret).
        self.tls_ca_file = self.run_dir / "tls-ca.pem" if tls_ca is not None else None
        try:
            write_private(self.secret_file, secret)
            if tls_ca is not None:
                shutil.copyfile(tls_ca, self.tls_ca_file)
            self.setup()
        except BaseException:
            self.close()
            raise

    def check(self) -> None:
        """Refuse what cannot work before anything is made: by default, missing commands."""
        for command in self.commands:
            if shutil.which(command) is None:
                raise UsageError(f"--batch {self.name}: {command} is not on PATH (run on a "
                                 f"submit host of the {self.name} system, or load its module)")

    def setup(self) -> None:
        """Prepare what the jobs need beyond the run directory and the secret file."""

    # -- the job script ------------------------------------------------------------
    def directives(self) -> list[str]:
        """The system's directive lines (without the prefix), e.g. `--cpus-per-task=2`."""
        return []

    def launcher(self) -> list[str]:
        """How to start the worker program: the interpreter that has abengine, by module."""
        return [self.python, "-m", WORKER_MODULE]

    def worker_argv(self, address: str | None = None, password_file: str | None = None,
                    launcher: Sequence[str] | None = None, workdir: str | None = None,
                    tls_ca: str | None = None) -> list[str]:
        """The worker's command line; the secret goes by file, never on it."""
        argv = [*(launcher or self.launcher()), address or self.address, str(self.port),
                "--cores", str(self.cores),
                "--password-file", password_file or str(self.secret_file),
                "--timeout", f"{self.idle_timeout:g}"]
        if self.tls_ca_file is not None:
            argv += ["--tls-ca", tls_ca or str(self.tls_ca_file)]
        elif self.tls:
            argv.append("--tls")
        if self.wall_time is not None:
            argv += ["--wall-time", f"{self.wall_time:g}"]
        if workdir is not None:
            argv += ["--workdir", workdir]
        return argv

    def environment(self) -> dict[str, str]:
        """Variables the job exports. ABENGINE_PYTHON names an interpreter that has abengine,
        which the engine's Python tasks run with (`$ABENGINE_PYTHON -m abengine.engines.pyrun`)."""
        return {"ABENGINE_PYTHON": self.python}

    def job_script(self, env: dict[str, str] | None = None,
                   **worker: str | Sequence[str] | None) -> str:
        """The script one worker job runs: directives, prologue, environment, `exec` the worker.

        `env` and `worker` (parts of the worker's command line, see `worker_argv`)
        override the defaults where the job runs on another file system.
        """
        lines = ["#!/bin/sh"]
        lines += [f"{self.directive} {d}" for d in self.directives()]
        lines.append(f"# abengine worker for the master at {self.address}:{self.port}")
        lines += self.prologue
        variables = self.environment() if env is None else env
        lines += [f"export {k}={shlex.quote(v)}" for k, v in variables.items()]
        lines += self.run_lines(shlex.join(self.worker_argv(**worker)))  # type: ignore[arg-type]
        return "\n".join(lines) + "\n"

    def run_lines(self, command: str) -> list[str]:
        """The script's lines that run the worker's `command`."""
        # exec: the worker is the job's main process, so the system's signals reach it.
        return [f"exec {command}"]

    def submit_argv(self, script: Path | str) -> list[str]:
        """The command that submits one job running `script`."""
        return ["/bin/sh", str(script)]

    def preview(self) -> str:
        """What one job is: how it is submitted, and its script (for dry runs and docs)."""
        script = self.write_script()
        return (f"# submitted with: {shlex.join(self.submit_argv(script))}\n"
                f"# {script}:\n{script.read_text()}")

    def write_script(self) -> Path:
        self.script_file.write_text(self.job_script())
        self.script_file.chmod(0o700)
        return self.script_file

    # -- jobs: what a subclass implements ------------------------------------------
    def start(self, count: int) -> list[str]:
        """Submit `count` worker jobs; on a refusal, cancel those already submitted."""
        script = self.write_script()
        ids: list[str] = []
        try:
            for _ in range(count):
                ids.append(self.submit(script))
        except BaseException:
            self.cancel(ids)
            raise
        return ids

    @abstractmethod
    def submit(self, script: Path) -> str:
        """Submit one job running `script`; its id. A refusal raises UsageError."""

    @abstractmethod
    def status(self, job_ids: Sequence[str]) -> dict[str, str]:
        """PENDING, RUNNING or ENDING for each job still known; a job not listed is gone."""

    @abstractmethod
    def cancel(self, job_ids: Sequence[str]) -> None:
        """Remove these jobs (those already gone are ignored)."""

    def removal_hint(self, job_ids: Sequence[str]) -> str:
        """The command a user runs to remove these jobs by hand."""
        return ""

    # -- logs and clean-up -------------------------------------------------------------
    def log_path(self, job_id: str) -> Path:
        return self.run_dir / f"worker-{job_id}.log"

    def log_tail(self, job_id: str, lines: int = 15) -> str:
        """The last lines of a job's log ('' when there is none yet)."""
        try:
            text = self.log_path(job_id).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def close(self) -> None:
        """Forget the secret; remove the run directory unless the user asked to keep it."""
        with contextlib.suppress(OSError):
            self.secret_file.unlink()
        if not self.keep:
            shutil.rmtree(self.run_dir, ignore_errors=True)


# -- helpers the systems share ---------------------------------------------------------


def run_command(argv: Sequence[str], what: str, shown: Sequence[str] | None = None,
                timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run a scheduler command in a session of its own (a Ctrl-C meant for us does not kill
    the `scancel` that cleans up after it); a failure becomes one line: `what`, the
    command's own message, and the command (or `shown`, e.g. without the script's path)."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              start_new_session=True)
    except FileNotFoundError:
        raise UsageError(f"{argv[0]} is not on PATH") from None
    except subprocess.TimeoutExpired:
        raise UsageError(f"{what}: {argv[0]} did not answer within {timeout:g} s") from None
    if done.returncode != 0:
        raise UsageError(f"{what}: {last_line(done.stderr or done.stdout)} "
                         f"({shlex.join(argv if shown is None else shown)})")
    return done


def last_line(text: str) -> str:
    """A command's message: its last line that says something (not Grid Engine's "Exiting."),
    without the `sbatch: error: ` prefix."""
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and line.strip() != "Exiting."]
    if not lines:
        return "no message"
    return re.sub(r"^\w+: error: ", "", lines[-1])


def split_options(options: str, system: str) -> list[str]:
    """`--batch-options` as the scheduler's argv words (shell quoting rules)."""
    try:
        return shlex.split(options)
    except ValueError as exc:
        raise UsageError(f"--batch-options {options!r} for {system}: {exc}") from None


def make_run_dir(log_dir: str | Path | None) -> tuple[Path, bool]:
    """A private directory for this run's script, secret and logs; and whether to keep it.

    Under `log_dir` when given (kept, for the logs), else under ~/.abengine/runs
    (removed at the end). Both are on the file system clusters share with their nodes.
    """
    keep = log_dir is not None
    parent = Path(log_dir).expanduser() if keep else Path.home() / ".abengine" / "runs"
    try:
        parent.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return Path(tempfile.mkdtemp(prefix=f"{stamp}-", dir=parent)).resolve(), keep
    except OSError as exc:
        raise UsageError(f"cannot make a run directory under {parent}: {exc.strerror} "
                         "(give --log-dir DIR on a shared file system)") from None


def write_private(path: Path, data: bytes) -> Path:
    """Write `data` to a new file only this user can read (created so, never widened)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def parse_duration(text: str | float) -> float:
    """Seconds from `S`, `M:S`, `H:M:S`, `D-H:M:S` or `30s` / `90m` / `2h` / `1d`."""
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        value = text.strip()
        try:
            if m := re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", value):
                seconds = float(m[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m[2]]
            else:
                days = 0.0
                if "-" in value:
                    d, value = value.split("-", 1)
                    days = float(d)
                seconds = 0.0
                for part in value.split(":"):
                    seconds = seconds * 60 + float(part)
                if value.count(":") > 2:
                    raise ValueError
                seconds += days * 86400
        except ValueError:
            raise UsageError(f"wall time {text!r}: give seconds, H:M:S or e.g. 90m") from None
    if seconds <= 0:
        raise UsageError(f"wall time must be positive, not {text!r}")
    return seconds


def parse_memory(text: str | int) -> int:
    """Megabytes from `4096`, `4096M`, `4G` or `1T`."""
    m = re.fullmatch(r"\s*(\d+)\s*([mgt]?)b?\s*", str(text), re.IGNORECASE)
    if not m or int(m[1]) < 1:
        raise UsageError(f"memory {text!r}: give megabytes, or e.g. 4G")
    return int(m[1]) * {"": 1, "m": 1, "g": 1024, "t": 1024 * 1024}[m[2].lower()]


def minutes(seconds: float) -> int:
    """Whole minutes, rounded up (schedulers count wall time in minutes)."""
    return max(1, -(-int(seconds) // 60))


def hms(seconds: float) -> str:
    s = int(-(-seconds // 1))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def default_address(remote: bool = True) -> str:
    """The address workers should use to reach this machine.

    Loopback for workers on this machine. Otherwise this host name's address,
    unless that is loopback (as /etc/hosts often makes it): then the address of
    the interface that routes outwards, found without sending anything.
    """
    if not remote:
        return "127.0.0.1"
    try:
        address = socket.gethostbyname(socket.gethostname())
    except OSError:
        address = "127.0.0.1"
    if address.startswith("127."):
        with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: a UDP "connect" only picks a route
            address = s.getsockname()[0]
    return address


def kill_processes_in(directory: Path) -> None:
    """SIGKILL every process of ours whose working directory is under `directory`.

    A task's programs may leave the worker's process group (abengine's own
    runners give each program a session of its own), so killing the worker's
    group can orphan them; their working directory, a sandbox under the
    worker's, still gives them away. Linux /proc only; elsewhere a no-op.
    """
    root = str(directory.resolve())
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        pid = int(entry.name)
        if pid != os.getpid() and (cwd == root or cwd.startswith(root + "/")):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def user_name() -> str:
    return getpass.getuser()
