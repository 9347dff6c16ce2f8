"""HTCondor: a submit description, sent with `condor_submit` or the htcondor bindings' Schedd.

Execute nodes share no file system with us, so each job carries what it
needs: the job script (the executable), the single-file worker and the secret
file go with the job (`transfer_input_files`), and the worker runs with the
node's `python3` in the job's scratch directory.
"""

from __future__ import annotations

import contextlib
import re
import shlex
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from ...errors import UsageError
from ..bundle import write_worker
from .base import ENDING, PENDING, RUNNING, Batch, run_command

TOOLS = ("condor_submit", "condor_q", "condor_rm")
BUNDLE = "abengine_worker.py"
#: JobStatus codes: 1 idle, 2 running, 3 removed, 4 completed, 5 held, 6 transferring
#: output, 7 suspended. A held worker will not run without help: it counts as ended.
STATES = {1: PENDING, 2: RUNNING, 3: ENDING, 4: ENDING, 5: ENDING, 6: RUNNING, 7: RUNNING}


class CondorBatch(Batch):
    """One vanilla-universe job per worker."""

    name = "condor"
    poll_interval = 10.0

    def __init__(self, address: str | None, port: int, secret: bytes, *,
                 python: str | None = None, **settings) -> None:
        self.explicit_python = python
        self.bindings = self.schedd = None
        # The execute node's interpreter, not ours.
        super().__init__(address, port, secret, python=python or "python3", **settings)

    def check(self) -> None:
        if not all(shutil.which(tool) for tool in TOOLS):
            self.bindings, self.schedd = bindings_schedd()

    def setup(self) -> None:
        self.appended, self.options = split_appends(self.options)
        if self.options and self.schedd is not None:
            raise UsageError(f"--batch-options {shlex.join(self.options)}: without "
                             "condor_submit only -append 'KEY = VALUE' options can be used")
        self.bundle = write_worker(self.run_dir / BUNDLE)
        self.description_file = self.run_dir / "worker.sub"

    def environment(self) -> dict[str, str]:
        # Python tasks need abengine on the node: only the user knows such an interpreter.
        return {"ABENGINE_PYTHON": self.python} if self.explicit_python else {}

    def launcher(self) -> list[str]:
        return [self.python, "-I", "-S", BUNDLE]  # the single-file worker, beside the job

    def job_script(self, **worker) -> str:
        # transferred into the job's directory
        worker.setdefault("password_file", "secret")
        worker.setdefault("tls_ca", "tls-ca.pem")
        return super().job_script(**worker)

    def description(self, script: Path | str | None = None) -> str:
        """The submit description of one worker job."""
        lines = [
            "universe = vanilla",
            f"executable = {script or self.script_file}",
            f"initialdir = {self.run_dir}",
            "should_transfer_files = YES",
            "when_to_transfer_output = ON_EXIT",
            "transfer_input_files = " + ", ".join(str(f) for f in self.inputs()),
            f"request_cpus = {self.cores}",
        ]
        if self.memory is not None:
            lines.append(f"request_memory = {self.memory}")
        if self.wall_time is not None:
            lines.append(f"allowed_job_duration = {int(-(-self.wall_time // 1))}")
        lines += [
            "output = worker-$(Cluster).$(Process).out",
            "error = worker-$(Cluster).$(Process).log",  # the worker logs to stderr
            "log = condor.log",
            "+AbengineWorker = true",
            *self.appended,
            "queue",
        ]
        return "\n".join(lines) + "\n"

    def inputs(self) -> list[Path]:
        """What each job carries to its node besides the executable."""
        return [self.bundle, self.secret_file] + [self.tls_ca_file] * bool(self.tls_ca_file)

    def submit_argv(self, script: Path | str) -> list[str]:
        return ["condor_submit", "-terse", *self.options, str(self.description_file)]

    def preview(self) -> str:
        script = self.write_script()
        self.description_file.write_text(self.description(script))
        return (f"# submitted with: {shlex.join(self.submit_argv(script))}\n"
                f"# {self.description_file}:\n{self.description_file.read_text()}\n"
                f"# {script}:\n{script.read_text()}")

    def submit(self, script: Path) -> str:
        description = self.description(script)
        if self.schedd is not None:
            try:
                result = self.schedd.submit(self.bindings.Submit(description), count=1)
            except Exception as exc:
                raise UsageError(f"the schedd refused the job: {exc}") from None
            return f"{result.cluster()}.0"
        self.description_file.write_text(description)
        reply = run_command(self.submit_argv(script), "condor_submit refused the job",
                            shown=["condor_submit", "-terse", *self.options, "DESCRIPTION"]).stdout
        return parse_terse(reply)

    def status(self, job_ids: Sequence[str]) -> dict[str, str]:
        if not job_ids:
            return {}
        if self.schedd is not None:
            ads = self.schedd.query(constraint=id_constraint(job_ids),
                                    projection=["ClusterId", "ProcId", "JobStatus"])
            rows = [(f"{ad['ClusterId']}.{ad['ProcId']}", int(ad["JobStatus"])) for ad in ads]
        else:
            out = run_command(["condor_q", *job_ids, "-af:j", "JobStatus"],
                              "condor_q failed").stdout
            rows = [(job, int(code)) for job, code in
                    (line.split() for line in out.splitlines() if len(line.split()) == 2)]
        return {job: STATES.get(code, ENDING) for job, code in rows if job in job_ids}

    def cancel(self, job_ids: Sequence[str]) -> None:
        if not job_ids:
            return
        if self.schedd is not None:
            with contextlib.suppress(Exception):
                self.schedd.act(self.bindings.JobAction.Remove, list(job_ids))
            return
        with contextlib.suppress(UsageError):
            run_command(["condor_rm", *job_ids], "condor_rm failed")

    def removal_hint(self, job_ids: Sequence[str]) -> str:
        return "condor_rm " + " ".join(job_ids)


def split_appends(options: Sequence[str]) -> tuple[list[str], list[str]]:
    """`-a LINE` / `-append LINE` options as description lines, and the other options."""
    appended, rest = [], []
    words = iter(options)
    for word in words:
        if word in ("-a", "-append", "--append"):
            line = next(words, None)
            if line is None:
                raise UsageError(f"--batch-options: {word} needs a 'KEY = VALUE' line after it")
            appended.append(line)
        else:
            rest.append(word)
    return appended, rest


def bindings_schedd() -> tuple[ModuleType, object]:
    """The htcondor bindings and their local schedd, for when there is no condor_submit."""
    try:
        with warnings.catch_warnings():  # "no condor_config": the bindings say so on import
            warnings.simplefilter("ignore")
            try:
                import htcondor2 as htcondor
            except ImportError:
                import htcondor
    except ImportError:
        raise UsageError("--batch condor: condor_submit is not on PATH and the htcondor Python "
                         "bindings are not installed (pip install htcondor)") from None
    try:
        return htcondor, htcondor.Schedd()
    except Exception as exc:
        raise UsageError("--batch condor: condor_submit is not on PATH and the htcondor "
                         f"bindings find no schedd: {exc}") from None


def parse_terse(reply: str) -> str:
    """The first job id from `condor_submit -terse`: `CLUSTER.PROC - CLUSTER.PROC`."""
    m = re.search(r"(\d+\.\d+)", reply)
    if m is None:
        raise UsageError(f"condor_submit did not print a job id: {reply.strip()!r}")
    return m[1]


def id_constraint(job_ids: Sequence[str]) -> str:
    terms = []
    for job in job_ids:
        cluster, _, proc = job.partition(".")
        terms.append(f"(ClusterId == {int(cluster)} && ProcId == {int(proc or 0)})")
    return " || ".join(terms)
