"""Edit distance of two DNA sequences with Wavefront, cell by cell and as block kernels.

    python examples/edit_distance.py [LENGTH]

R[x, y] is the edit distance between the first x letters of one sequence and
the first y of the other; each cell needs its left, lower and diagonal
neighbours, so the cells of one anti-diagonal run at once. The script prints
the model's view (F timed on the first cells), runs the per-cell F with the
block size the model chose, runs a vectorised block kernel, and checks both
against a plain dynamic programme.
"""

from __future__ import annotations

import sys
import time

import numpy as np

import abengine


def sequences(length: int, seed: int = 0) -> tuple[str, str]:
    """Two related sequences: the second is the first with ~10% of its letters mutated."""
    rng = np.random.default_rng(seed)
    a = rng.choice(list("ACGT"), length)
    b = a.copy()
    mutate = rng.random(length) < 0.1
    b[mutate] = rng.choice(list("ACGT"), int(mutate.sum()))
    return "".join(a), "".join(b)


def plain(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def main() -> None:
    length = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    a, b = sequences(length)

    def step(x, y, left, below, diag):  # a closure: the strings travel with it
        return min(left + 1, below + 1, diag + (a[x - 1] != b[y - 1]))

    @abengine.vectorized
    def block(xs, ys, left, below, corner):  # a whole block from its edges, row by row
        A = np.frombuffer(a.encode(), np.uint8)[xs - 1]
        B = np.frombuffer(b.encode(), np.uint8)[ys - 1]
        out = np.empty((len(xs), len(ys)), dtype=np.int64)
        prev = np.concatenate(([corner], below)).astype(np.int64)  # the row y - 1
        for j in range(len(ys)):
            diag = prev[:-1] + (B[j] != A)
            up = prev[1:] + 1
            best = np.minimum(diag, up)
            col = left[j]  # a running minimum carries the "left + 1" along the row
            for i in range(len(xs)):
                col = min(best[i], col + 1)
                out[i, j] = col
            prev = np.concatenate(([left[j]], out[:, j]))
        return out

    boundary_a, boundary_b = range(len(a) + 1), range(len(b) + 1)
    with abengine.LocalEngine() as engine:
        prediction = abengine.wavefront(step, boundary_a, boundary_b, predict=True,
                                        engine=engine)
        print("\n".join(prediction.lines()))
        start = time.perf_counter()
        R = abengine.wavefront(step, boundary_a, boundary_b, engine=engine, progress=False)
        cells = time.perf_counter() - start
        start = time.perf_counter()
        K = abengine.wavefront(block, boundary_a, boundary_b, dtype=int, engine=engine,
                               progress=False)
        kernel = time.perf_counter() - start
    expected = plain(a, b)
    print(f"edit distance {R[-1, -1]} (cell by cell, {cells:.2f} s), {K[-1, -1]} (block "
          f"kernel, {kernel:.2f} s); a plain loop says {expected}")
    assert R[-1, -1] == K[-1, -1] == expected


if __name__ == "__main__":
    main()
