"""Stopping F: a per-call time limit, and Ctrl-C, each end every program F started."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from conftest import (
    ALLPAIRS,
    assert_usage_error,
    live_processes,
    make_script,
    run_cli,
    write_numbered,
)

import abengine
from abengine import UsageError


def sleepers_with(marker: str) -> list[str]:
    """Command lines of running processes that mention `marker` (leftovers of a test)."""
    return [line for _, line in live_processes() if marker in line]


def test_a_call_over_the_timeout_is_killed_with_its_children(tmp_path):
    listing = write_numbered(tmp_path / "set", 3)
    marker = str(3000 + os.getpid() % 1000)  # a distinctive sleep length to find leftovers
    script = make_script(tmp_path / "f.sh", f"""
        read a < "$1"; read b < "$2"
        if [ "$a$b" = "12" ]; then sleep {marker}; fi
        echo $((a + b))
    """)
    start = time.monotonic()
    result = run_cli(listing, listing, script, "--timeout", "0.5", "-t", "0.01", "-q")
    assert time.monotonic() - start < 20
    assert result.returncode == 1, result.stderr
    assert "cell (n001.txt, n002.txt): killed after the time limit of 0.5 s" in result.stderr
    assert len(result.cells()) == 8  # every other cell is there
    assert not sleepers_with(f"sleep {marker}")


def test_timeout_is_for_executables(tmp_path):
    with pytest.raises(UsageError, match="timeout"):
        abengine.allpairs([[1.0]], [[2.0]], lambda a, b: 0.0, timeout=1)
    listing = write_numbered(tmp_path / "set", 2)
    assert_usage_error(run_cli(listing, listing, "cosine", "--timeout", "0"), "timeout")


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_stops_the_run_and_every_program_it_started(tmp_path, how):
    """SIGINT is Ctrl-C; SIGTERM is `kill` or a batch system ending the master's job."""
    listing = write_numbered(tmp_path / "set", 4)
    marker = str(4000 + os.getpid() % 1000)
    script = make_script(tmp_path / "f.sh", f"""
        sleep {marker}
        echo 1
    """)
    out = tmp_path / "out.h5"
    proc = subprocess.Popen([str(ALLPAIRS), str(listing), str(listing), str(script), "-t", "60",
                             "-x", "1", "-y", "1", "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while len(sleepers_with(f"sleep {marker}")) < 2:  # both cores busy with F
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(how)
    _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert not sleepers_with(f"sleep {marker}")
    assert (tmp_path / "out.h5.part").exists() and not out.exists()  # kept for --resume
