"""Engines run task graphs: `LocalEngine` on this machine's cores, `WorkQueueEngine` on workers."""

from __future__ import annotations

from ..errors import UsageError
from .base import Engine, RunReport
from .local import LocalEngine

__all__ = ["Engine", "LocalEngine", "RunReport", "make_engine"]


def make_engine(engine: str | Engine | None = None, cores: int | None = None,
                workers: int | None = None, port: int | None = None, **workqueue) -> Engine:
    """An engine from a user's choice: an instance, a name, or None for the default.

    "local": `cores` cores of this machine. "workqueue": a master on `port`
    (0: any free port) with `workers` workers of `cores` cores each, started
    by `batch` (local processes by default; ssh, slurm, sge, condor; see
    `WorkQueueEngine` for the other `workqueue` settings), or none (start
    them by hand with the command it prints).
    """
    if isinstance(engine, Engine):
        return engine
    for value, what in ((cores, "cores"), (workers, "workers")):
        if value is not None and value < 1:
            raise UsageError(f"{what} must be at least 1, not {value}")
    if port is not None and not 0 <= port < 65536:
        raise UsageError(f"port must be in 0..65535, not {port}")
    given = sorted(k for k, v in workqueue.items() if v not in (None, "", (), []))
    if engine in (None, "local"):
        if given:
            raise UsageError(f"{', '.join(given)}: only with the workqueue engine")
        return LocalEngine(cores)
    if engine == "workqueue":
        from .workqueue import WorkQueueEngine

        needs_workers = [k for k in given
                         if k not in ("master_address", "tls_cert", "tls_key", "distribute")]
        if not workers and needs_workers:
            raise UsageError(f"{', '.join(needs_workers)}: only with workers to start "
                             "(give workers=N)")
        return WorkQueueEngine(workers=workers, port=port or 0, cores_per_worker=cores or 1,
                               **{k: v for k, v in workqueue.items() if v is not None})
    raise UsageError(f"unknown engine {engine!r} (available: local, workqueue)")
