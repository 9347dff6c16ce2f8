"""`abengine submit-workers -T TYPE HOST PORT N`: workers for a master started elsewhere.

By default the command stays in the foreground, like CCTools' work_queue_factory:
it keeps N worker jobs while the master has tasks (replacing jobs that end),
and removes every one of them on Ctrl-C or SIGTERM, or when the master is
gone and no worker is left. `--detach` submits, prints how to remove the jobs,
and leaves them to end on their own (idle workers leave after --idle-timeout).
"""

from __future__ import annotations

import argparse
import signal
import ssl
import sys
import time
from pathlib import Path

from ..errors import UsageError
from ..workqueue.auth import load_secret
from ..workqueue.batch import SYSTEMS, make_batch
from ..workqueue.batch.pool import WorkerPool, say
from ..workqueue.status import query
from ..workqueue.tls import client_context
from .common import EXIT_INTERRUPTED, Parser, add_worker_options, run_command, split_hosts

DESCRIPTION = f"""\
Start N workers for the abengine master at HOST:PORT as jobs of a batch system
({', '.join(SYSTEMS)}), keep N while the master has tasks, and remove them all
on Ctrl-C. HOST is the master's address as the workers see it; the password
file holds the master's secret (it is copied into a file only you can read,
never put on a command line).
"""


def build_parser() -> Parser:
    p = Parser(prog="abengine submit-workers", description=DESCRIPTION,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-T", "--batch-type", required=True, metavar="TYPE",
                   help=f"where the workers run: {', '.join(SYSTEMS)}")
    p.add_argument("host", metavar="HOST")
    p.add_argument("port", metavar="PORT", type=int)
    p.add_argument("count", metavar="N", type=int)
    p.add_argument("--cores", type=int, default=1, metavar="C", help="cores per worker")
    p.add_argument("--password-file", metavar="FILE",
                   help="the master's secret (the file its `worker` command line names)")
    p.add_argument("--idle-timeout", type=float, default=900.0, metavar="S",
                   help="a worker leaves after S seconds without work (default: 900)")
    p.add_argument("--tls", action="store_true",
                   help="the master speaks TLS (workers trust the system's CAs)")
    p.add_argument("--tls-ca", metavar="FILE",
                   help="the master speaks TLS with a certificate from this CA (for a "
                        "self-signed master, its certificate); copied to where jobs read it")
    add_worker_options(p.add_argument_group("workers"))
    p.add_argument("--detach", action="store_true",
                   help="submit, print how to remove the jobs, and exit")
    p.add_argument("--dry-run", action="store_true",
                   help="print how a job is submitted and its script; submit nothing")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("abengine submit-workers", lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    if args.count < 1 or not 0 < args.port < 65536 or args.idle_timeout <= 0:
        raise UsageError("N must be at least 1, PORT in 1..65535 and --idle-timeout positive")
    if args.password_file is None and not args.dry_run:
        raise UsageError("--password-file FILE is required: the master's secret")
    try:
        secret = load_secret(Path(args.password_file)) if args.password_file else b"dry-run"
    except (OSError, ValueError) as exc:
        raise UsageError(f"--password-file {args.password_file}: "
                         f"{getattr(exc, 'strerror', None) or exc}") from None
    settings = {"cores": args.cores, "options": args.batch_options,
                "wall_time": args.wall_time, "memory": args.memory,
                "python": args.worker_python, "log_dir": args.log_dir,
                "idle_timeout": args.idle_timeout, "verify": not args.dry_run,
                "tls": args.tls, "tls_ca": args.tls_ca}
    if args.batch_type == "ssh":
        settings.update(hosts=split_hosts(args.hosts), ssh_key=args.ssh_key,
                        known_hosts=args.ssh_known_hosts)
    elif args.hosts or args.ssh_key or args.ssh_known_hosts:
        raise UsageError(f"--hosts, --ssh-key and --ssh-known-hosts are for -T ssh, "
                         f"not -T {args.batch_type}")
    batch = make_batch(args.batch_type, args.host, args.port, secret, **settings)
    if args.dry_run:
        try:
            print(batch.preview(), end="")
        finally:
            batch.close()
        return 0
    tls = client_context(args.tls_ca) if batch.tls else None
    pool = WorkerPool(batch, args.count,
                      lambda: _master_status(args.host, args.port, secret, tls))
    detached = False
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        jobs = pool.start()
        print(f"submitted {len(jobs)} {batch.name} worker job(s): {' '.join(jobs)}", flush=True)
        if args.detach:
            detached = True
            print(f"remove them with: {batch.removal_hint(jobs)}\n"
                  f"(their script, secret and logs are in {batch.run_dir}: remove it once "
                  "they are gone)", flush=True)
            return 0
        say(f"keeping {args.count} workers while {args.host}:{args.port} has tasks; Ctrl-C "
            "removes them")
        return _keep(pool)
    except KeyboardInterrupt:
        say("interrupted: removing the workers")
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)
        if not detached:
            try:
                pool.remove()
            finally:
                batch.close()


def _keep(pool: WorkerPool) -> int:
    """Replace ended jobs while the master has work; end when it is gone and so are they."""
    fatal: list[UsageError] = []
    pool.watch(fatal.append)  # the pool's thread: replacements, a broken set-up
    while not fatal:
        time.sleep(pool.batch.poll_interval)
        if not pool.alive and pool.master_status() is None:
            say("the master is gone and no worker is left")
            return 0
    raise fatal[0]


def _master_status(host: str, port: int, secret: bytes,
                   tls: ssl.SSLContext | None) -> dict | None:
    try:
        return query(host, port, secret, timeout=5, tls=tls)
    except Exception:  # unreachable, closed, or not our master: no demand from it
        return None


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
