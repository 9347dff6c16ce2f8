"""Workers on hosts reached over SSH (paramiko), N workers over M hosts round-robin.

Each host gets a private directory (mktemp -d, mode 700) holding the secret
file (0600, sent over SFTP), the job script, the workers' logs and caches,
and the single-file worker when the host's python cannot import the same
abengine. A worker runs detached in a session of its own (setsid nohup), so
its process group can be killed whole; its job id is `HOST/PID`. Host keys
are checked against known_hosts and an unknown host is refused, as OpenSSH
does by default.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from ... import __version__
from ...errors import UsageError
from ..bundle import worker_source
from .base import RUNNING, WORKER_MODULE, Batch, user_name

BUNDLE = "abengine_worker.py"
#: Shell test: process $p is alive (a zombie, exited but not yet reaped, is not).
ALIVE = "ps -o stat= -p $p 2>/dev/null | grep -q '^[^Z]'"
CONNECT_TIMEOUT = 10.0
# paramiko logs failures it also raises; without a handler Python would print them.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

PROBE = """import sys
print("%d.%d" % sys.version_info[:2])
try:
    import abengine
    print(abengine.__version__)
except Exception:
    print("-")
"""


@dataclass
class Host:
    """Where to log in: `[user@]host[:port]`, completed from ~/.ssh/config."""

    spec: str
    hostname: str
    port: int = 22
    user: str = ""
    identities: list[str] = field(default_factory=list)


@dataclass
class Remote:
    """One connected host: its client, private directory and how a worker starts there."""

    host: Host
    client: paramiko.SSHClient
    directory: str = ""
    launcher: list[str] = field(default_factory=list)
    address: str = ""
    env: dict[str, str] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict)  # pid -> log file name


class SSHBatch(Batch):
    """Starts workers on SSH hosts and removes them (and every file it put there)."""

    name = "ssh"
    poll_interval = 2.0

    def __init__(self, address: str | None, port: int, secret: bytes, *,
                 hosts: Sequence[str] = (), ssh_key: str | None = None,
                 known_hosts: str | None = None, python: str | None = None,
                 **settings) -> None:
        self.host_specs = [h.strip() for h in hosts if h.strip()]
        self.ssh_key, self.known_hosts = ssh_key, known_hosts
        # The interpreters to try on each host: the user's; else ours (the same path works
        # where hosts share a file system, as cluster nodes do), else the host's python3.
        self.candidates = [python] if python else [sys.executable, "python3"]
        self.explicit_address = address
        self.remotes: dict[str, Remote] = {}
        self.turn = 0
        super().__init__(address, port, secret, python=self.candidates[-1], **settings)

    # -- before anything is made ------------------------------------------------------
    def check(self) -> None:
        if not self.host_specs:
            raise UsageError("--batch ssh needs --hosts HOST1,HOST2,... ([user@]host[:port])")
        for path, option in ((self.ssh_key, "--ssh-key"), (self.known_hosts, "--ssh-known-hosts")):
            if path is not None and not os.access(Path(path).expanduser(), os.R_OK):
                raise UsageError(f"{option} {path}: no such readable file")
        config = ssh_config()
        self.hosts = {spec: parse_host(spec, config) for spec in self.host_specs}

    def setup(self) -> None:
        for host in self.hosts.values():
            self.prepare(host, self.connect(host))
        if not self.explicit_address:
            self.address = next(iter(self.remotes.values())).address

    def connect(self, host: Host) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        system = Path("/etc/ssh/ssh_known_hosts")
        if system.is_file():
            client.get_host_keys().load(str(system))
        user_file = Path(self.known_hosts or "~/.ssh/known_hosts").expanduser()
        if user_file.is_file():
            client.get_host_keys().load(str(user_file))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        keys = [str(Path(self.ssh_key).expanduser())] if self.ssh_key else host.identities
        try:
            client.connect(host.hostname, host.port, username=host.user,
                           key_filename=keys or None, allow_agent=not self.ssh_key,
                           look_for_keys=not self.ssh_key, timeout=CONNECT_TIMEOUT,
                           banner_timeout=CONNECT_TIMEOUT, auth_timeout=CONNECT_TIMEOUT)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            client.close()
            raise self.refusal(host, exc, user_file) from None
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(30)
        return client

    def refusal(self, host: Host, exc: Exception, known_hosts: Path) -> UsageError:
        """One line saying why `host` could not be logged into, and what to do."""
        where = f"ssh {host.spec}"
        if isinstance(exc, paramiko.PasswordRequiredException):
            return UsageError(f"{where}: the key is encrypted: load it into ssh-agent instead "
                              "of giving --ssh-key")
        if isinstance(exc, paramiko.BadHostKeyException):
            return UsageError(f"{where}: the host key of {host.hostname} differs from the one "
                              "in known_hosts: refusing to connect (if it was changed on "
                              "purpose, remove the old entry with ssh-keygen -R)")
        if isinstance(exc, paramiko.AuthenticationException):
            tried = f"the key {self.ssh_key}" if self.ssh_key else "the agent's and ~/.ssh keys"
            return UsageError(f"{where}: {host.user}@{host.hostname}:{host.port} refused "
                              f"{tried} (publickey authentication failed)")
        if isinstance(exc, paramiko.SSHException):
            if "not found in known_hosts" not in str(exc):
                return UsageError(f"{where}: {exc}")
            target = host.hostname if host.port == 22 else f"-p {host.port} {host.hostname}"
            return UsageError(f"{where}: unknown host key (not in {known_hosts}): check the "
                              "host's key fingerprint, then add it with: "
                              f"ssh-keyscan {target} >> {known_hosts}")
        if isinstance(exc, socket.gaierror):
            return UsageError(f"{where}: cannot resolve {host.hostname}: {exc.strerror}")
        why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
            why = "connection refused"
        return UsageError(f"{where}: cannot reach {host.hostname} port {host.port}: {why}")

    def prepare(self, host: Host, client: paramiko.SSHClient) -> Remote:
        """Make the host's private directory, choose how to start workers, send the files."""
        remote = Remote(host, client)
        sock = client.get_transport().sock  # type: ignore[union-attr]
        # The address this host reached us from is the one its workers can use.
        remote.address = sock.getsockname()[0] if hasattr(sock, "getsockname") else self.address
        code, out, err = run(client, 'mktemp -d "${TMPDIR:-/tmp}/abengine-ssh-XXXXXXXX"')
        if code != 0 or not out.strip():
            client.close()
            raise UsageError(f"ssh {host.spec}: cannot make a private directory: {err.strip()}")
        remote.directory = out.strip()
        self.remotes[host.spec] = remote  # from here on, close() removes what is there
        python, has_abengine = self.choose_python(host, client)
        with client.open_sftp() as sftp:
            self.put(sftp, f"{remote.directory}/secret", self.secret_file.read_bytes(), 0o600)
            if self.tls_ca_file is not None:
                self.put(sftp, f"{remote.directory}/tls-ca.pem", self.tls_ca_file.read_bytes(),
                         0o600)
            if has_abengine:
                remote.launcher = [python, "-m", WORKER_MODULE]
                remote.env = {"ABENGINE_PYTHON": python}
            else:  # no abengine there, or another version: ship the single-file worker
                bundle = f"{remote.directory}/{BUNDLE}"
                self.put(sftp, bundle, worker_source().encode(), 0o700)
                remote.launcher = [python, "-I", "-S", bundle]
            script = self.job_script(env=remote.env, **self.worker_overrides(remote))
            self.put(sftp, f"{remote.directory}/worker.sh", script.encode(), 0o700)
        return remote

    def choose_python(self, host: Host, client: paramiko.SSHClient) -> tuple[str, bool]:
        """The first candidate with this abengine, else the first Python >= 3.10 there."""
        usable, why = None, ""
        for python in self.candidates:
            code, out, err = run(client, f"{shlex.quote(python)} -c {shlex.quote(PROBE)}")
            version, _, theirs = out.strip().partition("\n")
            if code != 0 or not re.fullmatch(r"\d+\.\d+", version):
                why = why or f"cannot run {python}: {(err.strip() or out.strip())[-200:]}"
            elif tuple(map(int, version.split("."))) < (3, 10):
                why = why or f"{python} is Python {version}; workers need 3.10 or later"
            elif theirs.strip() == __version__:
                return python, True
            else:
                usable = usable or python
        if usable is None:
            raise UsageError(f"ssh {host.spec}: {why} (give --worker-python)")
        return usable, False

    def worker_overrides(self, remote: Remote) -> dict:
        return {"address": self.explicit_address or remote.address, "launcher": remote.launcher,
                "password_file": f"{remote.directory}/secret", "workdir": remote.directory,
                "tls_ca": f"{remote.directory}/tls-ca.pem"}

    @staticmethod
    def put(sftp: paramiko.SFTPClient, path: str, data: bytes, mode: int) -> None:
        with sftp.open(path, "wb") as f:
            f.chmod(mode)  # before the data goes in
            f.write(data)

    # -- jobs ---------------------------------------------------------------------------
    def write_script(self) -> Path:
        # Each host has its own (written by prepare); this local copy shows the first one's.
        first = next(iter(self.remotes.values()))
        self.script_file.write_text(self.job_script(env=first.env, **self.worker_overrides(first)))
        return self.script_file

    def submit_argv(self, script: Path | str) -> list[str]:
        first = next(iter(self.remotes.values()))
        h = first.host
        return ["ssh", "-p", str(h.port), f"{h.user}@{h.hostname}",
                f"cd {first.directory}; setsid nohup sh worker.sh > worker-N.log 2>&1 &"]

    def submit(self, script: Path) -> str:
        spec = self.host_specs[self.turn % len(self.host_specs)]
        self.turn += 1
        remote = self.remotes[spec]
        log = f"worker-{self.turn}.log"
        d = shlex.quote(remote.directory)
        # Only the worker goes to the background (so $! is its pid and the shell returns);
        # setsid makes that pid its process group too.
        code, out, err = run(remote.client, f"cd {d} || exit 1; setsid nohup sh worker.sh "
                                            f"> {log} 2>&1 < /dev/null & echo $!")
        pid = out.strip()
        if code != 0 or not pid.isdigit():
            raise UsageError(f"ssh {spec}: cannot start a worker: {(err or out).strip()}")
        remote.logs[pid] = log
        return f"{spec}/{pid}"

    def status(self, job_ids: Sequence[str]) -> dict[str, str]:
        alive: dict[str, str] = {}
        for remote, pids in self.by_host(job_ids):
            code, out, _ = run(remote.client, f"for p in {' '.join(pids)}; do {ALIVE} && "
                                              "echo $p; done; true")
            if code != 0:  # the host is unreachable: say nothing is gone rather than guess
                alive.update({f"{remote.host.spec}/{p}": RUNNING for p in pids})
                continue
            alive.update({f"{remote.host.spec}/{p}": RUNNING for p in out.split()})
        return alive

    def cancel(self, job_ids: Sequence[str]) -> None:
        for remote, pids in self.by_host(job_ids):
            ps = " ".join(pids)
            # TERM to each worker's group (it kills its tasks and cleans up), up to 5 s, KILL.
            run(remote.client,
                f"for p in {ps}; do kill -TERM -- -$p 2>/dev/null || kill -TERM $p 2>/dev/null; "
                f"done; i=0; while [ $i -lt 50 ]; do a=; for p in {ps}; do "
                f"{ALIVE} && a=1; done; [ -z \"$a\" ] && break; sleep 0.1; "
                f"i=$((i+1)); done; for p in {ps}; do kill -KILL -- -$p 2>/dev/null; done; true")

    def by_host(self, job_ids: Sequence[str]) -> list[tuple[Remote, list[str]]]:
        groups: dict[str, list[str]] = {}
        for job in job_ids:
            spec, _, pid = job.rpartition("/")
            if spec in self.remotes and pid.isdigit():
                groups.setdefault(spec, []).append(pid)
        return [(self.remotes[spec], pids) for spec, pids in groups.items()]

    def removal_hint(self, job_ids: Sequence[str]) -> str:
        hints = []
        for remote, pids in self.by_host(job_ids):
            h = remote.host
            kills = "; ".join(f"kill -TERM -- -{p}" for p in pids)
            hints.append(f"ssh -p {h.port} {h.user}@{h.hostname} "
                         f"{shlex.quote(kills + '; rm -rf ' + remote.directory)}")
        return " && ".join(hints)

    # -- logs and clean-up --------------------------------------------------------------
    def log_tail(self, job_id: str, lines: int = 15) -> str:
        spec, _, pid = job_id.rpartition("/")
        remote = self.remotes.get(spec)
        if remote is None or pid not in remote.logs:
            return ""
        try:
            with remote.client.open_sftp() as sftp, \
                    sftp.open(f"{remote.directory}/{remote.logs[pid]}") as f:
                text = f.read().decode("utf-8", "replace")
        except (OSError, paramiko.SSHException):
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def log_path(self, job_id: str) -> Path:
        spec, _, pid = job_id.rpartition("/")
        remote = self.remotes.get(spec)
        name = remote.logs.get(pid, "worker.log") if remote else "worker.log"
        return Path(f"{spec}:{remote.directory if remote else '?'}/{name}")

    def close(self) -> None:
        """Remove each host's directory (after copying its logs here when they are kept)."""
        for remote in self.remotes.values():
            with contextlib.suppress(OSError, paramiko.SSHException, EOFError):
                if self.keep:
                    self.fetch_logs(remote)
                if remote.directory:
                    # Also any worker whose pid never came back: its command line names the
                    # directory (the [/] keeps this command's own line from matching).
                    # And whatever a task left running: its working directory is in there.
                    # (Two commands: the second one's line names the directory itself.)
                    d = remote.directory
                    run(remote.client, f"pkill -KILL -f -- {shlex.quote('[/]' + d[1:])}")
                    run(remote.client, f"for p in /proc/[0-9]*; do case $(readlink $p/cwd "
                                       f"2>/dev/null) in {shlex.quote(d)}|{shlex.quote(d)}/*) "
                                       f"kill -KILL ${{p#/proc/}};; esac; done 2>/dev/null; "
                                       f"rm -rf {shlex.quote(d)}")
            remote.client.close()
        self.remotes.clear()
        super().close()

    def fetch_logs(self, remote: Remote) -> None:
        safe = re.sub(r"[^\w.@-]", "_", remote.host.spec)
        with remote.client.open_sftp() as sftp:
            for pid, log in remote.logs.items():
                with contextlib.suppress(OSError):
                    sftp.get(f"{remote.directory}/{log}", str(self.run_dir / f"{safe}-{pid}.log"))


def run(client: paramiko.SSHClient, command: str, timeout: float = 60.0) -> tuple[int, str, str]:
    """Run a command on the host: (exit status, stdout, stderr)."""
    try:
        _, stdout, stderr = client.exec_command(command, timeout=timeout)
        out = stdout.read().decode("utf-8", "replace")
        err = stderr.read().decode("utf-8", "replace")
        return stdout.channel.recv_exit_status(), out, err
    except (OSError, paramiko.SSHException, EOFError) as exc:
        return 255, "", str(exc) or type(exc).__name__


def ssh_config() -> paramiko.SSHConfig:
    path = Path("~/.ssh/config").expanduser()
    try:
        return paramiko.SSHConfig.from_path(str(path)) if path.is_file() else paramiko.SSHConfig()
    except OSError:
        return paramiko.SSHConfig()


def parse_host(spec: str, config: paramiko.SSHConfig | None = None) -> Host:
    """`[user@]host[:port]` (an IPv6 address in brackets), completed from ~/.ssh/config."""
    m = re.fullmatch(r"(?:([^@\s]+)@)?(\[[0-9A-Fa-f:.]+\]|[^@:\s\[\]]+)(?::(\d+))?", spec)
    if m is None:
        raise UsageError(f"--hosts {spec!r}: give [user@]host[:port]")
    user, name, port = m[1], m[2].strip("[]"), m[3]
    found = (config or paramiko.SSHConfig()).lookup(name)
    number = int(port or found.get("port", 22))
    if not 0 < number < 65536:
        raise UsageError(f"--hosts {spec!r}: port {number} is not in 1..65535")
    identities = [os.path.expanduser(p) for p in found.get("identityfile", [])
                  if os.path.exists(os.path.expanduser(p))]
    return Host(spec=spec, hostname=found.get("hostname", name), port=number,
                user=user or found.get("user") or user_name(), identities=identities)
