"""SLURM: `sbatch --parsable`, `squeue`, `scancel`."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

from ...errors import UsageError
from .base import ENDING, PENDING, RUNNING, Batch, last_line, minutes, run_command, user_name

#: squeue's compact states (%t) for jobs not yet started, and for jobs running.
WAITING_STATES = {"PD", "CF", "RQ", "RF", "RH", "RS"}
RUNNING_STATES = {"R", "S", "ST"}


class SlurmBatch(Batch):
    """One single-task job per worker, `--cpus-per-task` cores each."""

    name = "slurm"
    directive = "#SBATCH"
    commands = ("sbatch", "squeue", "scancel")

    def directives(self) -> list[str]:
        lines = ["--job-name=abengine-worker", "--nodes=1", "--ntasks=1",
                 f"--cpus-per-task={self.cores}",
                 f"--output={self.run_dir}/worker-%j.log"]
        if self.memory is not None:
            lines.append(f"--mem={self.memory}M")
        if self.wall_time is not None:
            lines.append(f"--time={minutes(self.wall_time)}")
        return lines

    def submit_argv(self, script: Path | str) -> list[str]:
        # --batch-options go on the command line, where they override the directives.
        return ["sbatch", "--parsable", *self.options, str(script)]

    def submit(self, script: Path) -> str:
        reply = run_command(self.submit_argv(script), "sbatch refused the job",
                            shown=self.submit_argv("SCRIPT")).stdout
        return parse_sbatch(reply)

    def status(self, job_ids: Sequence[str]) -> dict[str, str]:
        wanted = set(job_ids)
        if not wanted:
            return {}
        out = run_command(["squeue", "-h", "-o", "%i %t", "-u", user_name()],
                          "squeue failed").stdout
        return {job: state for job, state in parse_squeue(out).items() if job in wanted}

    def cancel(self, job_ids: Sequence[str]) -> None:
        if job_ids:
            # scancel complains about jobs already gone; the others are cancelled all the same.
            with contextlib.suppress(UsageError):
                run_command(["scancel", *job_ids], "scancel failed")

    def removal_hint(self, job_ids: Sequence[str]) -> str:
        return "scancel " + " ".join(job_ids)


def parse_sbatch(reply: str) -> str:
    """The job id from `sbatch --parsable`: `ID` or `ID;CLUSTER`."""
    job = last_line(reply).split(";")[0]
    if not job.isdigit():
        raise UsageError(f"sbatch did not print a job id: {reply.strip()!r}")
    return job


def parse_squeue(out: str) -> dict[str, str]:
    """`ID STATE` lines (squeue -o '%i %t') as {id: PENDING | RUNNING | ENDING}."""
    states = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) == 2:
            job, state = fields
            states[job] = (PENDING if state in WAITING_STATES else
                           RUNNING if state in RUNNING_STATES else ENDING)
    return states
