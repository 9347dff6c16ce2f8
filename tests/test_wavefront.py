"""Wavefront through the Python API: against plain loops, for every block size, on both
engines; failures, resume from an .h5 or text store, the vectorised block form."""

from __future__ import annotations

import random
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import make_script
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import abengine
from abengine import TaskFailures, UsageError
from abengine.engines.workqueue import WorkQueueEngine


def loop(F, x_boundary, y_boundary) -> list[list]:
    """The reference: a plain double loop over Python objects."""
    R = [[None] * len(y_boundary) for _ in x_boundary]
    for x, v in enumerate(x_boundary):
        R[x][0] = v
    for y, v in enumerate(y_boundary):
        R[0][y] = v
    for x in range(1, len(x_boundary)):
        for y in range(1, len(y_boundary)):
            R[x][y] = F(x, y, R[x - 1][y], R[x][y - 1], R[x - 1][y - 1])
    return R


def add3(x, y, left, below, diag):
    return left + below + diag


def edit_distance(a: str, b: str) -> int:
    """An independent implementation: the textbook DP on one row at a time."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def edit_step(a: str, b: str):
    """F for edit distance: a closure over the two strings (R[x, y] aligns a[:x] with b[:y])."""
    def F(x, y, left, below, diag):
        return min(left + 1, below + 1, diag + (a[x - 1] != b[y - 1]))
    return F


def test_classic_sum_equals_the_double_loop(engine):
    # 10 x 10, R[i, 0] = R[0, i] = i, F = the sum of the three neighbours
    boundary = list(range(11))
    R = abengine.wavefront(add3, boundary, boundary, engine=engine, progress=False)
    expected = loop(add3, boundary, boundary)
    assert R.shape == (11, 11) and R.dtype == np.int64
    assert R.tolist() == expected
    assert R[10, 10] == 10377180


def test_every_block_size_gives_the_same_result_locally(engine):
    xb, yb = list(range(0, 28, 3)), [0, 5, -2, 7, 1, 1, 9, 4]  # 9 x 7 cells
    expected = loop(lambda x, y, lf, bl, dg: (3 * lf + 5 * bl - dg + x * y) % 10007, xb, yb)
    for block in range(1, 10):
        R = abengine.wavefront(lambda x, y, lf, bl, dg: (3 * lf + 5 * bl - dg + x * y) % 10007, xb, yb,
                               block_size=block, engine=engine, progress=False)
        assert R.tolist() == expected, block


def test_every_block_size_gives_the_same_result_on_work_queue():
    n = 4
    boundary = [7 * i for i in range(n + 1)]
    expected = loop(add3, boundary, boundary)
    with WorkQueueEngine(workers=2) as engine:
        for block in range(1, n + 1):
            R = abengine.wavefront(add3, boundary, boundary, block_size=block, engine=engine,
                                   progress=False)
            assert R.tolist() == expected, block


def test_edit_distance_equals_an_independent_implementation(engine):
    rng = random.Random(5)
    a = "".join(rng.choice("ACGT") for _ in range(23))
    b = "".join(rng.choice("ACGT") for _ in range(17))
    R = abengine.wavefront(edit_step(a, b), range(len(a) + 1), range(len(b) + 1),
                           engine=engine, progress=False)
    assert R[len(a), len(b)] == edit_distance(a, b)
    for x in range(0, len(a) + 1, 5):
        for y in range(0, len(b) + 1, 4):
            assert R[x, y] == edit_distance(a[:x], b[:y]), (x, y)


@abengine.vectorized
def edit_block(xs, ys, left, below, corner):
    """The vectorised form: fill a block from its left column, bottom row and corner."""
    a, b = edit_block.strings
    R = np.empty((len(xs) + 1, len(ys) + 1), dtype=np.int64)
    R[0, 0], R[0, 1:], R[1:, 0] = corner, left, below
    for i, x in enumerate(xs, 1):
        for j, y in enumerate(ys, 1):
            R[i, j] = min(R[i - 1, j] + 1, R[i, j - 1] + 1,
                          R[i - 1, j - 1] + (a[x - 1] != b[y - 1]))
    return R[1:, 1:]


def test_block_kernel_equals_the_cell_by_cell_result(engine):
    a, b = "kitten sitting on a mat", "sitting kitten on the mat"
    edit_block.strings = (a, b)
    for block in (1, 4, 7, 30):
        R = abengine.wavefront(edit_block, range(len(a) + 1), range(len(b) + 1), block_size=block,
                               dtype=int, engine=engine, progress=False)
        assert R[len(a), len(b)] == edit_distance(a, b)
        assert R.dtype == np.int64
    R = abengine.wavefront(edit_block, range(len(a) + 1), range(len(b) + 1), engine=engine,
                           progress=False)
    assert R.dtype == np.float64 and R[-1, -1] == edit_distance(a, b)  # kernels: float64 default


def test_an_executable_f_with_numeric_output(tmp_path, engine):
    script = make_script(tmp_path / "sum.sh", """
        echo $(( $(cat $3) + $(cat $4) + $(cat $5) ))
    """)
    R = abengine.wavefront(str(script), range(5), range(4), block_size=2, engine=engine,
                           progress=False)
    assert R.dtype == np.int64
    assert R.tolist() == loop(add3, list(range(5)), list(range(4)))


def test_text_values_stay_text(engine):
    R = abengine.wavefront(lambda x, y, lf, bl, dg: f"{lf[-1]}{bl[:1]}{x}", ["a", "b", "c"],
                           ["a", "z"], engine=engine, progress=False)
    assert R.dtype == object
    assert R.tolist() == loop(lambda x, y, lf, bl, dg: f"{lf[-1]}{bl[:1]}{x}", ["a", "b", "c"],
                              ["a", "z"])


def test_a_failing_cell_is_named_and_nothing_that_depends_on_it_is_computed(engine):
    def picky(x, y, left, below, diag):
        if (x, y) == (3, 4):
            raise ValueError("no value here")
        return left + below + diag

    boundary = list(range(9))
    expected = np.array(loop(add3, boundary, boundary), dtype=float)
    with pytest.raises(TaskFailures) as info:
        abengine.wavefront(picky, boundary, boundary, block_size=3, engine=engine,
                           progress=False)
    failures = info.value.failures
    assert [f.where for f in failures] == ["cell (3, 4)"]
    assert "raised ValueError: no value here" in failures[0].reason
    R = info.value.result
    depends = np.zeros(R.shape, dtype=bool)
    depends[3:, 4:] = True
    assert np.isnan(R[depends]).all()
    np.testing.assert_array_equal(R[~depends], expected[~depends])
    assert info.value.skipped == 4  # blocks from (4, 4), (4, 7), (7, 4), (7, 7): all depend on it


def test_resume_from_an_h5_store_computes_only_the_missing_cells(tmp_path, engine):
    calls = tmp_path / "calls.log"
    flaky = tmp_path / "flaky"

    def F(x, y, left, below, diag):
        with open(calls, "a") as log:
            log.write(f"{x},{y}\n")
        if (x, y) == (5, 2) and flaky.exists():
            raise RuntimeError("flaky")
        return (left + 2 * below + 3 * diag) % 1000

    boundary = list(range(10))
    out = tmp_path / "R.h5"
    flaky.touch()
    with pytest.raises(TaskFailures):
        abengine.wavefront(F, boundary, boundary, output=out, block_size=4, engine=engine,
                           progress=False)
    first = calls.read_text().splitlines()
    assert len(first) == len(set(first)) == 81 - 5 * 8 + 1  # (5, 2) and its dependants: not
    with h5py.File(out, "r") as f:
        assert not f.attrs["complete"]
        assert int(f["done"][1:, 1:].sum()) == 81 - 5 * 8
    flaky.unlink()
    calls.unlink()
    R = abengine.wavefront(F, boundary, boundary, output=out, resume=True, engine=engine,
                           progress=False)
    again = calls.read_text().splitlines()
    assert sorted(again) == sorted(f"{x},{y}" for x in range(5, 10) for y in range(2, 10))
    np.testing.assert_array_equal(R, np.array(loop(F, boundary, boundary), dtype=float))
    with h5py.File(out, "r") as f:
        assert f.attrs["complete"]
        np.testing.assert_array_equal(f["result"][...], R)


def test_resume_refuses_another_function_or_boundary(tmp_path, engine):
    out = tmp_path / "R.h5"
    abengine.wavefront(add3, range(4), range(4), output=out, engine=engine, progress=False)
    with pytest.raises(UsageError, match="different function"):
        abengine.wavefront(lambda x, y, lf, bl, dg: 0, range(4), range(4), output=out, resume=True,
                           engine=engine, progress=False)
    with pytest.raises(UsageError, match="different boundaries"):
        abengine.wavefront(add3, [0, 1, 2, 4], range(4), output=out, resume=True,
                           engine=engine, progress=False)


def test_text_output_holds_the_classic_lines_and_resumes(tmp_path, engine):
    out = tmp_path / "R.txt"
    R = abengine.wavefront(add3, range(4), range(3), output=out, engine=engine, progress=False)
    lines = sorted(out.read_text().splitlines())
    assert lines == sorted(f"{x} {y} {R[x, y]}" for x in range(1, 4) for y in range(1, 3))
    out.write_text("".join(line + "\n" for line in lines[:3]) + "3 2 12")  # torn last line
    again = abengine.wavefront(add3, range(4), range(3), output=out, resume=True, engine=engine,
                               progress=False)
    np.testing.assert_array_equal(again, R)
    assert sorted(out.read_text().splitlines()) == lines


def test_predict_samples_f_and_runs_nothing_else(tmp_path, engine):
    prediction = abengine.wavefront(add3, range(101), range(81), predict=True, engine=engine)
    assert prediction.measured.sampled_cells >= 1
    assert prediction.measured.resources.slots == 2
    assert prediction.lines()[-1] == (f"block_size={prediction.chosen.label} "
                                      f"predicted_seconds={prediction.chosen.seconds:.3f}")
    given = abengine.wavefront(add3, range(101), range(81), predict=True, engine=engine,
                               seconds_per_cell=0.01, block_size=7)
    assert given.chosen.label == "7" and given.measured.sampled_cells == 0


@pytest.mark.parametrize("args, options, message", [
    (([0, 1], [1, 2]), {}, "x_boundary[0] and y_boundary[0] are both R[0, 0] but differ"),
    (([0], [0, 1]), {}, "x_boundary needs at least 2 values"),
    (([0, 1], "01"), {}, "y_boundary must be a sequence"),
    ((np.zeros((2, 2)), [0, 1]), {}, "x_boundary must be one-dimensional"),
    (([0, 1], [0, 1]), {"block_size": 0}, "block size must be a positive integer"),
    (([0, 1], [0, 1]), {"block_size": "big"}, "block size must be a positive integer"),
    (([0, 1], [0, 1]), {"timeout": 3}, "timeout applies to an executable F"),
    (([0, 1], [0, 1]), {"seconds_per_cell": -1}, "seconds per cell must be a positive number"),
])
def test_bad_arguments_are_usage_errors(args, options, message):
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("]", r"\]")):
        abengine.Wavefront(add3, *args, **options)


def test_builtins_and_missing_programs_are_refused():
    with pytest.raises(UsageError, match="All-Pairs builtin"):
        abengine.Wavefront("cosine", [0, 1], [0, 1])
    with pytest.raises(UsageError, match="not found"):
        abengine.Wavefront("./no-such-program", [0, 1], [0, 1])


def test_resume_needs_an_output(engine):
    with pytest.raises(UsageError, match="needs an output"):
        abengine.wavefront(add3, [0, 1], [0, 1], resume=True, engine=engine)


@settings(max_examples=25, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.integers(1, 7), st.integers(1, 7), st.integers(1, 8), st.integers(0, 2**32 - 1))
def test_any_blocking_equals_the_loop(engine, X, Y, block, seed):
    rng = np.random.default_rng(seed)
    xb = rng.integers(-50, 50, X + 1).tolist()
    yb = [xb[0], *rng.integers(-50, 50, Y).tolist()]

    def F(x, y, left, below, diag):
        return (left * 3 + below * 5 + diag * 7 + x - y) % 1009

    R = abengine.wavefront(F, xb, yb, block_size=block, engine=engine, progress=False)
    assert R.tolist() == loop(F, xb, yb)


def test_api_exports():
    assert abengine.Wavefront is not None and callable(abengine.wavefront)
    assert Path(abengine.__file__).exists()
