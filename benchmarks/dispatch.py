"""Dispatch throughput: trivial command tasks through abengine's Work Queue master.

2000 tasks `echo N`, each run by `/bin/sh -c`, on 2 local workers of 1 core
each. Timed side by side and interleaved (every run uses fresh numbers N):

    abengine  WorkQueue(port=0) + 2 workers from q.worker_command(cores=1);
              q.submit(Task("echo N")) x 2000, then q.wait() x 2000 (in this process)
    dask      LocalCluster(n_workers=2, threads_per_worker=1, processes=True);
              client.map(f, N..., pure=False) then client.gather, where f runs
              subprocess.run(["sh", "-c", "echo N"], capture_output=True)
    cctools   CCTools Work Queue: 2 x `work_queue_worker --cores 1 127.0.0.1 PORT` and the
              `work_queue` Python manager under /usr/bin/python3
    ceiling   subprocess.run(["sh", "-c", "echo N"], capture_output=True) from
              ThreadPoolExecutor(2): no master, no workers, no network

The anchors' dispatchers (Dask's client, scheduler and nannies; the CCTools
manager; the ceiling's threads) each run in a child process of their own that
times itself, so none shares a process (GIL, event loops) with another. Every
time runs from the first submit to the last result, with the workers already
connected (their start-up is not dispatch). Every run's outputs are
checked: exit 0 and stdout "N\\n" for each of the expected numbers. Reported:
tasks/s of each (median of the interleaved repeats), the paired ratios
abengine/dask, abengine/cctools and abengine/ceiling of throughputs, and CPU
time per task of each process role (from /proc). Targets: abengine >= 900
tasks/s, >= 2x Dask, >= 5x CCTools Work Queue.

An anchor that is not installed is skipped with a line saying so:

    apt-get install -y coop-computing-tools python3-workqueue   # cctools
    .venv/bin/pip install dask distributed                      # dask

    python benchmarks/dispatch.py           # 2000 tasks, 5 repeats
    python benchmarks/dispatch.py --quick   # 200 tasks, 3 repeats

The last line is `key=value ...` for scripts.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import median, paired_ratio, print_machine, summary, table

TARGET_RATE = 900.0  # abengine tasks/s at least
TARGET_DASK = 2.0  # abengine throughput / Dask's at least
TARGET_CCTOOLS = 5.0  # abengine throughput / CCTools Work Queue's at least
WORKERS = 2  # workers of 1 core each (threads for the ceiling)
CONNECT_SECONDS = 60.0  # for the workers to connect
RESULT_SECONDS = 120.0  # without any result: the run is declared stuck

# The CCTools manager, run by /usr/bin/python3 (where Debian's work_queue module lives).
# It prints its port, waits for the workers, then serves "run BASE COUNT" lines from stdin
# with one JSON line: its own time from the first submit to the last wait, and the results.
CCTOOLS_MANAGER = r"""
import json, sys, time
import work_queue as wq

workers, connect_seconds, result_seconds = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
q = wq.WorkQueue(port=0)
print("port", q.port, flush=True)
deadline = time.monotonic() + connect_seconds
while q.stats.workers_connected < workers:  # connections are accepted inside wait()
    if time.monotonic() > deadline:
        print("error only %d workers connected" % q.stats.workers_connected, flush=True)
        sys.exit(1)
    q.wait(1)
    time.sleep(0.02)  # wait() returns at once while the queue is empty
print("ready []", flush=True)
for line in sys.stdin:
    words = line.split()
    if not words or words[0] != "run":
        break
    base, count = int(words[1]), int(words[2])
    results = []
    start = time.perf_counter()
    for n in range(base, base + count):
        t = wq.Task("echo %d" % n)
        t.specify_cores(1)
        t.specify_tag(str(n))
        q.submit(t)
    heard = time.monotonic()
    while len(results) < count:
        t = q.wait(5)
        if t is None:
            if time.monotonic() - heard > result_seconds:
                break
            continue
        heard = time.monotonic()
        ok = t.result == 0  # WORK_QUEUE_RESULT_SUCCESS: the command ran; then its exit code
        results.append([int(t.tag), t.return_status if ok else None, t.output or ""])
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "results": results}), flush=True)
"""


def sh_echo(n: int) -> tuple[int, bytes]:
    """One task as the anchors run it: `sh -c "echo N"`, exit code and stdout."""
    proc = subprocess.run(["sh", "-c", f"echo {n}"], capture_output=True)
    return proc.returncode, proc.stdout


def check(results: dict[int, tuple[int | None, str]], base: int, count: int) -> str:
    """Empty if `results` holds exactly base..base+count-1, each exit 0 with stdout "N\\n";
    otherwise what is wrong."""
    expected = range(base, base + count)
    if len(results) != count or set(results) != set(expected):
        return f"{len(results)} results, {len(set(results) & set(expected))} of the expected N"
    bad = [n for n in expected if results[n] != (0, f"{n}\n")]
    if bad:
        return f"{len(bad)} wrong, first N={bad[0]}: {results[bad[0]]!r}"
    return ""


def code_state() -> str:
    """Which abengine is measured: where, its git commit and uncommitted changes, and
    fingerprints of the Work Queue sources (the repository may change between runs)."""
    import abengine

    package = Path(abengine.__file__).resolve().parent
    words = [str(package)]

    def git(*argv: str) -> str:
        return subprocess.run(["git", "-C", str(package), *argv], capture_output=True,
                              text=True, timeout=30, check=True).stdout

    try:
        commit = git("rev-parse", "--short", "HEAD").strip()
        changed = [line[3:] for line in git("status", "--porcelain", "--", ".").splitlines()]
        words.append(f"git {commit}, " + (f"uncommitted changes in {', '.join(changed)}"
                                          if changed else "no uncommitted changes"))
    except (OSError, subprocess.SubprocessError):
        words.append("(not a git checkout)")
    sums = []
    for name in ("master.py", "worker.py", "protocol.py", "cache.py"):
        with contextlib.suppress(OSError):
            data = (package / "workqueue" / name).read_bytes()
            sums.append(f"{name} {hashlib.sha256(data).hexdigest()[:10]}")
    return f"{'; '.join(words)}; sha256: {', '.join(sums)}"


def cpu_ticks(pid: int) -> tuple[int, int]:
    """(own, reaped children's) user + system clock ticks of a process, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0, 0
    return int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


TICK = 1.0 / os.sysconf("SC_CLK_TCK")


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Skip(Exception):
    """An anchor cannot run here: the reason is printed and the others go on."""


class System:
    """A dispatcher: start() it, then run(base, count) -> (seconds, check message)."""

    name = ""

    def start(self) -> None:
        pass

    def run(self, base: int, count: int) -> tuple[float, str]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def roles(self) -> dict[str, list[int]]:
        """pids of the dispatching process and of the workers, for CPU accounting."""
        return {"dispatcher": [os.getpid()], "workers": []}


class Abengine(System):
    """abengine's master, in this process (the only dispatcher in it)."""

    name = "abengine"

    def start(self) -> None:
        from abengine.workqueue.master import WorkQueue

        self.q = WorkQueue(port=0)
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        self.workers = [subprocess.Popen(self.q.worker_command(cores=1) + ["--timeout", "600"],
                                         stdin=subprocess.DEVNULL, stdout=self.log,
                                         stderr=self.log)
                        for _ in range(WORKERS)]
        self.lost_in_runs = 0  # workers the master dropped while a timed run was going on
        self.connected()

    def connected(self) -> None:
        """Wait until all the workers are connected (a dropped worker comes back by itself)."""
        deadline = time.monotonic() + CONNECT_SECONDS
        while self.q.stats()["workers"] < WORKERS:
            if time.monotonic() > deadline or any(w.poll() is not None for w in self.workers):
                raise RuntimeError(f"abengine: {self.q.stats()['workers']} of {WORKERS} "
                                   f"workers connected: {self.worker_log()}")
            time.sleep(0.02)

    def worker_log(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-2000:]

    def run(self, base: int, count: int) -> tuple[float, str]:
        from abengine.workqueue.master import Task

        q = self.q
        self.connected()
        lost = q.stats()["workers_lost"]
        results: dict[int, tuple[int | None, str]] = {}
        start = time.perf_counter()
        for n in range(base, base + count):
            q.submit(Task(f"echo {n}", tag=n))
        for _ in range(count):
            task = q.wait(timeout=RESULT_SECONDS)
            if task is None:
                thread = getattr(q, "_thread", None)  # private: only to say why it stopped
                dead = thread is not None and not thread.is_alive()
                raise RuntimeError(f"{len(results)} of {count} results, then none for "
                                   f"{RESULT_SECONDS:g} s" + ("; the master's I/O thread has "
                                                              "died" if dead else ""))
            results[task.tag] = (task.exit_code if task.state == "done" else None, task.stdout)
        seconds = time.perf_counter() - start
        self.lost_in_runs += q.stats()["workers_lost"] - lost
        return seconds, check(results, base, count)

    def stats(self) -> dict:
        return self.q.stats()

    def roles(self) -> dict[str, list[int]]:
        return {"dispatcher": [os.getpid()], "workers": [w.pid for w in self.workers]}

    def close(self) -> None:
        if hasattr(self, "q"):
            self.q.close()
        stop(getattr(self, "workers", []))
        if hasattr(self, "log"):
            self.log.close()


# -- the anchors' dispatchers, each run in a child process of its own ----------------------
# (Dask's scheduler and nannies are threads and event loops of the process that makes the
# LocalCluster: in this process they would share the GIL and the cores' time with the
# others. A child serves "run BASE COUNT" lines with one JSON line each, its own time and
# its results, after a "ready" line listing its workers' pids.)


class DaskRunner:
    def start(self) -> list[int]:
        import logging

        from dask.distributed import Client, LocalCluster

        # No dashboard: it serves only if bokeh is installed, and dispatch does not use it.
        self.cluster = LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True,
                                    dashboard_address=None, silence_logs=logging.ERROR)
        self.client = Client(self.cluster)
        self.client.wait_for_workers(WORKERS, timeout=CONNECT_SECONDS)
        return list(self.client.run(os.getpid).values())

    def run(self, numbers: range) -> tuple[float, list]:
        from dask.distributed import wait

        start = time.perf_counter()
        futures = self.client.map(sh_echo, numbers, pure=False)
        wait(futures, timeout=RESULT_SECONDS)
        outputs = self.client.gather(futures)
        seconds = time.perf_counter() - start
        del futures
        return seconds, outputs

    def close(self) -> None:
        self.client.close()
        self.cluster.close()


class CeilingRunner:
    def start(self) -> list[int]:
        return []

    def run(self, numbers: range) -> tuple[float, list]:
        start = time.perf_counter()
        with ThreadPoolExecutor(WORKERS) as pool:
            outputs = list(pool.map(sh_echo, numbers))
        return time.perf_counter() - start, outputs

    def close(self) -> None:
        pass


def serve(name: str) -> int:
    """The child's side: start `name`'s runner, then time the runs the parent asks for."""
    runner = DaskRunner() if name == "dask" else CeilingRunner()
    try:
        print("ready", json.dumps(runner.start()), flush=True)
        for line in sys.stdin:
            words = line.split()
            if not words or words[0] != "run":
                break
            base, count = int(words[1]), int(words[2])
            seconds, outputs = runner.run(range(base, base + count))
            results = [[n, code, out.decode(errors="replace")]
                       for n, (code, out) in zip(range(base, base + count), outputs)]
            print(json.dumps({"seconds": seconds, "results": results}), flush=True)
    finally:
        runner.close()
    return 0


class Child(System):
    """A dispatcher in a child process that speaks the "ready" / "run" / JSON lines above."""

    def argv(self) -> list[str]:
        return [sys.executable, str(Path(__file__).resolve()), "--serve", self.name]

    def start(self) -> None:
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        self.workers: list[subprocess.Popen] = []
        self.worker_pids: list[int] = []
        self.child = subprocess.Popen(self.argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=self.log, text=True)
        while True:
            words = self.readline().split(maxsplit=1)
            if words[:1] == ["ready"]:
                self.worker_pids = json.loads(words[1])
                return
            self.on_line(words)

    def on_line(self, words: list[str]) -> None:
        raise Skip(f"{self.name} did not start: {' '.join(words)} {self.stderr()}")

    def readline(self) -> str:
        assert self.child.stdout is not None
        line = self.child.stdout.readline()
        if not line:
            raise Skip(f"the {self.name} process exited: {self.stderr()}")
        return line

    def stderr(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-2000:]

    def run(self, base: int, count: int) -> tuple[float, str]:
        assert self.child.stdin is not None
        self.child.stdin.write(f"run {base} {count}\n")
        self.child.stdin.flush()
        line = self.child.stdout.readline() if self.child.stdout else ""
        if not line:
            raise RuntimeError(f"the {self.name} process exited: {self.stderr()}")
        answer = json.loads(line)
        results = {n: (code, out) for n, code, out in answer["results"]}
        return answer["seconds"], check(results, base, count)

    def roles(self) -> dict[str, list[int]]:
        return {"dispatcher": [self.child.pid],
                "workers": [w.pid for w in self.workers] + self.worker_pids}

    def close(self) -> None:
        child = getattr(self, "child", None)
        if child is not None and child.poll() is None:
            try:
                assert child.stdin is not None
                child.stdin.write("quit\n")
                child.stdin.close()
                child.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                pass
        stop(getattr(self, "workers", []) + ([child] if child is not None else []))
        if hasattr(self, "log"):
            self.log.close()


class Dask(Child):
    name = "dask"

    @staticmethod
    def missing() -> str:
        try:
            import dask.distributed  # noqa: F401
        except ImportError as exc:
            return (f"dask distributed cannot be imported by {sys.executable}: {exc} "
                    "(install: .venv/bin/pip install dask distributed)")
        return ""

    @staticmethod
    def version() -> str:
        import dask
        import distributed

        return f"dask {dask.__version__}, distributed {distributed.__version__}"


class Ceiling(Child):
    name = "ceiling"


class Cctools(Child):
    name = "cctools"

    def __init__(self, python: str) -> None:
        self.python = python

    def argv(self) -> list[str]:
        return [self.python, "-c", CCTOOLS_MANAGER, str(WORKERS), str(CONNECT_SECONDS),
                str(RESULT_SECONDS)]

    def on_line(self, words: list[str]) -> None:
        if words[:1] != ["port"]:
            raise Skip(f"the CCTools manager said {' '.join(words)!r}: {self.stderr()}")
        self.workers = [subprocess.Popen(["work_queue_worker", "--cores", "1", "127.0.0.1",
                                          words[1].strip()],
                                         stdin=subprocess.DEVNULL, stdout=self.log,
                                         stderr=self.log)
                        for _ in range(WORKERS)]

    def missing(self) -> str:
        if shutil.which("work_queue_worker") is None:
            return ("work_queue_worker not found on PATH (install: apt-get install -y "
                    "coop-computing-tools python3-workqueue)")
        try:
            subprocess.run([self.python, "-c", "import work_queue"], check=True, timeout=60,
                           capture_output=True)
        except (OSError, subprocess.SubprocessError):
            return (f"{self.python} cannot import work_queue (install: apt-get install -y "
                    "python3-workqueue)")
        return ""

    def version(self) -> str:
        words = []
        try:
            out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "coop-computing-tools"],
                                 capture_output=True, text=True, timeout=30).stdout.strip()
            if out:
                words.append(f"coop-computing-tools {out} (dpkg)")
        except (OSError, subprocess.SubprocessError):
            pass
        try:
            line = subprocess.run(["work_queue_worker", "--version"], capture_output=True,
                                  text=True, timeout=30).stdout.splitlines()[0]
            words.append(f"the worker says: {line.strip()}")
        except (OSError, subprocess.SubprocessError, IndexError):
            pass
        try:
            python = subprocess.run([self.python, "-V"], capture_output=True, text=True,
                                    timeout=30).stdout.strip()
            words.append(f"manager under {self.python} ({python})")
        except (OSError, subprocess.SubprocessError):
            pass
        return "; ".join(words) or "unknown"


def measure(system: System, base: int, count: int) -> tuple[float, str, dict[str, float]]:
    """One timed run, and the CPU seconds each role used during it (own and its children's)."""
    roles = system.roles()
    before = {role: [cpu_ticks(pid) for pid in pids] for role, pids in roles.items()}
    seconds, problem = system.run(base, count)
    cpu: dict[str, float] = {"task": 0.0}
    for role, pids in roles.items():
        after = [cpu_ticks(pid) for pid in pids]
        own = sum(a[0] - b[0] for a, b in zip(after, before[role]))
        children = sum(a[1] - b[1] for a, b in zip(after, before[role]))
        cpu[role] = own * TICK
        cpu["task"] += children * TICK  # the shells, reaped by whoever ran them
    return seconds, problem, cpu


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=2000, help="tasks per run (default 2000)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per system (default 5)")
    p.add_argument("--quick", action="store_true", help="200 tasks, 3 repeats")
    p.add_argument("--skip", default="", metavar="NAMES",
                   help="comma-separated systems to leave out: dask, cctools, ceiling")
    p.add_argument("--cctools-python", default="/usr/bin/python3", metavar="PYTHON",
                   help="interpreter that can import work_queue (default /usr/bin/python3)")
    p.add_argument("--serve", choices=["dask", "ceiling"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        return serve(args.serve)
    if args.quick:
        args.tasks, args.repeats = 200, 3
    if args.repeats < 1 or args.tasks < 1:
        p.error("--repeats and --tasks must be at least 1")
    skip = {name.strip() for name in args.skip.split(",") if name.strip()}
    if skip - {"dask", "cctools", "ceiling"}:
        p.error(f"--skip: unknown system(s) {', '.join(sorted(skip))}")

    print_machine()
    print(f"# {args.tasks} tasks `echo N` (sh -c) per run on {WORKERS} workers x 1 core; "
          f"{args.repeats} interleaved repeats after one warm-up round, medians; "
          f"time = first submit -> last result, workers already connected")

    print(f"# abengine: {code_state()}")
    candidates: list[System] = [Abengine()]
    skipped: dict[str, str] = {}
    if "dask" in skip:
        skipped["dask"] = "left out (--skip)"
    elif why := Dask.missing():
        skipped["dask"] = why
    else:
        candidates.append(Dask())
    cctools = Cctools(args.cctools_python)
    if "cctools" in skip:
        skipped["cctools"] = "left out (--skip)"
    elif why := cctools.missing():
        skipped["cctools"] = why
    else:
        candidates.append(cctools)
    if "ceiling" in skip:
        skipped["ceiling"] = "left out (--skip)"
    else:
        candidates.append(Ceiling())

    systems: dict[str, System] = {}
    times: dict[str, list[float]] = {}
    cpus: dict[str, list[dict[str, float]]] = {}
    problems: list[str] = []
    try:
        for system in candidates:
            try:
                system.start()
            except Skip as why:
                skipped[system.name] = str(why)
                system.close()
                continue
            except Exception as exc:
                system.close()
                if system.name == "abengine":
                    raise
                skipped[system.name] = f"could not start: {type(exc).__name__}: {exc}"
                continue
            systems[system.name] = system
            times[system.name], cpus[system.name] = [], []
        if "dask" in systems:
            print(f"# dask: {Dask.version()}")
        if "cctools" in systems:
            print(f"# cctools: {cctools.version()}")
        for name, why in skipped.items():
            print(f"# SKIPPED {name}: {why}")

        base = 0
        for r in range(-1, args.repeats):  # -1: the warm-up round, untimed but checked
            names = list(systems)
            order = names[r % len(names):] + names[: r % len(names)] if r >= 0 else names
            for name in order:
                try:
                    seconds, problem, cpu = measure(systems[name], base, args.tasks)
                except Exception as exc:
                    why = f"{type(exc).__name__}: {exc}"
                    if name == "abengine":
                        print(f"# FAILED abengine ({'warm-up' if r < 0 else f'repeat {r + 1}'})"
                              f": {why}")
                        print(summary(tasks=args.tasks, abengine_tasks_per_s="failed",
                                      correct="no", repeats=args.repeats))
                        return 1
                    skipped[name] = f"failed during the runs: {why}"
                    print(f"# SKIPPED {name}: {skipped[name]}")
                    systems.pop(name).close()
                    times.pop(name)
                    cpus.pop(name)
                    continue
                finally:
                    base += args.tasks
                if problem:
                    problems.append(f"{name} ({'warm-up' if r < 0 else f'repeat {r + 1}'})"
                                    f": {problem}")
                if r >= 0:
                    times[name].append(seconds)
                    cpus[name].append(cpu)
            if r >= 0:
                shown = "  ".join(f"{n}={times[n][-1]:.3f}s" for n in systems)
                print(f"  repeat {r + 1}/{args.repeats}: {shown}", file=sys.stderr, flush=True)
        abengine: Abengine = systems["abengine"]  # type: ignore[assignment]
        abengine_stats = abengine.stats()
    finally:
        for system in reversed(list(systems.values())):
            system.close()

    n = args.tasks
    ab = times["abengine"]
    rows = []
    for name, t in times.items():
        rows.append([name, median(t), min(t), max(t), n / median(t), paired_ratio(t, ab)])
    print()
    print(table(["system", "median_s", "min_s", "max_s", "tasks_per_s", "abengine_vs"], rows))
    print()
    print("# CPU ms per task (medians over repeats, from /proc): dispatcher = the process that "
          "submits (abengine's master, Dask's client + scheduler + nannies, the CCTools "
          "manager, the ceiling's threads), workers = the worker processes' own CPU, "
          "task = the shells (reaped children)")
    cpu_rows = []
    for name, runs in cpus.items():
        row: list[object] = [name]
        for role in ("dispatcher", "workers", "task"):
            row.append(median([c.get(role, 0.0) for c in runs]) * 1e3 / n)
        row.append(median([sum(c.values()) for c in runs]) * 1e3 / n)
        cpu_rows.append(row)
    print(table(["system", "dispatcher_ms", "workers_ms", "task_ms", "total_ms"], cpu_rows))
    print(f"# abengine master counters after all runs: done={abengine_stats['done']}, "
          f"speculative={abengine_stats['speculative']}, failed={abengine_stats['failed']}, "
          f"workers_lost={abengine_stats['workers_lost']} ({abengine.lost_in_runs} during timed "
          f"runs, the others while idle between them; a dropped worker reconnects, and each "
          f"run starts with all {WORKERS} connected)")

    rate = n / median(ab)
    ratios = {name: paired_ratio(times[name], ab) if name in times else None
              for name in ("dask", "cctools", "ceiling")}

    def verdict(value: float | None, target: float) -> str:
        if value is None:
            return "skipped"
        return "met" if value >= target else "missed"

    print()
    for problem in problems:
        print(f"# WRONG OUTPUT {problem}")
    ok = not problems
    print(f"# every output checked ({n} numbers per run, every run): {'yes' if ok else 'NO'}")
    shown = {k: "n/a (skipped)" if v is None else f"{v:.2f}" for k, v in ratios.items()}
    print(f"# abengine {rate:.0f} tasks/s (target >= {TARGET_RATE:g}: "
          f"{verdict(rate, TARGET_RATE)}); abengine/dask {shown['dask']} (target >= "
          f"{TARGET_DASK:g}: {verdict(ratios['dask'], TARGET_DASK)}); abengine/cctools "
          f"{shown['cctools']} (target >= {TARGET_CCTOOLS:g}: "
          f"{verdict(ratios['cctools'], TARGET_CCTOOLS)}); abengine/ceiling {shown['ceiling']}")

    def rate_of(name: str) -> float | str:
        return n / median(times[name]) if name in times else "skipped"

    def ratio_of(name: str) -> float | str:
        value = ratios[name]
        return "skipped" if value is None else value

    print(summary(
        tasks=n,
        abengine_tasks_per_s=rate,
        dask_tasks_per_s=rate_of("dask"),
        cctools_tasks_per_s=rate_of("cctools"),
        ceiling_tasks_per_s=rate_of("ceiling"),
        abengine_vs_dask=ratio_of("dask"),
        abengine_vs_cctools=ratio_of("cctools"),
        abengine_vs_ceiling=ratio_of("ceiling"),
        rate_target=verdict(rate, TARGET_RATE),
        dask_target=verdict(ratios["dask"], TARGET_DASK),
        cctools_target=verdict(ratios["cctools"], TARGET_CCTOOLS),
        correct="yes" if ok else "no", repeats=args.repeats,
    ))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
