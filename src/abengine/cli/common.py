"""What every command shares: engine options, and turning errors into exit statuses.

A user's mistake is one line on stderr and exit status 2; failed tasks are
listed (what failed and why) with exit status 1; Ctrl-C keeps what finished.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from ..engines import Engine, make_engine
from ..engines.base import DISTRIBUTE_MODES
from ..errors import TaskFailures, UsageError
from ..models.common import Prediction
from ..models.plot import plot_predictions
from ..workqueue.batch import SYSTEMS, parse_duration, parse_memory

EXIT_INTERRUPTED = 130


#: Options whose value may itself start with a dash (a scheduler's own options).
DASHED_VALUES = ("--batch-options",)


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line, like every other error here."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        # `--batch-options "--partition=x"`: argparse would take the value for an option.
        args = list(sys.argv[1:] if args is None else args)
        glued: list[str] = []
        words = iter(args)
        for word in words:
            if word in DASHED_VALUES:
                value = next(words, None)
                glued.append(word if value is None else f"{word}={value}")
            else:
                glued.append(word)
        return super().parse_known_args(glued, namespace)


def add_engine_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("engine")
    g.add_argument("--engine", default="local", choices=["local", "workqueue"],
                   help="where tasks run: local (all cores of this machine, the default) or "
                        "workqueue (a master that workers connect to)")
    g.add_argument("--cores", type=int, metavar="N",
                   help="cores to use (local: default all; workqueue: cores per worker)")
    g.add_argument("--workers", type=int, metavar="N",
                   help="workqueue: start N workers (see --batch), keep N while tasks remain, "
                        "and remove them at the end")
    g.add_argument("--port", type=int, metavar="P",
                   help="workqueue: listen on port P (default: any free port); without "
                        "--workers, print the command that starts workers by hand")
    g.add_argument("--retries", type=int, default=2, metavar="N",
                   help="extra attempts for a task that fails (default: 2)")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    w = p.add_argument_group("workers (with --engine workqueue --workers N)")
    w.add_argument("--batch", metavar="TYPE",
                   help=f"where the workers run: {', '.join(SYSTEMS)} (default: local, "
                        "processes of this machine)")
    add_worker_options(w)
    w.add_argument("--master-address", metavar="HOST",
                   help="the address workers connect to (default: this machine's address as "
                        "seen from ssh hosts, else its host name's; 127.0.0.1 for local)")
    g.add_argument("--tls-cert", metavar="PEM",
                   help="workqueue: speak TLS with this certificate (and key, unless --tls-key); "
                        "workers check it against the same file")
    g.add_argument("--tls-key", metavar="PEM", help="workqueue: the certificate's private key")
    g.add_argument("--distribute", choices=DISTRIBUTE_MODES,
                   help="workqueue: spread the shared inputs (the sets, F) to every worker by "
                        "spanning tree before the tasks need them (tree), let the master send "
                        "each worker what its tasks use (direct), or let the model choose "
                        "(auto, the default)")
    w.add_argument("--connect-timeout", type=_duration, default=60.0, metavar="S",
                   help="give up when no worker connected S seconds after its job started "
                        "(default: 60; jobs still queued are waited for)")


def add_worker_options(g: argparse._ArgumentGroup) -> None:
    """The options of workers started by a batch system (engine and submit-workers)."""
    g.add_argument("--hosts", metavar="H1,H2,...",
                   help="ssh: the hosts, [user@]host[:port], workers spread round-robin")
    g.add_argument("--batch-options", metavar="OPTS", default="",
                   help="options passed verbatim to the scheduler's submit command (sbatch, "
                        "qsub, condor_submit), e.g. \"-p short -A proj\" for sbatch")
    g.add_argument("--wall-time", type=_duration, metavar="S",
                   help="the jobs' wall time (seconds, H:M:S or e.g. 90m); workers stop taking "
                        "tasks and leave before it")
    g.add_argument("--memory", type=_memory, metavar="MB",
                   help="memory per worker job (megabytes, or e.g. 4G)")
    g.add_argument("--worker-python", metavar="PATH",
                   help="the workers' interpreter (default: this one; ssh: this path if the "
                        "host has it, else python3; condor: python3)")
    g.add_argument("--ssh-key", metavar="FILE",
                   help="ssh: log in with this key only (default: the agent's and ~/.ssh keys)")
    g.add_argument("--ssh-known-hosts", metavar="FILE",
                   help="ssh: host keys to trust (default: ~/.ssh/known_hosts); unknown hosts "
                        "are refused")
    g.add_argument("--log-dir", metavar="DIR",
                   help="keep the job scripts and worker logs in a new directory under DIR "
                        "(default: a private one under ~/.abengine/runs, removed at the end)")


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _memory(text: str) -> int:
    try:
        return parse_memory(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def worker_settings(args: argparse.Namespace) -> dict:
    """The add_worker_options values as batch settings (ssh ones only for ssh)."""
    settings = {"wall_time": args.wall_time, "memory": args.memory,
                "worker_python": args.worker_python, "log_dir": args.log_dir}
    if args.ssh_key is not None or args.ssh_known_hosts is not None:
        settings.update(ssh_key=args.ssh_key, known_hosts=args.ssh_known_hosts)
    return settings


def split_hosts(text: str | None) -> list[str]:
    return [h.strip() for h in (text or "").split(",") if h.strip()]


def add_function_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-e", "--extra-args", default="", metavar="ARGS",
                   help="extra arguments for an executable F, placed before the file names "
                        "(write -e='-k 3' when they start with a dash)")
    p.add_argument("-f", "--extra-file", action="append", default=[], metavar="FILE",
                   help="an extra input file F needs, placed in its working directory "
                        "(repeatable)")
    add_timing_options(p)
    p.add_argument("-o", "--output", metavar="FILE",
                   help="write the result to FILE (.txt, .npy or .h5) instead of stdout")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run: compute only blocks missing from the .h5 "
                        "output")
    p.add_argument("--memo", nargs="?", const=True, metavar="DIR",
                   help="keep each task's result keyed by F and the content of its inputs, and "
                        "take it from there when a later run asks the same (store: DIR, or "
                        "$ABENGINE_MEMO_DIR, or ~/.cache/abengine/memo)")


def add_timing_options(p: argparse.ArgumentParser, measured: str = "measured") -> None:
    p.add_argument("-t", "--seconds-per-cell", type=float, metavar="S",
                   help=f"estimated seconds per call of F (default: {measured})")
    p.add_argument("--timeout", type=float, metavar="S",
                   help="seconds one call of an executable F may take; a call that takes longer "
                        "is killed (with what it started) and reported as failed")


def show_prediction(prediction: Prediction, plot: Path | None, engine: str,
                    title: str) -> int:
    """What --predict prints (its last line for scripts), and the --plot picture."""
    print("\n".join(prediction.lines()))
    sys.stdout.flush()
    if plot:
        plot_predictions(plot, [(engine, prediction)], title=title)
    return 0


WORKER_OPTIONS = ("batch", "hosts", "batch_options", "wall_time", "memory", "worker_python",
                  "ssh_key", "ssh_known_hosts", "log_dir")


def engine_from(args: argparse.Namespace) -> Engine:
    """The engine the engine options ask for (the caller shuts it down)."""
    given = [f"--{name.replace('_', '-')}" for name in WORKER_OPTIONS if getattr(args, name)]
    if args.engine == "local":
        given += [o for o, v in (("--workers", args.workers), ("--port", args.port),
                                 ("--master-address", args.master_address),
                                 ("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key),
                                 ("--distribute", args.distribute))
                  if v is not None]
        if given:
            raise UsageError(f"{', '.join(given)}: these go with --engine workqueue")
        return make_engine("local", args.cores)
    if given and not args.workers:
        raise UsageError(f"{', '.join(given)}: these go with --workers N (the workers to start)")
    if args.hosts and (args.batch or "local") != "ssh":
        raise UsageError(f"--hosts is for --batch ssh, not --batch {args.batch or 'local'}")
    if args.batch == "ssh" and not split_hosts(args.hosts):
        raise UsageError("--batch ssh needs --hosts HOST1,HOST2,... ([user@]host[:port])")
    if args.tls_key and not args.tls_cert:
        raise UsageError("--tls-key goes with --tls-cert")
    master = {"tls_cert": args.tls_cert, "tls_key": args.tls_key,
              "distribute": args.distribute or "auto"}
    if not args.workers:
        return make_engine("workqueue", args.cores, None, args.port,
                           master_address=args.master_address, **master)
    return make_engine("workqueue", args.cores, args.workers, args.port,
                       batch=args.batch or "local", hosts=split_hosts(args.hosts),
                       batch_options=args.batch_options, master_address=args.master_address,
                       connect_timeout=args.connect_timeout, **master, **worker_settings(args))


def extra_args(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"-e {text!r}: {exc}") from None


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # a batch system's kill at the master's wall time, `kill PID`


def run_command(prog: str, body: Callable[[], int | None]) -> int:
    """Run a command's body and map what it raises to an exit status.

    SIGTERM stops the run like Ctrl-C does, so its workers and their jobs are
    removed and finished results are kept.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)
    try:
        return body() or 0
    except UsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except TaskFailures as exc:
        for failure in exc.failures:
            print(f"{prog}: {failure}", file=sys.stderr)
        kept = f"; the other results are in {exc.result}" if isinstance(exc.result, Path) else ""
        noun = "failure" if len(exc.failures) == 1 else "failures"
        print(f"{prog}: {len(exc.failures)} {noun}{kept}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; finished blocks of an .h5 output are kept for --resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. piped into `head`: not an error of ours
        sys.stderr.close()
        return 0
