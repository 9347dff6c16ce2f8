"""Work Queue master at scale: memory per queued task, and dispatch rate with 10 to 1000 workers.

The target (the issue): one master holds 1000 connected workers and 1,000,000
queued tasks. Measured in this process, which is the master's:

    memory     RSS before and after queueing 100k, 500k and 1M tasks
               (Task("echo 1"), no worker connected, so they all stay queued);
               MB per 100k queued tasks, and the rate of Task(...) + q.submit()
    dispatch   with 1M tasks queued and N simulated workers (1 core each) connected
               and all counted in q.stats()["workers"]: results received per second
               through q.wait() over the first 100k tasks completed after the last
               worker joined (--full: every task), for N = 10, 100, 1000; meanwhile
               the waiting thread asks q.stats() once a second: how long the answer
               takes while the master is busy (median and worst). --stats-thread asks
               from a second thread instead, as a monitor would; the master's
               _status() walks the task table that q.wait() and q.submit() change from
               the caller's threads, so that mode can kill the master's I/O thread
               ("dictionary changed size during iteration"): the table then says DIED

The simulated workers are one child process (this script with --sim), a
selectors loop over N real TCP connections to 127.0.0.1 that speak the real
protocol through protocol.Connection(Role.WORKER): the challenge-response
handshake, then every task answered at once with a Result (exit code 0, empty
output, elapsed 0) without running anything, heartbeats answered. The machine
has few cores, so the simulator competes with the master for CPU: the table
shows the CPU share of the master's I/O thread and of the simulator over each
measured window (an I/O thread near 100% means the master is the bottleneck).

    python benchmarks/wq_scale.py              # 1M tasks; 10, 100, 1000 workers
    python benchmarks/wq_scale.py --full       # drain all 1M tasks in every run
    python benchmarks/wq_scale.py --quick      # 100k tasks; 10 and 100 workers
    python benchmarks/wq_scale.py --profile    # + cProfile of the I/O thread, largest N
    python benchmarks/wq_scale.py --stats-thread   # q.stats() from a second thread

All traffic stays on 127.0.0.1; every wait is bounded and the simulator stops
by itself (stdin closed, its deadline, or the master gone). Each process
raises its soft RLIMIT_NOFILE to the hard limit when N connections need more
descriptors than the soft limit allows, and says so on stderr.

The last line is `key=value ...` for scripts.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import io
import json
import os
import pstats
import queue
import selectors
import socket
import statistics
import subprocess
import sys
import threading
import time

from _common import print_machine, summary, table

from abengine.workqueue.master import Task, WorkQueue
from abengine.workqueue.protocol import (
    NEED_DATA,
    BadAuth,
    Bye,
    Challenge,
    Closed,
    Connection,
    Heartbeat,
    Hello,
    Kill,
    ProtocolError,
    Refused,
    Result,
    Role,
    Welcome,
)
from abengine.workqueue.protocol import Task as TaskMessage

HOST = "127.0.0.1"
MB = 1 << 20  # MiB, as RSS is counted in pages
STATS_EVERY = 1.0  # seconds between two q.stats() probes while dispatching
CONNECTING = 256  # simulated workers in the handshake at once (the master's backlog is 1024)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def raise_nofile(needed: int, who: str) -> None:
    """Raise the soft descriptor limit to the hard one if `needed` descriptors do not fit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        new = hard if hard == resource.RLIM_INFINITY else max(soft, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        log(f"[{who}] RLIMIT_NOFILE soft limit raised from {soft} to {new} (need ~{needed})")
        if new != resource.RLIM_INFINITY and new < needed:
            raise SystemExit(f"[{who}] the hard descriptor limit {hard} is below {needed}")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# -- the simulated workers (child process) ---------------------------------------------


class SimWorker:
    __slots__ = ("index", "sock", "conn", "out", "welcomed", "writing")

    def __init__(self, index: int, sock: socket.socket, secret: bytes) -> None:
        self.index, self.sock = index, sock
        self.conn = Connection(Role.WORKER, secret)
        self.out = bytearray()
        self.welcomed = self.writing = False


def simulate(port: int, n: int, deadline: float) -> None:
    """N worker connections in one selectors loop; answers every task at once.

    Reads the secret (hex) as the first line of stdin; prints "ready" once all N
    are welcomed, and a JSON line of counts when it stops: stdin closed, the
    deadline passed, or every connection closed by the master.
    """
    raise_nofile(n + 64, "sim")
    line = b""
    while not line.endswith(b"\n"):
        chunk = os.read(0, 4096)
        if not chunk:
            return
        line += chunk
    secret = bytes.fromhex(line.decode().strip())
    stop_at = time.monotonic() + deadline
    sel = selectors.DefaultSelector()
    sel.register(0, selectors.EVENT_READ, None)  # stdin: closed by the parent to stop us
    counts = {"answered": 0, "heartbeats": 0, "killed": 0, "welcomed": 0, "closed": 0,
              "refused": 0, "errors": 0}
    live: dict[int, SimWorker] = {}
    started = handshaking = 0
    ready = False
    pid, name = os.getpid(), socket.gethostname()

    def close(w: SimWorker, why: str) -> None:
        nonlocal handshaking
        if live.pop(w.index, None) is None:
            return
        if not w.welcomed:
            handshaking -= 1
        counts[why] += 1
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(w.sock)
        w.sock.close()

    def flush(w: SimWorker) -> None:
        try:
            while w.out:
                sent = w.sock.send(w.out)
                del w.out[:sent]
        except BlockingIOError:
            pass
        except OSError:
            close(w, "errors")
            return
        want = bool(w.out)
        if want != w.writing:
            w.writing = want
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if want else 0)
            sel.modify(w.sock, events, w)

    def handle(w: SimWorker) -> None:
        nonlocal handshaking, ready
        try:
            data = w.sock.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        try:
            w.conn.receive_data(data)
            while True:
                event = w.conn.next_event()
                if event is NEED_DATA:
                    break
                kind = type(event)
                if kind is TaskMessage:
                    w.out += w.conn.send(Result(id=event.id, exit_code=0, signal=None, error="",
                                                stdout="", stderr="", elapsed=0.0, outputs=[]))
                    counts["answered"] += 1
                elif kind is Heartbeat:
                    w.out += w.conn.send(Heartbeat())
                    counts["heartbeats"] += 1
                elif kind is Kill:
                    counts["killed"] += 1  # its result went out already
                elif kind is Challenge:
                    w.out += w.conn.send(Hello(role="worker", cores=1, memory=1 << 30,
                                               disk=1 << 30, name=f"{name}-sim{w.index}",
                                               pid=pid, cached=[]))
                elif kind is Welcome:
                    w.welcomed = True
                    handshaking -= 1
                    counts["welcomed"] += 1
                    if counts["welcomed"] == n and not ready:
                        ready = True
                        print("ready", flush=True)
                elif kind in (Bye, Closed):
                    close(w, "closed")
                    return
                elif kind in (Refused, BadAuth):
                    close(w, "refused")
                    return
                # Put, Data, EndOfData: no task here has inputs
        except (ProtocolError, ValueError):
            close(w, "errors")
            return
        flush(w)

    stopping = False
    while not stopping and time.monotonic() < stop_at:
        while started < n and handshaking < CONNECTING:
            sock = socket.create_connection((HOST, port), timeout=10)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            w = SimWorker(started, sock, secret)
            live[started] = w
            sel.register(sock, selectors.EVENT_READ, w)
            started += 1
            handshaking += 1
        for key, mask in sel.select(1.0):
            w = key.data
            if w is None:
                if not os.read(0, 4096):
                    stopping = True
                continue
            if w.index not in live:
                continue
            if mask & selectors.EVENT_READ:
                handle(w)
            if mask & selectors.EVENT_WRITE and w.index in live:
                flush(w)
        if started == n and not live:
            break  # the master closed every connection
    for w in list(live.values()):
        with contextlib.suppress(OSError, ValueError):
            w.sock.setblocking(True)
            w.sock.settimeout(0.2)
            w.sock.sendall(bytes(w.out) + w.conn.send(Bye(reason="benchmark over")))
        close(w, "closed")
    counts["timed_out"] = not stopping and time.monotonic() >= stop_at
    print(json.dumps(counts), flush=True)


class Simulator:
    """The child process running `simulate`, seen from the master's side."""

    def __init__(self, q: WorkQueue, n: int, deadline: float) -> None:
        self.n = n
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--sim", str(n), "--port", str(q.port),
             "--sim-deadline", str(deadline)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=False)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(q.secret.hex().encode() + b"\n")
        self.proc.stdin.flush()
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(raw.decode().strip())
        self.lines.put("")

    def line(self, timeout: float) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            return ""

    def cpu(self) -> float:
        """CPU seconds (user + system) the simulator has used so far."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> dict:
        """Close its stdin; its JSON line of counts (or {} if it did not say)."""
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        counts: dict = {}
        end = time.monotonic() + 30
        while time.monotonic() < end:
            text = self.line(max(0.0, end - time.monotonic()))
            if text.startswith("{"):
                counts = json.loads(text)
                break
            if text == "" and self.proc.poll() is not None:
                break
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return counts


# -- the master's side ------------------------------------------------------------------


class ProfiledQueue(WorkQueue):
    """A WorkQueue whose I/O thread runs under cProfile while `profiling` is set.

    cProfile profiles the thread that enables it, so the switch sits in
    _dispatch, which the I/O loop calls once per round.
    """

    profiling = False  # set from the caller's thread
    profile: cProfile.Profile | None = None  # the finished profile
    _running: cProfile.Profile | None = None

    def _dispatch(self) -> None:
        if self.profiling and self._running is None and self.profile is None:
            self._running = cProfile.Profile()
            self._running.enable()
        elif not self.profiling and self._running is not None:
            self._running.disable()
            self.profile, self._running = self._running, None
        super()._dispatch()


def thread_cpu(native_id: int) -> float:
    """CPU seconds (user + system) used so far by one thread of this process."""
    with contextlib.suppress(OSError):
        with open(f"/proc/self/task/{native_id}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def timed_stats(q: WorkQueue) -> tuple[dict, float]:
    start = time.perf_counter()
    s = q.stats()
    return s, time.perf_counter() - start


def submit_many(q: WorkQueue, count: int) -> float:
    """Task(...) + q.submit() `count` times; the seconds it took."""
    start = time.perf_counter()
    for _ in range(count):
        q.submit(Task("echo 1"))
    return time.perf_counter() - start


def wait_submitted(q: WorkQueue, total: int, timeout: float) -> float:
    """Seconds until the I/O thread has taken every submitted task from its inbox."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if q.stats()["submitted"] >= total:
            return time.perf_counter() - start
        time.sleep(0.05)
    raise SystemExit(f"the master took in fewer than {total} tasks in {timeout:.0f} s")


def memory_phase(sizes: list[int]) -> tuple[WorkQueue, list[list[object]], dict]:
    """RSS of this process as the queue grows to each size (cumulative), no workers."""
    gc.collect()
    q = WorkQueue(port=0, host=HOST)
    time.sleep(0.2)
    base = rss_bytes()
    rows, out = [], {}
    queued = 0
    for size in sizes:
        seconds = submit_many(q, size - queued)
        drain = wait_submitted(q, size, timeout=120)
        rate = (size - queued) / seconds
        _, stats_s = timed_stats(q)
        rss = rss_bytes()
        per_100k = (rss - base) / MB / (size / 100_000)
        rows.append([size, rss / MB, (rss - base) / MB, per_100k, seconds, round(rate),
                     drain * 1e3, stats_s * 1e3])
        out = {"mem_mb_per_100k": per_100k, "submit_per_s": rate, "stats_ms_idle": stats_s * 1e3}
        log(f"  queued {size}: RSS +{(rss - base) / MB:.1f} MiB, {rate:.0f} submits/s")
        queued = size
    return q, rows, out


class StatsProbe:
    """q.stats() once every STATS_EVERY seconds, timed, from a thread of its own.

    Only with --stats-thread: a second thread asking while the waiting thread
    pops tasks in q.wait() is what a monitoring thread does, and it races with
    the master's _status(), which iterates the task table the caller's threads
    change (submit, wait).
    """

    def __init__(self, q: WorkQueue) -> None:
        self.q, self.latencies, self.failed = q, [], ""
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(STATS_EVERY):
            try:
                self.latencies.append(timed_stats(self.q)[1])
            except queue.Empty:
                self.failed = "q.stats() got no answer in 10 s"
                return

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=15)


def dispatch_phase(q: WorkQueue, n: int, measure: int, full: bool, profile: bool,
                   stats_thread: bool, limit: float) -> tuple[list[object], dict]:
    """With q's tasks queued, connect n workers; time `measure` completions after the last joined."""
    total = q.stats()["submitted"]
    sim = Simulator(q, n, deadline=limit + 300)
    try:
        return _dispatch_measure(q, sim, n, total, measure, full, profile, stats_thread, limit)
    finally:
        if isinstance(q, ProfiledQueue):
            q.profiling = False
        q.close()
        counts = sim.stop()
        log(f"  simulator: {counts}")


def _dispatch_measure(q: WorkQueue, sim: Simulator, n: int, total: int, measure: int,
                      full: bool, profile: bool, stats_thread: bool,
                      limit: float) -> tuple[list[object], dict]:
    joined_from = time.perf_counter()
    text = sim.line(timeout=120)
    if text != "ready":
        raise SystemExit(f"the simulator did not get {n} workers in: {text!r}")
    while True:  # the master counts them all
        s, _ = timed_stats(q)
        if s["workers"] >= n:
            break
        if time.perf_counter() - joined_from > 120:
            raise SystemExit(f"the master shows {s['workers']} of {n} workers")
        time.sleep(0.02)
    t0 = time.perf_counter()
    join_s = t0 - joined_from
    done0 = s["done"]  # read at the end of the master's _status(): just before t0
    target = total if full else min(total, done0 + measure)
    io_thread = q._thread  # the master's I/O thread: its CPU time, and whether it still runs
    io0, sim0 = thread_cpu(io_thread.native_id), sim.cpu()
    if isinstance(q, ProfiledQueue) and profile:
        q.profiling = True
    probe = StatsProbe(q) if stats_thread else None
    latencies: list[float] = [] if probe is None else probe.latencies
    received = failed = 0
    died = ""
    next_probe = t0 + STATS_EVERY
    end_by = t0 + limit
    while received < target:
        task = q.wait(timeout=max(0.1, min(2.0, end_by - time.perf_counter())))
        now = time.perf_counter()
        if task is not None:
            received += 1
            failed += not task.ok
        elif not io_thread.is_alive():
            died = "the master's I/O thread died"
            break
        elif now >= end_by:
            log(f"  time limit: {received - done0} of {target - done0} measured tasks back")
            break
        if probe is None and now >= next_probe:
            # From the waiting thread itself: then no caller's thread changes the task
            # table while the master's _status() walks it (see StatsProbe).
            latencies.append(timed_stats(q)[1])
            next_probe = time.perf_counter() + STATS_EVERY
    t1 = time.perf_counter()
    io1, sim1 = thread_cpu(io_thread.native_id), sim.cpu()
    if probe is not None:
        probe.close()
        died = died or probe.failed
    if isinstance(q, ProfiledQueue):
        q.profiling = False
    if not died:
        s, last = timed_stats(q)
        latencies.append(last)
    else:
        log(f"  FAILED: {died}")
    measured = max(0, received - done0)
    seconds = t1 - t0
    rate = measured / seconds if seconds > 0 else 0.0
    med = statistics.median(latencies) * 1e3 if latencies else float("nan")
    worst = max(latencies) * 1e3 if latencies else float("nan")
    row = [n, total, measured, seconds, round(rate), join_s, med, worst,
           f"{100 * (io1 - io0) / seconds:.0f}%", f"{100 * (sim1 - sim0) / seconds:.0f}%",
           failed, s["workers_lost"], "DIED" if died else "ok"]
    out = {"rate": rate, "stats_ms_median": med, "stats_ms_max": worst,
           "lost": s["workers_lost"], "failed": failed, "died": bool(died)}
    return row, out


def fresh_queue(tasks: int, profiled: bool) -> WorkQueue:
    q = (ProfiledQueue if profiled else WorkQueue)(port=0, host=HOST)
    submit_many(q, tasks)
    wait_submitted(q, tasks, timeout=300)
    return q


def print_profile(q: WorkQueue) -> None:
    prof = getattr(q, "profile", None) or getattr(q, "_running", None)
    if prof is None:
        return
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(22)
    print("\n# cProfile of the master's I/O thread over the measured window, by own time "
          "(cProfile's overhead inflates small calls: compare with py-spy)")
    print("\n".join(line for line in text.getvalue().splitlines()[4:] if line.strip()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=1_000_000, help="tasks queued in each run")
    p.add_argument("--measure", type=int, default=100_000,
                   help="completions timed after the last worker joined")
    p.add_argument("--workers", type=int, nargs="+", default=[10, 100, 1000])
    p.add_argument("--full", action="store_true", help="time every task, not only --measure")
    p.add_argument("--quick", action="store_true", help="100k tasks; 10 and 100 workers")
    p.add_argument("--profile", action="store_true",
                   help="cProfile the I/O thread in the run with the most workers")
    p.add_argument("--stats-thread", action="store_true",
                   help="ask q.stats() from a second thread (a monitor) while this one waits")
    p.add_argument("--limit", type=float, default=900.0,
                   help="seconds allowed for one run's measured window")
    p.add_argument("--sim", type=int, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--sim-deadline", type=float, default=600.0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.sim is not None:
        simulate(args.port, args.sim, args.sim_deadline)
        return
    if args.quick:
        args.tasks, args.measure, args.workers = 100_000, 20_000, [10, 100]
    sizes = sorted({max(1, args.tasks // 10), max(1, args.tasks // 2), args.tasks})
    workers = sorted(set(args.workers), reverse=True)  # the largest reuses the memory queue
    raise_nofile(max(workers) + 256, "master")
    print_machine()
    print(f"# tasks queued: {args.tasks}; timed completions per run: "
          f"{'all' if args.full else args.measure}; workers: {sorted(workers)}")
    started = time.perf_counter()

    log("memory: queueing tasks with no worker connected")
    q, mem_rows, mem = memory_phase(sizes)
    print(table(["queued", "rss_MiB", "delta_MiB", "MiB/100k", "submit_s", "submits/s",
                 "drain_ms", "stats_ms"], mem_rows))
    print("# delta: RSS growth of the master's process since the empty queue; drain: until "
          "the I/O thread took them all; stats_ms: one q.stats() with no worker")
    if args.profile:  # the memory queue is a plain WorkQueue: profile a fresh one instead
        q.close()
        del q
        gc.collect()
        q = fresh_queue(args.tasks, profiled=True)

    rows, rates = [], {}
    for i, n in enumerate(workers):
        if i > 0:
            del q
            gc.collect()
            log(f"queueing {args.tasks} tasks for the next run")
            q = fresh_queue(args.tasks, profiled=False)
        log(f"dispatch: {n} workers, {args.tasks} tasks queued")
        row, out = dispatch_phase(q, n, args.measure, args.full, args.profile and i == 0,
                                  args.stats_thread, args.limit)
        log(f"  {out['rate']:.0f} tasks/s; stats() median {out['stats_ms_median']:.1f} ms, "
            f"max {out['stats_ms_max']:.1f} ms")
        rows.append(row)
        rates[n] = out
        if args.profile and i == 0:
            print_profile(q)
    print()
    print(table(["workers", "queued", "measured", "seconds", "tasks/s", "join_s",
                 "stats_ms_med", "stats_ms_max", "io_cpu", "sim_cpu", "failed", "lost",
                 "master"],
                sorted(rows)))
    asker = "a second thread" if args.stats_thread else "the waiting thread"
    print("# tasks/s: results back through q.wait() after the last worker joined; stats_ms: "
          f"q.stats() asked from {asker} once a second; io_cpu / sim_cpu: CPU share of the "
          "master's I/O thread / the simulator over the window (the machine's other load "
          "included); lost: workers the master dropped")
    elapsed = time.perf_counter() - started
    values: dict[str, object] = {"tasks": args.tasks, **mem}
    for n in sorted(rates):
        values[f"rate_w{n}"] = rates[n]["rate"]
        values[f"stats_ms_max_w{n}"] = rates[n]["stats_ms_max"]
    values["lost"] = sum(r["lost"] for r in rates.values())
    values["failed"] = sum(r["failed"] for r in rates.values())
    values["died"] = sum(r["died"] for r in rates.values())
    values["seconds"] = elapsed
    print(summary(**values))


if __name__ == "__main__":
    main()
