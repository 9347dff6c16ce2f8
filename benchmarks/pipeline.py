"""The images → features → similarity → labels pipeline, composed against its stages run apart.

    .venv/bin/python benchmarks/pipeline.py [--repeats 3] [--cores 2]

Composed: examples/pipeline.py as users write it (a lazy Map feeding All-Pairs
in one task graph, then Classify). Apart: the same three stages, each run to
completion before the next starts, on the same engine. Memoisation is off in
both so each run computes everything. Runs alternate, medians are compared;
the target is composed ≤ 1.3 × the sum of the stages. The last line reads
`composed_s=… stages_s=… ratio=…`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))
from pipeline import features, nearest_neighbour, pipeline, shifted_cosine, split  # noqa: E402

import abengine  # noqa: E402


def apart(directory: Path, prototypes: int, engine: abengine.Engine) -> dict[str, float]:
    """Each stage on its own, one after the other: seconds per stage."""
    images = [str(directory / n) for n in (directory / "digits.list").read_text().split()]
    truth = np.loadtxt(directory / "labels.txt", dtype=int)
    protos, train, test = split(len(images), prototypes)
    times = {}
    start = time.perf_counter()
    X = abengine.map(images, features, engine=engine, progress=False)
    times["map"] = time.perf_counter() - start
    start = time.perf_counter()
    S = abengine.allpairs(X, X[protos], shifted_cosine, engine=engine, progress=False)
    times["allpairs"] = time.perf_counter() - start
    start = time.perf_counter()
    labels = abengine.classify(S[test], (S[train], truth[train]), nearest_neighbour, n=9,
                               engine=engine, progress=False)
    times["classify"] = time.perf_counter() - start
    times["accuracy"] = float(np.mean(labels == truth[test]))
    return times


def composed(directory: Path, prototypes: int, engine: abengine.Engine) -> tuple[float, float]:
    start = time.perf_counter()
    _, labels, truth = pipeline(directory, prototypes, engine=engine, memo=False,
                                progress=False)
    return time.perf_counter() - start, float(np.mean(labels == truth))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--prototypes", type=int, default=100)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="abengine-bench-digits-"))
    subprocess.run([sys.executable, str(ROOT / "datasets" / "generate.py"), "digits-images",
                    str(directory)], check=True, stdout=subprocess.DEVNULL)
    together, stages, parts = [], [], []
    with abengine.LocalEngine(args.cores) as engine:
        for _ in range(args.repeats):
            seconds, accuracy = composed(directory, args.prototypes, engine)
            together.append(seconds)
            times = apart(directory, args.prototypes, engine)
            parts.append(times)
            stages.append(times["map"] + times["allpairs"] + times["classify"])
    c, s = statistics.median(together), statistics.median(stages)
    for name in ("map", "allpairs", "classify"):
        print(f"stage {name}: {statistics.median(p[name] for p in parts):.2f} s")
    print(f"accuracy composed {accuracy:.3f}, apart {parts[-1]['accuracy']:.3f}; "
          f"{args.repeats} repeats, {args.cores} cores")
    print(f"composed_s={c:.2f} stages_s={s:.2f} ratio={c / s:.2f}")


if __name__ == "__main__":
    main()
