"""Block size for Wavefront: dispatch latency against lost concurrency.

The CCTools wavefront model: on `cpus` cores, the cells of one anti-diagonal
are independent, so the multicore time is the sum over the anti-diagonals of
`ceil(cells_on_diagonal / cpus) · t`. Distributed, the same sum runs over
b × b blocks, each costing its own time plus the dispatch latency d. Small
blocks pay d on every block; large blocks leave slots idle, because the first
and last anti-diagonals hold few blocks.

abengine dispatches a block the moment its three inputs exist, not one
anti-diagonal after the other, so a diagonal wider than the slots does not
cost whole waves: the next diagonal's first blocks start while its last ones
run. The default step time is therefore the diagonal's work spread over the
slots, but never less than its longest block: `max(T_max, ΣT / slots)`
(within 10% of a simulation of that greedy schedule; tests/test_models.py).
`lockstep=True` gives the classic `ceil(blocks / slots) · T_max`. Nor can a
diagonal pass faster than the master prepares its tasks one after the other:
`blocks · m`, m the master's own CPU per task (with one-cell tasks on the
local engine, that is the bound that binds).
"""

from __future__ import annotations

import math

import numpy as np

from .allpairs import MAX_PER_CELL_BLOCK, MAX_TASK_SECONDS
from .common import Candidate, Measured, Prediction, Resources, near_best

__all__ = ["block_grid", "block_sides", "choose_block", "diagonals", "multicore_seconds",
           "predict_seconds", "prediction"]


def block_grid(X: int, Y: int, b: int) -> tuple[int, int]:
    """Blocks along x and along y when X × Y cells are cut into b × b blocks."""
    return math.ceil(X / b), math.ceil(Y / b)


def diagonals(X: int, Y: int, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per anti-diagonal of the block grid: blocks on it, their cells in all, the largest block.

    Every block is b × b except the last column (rx wide) and the last row
    (ry high), so each diagonal's figures follow in closed form: O(blocks
    along a side), however many blocks there are.
    """
    gx, gy = block_grid(X, Y, b)
    rx, ry = X - (gx - 1) * b, Y - (gy - 1) * b
    dx, dy = b - rx, b - ry  # how much smaller the last column / row is
    k = np.arange(gx + gy - 1)
    lo = np.maximum(0, k - (gy - 1))
    hi = np.minimum(k, gx - 1)
    count = hi - lo + 1
    last_x = hi == gx - 1  # the diagonal holds a block of the last column
    last_y = k - lo == gy - 1  # ... and of the last row
    corner = k == gx + gy - 2  # the one block in both
    cells = b * b * count - b * dx * last_x - b * dy * last_y + dx * dy * corner
    full = count - last_x - last_y + corner
    partial = np.maximum(np.where(last_x, rx * b, 0), np.where(last_y, b * ry, 0))
    largest = np.where(full > 0, b * b, np.where(corner, rx * ry, partial))
    return count, cells, largest


def predict_seconds(X: int, Y: int, b: int, seconds_per_cell: float, res: Resources,
                    lockstep: bool = False) -> float:
    """Predicted wall time of an X × Y wavefront in b × b blocks, one block per task."""
    count, cells, largest = diagonals(X, Y, b)
    t, d, slots = seconds_per_cell, res.dispatch_latency, max(1, res.slots)
    longest = largest * t + d
    if lockstep:
        steps = np.ceil(count / slots) * longest
    else:
        steps = np.maximum(longest, (cells * t + count * d) / slots)
    return float(np.maximum(steps, count * res.master_seconds).sum())


def multicore_seconds(X: int, Y: int, cpus: int, seconds_per_cell: float) -> float:
    """The classic multicore model: one cell per process, no dispatch cost, lock-step diagonals."""
    return predict_seconds(X, Y, 1, seconds_per_cell, Resources(cpus, 0.0), lockstep=True)


def block_sides(X: int, Y: int, seconds_per_cell: float = 0.0,
                max_cells: int = MAX_PER_CELL_BLOCK) -> list[int]:
    """Block sides worth weighing: every side that changes the number of blocks along an
    axis (about 2·√X of them), within the caps on cells and seconds per task."""
    cells_cap = max_cells
    if seconds_per_cell > 0:
        cells_cap = min(cells_cap, int(MAX_TASK_SECONDS / seconds_per_cell))
    sides = {math.ceil(size / g) for size in (X, Y) for g in range(1, size + 1)}
    return sorted(s for s in sides if min(s, X) * min(s, Y) <= cells_cap) or [1]


def choose_block(X: int, Y: int, seconds_per_cell: float, res: Resources,
                 max_cells: int = MAX_PER_CELL_BLOCK) -> int:
    """The block side the model predicts fastest; among near-ties the largest (fewest tasks)."""
    scored = {b: predict_seconds(X, Y, b, seconds_per_cell, res)
              for b in block_sides(X, Y, seconds_per_cell, max_cells)}
    return max(near_best(scored))


def prediction(X: int, Y: int, chosen: int, measured: Measured) -> Prediction:
    """What `wavefront --predict` prints: doubling block sides, every side the model
    weighed near its choice, and the chosen one."""
    t, res = measured.seconds_per_cell, measured.resources
    sides = {chosen, max(X, Y)}
    side = 1
    while side < max(X, Y):
        sides.add(side)
        side *= 2
    weighed = block_sides(X, Y, t)
    sides |= {s for s in weighed if chosen / 2 <= s <= chosen * 2}
    candidates = {}
    for b in sorted(sides):
        gx, gy = block_grid(X, Y, b)
        candidates[b] = Candidate(str(b), b, gx * gy, predict_seconds(X, Y, b, t, res))
    notes = [f"{X} x {Y} cells; one cell at a time: {X * Y * t:.3g} s; on {res.slots} cores "
             f"with no dispatch cost (classic multicore model): "
             f"{multicore_seconds(X, Y, res.slots, t):.3g} s"]
    return Prediction(measured, list(candidates.values()), candidates[chosen], notes=notes)
