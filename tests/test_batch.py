"""Batch systems without their daemons: job scripts, options, bad input, local workers.

Everything that runs is real: local workers are processes connecting to a real
master; HTCondor submit descriptions are turned into job ClassAds by the real
htcondor bindings (`htcondor.Submit(...).jobs()`, the same submit-time code as
condor_submit), and the Condor job is then run the way an execute node runs it.
The scheduler daemons themselves are exercised in test_batch_daemons.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
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

import abengine
from abengine import UsageError
from abengine.cli.common import Parser, add_engine_options
from abengine.engines.workqueue import WorkQueueEngine
from abengine.workqueue.batch import SYSTEMS, batch_class, make_batch
from abengine.workqueue.batch.base import ENDING, PENDING, RUNNING, parse_duration, parse_memory
from abengine.workqueue.batch.condor import parse_terse, split_appends
from abengine.workqueue.batch.sge import parse_qstat, parse_qsub
from abengine.workqueue.batch.slurm import parse_sbatch, parse_squeue
from abengine.workqueue.batch.ssh import parse_host
from abengine.workqueue.master import Task, WorkQueue

SECRET = b"0123456789abcdef-not-a-real-secret"


def worker_processes(marker: str) -> list[str]:
    """Command lines of live worker processes that mention `marker` (a port or a path)."""
    return [line for _, line in live_processes()
            if ("abengine.workqueue.worker" in line or "abengine_worker.py" in line)
            and marker in line]


def worker_supports_wall_time() -> bool:
    help_text = subprocess.run([sys.executable, "-m", "abengine.workqueue.worker", "--help"],
                               capture_output=True, text=True).stdout
    return "--wall-time" in help_text


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    """A private HOME: run directories go under it, and must be gone after each run."""
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("HOME", str(path))
    return path


def runs_left(home: Path) -> list[Path]:
    runs = home / ".abengine" / "runs"
    return sorted(runs.iterdir()) if runs.is_dir() else []


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "HOME": str(home), **extra}


# -- the registry and the job scripts ------------------------------------------------------


def test_every_system_is_registered_and_others_are_refused():
    assert list(SYSTEMS) == ["local", "ssh", "slurm", "sge", "condor"]
    for name in SYSTEMS:
        assert batch_class(name).name == name
    with pytest.raises(UsageError, match=r"unknown batch system 'pbs' \(available: local, ssh"):
        batch_class("pbs")


@pytest.mark.parametrize("system", ["local", "slurm", "sge", "condor"])
def test_job_script_holds_the_worker_command_but_never_the_secret(system, home):
    batch = make_batch(system, "10.1.2.3", 9123, SECRET, cores=4, memory=2048, wall_time=5400,
                       verify=False)
    try:
        script = batch.job_script()
        assert script.startswith("#!/bin/sh\n")
        assert SECRET.decode() not in script and SECRET.decode() not in batch.preview()
        (command,) = [line for line in script.splitlines() if " 10.1.2.3 9123 " in line]
        assert command.startswith("exec ") or system == "sge"  # sge: see the next test
        assert " 10.1.2.3 9123 --cores 4 --password-file " in command
        assert "--wall-time 5400" in command and "--timeout 300" in command
        # the secret file: the master's bytes, readable by this user only, in a private dir
        assert batch.secret_file.read_bytes() == SECRET
        assert stat.S_IMODE(batch.secret_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(batch.run_dir.stat().st_mode) == 0o700
        assert batch.run_dir.parent == home / ".abengine" / "runs"
    finally:
        batch.close()
    assert not batch.run_dir.exists()


def test_slurm_directives_and_options():
    batch = make_batch("slurm", "h", 1, SECRET, cores=3, memory=1500, wall_time=61,
                       options="--partition=short -A 'my proj'", verify=False)
    try:
        script = batch.job_script()
        for line in ("#SBATCH --cpus-per-task=3", "#SBATCH --mem=1500M", "#SBATCH --time=2",
                     "#SBATCH --ntasks=1", f"#SBATCH --output={batch.run_dir}/worker-%j.log"):
            assert line in script.splitlines()
        # --batch-options go to sbatch's command line, where they override the directives
        assert batch.submit_argv("job.sh") == ["sbatch", "--parsable", "--partition=short",
                                               "-A", "my proj", "job.sh"]
    finally:
        batch.close()


def test_sge_directives_and_options():
    batch = make_batch("sge", "h", 1, SECRET, cores=4, memory=4096, wall_time=3725,
                       options="-q long.q", verify=False)
    try:
        lines = batch.job_script().splitlines()
        for line in ("#$ -pe smp 4", "#$ -l h_rt=1:02:05", "#$ -l h_vmem=1024M", "#$ -j y",
                     f"#$ -o {batch.run_dir}/worker-$JOB_ID.log", "#$ -notify"):
            assert line in lines
        # qdel's -notify warning (SIGUSR2) becomes the SIGTERM the worker stops cleanly on
        assert lines[-5] == "trap '' USR1 USR2" and lines[-4].endswith(" &")
        assert lines[-3:] == ["worker=$!", "trap 'kill -TERM $worker' USR2",
                              "while kill -0 $worker 2>/dev/null; do wait $worker; done"]
        assert batch.submit_argv("job.sh") == ["qsub", "-terse", "-q", "long.q", "job.sh"]
    finally:
        batch.close()
    one = make_batch("sge", "h", 1, SECRET, verify=False)
    try:
        assert not any("-pe" in line for line in one.job_script().splitlines())
    finally:
        one.close()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """The self-signed certificate and key test_workqueue makes for a TLS master."""
    import test_workqueue

    return test_workqueue.certificate.__wrapped__(tmp_path_factory)


def test_a_tls_master_s_certificate_goes_where_the_jobs_read_it(certificate, home):
    cert, _ = certificate
    batch = make_batch("slurm", "h", 1, SECRET, tls_ca=str(cert), verify=False)
    condor = make_batch("condor", "h", 1, SECRET, tls_ca=str(cert), verify=False)
    try:
        assert batch.tls_ca_file.read_bytes() == cert.read_bytes()
        assert f"--tls-ca {batch.tls_ca_file}" in batch.job_script()
        assert "--tls-ca tls-ca.pem" in condor.job_script()
        assert str(condor.tls_ca_file) in condor.description()
    finally:
        batch.close()
        condor.close()
    plain = make_batch("sge", "h", 1, SECRET, tls=True, verify=False)
    try:
        assert " --timeout 300 --tls" in plain.job_script()
    finally:
        plain.close()


def test_submit_workers_for_a_tls_master(certificate, home):
    cert, key = certificate
    with WorkQueue(port=0, tls_cert=cert, tls_key=key) as q:
        argv = q.worker_command()
        password = argv[argv.index("--password-file") + 1]
        proc = subprocess.Popen([str(ABENGINE), "submit-workers", "-T", "local", "127.0.0.1",
                                 str(q.port), "1", "--password-file", password,
                                 "--tls-ca", str(cert)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                                env=cli_env(home))
        try:
            q.submit(Task("echo over-tls"))
            done = q.wait(timeout=30)
            assert done is not None and done.stdout.strip() == "over-tls"
        finally:
            proc.send_signal(signal.SIGINT)
            _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert not worker_processes(str(q.port))


def test_wall_time_is_passed_to_the_worker_only_when_given():
    batch = make_batch("local", "h", 1, SECRET)
    try:
        assert "--wall-time" not in batch.job_script()
    finally:
        batch.close()


def test_replies_of_the_schedulers_are_parsed():
    assert parse_sbatch("1234\n") == "1234" and parse_sbatch("77;cluster2\n") == "77"
    assert parse_qsub("512\n") == "512" and parse_qsub("513.1-4:1\n") == "513"
    assert parse_terse("1234.0 - 1234.0\n") == "1234.0"
    for bad in (lambda: parse_sbatch(""), lambda: parse_qsub("error"), lambda: parse_terse("")):
        with pytest.raises(UsageError, match="did not print a job id"):
            bad()
    assert parse_squeue("10 PD\n11 R\n12 CG\n13 CA\n") == {
        "10": PENDING, "11": RUNNING, "12": ENDING, "13": ENDING}
    qstat = """\
job-ID  prior   name       user         state submit/start at     queue      slots ja-task-ID
-------------------------------------------------------------------------------------------
      7 0.55500 abengine-w root         r     11/23/2025 22:00:01 all.q@vm       1
      8 0.00000 abengine-w root         qw    11/23/2025 22:00:00                1
      9 0.00000 abengine-w root         Eqw   11/23/2025 22:00:00                1
     10 0.55500 abengine-w root         dr    11/23/2025 22:00:01 all.q@vm       1
"""
    assert parse_qstat(qstat) == {"7": RUNNING, "8": PENDING, "9": ENDING, "10": ENDING}


def test_durations_memory_and_hosts_are_parsed():
    assert parse_duration("90") == 90 and parse_duration("1:30") == 90
    assert parse_duration("2:00:00") == 7200 and parse_duration("1-00:00:10") == 86410
    assert parse_duration("90m") == 5400 and parse_duration("2h") == 7200
    for bad in ("soon", "0", "-5", "1:2:3:4"):
        with pytest.raises(UsageError, match="wall time"):
            parse_duration(bad)
    assert parse_memory("512") == 512 and parse_memory("4G") == 4096 and parse_memory("2gb") == 2048
    with pytest.raises(UsageError, match="memory"):
        parse_memory("lots")
    host = parse_host("alice@node7:2200")
    assert (host.user, host.hostname, host.port) == ("alice", "node7", 2200)
    assert parse_host("[::1]:22").hostname == "::1"
    assert parse_host("node8").port == 22
    for bad in ("a b", "u@h:99999", "h:port"):
        with pytest.raises(UsageError, match="--hosts"):
            parse_host(bad)


def test_batch_options_may_start_with_a_dash_on_the_command_line():
    p = Parser(prog="t")
    add_engine_options(p)
    args = p.parse_args(["--batch-options", "--partition=short --mem=4G", "--workers", "2"])
    assert args.batch_options == "--partition=short --mem=4G" and args.workers == 2


# -- HTCondor: the real bindings validate the description; the job runs as a node runs it --


def condor_bindings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no condor_config": the bindings warn on import
        return pytest.importorskip("htcondor", reason="the htcondor bindings (test extra)")


@pytest.mark.parametrize("cores, memory, wall_time", [(1, None, None), (8, 16384, 7200.5)])
def test_condor_description_is_valid_for_htcondor(cores, memory, wall_time, home):
    htcondor = condor_bindings()
    batch = make_batch("condor", "10.1.2.3", 9123, SECRET, cores=cores, memory=memory,
                       wall_time=wall_time, verify=False,
                       options="-append 'request_gpus = 1' -a '+ProjectName = \"abc\"'")
    try:
        script = batch.write_script()
        description = batch.description(script)
        (ad,) = htcondor.Submit(description).jobs(count=1)  # submit-time processing, no schedd
        assert ad["JobUniverse"] == 5  # vanilla
        assert ad["Cmd"] == str(script)
        assert ad["RequestCpus"] == cores
        assert ad["TransferInput"].split(",") == [str(batch.bundle), str(batch.secret_file)]
        assert "--tls" not in script.read_text()
        assert ad["ShouldTransferFiles"] == "YES"
        assert ad["Iwd"] == str(batch.run_dir)
        assert ad["AbengineWorker"] is True and ad["ProjectName"] == "abc"
        assert ad["RequestGpus"] == 1
        if memory is not None:
            assert ad["RequestMemory"] == memory
        if wall_time is not None:
            assert ad["AllowedJobDuration"] == 7201
        else:
            assert "AllowedJobDuration" not in ad
        assert "worker-$(Cluster).$(Process).log" in description
        assert SECRET.decode() not in description
    finally:
        batch.close()


def test_htcondor_really_checks_descriptions():
    htcondor = condor_bindings()
    with pytest.raises(Exception, match="bogus"):
        list(htcondor.Submit("universe = bogus\nexecutable = /bin/true\n").jobs(count=1))


def test_condor_job_runs_as_an_execute_node_runs_it(tmp_path, home):
    """Transfer the inputs into a scratch directory and run the executable there."""
    with WorkQueue(port=0) as q:
        batch = make_batch("condor", "127.0.0.1", q.port, q.secret, idle_timeout=30,
                           verify=False)
        try:
            script = batch.write_script()
            scratch = tmp_path / "execute" / "dir_1234"
            scratch.mkdir(parents=True)
            for name in (batch.bundle, batch.secret_file, script):
                shutil.copy(name, scratch)
            env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}  # python3: ours
            worker = subprocess.Popen(["/bin/sh", str(scratch / script.name)], cwd=scratch,
                                      env=env, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                q.submit(Task("echo condor-ok"))
                done = q.wait(timeout=30)
                assert done is not None and done.stdout.strip() == "condor-ok"
            finally:
                worker.terminate()
                worker.wait(timeout=10)
        finally:
            batch.close()


def test_condor_without_condor_submit_or_a_schedd_is_one_clear_line(tmp_path, home):
    empty = tmp_path / "empty-path"
    empty.mkdir()
    result = run_cli("submit-workers", "-T", "condor", "127.0.0.1", "9123", "1",
                     "--password-file", __file__, program=ABENGINE,
                     env=cli_env(home, PATH=str(empty)))
    assert_usage_error(result, "condor_submit is not on PATH")
    assert not runs_left(home)


# -- bad input on the command line: one line, exit status 2, nothing left ---------------


@pytest.mark.parametrize("args, needles", [
    (["--engine", "workqueue", "--workers", "2", "--batch", "pbs"],
     ["unknown batch system 'pbs'"]),
    (["--batch", "slurm", "--workers", "2"], ["--batch, --workers", "--engine workqueue"]),
    (["--engine", "workqueue", "--batch", "slurm"], ["--batch", "--workers N"]),
    (["--engine", "workqueue", "--workers", "2", "--batch", "slurm", "--hosts", "a,b"],
     ["--hosts is for --batch ssh"]),
    (["--engine", "workqueue", "--workers", "2", "--batch", "ssh"], ["needs --hosts"]),
    (["--engine", "workqueue", "--workers", "2", "--batch", "slurm", "--batch-options", "'oops"],
     ["--batch-options", "No closing quotation"]),
    (["--engine", "workqueue", "--workers", "2", "--wall-time", "soon"], ["--wall-time"]),
    (["--distribute", "tree"], ["--distribute", "--engine workqueue"]),
    (["--engine", "workqueue", "--workers", "2", "--distribute", "star"], ["--distribute"]),
])
def test_bad_engine_options_are_one_line(args, needles, tmp_path, home):
    listing = write_numbered(tmp_path / "set", 2)
    result = run_cli(listing, listing, "cosine", *args, env=cli_env(home))
    assert_usage_error(result, *needles)
    assert not runs_left(home)


@pytest.mark.parametrize("system, command", [("slurm", "sbatch"), ("sge", "qsub")])
def test_a_missing_scheduler_command_is_one_line(system, command, tmp_path, home):
    listing = write_numbered(tmp_path / "set", 2)
    empty = tmp_path / "empty-path"
    empty.mkdir()
    result = run_cli(listing, listing, "cosine", "--engine", "workqueue", "--workers", "2",
                     "--batch", system, env=cli_env(home, PATH=str(empty)))
    assert_usage_error(result, f"--batch {system}: {command} is not on PATH")
    assert not runs_left(home)


# -- local workers: real processes ------------------------------------------------------


def test_local_workers_compute_all_pairs_and_leave_nothing(home):
    X = np.random.default_rng(1).random((12, 3))
    engine = WorkQueueEngine(workers=2, batch="local")
    port = str(engine.queue.port)
    try:
        assert len(worker_processes(port)) == 2
        remote = abengine.allpairs(X, X, "euclidean", engine=engine, progress=False)
        lam = abengine.allpairs(X, X, lambda a, b: float(a @ b), engine=engine, block=(5, 5),
                                progress=False)
    finally:
        engine.shutdown()
    np.testing.assert_allclose(remote, abengine.allpairs(X, X, "euclidean", progress=False))
    np.testing.assert_allclose(lam, X @ X.T)
    assert not worker_processes(port)
    assert not runs_left(home)


def test_a_worker_that_cannot_start_is_reported_with_its_log(tmp_path, home):
    fake = make_script(tmp_path / "python", """
        echo "fake-python: no module named abengine here" >&2
        exit 1
    """)
    start = time.monotonic()
    with pytest.raises(UsageError, match="every worker job ended before connecting.*"
                                         "fake-python: no module named abengine here"):
        WorkQueueEngine(workers=2, batch="local", worker_python=str(fake))
    assert time.monotonic() - start < 10
    assert not runs_left(home)


def test_workers_that_never_connect_are_given_up_on_with_the_reason(home):
    start = time.monotonic()
    with pytest.raises(UsageError, match=r"no worker connected to nowhere\.invalid:\d+ within "
                                         r"2 s.*cannot reach master nowhere\.invalid"):
        WorkQueueEngine(workers=1, batch="local", master_address="nowhere.invalid",
                        connect_timeout=2)
    assert time.monotonic() - start < 10
    assert not worker_processes("nowhere.invalid")
    assert not runs_left(home)


def test_a_worker_that_dies_is_replaced_while_tasks_remain(tmp_path, home):
    listing = write_numbered(tmp_path / "set", 3)
    slow = make_script(tmp_path / "slow.sh", """
        sleep 0.3
        a=$(cat "$1"); b=$(cat "$2"); echo $((a + b))
    """)
    engine = WorkQueueEngine(workers=2, batch="local")
    port = str(engine.queue.port)
    try:
        assert engine.pool is not None
        victim = engine.pool.alive[0]

        def kill_one_worker() -> None:
            time.sleep(0.5)
            os.killpg(int(victim), signal.SIGKILL)

        import threading

        killer = threading.Thread(target=kill_one_worker)
        killer.start()
        result = abengine.allpairs(listing, listing, str(slow), engine=engine, block=(1, 1),
                                   seconds_per_cell=0.3, progress=False)
        killer.join()
        deadline = time.monotonic() + 10
        while len(engine.pool.submitted) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(engine.pool.submitted) >= 3, engine.pool.submitted  # a replacement came
    finally:
        engine.shutdown()
    np.testing.assert_allclose(result, np.add.outer(np.arange(3), np.arange(3)))
    assert not worker_processes(port)


@pytest.mark.skipif(not worker_supports_wall_time(),
                    reason="the worker has no --wall-time option yet (the lead is adding it)")
def test_workers_given_a_wall_time_start_and_work(home):
    X = np.arange(8.0).reshape(4, 2)
    with WorkQueueEngine(workers=1, batch="local", wall_time=600) as engine:
        result = abengine.allpairs(X, X, "euclidean", engine=engine, progress=False)
    np.testing.assert_allclose(result, abengine.allpairs(X, X, "euclidean", progress=False))


def test_cli_local_workers_equal_the_local_engine(tmp_path, home):
    listing = write_numbered(tmp_path / "set", 6)
    f = make_script(tmp_path / "add.sh", """
        a=$(cat "$1"); b=$(cat "$2"); echo $((a + b))
    """)
    local = run_cli(listing, listing, f, "-q", env=cli_env(home))
    remote = run_cli(listing, listing, f, "-q", "--engine", "workqueue", "--batch", "local",
                     "--workers", "2", env=cli_env(home))
    assert remote.returncode == 0, remote.stderr
    assert remote.cells() == local.cells() and len(local.cells()) == 36
    assert "connect to 127.0.0.1" in remote.stderr and "first worker connected" in remote.stderr
    port = remote.stderr.split("listening on port ")[1].split(";")[0]
    assert not worker_processes(port)
    assert not runs_left(home)


def test_ctrl_c_removes_the_local_workers(tmp_path, home):
    listing = write_numbered(tmp_path / "set", 3)
    marker = str(5000 + os.getpid() % 1000)
    f = make_script(tmp_path / "slow.sh", f"""
        sleep {marker}
        echo 1
    """)
    proc = subprocess.Popen([str(ALLPAIRS), str(listing), str(listing), str(f), "-t", "60",
                             "-x", "1", "-y", "1", "--engine", "workqueue", "--workers", "2",
                             "--batch", "local"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                            env=cli_env(home))
    deadline = time.monotonic() + 30
    while len(sleepers(marker)) < 2:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    port = stderr.split("listening on port ")[1].split(";")[0]
    assert not worker_processes(port)
    assert not sleepers(marker)
    assert not runs_left(home)


def sleepers(marker: str) -> list[str]:
    return [line for _, line in live_processes() if line.startswith(f"sleep {marker}")]


# -- submit-workers for a master started elsewhere -------------------------------------


def test_submit_workers_keeps_them_until_ctrl_c(home):
    with WorkQueue(port=0) as q:
        password = q.worker_command()[-1]
        proc = subprocess.Popen([str(ABENGINE), "submit-workers", "-T", "local", "127.0.0.1",
                                 str(q.port), "2", "--password-file", password],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL, env=cli_env(home))
        try:
            deadline = time.monotonic() + 20
            while q.stats()["workers"] < 2:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
                time.sleep(0.05)
            q.submit(Task("echo from-a-submitted-worker"))
            done = q.wait(timeout=20)
            assert done is not None and done.stdout.strip() == "from-a-submitted-worker"
            assert len(worker_processes(str(q.port))) == 2
        finally:
            proc.send_signal(signal.SIGINT)
            stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert stdout.startswith("submitted 2 local worker job(s): ")
    assert "Traceback" not in stderr
    assert not worker_processes(str(q.port))
    assert not runs_left(home)


def test_submit_workers_detached_says_how_to_remove_them(home):
    with WorkQueue(port=0) as q:
        result = run_cli("submit-workers", "-T", "local", "127.0.0.1", q.port, "1",
                         "--password-file", q.worker_command()[-1], "--detach",
                         program=ABENGINE, env=cli_env(home))
        assert result.returncode == 0, result.stderr
        assert "remove them with: kill -TERM -" in result.stdout
        hint = result.stdout.split("remove them with: ")[1].splitlines()[0]
        deadline = time.monotonic() + 20
        while q.stats()["workers"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        subprocess.run(hint, shell=True, check=True)
        deadline = time.monotonic() + 10
        while worker_processes(str(q.port)):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    shutil.rmtree(home / ".abengine")


def test_submit_workers_dry_run_prints_the_script(home):
    result = run_cli("submit-workers", "-T", "slurm", "10.0.0.5", "9123", "2", "--dry-run",
                     "--cores", "4", "--batch-options", "--account=proj", program=ABENGINE,
                     env=cli_env(home))
    assert result.returncode == 0, result.stderr
    assert "# submitted with: sbatch --parsable --account=proj " in result.stdout
    assert "#SBATCH --cpus-per-task=4" in result.stdout
    assert "10.0.0.5 9123 --cores 4" in result.stdout
    assert not runs_left(home)


def test_submit_workers_bad_input_is_one_line(home):
    assert_usage_error(run_cli("submit-workers", "-T", "local", "127.0.0.1", "9", "1",
                               program=ABENGINE, env=cli_env(home)), "--password-file")
    assert_usage_error(run_cli("submit-workers", "-T", "nope", "127.0.0.1", "9", "1",
                               "--password-file", __file__, program=ABENGINE,
                               env=cli_env(home)), "unknown batch system 'nope'")
    assert_usage_error(run_cli("submit-workers", "-T", "slurm", "127.0.0.1", "9", "1",
                               "--password-file", __file__, "--hosts", "x", program=ABENGINE,
                               env=cli_env(home)), "--hosts")
    assert not runs_left(home)


def test_split_appends():
    assert split_appends(["-a", "x = 1", "-name", "s", "-append", "y = 2"]) == (
        ["x = 1", "y = 2"], ["-name", "s"])
    with pytest.raises(UsageError, match="-append needs"):
        split_appends(["-append"])
