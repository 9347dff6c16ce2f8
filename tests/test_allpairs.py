"""abengine.allpairs against a plain double loop, for every kind of F and output."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import list_names, list_paths, make_script, naive, write_numbered, write_sized
from scipy.spatial.distance import cdist

import abengine
from abengine import Failure, TaskFailures, UsageError

RNG = np.random.default_rng(11)
X = RNG.normal(size=(7, 5))
Y = RNG.normal(size=(6, 5))


def file_size(path) -> int:
    return os.path.getsize(path)


# -- Python callables -----------------------------------------------------------------------


def test_lambda_on_arrays_equals_double_loop(engine):
    f = lambda a, b: float(np.abs(a - b).max() + a[0] * b[1])  # noqa: E731
    for block in [(1, 1), (2, 3), (7, 6), 5]:
        r = abengine.allpairs(X, Y, f, block=block, progress=False, engine=engine)
        np.testing.assert_array_equal(r, naive(X, Y, f))


def test_closure_with_its_own_engine():
    offset = 0.25
    table = {"scale": 3.0}

    def f(a, b):  # captures local state: must travel to the workers by value
        return float(a @ b) * table["scale"] + offset

    r = abengine.allpairs(X, Y, f, block=(3, 3), progress=False, cores=2)
    np.testing.assert_allclose(r, naive(X, Y, f), rtol=0, atol=0)


def test_callable_with_a_block_chosen_by_the_model(engine):
    f = lambda a, b: float(a.sum() - 2 * b.sum())  # noqa: E731
    r = abengine.allpairs(X, Y, f, progress=False, engine=engine)
    np.testing.assert_allclose(r, naive(X, Y, f), rtol=1e-12)


def test_callable_on_files_gets_paths(numbered, engine):
    def f(a, b):
        return int(Path(a).read_text()) * 10 + int(Path(b).read_text())

    r = abengine.allpairs(str(numbered), str(numbered), f, block=(4, 2), progress=False,
                          engine=engine)
    n = len(list_names(numbered))
    np.testing.assert_array_equal(r, [[i * 10 + j for j in range(n)] for i in range(n)])


def test_vectorized_callable(engine):
    kernel = abengine.vectorized(lambda A, B: A @ B.T + A[:, :1])
    for block in [(1, 1), (3, 4), None]:
        r = abengine.allpairs(X, Y, kernel, block=block, progress=False, engine=engine)
        np.testing.assert_allclose(r, X @ Y.T + X[:, :1], rtol=1e-12)
    r = abengine.allpairs(X, Y, lambda A, B: cdist(A, B, "chebyshev"), vectorized=True,
                          block=(2, 5), progress=False, engine=engine)
    np.testing.assert_allclose(r, cdist(X, Y, "chebyshev"), rtol=1e-12)


def test_vectorized_callable_returning_the_wrong_shape_fails_its_blocks(engine):
    bad = abengine.vectorized(lambda A, B: A @ B.T[:, :1])
    with pytest.raises(TaskFailures) as info:
        abengine.allpairs(X, Y, bad, block=(7, 3), progress=False, engine=engine, retries=0)
    assert len(info.value.failures) == 2
    assert all("shape" in f.reason for f in info.value.failures)
    assert np.isnan(info.value.result).all()


def write_module(directory: Path, name: str, text: str) -> str:
    (directory / f"{name}.py").write_text(text)
    importlib.invalidate_caches()
    return name


def test_module_function(tmp_path, monkeypatch, engine):
    name = write_module(tmp_path, "abe_user_mod_cells", (
        "import numpy as np\n"
        "WEIGHT = 2.0\n"
        "def similarity(a, b):\n"
        "    return float(WEIGHT * np.dot(a, b))\n"
        "def on_files(a, b):\n"
        "    return len(open(a, 'rb').read()) - len(open(b, 'rb').read())\n"
    ))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    try:
        r = abengine.allpairs(X, Y, f"{name}:similarity", block=(3, 2), progress=False,
                              engine=engine)
        np.testing.assert_allclose(r, 2.0 * X @ Y.T, rtol=1e-12)
        listing = write_sized(tmp_path / "sized", [3, 10, 0, 7])
        r = abengine.allpairs(str(listing), str(listing), f"{name}:on_files", block=2,
                              progress=False, engine=engine)
        sizes = np.array([3, 10, 0, 7])
        np.testing.assert_array_equal(r, sizes[:, None] - sizes[None, :])
    finally:
        sys.modules.pop(name, None)


def test_function_from_a_module_the_workers_cannot_import(tmp_path, monkeypatch, engine):
    """A helper imported from the user's own file (not on the workers' path) still runs."""
    # start the worker processes first, so the module's directory is not on their path
    abengine.allpairs(X[:1], Y[:1], lambda a, b: 0.0, progress=False, engine=engine)
    name = write_module(tmp_path, "abe_user_helpers", (
        "OFFSET = 0.5\n"
        "def shifted_dot(a, b):\n"
        "    return float(a @ b) + OFFSET\n"
    ))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        module = importlib.import_module(name)
        r = abengine.allpairs(X, Y, module.shifted_dot, block=(3, 4), progress=False,
                              engine=engine)
        np.testing.assert_allclose(r, X @ Y.T + 0.5, rtol=1e-12)
    finally:
        sys.modules.pop(name, None)


def test_module_function_vectorized(tmp_path, monkeypatch, engine):
    name = write_module(tmp_path, "abe_user_mod_block", (
        "import abengine\n"
        "@abengine.vectorized\n"
        "def kernel(A, B):\n"
        "    return A @ B.T - 1\n"
        "def plain(A, B):\n"
        "    return A @ B.T + 1\n"
    ))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    try:
        r = abengine.allpairs(X, Y, f"{name}:kernel", block=(4, 4), progress=False,
                              engine=engine)
        np.testing.assert_allclose(r, X @ Y.T - 1, rtol=1e-12)
        r = abengine.allpairs(X, Y, f"{name}:plain", vectorized=True, progress=False,
                              engine=engine)
        np.testing.assert_allclose(r, X @ Y.T + 1, rtol=1e-12)
    finally:
        sys.modules.pop(name, None)


# -- executables ----------------------------------------------------------------------------


@pytest.fixture
def sized(tmp_path) -> Path:
    return write_sized(tmp_path / "sized", [0, 1, 5, 17, 64, 3, 200])


@pytest.fixture
def other_sized(tmp_path) -> Path:
    return write_sized(tmp_path / "other", [9, 4, 33, 2, 100])


def test_executable_on_files_equals_double_loop(sized, other_sized, size_sum):
    A, B = list_paths(sized), list_paths(other_sized)
    expected = naive(A, B, lambda a, b: file_size(a) + file_size(b))
    for block in [(1, 1), (3, 2), (7, 5), None]:
        r = abengine.allpairs(str(sized), str(other_sized), str(size_sum), block=block,
                              progress=False)
        np.testing.assert_array_equal(r, expected)


def test_executable_on_path_is_found_on_path(tmp_path, sized, monkeypatch):
    bindir = tmp_path / "onpath"
    make_script(bindir / "abe-size-diff", """
        a=$(wc -c < "$1"); b=$(wc -c < "$2")
        echo $((a - b))
    """)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    A = list_paths(sized)
    r = abengine.allpairs(str(sized), str(sized), "abe-size-diff", block=3, progress=False)
    np.testing.assert_array_equal(r, naive(A, A, lambda a, b: file_size(a) - file_size(b)))


def test_executable_with_extra_args(tmp_path, sized, other_sized):
    script = make_script(tmp_path / "weighted.sh", """
        wa=$1; wb=$2
        a=$(wc -c < "$3"); b=$(wc -c < "$4")
        echo $((wa * a + wb * b))
    """)
    A, B = list_paths(sized), list_paths(other_sized)
    r = abengine.allpairs(str(sized), str(other_sized), str(script), extra_args=["3", 5],
                          block=(4, 4), progress=False)
    np.testing.assert_array_equal(r, naive(A, B, lambda a, b: 3 * file_size(a) + 5 * file_size(b)))


def test_executable_with_extra_files(tmp_path, sized, other_sized):
    factor = tmp_path / "config" / "factor.txt"
    factor.parent.mkdir()
    factor.write_text("7\n")
    offsets = tmp_path / "offset.txt"
    offsets.write_text("1000\n")
    script = make_script(tmp_path / "uses_files.sh", """
        read k < factor.txt
        read o < offset.txt
        a=$(wc -c < "$1"); b=$(wc -c < "$2")
        echo $((k * a - b + o))
    """)
    A, B = list_paths(sized), list_paths(other_sized)
    r = abengine.allpairs(str(sized), str(other_sized), str(script), block=(3, 3),
                          extra_files=[factor, str(offsets)], progress=False)
    np.testing.assert_array_equal(r, naive(A, B, lambda a, b: 7 * file_size(a) - file_size(b) + 1000))


def test_callable_reads_extra_files_from_its_sandbox(tmp_path, engine):
    weights = tmp_path / "weights.npy"
    np.save(weights, np.arange(5.0))

    def f(a, b):
        w = np.load("weights.npy")  # relative: the task runs in its sandbox
        return float((a * w) @ b)

    r = abengine.allpairs(X, Y, f, extra_files=[weights], block=(4, 3), progress=False,
                          engine=engine)
    np.testing.assert_allclose(r, naive(X, Y, lambda a, b: float((a * np.arange(5.0)) @ b)))


def test_missing_extra_file_is_a_usage_error(tmp_path, sized, size_sum):
    with pytest.raises(UsageError, match="nope.txt"):
        abengine.allpairs(str(sized), str(sized), str(size_sum),
                          extra_files=[tmp_path / "nope.txt"], progress=False)


def test_executable_needs_file_sets(size_sum):
    with pytest.raises(UsageError, match="SET_A"):
        abengine.allpairs(X, Y, str(size_sum), progress=False)


# -- symmetric ------------------------------------------------------------------------------


def test_symmetric_executable_runs_one_triangle_and_mirrors(tmp_path):
    counter = tmp_path / "calls.log"
    listing = write_numbered(tmp_path / "sym", 7)
    script = make_script(tmp_path / "sym.sh", f"""
        echo x >> {counter}
        read a < "$1"; read b < "$2"
        echo $((a * a + b * b + a * b))
    """)
    r = abengine.allpairs(str(listing), str(listing), str(script), symmetric=True, block=3,
                          progress=False)
    expected = naive(range(7), range(7), lambda a, b: a * a + b * b + a * b)
    np.testing.assert_array_equal(r, expected)
    assert counter.read_text().count("x") == 7 * 8 // 2


@pytest.mark.parametrize("block", [1, 2, 3, 7, None])
def test_symmetric_callable_and_builtin(block, engine):
    f = lambda a, b: float(np.abs(a - b).sum() + a @ b)  # noqa: E731
    r = abengine.allpairs(X, X, f, symmetric=True, block=block, progress=False, engine=engine)
    np.testing.assert_allclose(r, naive(X, X, f), rtol=1e-12)
    r = abengine.allpairs(X, None, "euclidean", symmetric=True, block=block, progress=False)
    np.testing.assert_allclose(r, cdist(X, X), rtol=1e-9, atol=1e-12)
    kernel = abengine.vectorized(lambda A, B: A @ B.T)
    r = abengine.allpairs(X, X, kernel, symmetric=True, block=block, progress=False,
                          engine=engine)
    np.testing.assert_allclose(r, X @ X.T, rtol=1e-12)


@pytest.mark.parametrize("name", [
    "euclidean", "sqeuclidean", "cosine", "correlation", "dot", "manhattan"])
def test_symmetric_builtin_result_is_exactly_symmetric(name):
    Z = np.random.default_rng(5).normal(size=(12, 5))
    r = abengine.allpairs(Z, Z, name, symmetric=True, block=4, progress=False)
    np.testing.assert_array_equal(r, r.T)


def test_symmetric_needs_the_same_set_and_square_blocks(sized, other_sized, size_sum):
    with pytest.raises(UsageError, match="same set"):
        abengine.allpairs(str(sized), str(other_sized), str(size_sum), symmetric=True,
                          progress=False)
    with pytest.raises(UsageError, match="same set"):
        abengine.allpairs(X, X + 1, "euclidean", symmetric=True, progress=False)
    with pytest.raises(UsageError, match="square"):
        abengine.allpairs(X, X, "euclidean", symmetric=True, block=(2, 3), progress=False)


# -- outputs ----------------------------------------------------------------------------------


def read_text_output(path: Path) -> dict[tuple[str, str], str]:
    cells = {}
    for line in path.read_text().splitlines():
        a, b, value = line.split("\t")
        assert (a, b) not in cells
        cells[(a, b)] = value
    return cells


def test_npy_h5_and_txt_outputs_hold_the_same_values(tmp_path, sized, other_sized, size_sum):
    args = (str(sized), str(other_sized), str(size_sum))
    memory = abengine.allpairs(*args, block=(3, 2), progress=False)
    npy = abengine.allpairs(*args, block=(3, 2), output=tmp_path / "r.npy", progress=False)
    h5 = abengine.allpairs(*args, block=(3, 2), output=str(tmp_path / "r.h5"), progress=False)
    txt = abengine.allpairs(*args, block=(3, 2), output=tmp_path / "r.txt", progress=False)
    assert Path(npy) == tmp_path / "r.npy" and Path(h5) == tmp_path / "r.h5"
    assert Path(txt) == tmp_path / "r.txt"
    np.testing.assert_array_equal(np.load(npy), memory)
    with h5py.File(h5, "r") as f:
        np.testing.assert_array_equal(f["result"][...], memory)
        assert f["done"][...].all()
        assert bool(f.attrs["complete"])
    cells = read_text_output(Path(txt))
    names_a, names_b = list_names(sized), list_names(other_sized)
    assert len(cells) == memory.size
    for i, a in enumerate(names_a):
        for j, b in enumerate(names_b):
            assert float(cells[(a, b)]) == memory[i, j]
    assert not list(tmp_path.glob("*.part"))


def test_builtin_text_output_round_trips_floats(tmp_path):
    out = abengine.allpairs(X, Y, "cosine", output=tmp_path / "c.txt", progress=False)
    cells = read_text_output(Path(out))
    expected = 1 - cdist(X, Y, "cosine")
    for (a, b), value in cells.items():
        assert float(value) == pytest.approx(expected[int(a), int(b)], rel=1e-9)
    assert len(cells) == X.shape[0] * Y.shape[0]


def test_symmetric_text_output_prints_every_cell_once(tmp_path):
    out = abengine.allpairs(X, X, "euclidean", symmetric=True, block=3,
                            output=tmp_path / "s.txt", progress=False)
    cells = read_text_output(Path(out))
    assert len(cells) == 49
    expected = cdist(X, X)
    for (a, b), value in cells.items():
        assert float(value) == pytest.approx(expected[int(a), int(b)], rel=1e-9, abs=1e-12)


def test_bad_output_is_refused_before_any_work(tmp_path, sized, marker_script):
    script, marker = marker_script
    for output in (tmp_path / "no" / "such" / "dir" / "r.npy", tmp_path / "r.csv",
                   tmp_path / "r"):
        with pytest.raises(UsageError):
            abengine.allpairs(str(sized), str(sized), str(script), output=output,
                              progress=False)
    blocker = tmp_path / "plainfile"
    blocker.write_text("x")
    with pytest.raises(UsageError):
        abengine.allpairs(str(sized), str(sized), str(script), output=blocker / "r.h5",
                          progress=False)
    assert not marker.exists()


# -- dtypes and non-numeric results ------------------------------------------------------------


def test_non_numeric_output_names_the_cell(tmp_path, numbered):
    script = make_script(tmp_path / "words.sh", """
        read a < "$1"; read b < "$2"
        if [ "$a" = 2 ] && [ "$b" = 4 ]; then echo "two-four"; else echo $((a + b)); fi
    """)
    with pytest.raises(UsageError) as info:
        abengine.allpairs(str(numbered), str(numbered), str(script), block=2, progress=False)
    message = str(info.value)
    assert "cell (n002.txt, n004.txt)" in message
    assert "two-four" in message


def test_non_numeric_output_of_a_callable_names_the_cell(engine):
    f = lambda a, b: "many" if a[0] > b[0] else 1.0  # noqa: E731
    with pytest.raises(UsageError, match=r"cell \(\d+, \d+\).*many"):
        abengine.allpairs(X, Y, f, block=3, progress=False, engine=engine)


def test_dtype_object_keeps_raw_strings(tmp_path, numbered):
    script = make_script(tmp_path / "pair.sh", """
        read a < "$1"; read b < "$2"
        echo "  pair $a-$b  "
    """)
    r = abengine.allpairs(str(numbered), str(numbered), str(script), dtype=object, block=4,
                          progress=False)
    assert r.dtype == object
    n = len(list_names(numbered))
    for i in range(n):
        for j in range(n):
            assert r[i, j] == f"pair {i}-{j}"


def test_dtype_int(tmp_path, numbered):
    script = make_script(tmp_path / "prod.sh", """
        read a < "$1"; read b < "$2"
        echo $((a * b))
    """)
    r = abengine.allpairs(str(numbered), str(numbered), str(script), dtype=np.int64,
                          block=(2, 3), progress=False)
    assert r.dtype == np.int64
    n = len(list_names(numbered))
    np.testing.assert_array_equal(r, np.outer(range(n), range(n)))


# -- failures ---------------------------------------------------------------------------------


@pytest.fixture
def picky(tmp_path):
    """F failing (exit 3, a message on stderr) where (a + b) % 4 == 0; counts its calls."""
    counter = tmp_path / "picky.log"
    script = make_script(tmp_path / "picky.sh", f"""
        echo x >> {counter}
        read a < "$1"; read b < "$2"
        if [ $(( (a + b) % 4 )) -eq 0 ]; then echo "cannot pair $a with $b" >&2; exit 3; fi
        echo $((a * 10 + b))
    """)
    return script, counter


def test_failing_cells_are_reported_and_the_others_computed(tmp_path, picky):
    script, counter = picky
    la = write_numbered(tmp_path / "a", 6, start=0, prefix="a")
    lb = write_numbered(tmp_path / "b", 5, start=1, prefix="b")
    with pytest.raises(TaskFailures) as info:
        abengine.allpairs(str(la), str(lb), str(script), block=(4, 2), progress=False)
    exc = info.value
    assert all(isinstance(f, Failure) for f in exc.failures)
    expected_failed = {(i, j) for i in range(6) for j in range(1, 6) if (i + j) % 4 == 0}
    wheres = sorted(f.where for f in exc.failures)
    assert wheres == sorted(f"cell (a{i:03d}.txt, b{j - 1:03d}.txt)" for i, j in expected_failed)
    for failure in exc.failures:
        assert failure.reason == "exit code 3"
        assert "cannot pair" in failure.stderr
    result = exc.result
    assert result.shape == (6, 5)
    for i in range(6):
        for j in range(1, 6):
            if (i, j) in expected_failed:
                assert np.isnan(result[i, j - 1])
            else:
                assert result[i, j - 1] == i * 10 + j
    # a failing cell is not retried, and never stops the other cells
    assert counter.read_text().count("x") == 30


def test_cell_killed_by_a_signal_is_a_failure(tmp_path, numbered):
    script = make_script(tmp_path / "suicide.sh", """
        read a < "$1"; read b < "$2"
        if [ "$a" = "$b" ]; then kill -9 $$; fi
        echo $((a - b))
    """)
    with pytest.raises(TaskFailures) as info:
        abengine.allpairs(str(numbered), str(numbered), str(script), block=3, progress=False)
    failures = info.value.failures
    assert sorted(f.where for f in failures) == [f"cell (n{i:03d}.txt, n{i:03d}.txt)"
                                                 for i in range(6)]
    assert all(f.reason == "killed by signal SIGKILL" for f in failures)
    r = info.value.result
    assert np.isnan(np.diag(r)).all()
    off = ~np.eye(6, dtype=bool)
    np.testing.assert_array_equal(r[off], np.subtract.outer(range(6), range(6))[off])


def test_failures_with_an_h5_output_keep_the_other_results(tmp_path, picky):
    script, _ = picky
    la = write_numbered(tmp_path / "a", 4)
    out = tmp_path / "partial.h5"
    with pytest.raises(TaskFailures) as info:
        abengine.allpairs(str(la), str(la), str(script), block=2, output=out, progress=False)
    assert Path(info.value.result) == out
    with h5py.File(out, "r") as f:
        result = f["result"][...]
        assert not bool(f.attrs["complete"])
    for i in range(4):
        for j in range(4):
            if (i + j) % 4 == 0:
                assert np.isnan(result[i, j])
            else:
                assert result[i, j] == i * 10 + j


def test_failing_python_callable_cells(engine):
    def f(a, b):
        if a[0] > b[0] + 1:
            raise ArithmeticError(f"too far apart: {a[0]:.2f}")
        return float(a[0] - b[0])

    with pytest.raises(TaskFailures) as info:
        abengine.allpairs(X, Y, f, block=(2, 4), progress=False, engine=engine)
    exc = info.value
    bad = {(i, j) for i in range(7) for j in range(6) if X[i, 0] > Y[j, 0] + 1}
    assert bad, "the data must make some cells fail"
    assert {f.where for f in exc.failures} == {f"cell ({i}, {j})" for i, j in bad}
    assert all("ArithmeticError" in f.reason for f in exc.failures)
    assert all("too far apart" in f.stderr for f in exc.failures)
    for i in range(7):
        for j in range(6):
            if (i, j) in bad:
                assert np.isnan(exc.result[i, j])
            else:
                assert exc.result[i, j] == X[i, 0] - Y[j, 0]


def test_a_failed_block_is_retried(tmp_path, engine):
    attempts = tmp_path / "attempts.log"  # outside the sandbox: survives the attempt

    def flaky(A, B):
        with open(attempts, "a") as f:
            f.write("x")
        if attempts.read_text().count("x") < 2:
            raise RuntimeError("first attempt fails")
        return A @ B.T

    kernel = abengine.vectorized(flaky)
    r = abengine.allpairs(X, Y, kernel, block=(7, 6), retries=1, progress=False, engine=engine)
    np.testing.assert_allclose(r, X @ Y.T, rtol=1e-12)
    assert attempts.read_text() == "xx"
    attempts.unlink()
    with pytest.raises(TaskFailures) as info:
        abengine.allpairs(X, Y, kernel, block=(7, 6), retries=0, progress=False, engine=engine)
    (failure,) = info.value.failures
    assert "first attempt fails" in failure.reason
    assert failure.where.startswith("block")
    assert np.isnan(info.value.result).all()


def test_invalid_dtype_is_a_usage_error():
    with pytest.raises(UsageError, match="dtype"):
        abengine.allpairs(X, Y, lambda a, b: 0.0, dtype="no-such-type", progress=False)


def test_options_are_checked(sized, size_sum):
    args = (str(sized), str(sized), str(size_sum))
    for bad in (0, -1, (1, 2, 3), (2.5, 2), (0, 2), "two"):
        with pytest.raises(UsageError):
            abengine.allpairs(*args, block=bad, progress=False)
    for bad in (0, -1.0, "slow"):
        with pytest.raises(UsageError):
            abengine.allpairs(*args, seconds_per_cell=bad, progress=False)
    with pytest.raises(UsageError, match="resume"):
        abengine.allpairs(*args, resume=True, progress=False)


def test_block_as_a_numpy_integer_or_a_float():
    r = abengine.allpairs(X, Y, "dot", block=np.int64(3), progress=False)
    np.testing.assert_allclose(r, X @ Y.T)
    with pytest.raises(UsageError, match="block"):
        abengine.allpairs(X, Y, "dot", block=2.5, progress=False)


def test_single_core_and_seconds_per_cell(sized, size_sum):
    A = list_paths(sized)
    r = abengine.allpairs(str(sized), str(sized), str(size_sum), cores=1,
                          seconds_per_cell=0.001, progress=False)
    np.testing.assert_array_equal(r, naive(A, A, lambda a, b: file_size(a) + file_size(b)))
