"""`abengine status HOST PORT`: workers, tasks and rates of a running master.

The master answers on its I/O thread between two events, so the reply comes
promptly even while it is busy dispatching.
"""

from __future__ import annotations

import argparse
import socket
import ssl
import sys
from pathlib import Path

from .auth import load_secret
from .protocol import (
    NEED_DATA,
    BadAuth,
    Challenge,
    Connection,
    Hello,
    ProtocolError,
    Refused,
    Role,
    StatusReply,
    StatusRequest,
    Welcome,
)
from .tls import client_context


def query(host: str, port: int, secret: bytes, timeout: float = 10.0,
          tls: ssl.SSLContext | None = None) -> dict:
    """The master's status fields; raises OSError, PermissionError or ProtocolError."""
    conn = Connection(Role.WORKER, secret)
    with socket.create_connection((host, port), timeout=timeout) as plain, \
            (tls.wrap_socket(plain, server_hostname=host) if tls else plain) as sock:

        def next_event() -> object:
            while True:
                event = conn.next_event()
                if event is not NEED_DATA:
                    return event
                data = sock.recv(65536)
                conn.receive_data(data)

        if not isinstance(next_event(), Challenge):
            raise ProtocolError("the master did not send a challenge")
        sock.sendall(conn.send(Hello(role="status", cores=0, memory=0, disk=0,
                                     name=socket.gethostname(), pid=0, cached=[])))
        answer = next_event()
        if isinstance(answer, (Refused, BadAuth)):
            raise PermissionError(getattr(answer, "reason", "the master's proof was wrong"))
        if not isinstance(answer, Welcome):
            raise ProtocolError(f"expected welcome, got {type(answer).__name__}")
        sock.sendall(conn.send(StatusRequest()))
        reply = next_event()
        if not isinstance(reply, StatusReply):
            raise ProtocolError(f"expected a status reply, got {type(reply).__name__}")
        return dict(reply.fields)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="abengine status",
                                description="Workers and tasks of the master at HOST:PORT.")
    p.add_argument("host", metavar="HOST")
    p.add_argument("port", metavar="PORT", type=int)
    p.add_argument("--password-file", metavar="FILE", required=True,
                   help="file holding the master's secret")
    p.add_argument("--tls", action="store_true", help="the master speaks TLS")
    p.add_argument("--tls-ca", metavar="FILE",
                   help="trust the CA certificates in FILE for the master's TLS certificate "
                        "(implies --tls)")
    args = p.parse_args(argv)
    try:
        tls = client_context(args.tls_ca) if args.tls or args.tls_ca else None
        fields = query(args.host, args.port, load_secret(Path(args.password_file)), tls=tls)
    except (OSError, ValueError, PermissionError, ProtocolError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        print(f"abengine status: error: {args.host}:{args.port}: {why}", file=sys.stderr)
        return 2
    width = max(len(k) for k in fields)
    for key, value in fields.items():
        print(f"{key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
