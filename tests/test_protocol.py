"""The Work Queue wire protocol: two Connections wired together in memory, no sockets."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abengine.workqueue import protocol
from abengine.workqueue.auth import (
    MASTER_LABEL,
    WORKER_LABEL,
    check,
    load_secret,
    new_nonce,
    new_secret,
    proof,
)
from abengine.workqueue.protocol import (
    DATA_CHUNK,
    NEED_DATA,
    Authenticated,
    BadAuth,
    Bye,
    Challenge,
    Closed,
    Connection,
    ConnectionState,
    Data,
    Drain,
    EndOfData,
    Heartbeat,
    Hello,
    Input,
    Kill,
    Limits,
    Output,
    ProtocolError,
    Put,
    Refused,
    Result,
    Role,
    StatusReply,
    StatusRequest,
    Task,
    Welcome,
)

SECRET = b"correct horse battery staple"
H1, H2 = hashlib.sha256(b"one").hexdigest(), hashlib.sha256(b"two").hexdigest()


def frame(obj: object) -> bytes:
    """A frame built by hand, so tests can send what a Connection never would."""
    header = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return struct.pack(">I", len(header)) + header


def drain(conn: Connection, data: bytes = b"") -> list:
    """Feed `data`, then every event up to NEED_DATA (or Closed)."""
    if data:
        conn.receive_data(data)
    events = []
    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            return events
        events.append(event)
        if isinstance(event, Closed):
            return events


def hello(role: str = "worker", **fields) -> Hello:
    defaults = dict(cores=4, memory=8 << 30, disk=100 << 30, name="node7", pid=4242,
                    cached=[H1])
    return Hello(role=role, **{**defaults, **fields})


DEFAULT = Limits()


def handshake(role: str = "worker", limits: Limits = DEFAULT) -> tuple[Connection, Connection]:
    """An OPEN master and worker (or status client) connection, talking to each other."""
    master = Connection(Role.MASTER, SECRET, limits)
    worker = Connection(Role.WORKER, SECRET, limits)
    [challenge] = drain(worker, master.start())
    assert isinstance(challenge, Challenge)
    [auth] = drain(master, worker.send(hello(role)))
    assert isinstance(auth, Authenticated)
    [welcome] = drain(worker, master.send(Welcome(worker_id=3, heartbeat=5.0)))
    assert isinstance(welcome, Welcome)
    return master, worker


def merge_data(events: list) -> list:
    """Events with runs of Data joined: how payload is split depends on how bytes arrived."""
    merged: list = []
    for event in events:
        if isinstance(event, Data) and merged and isinstance(merged[-1], Data):
            merged[-1] = Data(merged[-1].chunk + event.chunk)
        else:
            merged.append(event)
    return merged


# -- auth.py ------------------------------------------------------------------------------


def test_proof_is_the_documented_hmac():
    n1, n2 = new_nonce(), new_nonce()
    assert len(n1) == 64 and int(n1, 16) >= 0 and n1 != n2
    expected = hmac.new(SECRET, b"abengine-worker\0" + n1.encode() + b"\0" + n2.encode(),
                        hashlib.sha256).hexdigest()
    assert proof(SECRET, WORKER_LABEL, n1, n2) == expected
    assert check(SECRET, WORKER_LABEL, expected, n1, n2)
    assert not check(SECRET, MASTER_LABEL, expected, n1, n2)  # no reflection across labels
    assert not check(SECRET, WORKER_LABEL, expected, n2, n1)
    assert not check(b"other", WORKER_LABEL, expected, n1, n2)
    assert not check(SECRET, WORKER_LABEL, "é" * 64, n1, n2)
    assert len(new_secret()) == 32 and new_secret() != new_secret()


def test_the_worked_example_of_the_docs(monkeypatch):
    secret = b"example-secret"
    n_m = hashlib.sha256(b"master nonce").hexdigest()
    n_w = hashlib.sha256(b"worker nonce").hexdigest()
    assert n_m.startswith("16a76a") and n_w.startswith("b77cfc")
    assert proof(secret, WORKER_LABEL, n_m, n_w) == \
        "041a5f443e057c462027815a62117fd636a4e1f2228228cea71f471bdb51446d"
    assert proof(secret, MASTER_LABEL, n_w, n_m) == \
        "38c71e47769136a3213404946a22a89ae1ec01f3351328b32de5e9358af1777d"
    monkeypatch.setattr(protocol, "new_nonce", lambda: n_m)
    wire = Connection(Role.MASTER, secret).start()
    assert wire[:4] == struct.pack(">I", 107)
    assert wire[4:] == b'{"type":"challenge","version":1,"nonce":"' + n_m.encode() + b'"}'


def test_load_secret_strips_the_newline_and_refuses_an_empty_file(tmp_path):
    path = tmp_path / "password"
    path.write_bytes(b"s3cret\n")
    assert load_secret(path) == b"s3cret"
    path.write_bytes(b"s3cret\r\n")
    assert load_secret(str(path)) == b"s3cret"
    path.write_bytes(b"\n")
    with pytest.raises(ValueError, match="password"):
        load_secret(path)


# -- the handshake ------------------------------------------------------------------------


def test_handshake_authenticates_both_sides():
    master, worker = Connection(Role.MASTER, SECRET), Connection(Role.WORKER, SECRET)
    assert master.state is worker.state is ConnectionState.HANDSHAKE
    challenge_wire = master.start()
    assert json.loads(challenge_wire[4:])["version"] == 1
    [challenge] = drain(worker, challenge_wire)
    assert isinstance(challenge, Challenge) and challenge.version == 1

    wire = worker.send(hello(cached=[H1, H2]))
    assert SECRET not in wire
    [auth] = drain(master, wire)
    assert isinstance(auth, Authenticated)
    assert master.state is ConnectionState.OPEN and master.peer is auth.hello
    assert (auth.hello.role, auth.hello.cores, auth.hello.name, auth.hello.pid) == \
        ("worker", 4, "node7", 4242)
    assert auth.hello.cached == [H1, H2]
    assert auth.hello.proof == proof(SECRET, WORKER_LABEL, challenge.nonce, auth.hello.nonce)

    [welcome] = drain(worker, master.send(Welcome(worker_id=3, heartbeat=5.0)))
    assert worker.state is ConnectionState.OPEN and worker.peer is welcome
    assert (welcome.worker_id, welcome.heartbeat) == (3, 5.0)
    assert welcome.proof == proof(SECRET, MASTER_LABEL, auth.hello.nonce, challenge.nonce)


def test_every_hello_gets_a_fresh_nonce_whatever_the_caller_gave():
    master, worker = Connection(Role.MASTER, SECRET), Connection(Role.WORKER, SECRET)
    drain(worker, master.start())
    [auth] = drain(master, worker.send(hello(nonce="0" * 64, proof="1" * 64)))
    assert isinstance(auth, Authenticated) and auth.hello.nonce != "0" * 64


def test_a_worker_with_the_wrong_secret_is_refused():
    master, worker = Connection(Role.MASTER, SECRET), Connection(Role.WORKER, b"guess")
    drain(worker, master.start())
    [bad] = drain(master, worker.send(hello()))
    assert bad == BadAuth("authentication failed")
    assert master.state is ConnectionState.CLOSED and master.peer is None
    assert drain(master) == []  # the hello's cached-list frame is dropped unread
    with pytest.raises(ValueError):
        master.send(Welcome(worker_id=1, heartbeat=5.0))
    [refused] = drain(worker, master.send(Refused(reason=bad.reason)))
    assert refused == Refused("authentication failed")
    assert worker.state is ConnectionState.CLOSED
    master.receive_data(b"")
    assert isinstance(master.next_event(), Closed)


def test_a_worker_detects_a_master_without_the_secret():
    fake_nonce = new_nonce()
    worker = Connection(Role.WORKER, SECRET)
    drain(worker, frame({"type": "challenge", "version": 1, "nonce": fake_nonce}))
    sent = worker.send(hello())
    hello_obj = json.loads(sent[4:4 + struct.unpack(">I", sent[:4])[0]])
    wrong = proof(b"guess", MASTER_LABEL, hello_obj["nonce"], fake_nonce)
    [bad] = drain(worker, frame({"type": "welcome", "worker_id": 1, "heartbeat": 5.0,
                                 "proof": wrong}))
    assert isinstance(bad, BadAuth) and worker.state is ConnectionState.CLOSED
    assert worker.peer is None


def test_a_fake_master_cannot_reflect_the_workers_own_proof():
    worker = Connection(Role.WORKER, SECRET)
    drain(worker, frame({"type": "challenge", "version": 1, "nonce": new_nonce()}))
    sent = worker.send(hello())
    hello_obj = json.loads(sent[4:4 + struct.unpack(">I", sent[:4])[0]])
    [bad] = drain(worker, frame({"type": "welcome", "worker_id": 1, "heartbeat": 5.0,
                                 "proof": hello_obj["proof"]}))
    assert isinstance(bad, BadAuth)


def test_a_worker_of_another_version_is_refused_with_the_reason():
    master = Connection(Role.MASTER, SECRET)
    master.start()
    # A v2 hello need not look like ours: only its version is read.
    [bad] = drain(master, frame({"type": "hello", "version": 2, "something": "new"}))
    assert bad == BadAuth("protocol version 2 not supported")
    assert master.state is ConnectionState.CLOSED
    worker = Connection(Role.WORKER, SECRET)
    drain(worker, frame({"type": "challenge", "version": 1, "nonce": new_nonce()}))
    worker.send(hello())
    [refused] = drain(worker, master.send(Refused(reason=bad.reason)))
    assert refused.reason == "protocol version 2 not supported"


def test_a_worker_answers_a_newer_master_with_its_own_version():
    worker = Connection(Role.WORKER, SECRET)
    [challenge] = drain(worker, frame({"type": "challenge", "version": 2, "nonce": new_nonce()}))
    assert challenge.version == 2
    sent = worker.send(hello())
    assert json.loads(sent[4:4 + struct.unpack(">I", sent[:4])[0]])["version"] == 1


def test_handshake_calls_in_the_wrong_order_are_refused():
    master, worker = Connection(Role.MASTER, SECRET), Connection(Role.WORKER, SECRET)
    with pytest.raises(ValueError):
        worker.start()
    with pytest.raises(ValueError):
        worker.send(hello())  # no challenge yet
    with pytest.raises(ValueError):
        master.send(Welcome(worker_id=1, heartbeat=1.0))  # no hello yet
    with pytest.raises(ValueError, match="cannot send challenge"):
        master.send(Challenge(nonce=H1))  # only start() chooses the nonce
    master.start()
    with pytest.raises(ValueError):
        master.start()
    with pytest.raises(ValueError):
        master.send(Task(id=1, command="true", inputs=[], outputs=[]))
    with pytest.raises(ValueError):
        Connection(Role.WORKER, b"")


def test_nothing_but_the_welcome_goes_out_before_it():
    master, worker = Connection(Role.MASTER, SECRET), Connection(Role.WORKER, SECRET)
    drain(worker, master.start())
    drain(master, worker.send(hello()))
    with pytest.raises(ValueError):
        master.send(Heartbeat())


# -- after the handshake --------------------------------------------------------------------


def test_a_task_round_trip_with_files_in_and_out():
    master, worker = handshake()
    content = os.urandom(3 * DATA_CHUNK + 12345)
    digest = hashlib.sha256(content).hexdigest()
    wire = bytearray(master.send(Put(digest, len(content))))
    for i in range(0, len(content), 200_000):
        wire += master.send_data(content[i:i + 200_000])
    task = Task(id=7, command="sort data > out/sorted", cores=2, wall_time=60.0,
                inputs=[Input(hash=digest, name="data", executable=True),
                        Input(hash=H1, name="lib/helper.py", cache=False)],
                outputs=["out/sorted"])
    wire += master.send(task)

    events = []
    for i in range(0, len(wire), 65536):  # as a socket would deliver it
        events += drain(worker, bytes(wire[i:i + 65536]))
    assert events[0] == Put(digest, len(content))
    chunks = [e.chunk for e in events if isinstance(e, Data)]
    assert all(0 < len(c) <= DATA_CHUNK for c in chunks)
    assert b"".join(chunks) == content
    assert events[-2:] == [EndOfData(), task]

    produced = os.urandom(2 * DATA_CHUNK + 1)
    back = worker.send(Output(id=7, name="out/sorted", size=len(produced)))
    back += worker.send_data(produced[:DATA_CHUNK]) + worker.send_data(produced[DATA_CHUNK:])
    result = Result(id=7, exit_code=0, signal=None, error="", stdout="sorted\n",
                    stderr="", elapsed=1.5, outputs=["out/sorted"])
    back += worker.send(result)
    events = merge_data(drain(master, back))
    assert events == [Output(7, "out/sorted", len(produced)), Data(produced), EndOfData(),
                      result]


def test_an_empty_file_still_ends_with_end_of_data():
    master, worker = handshake()
    digest = hashlib.sha256(b"").hexdigest()
    assert drain(worker, master.send(Put(digest, 0))) == [Put(digest, 0), EndOfData()]


def test_payload_must_be_sent_whole_before_the_next_message():
    master, _ = handshake()
    master.send(Put(H1, 10))
    with pytest.raises(ValueError):
        master.send(Heartbeat())
    master.send_data(b"12345")
    with pytest.raises(ValueError):
        master.send_data(b"123456")
    master.send_data(b"67890")
    master.send(Heartbeat())
    with pytest.raises(ValueError):
        master.send_data(b"x")


def test_kill_heartbeat_and_bye():
    master, worker = handshake()
    assert drain(worker, master.send(Kill(id=7)) + master.send(Heartbeat())) == \
        [Kill(7), Heartbeat()]
    assert drain(master, worker.send(Heartbeat())) == [Heartbeat()]
    assert drain(master, worker.send(Bye(reason="idle"))) == [Bye("idle")]
    assert master.state is ConnectionState.CLOSED
    assert drain(master, frame(b"whatever follows is dropped unread")) == []
    master.receive_data(b"")
    assert isinstance(master.next_event(), Closed)
    assert isinstance(master.next_event(), Closed)
    master.send(Bye())  # saying goodbye to a closed connection is harmless
    assert worker.send(Bye()) and worker.state is ConnectionState.OPEN  # the caller closes


def test_drain_goes_worker_to_master_only_and_its_ids_are_checked():
    master, worker = handshake()
    assert drain(master, worker.send(Drain(returned=[3, 4], reason="wall time"))) == \
        [Drain([3, 4], "wall time")]
    assert drain(master, frame(json.dumps({"type": "drain"}).encode())) == [Drain()]
    with pytest.raises(ValueError):
        master.send(Drain())
    with pytest.raises(protocol.ProtocolError, match="returned"):
        drain(master, frame(json.dumps({"type": "drain", "returned": [-1]}).encode()))


def test_the_cached_list_is_bounded_both_ways():
    limits = Limits(max_cached=2)
    master, worker = Connection(Role.MASTER, SECRET, limits), Connection(Role.WORKER, SECRET)
    drain(worker, master.start())
    small = Connection(Role.WORKER, SECRET, limits)
    drain(small, Connection(Role.MASTER, SECRET).start())
    with pytest.raises(ValueError, match="hashes"):
        small.send(hello(cached=[H1, H2, H1]))
    with pytest.raises(ValueError, match="hex"):
        worker.send(hello(cached=["nope"]))
    with pytest.raises(ProtocolError, match="cached.hashes"):
        drain(master, worker.send(hello(cached=[H1, H2, H1])))


def test_end_of_stream_between_frames_is_a_clean_close():
    master, worker = handshake()
    worker.receive_data(master.send(Heartbeat()))
    worker.receive_data(b"")
    assert drain(worker) == [Heartbeat(), Closed()]
    assert worker.state is ConnectionState.CLOSED
    with pytest.raises(ValueError):
        worker.receive_data(b"more")


def test_long_tails_are_cut_to_the_limit_when_sent():
    master, worker = handshake(limits=Limits(max_stdout=100))
    result = Result(id=1, exit_code=None, signal=9, error="killed", stdout="x" * 500 + "END",
                    stderr="é" * 100, elapsed=0.0, outputs=[])
    [got] = drain(master, worker.send(result))
    assert got.stdout.endswith("END") and len(got.stdout) == 100
    assert got.stderr == "é" * 50
    assert result.stdout.startswith("x" * 500)  # the caller's object is left alone


def test_a_status_client_asks_and_is_answered():
    master, client = handshake(role="status")
    assert master.peer.role == "status"
    assert drain(master, client.send(StatusRequest())) == [StatusRequest()]
    fields = {"workers": 3, "waiting": 10, "names": ["a", "b"]}
    assert drain(client, master.send(StatusReply(fields=fields))) == [StatusReply(fields)]
    with pytest.raises(ValueError):
        master.send(Task(id=1, command="true", inputs=[], outputs=[]))
    with pytest.raises(ValueError):
        client.send(Result(1, 0, None, "", "", "", 0.0, []))
    with pytest.raises(ProtocolError, match="not allowed"):
        drain(master, frame({"type": "result", "id": 1, "exit_code": 0, "signal": None,
                             "error": "", "stdout": "", "stderr": "", "elapsed": 0,
                             "outputs": []}))


def test_send_refuses_what_the_peer_would_refuse():
    master, worker = handshake()
    for bad in ["../x", "/etc/passwd", "a/../b", "", "a\0b", "a\\b", "./a", "a//b", "a/"]:
        with pytest.raises(ValueError, match="unsafe"):
            master.send(Task(id=1, command="true", inputs=[Input(H1, bad)], outputs=[]))
        with pytest.raises(ValueError, match="unsafe"):
            worker.send(Output(id=1, name=bad, size=0))
    for bad_hash in [H1.upper(), H1[:-1], "z" * 64, 42]:
        with pytest.raises(ValueError, match="hex"):
            master.send(Put(bad_hash, 1))
    with pytest.raises(ValueError):
        master.send(Put(H1, -1))
    with pytest.raises(ValueError):
        master.send(Kill(id="7"))
    with pytest.raises(ValueError):
        master.send(Task(id=1, command="true", inputs=[{"hash": H1, "name": "x"}], outputs=[]))
    with pytest.raises(ValueError):
        master.send(StatusReply(fields={"when": object()}))
    with pytest.raises(ValueError):
        master.send(Output(id=1, name="x", size=0))  # a worker's message
    with pytest.raises(ValueError):
        master.send("hello")


# -- malformed input ------------------------------------------------------------------------

TASK = {"type": "task", "id": 1, "command": "true", "inputs": [], "outputs": []}
RESULT = {"type": "result", "id": 1, "exit_code": 0, "signal": None, "error": "",
          "stdout": "", "stderr": "", "elapsed": 0.5, "outputs": []}

#: Bytes an OPEN worker connection must refuse, from its master.
TO_WORKER = {
    "oversized header length": struct.pack(">I", Limits().max_header + 1),
    "huge header length": b"\xff\xff\xff\xff",
    "oversized file": frame({"type": "put", "hash": H1, "size": (64 << 30) + 1}),
    "negative size": frame({"type": "put", "hash": H1, "size": -1}),
    "float size": frame({"type": "put", "hash": H1, "size": 1.5}),
    "garbage": frame(b"\x00\x01garbage\xff"),
    "not UTF-8": frame(b'{"type": "heartbeat", "x": "\xff"}'),
    "empty header": frame(b""),
    "trailing garbage": frame(b'{"type": "heartbeat"} x'),
    "a list": frame([1, 2]),
    "a string": frame("heartbeat"),
    "null": frame(None),
    "no type": frame({"id": 1}),
    "type not a string": frame({"type": ["task"]}),
    "unknown type": frame({"type": "launch_missiles"}),
    "internal type": frame({"type": "cached", "hashes": []}),
    "message in the wrong direction": frame(RESULT),
    "handshake message once open": frame({"type": "challenge", "version": 1, "nonce": H1}),
    "size on a message without payload": frame({"type": "kill", "id": 1, "size": 5}),
    "id a string": frame({"type": "kill", "id": "1"}),
    "id a boolean": frame({"type": "kill", "id": True}),
    "id negative": frame({"type": "kill", "id": -1}),
    "id missing": frame({"type": "kill"}),
    "huge integer": frame(b'{"type": "kill", "id": ' + b"9" * 5000 + b"}"),
    "deep nesting": frame(b'{"type": "kill", "id": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    "inputs not a list": frame({**TASK, "inputs": {"hash": H1}}),
    "input not an object": frame({**TASK, "inputs": [H1]}),
    "input cache not a boolean": frame({**TASK, "inputs": [{"hash": H1, "name": "a",
                                                            "cache": "yes"}]}),
    "command not a string": frame({**TASK, "command": ["ls"]}),
    "wall time NaN": frame(b'{"type": "task", "id": 1, "command": "", "inputs": [], '
                           b'"outputs": [], "wall_time": NaN}'),
    "wall time negative": frame({**TASK, "wall_time": -1}),
    "wall time huge": frame(b'{"type": "task", "id": 1, "command": "", "inputs": [], '
                            b'"outputs": [], "wall_time": 1' + b"0" * 400 + b"}"),
    "reply fields not an object": frame({"type": "status_reply", "fields": []}),
    "bye reason not a string": frame({"type": "bye", "reason": 3}),
    "lone surrogate": frame(b'{"type": "bye", "reason": "\\ud800"}'),
    "bad hash: uppercase": frame({"type": "put", "hash": H1.upper(), "size": 1}),
    "bad hash: short": frame({"type": "put", "hash": H1[:63], "size": 1}),
    "bad hash: not hex": frame({"type": "put", "hash": "g" * 64, "size": 1}),
    "bad hash: in an input": frame({**TASK, "inputs": [{"hash": "x", "name": "a"}]}),
    "too many inputs": frame({**TASK, "inputs": [{"hash": H1, "name": f"f{i}"}
                                                 for i in range(100_001)]}),
    "eof inside a frame": frame({"type": "heartbeat"})[:-3] + b"EOF",
    "eof inside a payload": frame({"type": "put", "hash": H1, "size": 10}) + b"12345EOF",
}
BAD_NAMES = ["../x", "/etc/passwd", "a/../b", "", "a\0b", "a\\b", "./a", "a//b", "a/", "..",
             "a\ud800"]
for bad in BAD_NAMES:
    TO_WORKER[f"bad input name {bad!r}"] = frame(
        json.dumps({**TASK, "inputs": [{"hash": H1, "name": bad}]}).encode())
    TO_WORKER[f"bad output name {bad!r}"] = frame(
        json.dumps({**TASK, "outputs": ["fine", bad]}).encode())

#: Bytes an OPEN master connection must refuse, from a worker.
TO_MASTER = {
    "message in the wrong direction": frame(TASK),
    "exit code a string": frame({**RESULT, "exit_code": "0"}),
    "elapsed a string": frame({**RESULT, "elapsed": "1s"}),
    "stdout too long": frame({**RESULT, "stdout": "x" * 65537}),
    "stderr too long in UTF-8": frame({**RESULT, "stderr": "é" * 40000}),
    "outputs not a list": frame({**RESULT, "outputs": "out"}),
    "oversized output": frame({"type": "output", "id": 1, "name": "a", "size": (64 << 30) + 1}),
}
for bad in BAD_NAMES:
    TO_MASTER[f"bad output name {bad!r}"] = frame(
        json.dumps({"type": "output", "id": 1, "name": bad, "size": 1}).encode())
    TO_MASTER[f"bad result output {bad!r}"] = frame(
        json.dumps({**RESULT, "outputs": [bad]}).encode())


def feed_bad(conn: Connection, data: bytes) -> None:
    if data.endswith(b"EOF"):
        data = data[:-3]
        conn.receive_data(data)
        conn.receive_data(b"")
    else:
        conn.receive_data(data)
    drain(conn)


@pytest.mark.parametrize("data", TO_WORKER.values(), ids=TO_WORKER.keys())
def test_a_worker_refuses_malformed_input(data):
    _, worker = handshake()
    with pytest.raises(ProtocolError):
        feed_bad(worker, data)
    assert worker.state is ConnectionState.CLOSED
    with pytest.raises(ProtocolError):  # and keeps refusing
        worker.next_event()


@pytest.mark.parametrize("data", TO_MASTER.values(), ids=TO_MASTER.keys())
def test_a_master_refuses_malformed_input(data):
    master, _ = handshake()
    with pytest.raises(ProtocolError):
        feed_bad(master, data)


HANDSHAKE_HELLO = {"type": "hello", "version": 1, "role": "worker", "nonce": H1, "proof": H2,
                   "cores": 1, "memory": 1, "disk": 1, "name": "n", "pid": 1}

#: Bytes a master must refuse before the peer is authenticated.
BEFORE_AUTH = {
    "a task-sized header": struct.pack(">I", 4097),
    "a message before the hello": frame(RESULT),
    "a payload message": frame({"type": "output", "id": 1, "name": "a", "size": 1}) + b"x",
    "the cached list before the hello": frame({"type": "cached", "hashes": []}),
    "a heartbeat": frame({"type": "heartbeat"}),
    "a bad role": frame({**HANDSHAKE_HELLO, "role": "admin"}),
    "no version": frame({k: v for k, v in HANDSHAKE_HELLO.items() if k != "version"}),
    "a string version": frame({**HANDSHAKE_HELLO, "version": "1"}),
    "no proof": frame({k: v for k, v in HANDSHAKE_HELLO.items() if k != "proof"}),
    "a short nonce": frame({**HANDSHAKE_HELLO, "nonce": "00"}),
}


@pytest.mark.parametrize("data", BEFORE_AUTH.values(), ids=BEFORE_AUTH.keys())
def test_a_master_refuses_anything_but_a_hello_first(data):
    master = Connection(Role.MASTER, SECRET)
    master.start()
    with pytest.raises(ProtocolError):
        feed_bad(master, data)


def test_a_master_reads_nothing_before_its_challenge():
    master = Connection(Role.MASTER, SECRET)
    with pytest.raises(ProtocolError):
        feed_bad(master, frame(HANDSHAKE_HELLO))


@pytest.mark.parametrize("data", [
    frame(TASK), frame({"type": "put", "hash": H1, "size": 1}) + b"x",
    frame({"type": "welcome", "worker_id": 1, "heartbeat": 1, "proof": H1}),  # before hello
    struct.pack(">I", 5000),
], ids=["task", "put", "early welcome", "long header"])
def test_a_worker_refuses_anything_but_a_challenge_first(data):
    with pytest.raises(ProtocolError):
        feed_bad(Connection(Role.WORKER, SECRET), data)


# -- how bytes arrive does not matter --------------------------------------------------------


def test_a_recorded_session_cannot_be_replayed_to_a_worker():
    master, worker = Connection(Role.MASTER, SECRET), Connection(Role.WORKER, SECRET)
    wire = master.start()
    drain(worker, wire)
    drain(master, worker.send(hello()))
    wire += master.send(Welcome(worker_id=1, heartbeat=2.5)) + master.send(Kill(1))
    victim = Connection(Role.WORKER, SECRET)
    victim.receive_data(wire)
    assert isinstance(victim.next_event(), Challenge)
    victim.send(hello())  # a fresh nonce: the recorded welcome's proof no longer fits
    assert isinstance(victim.next_event(), BadAuth)
    assert victim.next_event() is NEED_DATA  # the rest is dropped unread


def test_byte_by_byte_gives_the_same_events_as_one_chunk():
    master, worker = handshake()
    _, other = handshake()
    content = bytes(range(256)) * 40
    wire = master.send(Put(hashlib.sha256(content).hexdigest(), len(content)))
    wire += master.send_data(content)
    wire += master.send(Task(id=1, command="cat ünïcode", inputs=[Input(H1, "a/b")],
                             outputs=["c"]))
    wire += master.send(Put(H2, 0)) + master.send(Kill(1)) + master.send(Heartbeat())
    wire += master.send(StatusReply(fields={"x": [1, 2.5, None, "é"]}))
    wire += master.send(Bye(reason="done"))
    whole = drain(worker, wire)
    assert len(whole) == 10 and whole[-1] == Bye("done")
    one_by_one = []
    for byte in wire:
        one_by_one += drain(other, bytes([byte]))
    assert merge_data(one_by_one) == merge_data(whole)
    assert max(len(e.chunk) for e in one_by_one if isinstance(e, Data)) == 1


def test_a_handshake_byte_by_byte():
    master, worker = Connection(Role.MASTER, SECRET), Connection(Role.WORKER, SECRET)
    events = []
    for byte in master.start():
        events += drain(worker, bytes([byte]))
    assert [type(e) for e in events] == [Challenge]
    for byte in worker.send(hello()):
        events += drain(master, bytes([byte]))
    assert [type(e) for e in events] == [Challenge, Authenticated]


# -- fuzzing --------------------------------------------------------------------------------

SMALL = Limits(max_header=2048, max_file=100_000, max_stdout=100, max_inputs=10,
               max_handshake_header=512, max_cached=5)


def fresh(kind: str) -> Connection:
    """A connection in one of the states a hostile peer can find it in."""
    if kind == "master before hello":
        conn = Connection(Role.MASTER, SECRET, SMALL)
        conn.start()
        return conn
    if kind == "worker before challenge":
        return Connection(Role.WORKER, SECRET, SMALL)
    master, worker = handshake(limits=SMALL)
    return master if kind == "open master" else worker


KINDS = ["master before hello", "worker before challenge", "open master", "open worker"]


def fuzz(conn: Connection, pieces: list[bytes], eof: bool) -> None:
    """Feed `pieces` (b"" is EOF): only ProtocolError may escape, the buffer stays bounded."""
    bound = SMALL.max_header + 4
    try:
        for piece in [*pieces, b""] if eof else pieces:
            conn.receive_data(piece)
            assert len(conn._buffer) <= bound + len(piece)
            for _ in range(10 * len(piece) + 10):  # every call consumes bytes or stops
                event = conn.next_event()
                if event is NEED_DATA or isinstance(event, Closed):
                    break
            else:
                raise AssertionError("next_event() keeps returning events without input")
            assert len(conn._buffer) - conn._pos < bound
    except ProtocolError:
        assert conn.state is ConnectionState.CLOSED


def valid_frames() -> list[bytes]:
    return [frame(TASK), frame(RESULT), frame({"type": "heartbeat"}),
            frame({"type": "put", "hash": H1, "size": 5}) + b"12345",
            frame({"type": "output", "id": 1, "name": "a", "size": 3}) + b"abc",
            frame(HANDSHAKE_HELLO), frame({"type": "cached", "hashes": [H1]}),
            frame({"type": "challenge", "version": 1, "nonce": H1})]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(kind=st.sampled_from(KINDS),
       pieces=st.lists(st.binary(min_size=1, max_size=300), max_size=8), eof=st.booleans())
def test_fuzz_random_bytes(kind, pieces, eof):
    fuzz(fresh(kind), pieces, eof)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(kind=st.sampled_from(KINDS), data=st.data(), eof=st.booleans())
def test_fuzz_mangled_frames(kind, data, eof):
    """Valid frames, then cut short, given huge lengths, or with bytes flipped."""
    frames = data.draw(st.lists(st.sampled_from(valid_frames()), min_size=1, max_size=6))
    wire = bytearray(b"".join(frames))
    for _ in range(data.draw(st.integers(0, 3))):
        at = data.draw(st.integers(0, len(wire) - 1))
        how = data.draw(st.sampled_from(["flip", "length", "cut"]))
        if how == "flip":
            wire[at] ^= data.draw(st.integers(1, 255))
        elif how == "length":
            wire[at:at + 4] = struct.pack(">I", data.draw(st.sampled_from(
                [0, 1, SMALL.max_header, SMALL.max_header + 1, 2**31, 2**32 - 1])))
        else:
            del wire[at:]
            if not wire:
                break
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=5)))
    pieces = [bytes(wire[a:b]) for a, b in zip([0, *cuts], [*cuts, len(wire)]) if a < b]
    fuzz(fresh(kind), pieces, eof)


@settings(max_examples=100, deadline=None)
@given(header=st.dictionaries(st.sampled_from(["type", "id", "size", "hash", "name", "inputs",
                                               "outputs", "command", "reason", "fields"]),
                              st.recursive(st.none() | st.booleans() | st.integers()
                                           | st.floats(allow_nan=False) | st.text(max_size=5)
                                           | st.sampled_from(["put", "task", "kill", "bye",
                                                              "output", H1]),
                                           lambda inner: st.lists(inner, max_size=3)
                                           | st.dictionaries(st.text(max_size=3), inner,
                                                             max_size=3),
                                           max_leaves=8)),
       kind=st.sampled_from(["open master", "open worker"]))
def test_fuzz_json_headers(header, kind):
    fuzz(fresh(kind), [frame(json.dumps(header).encode())], eof=True)


# -- speed ------------------------------------------------------------------------------------


def test_throughput_of_small_results(capsys):
    """Printed, not asserted: the master must keep up with ~5000 small messages a second."""
    master, worker = handshake()
    result = Result(id=123, exit_code=0, signal=None, error="", stdout="ok\n", stderr="",
                    elapsed=0.25, outputs=["out/result.txt"])
    n, batch = 100_000, 1000
    encode = decode = 0.0
    received = 0
    for _ in range(n // batch):
        t0 = time.perf_counter()
        wire = b"".join([worker.send(result) for _ in range(batch)])
        t1 = time.perf_counter()
        master.receive_data(wire)
        while master.next_event() is not NEED_DATA:
            received += 1
        encode, decode = encode + t1 - t0, decode + time.perf_counter() - t1
    assert received == n
    with capsys.disabled():
        print(f"\n{n} small Results: send {n / encode:,.0f}/s, receive {n / decode:,.0f}/s, "
              f"both {n / (encode + decode):,.0f}/s")
