"""How shared inputs should reach the workers: by spanning tree, or from the master on demand.

The All-Pairs model (Moretti et al., TPDS 2010) charges the data term
`((n+m)·s/B)·log2(h)`: with a spanning tree every holder serves one more
worker per round, so h workers hold D = (n+m)·s bytes after about log2(h)
rounds of D/B. Counting the master as a holder, as the Work Queue master
does, the rounds are exactly ceil(log2(h+1)); cutting files into pieces that
spread side by side only does better, so this is the conservative figure.

Sending from the master on demand costs what the workers' tasks need, all of
it through the master's one uplink: a file used by u of T tasks reaches a
worker that runs T/h of them with probability 1 - (1 - u/T)^(T/h), so for
All-Pairs blocks landing anywhere nearly every worker ends up with nearly
everything (D·h), and at best (each worker a square of the matrix) D·√h.
The engine compares the two and picks the cheaper; both are proportional to
1/B, so the choice needs no bandwidth measurement, except where a fixed cost
per peer transfer could tip it (on a very fast link).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable

from ..workqueue.distribute import PEER_TRANSFER_SECONDS, PIECE_BYTES
from ..workqueue.pieces import PACK_BELOW

__all__ = ["MIN_FEED_BYTES", "choose_feed", "choose_mode", "direct_bytes", "plan", "transfers",
           "tree_rounds", "tree_seconds"]

#: Bytes per second no link between a master and its workers reaches (100 Gbit/s).
FASTEST_LINK = 12.5e9
#: Below this much shared data a round of the tree costs too little beside the work to
#: be worth holding workers back for (nor measuring the bandwidth to find out).
MIN_FEED_BYTES = 1 << 20


def tree_rounds(hosts: int) -> int:
    """Rounds of whole-file transfers until `hosts` workers hold a file (the master serves too)."""
    return math.ceil(math.log2(max(1, hosts) + 1))


def tree_seconds(total_bytes: float, hosts: int, bandwidth: float) -> float:
    """The distribution term by spanning tree: ceil(log2(h+1))·D/B."""
    return tree_rounds(hosts) * total_bytes / bandwidth


def direct_bytes(files: Iterable[tuple[float, int]], tasks: int, hosts: int) -> float:
    """Bytes the master sends on demand: `files` are (size, tasks using it) of `tasks` tasks
    spread evenly and at random over `hosts` workers."""
    tasks, hosts = max(1, tasks), max(1, hosts)
    per_host = tasks / hosts
    total = 0.0
    for size, uses in files:
        share = min(1.0, uses / tasks)
        total += size * hosts * (1.0 - (1.0 - share) ** per_host)
    return total


def transfers(sizes: Iterable[float]) -> int:
    """Peer transfers that carry files of these sizes to one worker: large files go as
    pieces, small ones packed together into pieces (workqueue/pieces.py)."""
    small, count = 0.0, 0
    for size in sizes:
        if size < PIECE_BYTES // PACK_BELOW:
            small += size
        else:
            count += max(1, math.ceil(size / PIECE_BYTES))
    return count + math.ceil(small / PIECE_BYTES)


def choose_mode(files: Iterable[tuple[float, int]], tasks: int, hosts: int,
                bandwidth: Callable[[], float | None] = lambda: None) -> str:
    """"tree" when spreading every shared file to every worker costs less time than the
    master sending each worker what its tasks use; "direct" otherwise (one worker, say).

    The tree saves the master's link `direct_bytes - ceil(log2(h+1))·D` bytes;
    it costs every worker a fixed overhead per piece it fetches from a peer
    (PEER_TRANSFER_SECONDS), which only matters on a very fast link. `bandwidth`
    is asked (it may measure) only when the answer depends on it; unknown, it is
    taken to be a network's, where the tree wins.
    """
    files = list(files)
    total = sum(size for size, _ in files)
    if hosts < 2 or total <= 0:
        return "direct"
    saved = direct_bytes(files, tasks, hosts) - tree_rounds(hosts) * total
    if saved <= 0:
        return "direct"
    overhead = transfers(size for size, _ in files) * PEER_TRANSFER_SECONDS
    if saved / overhead >= FASTEST_LINK:  # no link is fast enough for the overhead to count
        return "tree"
    rate = bandwidth()
    return "tree" if rate is None or saved / rate > overhead else "direct"


def choose_feed(total_bytes: float, bandwidth: float, compute_seconds: float, hosts: int) -> int:
    """How many workers to feed: the k ≤ hosts minimising compute/k + ceil(log2(k+1))·D/B.

    Every round of the tree doubles the workers that can compute, but costs
    D/B: when the data is large beside the work, feeding fewer workers and
    starting sooner wins (2^r - 1 workers fill r rounds exactly).
    """
    hosts = max(1, hosts)
    if bandwidth <= 0 or total_bytes <= 0:
        return hosts
    return min(range(1, hosts + 1),
               key=lambda k: (compute_seconds / k + tree_seconds(total_bytes, k, bandwidth), -k))


def plan(files: Iterable[tuple[float, int]], tasks: int, hosts: int, mode: str = "auto",
         compute_seconds: float | None = None,
         bandwidth: Callable[[], float | None] = lambda: None) -> tuple[str, int | None]:
    """How shared inputs should reach `hosts` workers: ("tree" or "direct", workers to feed).

    `mode` "auto" weighs the tree against the master sending on demand
    (`choose_mode`); "tree" or "direct" is the user's word. With a tree, and
    the work's total seconds per host known, `choose_feed` caps the workers
    fed when the data is large beside the work. `bandwidth` is asked (it may
    measure) only when an answer depends on it, and at most once. Feed None:
    every worker.
    """
    files = list(files)
    rate = functools.cache(bandwidth)
    if mode == "auto":
        mode = choose_mode(files, tasks, hosts, rate)
    total = sum(size for size, _ in files)
    if mode != "tree" or compute_seconds is None or hosts < 3 or total < MIN_FEED_BYTES:
        return mode, None
    if not rate():
        return mode, None
    feed = choose_feed(total, rate(), compute_seconds, hosts)
    return mode, (None if feed >= hosts else feed)
