"""`make demo`: an All-Pairs similarity matrix of real handwritten digits, on every core.

1. Writes the 1797 digit images that ship in datasets/ as PGM files and a list file.
2. Runs the `allpairs` command with a builtin (cosine, vectorised) on all of
   them, and the Python API with a plain Python function (shift-tolerant
   cosine, one pair at a time) on a subset; both symmetric, both to .h5.
3. Prints a short summary — how well each similarity finds a digit's nearest
   neighbour of the same class — and where the matrices and a picture went.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "datasets"))
sys.path.insert(0, str(ROOT / "examples"))

import generate  # noqa: E402
from digit_similarity import shifted_cosine  # noqa: E402

import abengine  # noqa: E402

OUT = ROOT / "demo-output"
#: Digits compared by the (slower) per-pair Python function.
PYTHON_SUBSET = 900


def nearest_neighbour_accuracy(S: np.ndarray, labels: np.ndarray) -> float:
    """Share of digits whose most similar other digit has the same label."""
    S = S.copy()
    np.fill_diagonal(S, -np.inf)
    return float(np.mean(labels[np.argmax(S, axis=1)] == labels))


def picture(S: np.ndarray, labels: np.ndarray, path: Path) -> Path | None:
    """The matrix sorted by label: bright squares on the diagonal mean classes separate."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    order = np.argsort(labels, kind="stable")
    fig, ax = plt.subplots(figsize=(6, 5.2), dpi=110)
    image = ax.imshow(S[np.ix_(order, order)], cmap="magma", interpolation="nearest")
    ticks = [np.searchsorted(labels[order], d) for d in range(10)]
    ax.set_xticks(ticks, [str(d) for d in range(10)])
    ax.set_yticks(ticks, [str(d) for d in range(10)])
    ax.set_title("All-Pairs cosine similarity of 1797 digits, sorted by label")
    fig.colorbar(image, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def main() -> int:
    OUT.mkdir(exist_ok=True)
    list_file = generate.write_digit_images(OUT / "digits")
    labels = np.loadtxt(OUT / "digits" / "labels.txt", dtype=int)
    cores = os.cpu_count()
    print(f"{len(labels)} handwritten digits written as PGM images, listed in {list_file}")

    cosine_h5 = OUT / "digits_cosine.h5"
    command = [str(Path(sys.executable).parent / "allpairs"), str(list_file), str(list_file),
               "cosine", "--symmetric", "-o", str(cosine_h5)]
    shown = " ".join([Path(command[0]).name, *(os.path.relpath(c) for c in command[1:3]),
                      *command[3:5], "-o", os.path.relpath(cosine_h5)])
    print(f"\n1) the command line, builtin cosine (vectorised), on {cores} cores:\n   $ {shown}")
    start = time.perf_counter()
    subprocess.run(command, check=True)
    print(f"   {len(labels) ** 2:,} cells in {time.perf_counter() - start:.2f} s")
    with h5py.File(cosine_h5) as f:
        cosine = f["result"][...]

    n = PYTHON_SUBSET
    print(f"\n2) the Python API with a plain Python function, one pair at a time, on {cores} "
          f"cores,\n   first {n} digits (progress bar on stderr):")
    images = np.stack([abengine.sets.read_vector(p)
                       for p in abengine.sets.load_set(str(list_file)).paths[:n]])
    shifted_h5 = OUT / "digits_shifted.h5"
    start = time.perf_counter()
    abengine.allpairs(images, images, shifted_cosine, symmetric=True, output=shifted_h5)
    seconds = time.perf_counter() - start
    with h5py.File(shifted_h5) as f:
        shifted = f["result"][...]
    cells = n * (n + 1) // 2
    print(f"   {cells:,} comparisons in {seconds:.1f} s ({cells / seconds:,.0f} per second)")

    print(f"\nnearest-neighbour accuracy on the first {n} digits "
          "(is the most similar other digit of the same class?)")
    subset = labels[:n]
    print(f"   cosine:                {nearest_neighbour_accuracy(cosine[:n, :n], subset):.1%}")
    print(f"   shift-tolerant cosine: {nearest_neighbour_accuracy(shifted, subset):.1%}")
    print(f"\nmatrices: {os.path.relpath(cosine_h5)} and {os.path.relpath(shifted_h5)} "
          "(HDF5 dataset 'result')")
    png = picture(cosine, labels, OUT / "digits_cosine.png")
    if png:
        print(f"picture:  {os.path.relpath(png)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
