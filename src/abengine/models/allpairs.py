"""Block size for All-Pairs and Map from measured F time and the engine's overheads.

The All-Pairs model (Moretti et al., TPDS 2010) for n×m cells, c cells per
task, t seconds per cell, dispatch latency d, h slots, elements of s bytes
and bandwidth B is `T(c) = (n·m/c)·(d + c·t)/h + d·h` plus the time to move
the sets to the workers. Its lesson: a task must carry enough cells that d is
small beside c·t, and there must still be enough tasks to keep every slot
busy to the end. `choose_block` applies exactly that, with caps that keep
memory per task and time per task bounded. Every parameter is measured (see
models/common.py); the distribution term (models/distribution.py) only counts
where inputs travel.
"""

from __future__ import annotations

import math

from .common import TIE, Candidate, Measured, Prediction, Resources, near_best
from .distribution import tree_seconds

__all__ = ["MAX_BLOCK_CELLS", "MAX_PER_CELL_BLOCK", "TIE", "Resources", "block_tasks",
           "cells_per_task", "choose_batch", "choose_block", "distribution_seconds",
           "predict_block", "predict_seconds", "prediction"]

#: Work per task at least this many times its dispatch cost. Engines queue
#: tasks ahead of the free slots, so dispatch mostly overlaps running work;
#: 10× bounds the overhead by 10% even where it does not.
HIDE_DISPATCH = 10
#: At least this many tasks per slot, so the last ones do not leave slots idle.
TASKS_PER_SLOT = 4
#: At most about this much F time per task (fine-grained progress and retries).
MAX_TASK_SECONDS = 60.0
#: At most this many cells per task (bounds the memory a result block takes):
#: a vectorised kernel's block is one array; a per-cell F's is a list of
#: Python objects, many times larger per cell.
MAX_BLOCK_CELLS = 1 << 22
MAX_PER_CELL_BLOCK = 1 << 18


def predict_seconds(tasks: int, cells_per_task: int, seconds_per_cell: float,
                    res: Resources) -> float:
    """Predicted wall time of `tasks` tasks of at most `cells_per_task` cells each.

    Tasks run in waves of `slots`; the last wave is as long as a full one, so
    a task count just above a multiple of the slots costs a whole extra wave.
    """
    per_task = res.dispatch_latency + cells_per_task * seconds_per_cell
    waves = math.ceil(tasks / res.slots)
    return waves * per_task + res.dispatch_latency * min(tasks, res.slots)


def cells_per_task(cells: int, seconds_per_cell: float, res: Resources,
                   max_cells: int = MAX_BLOCK_CELLS) -> int:
    """The most cells one task should carry: enough to hide dispatch, few enough to balance."""
    t = max(seconds_per_cell, 1e-9)
    hide = HIDE_DISPATCH * res.dispatch_latency / t
    balance = cells / (TASKS_PER_SLOT * res.slots)
    c = max(hide, balance)
    c = min(c, MAX_TASK_SECONDS / t, max_cells)
    return max(1, min(cells, int(c)))


def choose_batch(n: int, seconds_per_cell: float, res: Resources,
                 max_cells: int = MAX_BLOCK_CELLS) -> int:
    """Elements per task for a one-axis abstraction (Map): full waves of equal tasks."""
    c = cells_per_task(n, seconds_per_cell, res, max_cells)
    tasks = math.ceil(math.ceil(n / c) / res.slots) * res.slots
    return math.ceil(n / min(tasks, n))


def block_tasks(n: int, m: int, bx: int, by: int, symmetric: bool = False) -> int:
    """How many tasks an n×m All-Pairs cut into bx×by blocks makes."""
    gx, gy = math.ceil(n / bx), math.ceil(m / by)
    return gx * (gx + 1) // 2 if symmetric else gx * gy


def distribution_seconds(elements: int, element_bytes: float, res: Resources,
                         tree: bool = True) -> float:
    """Time to get every element to every slot that may need it.

    By spanning tree, D = elements·s reaches h slots in ceil(log2(h+1))
    rounds of D/B (models/distribution.py); from the master alone, up to
    h·D/B cross its link. Zero where inputs are linked rather than sent
    (the local engine).
    """
    if not res.bandwidth or element_bytes <= 0:
        return 0.0
    total = elements * element_bytes
    if tree:
        return tree_seconds(total, res.slots, res.bandwidth)
    return total * res.slots / res.bandwidth


def predict_block(n: int, m: int, bx: int, by: int, seconds_per_cell: float, res: Resources,
                  symmetric: bool = False, element_bytes: float = 0.0, tree: bool = True) -> float:
    """Predicted wall time of an n×m All-Pairs in bx×by blocks.

    In symmetric mode the diagonal blocks hold half the cells, so the work is
    counted in full-block equivalents.
    """
    if symmetric:
        tasks = math.ceil(n * (n + 1) / 2 / (bx * by))
    else:
        tasks = block_tasks(n, m, bx, by)
    elements = n if symmetric else n + m
    return (predict_seconds(tasks, bx * by, seconds_per_cell, res)
            + distribution_seconds(elements, element_bytes, res, tree))


def choose_block(n: int, m: int, seconds_per_cell: float, res: Resources,
                 symmetric: bool = False, max_cells: int = MAX_BLOCK_CELLS) -> tuple[int, int]:
    """Block height × width for an n×m All-Pairs (square when symmetric).

    Among block shapes no larger than `cells_per_task` allows, take the one the
    model predicts fastest; among near-ties, the one that reads the fewest
    elements per cell ((x + y) / (x·y): large, square blocks), then the one
    with fewer tasks.
    """
    cells = n * (n + 1) // 2 if symmetric else n * m
    c = cells_per_task(cells, seconds_per_cell, res, max_cells)
    candidates: set[tuple[int, int]] = set()
    root = math.isqrt(c)
    near_root = {max(1, int(root * f)) for f in (0.25, 0.35, 0.5, 0.7, 1, 1.4, 2, 2.8, 4)}
    if symmetric:
        sides = {math.ceil(n / g) for g in range(1, min(n, 512) + 1)} | near_root
        candidates = {(s, s) for s in sides if s <= n and s * s <= c} or {(1, 1)}
    else:
        heights = {math.ceil(n / g) for g in range(1, min(n, 32) + 1)}
        heights |= near_root
        heights |= {min(n, c)}
        for bx in heights:
            if not 1 <= bx <= min(n, c):
                continue
            by_max = min(m, c // bx)
            g_min = math.ceil(m / by_max)
            for g in range(g_min, min(m, g_min + 32) + 1):
                candidates.add((bx, math.ceil(m / g)))
    scored = {b: predict_block(n, m, *b, seconds_per_cell, res, symmetric) for b in candidates}
    near = near_best(scored)
    return min(near, key=lambda b: ((b[0] + b[1]) / (b[0] * b[1]), block_tasks(n, m, *b, symmetric)))


def prediction(n: int, m: int, chosen: tuple[int, int], measured: Measured,
               symmetric: bool = False, element_bytes: float = 0.0,
               tree: bool = True) -> Prediction:
    """What `allpairs --predict` prints: square blocks of doubling sides, and the chosen one."""
    shapes = {chosen}
    side = 1
    while side < max(n, m):
        shapes.add((min(side, n), min(side, m)))
        side *= 2
    shapes.add((n, m))
    t, res = measured.seconds_per_cell, measured.resources
    candidates = {}
    for bx, by in shapes:
        seconds = predict_block(n, m, bx, by, t, res, symmetric, element_bytes, tree)
        candidates[(bx, by)] = Candidate(f"{bx}x{by}", bx * by, block_tasks(n, m, bx, by, symmetric),
                                         seconds)
    notes = []
    if res.bandwidth and element_bytes:
        seconds = distribution_seconds(n if symmetric else n + m, element_bytes, res, tree)
        how = "by spanning tree" if tree else "from the master"
        notes.append(f"of which {seconds:.3g} s to send the sets to {res.slots} slots {how}")
    return Prediction(measured, list(candidates.values()), candidates[chosen],
                      x_label="cells per task (x·y)", notes=notes)
