"""Caching: one 100 MB input shared by 1000 tasks crosses the wire once per worker.

A master and 2 local workers (1 core each); 1000 tasks each read the same
100 MB input (`wc -c < big.bin`) and print its size. Reported from the
master's own counters (`puts`, `bytes_sent`) and checked: every task saw
all 100 MB, and the bytes sent are exactly one copy per worker, against the
1000 copies (100 GB) a system without a cache would send. The time of the
whole run and the time a first task took (which includes the transfer) are
printed for scale.

    python benchmarks/wq_cache.py            # 100 MB, 1000 tasks
    python benchmarks/wq_cache.py --quick    # 10 MB, 100 tasks
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import print_machine, summary, table

from abengine.workqueue.master import Task, WorkQueue

WORKERS = 2


def run(size: int, tasks: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="wq-cache-") as tmp:
        big = Path(tmp) / "big.bin"
        with open(big, "wb") as f:
            for _ in range(size // (1 << 20)):
                f.write(os.urandom(1 << 20))
            f.write(os.urandom(size % (1 << 20)))
        with WorkQueue(port=0) as q:
            workers = [subprocess.Popen([*q.worker_command(cores=1), "--timeout", "60"],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL) for _ in range(WORKERS)]
            try:
                while q.stats()["workers"] < WORKERS:
                    time.sleep(0.05)
                start = time.perf_counter()
                for _ in range(tasks):
                    t = Task("wc -c < big.bin")
                    t.add_input(big, "big.bin")
                    q.submit(t)
                first = None
                sizes = []
                while not q.empty():
                    done = q.wait(timeout=300)
                    if done is None:
                        raise SystemExit(f"# FAILED: no result for 300 s: {q.stats()}")
                    first = first or time.perf_counter() - start
                    sizes.append(int(done.stdout) if done.ok else -1)
                elapsed = time.perf_counter() - start
                stats = q.stats()
            finally:
                for w in workers:
                    w.terminate()
                for w in workers:
                    w.wait(timeout=30)
    return {"elapsed": elapsed, "first": first or 0.0, "puts": stats["puts"],
            "bytes_sent": stats["bytes_sent"], "correct": all(s == size for s in sizes),
            "tasks": len(sizes)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-mb", type=int, default=100)
    p.add_argument("--tasks", type=int, default=1000)
    p.add_argument("--quick", action="store_true", help="10 MB, 100 tasks")
    args = p.parse_args()
    size_mb, tasks = (10, 100) if args.quick else (args.size_mb, args.tasks)
    print_machine()
    r = run(size_mb << 20, tasks)
    copies = r["bytes_sent"] / (size_mb << 20)
    print(table(["input MB", "tasks", "workers", "puts", "MB sent", "copies sent",
                 "without a cache", "seconds", "first result s", "tasks/s"],
                [[size_mb, r["tasks"], WORKERS, r["puts"], r["bytes_sent"] / (1 << 20),
                  copies, tasks, r["elapsed"], r["first"], r["tasks"] / r["elapsed"]]]))
    ok = r["correct"] and r["tasks"] == tasks and copies == WORKERS
    print(f"# every task read the whole input: {'yes' if r['correct'] else 'NO'}; "
          f"copies sent {copies:g} (target: one per worker = {WORKERS}: "
          f"{'met' if copies == WORKERS else 'MISSED'})")
    print(summary(size_mb=size_mb, tasks=tasks, workers=WORKERS, puts=r["puts"],
                  bytes_sent=r["bytes_sent"], copies=copies, seconds=round(r["elapsed"], 3),
                  correct="yes" if ok else "no"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
