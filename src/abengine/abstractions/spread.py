"""Deciding, before a graph runs, how the inputs its tasks share reach the workers.

An abstraction knows which files its tasks share (its sets, F) and, once its
model has timed F, how much work there is; the engine knows how many workers
it has and how it was asked to spread (`--distribute auto|tree|direct`).
`spread_inputs` puts the two together through the distribution model and
writes the answer on the graph (`TaskGraph.spread`), which an engine that
sends inputs to workers (Work Queue) carries out. Engines that link inputs
(the local engine) have nothing to spread.
"""

from __future__ import annotations

from pathlib import Path

from ..engines import Engine
from ..graph import Spread, TaskGraph
from ..models.common import measure_bandwidth
from ..models.distribution import plan


def spread_inputs(engine: Engine, graph: TaskGraph, uses: dict[Path, int] | None = None,
                  tasks: int | None = None, compute_seconds: float | None = None) -> None:
    """Set `graph.spread` for `engine`: the shared files, tree or direct, and how many
    workers to feed.

    `uses` (file -> tasks reading it) and `tasks` default to a scan of the
    graph; `compute_seconds` is the F time of all its tasks, when a model
    measured it (it lets the model feed fewer workers when data outweighs work).
    """
    setting = engine.distribute
    if setting is None:
        return
    if uses is None:
        uses, tasks = graph.shared_inputs()
    uses = {path: n for path, n in uses.items() if n > 1}
    if not uses:
        return
    hosts = engine.hosts
    per_host = None
    if compute_seconds is not None:
        per_host = compute_seconds / max(1, engine.slots // max(1, hosts))
    files = [(path.stat().st_size, n) for path, n in uses.items()]
    mode, feed = plan(files, tasks or len(graph), hosts, setting, per_host,
                      lambda: measure_bandwidth(engine))
    graph.spread = Spread(sorted(uses), mode, feed)
