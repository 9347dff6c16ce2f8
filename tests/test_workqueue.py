"""The Work Queue master and workers: real processes, real sockets on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import abengine
from abengine.engines.workqueue import WorkQueueEngine
from abengine.workqueue.master import CANCELLED, DONE, FAILED, Task, WorkQueue
from abengine.workqueue.status import query


def start_worker(q: WorkQueue, cores: int = 1, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([*q.worker_command(cores=cores), "--timeout", "30", *extra],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def wait_for_workers(q: WorkQueue, n: int, within: float = 20) -> None:
    deadline = time.monotonic() + within
    while q.stats()["workers"] < n:
        assert time.monotonic() < deadline, q.stats()
        time.sleep(0.05)


def finish_all(q: WorkQueue, within: float = 60) -> list[Task]:
    done = []
    deadline = time.monotonic() + within
    while not q.empty():
        task = q.wait(timeout=max(0.1, deadline - time.monotonic()))
        assert task is not None, f"timed out: {q.stats()}"
        done.append(task)
    return done


@pytest.fixture
def queue():
    q = WorkQueue(port=0, heartbeat=1.0)
    workers: list[subprocess.Popen] = []
    yield q, workers
    q.close()
    for w in workers:
        w.terminate()
    for w in workers:
        w.wait(timeout=10)


def test_tasks_with_files_in_and_out(queue, tmp_path):
    q, workers = queue
    workers += [start_worker(q), start_worker(q)]
    data = tmp_path / "data.txt"
    data.write_text("b\na\nc\n")
    for i in range(20):
        t = Task(f"sort in.txt > out.txt && echo {i}")
        t.add_input(data, "in.txt")
        t.add_output("out.txt", tmp_path / f"sorted{i}.txt")
        q.submit(t)
    done = finish_all(q)
    assert sorted(int(t.stdout) for t in done) == list(range(20))
    assert all(t.state == DONE and t.exit_code == 0 for t in done)
    for i in range(20):
        assert (tmp_path / f"sorted{i}.txt").read_text() == "a\nb\nc\n"


def test_exit_codes_and_missing_outputs(queue, tmp_path):
    q, workers = queue
    workers.append(start_worker(q))
    q.submit(Task("echo oops >&2; exit 3"))
    t = Task("true")
    t.add_output("never.txt", tmp_path / "never.txt")
    q.retries = 0
    q.submit(t)
    done = {t.command: t for t in finish_all(q)}
    assert done["echo oops >&2; exit 3"].exit_code == 3
    assert "oops" in done["echo oops >&2; exit 3"].stderr
    assert done["true"].state == FAILED and "never.txt" in done["true"].error


def test_wall_time_kills_a_hung_task(queue):
    q, workers = queue
    workers.append(start_worker(q))
    q.retries = 0
    t = Task("sleep 60", wall_time=0.5)
    q.submit(t)
    (done,) = finish_all(q, within=30)
    assert done.state == FAILED and "wall time" in done.error


def test_kill_9_of_a_worker_loses_no_task_and_counts_none_twice(queue, tmp_path):
    q, workers = queue
    victim = start_worker(q)
    workers += [victim, start_worker(q)]
    wait_for_workers(q, 2)
    for i in range(30):
        t = Task(f"sleep 0.1; echo {i}")
        q.submit(t)
    time.sleep(0.5)
    victim.send_signal(signal.SIGKILL)
    done = finish_all(q, within=60)
    assert sorted(int(t.stdout) for t in done) == list(range(30))  # each exactly once
    assert all(t.state == DONE for t in done)


def test_a_worker_with_a_wrong_or_no_secret_runs_nothing(queue, tmp_path):
    q, workers = queue
    wrong = tmp_path / "wrong"
    wrong.write_bytes(b"not the secret")
    marker = tmp_path / "ran"
    q.submit(Task(f"touch {marker}"))
    command = q.worker_command()
    command[command.index("--password-file") + 1] = str(wrong)
    proc = subprocess.run([*command, "--timeout", "5"], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode != 0
    assert "refused" in proc.stderr or "authentication" in proc.stderr
    assert not marker.exists()
    assert q.stats()["refused"] >= 1 and q.stats()["workers"] == 0


def test_garbage_and_oversized_headers_do_not_stop_the_master(queue):
    q, workers = queue
    for payload in (b"GET / HTTP/1.1\r\n\r\n" * 10, struct.pack(">I", 2**31) + b"{",
                    os.urandom(5000), b""):
        with socket.create_connection(("127.0.0.1", q.port), timeout=5) as s:
            s.sendall(payload)
            s.settimeout(5)
            try:
                while s.recv(65536):
                    pass
            except OSError:
                pass
    workers.append(start_worker(q))
    q.submit(Task("echo still serving"))
    (done,) = finish_all(q)
    assert done.stdout.strip() == "still serving"


def test_path_traversal_in_task_names_is_refused(queue, tmp_path):
    q, _ = queue
    t = Task("true")
    with pytest.raises(ValueError):
        t.add_input(tmp_path, "../escape")
    with pytest.raises(ValueError):
        t.add_output("/etc/passwd", tmp_path / "x")


def test_a_worker_started_before_its_master_connects_when_it_appears(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    secret = tmp_path / "secret"
    secret.write_bytes(b"s3cret-for-this-test")
    worker = subprocess.Popen([sys.executable, "-m", "abengine.workqueue.worker", "127.0.0.1",
                               str(port), "--password-file", str(secret), "--timeout", "30"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        with WorkQueue(port=port, password_file=secret, heartbeat=1.0) as q:
            q.submit(Task("echo late master"))
            (done,) = finish_all(q, within=30)
            assert done.stdout.strip() == "late master"
        # a master restarted on the same port gets the worker back
        with WorkQueue(port=port, password_file=secret, heartbeat=1.0) as q:
            q.submit(Task("echo again"))
            (done,) = finish_all(q, within=30)
            assert done.stdout.strip() == "again"
    finally:
        worker.terminate()
        worker.wait(timeout=10)


def test_cancel_and_futures(queue):
    q, workers = queue
    workers.append(start_worker(q))
    future = q.submit_future(Task("echo via future"))
    assert future.result(timeout=30).stdout.strip() == "via future"
    long = Task("sleep 30")
    q.submit(long)
    time.sleep(0.5)
    q.cancel(long.id)
    (done,) = finish_all(q, within=20)
    assert done.state == CANCELLED


def test_status_answers(queue):
    q, workers = queue
    workers.append(start_worker(q, cores=2))
    wait_for_workers(q, 1)
    fields = query("127.0.0.1", q.port, Path(q.worker_command()[-1]).read_bytes())
    assert fields["workers"] == 1 and fields["cores"] == 2


def test_an_input_shared_by_many_tasks_crosses_the_wire_once_per_worker(queue, tmp_path):
    q, workers = queue
    workers.append(start_worker(q))
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(5 << 20))
    for _ in range(10):
        t = Task("cmp big.bin big.bin && echo same")
        t.add_input(big, "big.bin")
        q.submit(t)
    done = finish_all(q)
    assert all(t.stdout.strip() == "same" for t in done)
    assert q.stats()["puts"] == 1


def test_allpairs_on_workqueue_equals_local(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.random((30, 5))
    with WorkQueueEngine(workers=2) as engine:
        remote = abengine.allpairs(X, X, lambda a, b: float(np.abs(a - b).sum()), engine=engine,
                                   block=(7, 7), progress=False)
        remote_builtin = abengine.allpairs(X, X, "euclidean", engine=engine, progress=False)
    local = abengine.allpairs(X, X, lambda a, b: float(np.abs(a - b).sum()), progress=False)
    np.testing.assert_allclose(remote, local)
    np.testing.assert_allclose(remote_builtin, abengine.allpairs(X, X, "euclidean",
                                                                 progress=False))


def test_the_single_file_worker_runs_without_the_package(queue, tmp_path):
    from abengine.workqueue.bundle import write_worker

    q, workers = queue
    script = write_worker(tmp_path / "abengine_worker.py")
    command = q.worker_command()
    # -I -S: no site-packages and no environment, so abengine cannot be imported
    alone = [sys.executable, "-I", "-S", str(script), *command[3:], "--timeout", "30"]
    probe = subprocess.run([sys.executable, "-I", "-S", "-c", "import abengine"],
                           capture_output=True)
    assert probe.returncode != 0  # the check below really runs without the package
    workers.append(subprocess.Popen(alone, cwd=tmp_path, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    data = tmp_path / "in.txt"
    data.write_text("hello\n")
    t = Task("tr a-z A-Z < in.txt")
    t.add_input(data, "in.txt")
    q.submit(t)
    (done,) = finish_all(q)
    assert done.stdout == "HELLO\n"


def test_a_silent_half_open_connection_is_dropped(queue):
    q, workers = queue
    import abengine.workqueue.master as master_module

    with socket.create_connection(("127.0.0.1", q.port), timeout=5) as silent:
        silent.recv(65536)  # the challenge; then say nothing
        deadline = time.monotonic() + master_module.HANDSHAKE_SECONDS + 3 * q.heartbeat + 5
        silent.settimeout(1)
        closed = False
        while time.monotonic() < deadline and not closed:
            with contextlib.suppress(TimeoutError):
                closed = silent.recv(65536) == b""
        assert closed, "the master kept a silent unauthenticated connection open"
    workers.append(start_worker(q))
    q.submit(Task("echo fine"))
    (done,) = finish_all(q)
    assert done.stdout.strip() == "fine"


def test_stats_from_another_thread_while_tasks_come_and_go(queue):
    """stats() and the status port must never race with submit()/wait() in other threads."""
    import threading

    q, workers = queue
    workers += [start_worker(q), start_worker(q)]
    stop = threading.Event()
    seen: list[dict] = []

    def poll() -> None:
        while not stop.is_set():
            seen.append(q.stats())

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        for i in range(300):
            q.submit(Task(f"echo {i}"))
        done = finish_all(q)
    finally:
        stop.set()
        poller.join(timeout=10)
    assert sorted(int(t.stdout) for t in done) == list(range(300))
    # The poller's last answer may predate the last result; a fresh one may not.
    assert len(seen) > 10 and q.stats()["done"] == 300
    assert all(s["waiting"] >= 0 and s["running"] >= 0 for s in seen)
    assert all(a["done"] <= b["done"] for a, b in zip(seen, seen[1:]))


def test_a_worker_drains_before_its_wall_time_and_no_task_is_lost(queue):
    """A worker told its batch wall time hands back what it has not started and leaves in time;
    a worker without one finishes the rest, and every task is done once, with no failed attempt."""
    q, workers = queue
    short = start_worker(q, 1, "--wall-time", "4")  # drains at 2 s, leaves by 3 s
    workers.append(short)
    for i in range(12):
        q.submit(Task(f"sleep 0.4; echo {i}"))
    wait_for_workers(q, 1)
    started = time.monotonic()
    assert short.wait(timeout=10) == 0
    assert time.monotonic() - started < 4
    assert "draining" in short.stderr.read()
    workers.append(start_worker(q))
    done = finish_all(q)
    assert sorted(int(t.stdout) for t in done) == list(range(12))
    assert all(t.state == DONE and not t.attempts for t in done)
    assert q.stats()["workers_lost"] == 1


def test_the_drain_schedule_leaves_time_to_finish():
    from abengine.workqueue.worker import drain_schedule

    assert drain_schedule(4) == (2.0, 3.0)
    assert drain_schedule(3600) == (3300.0, 3590.0)
    for wall in (1.0, 30.0, 600.0, 86400.0):
        drain, leave = drain_schedule(wall)
        assert 0 < drain < leave < wall or wall < 2.5


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (made with cryptography, which
    paramiko already brings)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "abengine test master")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    directory = tmp_path_factory.mktemp("tls")
    cert_file, key_file = directory / "master.pem", directory / "master.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_tls_end_to_end_and_plain_or_untrusting_workers_are_refused(certificate, tmp_path):
    cert, key = certificate
    with WorkQueue(port=0, heartbeat=1.0, tls_cert=cert, tls_key=key) as q:
        command = q.worker_command(cores=1)
        assert command[-2:] == ["--tls-ca", str(cert)]
        with socket.create_connection(("127.0.0.1", q.port)) as plain:  # speaks no TLS
            plain.sendall(struct.pack(">I", 2) + b"{}")
            with contextlib.suppress(ConnectionResetError):  # dropped at once
                assert plain.recv(100) == b""
        workers = [subprocess.Popen([*command, "--timeout", "30"], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                   for _ in range(2)]
        try:
            data = tmp_path / "data.bin"
            data.write_bytes(os.urandom(3 << 20))  # several TLS records, several chunks
            for i in range(10):
                t = Task(f"cat in.bin > out.bin && echo {i}")
                t.add_input(data, "in.bin")
                t.add_output("out.bin", tmp_path / f"out{i}.bin")
                q.submit(t)
            done = finish_all(q)
            assert sorted(int(t.stdout) for t in done) == list(range(10))
            assert all((tmp_path / f"out{i}.bin").read_bytes() == data.read_bytes()
                       for i in range(10))
            secret = Path(command[command.index("--password-file") + 1]).read_bytes()
            from abengine.workqueue.tls import client_context

            fields = query("127.0.0.1", q.port, secret, tls=client_context(str(cert)))
            assert fields["done"] == 10 and fields["workers"] == 2
            assert q.stats()["refused"] == 1  # the plain connection
        finally:
            for w in workers:
                w.terminate()
                w.wait(timeout=10)


def test_a_worker_that_does_not_trust_the_certificate_says_so_and_stops(certificate, tmp_path):
    cert, key = certificate
    with WorkQueue(port=0, tls_cert=cert, tls_key=key) as q:
        command = q.worker_command(cores=1)
        command[command.index("--tls-ca") + 1] = str(tmp_path / "missing.pem")
        bad_file = subprocess.run([*command, "--timeout", "5"], capture_output=True, text=True,
                                  timeout=30)
        assert bad_file.returncode == 2 and "--tls-ca" in bad_file.stderr
        system_cas = [a for a in command if a != "--tls-ca" and a != str(tmp_path / "missing.pem")]
        untrusting = subprocess.run([*system_cas, "--tls", "--timeout", "5"],
                                    capture_output=True, text=True, timeout=30)
        assert untrusting.returncode == 1 and "not trusted" in untrusting.stderr
        assert q.stats()["workers_joined"] == 0


def test_a_task_stopped_early_takes_its_programs_in_other_sessions_with_it(queue):
    """Wall time (or Kill, or a lost master) kills the task's whole tree, even programs that
    left its process group, as a runner's per-cell programs do."""
    q, workers = queue
    workers.append(start_worker(q))
    marker = f"{os.getpid() % 1000}.{time.monotonic_ns() % 10**6}"
    t = Task(f"setsid sleep {marker} & sleep 30", wall_time=1.0)
    q.submit(t)
    [done] = finish_all(q)
    assert "wall time" in done.error or "wall time" in " ".join(done.attempts)

    def left() -> list[str]:
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            with contextlib.suppress(OSError):
                if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(pid)
        return found

    deadline = time.monotonic() + 5
    while left() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left()


def test_allpairs_over_tls_from_the_command_line(certificate, tmp_path):
    from conftest import ALLPAIRS

    cert, key = certificate
    data = tmp_path / "v.npy"
    np.save(data, np.arange(12.0).reshape(6, 2))
    out = tmp_path / "d.npy"
    done = subprocess.run([str(ALLPAIRS), str(data), str(data), "euclidean", "-o", str(out),
                           "--engine", "workqueue", "--workers", "2", "--tls-cert", str(cert),
                           "--tls-key", str(key), "-q"], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    X = np.arange(12.0).reshape(6, 2)
    assert np.allclose(np.load(out), np.sqrt(((X[:, None] - X[None]) ** 2).sum(-1)))
    bad = subprocess.run([str(ALLPAIRS), str(data), str(data), "euclidean", "--engine",
                          "workqueue", "--workers", "1", "--tls-cert", str(data), "-q"],
                         capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert bad.returncode == 2 and "--tls-cert" in bad.stderr and "Traceback" not in bad.stderr


def test_a_tls_master_sends_every_copy_itself_even_when_asked_for_a_tree(certificate, tmp_path):
    """Peer links are clear text: under TLS every file stays on the master's TLS links."""
    from abengine.engines.workqueue import WorkQueueEngine

    cert, key = certificate
    data = tmp_path / "v.npy"
    X = np.arange(24.0).reshape(12, 2)
    np.save(data, X)
    with WorkQueueEngine(workers=2, tls_cert=cert, tls_key=key, distribute="tree") as engine:
        got = abengine.allpairs(str(data), str(data), "euclidean", engine=engine, block=(4, 4),
                                progress=False)
        stats = engine.queue.stats()
    assert engine.distributed == "direct" and stats["peer_transfers"] == 0
    assert np.allclose(got, np.sqrt(((X[:, None] - X[None]) ** 2).sum(-1)))
