"""What every performance model shares: the measured parameters, and the prediction they give.

A model is only as good as its inputs, so none is assumed: F's time per cell
is sampled on real cells through the engine that will run the work, the
dispatch latency is what that sample cost beyond F, the slots are the cores or
connected workers the engine reports, and the bandwidth (where inputs travel)
is timed on a transfer. `Prediction` is what `--predict` prints and `--plot`
draws, the same for every abstraction.
"""

from __future__ import annotations

import os
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..graph import Task, TaskGraph

if TYPE_CHECKING:
    from ..engines import Engine

#: Predictions this close to the best count as a tie (the models are not that precise).
TIE = 0.02


@dataclass(frozen=True)
class Resources:
    """What the engine offers: parallel slots; the wall time one task costs beyond F
    (dispatch latency); the part of it the master spends on its own CPU, one task
    after another (so it bounds the tasks per second); and the bytes per second
    that reach a worker (None: inputs are linked, not sent)."""

    slots: int
    dispatch_latency: float
    bandwidth: float | None = None
    master_seconds: float = 0.0


@dataclass(frozen=True)
class Measured:
    """A model's inputs and where they came from.

    `sampled_cells` is how many cells of F were timed (0: the user gave the
    time per cell); `latency_measured` says whether the dispatch latency was
    timed on this engine or is the engine's nominal figure.
    """

    seconds_per_cell: float
    resources: Resources
    sampled_cells: int = 0
    latency_measured: bool = False

    def describe(self) -> str:
        res = self.resources
        source = f"sampled on {self.sampled_cells} cells" if self.sampled_cells else "given"
        latency = "measured" if self.latency_measured else "nominal"
        text = (f"# F: {self.seconds_per_cell:.3g} s per cell ({source}); "
                f"{res.slots} slots; dispatch {res.dispatch_latency:.3g} s per task ({latency})")
        if res.master_seconds:
            text += f", {res.master_seconds:.3g} s of it master CPU"
        if res.bandwidth:
            text += f"; bandwidth {res.bandwidth / 1e6:.3g} MB/s"
        return text


@dataclass(frozen=True)
class Candidate:
    """One block size the model weighed: its label (e.g. `16` or `4x8`), tasks, predicted time."""

    label: str
    size: int  # cells per side (square blocks) or cells per task: the plot's x axis
    tasks: int
    seconds: float


@dataclass
class Prediction:
    """Predicted wall time per candidate block, and the block the model chose."""

    measured: Measured
    candidates: list[Candidate]
    chosen: Candidate
    x_label: str = "block side (cells)"
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The text `--predict` prints; the last line is `block_size=B predicted_seconds=T`."""
        out = [self.measured.describe(), *(f"# {note}" for note in self.notes)]
        out.append(f"{'block':>12} {'tasks':>9} {'predicted_s':>12}")
        for c in sorted(self.candidates, key=lambda c: (c.size, c.label)):
            mark = "  <- chosen" if c.label == self.chosen.label else ""
            out.append(f"{c.label:>12} {c.tasks:>9} {c.seconds:>12.3f}{mark}")
        out.append(f"block_size={self.chosen.label} predicted_seconds={self.chosen.seconds:.3f}")
        return out


def near_best(scored: dict, tie: float = TIE) -> list:
    """The keys whose value is within `tie` (relative) of the smallest."""
    best = min(scored.values())
    return [k for k, v in scored.items() if v <= best * (1 + tie)]


#: Bytes of the payload that times a transfer to a worker.
BANDWIDTH_PROBE_BYTES = 8 << 20


#: Each engine's bandwidth, measured once: `--predict` and the spread plan both ask.
_bandwidths: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def measure_bandwidth(engine: Engine, nbytes: int = BANDWIDTH_PROBE_BYTES) -> float | None:
    """Bytes per second from the master to a worker: a task with an `nbytes` input
    against the same task with a tiny one. None on the local engine (inputs are linked).
    Measured once per engine."""
    from ..engines import LocalEngine

    if isinstance(engine, LocalEngine):
        return None
    if engine not in _bandwidths:
        _bandwidths[engine] = _time_transfer(engine, nbytes)
    return _bandwidths[engine]


def _time_transfer(engine: Engine, nbytes: int) -> float | None:
    seconds = {}
    with tempfile.TemporaryDirectory(prefix="abengine-bandwidth-") as scratch:
        for size in (16, nbytes):
            payload = Path(scratch) / f"payload-{size}"
            payload.write_bytes(os.urandom(size))  # fresh bytes: no worker has them cached
            task = Task("test -f payload")
            task.add_input(payload, "payload", cache=False)
            graph = TaskGraph()
            graph.add(task)
            start = time.perf_counter()
            report = engine.run(graph, lambda *_: None, retries=0)
            seconds[size] = time.perf_counter() - start
            if not report.ok:
                return None
    extra = seconds[nbytes] - seconds[16]
    return nbytes / extra if extra > 0 else None
