"""Spanning-tree distribution against the star: N workers get a shared input of D MB.

Every process's uploads (the master's sends, each worker's peer uploads) are
capped at B MB/s by a token bucket (ABENGINE_UPLOAD_LIMIT, a benchmark knob
that emulates one network card per process on one machine). "star": the
master sends every worker its copy itself (WorkQueue.distribute(mode="direct")),
N·D/B. "tree": the master seeds, every holder serves one more worker at a time
and the file travels as 4 MB pieces whose trees run side by side
(mode="tree"). Each run starts fresh workers (empty caches) and is timed from
the distribute() call until every worker holds a hash-checked copy. The model
figure is the anchor's distribution term for whole files, ceil(log2(N+1))·D/B.

    python benchmarks/distribution.py                          # N=8, D=32 MB, B=32 MB/s
    python benchmarks/distribution.py --workers 2,4,8,16       # the table in docs/benchmarks.md
    python benchmarks/distribution.py --workers 8 --shared-files 256   # many small files
    python benchmarks/distribution.py --workers 4,8 --allpairs  # a whole All-Pairs run
    python benchmarks/distribution.py --plan 250x16,2500x16,1000x64  # the planner's own CPU

`--plan PxN` replays a whole plan of P pieces (4 MiB each) to N workers in
memory, every transfer finishing in turn, and reports the master's CPU for
the planning beside the time the model gives those transfers at B.

`--allpairs` times what a user sees instead: an All-Pairs of K files of D/K MB
against themselves (F compares two files with cmp) on N fresh workers, the
engine told `--distribute direct` (the master sends each worker the files its
blocks read, on demand) against `auto` (the model's choice, a tree here).

The last line: workers=N size_mb=D star_s=... tree_s=... (for the last N; with
--allpairs, direct_s and auto_s).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import median, paired_ratio, print_machine, summary, table

import abengine
from abengine.engines.workqueue import WorkQueueEngine
from abengine.models.distribution import tree_seconds
from abengine.workqueue.distribute import PIECE_BYTES, Planner
from abengine.workqueue.master import WorkQueue
from abengine.workqueue.protocol import UPLOAD_LIMIT_ENV

MB = 1 << 20


def wait_for_workers(q: WorkQueue, workers: int, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while q.stats()["workers"] < workers:
        if time.monotonic() > deadline:
            raise SystemExit(f"# FAILED: only {q.stats()['workers']} of {workers} workers "
                             "connected")
        time.sleep(0.05)


def spread(paths: list[Path], workers: int, mode: str, timeout: float = 300,
           piece_bytes: int | None = PIECE_BYTES) -> tuple[float, dict]:
    """Seconds until `workers` fresh workers hold `paths`, sent the `mode` way; the master's
    counters after."""
    with WorkQueue(port=0) as q:
        procs = [subprocess.Popen([*q.worker_command(cores=1), "--timeout", "60"],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) for _ in range(workers)]
        try:
            wait_for_workers(q, workers)
            start = time.perf_counter()
            q.distribute(paths, mode=mode, piece_bytes=piece_bytes)
            if not q.wait_distributed(timeout):
                raise SystemExit(f"# FAILED: {mode} not done in {timeout} s: {q.stats()}")
            elapsed = time.perf_counter() - start
            holding = sum(w["holds"] == len(paths) for w in q.workers())
            if holding != workers:
                raise SystemExit(f"# FAILED: {holding} of {workers} workers hold the file")
            return elapsed, q.stats()
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(timeout=30)


def plan_cpu(pieces: int, workers: int) -> tuple[float, int]:
    """CPU seconds to plan every transfer of `pieces` pieces to `workers` workers, finishing
    the oldest running transfer before each planning call; and the calls."""
    planner = Planner()
    planner.add_files([f"piece{i}" for i in range(pieces)])
    for w in range(1, workers + 1):
        planner.add_worker(w)
    start, calls = time.process_time(), 0
    planner.next()
    while not planner.done():
        oldest = next(iter(planner.running.values()))
        planner.stored(oldest.digest, oldest.target)
        planner.next()
        calls += 1
    return time.process_time() - start, calls


def allpairs_run(listing: Path, compare: Path, workers: int, mode: str,
                 block: int) -> tuple[float, str, dict]:
    """Seconds of an All-Pairs of `listing` with itself on `workers` fresh workers, the spread
    the engine chose, and the master's counters. Timed once every worker is connected."""
    with WorkQueueEngine(workers=workers, distribute=mode) as engine:
        wait_for_workers(engine.queue, workers)
        start = time.perf_counter()
        result = abengine.allpairs(str(listing), str(listing), str(compare), engine=engine,
                                   block=(block, block), progress=False)
        elapsed = time.perf_counter() - start
        if not (result[np.eye(len(result), dtype=bool)] == 0).all():
            raise SystemExit("# FAILED: a file differs from itself")
        return elapsed, engine.distributed, engine.queue.stats()


def allpairs_table(counts: list[int], size_mb: int, files: int, repeats: int,
                   tmp: Path) -> tuple[list, list]:
    listing = tmp / "files.list"
    paths = []
    for i in range(files):
        paths.append(tmp / f"element{i:03d}.bin")
        paths[-1].write_bytes(os.urandom(size_mb * MB // files))
    listing.write_text("\n".join(p.name for p in paths) + "\n")
    compare = tmp / "compare.sh"
    compare.write_text('#!/bin/sh\ncmp -s "$1" "$2"; echo $?\n')
    compare.chmod(0o755)
    block = max(1, files // 8)
    rows, lines = [], []
    for n in counts:
        times: dict[str, list[float]] = {"direct": [], "auto": []}
        chosen, sent = "", {}
        for r in range(repeats):
            for mode in (("direct", "auto") if r % 2 == 0 else ("auto", "direct")):
                seconds, spread, stats = allpairs_run(listing, compare, n, mode, block)
                times[mode].append(seconds)
                sent[mode] = stats["bytes_sent"] / MB
                chosen = spread if mode == "auto" else chosen
        direct, auto = median(times["direct"]), median(times["auto"])
        ratio = paired_ratio(times["auto"], times["direct"])
        rows.append([n, direct, auto, chosen, ratio, sent["direct"], sent["auto"]])
        lines.append(summary(workers=n, size_mb=size_mb, direct_s=round(direct, 3),
                             auto_s=round(auto, 3)))
        print(f"# N={n}: direct {direct:.2f} s, auto ({chosen}) {auto:.2f} s",
              file=sys.stderr, flush=True)
    return rows, lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", default="8", help="N, or a comma-separated list (default: 8)")
    p.add_argument("--size-mb", type=int, default=32, help="D, the shared input (default: 32)")
    p.add_argument("--rate-mb", type=float, default=32.0,
                   help="B, every process's upload cap in MB/s (default: 32)")
    p.add_argument("--repeats", type=int, default=1,
                   help="runs of each, alternating; medians shown (default: 1)")
    p.add_argument("--allpairs", action="store_true",
                   help="time a whole All-Pairs run, --distribute direct against auto")
    p.add_argument("--shared-files", type=int, default=1,
                   help="D cut into this many files (default: 1); each travels whole when "
                        "smaller than a piece (4 MiB)")
    p.add_argument("--whole-files", action="store_true",
                   help="tree: send each file whole, not in pieces (the model's own case)")
    p.add_argument("--plan", metavar="PxN,...",
                   help="time only the planner: P pieces to N workers, in memory")
    p.add_argument("--files", type=int, default=32,
                   help="--allpairs: K, the files D is cut into (default: 32)")
    args = p.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    rate = args.rate_mb * MB
    os.environ[UPLOAD_LIMIT_ENV] = str(int(rate))  # the master here, the workers it starts
    print_machine()
    if args.plan:
        rows = []
        for spec in args.plan.split(","):
            pieces, workers = (int(v) for v in spec.split("x"))
            cpu, calls = plan_cpu(pieces, workers)
            model = tree_seconds(pieces * PIECE_BYTES, workers, rate)
            rows.append([pieces, workers, cpu, calls, cpu / calls * 1e6, model, cpu / model])
        print(table(["pieces", "workers", "plan_cpu_s", "calls", "us/call",
                     f"model tree_s at {args.rate_mb:g} MB/s", "plan/model"], rows))
        print(summary(pieces=rows[-1][0], workers=rows[-1][1], plan_cpu_s=rows[-1][2],
                      plan_over_model=rows[-1][6]))
        return 0
    print(f"# D = {args.size_mb} MB, B = {args.rate_mb:g} MB/s per process "
          f"({UPLOAD_LIMIT_ENV}={int(rate)}); D/B = {args.size_mb * MB / rate:.3f} s")
    with tempfile.TemporaryDirectory(prefix="distribution-") as tmp:
        if args.allpairs:
            rows, lines = allpairs_table(counts, args.size_mb, args.files, args.repeats,
                                         Path(tmp))
            print(table(["N", "direct_s", "auto_s", "auto chose", "auto/direct",
                         "MB master sent (direct)", "MB master sent (auto)"], rows))
            print("\n".join(lines))
            return 0
        data = []  # D in --shared-files files
        for i in range(args.shared_files):
            data.append(Path(tmp) / f"shared{i:05d}.bin")
            data[-1].write_bytes(os.urandom(args.size_mb * MB // args.shared_files))
        rows, lines = [], []
        for n in counts:
            times: dict[str, list[float]] = {"direct": [], "tree": []}
            stats: dict = {}
            for r in range(args.repeats):
                for mode in (("direct", "tree") if r % 2 == 0 else ("tree", "direct")):
                    seconds, counters = spread(data, n, mode, piece_bytes=(
                        None if args.whole_files else PIECE_BYTES))
                    times[mode].append(seconds)
                    stats = counters if mode == "tree" else stats
            star, tree = median(times["direct"]), median(times["tree"])
            model = tree_seconds(args.size_mb * MB, n, rate)
            rows.append([n, star, tree, paired_ratio(times["tree"], times["direct"]), model,
                         tree / model, stats["seeds"], stats["peer_transfers"],
                         stats["transfers_failed"]])
            lines.append(summary(workers=n, size_mb=args.size_mb, star_s=round(star, 3),
                                 tree_s=round(tree, 3)))
            print(f"# N={n}: star {star:.2f} s, tree {tree:.2f} s", file=sys.stderr, flush=True)
    print(table(["N", "star_s", "tree_s", "tree/star", "model ceil(log2(N+1))·D/B",
                 "tree/model", "pieces from master", "peer transfers", "failed"], rows))
    print("\n".join(lines))
    return 0

if __name__ == "__main__":
    sys.exit(main())
