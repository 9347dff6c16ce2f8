"""abengine.map: F on every element of one set, batched into tasks."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import list_names, list_paths, make_script, write_numbered, write_sized

import abengine
from abengine import TaskFailures, UsageError

RNG = np.random.default_rng(3)
X = RNG.normal(size=(11, 4))


@pytest.mark.parametrize("block", [1, 3, 11, None])
def test_map_callable_on_arrays(block, engine):
    f = lambda row: float(row @ row - row[0])  # noqa: E731
    r = abengine.map(X, f, block=block, progress=False, engine=engine)
    assert r.shape == (11,) and r.dtype == np.float64
    np.testing.assert_array_equal(r, [f(row) for row in X])


def test_map_closure_on_files_with_its_own_engine(tmp_path):
    listing = write_numbered(tmp_path / "n", 7)
    bonus = 0.5

    def f(path):
        return int(Path(path).read_text()) ** 2 + bonus

    r = abengine.map(str(listing), f, block=2, progress=False)
    np.testing.assert_array_equal(r, [i * i + 0.5 for i in range(7)])


def test_map_executable(tmp_path):
    listing = write_sized(tmp_path / "s", [0, 4, 9, 100, 3])
    script = make_script(tmp_path / "size.sh", 'wc -c < "$1"')
    for block in (1, 2, 5, None):
        r = abengine.map(str(listing), str(script), block=block, progress=False)
        np.testing.assert_array_equal(r, [os.path.getsize(p) for p in list_paths(listing)])


def test_map_executable_with_extra_args_and_files(tmp_path):
    listing = write_numbered(tmp_path / "n", 5)
    (tmp_path / "base.txt").write_text("100\n")
    script = make_script(tmp_path / "affine.sh", """
        read base < base.txt
        read x < "$2"
        echo $((base + $1 * x))
    """)
    r = abengine.map(str(listing), str(script), extra_args=["3"],
                     extra_files=[tmp_path / "base.txt"], block=2, progress=False)
    np.testing.assert_array_equal(r, [100 + 3 * i for i in range(5)])


def test_map_vectorized(engine):
    r = abengine.map(X, abengine.vectorized(lambda R: R.sum(axis=1) * 2), block=4,
                     progress=False, engine=engine)
    np.testing.assert_allclose(r, X.sum(axis=1) * 2, rtol=1e-12)
    r = abengine.map(X, lambda R: np.abs(R).max(axis=1), vectorized=True, progress=False,
                     engine=engine)
    np.testing.assert_array_equal(r, np.abs(X).max(axis=1))


def test_map_module_function(tmp_path, monkeypatch, engine):
    import importlib
    import sys

    (tmp_path / "abe_map_mod.py").write_text("def norm1(v):\n    return float(abs(v).sum())\n")
    importlib.invalidate_caches()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    try:
        r = abengine.map(X, "abe_map_mod:norm1", block=5, progress=False, engine=engine)
    finally:
        sys.modules.pop("abe_map_mod", None)
    np.testing.assert_allclose(r, np.abs(X).sum(axis=1), rtol=1e-12)


def test_map_failures_name_the_element(tmp_path):
    listing = write_numbered(tmp_path / "n", 8)
    counter = tmp_path / "calls.log"
    script = make_script(tmp_path / "odd.sh", f"""
        echo x >> {counter}
        read x < "$1"
        if [ $((x % 3)) -eq 1 ]; then echo "no thirds: $x" >&2; exit 4; fi
        echo $((x * 7))
    """)
    with pytest.raises(TaskFailures) as info:
        abengine.map(str(listing), str(script), block=3, progress=False)
    exc = info.value
    names = list_names(listing)
    bad = [i for i in range(8) if i % 3 == 1]
    assert sorted(f.where for f in exc.failures) == sorted(f"element {names[i]}" for i in bad)
    assert all(f.reason == "exit code 4" for f in exc.failures)
    assert all("no thirds" in f.stderr for f in exc.failures)
    for i in range(8):
        if i in bad:
            assert np.isnan(exc.result[i])
        else:
            assert exc.result[i] == 7 * i
    assert counter.read_text().count("x") == 8


def test_map_callable_failures(engine):
    def f(row):
        if row[0] < 0:
            raise ValueError("negative")
        return float(row[0])

    with pytest.raises(TaskFailures) as info:
        abengine.map(X, f, block=4, progress=False, engine=engine)
    bad = {i for i in range(11) if X[i, 0] < 0}
    assert bad
    assert {f.where for f in info.value.failures} == {f"element {i}" for i in bad}
    for i in range(11):
        assert np.isnan(info.value.result[i]) == (i in bad)


def test_map_non_numeric_and_object_dtype(tmp_path):
    listing = write_numbered(tmp_path / "n", 4)
    script = make_script(tmp_path / "word.sh", 'read x < "$1"; echo "item $x"')
    with pytest.raises(UsageError, match=r"element n00\d\.txt"):
        abengine.map(str(listing), str(script), progress=False)
    r = abengine.map(str(listing), str(script), dtype=object, progress=False)
    assert list(r) == [f"item {i}" for i in range(4)]


def test_map_outputs(tmp_path, engine):
    f = lambda row: float(row.sum())  # noqa: E731
    expected = X.sum(axis=1)
    npy = abengine.map(X, f, output=tmp_path / "m.npy", block=3, progress=False, engine=engine)
    np.testing.assert_allclose(np.load(npy), expected, rtol=1e-12)
    h5 = abengine.map(X, f, output=tmp_path / "m.h5", block=3, progress=False, engine=engine)
    with h5py.File(h5, "r") as fh:
        np.testing.assert_allclose(fh["result"][...], expected, rtol=1e-12)
        assert bool(fh.attrs["complete"])
    txt = abengine.map(X, f, output=tmp_path / "m.txt", block=3, progress=False, engine=engine)
    lines = Path(txt).read_text().splitlines()
    assert len(lines) == 11
    for line in lines:
        name, value = line.split("\t")
        assert float(value) == pytest.approx(expected[int(name)], rel=1e-12)


def test_map_refuses_symmetric_and_bad_sets(tmp_path):
    with pytest.raises(UsageError, match="symmetric"):
        abengine.map(X, lambda r: 0.0, symmetric=True, progress=False)
    with pytest.raises(UsageError, match="not found"):
        abengine.map(str(tmp_path / "missing.list"), lambda r: 0.0, progress=False)
    script = make_script(tmp_path / "s.sh", "echo 1")
    with pytest.raises(UsageError, match="needs files"):
        abengine.map(X, str(script), progress=False)
