"""`abengine worker HOST PORT`: connect to a master, run its tasks in sandboxes, send outputs back.

Standard library only (with protocol.py, auth.py and cache.py beside it), so
a launcher can ship it as one file to a host that lacks abengine. The worker
retries the connection with backoff until a master answers, and goes back to
that when it loses the master, so a master restarted on the same port gets
its workers back. It leaves after `--timeout` seconds without work. Under a
batch system, `--wall-time` says when the job will be killed: the worker
drains before then (asks for no more tasks, hands back those not started,
finishes the running ones) and leaves just ahead of the kill.

Threads: the main thread owns the socket's receiving side and the protocol
state; each task runs on a thread of its own (at most `cores` cores' worth at
once); sends go through one lock. Receiving never waits on a send, so two
peers streaming files at each other cannot deadlock.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .auth import load_secret
from .cache import Cache, CacheError, Incoming, UnsafeName
from .protocol import (
    NEED_DATA,
    Assemble,
    BadAuth,
    Bye,
    Challenge,
    Closed,
    Connection,
    Data,
    Drain,
    EndOfData,
    Fetch,
    Heartbeat,
    Hello,
    Kill,
    Output,
    Pacer,
    PeerRequest,
    ProtocolError,
    Put,
    Refused,
    Result,
    Role,
    Stored,
    Task,
    TicketAccepted,
    Welcome,
    ticket_key,
)
from .tls import TlsSocket, client_context

CHUNK = 1 << 20
SECRET_ENV = "ABENGINE_SECRET"  # the secret itself; how a launcher can hand it over without argv
MAX_BACKOFF = 5.0
HANDSHAKE_SECONDS = 10.0
#: A peer transfer gives up after this long without a byte (a source that died silently).
PEER_SECONDS = 10.0
#: At most this many peer connections at once (most wait for an upload slot or are refused).
MAX_PEER_CONNECTIONS = 32


def drain_schedule(wall_time: float) -> tuple[float, float]:
    """(seconds after start to stop taking tasks, seconds after start to leave)."""
    margin = min(300.0, max(2.0, 0.1 * wall_time))
    return wall_time - margin, wall_time - min(10.0, margin / 2)


def log(message: str) -> None:
    print(f"abengine worker: {message}", file=sys.stderr, flush=True)


class Lost(Exception):
    """The connection to the master is gone (or never came up)."""


class PeerFailed(Exception):
    """A peer transfer did not deliver a verified copy: refused, cut off, or the wrong bytes."""


def read_event(sock: socket.socket, conn: Connection) -> object:
    """The next event of a blocking peer connection (OSError, TimeoutError, ProtocolError)."""
    while True:
        event = conn.next_event()
        if event is not NEED_DATA:
            return event
        conn.receive_data(sock.recv(CHUNK))


def stream_into(incoming: Incoming, next_event: Callable[[], object]) -> None:
    """Write a Put's payload events into the cache; commit checks size and hash.

    Anything but the payload (or any exception) aborts the file: a half or
    wrong copy never enters the cache.
    """
    with incoming:
        while True:
            event = next_event()
            if isinstance(event, Data):
                incoming.write(event.chunk)
            elif isinstance(event, EndOfData):
                incoming.commit()
                return
            else:
                raise PeerFailed(f"expected file data, got {type(event).__name__}")


class PeerServer:
    """This worker's cache, served to peers that hold a ticket from the master.

    A peer connects, gets a challenge, and must answer with a request whose
    proof only the master's ticket (naming the file, the peer and an expiry)
    can make; otherwise it gets a refusal and nothing else. At most `uploads`
    files go out at once, so a spanning tree doubles cleanly, and every upload
    goes through the process's pacer (a benchmark knob).
    """

    def __init__(self, cache: Cache, secret: bytes, host: str, port: int = 0,
                 uploads: int = 1, pacer: Pacer | None = None) -> None:
        self.cache = cache
        self.key = ticket_key(secret)
        self.pacer = pacer or Pacer()
        self.sock = socket.create_server((host, port), backlog=64)
        self.port = self.sock.getsockname()[1]
        self.slots = threading.BoundedSemaphore(max(1, uploads))
        self.handlers = threading.BoundedSemaphore(MAX_PEER_CONNECTIONS)
        threading.Thread(target=self.accept_loop, name="peer-server", daemon=True).start()

    def accept_loop(self) -> None:
        while True:
            try:
                sock, _ = self.sock.accept()
            except OSError:  # closed: the worker is leaving
                return
            if not self.handlers.acquire(blocking=False):
                sock.close()
                continue
            threading.Thread(target=self.handle, args=(sock,), daemon=True).start()

    def handle(self, sock: socket.socket) -> None:
        try:
            with sock:
                sock.settimeout(PEER_SECONDS)
                conn = Connection(Role.SERVER, self.key)
                sock.sendall(conn.start())
                event = read_event(sock, conn)
                if isinstance(event, BadAuth):
                    sock.sendall(conn.send(Refused(reason=event.reason)))
                    log(f"refused a peer: {event.reason}")
                elif isinstance(event, TicketAccepted):
                    self.serve(sock, conn, event.request.hash)
        except (OSError, ProtocolError, ValueError, CacheError):
            pass  # the fetcher reports its failure to the master, which re-plans
        finally:
            self.handlers.release()

    def serve(self, sock: socket.socket, conn: Connection, digest: str) -> None:
        if not self.cache.has(digest):
            sock.sendall(conn.send(Refused(reason="not held here")))
            return
        if not self.slots.acquire(timeout=2 * PEER_SECONDS):
            sock.sendall(conn.send(Refused(reason="too many uploads")))
            return
        try:
            with self.cache.reading(digest) as f:
                size = os.fstat(f.fileno()).st_size
                sock.sendall(conn.send(Put(hash=digest, size=size)))
                while chunk := f.read(CHUNK):
                    time.sleep(self.pacer.reserve(len(chunk)))
                    sock.sendall(conn.send_data(chunk))
        finally:
            self.slots.release()

    def close(self) -> None:
        self.sock.close()


class Worker:
    def __init__(self, host: str, port: int, secret: bytes, cores: int, workdir: Path,
                 idle_timeout: float, wall_time: float | None = None,
                 tls: ssl.SSLContext | None = None, peers: bool = True, peer_port: int = 0,
                 peer_address: str = "", uploads: int = 1) -> None:
        self.host, self.port, self.secret = host, port, secret
        self.peers, self.peer_port, self.peer_address = peers, peer_port, peer_address
        self.uploads = uploads
        self.pacer = Pacer.from_env()
        self.peer_server: PeerServer | None = None
        #: Files are rebuilt from their pieces one after another, beside the tasks.
        self.assembler = ThreadPoolExecutor(1, thread_name_prefix="assemble")
        self.worker_id = 0
        self.tls = tls
        self.cores = cores
        self.idle_timeout = idle_timeout
        self.cache = Cache(workdir)
        self.free_cores = cores
        self.queued: list[Task] = []  # received, waiting for cores
        self.cores_lock = threading.Lock()
        self.running: dict[int, subprocess.Popen] = {}
        self.killed: set[int] = set()
        self.last_work = time.monotonic()
        self.sock: socket.socket | TlsSocket | None = None
        self.pool = ThreadPoolExecutor(cores, thread_name_prefix="task")
        self.logs = Path(tempfile.mkdtemp(prefix="logs-", dir=self.cache.root))
        self.local = threading.local()  # each task thread's TaskLogs
        self.devnull = os.open(os.devnull, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        self.conn: Connection | None = None
        self.send_lock = threading.Lock()
        self.draining = self.leaving = False
        if wall_time is not None:
            threading.Thread(target=self.clock, args=(wall_time,), daemon=True).start()

    # -- the outer loop: connect, serve, reconnect -----------------------------
    def run(self) -> int:
        backoff = 0.1
        said = ""
        try:
            while not self.idle_too_long() and not self.draining:
                try:
                    self.connect()
                except Lost as why:
                    if str(why) != said:  # say it once, not at every retry
                        said = str(why)
                        log(f"cannot reach master {self.host}:{self.port}: {why}; retrying "
                            f"until it answers (or {self.idle_timeout:g} s without work)")
                    time.sleep(backoff)
                    backoff = min(MAX_BACKOFF, backoff * 2)
                    continue
                except PermissionError as why:
                    log(str(why))
                    return 1
                backoff, said = 0.1, ""
                try:
                    self.serve()
                except Lost as why:
                    if not self.leaving:
                        log(f"lost master {self.host}:{self.port}: {why}")
                finally:
                    self.disconnect()
            if self.draining:
                log("batch wall time running out: leaving")
            else:
                log(f"no work for {self.idle_timeout:g} s: leaving")
            return 0
        finally:
            if self.peer_server is not None:
                self.peer_server.close()
            self.assembler.shutdown(cancel_futures=True)
            self.cache.cleanup()

    def idle_too_long(self) -> bool:
        busy = bool(self.running) or bool(self.queued)
        return not busy and time.monotonic() - self.last_work > self.idle_timeout

    def connect(self) -> None:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=10)
        except OSError as exc:
            raise Lost(exc.strerror or str(exc)) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.start_peer_server(sock.getsockname()[0])
        if self.tls is not None:
            sock = self.start_tls(sock)
        sock.settimeout(HANDSHAKE_SECONDS)
        self.sock, self.conn = sock, Connection(Role.WORKER, self.secret)
        self.heartbeat = 0.0  # not open yet: silence means a wrong peer, not a quiet master
        challenge = self.next_event()
        if not isinstance(challenge, Challenge):
            raise Lost(f"expected a challenge, got {type(challenge).__name__}")
        server = self.peer_server
        self.send(Hello(role="worker", cores=self.cores, memory=_memory(), disk=_disk(self.cache),
                        name=socket.gethostname(), pid=os.getpid(),
                        cached=self.cache.digests()[:10000],
                        peer_port=server.port if server else 0, peer_host=self.peer_address))
        answer = self.next_event()
        if isinstance(answer, Refused):
            raise PermissionError(f"master {self.host}:{self.port} refused us: {answer.reason}")
        if isinstance(answer, BadAuth):
            raise PermissionError(f"{self.host}:{self.port} failed to prove it holds the secret: "
                                  "not our master")
        if not isinstance(answer, Welcome):
            raise Lost(f"expected welcome, got {type(answer).__name__}")
        self.heartbeat = float(answer.heartbeat)
        self.worker_id = answer.worker_id
        self.sock.settimeout(self.heartbeat)
        log(f"connected to {self.host}:{self.port} as worker {answer.worker_id}")

    def start_peer_server(self, local_address: str) -> None:
        """Serve the cache to peers: on the interface that reaches the master, or on every
        interface when `--peer-address` says peers reach us at another address (NAT)."""
        if not self.peers or self.peer_server is not None:
            return
        bind = "" if self.peer_address else local_address
        try:
            self.peer_server = PeerServer(self.cache, self.secret, bind, self.peer_port,
                                          self.uploads, self.pacer)
        except OSError as exc:
            log(f"cannot serve peers on port {self.peer_port}: {exc.strerror}; "
                "files come from the master only")
            self.peers = False

    # -- the batch wall time --------------------------------------------------------
    def clock(self, wall_time: float) -> None:
        """Drain, then leave, on the schedule the wall time allows."""
        start = time.monotonic()
        drain_at, leave_at = drain_schedule(wall_time)
        time.sleep(max(0.0, drain_at))
        self.drain(wall_time - (time.monotonic() - start))
        time.sleep(max(0.0, leave_at - (time.monotonic() - start)))
        self.leave("its batch wall time ends")

    def drain(self, remaining: float) -> None:
        with self.cores_lock:
            self.draining = True
            returned, self.queued = [t.id for t in self.queued], []
        log(f"wall time ends in {remaining:.0f} s: draining (finishing {len(self.running)} "
            f"running tasks, handing back {len(returned)})")
        self.send(Drain(returned=returned, reason=f"wall time ends in {remaining:.0f} s"))
        self.leave_if_drained()

    def leave_if_drained(self) -> None:
        with self.cores_lock:  # cores are held from the moment a task is taken off the queue
            drained = self.draining and self.free_cores == self.cores and not self.queued
        if drained:
            self.leave("drained")

    def leave(self, why: str) -> None:
        """Say goodbye and wake the receiving thread, which then ends the worker."""
        if self.leaving:
            return
        self.leaving = self.draining = True
        for proc in list(self.running.values()):
            _kill_tree(proc)
        self.send(Bye(reason=why))
        sock = self.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def start_tls(self, sock: socket.socket) -> TlsSocket:
        assert self.tls is not None
        try:
            return TlsSocket(sock, self.tls, self.host)
        except ssl.SSLCertVerificationError as exc:
            sock.close()
            raise PermissionError(f"master {self.host}:{self.port}: TLS certificate not trusted: "
                                  f"{exc.verify_message} (see --tls-ca)") from None
        except (OSError, ValueError) as exc:  # SSLError is an OSError: e.g. a master without TLS
            sock.close()
            raise Lost(f"TLS handshake failed: {getattr(exc, 'reason', None) or exc}") from None

    def disconnect(self) -> None:
        for proc in list(self.running.values()):  # their results could not be delivered
            _kill_tree(proc)
        if self.sock is not None:
            self.sock.close()
        self.sock = self.conn = None

    # -- receiving --------------------------------------------------------------
    def next_event(self) -> object:
        assert self.conn is not None and self.sock is not None
        silent = 0
        while True:
            try:
                event = self.conn.next_event()
            except ProtocolError as exc:
                raise Lost(f"protocol error: {exc}") from None
            if event is not NEED_DATA:
                return event
            try:
                data = self.sock.recv(CHUNK)
            except TimeoutError:
                if not self.heartbeat:
                    raise Lost(f"no answer within {HANDSHAKE_SECONDS:g} s (a master that "
                               "speaks TLS needs --tls or --tls-ca)") from None
                silent += 1
                if silent >= 3:
                    raise Lost("no heartbeat from the master") from None
                self.send(Heartbeat())
                if self.idle_too_long():
                    self.send(Bye(reason="idle"))
                    raise Lost("idle") from None
                continue
            except OSError as exc:
                raise Lost(exc.strerror or str(exc)) from None
            silent = 0
            self.conn.receive_data(data)

    def serve(self) -> None:
        while True:
            event = self.next_event()
            if isinstance(event, Put):
                self.receive_file(event)
                if self.conn is not None and self.conn.peers:
                    self.send(Stored(hash=event.hash))
            elif isinstance(event, Fetch):
                threading.Thread(target=self.fetch, args=(event,), daemon=True).start()
            elif isinstance(event, Assemble):
                self.assembler.submit(self.assemble, event)  # one at a time, in order
            elif isinstance(event, Task):
                self.last_work = time.monotonic()
                self.start_task(event)
            elif isinstance(event, Kill):
                self.killed.add(event.id)
                with self.cores_lock:
                    self.queued = [t for t in self.queued if t.id != event.id]
                proc = self.running.get(event.id)
                if proc is not None:
                    _kill_tree(proc)
            elif isinstance(event, Heartbeat):
                self.send(Heartbeat())  # an idle worker still proves it is alive
            elif isinstance(event, (Bye, Closed)):
                raise Lost(getattr(event, "reason", "") or "the master closed the connection")
            else:
                raise Lost(f"unexpected {type(event).__name__} from the master")

    def receive_file(self, put: Put) -> None:
        try:
            stream_into(self.cache.receive(put.hash, put.size), self.next_event)
        except (CacheError, PeerFailed) as exc:
            raise Lost(f"bad file from the master: {exc}") from None

    # -- fetching from peers --------------------------------------------------------
    def fetch(self, order: Fetch) -> None:
        """Fetch a file from the peer the master named; tell the master how it went."""
        self.store(order.hash, f"fetching from {order.host}:{order.port}",
                   lambda: self.fetch_file(order))

    def assemble(self, order: Assemble) -> None:
        """Build a file from its pieces; tell the master how it went."""
        self.store(order.hash, "assembling",
                   lambda: self.cache.assemble(order.hash, order.length, order.parts,
                                               order.offset))

    def store(self, digest: str, what: str, get: Callable[[], object]) -> None:
        """Get `digest` into the cache unless it is there; answer Stored (with the error)."""
        error = ""
        try:
            if not self.cache.has(digest):
                get()
        except (OSError, ProtocolError, CacheError, ValueError, PeerFailed) as exc:
            error = f"{what}: {type(exc).__name__}: {exc}"
            log(f"{digest[:12]}: {error}")
        self.send(Stored(hash=digest, error=error))

    def fetch_file(self, order: Fetch) -> None:
        with socket.create_connection((order.host, order.port), timeout=PEER_SECONDS) as sock:
            conn = Connection(Role.FETCHER, order.ticket.encode())
            event = read_event(sock, conn)
            if not isinstance(event, Challenge):
                raise PeerFailed(f"expected a challenge, got {_what(event)}")
            sock.sendall(conn.send(PeerRequest(hash=order.hash, worker_id=self.worker_id,
                                               expires=order.expires)))
            put = read_event(sock, conn)
            if not isinstance(put, Put) or (put.hash, put.size) != (order.hash, order.length):
                raise PeerFailed(f"expected the file, got {_what(put)}")
            stream_into(self.cache.receive(order.hash, order.length),
                        lambda: read_event(sock, conn))

    # -- sending ------------------------------------------------------------------
    def send(self, event: object, payload: Path | None = None) -> None:
        conn, sock = self.conn, self.sock
        if conn is None or sock is None:
            return
        try:
            with self.send_lock:
                sock.sendall(conn.send(event))
                if payload is not None:
                    with open(payload, "rb") as f:
                        while chunk := f.read(CHUNK):
                            sock.sendall(conn.send_data(chunk))
        except OSError:
            pass  # the receiving side notices the lost connection and reconnects

    # -- running tasks ------------------------------------------------------------
    def start_task(self, task: Task) -> None:
        """Queue a task and start whatever fits in the free cores (never blocks the receiver)."""
        with self.cores_lock:
            if not self.draining:
                self.queued.append(task)
                task = None
        if task is not None:  # it crossed our Drain on the wire
            self.send(Drain(returned=[task.id], reason="draining"))
        self.start_ready()

    def start_ready(self) -> None:
        with self.cores_lock:
            startable = []
            for task in list(self.queued):
                cores = max(1, min(task.cores, self.cores))
                if cores <= self.free_cores:
                    self.free_cores -= cores
                    self.queued.remove(task)
                    startable.append((task, cores))
        for task, cores in startable:
            self.pool.submit(self.run_task, task, cores)

    def run_task(self, task: Task, cores: int) -> None:
        outputs: list[tuple[str, Path]] = []
        try:
            result, outputs = self.execute(task)
            # Start what waits for these cores before reporting: the next task runs while
            # this one's result is on its way.
            self.release(cores)
            cores = 0
            for name, path in outputs:
                self.send(Output(id=task.id, name=name, size=path.stat().st_size), payload=path)
            self.send(result)
        finally:
            for _, path in outputs:
                path.unlink(missing_ok=True)
            self.release(cores)
            self.leave_if_drained()

    def release(self, cores: int) -> None:
        if cores:
            self.last_work = time.monotonic()
            with self.cores_lock:
                self.free_cores += cores
            self.start_ready()

    def execute(self, task: Task) -> tuple[Result, list[tuple[str, Path]]]:
        """Run one task in a fresh sandbox; its outputs are copied out before the sandbox goes."""
        start = time.monotonic()
        logs = self.thread_logs()
        logs.reset()
        outputs: list[tuple[str, Path]] = []
        code: int | None = None
        sig: int | None = None
        error = ""
        try:
            with self.cache.sandbox(task.id) as box:
                for item in task.inputs:
                    box.link(item.hash, item.name, executable=item.executable)
                proc = subprocess.Popen(task.command, shell=True, cwd=box.path,
                                        stdin=self.devnull, stdout=logs.stdout,
                                        stderr=logs.stderr, start_new_session=True)
                self.running[task.id] = proc
                try:
                    code = proc.wait(timeout=task.wall_time)
                except subprocess.TimeoutExpired:
                    _kill_tree(proc)
                    proc.wait()
                    error = f"wall time of {task.wall_time:g} s exceeded"
                finally:
                    # Whatever it left running in the background goes too: nothing may
                    # change the sandbox while its outputs are read.
                    _kill_group(proc)
                    self.running.pop(task.id, None)
                if code is not None and code < 0:
                    sig, code = -code, None
                if task.id in self.killed:
                    error = "killed at the master's request"
                missing = []
                for name in task.outputs:
                    try:
                        kept = self.logs / f"t{task.id}.out{len(outputs)}"
                        _copy_no_follow(box.collect(name), kept)
                        outputs.append((name, kept))
                    except (FileNotFoundError, UnsafeName, OSError):
                        missing.append(name)
                if missing and not error and code == 0:
                    error = f"outputs not produced (or not regular files): {', '.join(missing)}"
        except (CacheError, UnsafeName, OSError) as exc:
            error = f"could not set up the task: {exc}"
        result = Result(id=task.id, exit_code=code, signal=sig, error=error,
                        stdout=logs.tail(logs.stdout), stderr=logs.tail(logs.stderr),
                        elapsed=time.monotonic() - start, outputs=[n for n, _ in outputs])
        return result, outputs

    def thread_logs(self) -> TaskLogs:
        """This task thread's stdout/stderr files (a thread runs one task at a time)."""
        logs = getattr(self.local, "logs", None)
        if logs is None:
            logs = self.local.logs = TaskLogs(self.logs, threading.get_ident())
        return logs


class TaskLogs:
    """A pair of files for a task's stdout and stderr, emptied and reused task after task.

    Creating, reading and deleting two files per task cost more than the
    shortest tasks themselves; the tasks share the open descriptors instead.
    """

    def __init__(self, directory: Path, key: int) -> None:
        flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
        self.stdout = os.open(directory / f"{key}.stdout", flags, 0o600)
        self.stderr = os.open(directory / f"{key}.stderr", flags, 0o600)

    def reset(self) -> None:
        for fd in (self.stdout, self.stderr):
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)

    @staticmethod
    def tail(fd: int, limit: int = 65536) -> str:
        try:
            size = os.fstat(fd).st_size
            return os.pread(fd, limit, max(0, size - limit)).decode("utf-8", "replace")
        except OSError:
            return ""


def _what(event: object) -> str:
    """An unexpected peer event, for a log line: a refusal says why."""
    if isinstance(event, Refused):
        return f"refused: {event.reason}"
    return type(event).__name__


def _copy_no_follow(source: Path, target: Path) -> None:
    """Copy an output, refusing it if it has become a symlink since it was checked."""
    fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst, CHUNK)


def _kill_tree(proc: subprocess.Popen) -> None:
    """Kill a task's process group and every process below it, also those that started
    sessions of their own (a runner's programs, each in its own group), so none outlives
    a task stopped early. Linux's /proc finds them; elsewhere, the group only."""
    below = _descendants(proc.pid)
    _kill_group(proc)
    for pid in below:
        for kill in (os.killpg, os.kill):  # its group, if it leads one; then itself
            with contextlib.suppress(ProcessLookupError, PermissionError):
                kill(pid, signal.SIGKILL)


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
            ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        children.setdefault(ppid, []).append(int(entry))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), ()):
            found.append(child)
            stack.append(child)
    return found


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0


def _disk(cache: Cache) -> int:
    try:
        return shutil.disk_usage(cache.root).free
    except OSError:
        return 0


def read_secret(password_file: str | None) -> bytes:
    if password_file:
        return load_secret(Path(password_file))
    secret = os.environ.pop(SECRET_ENV, "")
    if secret:
        return secret.encode()
    raise ValueError(f"no secret: give --password-file FILE (or set {SECRET_ENV})")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="abengine worker",
                                description="Run tasks for an abengine master at HOST:PORT.")
    p.add_argument("host", metavar="HOST")
    p.add_argument("port", metavar="PORT", type=int)
    p.add_argument("--cores", type=int, default=os.cpu_count() or 1,
                   help="cores to offer (default: all)")
    p.add_argument("--workdir", help="directory under which the worker makes its cache and "
                   "sandboxes, removed on exit (default: $TMPDIR)")
    p.add_argument("--timeout", type=float, default=900.0, metavar="IDLE_S",
                   help="leave after this many seconds without work (default: 900)")
    p.add_argument("--password-file", metavar="FILE", help="file holding the shared secret")
    p.add_argument("--tls", action="store_true",
                   help="speak TLS to the master, trusting the system's certificate authorities")
    p.add_argument("--tls-ca", metavar="FILE",
                   help="speak TLS to the master, trusting the CA certificates in FILE (for a "
                        "self-signed master, its certificate); implies --tls")
    p.add_argument("--peer-port", type=int, default=0, metavar="P",
                   help="serve cached files to other workers (with a ticket from the master) on "
                        "port P (default: any free port)")
    p.add_argument("--peer-address", default="", metavar="HOST",
                   help="the address other workers reach this one at (default: the one the "
                        "master sees); listens on every interface when given")
    p.add_argument("--uploads", type=int, default=1, metavar="N",
                   help="peer uploads at once (default: 1, so a spanning tree doubles cleanly)")
    p.add_argument("--no-peers", action="store_true",
                   help="take files from the master only; serve none to other workers")
    p.add_argument("--wall-time", type=float, metavar="S",
                   help="seconds until the batch system kills this worker: it stops taking "
                        "tasks 10%% of that (2 s to 5 min) before, lets the running ones finish, "
                        "and leaves just ahead of the kill")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        secret = read_secret(args.password_file)
    except (OSError, ValueError) as exc:
        log(f"error: {exc}")
        return 2
    if (args.cores < 1 or not 0 < args.port < 65536 or args.timeout <= 0
            or (args.wall_time is not None and args.wall_time <= 0)
            or not 0 <= args.peer_port < 65536 or args.uploads < 1):
        log("error: --cores, --timeout, --wall-time and --uploads must be positive, PORT in "
            "1..65535 and --peer-port in 0..65535")
        return 2
    try:
        Pacer.from_env()
    except ValueError as exc:
        log(f"error: {exc}")
        return 2
    tls = None
    if args.tls or args.tls_ca:
        try:
            tls = client_context(args.tls_ca)
        except (OSError, ssl.SSLError) as exc:
            log(f"error: --tls-ca {args.tls_ca}: {getattr(exc, 'strerror', None) or exc}")
            return 2
    try:
        root = Path(tempfile.mkdtemp(prefix="abengine-worker-", dir=args.workdir))
    except OSError as exc:
        log(f"error: --workdir {args.workdir}: {exc.strerror}")
        return 2
    worker = Worker(args.host, args.port, secret, args.cores, root, args.timeout, args.wall_time,
                    tls, peers=not args.no_peers, peer_port=args.peer_port,
                    peer_address=args.peer_address, uploads=args.uploads)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # cleans up in Worker.run's finally
    try:
        return worker.run()
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
