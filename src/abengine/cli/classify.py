"""`abengine classify TEST TRAIN FUNCTION -n N -p METHOD [-o OUT]`: train N, let them vote."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ..abstractions.classify import PARTITIONS, Classify, load_table
from ..errors import UsageError
from .common import add_engine_options, engine_from, extra_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "classify", help="train N classifiers on parts of TRAIN and let them vote on TEST",
        description="Train N classifiers in parallel, each on one part of TRAIN (CSV, the label "
        "in the last column), and label the rows of TEST (CSV, features only) by their "
        "majority vote (a tie goes to the label that sorts first). FUNCTION is an executable "
        "called `FUNCTION [EXTRA_ARGS] train.csv test.csv` that prints one label per line, or "
        "a Python module:function F(train_X, train_y, test_X) -> labels. Prints one label per "
        "line, in TEST's order.")
    p.add_argument("test", metavar="TEST")
    p.add_argument("train", metavar="TRAIN")
    p.add_argument("function", metavar="FUNCTION")
    p.add_argument("-n", "--classifiers", type=int, default=9, metavar="N",
                   help="how many classifiers (default: 9)")
    p.add_argument("-p", "--partition", default="bootstrap", choices=PARTITIONS,
                   help="how TRAIN is cut: random (disjoint parts), stratified (disjoint, "
                        "keeping each class's share) or bootstrap (N samples with replacement, "
                        "the default)")
    p.add_argument("--seed", type=int, default=0, help="seed of the partition (default: 0)")
    p.add_argument("-e", "--extra-args", default="", metavar="ARGS",
                   help="extra arguments for an executable FUNCTION, before the file names")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="write the labels to FILE (.txt one per line, or .npy) instead of stdout")
    p.add_argument("--votes", metavar="FILE",
                   help="also write every classifier's labels: one row per classifier "
                        "(.txt, comma-separated, or .npy)")
    p.add_argument("--test-labels", action="store_true",
                   help="TEST's last column is its true label: report the accuracy of the vote "
                        "and of each classifier on stderr")
    add_engine_options(p)


def run(args: argparse.Namespace) -> int:
    test = load_table(args.test, labelled=args.test_labels, what="testing set")
    for path in (args.output, args.votes):
        if path and Path(path).suffix not in (".txt", ".npy"):
            raise UsageError(f"{path}: write .txt or .npy")
    job = Classify(test.X, args.train, args.function, n=args.classifiers,
                   partition=args.partition, seed=args.seed,
                   extra_args=extra_args(args.extra_args))
    job.test.source = test.source
    with engine_from(args) as engine:
        labels, votes = job.run(engine=engine, retries=args.retries, progress=not args.quiet)
    _write(args.output, labels[:, None])
    if args.votes:
        _write(args.votes, votes)
    if test.y is not None:
        truth = test.y.astype(str)
        each = [float(np.mean(v.astype(str) == truth)) for v in votes]
        print(f"abengine classify: accuracy of the vote {np.mean(labels.astype(str) == truth):.4f}"
              f"; of the {len(votes)} classifiers {min(each):.4f} to {max(each):.4f}",
              file=sys.stderr)
    return 0


def _write(path: str | None, rows: np.ndarray) -> None:
    if path and path.endswith(".npy"):
        np.save(path, rows[:, 0] if rows.shape[1] == 1 else rows)
        return
    lines = "".join(",".join(str(v) for v in row) + "\n" for row in rows)
    if path:
        Path(path).write_text(lines)
    else:
        sys.stdout.write(lines)
