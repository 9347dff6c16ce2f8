"""--resume: a run killed with SIGKILL is completed from its .h5 output, and only that."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import h5py
import numpy as np
import pytest
from conftest import ALLPAIRS, assert_usage_error, make_script, run_cli, write_numbered

N = 24  # elements per set: N*N cells in (N/4)^2 blocks of 4x4
BLOCK = 4


def calls(counter) -> int:
    return counter.read_text().count("x") if counter.exists() else 0


def settled_calls(counter, quiet: float = 0.5) -> int:
    seen, since = calls(counter), time.monotonic()
    while time.monotonic() - since < quiet:
        time.sleep(0.05)
        now = calls(counter)
        if now != seen:
            seen, since = now, time.monotonic()
    return seen


@pytest.fixture
def slow(tmp_path):
    """N numbered files and an F that sleeps 10 ms, counts its calls, prints 100a + b."""
    listing = write_numbered(tmp_path / "set", N)
    counter = tmp_path / "calls.log"
    script = make_script(tmp_path / "slow.sh", f"""
        echo x >> {counter}
        sleep 0.01
        read a < "$1"; read b < "$2"
        echo $((a * 100 + b))
    """)
    return listing, script, counter


def test_killed_run_is_resumed_to_the_clean_result(tmp_path, slow):
    listing, script, counter = slow
    common = [listing, listing, script, "-x", BLOCK, "-y", BLOCK, "-q"]
    grid = (N // BLOCK) ** 2

    # a clean run: the reference matrix, and how long the whole thing takes
    start = time.monotonic()
    clean = run_cli(*common, "-o", tmp_path / "clean.h5")
    full_time = time.monotonic() - start
    assert clean.returncode == 0, clean.stderr
    assert calls(counter) == N * N
    with h5py.File(tmp_path / "clean.h5", "r") as f:
        reference = f["result"][...]
    np.testing.assert_array_equal(reference, np.add.outer(100 * np.arange(N), np.arange(N)))
    counter.unlink()

    # the same run, killed with SIGKILL part of the way through
    out = tmp_path / "out.h5"
    part = tmp_path / "out.h5.part"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = dict(os.environ, TMPDIR=str(scratch))  # a killed run cannot clean its scratch
    proc = subprocess.Popen([str(ALLPAIRS), *map(str, common), "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not part.exists():
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(max(0.4 * full_time, 1.5))
        assert proc.poll() is None, "the run finished before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the run and the F processes it started
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists() and part.exists()
    with h5py.File(part, "r") as f:
        done_at_kill = int(f["done"][...].sum())
        assert not bool(f.attrs["complete"])
    assert 0 < done_at_kill < grid, done_at_kill
    # A program forked in the instant of the kill may still start: it is in a session of
    # its own, out of the killed group. Count once no more calls come in.
    killed_calls = settled_calls(counter)
    assert 0 < killed_calls < N * N
    counter.unlink()

    # resuming computes exactly the blocks the killed run had not vouched for
    resumed = run_cli(*common, "-o", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert calls(counter) == BLOCK * BLOCK * (grid - done_at_kill)
    assert calls(counter) < N * N
    assert out.exists() and not part.exists()
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["result"][...], reference)
        assert f["done"][...].all()
        assert bool(f.attrs["complete"])

    # resuming a complete output runs nothing at all
    counter.unlink(missing_ok=True)
    again = run_cli(*common, "-o", out, "--resume")
    assert again.returncode == 0, again.stderr
    assert calls(counter) == 0
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["result"][...], reference)


@pytest.fixture
def finished(tmp_path):
    """A complete small run in done.h5, with its set, F and F's call counter."""
    listing = write_numbered(tmp_path / "set", 6)
    counter = tmp_path / "calls.log"
    script = make_script(tmp_path / "f.sh", f"""
        echo x >> {counter}
        read a < "$1"; read b < "$2"
        echo $((a + 2 * b))
    """)
    out = tmp_path / "done.h5"
    result = run_cli(listing, listing, script, "-x", 2, "-y", 3, "-o", out, "-q")
    assert result.returncode == 0, result.stderr
    counter.unlink()
    return listing, script, counter, out


def unchanged(out) -> None:
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["result"][...],
                                      np.add.outer(np.arange(6), 2 * np.arange(6)))
        assert bool(f.attrs["complete"])


def test_resume_with_a_different_function_is_refused(tmp_path, finished):
    listing, _, counter, out = finished
    other = make_script(tmp_path / "g.sh", f"""
        echo x >> {counter}
        echo 0
    """)
    assert_usage_error(run_cli(listing, listing, other, "-x", 2, "-y", 3, "-o", out,
                               "--resume"), "function")
    # the same path with edited contents is a different F too
    script = tmp_path / "f.sh"
    script.write_text(script.read_text().replace("2 * b", "3 * b"))
    assert_usage_error(run_cli(listing, listing, script, "-x", 2, "-y", 3, "-o", out,
                               "--resume"), "function")
    assert calls(counter) == 0
    unchanged(out)


def test_resume_with_a_different_set_of_the_same_size_is_refused(tmp_path, finished):
    listing, script, counter, out = finished
    other = write_numbered(tmp_path / "other", 6, start=10)
    assert_usage_error(run_cli(listing, other, script, "-x", 2, "-y", 3, "-o", out,
                               "--resume"), "set")
    assert calls(counter) == 0
    unchanged(out)


def test_resume_with_a_set_of_another_size_is_refused(tmp_path, finished):
    listing, script, counter, out = finished
    bigger = write_numbered(tmp_path / "bigger", 8)
    assert_usage_error(run_cli(listing, bigger, script, "-x", 2, "-y", 3, "-o", out,
                               "--resume"))
    assert calls(counter) == 0
    unchanged(out)


@pytest.mark.parametrize("kind", ["not-hdf5", "foreign-hdf5"])
def test_resume_from_a_file_that_is_not_an_abengine_output_is_refused(tmp_path, finished,
                                                                      kind):
    listing, script, counter, _ = finished
    out = tmp_path / "foreign.h5"
    if kind == "not-hdf5":
        out.write_text("just text\n")
    else:
        with h5py.File(out, "w") as f:
            f["something"] = np.ones(3)
    assert_usage_error(run_cli(listing, listing, script, "-x", 2, "-y", 3, "-o", out,
                               "--resume"), "foreign.h5")
    assert calls(counter) == 0
    assert out.exists()  # never destroyed


def test_resume_with_another_blocking_is_refused(finished):
    listing, script, counter, out = finished
    assert_usage_error(run_cli(listing, listing, script, "-x", 3, "-y", 3, "-o", out,
                               "--resume"), "block")
    assert calls(counter) == 0
    unchanged(out)


def test_resume_needs_an_h5_output(tmp_path, finished):
    listing, script, counter, _ = finished
    for output in ("r.npy", "r.txt"):
        assert_usage_error(run_cli(listing, listing, script, "-x", 2, "-y", 3,
                                   "-o", tmp_path / output, "--resume"), "--resume")
    assert_usage_error(run_cli(listing, listing, script, "-x", 2, "-y", 3, "--resume"),
                       "--resume")
    assert calls(counter) == 0
    assert not (tmp_path / "r.npy").exists()


def test_resume_without_a_previous_output_computes_everything(tmp_path, finished):
    listing, script, counter, _ = finished
    out = tmp_path / "fresh.h5"
    result = run_cli(listing, listing, script, "-x", 2, "-y", 3, "-o", out, "--resume", "-q")
    assert result.returncode == 0, result.stderr
    assert calls(counter) == 36
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["result"][...],
                                      np.add.outer(np.arange(6), 2 * np.arange(6)))


def test_resume_recomputes_only_blocks_that_had_failures(tmp_path):
    listing = write_numbered(tmp_path / "set", 6)
    counter = tmp_path / "calls.log"
    flag = tmp_path / "fixed.flag"
    script = make_script(tmp_path / "flaky.sh", f"""
        echo x >> {counter}
        read a < "$1"; read b < "$2"
        if [ "$a$b" = 14 ] && [ ! -e {flag} ]; then echo "not yet" >&2; exit 9; fi
        echo $((a * 6 + b))
    """)
    out = tmp_path / "r.h5"
    args = [listing, listing, script, "-x", 2, "-y", 3, "-o", out, "-q"]
    first = run_cli(*args)
    assert first.returncode == 1
    assert "cell (n001.txt, n004.txt): exit code 9" in first.stderr
    assert calls(counter) == 36
    with h5py.File(out, "r") as f:
        assert np.isnan(f["result"][1, 4])
        assert int(f["done"][...].sum()) == 5  # of 3 x 2 blocks, one had a failure
        assert not bool(f.attrs["complete"])
    counter.unlink()
    flag.touch()
    second = run_cli(*args, "--resume")
    assert second.returncode == 0, second.stderr
    assert calls(counter) == 6  # just the 2 x 3 block holding the failed cell
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["result"][...], np.arange(36).reshape(6, 6))
        assert bool(f.attrs["complete"])


def test_resume_without_a_block_size_cuts_the_stored_blocks(finished):
    """The model may pick other blocks than the interrupted run did: resume must not care."""
    listing, script, counter, out = finished
    with h5py.File(out, "r+") as f:
        reference = f["result"][...]
        f["result"][0:2, 3:6] = -1  # block (0, 1) of the 2 x 3 blocking, as if never done
        done = f["done"][...]
        done[0, 1] = 0
        f["done"][...] = done
        f.attrs["complete"] = False
    resumed = run_cli(listing, listing, script, "-o", out, "--resume", "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert calls(counter) == 2 * 3  # that block only: no probe, no other block
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["result"][...], reference)
        assert bool(f.attrs["complete"])
