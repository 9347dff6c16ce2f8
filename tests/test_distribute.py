"""Spanning-tree distribution: the planner, the peer protocol, and real workers on real sockets.

The integration tests slow every process's uploads with the benchmark knob
(ABENGINE_UPLOAD_LIMIT) so that a distribution lasts long enough to kill a
source in the middle of it, or to see a task start before it ends.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ABENGINE, ALLPAIRS, assert_usage_error, run_cli, write_numbered
from test_protocol import H1, H2, SECRET, drain
from test_workqueue import finish_all, start_worker, wait_for_workers

import abengine
from abengine.abstractions.spread import spread_inputs
from abengine.graph import Deferred, TaskGraph
from abengine.graph import Task as GraphTask
from abengine.models.distribution import choose_feed, choose_mode, plan, transfers, tree_rounds
from abengine.workqueue.cache import Cache, CacheError
from abengine.workqueue.distribute import MASTER, Planner
from abengine.workqueue.master import Task, WorkQueue
from abengine.workqueue.pieces import layout
from abengine.workqueue.protocol import (
    UPLOAD_LIMIT_ENV,
    Assemble,
    BadAuth,
    Challenge,
    Closed,
    Connection,
    Data,
    EndOfData,
    Fetch,
    Hello,
    Pacer,
    PeerRequest,
    Put,
    Refused,
    Role,
    Stored,
    TicketAccepted,
    Welcome,
    make_ticket,
    ticket_key,
)
from abengine.workqueue.worker import read_event

# -- the peer protocol, in memory --------------------------------------------------------


def peer_pair(ticket: str, expires: int, digest: str = H1,
              worker_id: int = 7) -> tuple[Connection, list]:
    """A server and a fetcher: challenge, then the fetcher's request; the server's events."""
    server = Connection(Role.SERVER, ticket_key(SECRET))
    fetcher = Connection(Role.FETCHER, ticket.encode())
    [challenge] = drain(fetcher, server.start())
    assert isinstance(challenge, Challenge)
    request = fetcher.send(PeerRequest(hash=digest, worker_id=worker_id, expires=expires))
    assert ticket.encode() not in request  # the ticket itself never crosses the peer link
    return server, drain(server, request)


def test_a_ticket_from_the_master_opens_the_file_and_nothing_else():
    key, expires = ticket_key(SECRET), int(time.time()) + 60
    server, [accepted] = peer_pair(make_ticket(key, H1, 7, expires), expires)
    assert isinstance(accepted, TicketAccepted) and accepted.request.hash == H1
    server.send(Put(hash=H1, size=0))  # now, and only now, the server may send the file
    for wrong in (make_ticket(key, H2, 7, expires),  # another file's
                  make_ticket(key, H1, 8, expires),  # another worker's
                  make_ticket(ticket_key(b"other secret"), H1, 7, expires),  # another run's
                  "0" * 64):
        server, [bad] = peer_pair(wrong, expires)
        assert bad == BadAuth("wrong ticket")
        with pytest.raises(ValueError):
            server.send(Put(hash=H1, size=0))
        server.send(Refused(reason=bad.reason))


def test_an_expired_ticket_is_refused_and_a_forged_expiry_is_a_wrong_ticket():
    key, past = ticket_key(SECRET), int(time.time()) - 1
    _, [bad] = peer_pair(make_ticket(key, H1, 7, past), past)
    assert bad == BadAuth("ticket expired")
    _, [bad] = peer_pair(make_ticket(key, H1, 7, past), past + 3600)  # expiry moved on
    assert bad == BadAuth("wrong ticket")


def open_pair(peer_port: int, peers: bool) -> tuple[Connection, Connection]:
    master, worker = Connection(Role.MASTER, SECRET), Connection(Role.WORKER, SECRET)
    drain(worker, master.start())
    drain(master, worker.send(Hello(role="worker", peer_port=peer_port)))
    drain(worker, master.send(Welcome(worker_id=1, heartbeat=5.0, peers=peers)))
    return master, worker


def test_fetch_assemble_and_stored_need_both_ends_to_offer_peers():
    master, worker = open_pair(5000, True)
    assert master.peers and worker.peers
    fetch = Fetch(hash=H1, length=3, host="10.0.0.2", port=5000, expires=1, ticket=H2)
    assemble = Assemble(hash=H1, length=6, parts=[H2, H2])
    assert drain(worker, master.send(fetch) + master.send(assemble)) == [fetch, assemble]
    assert drain(master, worker.send(Stored(hash=H1, error="x"))) == [Stored(H1, "x")]
    for port, peers in ((0, True), (5000, False)):  # an old worker, or an old (or TLS) master
        master, worker = open_pair(port, peers)
        assert not master.peers and not worker.peers
        with pytest.raises(ValueError):
            master.send(fetch)
        with pytest.raises(ValueError):
            worker.send(Stored(hash=H1))


def test_a_bad_upload_cap_is_one_line_for_the_master_and_the_worker(tmp_path):
    listing = write_numbered(tmp_path / "set", 2)
    env = {**os.environ, UPLOAD_LIMIT_ENV: "fast"}
    master = run_cli(listing, listing, "cosine", "--engine", "workqueue", "--workers", "1",
                     env=env)
    assert_usage_error(master, UPLOAD_LIMIT_ENV, "'fast'")
    secret = tmp_path / "secret"
    secret.write_text("s")
    worker = run_cli("worker", "127.0.0.1", "9", "--password-file", secret, env=env,
                     program=ABENGINE)
    assert_usage_error(worker, UPLOAD_LIMIT_ENV, "'fast'")


def test_the_pacer_keeps_a_process_to_its_rate():
    now = [100.0]
    pacer = Pacer(1000.0, clock=lambda: now[0])
    assert [pacer.reserve(500), pacer.reserve(500)] == [0.5, 1.0]  # queued behind the first
    now[0] = 105.0
    assert pacer.reserve(1000) == 1.0  # an idle link has no credit saved up
    assert Pacer().reserve(1 << 30) == 0.0
    assert Pacer.from_env({UPLOAD_LIMIT_ENV: "2e6"}).rate == 2e6
    with pytest.raises(ValueError):
        Pacer.from_env({UPLOAD_LIMIT_ENV: "fast"})


# -- the planner ------------------------------------------------------------------------------


def run_rounds(planner: Planner) -> list[list]:
    """Every transfer succeeds in the round it starts: the transfers of each round."""
    rounds = []
    while not planner.done():
        started = planner.next()
        assert started, "stuck"
        rounds.append(started)
        for t in started:
            planner.stored(t.digest, t.target)
    return rounds


@pytest.mark.parametrize("workers", [1, 2, 3, 7, 8, 16])
def test_copies_double_each_round(workers):
    planner = Planner()
    planner.add_files(["f"])
    for w in range(1, workers + 1):
        planner.add_worker(w)
    rounds = run_rounds(planner)
    assert len(rounds) == tree_rounds(workers)  # ceil(log2(N+1)): the master serves too
    assert [len(r) for r in rounds[:-1]] == [2 ** k for k in range(len(rounds) - 1)]
    for r in rounds:  # one upload per holder, the master's included, one download per worker
        assert len({t.source for t in r}) == len(r) == len({t.target for t in r})


def test_pieces_spread_side_by_side():
    whole, pieces = Planner(), Planner()
    whole.add_files(["f"])
    pieces.add_files([f"p{i}" for i in range(8)])
    for w in range(1, 17):
        whole.add_worker(w)
        pieces.add_worker(w)
    # A round of a piece is an eighth of a round of the whole file.
    assert len(run_rounds(pieces)) / 8 < 0.5 * len(run_rounds(whole))


def test_a_failed_transfer_or_a_dead_source_is_replanned_from_another_holder():
    planner = Planner()
    planner.add_files(["f"])
    for w in (1, 2, 3, 4):
        planner.add_worker(w)
    [seed] = planner.next()
    planner.stored("f", seed.target)
    first = {t.target: t.source for t in planner.next()}
    assert first == {2: 1, 3: MASTER}
    planner.failed("f", 3)  # the master's send to 3 broke: 3 wants it again
    planner.remove_worker(1)  # 1 dies while serving 2: booked until 2 reports
    assert [(t.source, t.target) for t in planner.next()] == [(MASTER, 3)]
    planner.failed("f", 2)  # ...which it does: no holder free yet, so it waits
    assert planner.next() == []
    planner.stored("f", 3)
    assert {t.target: t.source for t in planner.next()} == {2: 3, 4: MASTER}
    run_rounds_from_running(planner)
    assert all(planner.holds(w, "f") for w in (2, 3, 4)) and planner.done()


def run_rounds_from_running(planner: Planner) -> None:
    for t in list(planner.running.values()):
        planner.stored(t.digest, t.target)
    run_rounds(planner)


def test_a_late_joiner_fetches_from_a_worker_and_a_feed_limit_holds():
    planner = Planner(feed=2)
    planner.add_files(["f"])
    planner.add_worker(1)
    planner.add_worker(2)
    planner.add_worker(3)  # beyond the feed: gets nothing
    run_rounds(planner)
    assert planner.holds(1, "f") and planner.holds(2, "f") and not planner.holds(3, "f")
    planner.remove_worker(1)  # its place goes to 3, which fetches from a worker
    [t] = planner.next()
    assert (t.target, t.source) == (3, 2)


def test_direct_mode_sends_only_from_the_master():
    planner = Planner("direct", master_uploads=4)
    planner.add_files(["f"])
    for w in (1, 2, 3, 4):
        planner.add_worker(w)
    [first] = run_rounds(planner)
    assert len(first) == 4 and {t.source for t in first} == {MASTER}


def test_the_model_prefers_a_tree_for_many_workers_and_feeds_fewer_for_little_work():
    everything = [(1e6, 100)] * 10  # 10 files, each used by all 100 tasks
    assert choose_mode(everything, 100, 8) == "tree"
    assert choose_mode(everything, 100, 1) == "direct"
    assert choose_mode([(1e6, 1)] * 10, 100, 8) == "direct"  # each file for one task
    assert choose_feed(1e9, 1e8, 1e5, 16) == 16  # long work: feed everyone
    assert choose_feed(1e9, 1e8, 10.0, 16) == 1  # 10 s of work, 10 s per round: one
    assert choose_feed(1e9, 1e8, 100.0, 16) == 7  # 2^r - 1 workers fill r rounds


def test_the_plan_measures_the_bandwidth_only_when_an_answer_depends_on_it():
    asked = []

    def bandwidth() -> float:
        asked.append(1)
        return 1e8

    everything = [(1e9, 100)]
    assert plan(everything, 100, 16, "tree", None, bandwidth) == ("tree", None)  # work unknown
    assert plan(everything, 100, 16, "direct", 10.0, bandwidth) == ("direct", None)
    assert plan([(1e3, 100)], 100, 16, "tree", 10.0, bandwidth) == ("tree", None)  # tiny data
    assert not asked
    assert plan(everything, 100, 16, "auto", 100.0, bandwidth) == ("tree", 7)
    assert len(asked) == 1  # once, for the mode and the feed
    assert plan(everything, 100, 16, "tree", 1e5, bandwidth) == ("tree", None)  # all 16
    assert plan(everything, 100, 16, "auto", 100.0, lambda: None) == ("tree", None)


def test_a_very_fast_link_keeps_few_workers_with_the_master():
    """A peer transfer costs a connection and a round trip beyond its bytes; small files
    travel packed, so only the pieces count."""
    tiny = [(16e3, 64)] * 2048  # 32 MB: 8 packed pieces, not 2048 transfers
    assert transfers(size for size, _ in tiny) == 8
    assert transfers([5e6, 2e6, 1e3, 1e3]) == 2 + 1 + 1
    assert choose_mode(tiny, 64, 8, lambda: 32e6) == "tree"
    pieces = [(4 << 20, 64)] * 10  # 3 workers save one copy of 40 MB, at 10 GB/s 4 ms
    assert choose_mode(pieces, 64, 3, lambda: 10e9) == "direct"
    assert choose_mode(pieces, 64, 3, lambda: 100e6) == "tree"
    # 100 workers: the tree saves 93 copies of 100 MB, more than any link could carry in
    # the 0.12 s its 24 pieces cost
    assert choose_mode([(1e8, 1000)], 1000, 100, lambda: pytest.fail("asked")) == "tree"


def test_small_files_are_packed_large_ones_cut_and_each_rebuilt(tmp_path):
    piece = 1000
    sizes = {"a": 100, "b": 200, "big": 2500, "c": 200, "mid": 600, "d": 240, "e": 240,
             "f": 100}
    files, data = [], {}
    for name, size in sizes.items():
        path = tmp_path / name
        data[name] = os.urandom(size)
        path.write_bytes(data[name])
        files.append((hashlib.sha256(data[name]).hexdigest(), path, size))
    digest = {name: f[0] for name, f in zip(sizes, files)}
    pieces, parts = layout(files, piece)
    by_digest = {p.digest: p for p in pieces}
    assert digest["mid"] in by_digest and digest["mid"] not in parts  # travels whole
    # big's three pieces, mid, a..e packed (under a quarter piece each); f would overflow
    # that pack, and a pack of one is the file itself
    assert [p.size for p in pieces] == [1000, 1000, 500, 600, 980, 100]
    assert digest["f"] in by_digest and digest["f"] not in parts
    assert len(parts[digest["big"]].pieces) == 3
    assert parts[digest["a"]].pieces == parts[digest["c"]].pieces  # packed together

    def piece_bytes(p) -> bytes:
        out = b""
        for s in p.segments:
            with open(s.path, "rb") as f:
                f.seek(s.offset)
                out += f.read(s.size)
        return out

    for p in pieces:
        assert hashlib.sha256(piece_bytes(p)).hexdigest() == p.digest
    cache = Cache(tmp_path / "cache")  # a worker's cache rebuilds each file
    for p in pieces:
        incoming = cache.receive(p.digest, p.size)
        incoming.write(piece_bytes(p))
        incoming.commit()
    wrong = parts[digest["c"]]
    with pytest.raises(CacheError):  # the wrong range: refused, nothing kept
        cache.assemble(digest["c"], wrong.size, list(wrong.pieces), wrong.offset + 1)
    assert not cache.has(digest["c"])
    for name, d in digest.items():
        if d in parts:
            part = parts[d]
            path = cache.assemble(d, part.size, list(part.pieces), part.offset)
            assert path.read_bytes() == data[name]
    cache.cleanup()
    assert layout(files[:1], None)[1] == {}  # no pieces asked for: every file whole


def test_an_allpairs_job_names_the_files_its_blocks_share(tmp_path):
    from abengine.abstractions.allpairs import AllPairs

    paths = []
    for i in range(6):
        paths.append(tmp_path / f"e{i}")
        paths[-1].write_text(str(i))
    f = tmp_path / "F"
    f.write_text("#!/bin/sh\necho 1\n")
    f.chmod(0o755)
    job = AllPairs(paths, paths[:4], str(f))
    uses = job.shared_inputs((2, 2))  # a 3 x 2 grid of blocks
    assert uses[f] == 6  # F: every block
    assert uses[paths[5]] == 2  # only in set A: the blocks of its row
    assert uses[paths[0]] == 2 + 3  # in both sets: its row and its column


# -- real workers ---------------------------------------------------------------------------------


@pytest.fixture
def slow_uploads(monkeypatch):
    """Every process's uploads capped (the master reads it when made, workers inherit it)."""
    monkeypatch.setenv(UPLOAD_LIMIT_ENV, str(8 << 20))


def start_workers(q: WorkQueue, n: int, root: Path) -> list[subprocess.Popen]:
    """n workers, each with its cache under root/w<i> (to look at what they hold)."""
    procs = []
    for i in range(n):
        (root / f"w{i}").mkdir(parents=True, exist_ok=True)
        procs.append(start_worker(q, 1, "--workdir", str(root / f"w{i}")))
    wait_for_workers(q, n)
    return procs


def settled(q: WorkQueue, workers: int) -> list[dict]:
    """The workers, once all `workers` have joined and the spread has reached them (a run
    may end before a worker that joined late got its copy)."""
    wait_for_workers(q, workers, within=30)
    assert q.wait_distributed(30), q.stats()
    return q.workers()


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        p.wait(timeout=30)


def verified_copies(root: Path, digest: str) -> int:
    """How many caches under `root` hold a file named `digest` with those very bytes."""
    return sum(hashlib.sha256(f.read_bytes()).hexdigest() == digest
               for f in root.glob(f"abengine-worker-*/files/{digest}"))


def shared_file(tmp_path: Path, mb: int) -> tuple[Path, str]:
    data = os.urandom(mb << 20)
    path = tmp_path / "shared.bin"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def checksum_tasks(q: WorkQueue, path: Path, n: int) -> None:
    for _ in range(n):
        t = Task("sha256sum shared.bin")
        t.add_input(path, "shared.bin")
        q.submit(t)


def test_a_source_killed_mid_distribution_loses_no_copy_and_no_task(tmp_path, monkeypatch):
    monkeypatch.setenv(UPLOAD_LIMIT_ENV, str(4 << 20))  # a 1 MB piece takes 0.25 s to upload
    path, digest = shared_file(tmp_path, 6)
    with WorkQueue(port=0) as q:
        procs = start_workers(q, 4, tmp_path)
        try:
            q.distribute([path], piece_bytes=1 << 20)
            checksum_tasks(q, path, 8)
            deadline = time.monotonic() + 20
            while q.stats()["peer_transfers"] < 1:  # the lowest id, seeded first, serves first
                assert time.monotonic() < deadline, q.stats()
                time.sleep(0.005)
            source = min(q.workers(), key=lambda w: w["id"])
            pid = int(source["name"].split(":")[1].split()[0])
            os.kill(pid, signal.SIGKILL)
            assert q.wait_distributed(30), q.stats()
            tasks = finish_all(q)
            stats = q.stats()
            alive = [i for i, p in enumerate(procs) if p.pid != pid]
            copies = sum(verified_copies(tmp_path / f"w{i}", digest) for i in alive)
        finally:
            stop(procs)
    assert stats["workers_lost"] == 1 and stats["transfers_failed"] >= 1
    assert len(alive) == 3 and copies == 3  # every living worker holds a verified copy
    assert len(tasks) == 8 and all(t.ok and t.stdout.split()[0] == digest for t in tasks)


def test_tasks_start_where_the_data_is_and_never_make_the_master_send_it(tmp_path, slow_uploads):
    path, digest = shared_file(tmp_path, 8)
    with WorkQueue(port=0) as q:
        procs = start_workers(q, 3, tmp_path)
        try:
            q.distribute([path])
            checksum_tasks(q, path, 6)
            first = q.wait(timeout=30)
            early = not q.wait_distributed(0)  # the first result came before the spread ended
            assert q.wait_distributed(30)
            tasks = [first, *finish_all(q)]
            stats = q.stats()
        finally:
            stop(procs)
    assert early and all(t.ok and t.stdout.split()[0] == digest for t in tasks)
    assert stats["puts"] == stats["seeds"]  # every copy from the master was a planned seed
    assert stats["bytes_sent"] < 2 * path.stat().st_size  # less than two copies: a tree


def fetch(port: int, ticket: str, digest: str, expires: int) -> list:
    """What a worker's peer port sends a fetcher presenting `ticket`: all of it, to the end."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        conn = Connection(Role.FETCHER, ticket.encode())
        assert isinstance(read_event(sock, conn), Challenge)
        sock.sendall(conn.send(PeerRequest(hash=digest, worker_id=99, expires=expires)))
        got = []
        while not isinstance(event := read_event(sock, conn), Closed):
            got.append(event)
        return got


def test_a_wrong_or_expired_ticket_gets_nothing_and_the_worker_keeps_serving(tmp_path):
    path, digest = shared_file(tmp_path, 1)
    with WorkQueue(port=0) as q:
        procs = start_workers(q, 1, tmp_path)
        try:
            q.distribute([path])
            assert q.wait_distributed(20)
            [worker] = q.workers()
            port, key = worker["peer_port"], ticket_key(q.secret)
            now = int(time.time())
            assert fetch(port, "0" * 64, digest, now + 60) == [Refused("wrong ticket")]
            assert fetch(port, make_ticket(key, digest, 99, now - 1), digest, now - 1) == [
                Refused("ticket expired")]
            got = fetch(port, make_ticket(key, digest, 99, now + 60), digest, now + 60)
        finally:
            stop(procs)
    assert got[0] == Put(hash=digest, size=path.stat().st_size)
    assert b"".join(e.chunk for e in got if isinstance(e, Data)) == path.read_bytes()
    assert isinstance(got[-1], EndOfData)


def test_the_engine_finds_the_inputs_many_tasks_share(tmp_path):
    shared, own = tmp_path / "F", [tmp_path / f"e{i}" for i in range(3)]
    graph = TaskGraph()
    for path in own:
        task = GraphTask("./F e")
        task.add_input(shared, "F")
        task.add_input(path, "e")
        task.add_input(tmp_path / "scratch", "s", cache=False)
        graph.add(Deferred(lambda task=task: task))
    after = graph.add(Deferred(lambda: pytest.fail("built before its dependencies ran")),
                      after=list(graph))
    assert after in graph
    assert graph.shared_inputs() == ({shared: 3}, 3)


def test_allpairs_distributed_by_tree_equals_the_local_result(files, size_sum):
    a, f = str(files), str(size_sum)
    local = subprocess.run([str(ALLPAIRS), a, a, f, "-q"], capture_output=True, text=True,
                           timeout=60)
    tree = subprocess.run([str(ALLPAIRS), a, a, f, "-q", "-x", "2", "-y", "2", "--engine",
                           "workqueue", "--workers", "3", "--distribute", "tree"],
                          capture_output=True, text=True, timeout=120)
    assert local.returncode == tree.returncode == 0, tree.stderr
    assert sorted(tree.stdout.splitlines()) == sorted(local.stdout.splitlines())


def test_the_engine_spreads_an_allpairs_run_s_sets_by_tree(files, size_sum):
    from abengine.engines.workqueue import WorkQueueEngine

    local = abengine.allpairs(str(files), str(files), str(size_sum), progress=False)
    with WorkQueueEngine(workers=3, distribute="tree") as engine:
        remote = abengine.allpairs(str(files), str(files), str(size_sum), engine=engine,
                                   block=(2, 2), progress=False)
        settled(engine.queue, 3)
        stats = engine.queue.stats()
    # The 5 elements and F travel packed in one piece, which each worker gets once (from
    # the master while it is the only free holder, else from a worker); the other puts
    # are the 9 tasks' own pickled calls: no task made the master send a shared file.
    assert engine.distributed == "tree" and stats["seeds"] + stats["peer_transfers"] == 3
    assert stats["puts"] == stats["seeds"] + 9
    assert (remote == local).all()


def test_data_heavy_light_work_feeds_fewer_workers(tmp_path, size_sum, monkeypatch):
    """4 MB of sets, 16 MB/s links, 16 cells of 1 ms: a round of the tree costs more than
    all the work, so the model feeds one worker and the others get nothing."""
    monkeypatch.setenv(UPLOAD_LIMIT_ENV, str(16 << 20))
    paths = []
    for i in range(4):
        paths.append(tmp_path / f"e{i}")
        paths[-1].write_bytes(os.urandom(1 << 20))
    from abengine.engines.workqueue import WorkQueueEngine

    with WorkQueueEngine(workers=4) as engine:
        result = abengine.allpairs(paths, paths, str(size_sum), engine=engine, block=(2, 2),
                                   seconds_per_cell=1e-3, progress=False)
        assert engine.distributed == "tree"
        holding = [w["holds"] for w in settled(engine.queue, 4)]
    assert sorted(holding) == [0, 0, 0, 5]  # the 4 sets' files and F, at one worker
    assert (result == 2 << 20).all()


def test_spread_inputs_follows_the_engine_s_word(tmp_path):
    shared = tmp_path / "F"
    shared.write_bytes(b"x" * 1000)

    def graph() -> TaskGraph:
        g = TaskGraph()
        for i in range(4):
            task = GraphTask(f"./F {i}")
            task.add_input(shared, "F")
            g.add(task)
        return g

    local = graph()
    spread_inputs(abengine.LocalEngine(1), local)
    assert local.spread is None  # inputs are linked: nothing travels
    from abengine.engines.workqueue import WorkQueueEngine

    # no worker yet: one host, so the model (auto) sees nothing a tree would gain
    for word, mode in (("direct", "direct"), ("tree", "tree"), ("auto", "direct")):
        with WorkQueueEngine(port=0, distribute=word) as engine:
            g = graph()
            spread_inputs(engine, g)
            assert (g.spread.files, g.spread.mode, g.spread.feed) == ([shared], mode, None)


def test_an_npy_set_travels_as_its_file_and_spreads_by_tree(tmp_path):
    from abengine.engines.workqueue import WorkQueueEngine

    rng = np.random.default_rng(3)
    vectors = tmp_path / "vectors.npy"
    np.save(vectors, rng.standard_normal((400, 64)))  # 200 KB; a block's rows, 100 KB
    local = abengine.allpairs(str(vectors), str(vectors), "euclidean", progress=False)
    with WorkQueueEngine(workers=3, distribute="tree") as engine:
        remote = abengine.allpairs(str(vectors), str(vectors), "euclidean", engine=engine,
                                   block=(100, 100), progress=False)
        holding = [w["holds"] for w in settled(engine.queue, 3)]
        stats = engine.queue.stats()
    assert holding == [1, 1, 1] and stats["seeds"] + stats["peer_transfers"] == 3
    # the master sent the file once or twice and 16 small calls: no task carried rows
    assert stats["bytes_sent"] < 2.5 * vectors.stat().st_size
    assert np.allclose(remote, local)


def test_many_small_files_travel_packed_and_each_arrives_verified(tmp_path):
    paths = []
    for i in range(200):
        paths.append(tmp_path / f"small{i:03d}")
        paths[-1].write_bytes(os.urandom(4096 + i))
    digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
    with WorkQueue(port=0) as q:
        procs = start_workers(q, 3, tmp_path)
        try:
            q.distribute(paths)
            assert q.wait_distributed(30), q.stats()
            for path in paths[:5]:  # tasks read them where they are
                t = Task("sha256sum f")
                t.add_input(path, "f")
                q.submit(t)
            tasks = finish_all(q)
            stats = q.stats()
            copies = [sum(verified_copies(tmp_path / f"w{i}", d) for d in digests)
                      for i in range(3)]
        finally:
            stop(procs)
    assert copies == [200, 200, 200]
    # one packed piece: seeded once, passed on twice; the tasks' files were all there
    assert stats["seeds"] + stats["peer_transfers"] == 3 and stats["puts"] == stats["seeds"]
    assert sorted(t.stdout.split()[0] for t in tasks) == sorted(digests[:5])
