"""Optional TLS for Work Queue connections: contexts, and a socket a worker's threads can share.

The HMAC handshake already proves both ends hold the secret; TLS adds
privacy and integrity for what follows (commands, files, outputs). The
worker verifies the master's certificate and host name like any TLS client,
so a man in the middle cannot terminate TLS and relay the handshake.

Standard library only: the single-file worker carries this module.
"""

from __future__ import annotations

import socket
import ssl
import threading

READ_SIZE = 1 << 16


def server_context(cert: str, key: str | None = None) -> ssl.SSLContext:
    """The master's context: its certificate chain and key (PEM files)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


def client_context(ca_file: str | None = None) -> ssl.SSLContext:
    """A worker's context: the master's certificate must chain to `ca_file` (default: the
    system's CAs) and name the host the worker connects to."""
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class TlsSocket:
    """TLS over a blocking socket, read by one thread while others write.

    One `SSLSocket` must not be read and written from two threads at once (it
    is one OpenSSL object). Here the TLS state is a memory-BIO `SSLObject`
    touched only under `_state`, while the socket I/O happens outside it, and
    encrypted bytes are sent in the order they were made (under `_sending`,
    always taken before `_state`).
    """

    def __init__(self, sock: socket.socket, ctx: ssl.SSLContext, server_hostname: str) -> None:
        self.sock = sock
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = ctx.wrap_bio(self._in, self._out, server_hostname=server_hostname)
        self._state = threading.Lock()
        self._sending = threading.Lock()
        self._handshake()

    def _handshake(self) -> None:
        while True:
            try:
                self._tls.do_handshake()
            except ssl.SSLWantReadError:
                self._flush()
                self._feed()
                continue
            self._flush()
            return

    def _feed(self) -> None:
        """Move bytes from the socket into the TLS state (EOF included)."""
        raw = self.sock.recv(READ_SIZE)
        with self._state:
            if raw:
                self._in.write(raw)
            else:
                self._in.write_eof()

    def _flush(self) -> None:
        with self._sending:
            with self._state:
                out = self._out.read()
            if out:
                self.sock.sendall(out)

    def sendall(self, data: bytes) -> None:
        with self._sending:
            with self._state:
                self._tls.write(data)
                out = self._out.read()
            self.sock.sendall(out)

    def recv(self, size: int) -> bytes:
        """Up to `size` bytes of plaintext; b"" at the end. Raises TimeoutError like a socket."""
        while True:
            with self._state:
                try:
                    data: bytes | None = self._tls.read(size)
                except ssl.SSLWantReadError:
                    data = None
                except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                    data = b""
                replies = self._out.pending  # e.g. an answer to a post-handshake message
            if replies:
                self._flush()
            if data is not None:
                return data
            self._feed()

    def settimeout(self, seconds: float | None) -> None:
        self.sock.settimeout(seconds)

    def shutdown(self, how: int) -> None:
        self.sock.shutdown(how)

    def close(self) -> None:
        self.sock.close()
