"""The Work Queue master: a port that workers connect to, and a queue of file tasks.

    q = WorkQueue(port=0)
    t = Task("sort in.txt > out.txt")
    t.add_input("data.txt", "in.txt")
    t.add_output("out.txt", "sorted.txt")
    q.submit(t)
    print(q.worker_command(cores=1))       # start workers with this, anywhere
    done = q.wait(timeout=60)              # a finished Task, or None

One I/O thread owns every socket and all scheduling state (selectors, no
locks on the hot path); the caller's threads talk to it through an inbox and
a wake-up socketpair. Inputs are sent once per worker by content hash; each
output arrives as a temporary file and is moved into place only when the
task's result arrives from the worker that currently owns it, so a task
finishes exactly once even when a worker is lost or a copy runs twice.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import heapq
import itertools
import os
import queue
import selectors
import socket
import ssl
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from .auth import load_secret, new_secret
from .cache import safe_name
from .distribute import MASTER, PIECE_BYTES, Planner, Transfer
from .pieces import Part, Piece, Segment, layout
from .protocol import (
    NEED_DATA,
    Assemble,
    Authenticated,
    BadAuth,
    Bye,
    Closed,
    Connection,
    Data,
    Drain,
    EndOfData,
    Fetch,
    Heartbeat,
    Input,
    Kill,
    Output,
    Pacer,
    ProtocolError,
    Put,
    Refused,
    Result,
    Role,
    StatusReply,
    StatusRequest,
    Stored,
    Welcome,
    make_ticket,
    ticket_key,
)
from .protocol import Task as TaskMessage
from .tls import server_context

CHUNK = 1 << 20
HANDSHAKE_SECONDS = 10.0
#: How long a ticket for a peer transfer is good for: the fetch starts at once.
TICKET_SECONDS = 60
#: While tasks wait for shared data, look for a worker that has it at most this often.
DATA_WAIT_RESCAN = 0.05

WAITING, RUNNING, DONE, FAILED, CANCELLED = "waiting", "running", "done", "failed", "cancelled"


@dataclass(eq=False, slots=True)
class Task:
    """A command run in a worker's sandbox, with files in and files out (CCTools' names)."""

    command: str
    inputs: list[tuple[Path, str, bool]] = field(default_factory=list)
    outputs: list[tuple[str, Path]] = field(default_factory=list)
    cores: int = 1
    wall_time: float | None = None
    tag: object = None
    # -- filled in by the queue ------------------------------------------------
    id: int = 0
    state: str = WAITING
    exit_code: int | None = None
    signal: int | None = None
    stdout: str = ""
    stderr: str = ""
    error: str = ""
    elapsed: float = 0.0
    worker: str = ""
    attempts: list[str] = field(default_factory=list)  # why each failed attempt failed
    digests: list[str] = field(default_factory=list, repr=False)  # of the inputs, at submit

    def add_input(self, local: str | Path, remote: str | None = None, cache: bool = True) -> None:
        local = Path(local)
        self.inputs.append((local, safe_name(remote or local.name), cache))

    def add_output(self, remote: str, local: str | Path) -> None:
        self.outputs.append((safe_name(remote), Path(local)))

    @property
    def ok(self) -> bool:
        return self.state == DONE and self.exit_code == 0


class _Peer:
    """One connection: a worker, or a status client, or not yet authenticated."""

    ids = itertools.count(1)

    def __init__(self, sock: socket.socket, conn: Connection, address: str) -> None:
        self.id = next(self.ids)
        self.sock, self.conn, self.address = sock, conn, address
        # What to send, in order: encoded bytes, a message to encode when its turn comes
        # (after any file streamed before it), or [file, bytes still to stream].
        self.out: collections.deque = collections.deque()
        self.opened = time.monotonic()
        self.heard = self.opened
        self.worker = False
        self.cores = self.free = 0
        self.name = address
        self.running: set[int] = set()
        self.cached: set[str] = set()
        self.failures = 0  # consecutive failed attempts: a worker that keeps failing is set aside
        self.receiving: tuple | None = None  # (task id, name, temp path, file) during an Output
        self.received: dict[int, dict[str, Path]] = {}
        self.closing = False
        self.handshaking = False  # TLS handshake not finished: nothing else goes out
        self.draining = False  # its wall time is running out: no new tasks
        self.assembling: set[str] = set()  # files it is building from their pieces
        self.peer_host = ""  # where other workers fetch from it (with peer_port)
        self.peer_port = 0
        self.resume_at = 0.0  # uploads paced (benchmark knob): no bytes out before this


class WorkQueue:
    def __init__(self, port: int = 0, host: str = "", secret: bytes | None = None,
                 password_file: str | Path | None = None, heartbeat: float = 5.0,
                 retries: int = 3, speculate: bool = True, tls_cert: str | Path | None = None,
                 tls_key: str | Path | None = None, tls_ca: str | Path | None = None) -> None:
        """A master listening on `port` (0: any free port).

        With `tls_cert` (PEM; `tls_key` if the key is in a file of its own),
        every connection speaks TLS; workers verify the certificate against
        `tls_ca`, by default the certificate itself (self-signed).
        """
        # The secret is what a password file holds, byte for byte; made up per run if not given.
        if password_file is not None:
            secret = load_secret(Path(password_file))
        self.secret = secret or new_secret().hex().encode()
        self.heartbeat = heartbeat
        self.retries = retries
        self.speculate = speculate
        self._tls = server_context(str(tls_cert), tls_key and str(tls_key)) if tls_cert else None
        self._tls_ca = str(tls_ca or tls_cert) if tls_cert else None
        self._listener = socket.create_server((host, port), reuse_port=False, backlog=1024)
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self._scratch = Path(tempfile.mkdtemp(prefix="abengine-master-"))
        self._secret_file = self._scratch / "secret"
        fd = os.open(self._secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:  # readable by this user only: argv would show it in ps
            f.write(self.secret)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, "accept")
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)  # a full pipe already means "wake up": never block
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._finished: queue.Queue[Task] = queue.Queue()
        self._ids = itertools.count(1)
        self._tasks: dict[int, Task] = {}  # every task not yet returned by wait()
        self._waiting: collections.deque[int] = collections.deque()
        self._owners: dict[int, set[int]] = {}  # task id -> peers running a copy of it
        self._started: dict[int, float] = {}
        self._durations: collections.deque[float] = collections.deque(maxlen=200)
        # Tasks per state, kept by the I/O thread: the caller's threads add to and take
        # from _tasks, so the I/O thread never walks it.
        self._counts: collections.Counter[str] = collections.Counter()
        self._peers: dict[int, _Peer] = {}
        self._hashes: dict[tuple[str, int, int], str] = {}
        self._futures: dict[int, Future] = {}
        self._stats = collections.Counter()
        self._pacer = Pacer.from_env()
        self._paused: dict[int, _Peer] = {}  # peers whose next chunk waits for the pacer
        self._ticket_key = ticket_key(self.secret)
        self._planner: Planner | None = None
        self._shared: dict[str, Path] = {}  # digest -> local path of each distributed file
        self._pieces: dict[str, Piece] = {}  # what the planner spreads: files, or their pieces
        self._parts: dict[str, Part] = {}  # a file that travels in pieces -> how to rebuild it
        self._whole_of: dict[str, set[str]] = {}  # a piece -> the files made of it
        self._distributed = threading.Event()
        self._rescan_at = 0.0  # tasks wait for distributed files: do not look again before this
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="abengine-master", daemon=True)
        self._thread.start()

    # -- the caller's side ---------------------------------------------------------
    def submit(self, task: Task, _future: Future | None = None) -> int:
        """Queue a task; returns its id. Inputs are hashed here, in the caller's thread."""
        if self._closed:
            raise RuntimeError("the queue is closed")
        task.digests = [self._hash(local) for local, _, _ in task.inputs]
        task.id = next(self._ids)
        task.state = WAITING
        self._tasks[task.id] = task
        self._call("submit", (task, _future))
        return task.id

    def submit_future(self, task: Task) -> Future[Task]:
        """Queue a task; the future's result is the finished task (whatever its exit code).

        Such a task is never returned by wait(); cancelling the future cancels the task.
        """
        future: Future[Task] = Future()
        future.set_running_or_notify_cancel()
        self.submit(task, future)
        return future

    def wait(self, timeout: float | None = None) -> Task | None:
        """The next finished task (done, failed or cancelled), or None after `timeout` seconds."""
        try:
            task = self._finished.get(timeout=timeout)
        except queue.Empty:
            return None
        self._tasks.pop(task.id, None)
        return task

    def empty(self) -> bool:
        """No task waiting, running, or finished but not yet returned by wait()."""
        return not self._tasks

    def cancel(self, task_id: int) -> None:
        self._call("cancel", task_id)

    def distribute(self, paths: list[str | Path], mode: str = "tree", feed: int | None = None,
                   uploads: int = 1, piece_bytes: int | None = PIECE_BYTES) -> list[str]:
        """Send these files to every worker now, and to each worker that joins later.

        "tree": the master seeds one worker, then every holder (the master too)
        serves one more at a time, so the copies double each round; a failed
        transfer or a dead source is re-planned from another holder. "direct":
        the master sends every copy itself (all at once: the star). `feed`
        caps how many workers get them (None: all). `uploads` is the
        workers' own limit (their --uploads), so the plan never asks more.
        In a tree, a file larger than `piece_bytes` travels as pieces that
        spread side by side, and small files travel packed into pieces; each
        worker rebuilds every file from its pieces (hash-checked).
        Tasks that use a distributed file run only where it has arrived,
        without waiting for the rest; one never triggers a second copy from
        the master. Returns the files' digests; `wait_distributed` waits.
        """
        Planner(mode, uploads, 1, feed)  # refuse bad arguments here, in the caller's thread
        if piece_bytes is not None and piece_bytes < 1:
            raise ValueError(f"piece_bytes must be positive, not {piece_bytes}")
        files: dict[str, tuple[str, Path, int]] = {}
        for path in map(Path, paths):
            digest = self._hash(path)
            files.setdefault(digest, (digest, path, path.stat().st_size))
        pieces, parts = layout(list(files.values()),
                               piece_bytes if mode == "tree" else None)
        self._distributed.clear()
        self._call("distribute", ({d: path for d, path, _ in files.values()}, pieces, parts,
                                  mode, feed, uploads))
        return list(files)

    @property
    def peer_transfers(self) -> bool:
        """Whether workers may pass files to each other: not under TLS (peer links are
        clear), where every copy comes from the master over its TLS connection."""
        return self._tls is None

    def wait_distributed(self, timeout: float | None = None) -> bool:
        """Whether every fed worker holds every distributed file, waiting up to `timeout`."""
        return self._distributed.wait(timeout)

    def workers(self) -> list[dict]:
        """Each connected worker: id, name, peer address, and how many distributed files it holds."""
        box: queue.Queue = queue.Queue()
        self._call("workers", box)
        return box.get(timeout=10)

    def worker_command(self, cores: int = 1, host: str = "127.0.0.1") -> list[str]:
        """The argv that starts a worker for this queue, the secret passed as a file (not argv)."""
        tls = ["--tls-ca", self._tls_ca] if self._tls_ca else []
        return [sys.executable, "-m", "abengine.workqueue.worker", host, str(self.port),
                "--cores", str(cores), "--password-file", str(self._secret_file), *tls]

    def stats(self) -> dict:
        box: queue.Queue = queue.Queue()
        self._call("stats", box)
        return box.get(timeout=10)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._call("close", None)
        self._thread.join(timeout=10)
        self._selector.close()
        for s in (self._listener, self._wake_r, self._wake_w):
            s.close()
        for name in os.listdir(self._scratch):
            os.unlink(self._scratch / name)
        os.rmdir(self._scratch)

    def __enter__(self) -> WorkQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, what: str, arg: object) -> None:
        self._inbox.put((what, arg))
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_w.send(b"x")

    def _hash(self, path: Path) -> str:
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
        digest = self._hashes.get(key)
        if digest is None:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(CHUNK):
                    h.update(chunk)
            digest = self._hashes[key] = h.hexdigest()
        return digest

    # -- the I/O thread ------------------------------------------------------------
    def _loop(self) -> None:
        next_tick = time.monotonic() + self.heartbeat
        while True:
            wake = min([next_tick, *(p.resume_at for p in self._paused.values())])
            if self._waiting and self._rescan_at:
                wake = min(wake, self._rescan_at)
            timeout = max(0.0, wake - time.monotonic())
            for key, mask in self._selector.select(timeout):
                if key.data == "accept":
                    self._accept()
                elif key.data == "wake":
                    with contextlib.suppress(BlockingIOError):
                        self._wake_r.recv(4096)
                    if self._drain_inbox():
                        self._shutdown()
                        return
                else:
                    peer = key.data
                    try:
                        if peer.handshaking:
                            self._tls_handshake(peer)
                            continue
                        if mask & selectors.EVENT_READ:
                            self._read(peer)
                        if mask & selectors.EVENT_WRITE and peer.id in self._peers:
                            self._write(peer)
                    except Exception as exc:  # a fault with one peer must not stop the master
                        self._drop(peer, f"internal error: {type(exc).__name__}: {exc}")
            if self._paused:
                self._resume_paced()
            if time.monotonic() >= next_tick:
                self._tick()
                next_tick = time.monotonic() + self.heartbeat
            self._dispatch()

    def _drain_inbox(self) -> bool:
        while True:
            try:
                what, arg = self._inbox.get_nowait()
            except queue.Empty:
                return False
            try:
                if what == "submit":
                    task, future = arg
                    if future is not None:
                        self._futures[task.id] = future
                    self._waiting.append(task.id)
                    self._counts[WAITING] += 1
                    self._stats["submitted"] += 1
                elif what == "cancel":
                    self._cancel(arg)
                elif what == "stats":
                    arg.put(self._status())
                elif what == "workers":
                    arg.put(self._worker_list())
                elif what == "distribute":
                    self._start_distribution(*arg)
                elif what == "close":
                    return True
            except Exception as exc:  # one bad request must not stop the master
                print(f"abengine master: {what} failed: {type(exc).__name__}: {exc}",
                      file=sys.stderr)

    def _accept(self) -> None:
        for _ in range(64):
            try:
                sock, address = self._listener.accept()
            except (BlockingIOError, OSError):
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_side=True,
                                             do_handshake_on_connect=False)
            peer = _Peer(sock, Connection(Role.MASTER, self.secret), f"{address[0]}:{address[1]}")
            self._peers[peer.id] = peer
            self._selector.register(sock, selectors.EVENT_READ, peer)
            if self._tls is not None:
                peer.handshaking = True
                self._tls_handshake(peer)
            else:
                self._send(peer, peer.conn.start())

    def _tls_handshake(self, peer: _Peer) -> None:
        """Advance a peer's TLS handshake; once done, the protocol's challenge goes out."""
        assert isinstance(peer.sock, ssl.SSLSocket)
        try:
            peer.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._selector.modify(peer.sock, selectors.EVENT_READ, peer)
            return
        except ssl.SSLWantWriteError:
            self._selector.modify(peer.sock, selectors.EVENT_WRITE, peer)
            return
        except OSError as exc:  # ssl.SSLError included: not TLS, bad certificate, reset...
            self._stats["refused"] += 1
            self._drop(peer, f"TLS handshake failed: {getattr(exc, 'reason', None) or exc}")
            return
        peer.handshaking = False
        self._selector.modify(peer.sock, selectors.EVENT_READ, peer)
        self._send(peer, peer.conn.start())

    # reading ----------------------------------------------------------------------
    def _read(self, peer: _Peer) -> None:
        while peer.id in self._peers:
            try:
                data = peer.sock.recv(CHUNK)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            except OSError:
                data = b""
            peer.heard = time.monotonic()
            try:
                peer.conn.receive_data(data)
                while peer.id in self._peers:
                    event = peer.conn.next_event()
                    if event is NEED_DATA:
                        break
                    self._handle(peer, event)
            except ProtocolError as exc:
                self._drop(peer, f"protocol error: {exc}")
            # TLS may hold decrypted bytes the selector cannot see: read them now.
            if not data or not isinstance(peer.sock, ssl.SSLSocket) or not peer.sock.pending():
                return

    def _handle(self, peer: _Peer, event: object) -> None:
        if isinstance(event, Authenticated):
            hello = event.hello
            if hello.role == "worker":
                peer.worker = True
                peer.cores = peer.free = max(1, int(hello.cores))
                peer.name = f"{hello.name}:{hello.pid} ({peer.address})"
                peer.cached = set(hello.cached)
                peer.peer_host = hello.peer_host or peer.address.rsplit(":", 1)[0]
                peer.peer_port = hello.peer_port
                self._stats["workers_joined"] += 1
            # Peer transfers travel in clear: a master speaking TLS keeps every file on TLS.
            self._send(peer, Welcome(worker_id=peer.id, heartbeat=self.heartbeat,
                                     peers=self.peer_transfers))
            if peer.worker and self._planner is not None:
                self._plan_for(peer)
                self._plan()
        elif isinstance(event, BadAuth):
            peer.closing = True  # dropped once the refusal is out
            self._send(peer, Refused(reason=event.reason))
            self._stats["refused"] += 1
        elif isinstance(event, Output):
            fd, path = tempfile.mkstemp(dir=self._scratch, prefix=f"t{event.id}-")
            peer.receiving = (event.id, event.name, Path(path), os.fdopen(fd, "wb"))  # noqa: SIM115
        elif isinstance(event, Data):
            if peer.receiving is not None:
                peer.receiving[3].write(event.chunk)
        elif isinstance(event, EndOfData):
            if peer.receiving is not None:
                task_id, name, path, f = peer.receiving
                f.close()
                peer.received.setdefault(task_id, {})[name] = path
                peer.receiving = None
        elif isinstance(event, Result):
            self._result(peer, event)
        elif isinstance(event, Drain):
            self._drain(peer, event)
        elif isinstance(event, Stored):
            self._stored(peer, event)
        elif isinstance(event, StatusRequest):
            self._send(peer, StatusReply(fields=self._status()))
        elif isinstance(event, Heartbeat):
            pass
        elif isinstance(event, (Bye, Closed)):
            self._drop(peer, getattr(event, "reason", "") or "disconnected")
        else:
            self._drop(peer, f"unexpected {type(event).__name__}")

    def _result(self, peer: _Peer, result: Result) -> None:
        files = peer.received.pop(result.id, {})
        peer.running.discard(result.id)
        task = self._tasks.get(result.id)
        owners = self._owners.get(result.id, set())
        if task is None or task.state != RUNNING or peer.id not in owners:
            _discard(files)  # a copy that lost the race, or a task cancelled meanwhile
            return
        peer.free = min(peer.cores, peer.free + task.cores)
        owners.discard(peer.id)
        if result.error:
            peer.failures += 1
            _discard(files)
            self._attempt_failed(task, f"on {peer.name}: {result.error}")
            if peer.failures >= 5:
                self._drop(peer, "set aside: its last 5 attempts failed")
            return
        peer.failures = 0
        for remote, local in task.outputs:
            source = files.pop(remote, None)
            if source is not None:
                local.parent.mkdir(parents=True, exist_ok=True)
                os.replace(source, local)
        _discard(files)
        self._stop_copies(task)
        elapsed = time.monotonic() - self._started.pop(task.id, time.monotonic())
        self._durations.append(elapsed)
        task.exit_code, task.signal = result.exit_code, result.signal
        task.stdout, task.stderr, task.elapsed = result.stdout, result.stderr, result.elapsed
        task.worker = peer.name
        self._finish(task, DONE)

    def _drain(self, peer: _Peer, drain: Drain) -> None:
        """Send the worker nothing more; requeue what it hands back unstarted, uncounted."""
        peer.draining = True
        for task_id in drain.returned:
            owners = self._owners.get(task_id, set())
            task = self._tasks.get(task_id)
            if task_id not in peer.running or peer.id not in owners or task is None:
                continue
            peer.running.discard(task_id)
            peer.free = min(peer.cores, peer.free + task.cores)
            owners.discard(peer.id)
            if not owners and task.state == RUNNING:
                self._owners.pop(task_id, None)
                self._started.pop(task_id, None)
                self._set_state(task, WAITING)
                self._waiting.appendleft(task_id)

    # distributing shared files --------------------------------------------------------
    def _start_distribution(self, files: dict[str, Path], pieces: list[Piece],
                            parts: dict[str, Part], mode: str, feed: int | None,
                            uploads: int) -> None:
        """Plan the spread of `files` (I/O thread); a new mode or limit starts a new plan."""
        self._shared.update(files)
        for piece in pieces:
            self._pieces[piece.digest] = piece
        for digest, part in parts.items():
            self._parts[digest] = part
            for piece_digest in part.pieces:
                self._whole_of.setdefault(piece_digest, set()).add(digest)
        planner = self._planner
        if planner is None or (planner.mode, planner.feed, planner.uploads) != (mode, feed,
                                                                                uploads):
            workers = [p for p in self._peers.values() if p.worker]
            # A star: every copy from the master at once. A tree: the master is one holder.
            master_uploads = max(1, len(workers)) if mode == "direct" else 1
            planner = self._planner = Planner(mode, uploads, master_uploads, feed)
            planner.add_files(self._pieces)  # before the workers: it notes what each lacks
            for w in workers:
                self._plan_for(w)
        else:
            planner.add_files(self._pieces)
        self._plan()

    def _plan_for(self, worker: _Peer) -> None:
        """Tell the planner of a worker: the pieces it holds (it can serve them), and those
        it needs no more because it holds every file made of them (it cannot)."""
        assert self._planner is not None
        cached = worker.cached
        holds = cached & self._pieces.keys()
        done = {piece for file in cached & self._parts.keys()
                for piece in self._parts[file].pieces
                if self._whole_of[piece] <= cached} - holds
        self._planner.add_worker(worker.id, holds, peer=worker.conn.peers, done=done)

    def _plan(self) -> None:
        """Start every transfer the plan allows now; note when the spread is complete."""
        planner = self._planner
        if planner is None or self._closed:
            return
        self._rescan_at = 0.0  # a file landed or a worker came or went: tasks may start
        while transfers := planner.next():
            for transfer in transfers:
                self._begin(transfer)
        wholes = self._shared.keys()
        if planner.done() and all(wholes <= self._peers[w].cached for w in planner.targets()):
            self._distributed.set()
        else:  # a worker joined since, or lost its copy: not every fed worker holds it
            self._distributed.clear()

    def _begin(self, transfer: Transfer) -> None:
        planner, target = self._planner, self._peers.get(transfer.target)
        assert planner is not None
        if target is None:  # dropped while we planned: forget it
            planner.remove_worker(transfer.target)
            return
        digest = transfer.digest
        if digest in target.cached:  # held, or a put of it is on the way: its Stored ends this
            if not target.conn.peers:  # a worker that never says Stored: sent is as good
                planner.stored(digest, target.id)
            return
        piece = self._pieces[digest]
        if transfer.source == MASTER:
            self._send_segments(target, digest, piece.segments)
            target.cached.add(digest)
            self._stats["seeds"] += 1
            if not target.conn.peers:
                planner.stored(digest, target.id)
            return
        source = self._peers[transfer.source]
        expires = int(time.time()) + TICKET_SECONDS
        self._send(target, Fetch(hash=digest, length=piece.size, host=source.peer_host,
                                 port=source.peer_port, expires=expires,
                                 ticket=make_ticket(self._ticket_key, digest, target.id,
                                                    expires)))
        self._stats["peer_transfers"] += 1

    def _stored(self, peer: _Peer, stored: Stored) -> None:
        """A worker holds a file now (a put or a fetch landed), or its fetch failed."""
        planner = self._planner
        peer.assembling.discard(stored.hash)
        if stored.error:
            self._stats["transfers_failed"] += 1
            if planner is not None:
                planner.failed(stored.hash, peer.id)
        else:
            peer.cached.add(stored.hash)
            if planner is not None:
                planner.stored(stored.hash, peer.id)
            self._assemble(peer, stored.hash)
        self._plan()

    def _assemble(self, peer: _Peer, piece: str) -> None:
        """Once a worker holds every piece of a file, it rebuilds the file (and says Stored)."""
        for digest in self._whole_of.get(piece, ()):
            part = self._parts[digest]
            if (digest not in peer.cached and digest not in peer.assembling
                    and all(p in peer.cached for p in part.pieces)):
                # Tasks wait for its Stored: the worker builds it beside its other work.
                peer.assembling.add(digest)
                self._send(peer, Assemble(hash=digest, length=part.size,
                                          parts=list(part.pieces), offset=part.offset))

    def _lacks_shared(self, task: Task, worker: _Peer) -> bool:
        """Does `task` use a distributed file `worker` does not hold yet? Then it waits for
        the file to arrive there (or runs elsewhere) rather than make the master send it."""
        shared, cached = self._shared, worker.cached
        return any(d in shared and d not in cached for d in task.digests)

    def _worker_list(self) -> list[dict]:
        shared = self._shared.keys()
        return [{"id": p.id, "name": p.name, "peer_host": p.peer_host, "peer_port": p.peer_port,
                 "peers": p.conn.peers, "holds": len(p.cached & shared)}
                for p in self._peers.values() if p.worker]

    def _resume_paced(self) -> None:
        now = time.monotonic()
        for peer in [p for p in self._paused.values() if p.resume_at <= now]:
            del self._paused[peer.id]
            if peer.id in self._peers:
                self._want_write(peer)

    # writing ----------------------------------------------------------------------
    def _send(self, peer: _Peer, message: object) -> None:
        """Send a message (or encoded bytes) now if nothing is ahead of it, else queue it.

        A queued message is encoded when the socket reaches it, after the files
        ahead of it. Sending at once when the queue is empty (the usual case for
        a task or a heartbeat) spares two selector changes per message.
        """
        if peer.out or peer.closing or peer.handshaking or peer.id in self._paused:
            peer.out.append(message)
            if not peer.handshaking:
                self._want_write(peer)
            return
        try:
            data = message if isinstance(message, (bytes, bytearray)) else peer.conn.send(message)
        except ValueError:  # left for _write, which drops the peer the usual way
            data = message
            sent = 0
        else:
            try:
                sent = peer.sock.send(data)
            except OSError:  # incl. BlockingIOError; a broken socket is dropped by _write,
                sent = 0  # not here, where the caller may still be updating this peer
        if sent == 0:
            peer.out.append(data)
            self._want_write(peer)
        elif sent < len(data):
            peer.out.append(data[sent:])
            self._want_write(peer)

    def _send_to(self, peer_id: int, message: object) -> None:
        peer = self._peers.get(peer_id)
        if peer is not None:
            self._send(peer, message)

    def _send_file(self, peer: _Peer, path: Path, digest: str) -> None:
        self._send_segments(peer, digest, (Segment(path, 0, path.stat().st_size),))

    def _send_segments(self, peer: _Peer, digest: str, segments: tuple[Segment, ...]) -> None:
        """Queue a put of these byte ranges laid end to end (a file, a piece of one, or a
        pack of small files), streamed from disk as the socket takes them."""
        size = sum(s.size for s in segments)
        self._stats["puts"] += 1
        self._stats["bytes_sent"] += size
        self._send(peer, Put(hash=digest, size=size))
        for segment in segments:
            if segment.size:
                f = open(segment.path, "rb")  # noqa: SIM115 - closed when sent or dropped
                f.seek(segment.offset)
                peer.out.append([f, segment.size])
        if size:
            self._want_write(peer)

    def _want_write(self, peer: _Peer) -> None:
        if peer.id not in self._paused:  # a paced peer is woken by _resume_paced
            self._selector.modify(peer.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, peer)

    def _write(self, peer: _Peer) -> None:
        try:
            while peer.out:
                item = peer.out[0]
                if isinstance(item, list):  # a file being streamed
                    f, remaining = item
                    chunk = f.read(min(CHUNK, remaining))
                    if not chunk:
                        raise OSError("an input file shrank while it was being sent")
                    data = peer.conn.send_data(chunk)
                    item[1] -= len(chunk)
                    if item[1] == 0:
                        f.close()
                        peer.out.popleft()
                    peer.out.appendleft(data)
                    delay = self._pacer.reserve(len(chunk))
                    if delay > 0:  # the emulated network card is busy until then
                        peer.resume_at = time.monotonic() + delay
                        self._paused[peer.id] = peer
                        self._selector.modify(peer.sock, selectors.EVENT_READ, peer)
                        return
                    continue
                if not isinstance(item, (bytes, bytearray, memoryview)):
                    item = peer.out[0] = peer.conn.send(item)
                sent = peer.sock.send(item)
                if sent < len(item):
                    peer.out[0] = item[sent:]
                    return
                peer.out.popleft()
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            return
        except OSError as exc:
            self._drop(peer, exc.strerror or str(exc))
            return
        if peer.closing:
            self._drop(peer, "closed by the master")
            return
        self._selector.modify(peer.sock, selectors.EVENT_READ, peer)

    # scheduling -------------------------------------------------------------------
    def _dispatch(self) -> None:
        # A worker may hold one task per core queued beyond its running ones, so the next
        # task is already there when one ends (no idle round trip): `free` goes down to -cores.
        workers = [p for p in self._peers.values()
                   if p.worker and not p.closing and not p.draining and p.free > -p.cores]
        if not workers:
            return
        now = time.monotonic()
        if self._rescan_at and now < self._rescan_at:  # tasks wait for distributed files
            return
        self._rescan_at = 0.0
        # The worker with the most free cores first: a heap, so a task costs O(log workers).
        heap = [(-w.free, w.id, w) for w in workers]
        heapq.heapify(heap)
        skipped: list[int] = []
        while self._waiting and heap:
            task = self._tasks.get(self._waiting.popleft())
            if task is None or task.state != WAITING:
                continue
            place = self._place(task, heap)
            if place is None:  # fits nowhere now
                skipped.append(task.id)
                if len(skipped) > 1000:
                    break
                continue
            worker = _take(heap, place)
            self._start(task, worker)
            if worker.free > -worker.cores:
                heapq.heappush(heap, (-worker.free, worker.id, worker))
        self._waiting.extendleft(reversed(skipped))
        if skipped and self._shared:  # look again when a file lands, or a little later
            self._rescan_at = now + DATA_WAIT_RESCAN
        if self.speculate and not self._waiting:
            idle = [w for w in workers if w.free > 0]
            if idle:
                self._speculate(idle)

    def _place(self, task: Task, heap: list) -> int | None:
        """Where in `heap` the worker for `task` is, or None if none can take it now.

        The freest worker (the top), unless files are being distributed: then
        the freest that holds the task's distributed inputs, so a task waits
        for its data to arrive rather than make the master send it (O(workers)).
        """
        if not self._shared:
            top = heap[0][2]
            return 0 if top.free + top.cores >= task.cores else None
        return min((i for i, (_, _, w) in enumerate(heap)
                    if w.free + w.cores >= task.cores and not self._lacks_shared(task, w)),
                   key=heap.__getitem__, default=None)

    def _start(self, task: Task, worker: _Peer) -> None:
        inputs = []
        try:
            for local, remote, cache in task.inputs:
                digest = self._hash(local)
                if digest not in worker.cached:
                    self._send_file(worker, local, digest)
                    worker.cached.add(digest)
                inputs.append(Input(hash=digest, name=remote, cache=cache,
                                    executable=os.access(local, os.X_OK)))
        except OSError as exc:
            task.error = f"input unreadable: {exc}"
            self._finish(task, FAILED)
            return
        self._set_state(task, RUNNING)
        worker.free -= task.cores
        worker.running.add(task.id)
        self._owners.setdefault(task.id, set()).add(worker.id)
        self._started.setdefault(task.id, time.monotonic())
        self._send(worker, TaskMessage(
            id=task.id, command=task.command, inputs=inputs,
            outputs=[remote for remote, _ in task.outputs], cores=task.cores,
            wall_time=task.wall_time))
        self._stats["dispatched"] += 1

    def _speculate(self, idle: list[_Peer]) -> None:
        """Run a second copy of a straggler once enough tasks finished to know normal times."""
        if len(self._durations) < 20:
            return
        typical = statistics.median(self._durations)  # the last 200 (a bounded deque)
        now = time.monotonic()
        for task_id, started in list(self._started.items()):
            owners = self._owners.get(task_id, set())
            task = self._tasks.get(task_id)
            if task is None or len(owners) != 1 or now - started < max(3 * typical, 1.0):
                continue
            candidates = [w for w in idle if w.id not in owners and w.free >= task.cores
                          and not (self._shared and self._lacks_shared(task, w))]
            if not candidates:
                return
            self._stats["speculative"] += 1
            self._start(task, candidates[0])
            if candidates[0].free == 0:
                idle.remove(candidates[0])

    def _attempt_failed(self, task: Task, why: str) -> None:
        task.attempts.append(why)
        if self._owners.get(task.id):
            return  # another copy is still running
        self._owners.pop(task.id, None)
        self._started.pop(task.id, None)
        if len(task.attempts) > self.retries:
            task.error = why
            self._finish(task, FAILED)
        else:
            self._set_state(task, WAITING)
            self._waiting.appendleft(task.id)

    def _stop_copies(self, task: Task) -> None:
        """Kill every running copy of a task and give their cores back."""
        for owner in self._owners.pop(task.id, set()):
            self._send_to(owner, Kill(id=task.id))
            peer = self._peers.get(owner)
            if peer is not None:
                peer.free = min(peer.cores, peer.free + task.cores)
                peer.running.discard(task.id)

    def _cancel(self, task_id: int) -> None:
        task = self._tasks.get(task_id)
        if task is None or task.state not in (WAITING, RUNNING):
            return
        self._stop_copies(task)
        self._started.pop(task_id, None)
        self._finish(task, CANCELLED)

    def _set_state(self, task: Task, state: str) -> None:
        self._counts[task.state] -= 1
        self._counts[state] += 1
        task.state = state

    def _finish(self, task: Task, state: str) -> None:
        self._set_state(task, state)
        self._stats[state] += 1
        future = self._futures.pop(task.id, None)
        if future is not None:
            self._tasks.pop(task.id, None)
            future.set_result(task)
        else:
            self._finished.put(task)

    def _tick(self) -> None:
        """Heartbeats out; peers silent too long, or stuck in the handshake, are dropped."""
        now = time.monotonic()
        for peer in list(self._peers.values()):
            if not peer.worker and peer.conn.state.name == "HANDSHAKE":
                if now - peer.opened > HANDSHAKE_SECONDS:
                    self._drop(peer, "no handshake in time")
                continue
            if now - peer.heard > 3 * self.heartbeat:
                self._drop(peer, "no heartbeat")
            elif peer.worker:
                self._send(peer, Heartbeat())

    def _drop(self, peer: _Peer, why: str) -> None:
        if self._peers.pop(peer.id, None) is None:
            return
        if peer.worker:
            self._stats["workers_lost"] += 1
        self._paused.pop(peer.id, None)
        if peer.worker and self._planner is not None:
            self._planner.remove_worker(peer.id)
            self._plan()
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(peer.sock)
        peer.sock.close()
        for item in peer.out:
            if isinstance(item, list):
                item[0].close()
        if peer.receiving is not None:
            peer.receiving[3].close()
            _discard({"": peer.receiving[2]})
        for files in peer.received.values():
            _discard(files)
        for task_id in list(peer.running):
            owners = self._owners.get(task_id, set())
            owners.discard(peer.id)
            task = self._tasks.get(task_id)
            if task is not None and task.state == RUNNING and not owners:
                self._attempt_failed(task, f"lost worker {peer.name}: {why}")

    def _status(self) -> dict:
        states = self._counts
        workers = [p for p in self._peers.values() if p.worker]
        return {
            "workers": len(workers),
            "draining": sum(w.draining for w in workers),
            "cores": sum(w.cores for w in workers),
            "busy_cores": sum(min(w.cores, w.cores - w.free) for w in workers),
            "queued_on_workers": sum(max(0, -w.free) for w in workers),
            "waiting": states[WAITING], "running": states[RUNNING],
            "done": self._stats[DONE], "failed": self._stats[FAILED],
            "cancelled": self._stats[CANCELLED], "submitted": self._stats["submitted"],
            "workers_joined": self._stats["workers_joined"],
            "workers_lost": self._stats["workers_lost"], "refused": self._stats["refused"],
            "speculative": self._stats["speculative"], "puts": self._stats["puts"],
            "bytes_sent": self._stats["bytes_sent"], "seeds": self._stats["seeds"],
            "peer_transfers": self._stats["peer_transfers"],
            "transfers_failed": self._stats["transfers_failed"],
        }

    def _shutdown(self) -> None:
        for peer in list(self._peers.values()):
            try:
                peer.sock.setblocking(True)
                peer.sock.settimeout(1)
                peer.sock.sendall(peer.conn.send(Bye(reason="the master is closing")))
            except (OSError, ValueError, ProtocolError):
                pass
            self._drop(peer, "closing")


def _take(heap: list, i: int) -> _Peer:
    """Remove entry `i` of the heap (the top, cheaply) and return its worker."""
    if i == 0:
        return heapq.heappop(heap)[2]
    entry = heap[i]
    heap[i] = heap[-1]
    heap.pop()
    heapq.heapify(heap)
    return entry[2]


def _discard(files: dict[str, Path]) -> None:
    for path in files.values():
        with contextlib.suppress(OSError):
            os.unlink(path)
