"""Shared fixtures: small file sets, digit images, executable scripts, a CLI runner.

Everything is real: files in tmp_path, shell scripts run as processes, HDF5
files written with h5py. Sizes stay small so the whole suite runs in well under
a minute and a half on two cores.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import pytest
from hypothesis.configuration import set_hypothesis_home_dir

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "datasets"))
# Hypothesis keeps a cache of constants even without an example database: keep it in tests/.
set_hypothesis_home_dir(Path(__file__).resolve().parent / ".hypothesis")

import generate  # noqa: E402

import abengine  # noqa: E402

BIN = Path(sys.executable).parent
ALLPAIRS = BIN / "allpairs"
ABENGINE = BIN / "abengine"


# -- helpers importable by the test modules ---------------------------------------------


def live_processes() -> list[tuple[int, str]]:
    """(pid, full command line) of every live process, zombies left out.

    Read through psutil rather than `ps`: ps cuts long command lines to the
    terminal width (80 columns when piped on some systems), which hides the port
    or marker a test looks for behind a long venv path.
    """
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        info = proc.info
        if info["status"] == psutil.STATUS_ZOMBIE or not info["cmdline"]:
            continue
        found.append((info["pid"], " ".join(info["cmdline"])))
    return found


def make_script(path: Path, body: str) -> Path:
    """An executable /bin/sh script with `body` (dedented lines) as its text."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [line.strip() for line in body.strip().splitlines()]
    path.write_text("#!/bin/sh\n" + "\n".join(lines) + "\n")
    path.chmod(0o755)
    return path


def write_numbered(directory: Path, count: int, start: int = 0, list_name: str = "set.list",
                   prefix: str = "n") -> Path:
    """Files n000.txt... each holding its number (start, start+1, ...) and a list file."""
    directory.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        name = f"{prefix}{i:03d}.txt"
        (directory / name).write_text(f"{start + i}\n")
        names.append(name)
    listing = directory / list_name
    listing.write_text("".join(n + "\n" for n in names))
    return listing


def write_sized(directory: Path, sizes: list[int], list_name: str = "set.list") -> Path:
    """Files s00.bin... of the given sizes (random bytes) and a list file naming them."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(sum(sizes) + len(sizes))
    names = []
    for i, size in enumerate(sizes):
        name = f"s{i:02d}.bin"
        (directory / name).write_bytes(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
        names.append(name)
    listing = directory / list_name
    listing.write_text("".join(n + "\n" for n in names))
    return listing


def list_paths(listing: Path) -> list[Path]:
    """The element paths a list file names (relative to the list file's directory)."""
    entries = [e.strip() for e in listing.read_text().splitlines()]
    return [listing.parent / e for e in entries if e and not e.startswith("#")]


def list_names(listing: Path) -> list[str]:
    entries = [e.strip() for e in listing.read_text().splitlines()]
    return [e for e in entries if e and not e.startswith("#")]


def naive(A: list, B: list, f) -> np.ndarray:
    """The reference: a plain double loop."""
    return np.array([[f(a, b) for b in B] for a in A], dtype=float)


@dataclass
class CLIResult:
    returncode: int
    stdout: str
    stderr: str

    def lines(self) -> list[str]:
        return [line for line in self.stdout.splitlines() if line.strip()]

    def cells(self) -> dict[tuple[str, str], str]:
        """Default `entryA<TAB>entryB<TAB>result` output as a dict."""
        out = {}
        for line in self.lines():
            a, b, value = line.split("\t")
            assert (a, b) not in out, f"cell {(a, b)} printed twice"
            out[(a, b)] = value
        return out


def run_cli(*args: object, cwd: Path | None = None, timeout: float = 120,
            env: dict[str, str] | None = None, program: Path = ALLPAIRS) -> CLIResult:
    """Run the installed command line tool as a real process."""
    proc = subprocess.run(
        [str(program), *(str(a) for a in args)], cwd=cwd, capture_output=True, text=True,
        timeout=timeout, env=env, stdin=subprocess.DEVNULL,
    )
    return CLIResult(proc.returncode, proc.stdout, proc.stderr)


def assert_usage_error(result: CLIResult, *needles: str) -> str:
    """Exit status 2, exactly one line on stderr, no traceback; return that line."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def private_memo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Memoised results go to the test's own directory, never to ~/.cache or another test."""
    path = tmp_path / "memo"
    monkeypatch.setenv("ABENGINE_MEMO_DIR", str(path))
    return path


@pytest.fixture(scope="session")
def engine():
    """One local engine (with its process pool) shared by tests that only compute."""
    eng = abengine.LocalEngine(2)
    yield eng
    eng.shutdown()


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """Five random 64-byte files and their list file (generate.write_files)."""
    return generate.write_files(tmp_path / "files", count=5, size=64)


@pytest.fixture
def numbered(tmp_path: Path) -> Path:
    """Six files each holding its number 0..5, and their list file."""
    return write_numbered(tmp_path / "numbered", 6)


@pytest.fixture
def digits(tmp_path: Path) -> Path:
    """The first 10 digit images as PGM files and digits.list."""
    return generate.write_digit_images(tmp_path / "digits", limit=10)


@pytest.fixture
def size_sum(tmp_path: Path) -> Path:
    """F: prints the sum of the sizes of its two files."""
    return make_script(tmp_path / "bin" / "size_sum.sh", """
        a=$(wc -c < "$1"); b=$(wc -c < "$2")
        echo $((a + b))
    """)


@pytest.fixture
def marker_script(tmp_path: Path):
    """F that appends to a marker file each time it runs; returns (script, marker)."""
    marker = tmp_path / "marker.log"
    script = make_script(tmp_path / "bin" / "marked.sh", f"""
        echo ran >> {marker}
        echo 1
    """)
    return script, marker
