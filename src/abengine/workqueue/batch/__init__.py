"""Workers started where the user's machines are: one small class per system.

    batch = make_batch("slurm", address, port, secret, cores=4, wall_time=3600)
    print(batch.job_script())          # exactly what is submitted
    jobs = batch.start(10)             # job ids
    batch.status(jobs)                 # {id: "pending" | "running" | "ending"}; absent = gone
    batch.cancel(jobs); batch.close()

`WorkerPool` keeps N of them alive while a master has work. A system's module
is imported only when it is used (paramiko for ssh, the bindings for condor).
"""

from __future__ import annotations

import importlib

from ...errors import UsageError
from .base import Batch, parse_duration, parse_memory

#: name -> "module:Class"
SYSTEMS = {
    "local": "local:LocalBatch",
    "ssh": "ssh:SSHBatch",
    "slurm": "slurm:SlurmBatch",
    "sge": "sge:SGEBatch",
    "condor": "condor:CondorBatch",
}

__all__ = ["SYSTEMS", "Batch", "batch_class", "make_batch", "parse_duration", "parse_memory"]


def batch_class(name: str) -> type[Batch]:
    if name not in SYSTEMS:
        raise UsageError(f"unknown batch system {name!r} (available: {', '.join(SYSTEMS)})")
    module, cls = SYSTEMS[name].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def make_batch(name: str, address: str | None, port: int, secret: bytes, **settings) -> Batch:
    """A batch system by name for the master at address:port (None: this machine's address)."""
    return batch_class(name)(address, port, secret, **settings)
