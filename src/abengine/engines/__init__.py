"""Engines run task graphs: `LocalEngine` on this machine's cores."""

from __future__ import annotations

from ..errors import UsageError
from .base import Engine, RunReport
from .local import LocalEngine

__all__ = ["Engine", "LocalEngine", "RunReport", "make_engine"]


def make_engine(engine: str | Engine | None = None, cores: int | None = None) -> Engine:
    """An engine from a user's choice: an instance, a name, or None for the default."""
    if isinstance(engine, Engine):
        return engine
    if cores is not None and cores < 1:
        raise UsageError(f"cores must be at least 1, not {cores}")
    if engine in (None, "local"):
        return LocalEngine(cores)
    raise UsageError(f"unknown engine {engine!r} (available: local)")
