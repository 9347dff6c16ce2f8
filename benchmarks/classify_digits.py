"""Classify on the handwritten digits: 9 bootstrap-trained decision trees against one.

The 1797 UCI digits (datasets/digits/digits.csv) are split by a seeded
stratified shuffle into 1200 training and 597 testing rows. One
scikit-learn `DecisionTreeClassifier` is trained on all 1200 rows; then
`abengine.classify` trains 9 such trees on bootstrap samples in parallel
and lets them vote. Accuracy on the testing rows for each of several splits
(seeds), and the median. Target: the vote beats the single tree.

    python benchmarks/classify_digits.py             # 7 splits, local engine
    python benchmarks/classify_digits.py --engine workqueue --workers 2

Needs scikit-learn (`pip install scikit-learn`, or the `bench` extra).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from _common import print_machine, summary, table

import abengine
from abengine.engines import make_engine

DIGITS = Path(__file__).resolve().parent.parent / "datasets" / "digits" / "digits.csv"


def tree(train_X: np.ndarray, train_y: np.ndarray, test_X: np.ndarray) -> np.ndarray:
    from sklearn.tree import DecisionTreeClassifier

    return DecisionTreeClassifier(random_state=0).fit(train_X, train_y).predict(test_X)


def split(y: np.ndarray, seed: int, train_rows: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(y))
    train, test = train_test_split(rows, train_size=train_rows, stratify=y, random_state=seed)
    return train, test


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--splits", type=int, default=7)
    p.add_argument("--trees", type=int, default=9)
    p.add_argument("--engine", default="local", choices=["local", "workqueue"])
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    try:
        import sklearn
    except ImportError:
        print("# SKIPPED: needs scikit-learn (pip install scikit-learn)")
        return 0
    print_machine()
    print(f"# scikit-learn {sklearn.__version__}; {args.trees} bootstrap trees vs one tree; "
          f"{args.splits} stratified splits 1200/597; engine {args.engine}")
    data = np.loadtxt(DIGITS, delimiter=",", skiprows=1)
    X, y = data[:, :-1], data[:, -1].astype(int)
    rows = []
    workers = {"workers": args.workers} if args.engine == "workqueue" else {}
    with make_engine(args.engine, **workers) as engine:
        for seed in range(args.splits):
            train, test = split(y, seed, 1200)
            one = np.mean(tree(X[train], y[train], X[test]) == y[test])
            start = time.perf_counter()
            voted, votes = abengine.classify(X[test], (X[train], y[train]), tree, n=args.trees,
                                             partition="bootstrap", seed=seed, engine=engine,
                                             votes=True, progress=False)
            seconds = time.perf_counter() - start
            each = [np.mean(v == y[test]) for v in votes]
            rows.append([seed, float(one), float(np.mean(voted == y[test])),
                         float(statistics.median(each)), seconds])
    print(table(["split", "one tree", f"vote of {args.trees}", "median bootstrap tree",
                 "classify s"], rows))
    one, vote = statistics.median(r[1] for r in rows), statistics.median(r[2] for r in rows)
    wins = sum(r[2] > r[1] for r in rows)
    met = vote > one and wins == len(rows)
    print(f"# median accuracy: one tree {one:.4f}, vote {vote:.4f}; the vote wins "
          f"{wins} of {len(rows)} splits (target: the vote beats one tree: "
          f"{'met' if met else 'MISSED'})")
    print(summary(one_tree=round(one, 4), vote=round(vote, 4), wins=wins, splits=len(rows),
                  trees=args.trees, target="met" if met else "missed"))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
