"""Classify: N classifiers trained in parallel on parts of a training set, then a vote.

    labels = abengine.classify(test_X, (train_X, train_y), F, n=9, partition="bootstrap")

The training set is cut into N parts (`random`: disjoint, `stratified`:
disjoint and keeping each class's share, `bootstrap`: N samples drawn with
replacement), one task per part trains F and labels the whole testing set,
and the labels are combined by majority vote. Ties go to the label that
sorts first, so the same inputs always give the same answer.

F is a callable `F(train_X, train_y, test_X) -> labels` (for instance a
few lines around a scikit-learn estimator), or an executable run as
`F [EXTRA_ARGS] train.csv test.csv` that prints one label per line. The
parts and the testing set travel to the tasks as files: on Work Queue the
testing set crosses the wire once per worker, however many classifiers.
"""

from __future__ import annotations

import csv
import math
import shlex
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np

from ..engines import Engine, make_engine
from ..errors import Failure, TaskFailures, UsageError
from ..functions import Function, resolve_function
from ..graph import File, PythonTask, Task, TaskGraph, TaskResult, current_sandbox
from ..progress import progress_bar
from .spread import spread_inputs

PARTITIONS = ("random", "stratified", "bootstrap")


@dataclass
class Table:
    """Feature rows, and their labels when the table has them."""

    X: np.ndarray
    y: np.ndarray | None
    source: str


# -- reading the data --------------------------------------------------------------


def load_table(data: Any, *, labelled: bool, what: str) -> Table:
    """A table from `(X, y)`, an array, or a CSV path (a header line is skipped).

    `labelled`: the table carries labels (a CSV's last column, or y in (X, y)).
    """
    if isinstance(data, (str, Path)):
        return _read_csv(Path(data), labelled, what)
    if labelled:
        if not (isinstance(data, (tuple, list)) and len(data) == 2):
            raise UsageError(f"{what}: give (X, y) arrays or a CSV file whose last column is "
                             "the label")
        X, y = _matrix(data[0], what), np.asarray(data[1])
        if y.dtype.kind == "O":  # mixed Python objects: compare them as text
            y = y.astype(str)
        if y.ndim != 1 or len(y) != len(X):
            raise UsageError(f"{what}: y must hold one label per row of X ({len(X)} rows), "
                             f"not shape {y.shape}")
        return Table(X, y, what)
    return Table(_matrix(data, what), None, what)


def _matrix(data: Any, what: str) -> np.ndarray:
    try:
        X = np.asarray(data, dtype=float)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{what}: features must be numbers: {exc}") from None
    if X.ndim != 2 or not X.size:
        raise UsageError(f"{what}: features must be a non-empty 2-D array, not shape {X.shape}")
    return X


def _read_csv(path: Path, labelled: bool, what: str) -> Table:
    try:
        with open(path, newline="") as f:
            rows = [row for row in csv.reader(f) if row]
    except OSError as exc:
        raise UsageError(f"{what} {path}: {exc.strerror}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"{what} {path}: not a CSV text file ({exc})") from None
    first = 1 if rows and not _numbers(rows[0][:-1] if labelled else rows[0]) else 0
    rows = rows[first:]
    if not rows:
        raise UsageError(f"{what} {path}: no data rows")
    width = len(rows[0])
    for number, row in enumerate(rows, start=first + 1):
        if len(row) != width:
            raise UsageError(f"{what} {path}, line {number}: {len(row)} columns, the first "
                             f"row has {width}")
    if labelled and width < 2:
        raise UsageError(f"{what} {path}: needs feature columns and a label column (last)")
    features = [row[:-1] for row in rows] if labelled else rows
    try:
        X = np.array(features, dtype=float)
    except ValueError:
        bad = next(i for i, row in enumerate(features) if not _numbers(row))
        raise UsageError(f"{what} {path}, line {bad + first + 1}: features must be "
                         "numbers") from None
    y = _labels([row[-1].strip() for row in rows]) if labelled else None
    return Table(X, y, f"{what} {path}")


def _numbers(fields: Sequence[str]) -> bool:
    try:
        for field in fields:
            float(field)
    except ValueError:
        return False
    return True


def _labels(texts: list[str]) -> np.ndarray:
    """Labels as integers when they all are, else as strings."""
    try:
        return np.array([int(t) for t in texts])
    except ValueError:
        return np.array(texts)


# -- the abstraction --------------------------------------------------------------


class Classify:
    """N classifiers of F, each trained on one part of `train`, voting on `test`."""

    def __init__(self, test: Any, train: Any, F: Any, *, n: int = 9,
                 partition: str = "bootstrap", seed: int = 0,
                 extra_args: str | Sequence[str] = ()) -> None:
        self.train = load_table(train, labelled=True, what="training set")
        self.test = load_table(test, labelled=False, what="testing set")
        train_width, test_width = self.train.X.shape[1], self.test.X.shape[1]
        if train_width != test_width:
            raise UsageError(f"{self.test.source} has {test_width} features but "
                             f"{self.train.source} has {train_width} (plus its label)")
        if partition not in PARTITIONS:
            raise UsageError(f"unknown partition {partition!r} (use {', '.join(PARTITIONS)})")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise UsageError(f"n must be a positive number of classifiers, not {n!r}")
        if n > len(self.train.X):
            raise UsageError(f"n = {n} classifiers but the training set has only "
                             f"{len(self.train.X)} rows")
        self.n, self.partition, self.seed = int(n), partition, seed
        self.function: Function = resolve_function(F, extra_args)
        if self.function.kind not in ("callable", "executable"):
            raise UsageError(f"F: {self.function.name} is not a classifier; give a callable "
                             "F(train_X, train_y, test_X) or an executable F train.csv test.csv")

    def parts(self) -> list[np.ndarray]:
        """Row indices of the training set for each classifier (seeded: reproducible)."""
        return partition_rows(self.train.y, self.n, self.partition,
                              np.random.default_rng(self.seed))

    def run(self, *, engine: str | Engine | None = None, cores: int | None = None,
            retries: int = 2, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(voted labels, votes of each classifier: an n × len(test) array)."""
        own_engine = not isinstance(engine, Engine)
        eng = make_engine(engine, cores)
        scratch = Path(tempfile.mkdtemp(prefix="abengine-classify-"))
        try:
            graph = self.plan(scratch)
            votes = self._execute(eng, graph, scratch, retries, progress)
        finally:
            if own_engine:
                eng.shutdown()
            shutil.rmtree(scratch, ignore_errors=True)
        return vote(votes), votes

    # -- planning ----------------------------------------------------------------
    def plan(self, scratch: Path) -> TaskGraph:
        """One task per classifier; its part of the training set and the testing set as files."""
        graph = TaskGraph()
        executable = self.function.kind == "executable"
        test_file = scratch / ("test.csv" if executable else "test.npy")
        _write(test_file, self.test.X, None)
        for k, rows in enumerate(self.parts()):
            train_file = scratch / (f"train-{k}.csv" if executable else f"train-{k}.npz")
            _write(train_file, self.train.X[rows], self.train.y[rows])
            inputs = [File(train_file, train_file.name[:5] + train_file.suffix),
                      File(test_file, test_file.name)]
            if executable:
                task = self._command_task(k, inputs, scratch)
            else:
                task = PythonTask(fn=_train_and_label, args=(self.function.pickled,),
                                  inputs=inputs)
            task.tag = k
            graph.add(task)
        return graph

    def _command_task(self, k: int, inputs: list[File], scratch: Path) -> Task:
        f = self.function
        program = f.executable
        if f.ship:
            inputs.append(File(Path(f.executable), Path(f.executable).name))
            program = "./" + Path(f.executable).name
        argv = " ".join(shlex.quote(a) for a in [program, *f.extra_args, "train.csv", "test.csv"])
        task = Task(command=f"{argv} > labels.txt", inputs=inputs)
        task.add_output("labels.txt", scratch / f"labels-{k}.txt")
        return task

    # -- running -----------------------------------------------------------------
    def _execute(self, engine: Engine, graph: TaskGraph, scratch: Path, retries: int,
                 progress: bool) -> np.ndarray:
        labels: dict[int, np.ndarray] = {}
        bar = progress_bar(self.n, enabled=progress)

        def collect(task: Task, result: TaskResult) -> None:
            labels[task.tag] = self._labels_of(task, result, scratch)
            bar.update(1)

        spread_inputs(engine, graph)  # the test set and F: read by every classifier
        try:
            report = engine.run(graph, collect, retries=retries)
        finally:
            bar.close()
        if report.failed:
            failures = [Failure(f"classifier {task.tag + 1} of {self.n}",
                                f"{tries[-1].error} (after {len(tries)} attempts)",
                                tries[-1].stderr)
                        for task, tries in report.failed.items()]
            raise TaskFailures(failures)
        return np.array([labels[k] for k in range(self.n)])

    def _labels_of(self, task: Task, result: TaskResult, scratch: Path) -> np.ndarray:
        if isinstance(task, PythonTask):
            got = np.asarray(result.value)
            if got.ndim != 1:
                got = got.reshape(-1) if got.size == len(self.test.X) else got
        else:
            text = (scratch / f"labels-{task.tag}.txt").read_text(errors="replace")
            got = _labels([line.strip() for line in text.splitlines() if line.strip()])
        if got.ndim != 1 or len(got) != len(self.test.X):
            raise UsageError(f"classifier {task.tag + 1} of {self.n}: F gave {got.size} labels "
                             f"for {len(self.test.X)} testing rows (one label per row, in order)")
        return got


def partition_rows(y: np.ndarray, n: int, method: str, rng: np.random.Generator
                   ) -> list[np.ndarray]:
    """Training-row indices for each of `n` classifiers."""
    m = len(y)
    if method == "bootstrap":
        return [np.sort(rng.integers(0, m, m)) for _ in range(n)]
    if method == "random":
        return [np.sort(part) for part in np.array_split(rng.permutation(m), n)]
    # stratified: deal each class's rows round-robin, continuing where the last class
    # stopped, so every part keeps the class shares and the part sizes differ by at most 1
    parts: list[list[int]] = [[] for _ in range(n)]
    dealt = 0
    for label in np.unique(y):
        for row in rng.permutation(np.flatnonzero(y == label)):
            parts[dealt % n].append(int(row))
            dealt += 1
    return [np.sort(np.array(p, dtype=int)) for p in parts]


def vote(votes: np.ndarray) -> np.ndarray:
    """The most frequent label in each column; a tie goes to the label that sorts first."""
    values, codes = np.unique(votes, return_inverse=True)
    codes = codes.reshape(votes.shape)
    counts = np.zeros((len(values), votes.shape[1]), dtype=np.int64)
    np.add.at(counts, (codes, np.arange(votes.shape[1])[None, :].repeat(len(votes), 0)), 1)
    return values[np.argmax(counts, axis=0)]  # argmax takes the first (smallest) on ties


def _write(path: Path, X: np.ndarray, y: np.ndarray | None) -> None:
    if path.suffix == ".csv":
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            for k, row in enumerate(X):
                writer.writerow([_short(v) for v in row] + ([y[k]] if y is not None else []))
    elif y is None:
        np.save(path, X)
    else:
        np.savez(path, X=X, y=y)


def _short(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and math.isfinite(value) else repr(value)


def _train_and_label(pickled: bytes) -> np.ndarray:
    """Task body: train F on this task's part, label the testing set."""
    box = current_sandbox()
    part = np.load(box / "train.npz", allow_pickle=False)
    test = np.load(box / "test.npy", allow_pickle=False)
    F = cloudpickle.loads(pickled)
    return np.asarray(F(part["X"], part["y"], test))


def classify(test: Any, train: Any, F: Any, n: int = 9, partition: str = "bootstrap", *,
             seed: int = 0, extra_args: str | Sequence[str] = (),
             engine: str | Engine | None = None, cores: int | None = None, retries: int = 2,
             progress: bool = True, votes: bool = False) -> Any:
    """Labels for the rows of `test` by the vote of `n` classifiers trained in parallel.

    `train`: `(X, y)` or a CSV path (label in the last column); `test`: an
    array of feature rows or a CSV path. `votes=True` returns `(labels, votes)`
    with each classifier's labels as the rows of `votes`.
    """
    labels, each = Classify(test, train, F, n=n, partition=partition, seed=seed,
                            extra_args=extra_args).run(engine=engine, cores=cores,
                                                       retries=retries, progress=progress)
    return (labels, each) if votes else labels
