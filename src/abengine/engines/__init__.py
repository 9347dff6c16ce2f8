"""Engines run task graphs: `LocalEngine` on this machine's cores."""

from __future__ import annotations

from ..errors import UsageError
from .base import Engine, RunReport
from .local import LocalEngine

__all__ = ["Engine", "LocalEngine", "RunReport", "make_engine"]


def make_engine(engine: str | Engine | None = None, cores: int | None = None,
                workers: int | None = None, port: int | None = None) -> Engine:
    """An engine from a user's choice: an instance, a name, or None for the default.

    "local": `cores` cores of this machine. "workqueue": a master on `port`
    (0: any free port) with `workers` local workers of `cores` cores each, or
    none (start them by hand with the command it prints).
    """
    if isinstance(engine, Engine):
        return engine
    for value, what in ((cores, "cores"), (workers, "workers")):
        if value is not None and value < 1:
            raise UsageError(f"{what} must be at least 1, not {value}")
    if port is not None and not 0 <= port < 65536:
        raise UsageError(f"port must be in 0..65535, not {port}")
    if engine in (None, "local"):
        return LocalEngine(cores)
    if engine == "workqueue":
        from .workqueue import WorkQueueEngine

        try:
            return WorkQueueEngine(workers=workers, port=port or 0, cores_per_worker=cores or 1)
        except OSError as exc:
            raise UsageError(f"cannot listen on port {port}: {exc.strerror}") from None
    raise UsageError(f"unknown engine {engine!r} (available: local, workqueue)")
