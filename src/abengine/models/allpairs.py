"""Block size for All-Pairs and Map from measured F time and the engine's overheads.

The All-Pairs model (Moretti et al., TPDS 2010) for n×m cells, c cells per
task, t seconds per cell, dispatch latency d and h slots is
`T(c) = (n·m/c)·(d + c·t)/h + d·h` (the distribution term arrives with remote
engines). Its lesson: a task must carry enough cells that d is small beside
c·t, and there must still be enough tasks to keep every slot busy to the end.
`choose_block` applies exactly that, with caps that keep memory per task and
time per task bounded; the Wavefront issue refines the model behind this seam.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Work per task at least this many times its dispatch cost (≤ 2% overhead).
HIDE_DISPATCH = 50
#: At least this many tasks per slot, so the last ones do not leave slots idle.
TASKS_PER_SLOT = 4
#: At most about this much F time per task (fine-grained progress and retries).
MAX_TASK_SECONDS = 60.0
#: At most this many cells per task (bounds the memory a result block takes).
MAX_BLOCK_CELLS = 1 << 22


@dataclass(frozen=True)
class Resources:
    """What the engine offers: parallel slots and the cost to dispatch one task."""

    slots: int
    dispatch_latency: float


def predict_seconds(cells: int, cells_per_task: int, seconds_per_cell: float,
                    res: Resources) -> float:
    """Predicted wall time of `cells` cells in tasks of `cells_per_task` cells."""
    tasks = math.ceil(cells / cells_per_task)
    per_task = res.dispatch_latency + cells_per_task * seconds_per_cell
    waves = math.ceil(tasks / res.slots)
    return waves * per_task + res.dispatch_latency * min(tasks, res.slots)


def cells_per_task(cells: int, seconds_per_cell: float, res: Resources) -> int:
    """How many cells one task should carry."""
    t = max(seconds_per_cell, 1e-9)
    hide = HIDE_DISPATCH * res.dispatch_latency / t
    balance = cells / (TASKS_PER_SLOT * res.slots)
    c = max(hide, balance)
    c = min(c, MAX_TASK_SECONDS / t, MAX_BLOCK_CELLS)
    return max(1, min(cells, int(c)))


def choose_block(n: int, m: int, seconds_per_cell: float, res: Resources,
                 symmetric: bool = False) -> tuple[int, int]:
    """Block height × width for an n×m All-Pairs (square when symmetric)."""
    cells = n * (n + 1) // 2 if symmetric else n * m
    c = cells_per_task(cells, seconds_per_cell, res)
    side = max(1, math.isqrt(c))
    if symmetric:
        return min(side, n), min(side, n)
    bx = min(n, side)
    by = min(m, max(1, c // bx))
    if by == m:  # the whole width fits: give the spare cells back to the height
        bx = min(n, max(1, c // m))
    return bx, by
