"""The `allpairs` and `abengine` commands, run as real processes."""

from __future__ import annotations

import os
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import (
    ABENGINE,
    assert_usage_error,
    list_names,
    list_paths,
    make_script,
    run_cli,
    write_numbered,
    write_sized,
)
from scipy.spatial.distance import cdist

from abengine import BUILTINS


@pytest.fixture
def two_sets(tmp_path):
    """SET_A written with odd but valid entries (./, subdir, comments); SET_B plain."""
    data = tmp_path / "data"
    write_sized(data, [1, 2, 3, 40])
    (data / "sub").mkdir()
    (data / "sub" / "deep.bin").write_bytes(b"x" * 11)
    set_a = data / "a.list"
    set_a.write_text("# set A\ns00.bin\n\n./s01.bin\nsub/deep.bin\n")
    set_b = write_sized(tmp_path / "other", [5, 7, 0], list_name="b.list")
    return set_a, set_b


def sizes_of(listing: Path) -> dict[str, int]:
    return {n: (listing.parent / n).stat().st_size for n in list_names(listing)}


def test_default_output_is_tab_separated_entries_as_written(two_sets, size_sum, tmp_path):
    set_a, set_b = two_sets
    result = run_cli(set_a, set_b, size_sum, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    cells = result.cells()
    sa, sb = sizes_of(set_a), sizes_of(set_b)
    assert set(cells) == {(a, b) for a in sa for b in sb}
    assert {a for a, _ in cells} == {"s00.bin", "./s01.bin", "sub/deep.bin"}
    for (a, b), value in cells.items():
        assert int(value) == sa[a] + sb[b]


def test_blocks_and_relative_paths_from_another_directory(two_sets, size_sum, tmp_path):
    set_a, set_b = two_sets
    os.symlink(size_sum, tmp_path / "F")
    rel_a = os.path.relpath(set_a, tmp_path)
    result = run_cli(rel_a, set_b, "./F", "-x", "2", "-y", "1", "-q", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(result.cells()) == 9


def test_builtin_on_npy_sets(tmp_path):
    rng = np.random.default_rng(0)
    X, Y = rng.random((4, 3)), rng.random((3, 3))
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", Y)
    result = run_cli(tmp_path / "x.npy", tmp_path / "y.npy", "euclidean", "-q")
    assert result.returncode == 0, result.stderr
    cells = result.cells()
    expected = cdist(X, Y)
    assert len(cells) == 12
    for (a, b), value in cells.items():
        assert float(value) == pytest.approx(expected[int(a), int(b)], rel=1e-12)


def test_bitwise_builtin(tmp_path):
    listing = write_sized(tmp_path / "f", [4, 4, 6])
    blobs = [p.read_bytes() for p in list_paths(listing)]
    result = run_cli(listing, listing, "BITWISE")
    assert result.returncode == 0, result.stderr
    names = list_names(listing)
    for (a, b), value in result.cells().items():
        x, y = blobs[names.index(a)], blobs[names.index(b)]
        n = min(len(x), len(y))
        expected = sum(p != q for p, q in zip(x[:n], y[:n])) + abs(len(x) - len(y))
        assert int(value) == expected


def test_outputs_by_extension(two_sets, size_sum, tmp_path):
    set_a, set_b = two_sets
    sa, sb = list(sizes_of(set_a).values()), list(sizes_of(set_b).values())
    expected = np.add.outer(sa, sb)
    for name in ("r.txt", "r.npy", "r.h5"):
        out = tmp_path / name
        result = run_cli(set_a, set_b, size_sum, "-o", out, "-q")
        assert result.returncode == 0, result.stderr
        assert result.stdout == "" and result.stderr == ""
        assert out.exists() and not Path(str(out) + ".part").exists()
    np.testing.assert_array_equal(np.load(tmp_path / "r.npy"), expected)
    with h5py.File(tmp_path / "r.h5", "r") as f:
        np.testing.assert_array_equal(f["result"][...], expected)
        assert f["done"][...].all()
        assert bool(f.attrs["complete"]) is True
    lines = (tmp_path / "r.txt").read_text().splitlines()
    assert len(lines) == expected.size
    names_a, names_b = list_names(set_a), list_names(set_b)
    for line in lines:
        a, b, value = line.split("\t")
        assert int(value) == expected[names_a.index(a), names_b.index(b)]


def test_extra_args_extra_file_and_symmetric(tmp_path):
    listing = write_numbered(tmp_path / "n", 5)
    (tmp_path / "shift.txt").write_text("1000\n")
    calls = tmp_path / "calls.log"
    script = make_script(tmp_path / "f.sh", f"""
        echo x >> {calls}
        read s < shift.txt
        read a < "$3"; read b < "$4"
        echo $((s + $1 * (a + b) + $2 * a * b))
    """)
    result = run_cli(listing, listing, script, "-e", "3 5", "-f", tmp_path / "shift.txt",
                     "--symmetric", "-x", "2", "-y", "2", "-q")
    assert result.returncode == 0, result.stderr
    cells = result.cells()
    assert len(cells) == 25
    for i in range(5):
        for j in range(5):
            assert int(cells[(f"n{i:03d}.txt", f"n{j:03d}.txt")]) == 1000 + 3 * (i + j) + 5 * i * j
    assert calls.read_text().count("x") == 15  # one triangle, mirrored


def test_module_function_from_the_current_directory(tmp_path):
    listing = write_numbered(tmp_path / "n", 3)
    (tmp_path / "abe_cli_mod.py").write_text(
        "def pair(a, b):\n"
        "    return int(open(a).read()) * 10 + int(open(b).read())\n")
    result = run_cli(listing, listing, "abe_cli_mod:pair", "-q", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    cells = result.cells()
    assert len(cells) == 9
    for (a, b), value in cells.items():
        assert int(value) == int(a[1:4]) * 10 + int(b[1:4])
    assert_usage_error(run_cli(listing, listing, "abe_cli_mod:absent", cwd=tmp_path),
                       "absent")


def test_predict_prints_the_block_and_time_last(two_sets, marker_script):
    set_a, set_b = two_sets
    script, marker = marker_script
    result = run_cli(set_a, set_b, script, "--predict", "-t", "0.5")
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"block_size=\d+x\d+ predicted_seconds=\d+(\.\d+)?", last), last
    assert not marker.exists()  # with -t given, nothing at all runs
    result = run_cli(set_a, set_b, script, "--predict", "-t", "0.01", "-x", "2", "-y", "2")
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("block_size=2x2 predicted_seconds=")
    assert not marker.exists()
    result = run_cli(set_a, set_b, "BITWISE", "--predict")  # F measured on a probe
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"block_size=\d+x\d+ predicted_seconds=\d+(\.\d+)?",
                        result.stdout.strip().splitlines()[-1])


def test_quiet_run_prints_nothing_on_stderr(two_sets, size_sum):
    set_a, set_b = two_sets
    result = run_cli(set_a, set_b, size_sum, "-q")
    assert result.returncode == 0
    assert result.stderr == ""
    assert len(result.cells()) == 9


def test_failing_cells_exit_1_and_the_others_are_printed(tmp_path):
    listing = write_numbered(tmp_path / "n", 5)
    script = make_script(tmp_path / "picky.sh", """
        read a < "$1"; read b < "$2"
        if [ $(( (a + b) % 3 )) -eq 0 ]; then echo "refusing $a and $b" >&2; exit 3; fi
        echo $((a * 10 + b))
    """)
    result = run_cli(listing, listing, script, "-x", "2", "-y", "3")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    bad = {(i, j) for i in range(5) for j in range(5) if (i + j) % 3 == 0}
    cells = result.cells()
    assert set(cells) == {(f"n{i:03d}.txt", f"n{j:03d}.txt")
                          for i in range(5) for j in range(5) if (i, j) not in bad}
    for (a, b), value in cells.items():
        assert int(value) == int(a[1:4]) * 10 + int(b[1:4])
    for i, j in bad:
        a, b = f"n{i:03d}.txt", f"n{j:03d}.txt"
        lines = [line for line in result.stderr.splitlines() if f"cell ({a}, {b}):" in line]
        assert len(lines) == 1, (a, b, result.stderr)
        assert "exit code 3" in lines[0]
        after = result.stderr.split(lines[0], 1)[1].lstrip("\n").splitlines()[0]
        assert f"refusing {i} and {j}" in after


# -- bad input: exit 2, one line, no traceback ----------------------------------------------


def test_missing_list_file(tmp_path, files, size_sum):
    line = assert_usage_error(run_cli(tmp_path / "nope.list", files, size_sum), "nope.list")
    assert "SET_A" in line


def test_empty_set(tmp_path, files, size_sum):
    empty = tmp_path / "empty.list"
    empty.write_text("# nothing here\n\n")
    assert_usage_error(run_cli(files, empty, size_sum), "empty", "SET_B")


def test_missing_element(tmp_path, size_sum):
    listing = write_numbered(tmp_path / "n", 3)
    (listing.parent / "n002.txt").unlink()
    assert_usage_error(run_cli(listing, listing, size_sum), "n002.txt")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_element(tmp_path, size_sum):
    listing = write_numbered(tmp_path / "n", 3)
    (listing.parent / "n001.txt").chmod(0)
    assert_usage_error(run_cli(listing, listing, size_sum), "n001.txt")


def test_function_missing(tmp_path, files):
    assert_usage_error(run_cli(files, files, tmp_path / "nope.sh"), "nope.sh")


def test_function_not_executable(tmp_path, files):
    script = make_script(tmp_path / "plain.sh", "echo 1")
    script.chmod(0o644)
    assert_usage_error(run_cli(files, files, script), "plain.sh", "not executable")


def test_unknown_builtin(files):
    assert_usage_error(run_cli(files, files, "cosinus"), "cosinus")


def test_output_under_a_missing_directory_is_refused_before_any_work(tmp_path, files,
                                                                    marker_script):
    script, marker = marker_script
    out = tmp_path / "no" / "such" / "r.npy"
    assert_usage_error(run_cli(files, files, script, "-o", out), "r.npy")
    assert not marker.exists()


def test_output_under_a_regular_file_is_refused_before_any_work(tmp_path, files,
                                                               marker_script):
    script, marker = marker_script
    blocker = tmp_path / "blocker"
    blocker.write_text("I am a file")
    for name in ("r.h5", "r.txt"):
        assert_usage_error(run_cli(files, files, script, "-o", blocker / name), name)
    assert not marker.exists()
    assert blocker.read_text() == "I am a file"


def test_output_of_unknown_type(tmp_path, files, marker_script):
    script, marker = marker_script
    assert_usage_error(run_cli(files, files, script, "-o", tmp_path / "r.csv"), "r.csv")
    assert not marker.exists()


def test_non_numeric_output_to_npy_names_the_cell(tmp_path):
    listing = write_numbered(tmp_path / "n", 4)
    script = make_script(tmp_path / "words.sh", """
        read a < "$1"; read b < "$2"
        if [ "$a" = 1 ] && [ "$b" = 3 ]; then echo "one-three"; else echo $((a + b)); fi
    """)
    out = tmp_path / "r.npy"
    line = assert_usage_error(run_cli(listing, listing, script, "-o", out, "-x", "2"),
                              "cell (n001.txt, n003.txt)", "one-three")
    assert "not a number" in line
    assert not out.exists()


@pytest.mark.parametrize("args", [["-x", "0"], ["-x", "0", "-y", "2"], ["-y", "0"]])
def test_zero_block_size_is_refused(files, size_sum, args):
    assert_usage_error(run_cli(files, files, size_sum, *args))


@pytest.mark.parametrize("args", [["-x", "abc"], ["-y", "-2"], ["-t", "0"], ["--bogus"],
                                  ["-e", "'unbalanced"]])
def test_bad_options(files, size_sum, args):
    assert_usage_error(run_cli(files, files, size_sum, *args))


def test_missing_arguments(files):
    assert_usage_error(run_cli(files, files))


def test_extra_args_with_a_builtin(files):
    assert_usage_error(run_cli(files, files, "BITWISE", "-e", "x"), "extra arguments")


def test_missing_extra_file(tmp_path, files, size_sum):
    assert_usage_error(run_cli(files, files, size_sum, "-f", tmp_path / "gone.txt"),
                       "gone.txt")


def test_symmetric_with_different_sets(tmp_path, files, size_sum):
    other = write_numbered(tmp_path / "n", 3)
    assert_usage_error(run_cli(files, other, size_sum, "--symmetric"), "symmetric")


def test_executable_on_an_array_set(tmp_path, files, size_sum):
    np.save(tmp_path / "x.npy", np.ones((3, 2)))
    assert_usage_error(run_cli(tmp_path / "x.npy", files, size_sum), "SET_A")


@pytest.mark.parametrize("cores", ["0", "-1"])
def test_bad_core_count(files, size_sum, cores):
    assert_usage_error(run_cli(files, files, size_sum, "--cores", cores), "cores")


def test_cores_option(files, size_sum):
    result = run_cli(files, files, size_sum, "--cores", "1", "-q")
    assert result.returncode == 0 and len(result.cells()) == 25
    assert set(result.cells().values()) == {"128"}


# -- the abengine umbrella command -----------------------------------------------------------


def test_abengine_map_prints_entry_and_result(tmp_path):
    listing = write_sized(tmp_path / "s", [3, 0, 12])
    script = make_script(tmp_path / "size.sh", 'wc -c < "$1"')
    result = run_cli("map", listing, script, program=ABENGINE)
    assert result.returncode == 0, result.stderr
    pairs = dict(line.split("\t") for line in result.lines())
    assert pairs == {"s00.bin": "3", "s01.bin": "0", "s02.bin": "12"}
    out = tmp_path / "m.npy"
    result = run_cli("map", listing, script, "-o", out, "-b", "2", "-q", program=ABENGINE)
    assert result.returncode == 0 and result.stderr == ""
    np.testing.assert_array_equal(np.load(out), [3, 0, 12])


def test_abengine_map_failures_and_bad_input(tmp_path):
    listing = write_numbered(tmp_path / "n", 4)
    script = make_script(tmp_path / "f.sh", """
        read x < "$1"
        if [ "$x" = 2 ]; then echo "two is bad" >&2; exit 5; fi
        echo $((x * x))
    """)
    result = run_cli("map", listing, script, program=ABENGINE)
    assert result.returncode == 1
    assert dict(line.split("\t") for line in result.lines()) == {
        "n000.txt": "0", "n001.txt": "1", "n003.txt": "9"}
    failure = [line for line in result.stderr.splitlines() if "n002.txt" in line]
    assert len(failure) == 1 and "exit code 5" in failure[0]
    assert "two is bad" in result.stderr
    assert_usage_error(run_cli("map", tmp_path / "nope.list", script, program=ABENGINE),
                       "nope.list")
    assert_usage_error(run_cli("map", listing, tmp_path / "nope.sh", program=ABENGINE),
                       "nope.sh")


def test_abengine_builtins_lists_every_builtin():
    result = run_cli("builtins", program=ABENGINE)
    assert result.returncode == 0
    listed = {line.split()[0].lower() for line in result.lines()}
    assert listed == set(BUILTINS)


def test_abengine_allpairs_is_the_allpairs_command(two_sets, size_sum):
    set_a, set_b = two_sets
    direct = run_cli(set_a, set_b, size_sum, "-q")
    umbrella = run_cli("allpairs", set_a, set_b, size_sum, "-q", program=ABENGINE)
    assert umbrella.returncode == 0
    assert umbrella.cells() == direct.cells()


def test_help_exits_0():
    result = run_cli("--help")
    assert result.returncode == 0 and "SET_A" in result.stdout


def test_memo_on_the_command_line_computes_nothing_twice(tmp_path, marker_script):
    script, marker = marker_script
    listing = write_numbered(tmp_path / "set", 4)
    store = tmp_path / "memo"
    first = run_cli(listing, listing, script, "--memo", store, "-x", "2", "-y", "2", "-q")
    assert first.returncode == 0, first.stderr
    calls = len(marker.read_text().splitlines())
    assert calls == 16
    again = run_cli(listing, listing, script, "--memo", store, "-x", "2", "-y", "2", "-q")
    assert again.returncode == 0
    assert sorted(again.stdout.splitlines()) == sorted(first.stdout.splitlines())
    assert len(marker.read_text().splitlines()) == calls  # every block from the memo
    mapped = run_cli("map", listing, script, "--memo", store, "-q", program=ABENGINE)
    assert mapped.returncode == 0, mapped.stderr
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    bad = run_cli(listing, listing, script, "--memo", not_a_dir, "-q")
    assert_usage_error(bad, "memo directory", str(not_a_dir))
