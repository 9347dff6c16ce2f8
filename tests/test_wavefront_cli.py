"""The `wavefront` command, run as a real process: the classic contract, bad input, failures,
--predict, --plot, and a run killed with SIGKILL then resumed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import assert_usage_error, make_script, run_cli

WAVEFRONT = Path(sys.executable).parent / "wavefront"


def wavefront(*args: object, **kwargs) -> object:
    return run_cli(*args, program=WAVEFRONT, **kwargs)


def write_input(path: Path, X: int, Y: int, value=lambda x, y: x + y) -> Path:
    """INPUT: `x y value` for every boundary cell (x = 0 or y = 0)."""
    cells = [(x, 0) for x in range(X + 1)] + [(0, y) for y in range(1, Y + 1)]
    path.write_text("".join(f"{x} {y} {value(x, y)}\n" for x, y in cells))
    return path


def read_output(path: Path) -> dict[tuple[int, int], str]:
    """OUTPUT's cells; a last line without its newline (torn by a kill) does not count."""
    text = path.read_text()
    cells = {}
    for line in text[:text.rfind("\n") + 1].splitlines():
        x, y, value = line.split(" ", 2)
        assert (int(x), int(y)) not in cells, f"cell {x} {y} written twice"
        cells[(int(x), int(y))] = value
    return cells


def reference(X: int, Y: int, F=lambda lf, bl, dg: lf + bl + dg) -> dict[tuple[int, int], str]:
    R = {(x, 0): x for x in range(X + 1)} | {(0, y): y for y in range(Y + 1)}
    for x in range(1, X + 1):
        for y in range(1, Y + 1):
            R[(x, y)] = F(R[(x - 1, y)], R[(x, y - 1)], R[(x - 1, y - 1)])
    return {(x, y): str(v) for (x, y), v in R.items() if x and y}


@pytest.fixture
def summer(tmp_path):
    """F = the sum of its three files; every call is logged as `x y`."""
    log = tmp_path / "calls.log"
    script = make_script(tmp_path / "bin" / "sum.sh", f"""
        echo "$1 $2" >> {log}
        echo $(( $(cat $3) + $(cat $4) + $(cat $5) ))
    """)
    return script, log


def calls(log: Path) -> list[tuple[int, int]]:
    if not log.exists():
        return []
    return [tuple(map(int, line.split())) for line in log.read_text().splitlines()]


def test_the_classic_sum(tmp_path, summer):
    script, log = summer
    write_input(tmp_path / "in.txt", 10, 10, lambda x, y: x + y)  # R[i, 0] = R[0, i] = i
    result = wavefront(script, 10, 10, tmp_path / "in.txt", tmp_path / "out.txt", "-q")
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and result.stdout == ""
    assert read_output(tmp_path / "out.txt") == reference(10, 10)
    assert sorted(calls(log)) == sorted(set(calls(log)))  # no cell computed twice
    assert not (tmp_path / "out.txt.part").exists()


def test_a_python_module_function_gets_numbers(tmp_path):
    (tmp_path / "wf_cli_mod.py").write_text(
        "def step(x, y, left, below, diag):\n"
        "    return max(left, below) + diag * 0.5 + x\n")
    write_input(tmp_path / "in.txt", 4, 3)
    result = wavefront("wf_cli_mod:step", 4, 3, "in.txt", "out.txt", "-b", "2", "-q",
                       cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    expected = {}
    R = {(x, 0): x for x in range(5)} | {(0, y): y for y in range(4)}
    for x in range(1, 5):
        for y in range(1, 4):
            R[(x, y)] = max(R[(x - 1, y)], R[(x, y - 1)]) + R[(x - 1, y - 1)] * 0.5 + x
            expected[(x, y)] = repr(float(R[(x, y)]))
    assert read_output(tmp_path / "out.txt") == expected


@pytest.mark.parametrize("sizes, needle", [
    (("0", "3"), "XSIZE must be a positive integer, not '0'"),
    (("abc", "3"), "XSIZE must be a positive integer, not 'abc'"),
    (("-3", "3"), "XSIZE must be a positive integer, not '-3'"),
    (("2.5", "3"), "XSIZE must be a positive integer, not '2.5'"),
    (("3", "x"), "YSIZE must be a positive integer, not 'x'"),
])
def test_sizes_must_be_positive_integers(tmp_path, summer, sizes, needle):
    write_input(tmp_path / "in.txt", 3, 3)
    result = wavefront(summer[0], *sizes, tmp_path / "in.txt", tmp_path / "out.txt")
    assert_usage_error(result, needle)


@pytest.mark.parametrize("content, needle", [
    ("0 0 0\n1 0 1\n2 0 2\n0 1 1\n0 2 2\n", "boundary cell (0, 3) is missing"),
    ("0 0 0\n0 1 1\n0 2 2\n0 3 3\n", "boundary cell (1, 0) is missing (and 1 more)"),
    ("0 0 0\n1 0 1\n2 0\n", "line 3: expected `x y value`, got '2 0'"),
    ("0 0 0\nx 0 1\n", "line 2: expected `x y value`"),
    ("0 0 0\n1 0 1\n2 0 2\n0 1 1\n0 2 2\n0 3 3\n1 1 5\n", "line 7: cell (1, 1) is not a boundary"),
    ("0 0 0\n1 0 1\n2 0 2\n3 0 3\n", "line 4: cell (3, 0) is outside the matrix (x = 0..2, "
                                     "y = 0..3)"),
    ("0 0 0\n1 0 1\n1 0 2\n", "line 3: cell (1, 0) was given before with another value ('1')"),
])
def test_bad_input_is_one_line_naming_the_problem(tmp_path, summer, content, needle):
    (tmp_path / "in.txt").write_text(content)
    result = wavefront(summer[0], 2, 3, tmp_path / "in.txt", tmp_path / "out.txt")
    assert_usage_error(result, needle)
    assert not (tmp_path / "out.txt").exists() and not calls(summer[1])


def test_other_bad_usage(tmp_path, summer):
    script, _ = summer
    write_input(tmp_path / "in.txt", 3, 3)
    args = (3, 3, tmp_path / "in.txt", tmp_path / "out.txt")
    assert_usage_error(wavefront(script, 3, 3, tmp_path / "missing.txt", tmp_path / "out.txt"),
                       "INPUT", "missing.txt: not found")
    assert_usage_error(wavefront(tmp_path / "nope.sh", *args), "nope.sh not found")
    assert_usage_error(wavefront(script, *args, "-b", "0"),
                       "-b/--block-size must be a positive integer or auto, not '0'")
    assert_usage_error(wavefront("cosine", *args), "All-Pairs builtin")
    assert_usage_error(wavefront(script, *args, "--workers", "2"),
                       "--workers: these go with --engine workqueue")
    (tmp_path / "out.txt").write_text("1 1 2\nthis is not a cell\n")
    assert_usage_error(wavefront(script, *args, "--resume"), "out.txt line 2: expected")
    (tmp_path / "out.txt").write_text("4 1 2\n")
    assert_usage_error(wavefront(script, *args, "--resume"),
                       "out.txt line 1: cell (4, 1) is not a computed cell")


def test_a_failing_cell_is_named_the_rest_kept_and_resume_finishes(tmp_path, summer):
    script, log = summer
    broken = make_script(tmp_path / "bin" / "broken.sh", f"""
        echo "$1 $2" >> {log}
        if [ "$1 $2" = "3 4" ]; then echo "cannot do 3 4" >&2; exit 3; fi
        echo $(( $(cat $3) + $(cat $4) + $(cat $5) ))
    """)
    write_input(tmp_path / "in.txt", 8, 8)
    out = tmp_path / "out.txt"
    result = wavefront(broken, 8, 8, tmp_path / "in.txt", out, "-b", "3", "-q")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "wavefront: cell (3, 4): exit code 3" in result.stderr
    assert "cannot do 3 4" in result.stderr
    assert "wavefront: 29 cells depend on a failed cell and were not computed" in result.stderr
    depends = {(x, y) for x in range(3, 9) for y in range(4, 9)}
    kept = read_output(out)
    expected = reference(8, 8)
    assert kept == {c: v for c, v in expected.items() if c not in depends}
    assert set(calls(log)) == set(expected) - depends | {(3, 4)}  # nothing depending on it ran
    assert len(calls(log)) == len(set(calls(log)))
    log.unlink()
    resumed = wavefront(script, 8, 8, tmp_path / "in.txt", out, "--resume", "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(calls(log)) == sorted(depends)  # exactly the missing cells
    assert read_output(out) == expected


def test_predict_prints_candidates_and_the_choice_last(tmp_path, summer):
    script, log = summer
    write_input(tmp_path / "in.txt", 30, 20)
    out = tmp_path / "out.txt"
    result = wavefront(script, 30, 20, tmp_path / "in.txt", out, "--predict", "-t", "0.5")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert re.fullmatch(r"block_size=\d+ predicted_seconds=\d+\.\d{3}", lines[-1]), lines[-1]
    assert lines[0].startswith("# F: 0.5 s per cell (given)")
    assert not calls(log) and not out.exists()  # with -t, nothing runs at all
    result = wavefront(script, 30, 20, tmp_path / "in.txt", out, "--predict", "-b", "4")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("block_size=4 predicted_seconds=")
    sampled = calls(log)
    assert 1 <= len(sampled) <= 16 * 16 + 4 and not out.exists()  # F timed on a few cells only


def test_plot_draws_the_prediction_and_the_run(tmp_path, summer):
    pytest.importorskip("matplotlib")
    script, _ = summer
    write_input(tmp_path / "in.txt", 6, 6)
    result = wavefront(script, 6, 6, tmp_path / "in.txt", tmp_path / "o.txt", "--predict",
                       "--plot", tmp_path / "predicted.png", "-t", "0.01")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "predicted.png").read_bytes()[:4] == b"\x89PNG"
    result = wavefront(script, 6, 6, tmp_path / "in.txt", tmp_path / "o.txt", "-b", "2",
                       "--plot", tmp_path / "run.png", "-q")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "run.png").read_bytes()[:4] == b"\x89PNG"
    assert_usage_error(wavefront(script, 6, 6, tmp_path / "in.txt", tmp_path / "o.txt",
                                 "--plot", tmp_path / "p.jpg"), "--plot", ".png")


def test_a_killed_run_resumed_gives_the_same_result(tmp_path):
    X = Y = 10
    log = tmp_path / "calls.log"
    slow = make_script(tmp_path / "slow.sh", f"""
        echo "$1 $2" >> {log}
        sleep 0.03
        echo $(( ($(cat $3) + 2 * $(cat $4) + 3 * $(cat $5)) % 100003 ))
    """)
    write_input(tmp_path / "in.txt", X, Y)
    common = [slow, X, Y, tmp_path / "in.txt"]
    clean = wavefront(*common, tmp_path / "clean.txt", "-b", "2", "-q")
    assert clean.returncode == 0, clean.stderr
    expected = read_output(tmp_path / "clean.txt")
    assert len(expected) == X * Y
    log.unlink()

    out, part = tmp_path / "out.txt", tmp_path / "out.txt.part"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = dict(os.environ, TMPDIR=str(scratch))  # a killed run cannot clean its scratch
    proc = subprocess.Popen([str(WAVEFRONT), *map(str, common), str(out), "-b", "2", "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not part.exists() or len(part.read_text().splitlines()) < 20:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the run and the F processes it started
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    time.sleep(0.3)  # calls of F already started (each in a session of its own) run out
    assert not out.exists()
    kept = read_output(part)
    assert 20 <= len(kept) < X * Y
    assert all(expected[c] == v for c, v in kept.items())
    log.unlink()

    resumed = wavefront(*common, out, "--resume", "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert read_output(out) == expected
    assert sorted(calls(log)) == sorted(set(expected) - set(kept))  # only the missing cells
    assert not part.exists()
