"""Classify: partitions, the vote, classifiers as callables and executables, bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ABENGINE
from hypothesis import given, settings
from hypothesis import strategies as st

import abengine
from abengine.abstractions.classify import partition_rows, vote
from abengine.cli.main import main as abengine_main
from abengine.errors import TaskFailures, UsageError

DIGITS = Path(__file__).resolve().parent.parent / "datasets" / "digits" / "digits.csv"

NEAREST_CENTROID = '''#!{python}
"""Nearest centroid: train.csv (label last) and test.csv in, one label per line out."""
import csv, sys
rows = [r for r in csv.reader(open(sys.argv[-2])) if r]
sums, counts = {{}}, {{}}
for r in rows:
    label, x = r[-1], [float(v) for v in r[:-1]]
    s = sums.setdefault(label, [0.0] * len(x))
    sums[label] = [a + b for a, b in zip(s, x)]
    counts[label] = counts.get(label, 0) + 1
centroids = {{k: [v / counts[k] for v in s] for k, s in sums.items()}}
for r in csv.reader(open(sys.argv[-1])):
    if not r:
        continue
    x = [float(v) for v in r]
    best = min(sorted(centroids), key=lambda k: sum((a - b) ** 2 for a, b in zip(x, centroids[k])))
    print(best)
'''


def nearest_centroid(train_X: np.ndarray, train_y: np.ndarray, test_X: np.ndarray) -> np.ndarray:
    labels = np.unique(train_y)
    centroids = np.array([train_X[train_y == k].mean(axis=0) for k in labels])
    distances = ((test_X[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
    return labels[np.argmin(distances, axis=1)]


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    data = np.loadtxt(DIGITS, delimiter=",", skiprows=1)
    return data[:, :-1], data[:, -1].astype(int)


@pytest.fixture
def csv_files(tmp_path, digits) -> tuple[Path, Path, np.ndarray]:
    """The first 300 digits for training, the next 100 for testing (features only)."""
    X, y = digits
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    np.savetxt(train, np.column_stack([X[:300], y[:300]]), delimiter=",", fmt="%g")
    np.savetxt(test, X[300:400], delimiter=",", fmt="%g")
    return train, test, y[300:400]


@pytest.fixture
def script(tmp_path) -> Path:
    path = tmp_path / "centroid.py"
    path.write_text(NEAREST_CENTROID.format(python=sys.executable))
    path.chmod(0o755)
    return path


# -- partitions and the vote ----------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=80), st.integers(1, 10),
       st.integers(0, 2**32 - 1))
def test_partitions(labels, n, seed):
    y = np.array(labels)
    n = min(n, len(y))
    rng = np.random.default_rng(seed)
    random = partition_rows(y, n, "random", rng)
    assert sorted(np.concatenate(random).tolist()) == list(range(len(y)))  # disjoint cover
    assert max(map(len, random)) - min(map(len, random)) <= 1
    strat = partition_rows(y, n, "stratified", rng)
    assert sorted(np.concatenate(strat).tolist()) == list(range(len(y)))
    assert max(map(len, strat)) - min(map(len, strat)) <= 1
    for label in np.unique(y):  # every part holds its share of each class, +-1
        shares = [int(np.sum(y[p] == label)) for p in strat]
        assert max(shares) - min(shares) <= 1
    boot = partition_rows(y, n, "bootstrap", rng)
    assert len(boot) == n and all(len(p) == len(y) and p.max() < len(y) for p in boot)
    again = partition_rows(y, n, "random", np.random.default_rng(seed))
    first = partition_rows(y, n, "random", np.random.default_rng(seed))
    assert all((a == b).all() for a, b in zip(again, first))  # seeded: reproducible


def test_the_vote_is_the_majority_and_ties_go_to_the_smallest_label():
    votes = np.array([[1, 2, 3, 9],
                      [1, 3, 2, 8],
                      [2, 3, 1, 7]])
    assert vote(votes).tolist() == [1, 3, 1, 7]
    assert vote(np.array([["b", "a"], ["a", "b"]])).tolist() == ["a", "a"]


# -- classifiers -----------------------------------------------------------------------


def test_a_callable_on_arrays_and_the_votes(digits):
    X, y = digits
    labels, votes = abengine.classify(X[1200:], (X[:1200], y[:1200]), nearest_centroid, n=5,
                                      partition="stratified", votes=True, progress=False)
    assert votes.shape == (5, len(X) - 1200) and labels.shape == (len(X) - 1200,)
    assert (labels == vote(votes)).all()
    accuracy = np.mean(labels == y[1200:])
    assert accuracy > 0.85
    # each classifier is nearest centroid on its own part, computed here independently
    parts = partition_rows(y[:1200], 5, "stratified", np.random.default_rng(0))
    for k, rows in enumerate(parts):
        assert (votes[k] == nearest_centroid(X[rows], y[rows], X[1200:])).all()


def test_an_executable_on_csv_files_agrees_with_the_same_callable(csv_files, script, digits):
    train, test, truth = csv_files
    by_program = abengine.classify(test, train, script, n=3, partition="random",
                                   progress=False)
    by_callable = abengine.classify(test, train, nearest_centroid, n=3, partition="random",
                                    progress=False)
    assert (by_program == by_callable).all()
    assert np.mean(by_program == truth) > 0.8


def test_classify_on_work_queue_equals_local(digits):
    X, y = digits
    args = (X[300:360], (X[:300], y[:300]), nearest_centroid)
    local = abengine.classify(*args, n=4, progress=False)
    from abengine.engines import make_engine

    with make_engine("workqueue", workers=2) as engine:
        remote = abengine.classify(*args, n=4, engine=engine, progress=False)
    assert (local == remote).all()


def test_the_cli(csv_files, script, tmp_path, capsys):
    train, test, truth = csv_files
    out, votes = tmp_path / "labels.txt", tmp_path / "votes.txt"
    code = abengine_main(["classify", str(test), str(train), str(script), "-n", "3",
                          "-p", "stratified", "-o", str(out), "--votes", str(votes), "-q"])
    assert code == 0
    labels = np.array([int(v) for v in out.read_text().split()])
    assert len(labels) == 100 and np.mean(labels == truth) > 0.8
    rows = [line.split(",") for line in votes.read_text().splitlines()]
    assert len(rows) == 3 and all(len(r) == 100 for r in rows)
    # TEST with its labels: the accuracy is reported
    labelled = tmp_path / "test-labelled.csv"
    X = np.loadtxt(test, delimiter=",")
    np.savetxt(labelled, np.column_stack([X, truth]), delimiter=",", fmt="%g")
    assert abengine_main(["classify", str(labelled), str(train), str(script), "-n", "3",
                          "--test-labels", "-q"]) == 0
    assert "accuracy of the vote" in capsys.readouterr().err


# -- bad input and failures ---------------------------------------------------------------


def run_cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(ABENGINE), "classify", *argv, "-q"], capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_bad_input_is_one_line_and_exit_2(csv_files, script, tmp_path):
    train, test, _ = csv_files
    wide = tmp_path / "wide.csv"
    wide.write_text("1,2,3\n4,5,6\n")
    no_label = tmp_path / "nolabel.csv"
    no_label.write_text("1\n2\n")
    liar = tmp_path / "liar.sh"
    liar.write_text("#!/bin/sh\necho 1\necho 2\n")
    liar.chmod(0o755)
    cases = [
        ((str(wide), str(train), str(script)), "features"),
        ((str(test), str(no_label), str(script)), "label"),
        ((str(test), str(train), str(script), "-n", "301"), "301"),
        ((str(test), str(train), str(liar), "-n", "2"), "of 2: F gave 2 labels for 100"),
        ((str(test), str(tmp_path / "missing.csv"), str(script)), "missing.csv"),
        ((str(test), str(train), str(script), "-p", "alphabetical"), "partition"),
        ((str(test), str(train), "cosine"), "not a classifier"),
    ]
    for argv, words in cases:
        done = run_cli(*argv)
        assert done.returncode == 2, (argv, done.stderr)
        assert words in done.stderr and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_failing_classifier_is_named_exit_1(csv_files, tmp_path):
    train, test, _ = csv_files
    broken = tmp_path / "broken.sh"
    broken.write_text("#!/bin/sh\necho 'no model for you' >&2\nexit 3\n")
    broken.chmod(0o755)
    done = run_cli(str(test), str(train), str(broken), "-n", "2", "--retries", "0")
    assert done.returncode == 1
    assert "classifier 1 of 2" in done.stderr and "exit code 3" in done.stderr
    assert "no model for you" in done.stderr and "Traceback" not in done.stderr


def test_api_errors_are_usage_errors(digits):
    X, y = digits
    with pytest.raises(UsageError, match="one label per row"):
        abengine.classify(X[:10], (X[:20], y[:19]), nearest_centroid)
    with pytest.raises(TaskFailures, match="classifier"):
        abengine.classify(X[:10], (X[:20], y[:20]), lambda a, b, c: 1 / 0, n=2, retries=0,
                          progress=False)
