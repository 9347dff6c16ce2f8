"""(Son of / Univa / Open) Grid Engine: `qsub -terse`, `qstat`, `qdel`."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

from ...errors import UsageError
from .base import ENDING, PENDING, RUNNING, Batch, hms, last_line, run_command, user_name


class SGEBatch(Batch):
    """One job per worker; more than one core takes slots of a parallel environment."""

    name = "sge"
    directive = "#$"
    commands = ("qsub", "qstat", "qdel")
    #: The parallel environment for multi-core workers; sites name theirs
    #: differently (`--batch-options "-pe NAME N"` overrides it).
    parallel_environment = "smp"

    def directives(self) -> list[str]:
        lines = ["-N abengine-worker", "-S /bin/sh", "-j y",
                 f"-o {self.run_dir}/worker-$JOB_ID.log", "-notify"]
        if self.cores > 1:
            lines.append(f"-pe {self.parallel_environment} {self.cores}")
        if self.wall_time is not None:
            lines.append(f"-l h_rt={hms(self.wall_time)}")
        if self.memory is not None:  # h_vmem is per slot
            lines.append(f"-l h_vmem={-(-self.memory // self.cores)}M")
        return lines

    def run_lines(self, command: str) -> list[str]:
        # qdel kills a job's process group with SIGKILL, which would leave the tasks the
        # worker runs (each in a session of its own) behind. With -notify it first sends
        # SIGUSR2 (and SIGUSR1 before a suspension): the worker ignores both, and the
        # script turns SIGUSR2 into the SIGTERM on which the worker stops its tasks.
        return ["trap '' USR1 USR2", f"{command} &", "worker=$!",
                "trap 'kill -TERM $worker' USR2",
                "while kill -0 $worker 2>/dev/null; do wait $worker; done"]

    def submit_argv(self, script: Path | str) -> list[str]:
        # --batch-options go on the command line, where they override the directives.
        return ["qsub", "-terse", *self.options, str(script)]

    def submit(self, script: Path) -> str:
        reply = run_command(self.submit_argv(script), "qsub refused the job",
                            shown=self.submit_argv("SCRIPT")).stdout
        return parse_qsub(reply)

    def status(self, job_ids: Sequence[str]) -> dict[str, str]:
        wanted = set(job_ids)
        if not wanted:
            return {}
        out = run_command(["qstat", "-u", user_name()], "qstat failed").stdout
        return {job: state for job, state in parse_qstat(out).items() if job in wanted}

    def cancel(self, job_ids: Sequence[str]) -> None:
        if job_ids:
            # qdel complains about jobs already gone; the others are deleted all the same.
            with contextlib.suppress(UsageError):
                run_command(["qdel", *job_ids], "qdel failed")

    def removal_hint(self, job_ids: Sequence[str]) -> str:
        return "qdel " + " ".join(job_ids)


def parse_qsub(reply: str) -> str:
    """The job id from `qsub -terse`: `ID`, or `ID.FIRST-LAST:STEP` for an array."""
    job = last_line(reply).split(".")[0]
    if not job.isdigit():
        raise UsageError(f"qsub did not print a job id: {reply.strip()!r}")
    return job


def parse_qstat(out: str) -> dict[str, str]:
    """qstat's table (job-ID prior name user state ...) as {id: PENDING | RUNNING | ENDING}."""
    states = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 5 or not fields[0].isdigit():
            continue  # the header, its dashes, a wrapped line
        state = fields[4]
        if "E" in state or "d" in state:  # in error, or being deleted
            states[fields[0]] = ENDING
        elif "q" in state or "h" in state:  # queued or held
            states[fields[0]] = PENDING
        else:  # r, t (transferring), R (restarted), s/S/T (suspended)
            states[fields[0]] = RUNNING
    return states
