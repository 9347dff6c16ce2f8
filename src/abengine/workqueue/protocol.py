"""The Work Queue wire protocol as a state machine that does no I/O.

Modelled on h11: bytes from the socket go in with `receive_data`, events come
out of `next_event`, and `send(message)` returns the bytes to write. Sockets,
threads and files stay in master.py and worker.py, so two `Connection`s can be
wired together in memory for tests, and fuzzed: whatever a peer sends, the only
exception that leaves is `ProtocolError`, and a connection never holds more
than one header plus one chunk of payload. docs/protocol.md is the reference.

Standard library only: the single-file worker ships this module to hosts
without numpy or abengine.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import math
import os
import re
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from .auth import MASTER_LABEL, WORKER_LABEL, check, new_nonce, proof

#: Label of the key tickets are made with (derived from the run's secret).
TICKET_KEY_LABEL = b"abengine-ticket-key"
#: Label of a ticket: HMAC over (file hash, receiving worker id, expiry).
TICKET_LABEL = b"abengine-ticket"
#: Label of the proof a fetching worker makes with its ticket over the server's nonce.
PEER_LABEL = b"abengine-peer"

#: The protocol version this module speaks.
VERSION = 1
#: Largest payload chunk a `Data` event carries.
DATA_CHUNK = 1 << 20

_LENGTH = struct.Struct(">I")
_HEX64 = re.compile(r"[0-9a-f]{64}")


#: Benchmark and test knob only: cap every upload of a process (the master's sends, a
#: worker's peer uploads) at this many bytes per second, to emulate network cards on one
#: machine. Unset in real runs.
UPLOAD_LIMIT_ENV = "ABENGINE_UPLOAD_LIMIT"


class Pacer:
    """A token bucket for a process's uploads, as pure bookkeeping (the caller waits).

    `reserve(n)` books n bytes on the emulated link and returns how long the
    caller must wait before handing them to the socket: the chunk is "on the
    wire" until then. Bookings never overlap, so all uploads of a process
    share one rate, as they would share one network card. No rate: no wait.
    """

    def __init__(self, rate: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate if rate and rate > 0 else None
        self._clock = clock
        self._free = 0.0  # when the emulated link finishes what is booked
        self._lock = threading.Lock()  # a worker's upload threads share one pacer

    @classmethod
    def from_env(cls, environ: dict | None = None) -> Pacer:
        """The pacer `ABENGINE_UPLOAD_LIMIT` (bytes per second) asks for, if any."""
        text = (os.environ if environ is None else environ).get(UPLOAD_LIMIT_ENV, "")
        try:
            return cls(float(text) if text else None)
        except ValueError:
            raise ValueError(f"{UPLOAD_LIMIT_ENV}={text!r}: not a number of bytes per second") \
                from None

    def reserve(self, size: int) -> float:
        """Book `size` bytes; the seconds to wait before sending them (0 without a rate)."""
        if self.rate is None:
            return 0.0
        with self._lock:
            now = self._clock()
            self._free = max(self._free, now) + size / self.rate
            return self._free - now


class ProtocolError(Exception):
    """The peer broke the protocol: drop the connection (and requeue a worker's tasks)."""


@dataclass(frozen=True)
class Limits:
    """Bounds on what a peer can make us buffer or parse.

    The defaults fit every legal message: a task with `max_inputs` inputs, a
    result with two full tails, a hello's list of `max_cached` cached files.
    Before the peer has proved it holds the secret, a header may be no longer
    than `max_handshake_header`.
    """

    max_header: int = 16 << 20
    max_file: int = 64 << 30
    max_stdout: int = 65536
    max_inputs: int = 100_000
    max_handshake_header: int = 4096
    max_cached: int = 10_000


class Role(enum.Enum):
    """Which end of the connection this is."""

    MASTER = "master"  # accepts connections
    WORKER = "worker"  # connects: a worker, or a status client
    SERVER = "server"  # a worker's peer port: accepts fetches, serves cached files
    FETCHER = "fetcher"  # a worker fetching a file from another worker's peer port


class ConnectionState(enum.Enum):
    HANDSHAKE = "handshake"
    OPEN = "open"
    CLOSED = "closed"


# -- messages: what crosses the wire -------------------------------------------------


@dataclass
class Challenge:
    """master→worker, first thing: sign this nonce to prove you hold the secret."""

    nonce: str
    version: int = VERSION


@dataclass
class Hello:
    """worker→master: who connects, and its proof. The Connection fills `nonce` and `proof`."""

    role: str  # "worker" or "status"
    nonce: str = ""
    cores: int = 0
    memory: int = 0
    disk: int = 0
    name: str = ""
    pid: int = 0
    cached: list[str] = field(default_factory=list)  # hashes already in the worker's cache
    proof: str = ""
    version: int = VERSION
    peer_port: int = 0  # > 0: serves its cache to peers on this port (peer-transfer extension)
    peer_host: str = ""  # the address peers reach it at; "" = the one the master sees


@dataclass
class Welcome:
    """master→worker: admitted. The Connection adds the master's own `proof`."""

    worker_id: int
    heartbeat: float
    proof: str = ""
    peers: bool = False  # the master speaks the peer-transfer extension (fetch, stored)


@dataclass
class Refused:
    """master→worker: not admitted, and why."""

    reason: str


@dataclass
class Put:
    """master→worker: a file for the worker's cache; `size` payload bytes follow."""

    hash: str
    size: int


@dataclass
class Input:
    """One input of a task: the cached file `hash`, linked into the sandbox as `name`."""

    hash: str
    name: str
    cache: bool = True
    executable: bool = False


@dataclass
class Task:
    """master→worker: run `command` in a sandbox holding `inputs`; send back `outputs`."""

    id: int
    command: str
    inputs: list[Input]
    outputs: list[str]
    cores: int = 1
    wall_time: float | None = None


@dataclass
class Kill:
    """master→worker: stop task `id` (its Result still comes, with an error)."""

    id: int


@dataclass
class StatusReply:
    """master→status client: the master's counters."""

    fields: dict


@dataclass
class Heartbeat:
    """Either way: I am still here."""


@dataclass
class Bye:
    """Either way: I am leaving; nothing more follows."""

    reason: str = ""


@dataclass
class Drain:
    """worker→master: send me no more tasks (my batch wall time is running out).

    `returned` lists tasks received but not started, handed back to be run
    elsewhere without counting as a failed attempt; a worker may send Drain
    again to return tasks that crossed the first one on the wire.
    """

    returned: list[int] = field(default_factory=list)
    reason: str = ""


@dataclass
class Output:
    """worker→master: one output file of task `id`, before its Result; `size` bytes follow."""

    id: int
    name: str
    size: int


@dataclass
class Result:
    """worker→master: how task `id` ended. `stdout` and `stderr` are tails."""

    id: int
    exit_code: int | None
    signal: int | None
    error: str
    stdout: str
    stderr: str
    elapsed: float
    outputs: list[str]


@dataclass
class StatusRequest:
    """status client→master: send me a StatusReply."""


@dataclass
class Fetch:
    """master→worker: fetch file `hash` (`length` bytes) from the peer at `host`:`port`.

    `ticket` (see `make_ticket`) lets the worker prove to that peer that the
    master allowed this transfer, to this worker, until `expires` (Unix time).
    """

    hash: str
    length: int
    host: str
    port: int
    expires: int
    ticket: str


@dataclass
class Assemble:
    """master→worker: build file `hash` from bytes `offset`..`offset + length` of the cached
    pieces `parts` laid end to end.

    A large shared file travels as pieces, each a file of its own (hash-checked
    on arrival), so several pieces' trees run at once; small files travel
    packed into one piece, each at its offset. The file is hash-checked again
    as it is built. The worker answers with Stored for `hash`.
    """

    hash: str
    length: int
    parts: list[str]
    offset: int = 0


@dataclass
class Stored:
    """worker→master: file `hash` is now in my cache (error ""), or fetching it failed."""

    hash: str
    error: str = ""


@dataclass
class PeerRequest:
    """fetcher→server, after the server's challenge: send me `hash`.

    The Connection fills `proof`: an HMAC keyed with the ticket over the
    server's nonce, so the ticket itself never crosses the peer link.
    """

    hash: str
    worker_id: int
    expires: int
    proof: str = ""


@dataclass
class _Cached:
    """The hello's second frame: read only once the hello's proof checked out."""

    hashes: list[str]


# -- events: what next_event() returns besides messages ---------------------------


@dataclass
class Authenticated:
    """Master side: the worker proved it holds the secret; answer with `send(Welcome(...))`."""

    hello: Hello


@dataclass
class TicketAccepted:
    """Server side: the fetcher's ticket is right and unexpired; answer with a Put or Refused."""

    request: PeerRequest


@dataclass
class BadAuth:
    """The peer cannot be admitted: a wrong proof, or (master side) a version we do not speak.

    The connection is CLOSED. The master sends `Refused(reason=event.reason)`
    and closes; a worker gives up on a master that cannot prove itself.
    """

    reason: str


@dataclass
class Data:
    """A piece of the payload of the Put or Output just returned."""

    chunk: bytes


@dataclass
class EndOfData:
    """The payload of the Put or Output is complete."""


@dataclass
class Closed:
    """The peer closed the connection cleanly (between frames)."""


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


#: next_event() has nothing to return until more bytes are received.
NEED_DATA = _NeedData()

Message = (Challenge | Hello | Welcome | Refused | Put | Task | Kill | StatusReply | Heartbeat
           | Bye | Drain | Output | Result | StatusRequest | Fetch | Assemble | Stored
           | PeerRequest)
Event = Message | Authenticated | TicketAccepted | BadAuth | Data | EndOfData | Closed


# -- field checks: each returns the value or raises ProtocolError ---------------------

Check = Callable[[Any, Limits], Any]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _integer(value: Any, limits: Limits) -> int:
    if type(value) is not int:  # bool is an int in Python, not in this protocol
        raise ProtocolError(f"expected an integer, got {_short(value)}")
    return value


def _count(value: Any, limits: Limits) -> int:
    if type(value) is not int or value < 0:
        raise ProtocolError(f"expected a non-negative integer, got {_short(value)}")
    return value


def _file_size(value: Any, limits: Limits) -> int:
    size = _count(value, limits)
    if size > limits.max_file:
        raise ProtocolError(f"file of {size} bytes exceeds the limit of {limits.max_file}")
    return size


def _seconds(value: Any, limits: Limits) -> float:
    try:
        seconds = float(value) if type(value) in (int, float) else math.nan
    except OverflowError:  # an integer of hundreds of digits
        seconds = math.nan
    if not 0 <= seconds < math.inf:
        raise ProtocolError(f"expected a non-negative number, got {_short(value)}")
    return seconds


def _optional(check_: Check) -> Check:
    def check_optional(value: Any, limits: Limits) -> Any:
        return None if value is None else check_(value, limits)

    return check_optional


def _text(value: Any, limits: Limits) -> str:
    if type(value) is not str:
        raise ProtocolError(f"expected a string, got {_short(value)}")
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:  # a lone surrogate, spelt \udxxx in the JSON
            raise ProtocolError(f"not valid Unicode: {_short(value)}") from None
    return value


def _tail(value: Any, limits: Limits) -> str:
    text = _text(value, limits)
    size = len(text) if text.isascii() else len(text.encode())
    if size > limits.max_stdout:
        raise ProtocolError(f"tail of {size} bytes exceeds the limit of {limits.max_stdout}")
    return text


def _flag(value: Any, limits: Limits) -> bool:
    if type(value) is not bool:
        raise ProtocolError(f"expected true or false, got {_short(value)}")
    return value


def _hex64(value: Any, limits: Limits) -> str:
    if type(value) is not str or not _HEX64.fullmatch(value):
        raise ProtocolError(f"expected 64 lowercase hex digits, got {_short(value)}")
    return value


def _name_problem(name: str) -> str:
    """Why `name` is not a safe relative path inside a sandbox, or "" if it is one.

    Stricter than "does not escape": every file has exactly one spelling, so
    "./a", "a//b" and "a/" are refused too (the worker's cache agrees).
    """
    if not name:
        return "empty"
    if "\0" in name or "\\" in name:
        return "contains NUL or a backslash"
    if name.startswith("/"):
        return "absolute"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "has an empty, '.' or '..' component"
    return ""


def _name(value: Any, limits: Limits) -> str:
    name = _text(value, limits)
    problem = _name_problem(name)
    if problem:
        raise ProtocolError(f"unsafe file name {_short(name)}: {problem}")
    return name


def _at(where: str, exc: ProtocolError) -> ProtocolError:
    """`exc` with `where` put in front of its path: "task" ".inputs" "[3]" ".name: why"."""
    text = str(exc)
    return ProtocolError(where + (text if text[:1] in ".[:" else ": " + text))


def _each(check_: Check, value: Any, limit: int, limits: Limits) -> list:
    """`value` as a list of at most `limit` items, each passing `check_`."""
    if type(value) is not list:
        raise ProtocolError(f"expected a list, got {_short(value)}")
    if len(value) > limit:
        raise ProtocolError(f"list of {len(value)} items exceeds the limit of {limit}")
    items = []
    for i, item in enumerate(value):
        try:
            items.append(check_(item, limits))
        except ProtocolError as exc:
            raise _at(f"[{i}]", exc) from None
    return items


def _names(value: Any, limits: Limits) -> list[str]:
    return _each(_name, value, limits.max_inputs, limits)


def _ids(value: Any, limits: Limits) -> list[int]:
    return _each(_count, value, limits.max_cached, limits)


def _hashes(value: Any, limits: Limits) -> list[str]:
    return _each(_hex64, value, limits.max_cached, limits)


def _role(value: Any, limits: Limits) -> str:
    if value not in ("worker", "status"):
        raise ProtocolError(f"expected 'worker' or 'status', got {_short(value)}")
    return value


def _port(value: Any, limits: Limits) -> int:
    if type(value) is not int or not 0 <= value < 65536:
        raise ProtocolError(f"expected a port number in 0..65535, got {_short(value)}")
    return value


def _host(value: Any, limits: Limits) -> str:
    host = _text(value, limits)
    if len(host) > 255 or any(c.isspace() or c == "\0" for c in host):
        raise ProtocolError(f"not a host name or address: {_short(host)}")
    return host


def _object(value: Any, limits: Limits) -> dict:
    if type(value) is not dict:
        raise ProtocolError(f"expected an object, got {_short(value)}")
    return value


def _input(value: Any, limits: Limits) -> Input:
    return _decode(Input, _object(value, limits), limits)


def _inputs(value: Any, limits: Limits) -> list[Input]:
    return _each(_input, value, limits.max_inputs, limits)


#: Every field on the wire and its check. Fields the receiver does not know are
#: ignored, so a version may gain optional fields without a new number.
_FIELDS: dict[type, dict[str, Check]] = {
    Challenge: {"version": _integer, "nonce": _hex64},
    Hello: {"version": _integer, "role": _role, "nonce": _hex64, "proof": _hex64,
            "cores": _count, "memory": _count, "disk": _count, "name": _text, "pid": _count,
            "peer_port": _port, "peer_host": _host},
    _Cached: {"hashes": _hashes},
    Welcome: {"worker_id": _count, "heartbeat": _seconds, "proof": _hex64, "peers": _flag},
    Refused: {"reason": _text},
    Put: {"hash": _hex64, "size": _file_size},
    Input: {"hash": _hex64, "name": _name, "cache": _flag, "executable": _flag},
    Task: {"id": _count, "command": _text, "inputs": _inputs, "outputs": _names,
           "cores": _count, "wall_time": _optional(_seconds)},
    Kill: {"id": _count},
    StatusReply: {"fields": _object},
    Heartbeat: {},
    Bye: {"reason": _text},
    Drain: {"returned": _ids, "reason": _text},
    Output: {"id": _count, "name": _name, "size": _file_size},
    Result: {"id": _count, "exit_code": _optional(_integer), "signal": _optional(_integer),
             "error": _text, "stdout": _tail, "stderr": _tail, "elapsed": _seconds,
             "outputs": _names},
    StatusRequest: {},
    Fetch: {"hash": _hex64, "length": _file_size, "host": _host, "port": _port,
            "expires": _count, "ticket": _hex64},
    Assemble: {"hash": _hex64, "length": _file_size, "parts": _hashes, "offset": _file_size},
    Stored: {"hash": _hex64, "error": _text},
    PeerRequest: {"hash": _hex64, "worker_id": _count, "expires": _count, "proof": _hex64},
}
#: The only fields a sender may leave out; the receiver then uses the dataclass default.
_OPTIONAL: dict[type, set[str]] = {Task: {"cores", "wall_time"}, Input: {"cache", "executable"},
                                   Bye: {"reason"}, Drain: {"returned", "reason"},
                                   Hello: {"peer_port", "peer_host"}, Welcome: {"peers"},
                                   Stored: {"error"}, Assemble: {"offset"}}
_REQUIRED = {cls: set(checks) - _OPTIONAL.get(cls, set()) for cls, checks in _FIELDS.items()}
#: The "type" of each message: its class name in snake_case.
_TYPE = {cls: re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__.lstrip("_")).lower()
         for cls in _FIELDS if cls is not Input}
_CLASS = {kind: cls for cls, kind in _TYPE.items()}
#: Messages followed by `size` bytes of payload.
_PAYLOAD = {"put", "output"}
#: Messages exchanged before the peer is authenticated: short headers only.
_HANDSHAKE = {"challenge", "hello", "welcome", "refused", "peer_request"}


def ticket_key(secret: bytes) -> bytes:
    """The key tickets are made with: derived from the run's secret, which every worker holds."""
    return hmac.new(secret, TICKET_KEY_LABEL, hashlib.sha256).digest()


def make_ticket(key: bytes, digest: str, worker_id: int, expires: int) -> str:
    """The ticket allowing worker `worker_id` to fetch `digest` from any peer until `expires`."""
    return proof(key, TICKET_LABEL, digest, str(worker_id), str(expires))


def _decode(cls: type, obj: dict, limits: Limits) -> Any:
    """The message `cls` made of the JSON object `obj`, every field checked."""
    values = {}
    for name, check_ in _FIELDS[cls].items():
        if name in obj:
            try:
                values[name] = check_(obj[name], limits)
            except ProtocolError as exc:
                raise _at(f".{name}", exc) from None
        elif name in _REQUIRED[cls]:
            raise ProtocolError(f"missing field {name!r}")
    return cls(**values)


def _encode(message: Any) -> dict:
    """The JSON object of `message` (not yet checked)."""
    cls = type(message)
    obj = {"type": _TYPE[cls]}
    for name in _FIELDS[cls]:
        obj[name] = getattr(message, name)
    if cls is Task:
        obj["inputs"] = [_input_object(item) for item in message.inputs]
    return obj


def _input_object(item: Input) -> dict:
    if not isinstance(item, Input):
        raise ValueError(f"a task's inputs must be Input, not {_short(item)}")
    return {"hash": item.hash, "name": item.name, "cache": item.cache,
            "executable": item.executable}


def _cut_tail(text: str, limit: int) -> str:
    """The end of `text`, at most `limit` bytes of UTF-8, cut between characters."""
    if type(text) is not str or len(text) <= limit and text.isascii():
        return text
    data = text.encode("utf-8", "replace")  # a lone surrogate becomes "?"
    return data[-limit:].decode("utf-8", "ignore") if limit else ""


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


# -- the state machine ------------------------------------------------------------------


class _Phase(enum.Enum):
    """Where the handshake is; `ConnectionState` is the public summary."""

    START = "start"  # master: challenge not sent yet
    HELLO = "hello"  # master: challenge sent, waiting for the hello
    CACHED = "cached"  # master: the hello's proof is right, waiting for its cached list
    GREET = "greet"  # master: Authenticated returned, welcome not sent yet
    CHALLENGE = "challenge"  # worker: waiting for the challenge
    ANSWER = "answer"  # worker: challenge received, hello not sent yet
    WELCOME = "welcome"  # worker: hello sent, waiting for the welcome
    REQUEST = "request"  # server: challenge sent, waiting for the fetcher's ticketed request
    SERVE = "serve"  # server: ticket accepted; a put (or refused) goes out, then the end
    RECEIVE = "receive"  # fetcher: request sent, waiting for the put (or refused)
    OPEN = "open"
    CLOSED = "closed"


_STATE = {_Phase.OPEN: ConnectionState.OPEN, _Phase.GREET: ConnectionState.OPEN,
          _Phase.SERVE: ConnectionState.OPEN, _Phase.RECEIVE: ConnectionState.OPEN,
          _Phase.CLOSED: ConnectionState.CLOSED}

#: (our role, phase) -> (message types that may arrive, message types we may send),
#: for every phase but OPEN.
_RULES: dict[tuple[Role, _Phase], tuple[tuple[str, ...], tuple[str, ...]]] = {
    (Role.MASTER, _Phase.START): ((), ()),  # start() sends the challenge
    (Role.MASTER, _Phase.HELLO): (("hello",), ("refused",)),
    (Role.MASTER, _Phase.CACHED): (("cached",), ("refused",)),
    (Role.MASTER, _Phase.GREET): ((), ("welcome", "refused")),
    (Role.MASTER, _Phase.CLOSED): ((), ("refused", "bye")),
    (Role.WORKER, _Phase.CHALLENGE): (("challenge", "refused"), ()),
    (Role.WORKER, _Phase.ANSWER): (("refused",), ("hello",)),
    (Role.WORKER, _Phase.WELCOME): (("welcome", "refused"), ()),
    (Role.WORKER, _Phase.CLOSED): ((), ("bye",)),
    # A peer transfer: one file, one way, then the server closes.
    (Role.SERVER, _Phase.START): ((), ()),  # start() sends the challenge
    (Role.SERVER, _Phase.REQUEST): (("peer_request",), ("refused",)),
    (Role.SERVER, _Phase.SERVE): ((), ("put", "refused", "bye")),
    (Role.SERVER, _Phase.CLOSED): ((), ("refused", "bye")),
    (Role.FETCHER, _Phase.CHALLENGE): (("challenge", "refused"), ()),
    (Role.FETCHER, _Phase.ANSWER): (("refused",), ("peer_request",)),
    (Role.FETCHER, _Phase.RECEIVE): (("put", "refused", "bye"), ("bye",)),
    (Role.FETCHER, _Phase.CLOSED): ((), ("bye",)),
}
#: Roles that accept connections (and so start them with a challenge).
_ACCEPTING = {Role.MASTER, Role.SERVER}
#: Once OPEN, what the master may send, by the role the other end said hello with...
_MASTER_SENDS = {"worker": ("put", "task", "kill", "status_reply", "heartbeat", "bye"),
                 "status": ("status_reply", "heartbeat", "bye")}
#: ...and what that other end may send.
_WORKER_SENDS = {"worker": ("output", "result", "drain", "status_request", "heartbeat", "bye"),
                 "status": ("status_request", "heartbeat", "bye")}
#: Phases in which the peer has not proved it holds the secret.
_UNAUTHENTICATED = {_Phase.START, _Phase.HELLO, _Phase.CHALLENGE, _Phase.ANSWER,
                    _Phase.WELCOME, _Phase.REQUEST, _Phase.RECEIVE}
#: What the peer-transfer extension adds once both ends offered it: (master sends, worker sends).
_EXTENSION = (("fetch", "assemble"), ("stored",))


class Connection:
    """One end of one connection: bytes in, events out; messages in, bytes out.

    `ProtocolError` from `next_event` means the peer misbehaved: drop it.
    `ValueError` from `send`, `send_data` or `start` means the caller did.
    Once open, one thread may receive while others send (one at a time): after
    the handshake, sending never touches the receiving side's state. Sending
    Bye changes nothing either; the caller closes the socket after it.
    """

    def __init__(self, role: Role, secret: bytes, limits: Limits = Limits()) -> None:
        if not isinstance(secret, bytes) or not secret:
            raise ValueError("the secret must be non-empty bytes")
        self.role = role
        self.limits = limits
        #: Master side: the authenticated Hello. Worker side: the Welcome.
        self.peer: Hello | Welcome | None = None
        self._secret = secret
        self._nonce = ""  # ours
        self._peer_nonce = ""
        self._hello: Hello | None = None  # master: verified, waiting for its cached list
        self._worker_role = ""  # "worker" or "status": how the connecting end said hello
        self._offered = False  # worker: our hello offered a peer port
        #: Both ends speak the peer-transfer extension (fetch, stored): set when OPEN.
        self.peers = False
        #: Server side: the clock tickets' expiry is judged by (Unix seconds).
        self.clock: Callable[[], float] = time.time
        self._buffer = bytearray()
        self._pos = 0  # bytes of the buffer already turned into events
        self._eof = False
        self._receiving: int | None = None  # payload bytes still to deliver, None outside one
        self._sending = 0  # payload bytes the caller still owes through send_data()
        self._error = ""
        self._enter(_Phase.START if role in _ACCEPTING else _Phase.CHALLENGE)

    @property
    def state(self) -> ConnectionState:
        return _STATE.get(self._phase, ConnectionState.HANDSHAKE)

    def _enter(self, phase: _Phase) -> None:
        self._phase = phase
        if phase is _Phase.OPEN:
            masters, workers = _MASTER_SENDS[self._worker_role], _WORKER_SENDS[self._worker_role]
            if self.peers:
                masters, workers = masters + _EXTENSION[0], workers + _EXTENSION[1]
            arrive, send = (workers, masters) if self.role is Role.MASTER else (masters, workers)
        else:
            arrive, send = _RULES[self.role, phase]
        self._may_arrive = frozenset(arrive)
        self._may_send = frozenset(send)
        self._header_limit = (self.limits.max_handshake_header if phase in _UNAUTHENTICATED
                              else self.limits.max_header)
        if phase is _Phase.CLOSED:  # nothing more is read: drop what is buffered
            self._buffer.clear()
            self._pos = 0
            self._receiving = None

    # -- receiving --------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes read from the socket; b"" when the peer closed it."""
        if self._eof:
            if data:
                raise ValueError("receive_data() after the end of the stream")
            return
        if not data:
            self._eof = True
        elif self._phase is not _Phase.CLOSED:
            if self._pos:
                del self._buffer[:self._pos]
                self._pos = 0
            self._buffer += data

    def next_event(self) -> Event | _NeedData:
        """The next event, or NEED_DATA. Raises ProtocolError, again and again, once broken."""
        if self._error:
            raise ProtocolError(self._error)
        try:
            return self._next_event()
        except ProtocolError as exc:
            self._error = str(exc)
            self._enter(_Phase.CLOSED)
            raise

    def _next_event(self) -> Event | _NeedData:
        while True:
            if self._phase is _Phase.CLOSED:
                return Closed() if self._eof else NEED_DATA
            if self._receiving is not None:
                return self._payload_event()
            obj = self._next_header()
            if obj is None:
                return self._end_of_input()
            event = self._handle(obj)
            if event is not None:
                return event

    def _next_header(self) -> dict | None:
        """The next complete header as a JSON object, or None if it is not all here yet."""
        buffer, pos = self._buffer, self._pos
        if len(buffer) - pos < 4:
            return None
        (length,) = _LENGTH.unpack_from(buffer, pos)
        if length > self._header_limit:
            raise ProtocolError(f"header of {length} bytes exceeds the limit of "
                                f"{self._header_limit}")
        end = pos + 4 + length
        if len(buffer) < end:
            return None
        self._pos = end
        try:
            obj = _DECODER.decode(buffer[pos + 4:end].decode())
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            raise ProtocolError(f"header is not UTF-8 JSON: {exc}") from None
        if type(obj) is not dict:
            raise ProtocolError(f"header is not a JSON object: {_short(obj)}")
        return obj

    def _end_of_input(self) -> Closed | _NeedData:
        if not self._eof:
            return NEED_DATA
        if len(self._buffer) > self._pos:
            raise ProtocolError("the connection closed in the middle of a frame")
        self._enter(_Phase.CLOSED)
        return Closed()

    def _payload_event(self) -> Data | EndOfData | _NeedData:
        left = self._receiving
        assert left is not None
        if left == 0:
            self._receiving = None
            return EndOfData()
        pos = self._pos
        available = len(self._buffer) - pos
        if not available:
            if self._eof:
                raise ProtocolError(f"the connection closed with {left} payload bytes to come")
            return NEED_DATA
        size = min(available, left, DATA_CHUNK)
        with memoryview(self._buffer) as view:
            chunk = view[pos:pos + size].tobytes()
        self._pos = pos + size
        self._receiving = left - size
        return Data(chunk)

    def _handle(self, obj: dict) -> Event | None:
        """The event a header makes, or None if it only advanced the handshake."""
        kind = obj.get("type")
        if type(kind) is not str:
            raise ProtocolError(f"header without a string 'type': {_short(obj)}")
        if kind not in self._may_arrive:
            if kind not in _CLASS:
                raise ProtocolError(f"unknown message type {_short(kind)}")
            raise ProtocolError(f"{kind} not allowed here ({self._where()})")
        if "size" in obj and kind not in _PAYLOAD:
            raise ProtocolError(f"{kind} carries no payload, yet has a size")
        if kind == "hello":
            return self._on_hello(obj)
        if kind == "peer_request":
            return self._on_peer_request(obj)
        message = self._decode(kind, obj)
        if kind in _PAYLOAD:
            self._receiving = message.size
        elif kind == "cached":
            return self._on_cached(message)
        elif kind == "challenge":
            self._peer_nonce = message.nonce
            self._enter(_Phase.ANSWER)
        elif kind == "welcome":
            return self._on_welcome(message)
        elif kind in ("refused", "bye"):
            self._enter(_Phase.CLOSED)
        return message

    def _decode(self, kind: str, obj: dict) -> Any:
        try:
            return _decode(_CLASS[kind], obj, self.limits)
        except ProtocolError as exc:
            raise _at(kind, exc) from None

    def _where(self) -> str:
        """Where this end is, for error messages."""
        if self._phase is not _Phase.OPEN:
            return f"{self.role.value} side, {self._phase.value} phase"
        if self.role is Role.MASTER:
            return f"master side, open, the peer is a {self._worker_role}"
        return f"{self._worker_role} side, open"

    def _on_hello(self, obj: dict) -> BadAuth | None:
        version = obj.get("version")
        if type(version) is not int:
            raise ProtocolError(f"hello.version: expected an integer, got {_short(version)}")
        if version != VERSION:  # judged first: a newer hello may not parse as ours
            self._enter(_Phase.CLOSED)
            return BadAuth(f"protocol version {version} not supported")
        hello = self._decode("hello", obj)
        if not check(self._secret, WORKER_LABEL, hello.proof, self._nonce, hello.nonce):
            self._enter(_Phase.CLOSED)
            return BadAuth("authentication failed")
        self._hello, self._peer_nonce = hello, hello.nonce
        self._enter(_Phase.CACHED)
        return None

    def _on_peer_request(self, obj: dict) -> TicketAccepted | BadAuth:
        """Server side: the request's proof must come from the ticket the master would make."""
        request = self._decode("peer_request", obj)
        ticket = make_ticket(self._secret, request.hash, request.worker_id, request.expires)
        if not check(ticket.encode(), PEER_LABEL, request.proof, self._nonce):
            self._enter(_Phase.CLOSED)
            return BadAuth("wrong ticket")
        if request.expires <= self.clock():  # judged after the proof: no news for a forger
            self._enter(_Phase.CLOSED)
            return BadAuth("ticket expired")
        self._enter(_Phase.SERVE)
        return TicketAccepted(request)

    def _on_cached(self, cached: _Cached) -> Authenticated:
        hello = self._hello
        assert hello is not None
        hello.cached = cached.hashes
        self.peer, self._worker_role = hello, hello.role
        self._enter(_Phase.GREET)
        return Authenticated(hello)

    def _on_welcome(self, welcome: Welcome) -> Welcome | BadAuth:
        if not check(self._secret, MASTER_LABEL, welcome.proof, self._nonce, self._peer_nonce):
            self._enter(_Phase.CLOSED)
            return BadAuth("the master's proof is wrong: it does not hold the secret")
        self.peer = welcome
        self.peers = self._offered and welcome.peers and self._worker_role == "worker"
        self._enter(_Phase.OPEN)
        return welcome

    # -- sending ----------------------------------------------------------------------

    def start(self) -> bytes:
        """Accepting side only (master, server), once, first: the challenge that opens it."""
        if self.role not in _ACCEPTING or self._phase is not _Phase.START:
            raise ValueError("start() is for a new master or server connection, once")
        self._nonce = new_nonce()  # never the caller's: a reused one would allow a replay
        wire = self._frame("challenge", Challenge(nonce=self._nonce))
        self._enter(_Phase.HELLO if self.role is Role.MASTER else _Phase.REQUEST)
        return wire

    def send(self, message: Message) -> bytes:
        """The bytes of `message`, after checking it is well-formed and allowed now."""
        kind = _TYPE.get(type(message))
        if kind is None or kind == "cached":
            raise ValueError(f"not a message: {_short(message)}")
        if self._sending:
            raise ValueError(f"{self._sending} payload bytes are still to be sent")
        if kind not in self._may_send:
            raise ValueError(f"cannot send {kind} ({self._where()})")
        if kind == "hello":
            return self._send_hello(message)
        if kind == "peer_request":
            message = replace(message, proof=proof(self._secret, PEER_LABEL, self._peer_nonce))
        elif kind == "welcome":
            message = replace(message, proof=proof(self._secret, MASTER_LABEL,
                                                   self._peer_nonce, self._nonce))
            hello = self.peer
            self.peers = (message.peers and isinstance(hello, Hello) and hello.role == "worker"
                          and hello.peer_port > 0)
        elif kind == "result":
            message = self._cut_tails(message)
        wire = self._frame(kind, message)
        if kind in _PAYLOAD:
            self._sending = message.size
        elif kind == "welcome":
            self._enter(_Phase.OPEN)
        elif kind == "peer_request":
            self._enter(_Phase.RECEIVE)
        elif kind == "refused":
            self._enter(_Phase.CLOSED)
        return wire

    def _send_hello(self, hello: Hello) -> bytes:
        # Always a fresh nonce: a reused one would let a fake master replay an old welcome.
        self._nonce = new_nonce()
        hello = replace(hello, nonce=self._nonce, version=VERSION,
                        proof=proof(self._secret, WORKER_LABEL, self._peer_nonce, self._nonce))
        wire = self._frame("hello", hello) + self._frame("cached", _Cached(hello.cached))
        self._worker_role = hello.role
        self._offered = hello.peer_port > 0
        self._enter(_Phase.WELCOME)
        return wire

    def _cut_tails(self, result: Result) -> Result:
        limit = self.limits.max_stdout
        stdout, stderr = _cut_tail(result.stdout, limit), _cut_tail(result.stderr, limit)
        if stdout is result.stdout and stderr is result.stderr:
            return result
        return replace(result, stdout=stdout, stderr=stderr)

    def _frame(self, kind: str, message: Any) -> bytes:
        """Length-prefixed header of `message`, checked as the peer will check it."""
        try:
            obj = _encode(message)
            _decode(type(message), obj, self.limits)
            header = _ENCODER.encode(obj).encode()
        except ProtocolError as exc:
            raise ValueError(f"cannot send {_at(kind, exc)}") from None
        except TypeError as exc:  # StatusReply.fields holding something JSON cannot
            raise ValueError(f"cannot send {kind}: {exc}") from None
        limit = (self.limits.max_handshake_header if kind in _HANDSHAKE
                 else self.limits.max_header)
        if len(header) > limit:
            raise ValueError(f"{kind} header of {len(header)} bytes exceeds the limit of {limit}")
        return _LENGTH.pack(len(header)) + header

    def send_data(self, chunk: bytes) -> bytes:
        """Payload bytes of the Put or Output just sent, counted; returned unchanged."""
        if len(chunk) > self._sending:
            raise ValueError(f"{len(chunk)} payload bytes given, {self._sending} expected")
        self._sending -= len(chunk)
        return chunk
