"""The builtins against scipy's cdist, BITWISE on real files, and how F is resolved."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_script
from scipy.spatial.distance import cdist

import abengine
from abengine import UsageError
from abengine.functions import resolve_function

RNG = np.random.default_rng(7)
A = RNG.normal(size=(9, 6))
B = RNG.normal(size=(7, 6))
# small integer values, so hamming and jaccard see equal and differing components
A_INT = RNG.integers(0, 3, size=(9, 6)).astype(float)
B_INT = RNG.integers(0, 3, size=(7, 6)).astype(float)
A_INT[0] = 0.0  # an all-zero row: jaccard's 0/0 case
B_INT[0] = 0.0


def reference(name: str, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    X, Y = np.asarray(X, dtype=float), np.asarray(Y, dtype=float)
    if name == "cosine":
        return 1 - cdist(X, Y, "cosine")
    if name == "correlation":
        return 1 - cdist(X, Y, "correlation")
    if name == "dot":
        return X @ Y.T
    metric = {"manhattan": "cityblock"}.get(name, name)
    return cdist(X, Y, metric)


CONTINUOUS = ["cosine", "euclidean", "sqeuclidean", "dot", "correlation", "manhattan",
              "chebyshev"]
DISCRETE = ["hamming", "jaccard", "euclidean", "manhattan"]


def test_every_builtin_is_listed():
    assert set(abengine.BUILTINS) == {
        "cosine", "euclidean", "sqeuclidean", "dot", "correlation", "manhattan", "chebyshev",
        "hamming", "jaccard", "bitwise"}


@pytest.mark.parametrize("name", CONTINUOUS)
@pytest.mark.parametrize("block", [None, (2, 3), (9, 7), 4])
def test_builtin_matches_cdist_on_continuous_data(name, block):
    r = abengine.allpairs(A, B, name, block=block, progress=False)
    assert r.shape == (9, 7) and r.dtype == np.float64
    np.testing.assert_allclose(r, reference(name, A, B), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", DISCRETE)
def test_builtin_matches_cdist_on_discrete_data(name):
    r = abengine.allpairs(A_INT, B_INT, name, block=(4, 3), progress=False)
    np.testing.assert_allclose(r, reference(name, A_INT, B_INT), rtol=1e-9, atol=1e-12)


def test_jaccard_on_boolean_arrays():
    X, Y = A_INT > 0, B_INT > 1
    r = abengine.allpairs(X, Y, "jaccard", progress=False)
    np.testing.assert_allclose(r, cdist(X, Y, "jaccard"), rtol=1e-9)


@pytest.mark.parametrize("name", ["Euclidean", "COSINE", "bitwise"])
def test_builtin_names_are_case_insensitive(name):
    f = resolve_function(name)
    assert f.kind == "builtin"


A_POS = RNG.integers(1, 200, size=(9, 6))  # no zero or constant rows: cdist is defined
B_POS = RNG.integers(1, 200, size=(7, 6))


def integer_cases():
    for dtype in (np.int64, np.uint8):
        for name in ["euclidean", "sqeuclidean", "cosine", "correlation", "dot", "manhattan",
                     "chebyshev", "hamming", "jaccard"]:
            yield pytest.param(name, dtype, id=f"{dtype.__name__}-{name}")


@pytest.mark.parametrize(("name", "dtype"), list(integer_cases()))
def test_builtin_on_integer_arrays_matches_cdist(name, dtype):
    X, Y = A_POS.astype(dtype), B_POS.astype(dtype)
    r = abengine.allpairs(X, Y, name, block=(4, 3), progress=False, retries=0)
    np.testing.assert_allclose(r, reference(name, X, Y), rtol=1e-9, atol=1e-12)


def test_dot_on_boolean_arrays_counts_common_components():
    X, Y = A_INT > 0, B_INT > 0
    r = abengine.allpairs(X, Y, "dot", progress=False, retries=0)
    np.testing.assert_allclose(r, X.astype(float) @ Y.astype(float).T)


def test_builtin_on_float32_is_close_to_cdist():
    X, Y = A.astype(np.float32), B.astype(np.float32)
    for name in ("euclidean", "cosine", "manhattan"):
        r = abengine.allpairs(X, Y, name, progress=False)
        np.testing.assert_allclose(r, reference(name, X, Y), rtol=1e-4, atol=1e-5)


def test_euclidean_of_identical_rows_is_exactly_zero():
    X = RNG.normal(size=(8, 50)) * 1e3 + 5e3
    r = abengine.allpairs(X, X, "euclidean", block=(3, 5), progress=False)
    assert np.all(np.diag(r) == 0.0)
    s = abengine.allpairs(X, X, "euclidean", symmetric=True, block=3, progress=False)
    assert np.all(np.diag(s) == 0.0)
    assert np.all(np.diag(abengine.allpairs(X, X, "sqeuclidean", progress=False)) == 0.0)
    np.testing.assert_allclose(r, cdist(X, X), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("scale", [1e-4, 1e-7, 1e-10])
def test_euclidean_of_nearly_identical_rows_is_accurate(scale):
    X = RNG.normal(size=(6, 40)) * 100 + 1e4
    Y = X + RNG.normal(size=X.shape) * scale
    r = abengine.allpairs(X, Y, "euclidean", block=(2, 4), progress=False)
    expected = cdist(X, Y)
    np.testing.assert_allclose(np.diag(r), np.diag(expected), rtol=1e-6)
    np.testing.assert_allclose(r, expected, rtol=1e-6)
    sq = abengine.allpairs(X, Y, "sqeuclidean", progress=False)
    np.testing.assert_allclose(np.diag(sq), np.diag(cdist(X, Y, "sqeuclidean")), rtol=1e-6)


# -- BITWISE --------------------------------------------------------------------------------


def naive_bitwise(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    return sum(x != y for x, y in zip(a[:n], b[:n])) + abs(len(a) - len(b))


def write_blobs(directory, blobs: list[bytes], list_name: str):
    directory.mkdir(parents=True, exist_ok=True)
    names = []
    for i, blob in enumerate(blobs):
        name = f"{list_name}_{i}.bin"
        (directory / name).write_bytes(blob)
        names.append(name)
    listing = directory / f"{list_name}.list"
    listing.write_text("\n".join(names) + "\n")
    return listing


def test_bitwise_on_equal_length_files(tmp_path):
    blobs = [b"abcdefgh", b"abcdefgh", b"abXdefgY", b"\x00" * 8, b"hgfedcba"]
    listing = write_blobs(tmp_path, blobs, "eq")
    r = abengine.allpairs(str(listing), str(listing), "BITWISE", block=(2, 3), progress=False)
    expected = [[naive_bitwise(a, b) for b in blobs] for a in blobs]
    np.testing.assert_array_equal(r, expected)
    assert r[0, 1] == 0 and r[0, 2] == 2 and r[0, 4] == 8


def test_bitwise_on_unequal_length_files(tmp_path):
    a_blobs = [b"", b"abc", b"abcdefgh", b"abXdefghijkl", b"zz"]
    b_blobs = [b"abcdefgh", b"abc", b"", b"abcdefghij"]
    same_b = [b"abcd", b"abce", b"zzzz"]  # B of equal lengths, A not: the vectorised path
    la = write_blobs(tmp_path, a_blobs, "a")
    lb = write_blobs(tmp_path, b_blobs, "b")
    ls = write_blobs(tmp_path, same_b, "s")
    for listing, blobs in ((lb, b_blobs), (ls, same_b)):
        for block in (None, (2, 2), (5, 4)):
            r = abengine.allpairs(str(la), str(listing), "BITWISE", block=block, progress=False)
            expected = [[naive_bitwise(a, b) for b in blobs] for a in a_blobs]
            np.testing.assert_array_equal(r, expected)
    r = abengine.allpairs(str(la), str(lb), "BITWISE", progress=False)
    assert r[1, 0] == 5  # "abc" vs "abcdefgh": the 5 extra bytes count in full
    assert r[0, 2] == 0 and r[0, 0] == 8


def test_bitwise_needs_files():
    with pytest.raises(UsageError, match="BITWISE"):
        abengine.allpairs(A, B, "BITWISE", progress=False)


# -- resolution errors ----------------------------------------------------------------------


def test_unknown_builtin_is_a_usage_error():
    with pytest.raises(UsageError) as info:
        resolve_function("euclidian")
    assert "euclidian" in str(info.value) and "not found" in str(info.value)
    with pytest.raises(UsageError):
        abengine.allpairs(A, B, "euclidian", progress=False)


def test_missing_executable(tmp_path):
    with pytest.raises(UsageError, match="not found") as info:
        resolve_function(str(tmp_path / "nope.sh"))
    assert "nope.sh" in str(info.value)


def test_non_executable_file(tmp_path):
    script = make_script(tmp_path / "plain.sh", "echo 1")
    script.chmod(0o644)
    with pytest.raises(UsageError, match="not executable") as info:
        resolve_function(str(script))
    assert "plain.sh" in str(info.value)


def test_directory_as_function(tmp_path):
    with pytest.raises(UsageError, match="not a file"):
        resolve_function(str(tmp_path))


def test_executable_resolves_with_extra_args(tmp_path):
    script = make_script(tmp_path / "ok.sh", "echo 1")
    f = resolve_function(str(script), extra_args=["-v", 3])
    assert f.kind == "executable" and f.extra_args == ["-v", "3"]
    assert resolve_function("sh").kind == "executable"  # a program on PATH


def test_extra_args_with_a_builtin_is_a_usage_error():
    with pytest.raises(UsageError, match="extra arguments"):
        resolve_function("cosine", extra_args=["-x"])
    with pytest.raises(UsageError, match="extra arguments"):
        abengine.allpairs(A, B, "cosine", extra_args=["-x"], progress=False)


def test_extra_args_with_a_callable_is_a_usage_error():
    with pytest.raises(UsageError, match="extra arguments"):
        resolve_function(lambda a, b: 0, extra_args=["-x"])


def test_module_function_that_does_not_exist(tmp_path, monkeypatch):
    (tmp_path / "abe_resolve_mod.py").write_text("def present(a, b):\n    return 1.0\n")
    monkeypatch.chdir(tmp_path)
    import importlib

    importlib.invalidate_caches()
    with pytest.raises(UsageError) as info:
        resolve_function("abe_resolve_mod:absent")
    assert "absent" in str(info.value)
    with pytest.raises(UsageError, match="abe_no_such_module"):
        resolve_function("abe_no_such_module:f")
    assert resolve_function("abe_resolve_mod:present").kind == "callable"
    monkeypatch.delitem(__import__("sys").modules, "abe_resolve_mod")


def test_something_that_is_not_a_function():
    with pytest.raises(UsageError):
        resolve_function(42)
