"""Mutual HMAC-SHA256 challenge-response on a shared secret.

Each side sends a fresh random nonce and proves it holds the secret by
returning an HMAC over both nonces; the secret itself never crosses the wire.
The two directions use different labels, so a proof made by one side can never
be reflected back as the other side's proof.

Standard library only: the single-file worker ships this module as it is.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

#: Label of the proof the connecting side (a worker or a status client) sends.
WORKER_LABEL = b"abengine-worker"
#: Label of the proof the master sends back.
MASTER_LABEL = b"abengine-master"


def new_secret() -> bytes:
    """32 random bytes; store them hex-encoded, since a password file loses a trailing newline."""
    return secrets.token_bytes(32)


def new_nonce() -> str:
    """A fresh challenge: 32 random bytes as 64 lowercase hex characters."""
    return secrets.token_hex(32)


def proof(secret: bytes, label: bytes, *nonces: str) -> str:
    """Hex HMAC-SHA256 of `label NUL nonce1 NUL nonce2 ...` keyed with `secret`."""
    message = label + b"\0" + b"\0".join(nonce.encode() for nonce in nonces)
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def check(secret: bytes, label: bytes, expected_hex: str, *nonces: str) -> bool:
    """Whether `expected_hex` is the proof for these nonces, compared in constant time."""
    if not isinstance(expected_hex, str) or not expected_hex.isascii():
        return False  # compare_digest refuses non-ASCII text; such a proof is wrong anyway
    return hmac.compare_digest(proof(secret, label, *nonces), expected_hex)


def load_secret(path: str | os.PathLike[str]) -> bytes:
    """The secret held in a password file: its bytes without the trailing newline(s).

    An empty file is refused: an empty key would let anyone who guesses that
    the file is empty authenticate.
    """
    with open(path, "rb") as f:
        secret = f.read().rstrip(b"\r\n")
    if not secret:
        raise ValueError(f"password file {os.fspath(path)!s} is empty")
    return secret
