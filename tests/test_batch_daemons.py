"""Workers from real daemons: sshd on 127.0.0.1, single-node SLURM and Grid Engine.

scripts/clusters/up.sh starts them and writes /var/tmp/abengine-clusters/env
(KEY=VALUE lines, one set per system that came up); a system missing from it
is skipped, with the reason. Each test computes a small All-Pairs on two
workers of one system, compares it with the local engine, and then checks
that no job is queued and no worker process is left.
"""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import (
    ABENGINE,
    ALLPAIRS,
    assert_usage_error,
    live_processes,
    make_script,
    run_cli,
    write_numbered,
)
from test_batch import cli_env, runs_left, worker_processes

import abengine
from abengine.engines.workqueue import WorkQueueEngine
from abengine.workqueue.master import Task, WorkQueue

ENV_FILE = Path("/var/tmp/abengine-clusters/env")
MARKERS = {"ssh": "ABENGINE_TEST_SSH_HOST", "slurm": "ABENGINE_TEST_SLURM",
           "sge": "ABENGINE_TEST_SGE"}
SYSTEMS = list(MARKERS)


def read_env() -> dict[str, str]:
    if not ENV_FILE.is_file():
        return {}
    pairs = (line.split("=", 1) for line in ENV_FILE.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs}


CLUSTERS = read_env()


def need(system: str) -> None:
    if MARKERS[system] not in CLUSTERS:
        pytest.skip(f"no {system} daemon in {ENV_FILE}: run scripts/clusters/up.sh {system}")


@pytest.fixture(autouse=True)
def sge_environment(monkeypatch):
    """Grid Engine's commands find their cell through SGE_ROOT and SGE_CELL."""
    for key in ("SGE_ROOT", "SGE_CELL"):
        if key in CLUSTERS:
            monkeypatch.setenv(key, CLUSTERS[key])


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("HOME", str(path))
    return path


def ssh_host() -> str:
    c = CLUSTERS
    return f"{c['ABENGINE_TEST_SSH_USER']}@{c['ABENGINE_TEST_SSH_HOST']}:" \
           f"{c['ABENGINE_TEST_SSH_PORT']}"


def cli_options(system: str) -> list[str]:
    options = ["--engine", "workqueue", "--workers", "2", "--batch", system]
    if system == "ssh":
        options += ["--hosts", ssh_host(), "--ssh-key", CLUSTERS["ABENGINE_TEST_SSH_KEY"],
                    "--ssh-known-hosts", CLUSTERS["ABENGINE_TEST_SSH_KNOWN_HOSTS"]]
    return options


def api_options(system: str) -> dict:
    if system != "ssh":
        return {}
    return {"hosts": [ssh_host()], "ssh_key": CLUSTERS["ABENGINE_TEST_SSH_KEY"],
            "known_hosts": CLUSTERS["ABENGINE_TEST_SSH_KNOWN_HOSTS"]}


def jobs_left(system: str) -> list[str]:
    """Worker jobs the scheduler still lists (any state)."""
    if system == "slurm":
        out = subprocess.run(["squeue", "-h", "-o", "%i %j %t"], capture_output=True,
                             text=True).stdout
    elif system == "sge":
        out = subprocess.run(["qstat"], capture_output=True, text=True).stdout
    else:
        return []
    return [line for line in out.splitlines() if "abengine" in line]


def remote_dirs() -> set[str]:
    """The private directories the ssh system makes on the host (here: this machine)."""
    return set(glob.glob("/tmp/abengine-ssh-????????"))


def port_from(stderr: str) -> str:
    return stderr.split("listening on port ")[1].split(";")[0]


def assert_nothing_left(system: str, port: str, home: Path, dirs_before: set[str]) -> None:
    assert not jobs_left(system), jobs_left(system)
    assert not worker_processes(port), worker_processes(port)
    assert not runs_left(home)
    assert remote_dirs() <= dirs_before


@pytest.fixture
def adder(tmp_path):
    """A 6-element set and F = the sum of two files' numbers."""
    listing = write_numbered(tmp_path / "set", 6)
    f = make_script(tmp_path / "bin" / "add.sh", """
        a=$(cat "$1"); b=$(cat "$2"); echo $((a + b))
    """)
    return listing, f


@pytest.mark.parametrize("system", SYSTEMS)
def test_cli_all_pairs_on_two_workers(system, adder, home):
    need(system)
    listing, f = adder
    before = remote_dirs()
    extra = ["--worker-python", "python3"] if system == "ssh" else []  # ships the bundle
    result = run_cli(listing, listing, f, "-q", *cli_options(system), *extra, env=cli_env(home))
    assert result.returncode == 0, result.stderr
    local = run_cli(listing, listing, f, "-q", env=cli_env(home))
    assert result.cells() == local.cells() and len(local.cells()) == 36
    assert "first worker connected" in result.stderr
    assert_nothing_left(system, port_from(result.stderr), home, before)


def resource_limits(system: str, jobs: list[str]) -> str:
    """What the scheduler recorded for a job's wall time and memory."""
    if system == "slurm":
        return subprocess.run(["squeue", "-h", "-o", "%l %m", "-j", jobs[0]],
                              capture_output=True, text=True).stdout
    if system == "sge":
        out = subprocess.run(["qstat", "-j", jobs[0]], capture_output=True, text=True).stdout
        return " ".join(line for line in out.splitlines() if "resource_list" in line)
    return ""


@pytest.mark.parametrize("system", SYSTEMS)
def test_python_api_all_pairs_on_two_workers(system, adder, home):
    need(system)
    listing, f = adder
    before = remote_dirs()
    engine = WorkQueueEngine(workers=2, batch=system, wall_time=600, memory=2048,
                             **api_options(system))
    port = str(engine.queue.port)
    try:
        assert engine.pool is not None
        limits = resource_limits(system, engine.pool.alive)
        if system == "slurm":
            assert limits.split() == ["10:00", "2G"], limits
        elif system == "sge":
            assert "h_rt=600" in limits and "h_vmem=2048M" in limits, limits
        remote = abengine.allpairs(listing, listing, str(f), engine=engine, progress=False)
        vectors = abengine.allpairs([[1.0, 2.0], [3.0, 4.0]], [[0.0, 1.0]], "euclidean",
                                    engine=engine, progress=False)
    finally:
        engine.shutdown()
    assert (remote == abengine.allpairs(listing, listing, str(f), progress=False)).all()
    assert vectors.round(6).tolist() == [[1.414214], [4.242641]]
    assert_nothing_left(system, port, home, before)


def sleepers(marker: str) -> list[str]:
    return [line for _, line in live_processes() if line.startswith(f"sleep {marker}")]


def sleepers_pids(marker: str) -> list[int]:
    return [pid for pid, line in live_processes() if line == f"sleep {marker}"]


@pytest.mark.parametrize("system", SYSTEMS)
def test_ctrl_c_leaves_no_job_and_no_worker(system, tmp_path, home):
    need(system)
    before = remote_dirs()
    listing = write_numbered(tmp_path / "set", 3)
    marker = str(6000 + os.getpid() % 1000)
    f = make_script(tmp_path / "slow.sh", f"""
        sleep {marker}
        echo 1
    """)
    proc = subprocess.Popen([str(ALLPAIRS), str(listing), str(listing), str(f), "-t", "60",
                             "-x", "1", "-y", "1", *cli_options(system)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, env=cli_env(home))
    deadline = time.monotonic() + 60
    while len(sleepers(marker)) < 2:  # both workers busy
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert_nothing_left(system, port_from(stderr), home, before)
    left = sleepers_pids(marker)  # the programs the tasks started: the worker kills them too
    assert not left


@pytest.mark.parametrize("system, options, needle", [
    ("slurm", "--partition=nope", "sbatch refused the job"),
    ("sge", "-q nope.q", "qsub refused the job"),
])
def test_a_submission_the_scheduler_refuses_is_one_line(system, options, needle, adder, home):
    need(system)
    listing, f = adder
    result = run_cli(listing, listing, f, *cli_options(system), "--batch-options", options,
                     env=cli_env(home))
    line = assert_usage_error(result, needle)
    assert options in line and "nope" in line.split("refused the job: ")[1]  # the culprit
    assert not jobs_left(system) and not runs_left(home)


# -- ssh: what goes wrong before any worker starts -------------------------------------


def ssh_cli(listing: Path, f: Path, home: Path, hosts: str, key: str, known: str):
    return run_cli(listing, listing, f, "--engine", "workqueue", "--workers", "2", "--batch",
                   "ssh", "--hosts", hosts, "--ssh-key", key, "--ssh-known-hosts", known,
                   env=cli_env(home))


def test_ssh_unreachable_host_is_one_line(adder, home):
    need("ssh")
    listing, f = adder
    c = CLUSTERS
    result = ssh_cli(listing, f, home, "root@127.0.0.1:1", c["ABENGINE_TEST_SSH_KEY"],
                     c["ABENGINE_TEST_SSH_KNOWN_HOSTS"])
    assert_usage_error(result, "cannot reach 127.0.0.1 port 1")
    assert not runs_left(home)


def test_ssh_unknown_host_key_is_refused_with_how_to_add_it(adder, home, tmp_path):
    need("ssh")
    listing, f = adder
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    result = ssh_cli(listing, f, home, ssh_host(), CLUSTERS["ABENGINE_TEST_SSH_KEY"],
                     str(empty))
    assert_usage_error(result, "unknown host key",
                       f"ssh-keyscan -p {CLUSTERS['ABENGINE_TEST_SSH_PORT']} 127.0.0.1 >> {empty}")
    assert not runs_left(home)


def test_ssh_rejected_key_is_one_line(adder, home, tmp_path):
    need("ssh")
    listing, f = adder
    stranger = tmp_path / "stranger_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)],
                   check=True)
    result = ssh_cli(listing, f, home, ssh_host(), str(stranger),
                     CLUSTERS["ABENGINE_TEST_SSH_KNOWN_HOSTS"])
    assert_usage_error(result, f"refused the key {stranger}")
    assert not runs_left(home)


def test_ssh_worker_that_cannot_start_has_its_log_brought_back(tmp_path, home):
    need("ssh")
    before = remote_dirs()
    # Passes the python probe, then fails as a broken interpreter would.
    fake = make_script(tmp_path / "python", """
        if [ "$1" = "-c" ]; then exec python3 "$@"; fi
        echo "fake-python: cannot start the worker on this host" >&2
        exit 3
    """)
    with pytest.raises(abengine.UsageError,
                       match="every worker job ended.*fake-python: cannot start the worker"):
        WorkQueueEngine(workers=2, batch="ssh", worker_python=str(fake), **api_options("ssh"))
    assert remote_dirs() <= before
    assert not runs_left(home)


# -- submit-workers for a master started elsewhere ---------------------------------------


@pytest.mark.parametrize("system", ["slurm", "sge"])
def test_submit_workers_serves_a_master_until_ctrl_c(system, home):
    need(system)
    with WorkQueue(port=0) as q:
        proc = subprocess.Popen([str(ABENGINE), "submit-workers", "-T", system, "127.0.0.1",
                                 str(q.port), "2", "--password-file", q.worker_command()[-1]],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL, env=cli_env(home))
        try:
            deadline = time.monotonic() + 60
            while q.stats()["workers"] < 2:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
                time.sleep(0.1)
            for i in range(4):
                q.submit(Task(f"echo task-{i}"))
            outputs = []
            for _ in range(4):
                done = q.wait(timeout=60)
                assert done is not None, q.stats()
                outputs.append(done.stdout.strip())
            assert sorted(outputs) == [f"task-{i}" for i in range(4)]
        finally:
            proc.send_signal(signal.SIGINT)
            stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert stdout.startswith(f"submitted 2 {system} worker job(s): ")
    assert not jobs_left(system) and not worker_processes(str(q.port))
    assert not runs_left(home)
