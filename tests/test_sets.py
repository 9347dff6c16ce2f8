"""Every way to give a set, the bad ones, and reading one file element as a vector."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import generate, list_names, write_numbered
from scipy.spatial.distance import cdist

import abengine
from abengine import UsageError
from abengine.sets import load_set, read_vector

# -- file sets ------------------------------------------------------------------------------


def test_list_file_skips_blanks_and_comments_and_resolves_relative_to_itself(
        tmp_path, monkeypatch):
    data = tmp_path / "data"
    write_numbered(data, 3)
    (data / "sub").mkdir()
    (data / "sub" / "deep.txt").write_text("9\n")
    outside = tmp_path / "outside.txt"
    outside.write_text("5\n")
    listing = data / "my.list"
    listing.write_text(
        "# a comment\n\nn000.txt\n   \n  n001.txt  \n# n002.txt is left out\n"
        f"sub/deep.txt\n./n002.txt\n{outside}\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative entries must not depend on the cwd
    s = load_set(str(listing))
    assert s.is_files and len(s) == 5
    assert s.names == ["n000.txt", "n001.txt", "sub/deep.txt", "./n002.txt", str(outside)]
    assert [p.read_text() for p in s.paths] == ["0\n", "1\n", "9\n", "2\n", "5\n"]


def test_list_file_given_by_relative_path(tmp_path, monkeypatch):
    write_numbered(tmp_path / "d", 2)
    monkeypatch.chdir(tmp_path)
    s = load_set("d/set.list")
    assert [p.read_text() for p in s.paths] == ["0\n", "1\n"]


def test_directory_set_is_sorted_and_skips_hidden_files_and_subdirectories(tmp_path):
    d = tmp_path / "dir"
    d.mkdir()
    for name in ("b.txt", "a.txt", "c.bin"):
        (d / name).write_text(name)
    (d / ".hidden").write_text("x")
    (d / "subdir").mkdir()
    (d / "subdir" / "inner.txt").write_text("x")
    s = load_set(str(d))
    assert s.names == [os.path.join(str(d), n) for n in ("a.txt", "b.txt", "c.bin")]
    assert [p.read_text() for p in s.paths] == ["a.txt", "b.txt", "c.bin"]


def test_glob_pattern_set(tmp_path):
    write_numbered(tmp_path / "g", 4)
    (tmp_path / "g" / "other.dat").write_text("x")
    s = load_set(str(tmp_path / "g" / "n*.txt"))
    assert [Path(n).name for n in s.names] == ["n000.txt", "n001.txt", "n002.txt", "n003.txt"]


def test_sequence_of_paths_set(tmp_path):
    listing = write_numbered(tmp_path / "s", 3)
    paths = [listing.parent / n for n in list_names(listing)]
    s = load_set([paths[2], str(paths[0])])
    assert s.names == [str(paths[2]), str(paths[0])]
    assert [p.read_text() for p in s.paths] == ["2\n", "0\n"]
    assert load_set(tuple(paths)).names == [str(p) for p in paths]


def test_every_file_set_form_gives_the_same_matrix(tmp_path):
    listing = generate.write_files(tmp_path / "f", count=4, size=32)
    paths = sorted(listing.parent.glob("f_*.bin"))
    forms = [str(listing), listing, str(listing.parent / "f_*.bin"), paths, [str(p) for p in paths]]
    results = [abengine.allpairs(f, f, "BITWISE", progress=False) for f in forms]
    results.append(abengine.allpairs(str(tmp_path / "f"), str(listing), "BITWISE",
                                     progress=False))  # directory holds files.list too
    expected = np.array([[np.count_nonzero(np.fromfile(a, np.uint8) != np.fromfile(b, np.uint8))
                          for b in paths] for a in paths])
    for r in results[:-1]:
        np.testing.assert_array_equal(r, expected)
    assert results[-1].shape == (5, 4)


# -- array sets -----------------------------------------------------------------------------


@pytest.fixture
def arrays(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.random((6, 4))
    Y = rng.random((5, 4))
    np.save(tmp_path / "x.npy", X)
    with h5py.File(tmp_path / "single.h5", "w") as f:
        f["only"] = Y
    with h5py.File(tmp_path / "multi.h5", "w") as f:
        f["x"] = X
        f.create_group("grp")["y"] = Y
    return X, Y


def test_array_set_forms_load_their_rows(tmp_path, arrays):
    X, Y = arrays
    s = load_set(X)
    assert s.names == [str(i) for i in range(6)] and not s.is_files
    np.testing.assert_array_equal(s.rows(1, 3), X[1:3])
    s = load_set(str(tmp_path / "x.npy"))
    np.testing.assert_array_equal(s.rows(0, 6), X)
    s = load_set(tmp_path / "x.npy")
    np.testing.assert_array_equal(s.rows(0, 6), X)
    s = load_set(str(tmp_path / "single.h5"))  # one dataset: no name needed
    np.testing.assert_array_equal(s.rows(0, 5), Y)
    s = load_set(f"{tmp_path / 'multi.h5'}:grp/y")
    np.testing.assert_array_equal(s.rows(0, 5), Y)
    s = load_set(f"{tmp_path / 'multi.h5'}:/x")
    np.testing.assert_array_equal(s.rows(0, 6), X)
    with h5py.File(tmp_path / "multi.h5", "r") as f:
        s = load_set(f["grp/y"])
        np.testing.assert_array_equal(s.rows(2, 5), Y[2:])
    s = load_set([[1.0, 2.0], [3.0, 4.0]])  # a nested sequence of numbers is an array
    np.testing.assert_array_equal(s.rows(0, 2), [[1, 2], [3, 4]])


def test_every_array_set_form_gives_the_same_matrix(tmp_path, arrays, engine):
    X, Y = arrays
    expected = cdist(X, Y)
    multi = str(tmp_path / "multi.h5")
    with h5py.File(multi, "r") as f:
        forms = [
            (X, Y), (str(tmp_path / "x.npy"), str(tmp_path / "single.h5")),
            (f"{multi}:x", f"{multi}:grp/y"), (f["x"], f["/grp/y"]), (X.tolist(), f["grp/y"]),
        ]
        for A, B in forms:
            for F in ("euclidean", lambda a, b: float(np.sqrt(np.sum((a - b) ** 2)))):
                r = abengine.allpairs(A, B, F, block=(4, 2), progress=False, engine=engine)
                np.testing.assert_allclose(r, expected, rtol=1e-12)


def test_hdf5_rows_are_read_in_blocks_from_a_3d_dataset(tmp_path):
    cube = np.arange(5 * 2 * 3, dtype=float).reshape(5, 2, 3)
    with h5py.File(tmp_path / "cube.h5", "w") as f:
        f["c"] = cube
    flat = cube.reshape(5, -1)
    r = abengine.allpairs(f"{tmp_path / 'cube.h5'}:c", flat, "dot", block=2, progress=False)
    np.testing.assert_allclose(r, flat @ flat.T)


def test_dataset_of_a_file_open_for_writing(tmp_path, engine):
    X = np.random.default_rng(2).random((4, 3))
    with h5py.File(tmp_path / "w.h5", "w") as f:
        ds = f.create_dataset("x", data=X)
        r = abengine.allpairs(ds, ds, lambda a, b: float(a @ b), block=2, progress=False,
                              engine=engine, retries=0)
    np.testing.assert_allclose(r, X @ X.T)


# -- bad sets -------------------------------------------------------------------------------


def test_missing_list_file(tmp_path):
    with pytest.raises(UsageError, match="not found") as info:
        load_set(str(tmp_path / "nope.list"), "SET_A")
    assert "nope.list" in str(info.value) and "SET_A" in str(info.value)


def test_empty_list_file(tmp_path):
    listing = tmp_path / "empty.list"
    listing.write_text("# only a comment\n\n   \n")
    with pytest.raises(UsageError, match="empty"):
        load_set(str(listing))


def test_missing_element_is_named(tmp_path):
    listing = write_numbered(tmp_path / "d", 3)
    (listing.parent / "n001.txt").unlink()
    with pytest.raises(UsageError) as info:
        load_set(str(listing))
    message = str(info.value)
    assert "n001.txt" in message and "not found" in message
    assert "\n" not in message


def test_element_that_is_a_directory_is_named(tmp_path):
    listing = write_numbered(tmp_path / "d", 2)
    (listing.parent / "adir").mkdir()
    listing.write_text(listing.read_text() + "adir\n")
    with pytest.raises(UsageError, match="adir"):
        load_set(str(listing))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_element_is_named(tmp_path):
    listing = write_numbered(tmp_path / "d", 2)
    (listing.parent / "n001.txt").chmod(0)
    with pytest.raises(UsageError, match="n001.txt"):
        load_set(str(listing))


def test_directory_with_no_files(tmp_path):
    d = tmp_path / "nothing"
    d.mkdir()
    (d / "subdir").mkdir()
    (d / ".hidden").write_text("x")
    with pytest.raises(UsageError, match="empty"):
        load_set(str(d))


def test_glob_with_no_match(tmp_path):
    with pytest.raises(UsageError, match="no files match"):
        load_set(str(tmp_path / "*.nothing"))


def test_empty_sequence():
    with pytest.raises(UsageError, match="empty"):
        load_set([])


def test_one_dimensional_array_is_a_set_of_single_numbers():
    s = load_set(np.arange(5.0))
    assert len(s) == 5 and s.rows(1, 3).tolist() == [[1.0], [2.0]]


def test_one_dimensional_hdf5_dataset_is_a_set_of_single_numbers(tmp_path):
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f["v"] = np.arange(5.0)
    s = load_set(f"{tmp_path / 'v.h5'}:v")
    assert len(s) == 5 and s.rows(3, 5).tolist() == [[3.0], [4.0]]


@pytest.mark.parametrize("array", [np.empty((0, 3)), np.empty((0,)), np.array(3.0)],
                         ids=["no-rows", "empty-1d", "scalar"])
def test_empty_arrays_are_refused(array):
    with pytest.raises(UsageError):
        load_set(array)


@pytest.mark.parametrize("array", [np.array([["a", "b"], ["c", "d"]]),
                                   np.array([[1, "x"]], dtype=object)], ids=["str", "object"])
def test_non_numeric_arrays_are_refused(array):
    with pytest.raises(UsageError, match="not numeric"):
        load_set(array)


def test_hdf5_with_several_datasets_needs_a_name(tmp_path, arrays):
    with pytest.raises(UsageError) as info:
        load_set(str(tmp_path / "multi.h5"))
    message = str(info.value)
    assert "multi.h5:NAME" in message
    assert "x" in message and "grp/y" in message


def test_hdf5_unknown_dataset_and_missing_file(tmp_path, arrays):
    with pytest.raises(UsageError, match="no dataset"):
        load_set(f"{tmp_path / 'multi.h5'}:nope")
    with pytest.raises(UsageError, match="not found"):
        load_set(str(tmp_path / "missing.h5"))
    (tmp_path / "fake.h5").write_text("not hdf5")
    with pytest.raises(UsageError, match="fake.h5"):
        load_set(str(tmp_path / "fake.h5"))


def test_unusable_python_object():
    with pytest.raises(UsageError):
        load_set(42)


def test_mismatched_vector_lengths_with_a_builtin():
    with pytest.raises(UsageError, match="length"):
        abengine.allpairs(np.ones((2, 3)), np.ones((2, 4)), "euclidean", progress=False)


# -- read_vector ----------------------------------------------------------------------------


def test_read_vector_npy(tmp_path):
    a = np.arange(6.0).reshape(2, 3)
    np.save(tmp_path / "v.npy", a)
    np.testing.assert_array_equal(read_vector(tmp_path / "v.npy"), a.ravel())


def test_read_vector_binary_pgm_matches_the_generator(digits):
    for path in sorted(digits.parent.glob("*.pgm"))[:3]:
        expected = generate.read_pgm(path).ravel()
        np.testing.assert_array_equal(read_vector(path), expected)
        assert read_vector(path).dtype == np.float64


def test_read_vector_binary_pgm_with_comment_and_16_bit(tmp_path):
    pixels = np.array([[0, 7, 255], [1, 2, 3]], dtype=np.uint8)
    (tmp_path / "c.pgm").write_bytes(b"P5\n# made by hand\n3 2\n255\n" + pixels.tobytes())
    np.testing.assert_array_equal(read_vector(tmp_path / "c.pgm"), pixels.ravel())
    wide = np.array([0, 300, 65535, 2], dtype=">u2")
    (tmp_path / "w.pgm").write_bytes(b"P5 2 2 65535\n" + wide.tobytes())
    np.testing.assert_array_equal(read_vector(tmp_path / "w.pgm"), [0, 300, 65535, 2])


def test_read_vector_ascii_pgm(tmp_path):
    (tmp_path / "a.pgm").write_text("P2\n# comment line\n3 2\n15\n0 1 2\n 13 14\n15\n")
    np.testing.assert_array_equal(read_vector(tmp_path / "a.pgm"), [0, 1, 2, 13, 14, 15])
    # the magic number is enough, whatever the suffix
    (tmp_path / "a.img").write_text("P2 2 1 9 4 5")
    np.testing.assert_array_equal(read_vector(tmp_path / "a.img"), [4, 5])


def test_read_vector_text_numbers(tmp_path):
    (tmp_path / "v.txt").write_text("1 2.5\n-3e2,4\n\n 5\n")
    np.testing.assert_array_equal(read_vector(tmp_path / "v.txt"), [1, 2.5, -300, 4, 5])


def test_read_vector_non_numbers_is_an_error(tmp_path):
    (tmp_path / "bad.txt").write_text("1 two 3\n")
    with pytest.raises(ValueError, match="bad.txt"):
        read_vector(tmp_path / "bad.txt")


def test_builtin_on_image_files_matches_cdist(digits):
    X, _ = generate.read_digits()
    X = X[:10].astype(float)
    r = abengine.allpairs(str(digits), str(digits), "euclidean", block=(3, 4), progress=False)
    np.testing.assert_allclose(r, cdist(X, X), rtol=1e-9, atol=1e-12)
    r = abengine.allpairs(str(digits), X[:4], "manhattan", progress=False)
    np.testing.assert_allclose(r, cdist(X, X[:4], "cityblock"), rtol=1e-12)
