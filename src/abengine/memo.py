"""Memoised results: a finished task's value, keyed by what determines it.

The key of a task is a digest of F's identity (an executable's content, a
callable's pickled code) and of the content of everything the task reads: its
input files, the rows shipped with it, its arguments. Rerunning a pipeline
after changing one step therefore recomputes only the tasks whose F or inputs
changed; the rest come back from here without being dispatched.

One SQLite file holds the values (pickled, since they are the master's own
results) and the block shapes earlier runs chose, so a rerun cuts the same
blocks and finds them. Least recently used entries go once the store exceeds
its limit (`ABENGINE_MEMO_LIMIT` bytes, 4 GiB by default).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import sqlite3
import time
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np

from .errors import UsageError
from .graph import File, PythonTask

DEFAULT_LIMIT = 4 << 30


def default_directory() -> Path:
    """`$ABENGINE_MEMO_DIR`, else abengine's folder in the user's cache directory."""
    if os.environ.get("ABENGINE_MEMO_DIR"):
        return Path(os.environ["ABENGINE_MEMO_DIR"])
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "abengine" / "memo"


class Memo:
    """Values of finished tasks and block shapes of earlier plans, on disk."""

    def __init__(self, directory: str | Path | None = None, limit: int | None = None) -> None:
        self.directory = Path(directory) if directory else default_directory()
        self.limit = limit if limit is not None else int(
            os.environ.get("ABENGINE_MEMO_LIMIT", DEFAULT_LIMIT))
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.directory / "memo.sqlite3", timeout=60,
                                      isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, "
                            "value BLOB, size INTEGER, used REAL)")
            self.db.execute("CREATE TABLE IF NOT EXISTS plans (key TEXT PRIMARY KEY, value TEXT)")
        except (OSError, sqlite3.Error) as exc:
            raise UsageError(f"memo directory {self.directory}: cannot use it ({exc})") from None
        self._file_digests: dict[str, tuple[int, int, str]] = {}
        self.hits = 0
        self.stored = 0

    # -- keys --------------------------------------------------------------
    def key(self, identity: str, task: PythonTask) -> str:
        """The digest of F's identity, the call and the content of every input file."""
        h = hashlib.sha256(identity.encode() + b"\0")
        h.update(getattr(task.fn, "__qualname__", repr(task.fn)).encode() + b"\0")
        _feed(h, task.args)
        for f in sorted(task.inputs, key=lambda f: f.remote):
            h.update(f.remote.encode() + b"\0" + self.file_digest(f).encode())
        return h.hexdigest()

    def file_digest(self, f: File) -> str:
        """A file's content digest, read once per run unless the file changes."""
        st = f.local.stat()
        known = self._file_digests.get(str(f.local))
        if known and known[:2] == (st.st_size, st.st_mtime_ns):
            return known[2]
        h = hashlib.sha256()
        with open(f.local, "rb") as stream:
            while chunk := stream.read(1 << 20):
                h.update(chunk)
        digest = h.hexdigest()
        self._file_digests[str(f.local)] = (st.st_size, st.st_mtime_ns, digest)
        return digest

    # -- values --------------------------------------------------------------
    def get(self, key: str) -> tuple[bool, Any]:
        """(True, value) when `key` was stored, else (False, None)."""
        row = self.db.execute("SELECT value FROM results WHERE key = ?", (key,)).fetchone()
        if row is None:
            return False, None
        self.db.execute("UPDATE results SET used = ? WHERE key = ?", (time.time(), key))
        self.hits += 1
        return True, pickle.loads(row[0])

    def put(self, key: str, value: Any) -> None:
        blob = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        if len(blob) > self.limit:
            return
        self.db.execute("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?)",
                        (key, blob, len(blob), time.time()))
        self.stored += 1

    def plan(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM plans WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_plan(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO plans VALUES (?, ?)", (key, value))

    def trim(self) -> None:
        """Forget the least recently used values until the store fits its limit."""
        total = self.db.execute("SELECT COALESCE(SUM(size), 0) FROM results").fetchone()[0]
        if total <= self.limit:
            return
        for key, size in self.db.execute(
                "SELECT key, size FROM results ORDER BY used").fetchall():
            self.db.execute("DELETE FROM results WHERE key = ?", (key,))
            total -= size
            if total <= self.limit:
                break

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.trim()
            self.db.close()


def _feed(h: Any, obj: Any) -> None:
    """Hash `obj` by content: arrays by their bytes, containers item by item."""
    if isinstance(obj, np.ndarray):
        h.update(f"nd{obj.dtype.str}{obj.shape}".encode())
        if obj.dtype == object:
            h.update(cloudpickle.dumps(obj.tolist()))
        else:
            h.update(np.ascontiguousarray(obj).data)
    elif isinstance(obj, (bytes, bytearray)):
        h.update(b"b%d:" % len(obj) + bytes(obj))
    elif isinstance(obj, (list, tuple)):
        h.update(b"(%d" % len(obj))
        for item in obj:
            _feed(h, item)
        h.update(b")")
    elif isinstance(obj, dict):
        _feed(h, sorted(obj.items(), key=lambda kv: repr(kv[0])))
    elif obj is None or isinstance(obj, (str, int, float, bool, np.generic)):
        h.update(f"{type(obj).__name__}:{obj!r}\0".encode())
    elif hasattr(obj, "__dataclass_fields__"):
        h.update(type(obj).__qualname__.encode())
        _feed(h, [getattr(obj, name) for name in obj.__dataclass_fields__])
    else:
        h.update(cloudpickle.dumps(obj))
