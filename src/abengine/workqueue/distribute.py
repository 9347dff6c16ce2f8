"""Who sends which shared file to whom: a spanning tree planned as transfers finish.

The finding that shaped All-Pairs: the master's uplink is the bottleneck, so
sending every worker all the shared data by spanning tree (O(D·log N)) beats
the master sending each worker what it needs (O(D·√N) at best, O(D·N) when
tasks land anywhere). The master seeds one worker; from then on every holder,
the master included, serves one new worker at a time, so the copies double
each round and N workers hold the data after ceil(log2(N+1)) rounds.

`Planner` is that plan as pure bookkeeping, with no sockets or clocks, so it
is tested on its own: the master tells it who joined, left, holds a file or
failed a transfer, and asks `next()` for the transfers to start now. It
never starts two transfers into one worker at once, nor more uploads from a
source than its limit; a failed transfer or a dead source simply leaves its
target wanting the file, and the next call finds another holder (the master
always holds every file, so a file is never lost). A worker that joins late
is a target like any other and fetches from a holder.

In "direct" mode only the master sends (the star the tree is measured
against): every worker is fed by the master, `master_uploads` at a time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

#: The master as a source: it holds every file from the start.
MASTER = 0
#: A shared file larger than this spreads as pieces of this size, each piece's tree
#: running beside the others' (a pipeline): log2(N) rounds of a piece, not of the file.
PIECE_BYTES = 4 << 20
#: What one peer transfer costs beyond its bytes (a connection, the ticket's handshake,
#: the `stored` round trip), measured: 2048 files of 16 KB sent one by one to 8 workers
#: on the 2-core test machine took 4.7 ms each (before small files were packed).
PEER_TRANSFER_SECONDS = 0.005
#: A worker that failed to get one file from peers this many times gets it from the master.
MAX_FAILURES = 2


@dataclass(frozen=True, slots=True)
class Transfer:
    """One file from one source (MASTER or a worker id) to one worker."""

    digest: str
    source: int
    target: int


@dataclass
class _Worker:
    holds: set[str] = field(default_factory=set)
    lacking: set[str] = field(default_factory=set)  # the plan's files it does not hold
    uploads: int = 0  # transfers running from it
    downloading: str | None = None  # the file it is receiving
    target: bool = True  # fed with the shared files (False: beyond the feed limit)
    serves: bool = True  # has a peer port: may be a source
    failures: dict[str, int] = field(default_factory=dict)  # digest -> failed transfers into it
    blocked: set[str] = field(default_factory=set)  # failed MAX_FAILURES times: master only
    broken: bool = False  # an upload from it failed: most likely dying, never a source again


class Planner:
    """The spanning-tree (or star) plan for a set of shared files over changing workers.

    `uploads`: transfers at once from one worker (1 doubles the copies each
    round); `master_uploads`: from the master (1 in a tree: the master is one
    more holder; in a star, as many as there are workers); `feed`: how many
    workers get the files (None: all, late joiners included).
    """

    def __init__(self, mode: str = "tree", uploads: int = 1, master_uploads: int = 1,
                 feed: int | None = None) -> None:
        if mode not in ("tree", "direct"):
            raise ValueError(f"distribution mode must be 'tree' or 'direct', not {mode!r}")
        if uploads < 1 or master_uploads < 1 or (feed is not None and feed < 1):
            raise ValueError("uploads, master_uploads and feed must be at least 1")
        self.mode = mode
        self.uploads, self.master_uploads, self.feed = uploads, master_uploads, feed
        self.files: list[str] = []  # in the order they were added: the order they spread
        self._order: dict[str, int] = {}  # file -> its place in `files` (ties go to the first)
        #: file -> holders plus transfers of it under way, kept as they change: the
        #: rarest file goes first, and no call re-counts the whole plan.
        self._copies: dict[str, int] = {}
        self._workers: dict[int, _Worker] = {}
        self._master_uploads = 0
        self.running: dict[tuple[str, int], Transfer] = {}  # (digest, target) -> transfer

    # -- what the master tells it ----------------------------------------------------
    def add_files(self, digests: Iterable[str]) -> None:
        for digest in digests:
            if digest in self._order:
                continue
            self._order[digest] = len(self.files)
            self.files.append(digest)
            self._copies[digest] = 0
            for w in self._workers.values():
                if digest in w.holds:
                    self._copies[digest] += 1
                else:
                    w.lacking.add(digest)

    def add_worker(self, worker: int, holds: Iterable[str] = (), peer: bool = True,
                   done: Iterable[str] = ()) -> None:
        """A worker joined (or is known from the start), holding `holds` already.

        `peer=False`: it cannot serve other workers (no peer port); it is still fed.
        `done`: files it needs no more yet cannot serve (it holds what they make).
        """
        if worker == MASTER or worker in self._workers:
            raise ValueError(f"worker id {worker} is taken")
        fed = sum(w.target for w in self._workers.values())
        holds = set(holds)
        for digest in holds & self._order.keys():
            self._copies[digest] += 1
        self._workers[worker] = _Worker(holds, self._order.keys() - holds - set(done),
                                        target=self.feed is None or fed < self.feed, serves=peer)

    def remove_worker(self, worker: int) -> list[Transfer]:
        """A worker left or died: the transfers into it are void (returned).

        Transfers *from* it stay booked until their targets report the failure
        (a dead source cuts their connections): re-planning sooner could start
        a second fetch of the same file into a worker whose first one has not
        yet given up, and its late failure would be taken for the second's.
        """
        gone = self._workers.pop(worker, None)
        if gone is None:
            return []
        for digest in gone.holds & self._order.keys():
            self._copies[digest] -= 1
        void = [t for t in self.running.values() if t.target == worker]
        for transfer in void:
            self._end(transfer)
        if gone.target and self.feed is not None:  # its place goes to a worker not yet fed
            for other in self._workers.values():
                if not other.target:
                    other.target = True
                    break
        return void

    def stored(self, digest: str, worker: int) -> None:
        """`worker` now holds `digest` (a transfer into it finished, or any put landed)."""
        state = self._workers.get(worker)
        if state is None:
            return
        if digest in self._order and digest not in state.holds:
            self._copies[digest] += 1
            state.lacking.discard(digest)
        state.holds.add(digest)
        transfer = self.running.get((digest, worker))
        if transfer is not None:
            self._end(transfer)

    def failed(self, digest: str, worker: int) -> Transfer | None:
        """The transfer of `digest` into `worker` failed; the next plan tries another source."""
        transfer = self.running.get((digest, worker))
        if transfer is None:
            return None
        self._end(transfer)
        target = self._workers.get(worker)
        if target is not None:
            target.failures[digest] = target.failures.get(digest, 0) + 1
            if target.failures[digest] >= MAX_FAILURES:
                target.blocked.add(digest)
        source = self._workers.get(transfer.source)
        if source is not None:  # its death often reaches the master after the failure does
            source.broken = True
        return transfer

    def _end(self, transfer: Transfer) -> None:
        del self.running[(transfer.digest, transfer.target)]
        self._copies[transfer.digest] -= 1
        if transfer.source == MASTER:
            self._master_uploads -= 1
        elif transfer.source in self._workers:
            self._workers[transfer.source].uploads -= 1
        target = self._workers.get(transfer.target)
        if target is not None and target.downloading == transfer.digest:
            target.downloading = None

    # -- what it answers ---------------------------------------------------------------
    def holds(self, worker: int, digest: str) -> bool:
        state = self._workers.get(worker)
        return state is not None and digest in state.holds

    def targets(self) -> list[int]:
        """The workers being fed (all of them, unless `feed` caps it)."""
        return [wid for wid, w in self._workers.items() if w.target]

    def done(self) -> bool:
        """Every fed worker holds every file; nothing is on the way."""
        return not self.running and not any(w.lacking for w in self._workers.values()
                                            if w.target)

    def next(self) -> list[Transfer]:
        """The transfers to start now, booked as running until stored() or failed().

        Each free source serves the rarest file it holds that an idle target
        lacks: with one file that is the doubling tree; with a file cut into
        pieces, the master keeps seeding new pieces while the workers spread the
        ones they have, so the pieces' trees run side by side (a pipeline).
        Workers serve first, the master last, so it stays free for what no
        worker holds yet; a worker whose upload failed serves no more, and a
        worker that failed to get a file from peers MAX_FAILURES times gets it
        from the master. The candidates are set intersections (what the source
        holds and the target lacks), so a call costs what the free sources and
        idle targets hold, not a sort of the whole plan.
        """
        idle = [wid for wid, w in sorted(self._workers.items())
                if w.target and w.downloading is None and w.lacking]
        started: list[Transfer] = []
        for source in self._sources():
            while idle and self._has_slot(source):
                transfer = self._pick(source, idle)
                if transfer is None:
                    break
                started.append(self._start(transfer))
                idle.remove(transfer.target)
        return started

    def _sources(self) -> list[int]:
        workers = [wid for wid, w in sorted(self._workers.items())
                   if self.mode == "tree" and w.serves and not w.broken]
        return [*workers, MASTER]

    def _has_slot(self, source: int) -> bool:
        if source == MASTER:
            return self._master_uploads < self.master_uploads
        return self._workers[source].uploads < self.uploads

    def _pick(self, source: int, idle: list[int]) -> Transfer | None:
        """The rarest file `source` holds that an idle target lacks, and that target."""
        holds = None if source == MASTER else self._workers[source].holds
        best: tuple[tuple[int, int], str, int] | None = None
        for target in idle:
            w = self._workers[target]
            wanted = w.lacking if holds is None else (holds & w.lacking) - w.blocked
            if not wanted:
                continue
            digest = min(wanted, key=self._rank)
            if best is None or self._rank(digest) < best[0]:
                best = (self._rank(digest), digest, target)
        return None if best is None else Transfer(best[1], source, best[2])

    def _rank(self, digest: str) -> tuple[int, int]:
        return self._copies[digest], self._order[digest]

    def _start(self, transfer: Transfer) -> Transfer:
        self.running[(transfer.digest, transfer.target)] = transfer
        self._copies[transfer.digest] += 1
        if transfer.source == MASTER:
            self._master_uploads += 1
        else:
            self._workers[transfer.source].uploads += 1
        self._workers[transfer.target].downloading = transfer.digest
        return transfer
