"""The worker's content-addressed file cache and the sandboxes tasks run in.

A master sends each input once per worker, named by its sha256: a 100 MB
file shared by a thousand tasks crosses the wire once. Files arrive in
`incoming/`, are hashed as they stream, and only a file whose bytes match
its name is renamed into `files/`, read-only. Each task runs in a fresh
directory under `sandboxes/` with its inputs hard-linked in under the names
it asked for; its outputs are read back from there and the directory goes.

Nothing a peer sends may land outside the work directory: digests must be
64 hex digits, file names are checked by `safe_name`, and no symlink inside a
sandbox is ever followed, neither when linking inputs nor when collecting
outputs.

Standard library only, and nothing from abengine: this module is shipped
inside the single-file worker to hosts that have neither.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import os
import re
import shutil
import stat
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

CHUNK = 1 << 20
MAX_SPARE_SANDBOXES = 64
_DIGEST = re.compile(r"[0-9a-f]{64}")
_READ_ONLY, _READ_EXEC = 0o444, 0o555


class CacheError(Exception):
    """A file the cache cannot take or give: bad digest, wrong bytes, not held."""


class UnsafeName(ValueError):
    """A task file name that could reach outside its sandbox."""


def safe_name(name: str) -> str:
    """Return `name` if it is a plain relative path that stays inside a sandbox.

    Stricter than "does not escape": there is exactly one spelling per file
    ("./a", "a/./b", "a//b" and "a/" are refused too), so two names of one
    task can only be the same file if they are the same string.
    """
    if not isinstance(name, str) or not name:
        raise UnsafeName(f"unsafe file name {name!r}: not a non-empty string")
    if "\0" in name or "\\" in name:
        raise UnsafeName(f"unsafe file name {name!r}: contains NUL or a backslash")
    if name.startswith("/"):
        raise UnsafeName(f"unsafe file name {name!r}: absolute")
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise UnsafeName(f"unsafe file name {name!r}: empty, '.' or '..' component")
    return name


def check_digest(digest: str) -> str:
    """Return `digest` if it is a sha256 in lowercase hex: the only names `files/` holds."""
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise CacheError(f"not a sha256 hex digest: {digest!r}")
    return digest


def sha256_file(path: Path) -> str:
    """The sha256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class _Entry:
    """What the cache knows of a file it holds: enough to notice a change without re-hashing."""

    size: int
    mtime_ns: int
    executable: bool
    verified: bool = True  # False for files found on disk at start: hashed on first use

    @property
    def mode(self) -> int:
        return _READ_EXEC if self.executable else _READ_ONLY


class Cache:
    """Files by sha256 under `root/files`, at most about `max_bytes` of them.

    `max_bytes` is a target, not a wall: least recently used files are
    evicted to make room, but never one linked into a live sandbox (evicting
    it would free nothing, the sandbox holds the inode), and a file is
    admitted even when those alone exceed the budget, so a task whose inputs
    are larger than the cache can still run.
    """

    def __init__(self, root: Path, max_bytes: int | None = None) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.files = self.root / "files"
        self.incoming = self.root / "incoming"
        self.sandboxes = self.root / "sandboxes"
        for d in (self.root, self.files, self.incoming, self.sandboxes):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first
        self._pins: dict[str, int] = {}  # digest -> users that must keep it (sandboxes, receives)
        self._bytes = 0
        self._sandbox_numbers = itertools.count(1)
        self._spare: list[Path] = []  # emptied sandboxes, ready for reuse
        self._adopt_leftovers()

    def _adopt_leftovers(self) -> None:
        """Drop half-received files; keep complete ones, hashed again before their first use."""
        for leftover in self.incoming.iterdir():
            _remove_path(leftover)
        for path in self.files.iterdir():
            st = path.lstat()
            if not _DIGEST.fullmatch(path.name) or not stat.S_ISREG(st.st_mode):
                _remove_path(path)
                continue
            executable = bool(st.st_mode & 0o111)
            self._entries[path.name] = _Entry(st.st_size, st.st_mtime_ns, executable, False)
            self._bytes += st.st_size

    # -- what it holds -------------------------------------------------------------
    def has(self, digest: str) -> bool:
        with self._lock:
            return digest in self._entries

    def path(self, digest: str) -> Path:
        """Where the file of `digest` is (or would be) kept."""
        return self.files / check_digest(digest)

    def digests(self) -> list[str]:
        """What the cache holds, most recently used first (so a truncated list keeps the hot files)."""
        with self._lock:
            return list(reversed(self._entries))

    def size(self) -> int:
        """Bytes held."""
        with self._lock:
            return self._bytes

    # -- putting files in ----------------------------------------------------------
    def receive(self, digest: str, size: int, executable: bool = False) -> Incoming:
        """Start receiving the `size` bytes of `digest`; write them, then commit (or abort)."""
        check_digest(digest)
        if not isinstance(size, int) or size < 0:
            raise CacheError(f"bad size {size!r} for {digest}")
        with self._lock:
            entry = self._entries.get(digest)
            if entry is not None:
                if entry.size != size:
                    raise CacheError(f"{digest} is held with {entry.size} bytes, not {size}")
                self._pin(digest)  # so it is still here when the duplicate's commit asks
                return Incoming(self, digest, size, executable, duplicate=True)
        return Incoming(self, digest, size, executable, duplicate=False)

    def add_file(self, path: Path) -> str:
        """Copy a local file into the cache (its executable bit kept); return its digest."""
        path = Path(path)
        digest = sha256_file(path)
        st = path.stat()
        with self.receive(digest, st.st_size, executable=bool(st.st_mode & 0o111)) as incoming:
            with open(path, "rb") as f:
                while chunk := f.read(CHUNK):
                    incoming.write(chunk)
            incoming.commit()  # re-checks the hash: the file may have changed since
        return digest

    def assemble(self, digest: str, size: int, parts: list[str], offset: int = 0) -> Path:
        """Build the file `digest` from bytes offset..offset+size of held pieces laid end to
        end; its size and hash are checked on commit."""
        with self.receive(digest, size) as incoming:
            skip, left = offset, size
            for part in parts:
                with self.reading(part) as f:
                    length = os.fstat(f.fileno()).st_size
                    if skip >= length:
                        skip -= length
                        continue
                    f.seek(skip)
                    skip = 0
                    while left and (chunk := f.read(min(CHUNK, left))):
                        incoming.write(chunk)
                        left -= len(chunk)
            return incoming.commit()

    def _admit(self, temp: Path, digest: str, size: int, executable: bool) -> Path:
        """Rename a verified temp file into `files/`, read-only, making room first."""
        target = self.files / digest
        with self._lock:
            if digest in self._entries:  # a concurrent receive of the same file won
                temp.unlink(missing_ok=True)
                return target
            self._make_room(size)
            os.chmod(temp, _READ_EXEC if executable else _READ_ONLY)
            os.replace(temp, target)
            self._entries[digest] = _Entry(size, target.stat().st_mtime_ns, executable)
            self._bytes += size
        return target

    def _make_room(self, size: int) -> None:
        """Evict least recently used, unpinned files until `size` more bytes fit (lock held)."""
        if self.max_bytes is None:
            return
        for digest in list(self._entries):
            if self._bytes + size <= self.max_bytes:
                return
            if not self._pins.get(digest):
                self._drop(digest)

    def _drop(self, digest: str) -> None:
        """Forget a file and delete it (lock held). Sandboxes linking it keep their inode."""
        entry = self._entries.pop(digest, None)
        if entry is not None:
            self._bytes -= entry.size
        (self.files / digest).unlink(missing_ok=True)

    # -- checking files --------------------------------------------------------------
    def verify(self, digest: str) -> bool:
        """Re-hash a held file; evict it if its bytes no longer match (the master resends it).

        The cache checks hashes on receive, not on reuse, and hard links share
        the inode with every sandbox: a task that chmods its input writable can
        change the cached copy. `Sandbox.link` calls this whenever the cheap
        check (size, mtime and mode recorded at commit) says something changed.
        """
        path = self.path(digest)
        try:
            actual = None if path.is_symlink() else sha256_file(path)
        except OSError:
            actual = None
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return False
            if actual != digest:
                self._drop(digest)
                return False
            os.chmod(path, entry.mode)  # a task may have made it writable: undo that
            entry.mtime_ns, entry.verified = path.stat().st_mtime_ns, True
            return True

    def _looks_changed(self, digest: str) -> bool:
        """Cheap check before reuse: has the file's size, mtime or mode moved since commit?"""
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                raise CacheError(f"{digest} is not in the cache")
            try:
                st = os.lstat(self.files / digest)
            except OSError:
                return True
            return (not entry.verified or not stat.S_ISREG(st.st_mode)
                    or st.st_size != entry.size or st.st_mtime_ns != entry.mtime_ns
                    or stat.S_IMODE(st.st_mode) != entry.mode)

    # -- lending files to sandboxes ------------------------------------------------
    def _checkout(self, digest: str, executable: bool) -> tuple[Path, int]:
        """Pin a held, checked file for a sandbox; return its path and the mode a link shows."""
        check_digest(digest)
        if self._looks_changed(digest) and not self.verify(digest):
            raise CacheError(f"cached file {digest} was corrupted and has been evicted; "
                             "it must be sent again")
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:  # evicted or dropped between the check and now
                raise CacheError(f"{digest} is not in the cache")
            if executable and not entry.executable:
                # The bit lives on the shared inode: every link of this file becomes
                # executable. Harmless for a read-only file, and it saves a copy.
                entry.executable = True
                os.chmod(self.files / digest, entry.mode)
            self._entries.move_to_end(digest)
            self._pin(digest)
            return self.files / digest, entry.mode

    def _pin(self, digest: str) -> None:
        self._pins[digest] = self._pins.get(digest, 0) + 1

    def _release(self, digest: str) -> None:
        with self._lock:
            left = self._pins.get(digest, 0) - 1
            if left > 0:
                self._pins[digest] = left
            else:
                self._pins.pop(digest, None)

    @contextlib.contextmanager
    def reading(self, digest: str) -> Iterator[BinaryIO]:
        """A held file opened for a peer; kept from eviction while open.

        Checked like a file linked into a sandbox: one that looks changed is
        re-hashed first, and refused (evicted) if its bytes are wrong, so a
        worker never serves a peer a copy it would not use itself.
        """
        path, _ = self._checkout(digest, executable=False)
        try:
            with open(path, "rb") as f:
                yield f
        finally:
            self._release(digest)

    # -- sandboxes and the end -----------------------------------------------------
    def sandbox(self, task_id: int) -> Sandbox:
        """A fresh, private directory for one attempt of one task."""
        with self._lock:
            path = self._spare.pop() if self._spare else None
        if path is not None:
            if _usable_empty_dir(path):
                return Sandbox(self, path)
            _remove_tree(path)
        path = self.sandboxes / f"t{task_id}-{next(self._sandbox_numbers)}"
        try:  # cheaper than mkdtemp's random names; the root is this worker's own
            path.mkdir(mode=0o700)
        except FileExistsError:  # a root shared after all: fall back to random names
            path = Path(tempfile.mkdtemp(prefix=f"t{task_id}-", dir=self.sandboxes))
        return Sandbox(self, path)

    def _recycle(self, path: Path) -> bool:
        """Empty a sandbox of plain files and keep its directory for the next task.

        Removing and making a directory costs ~70 us on ext4, as much as the
        rest of a short task's bookkeeping; emptying one that holds only files
        (linked inputs, outputs) and reusing it gives the next task the same
        empty, private directory. Anything else is removed the thorough way.
        """
        try:
            with os.scandir(path) as it:
                entries = list(it)
            if any(e.is_dir(follow_symlinks=False) for e in entries):
                return False
            for entry in entries:
                os.unlink(entry.path)
        except OSError:
            return False
        with self._lock:
            if len(self._spare) >= MAX_SPARE_SANDBOXES:
                return False
            self._spare.append(path)
        return True

    def cleanup(self) -> None:
        """Remove the whole work directory: cache, half-received files, sandboxes."""
        _remove_tree(self.root)
        with self._lock:
            self._entries.clear()
            self._pins.clear()
            self._bytes = 0


class Incoming:
    """One file being received: `write` chunks, then `commit` (or `abort` on any failure).

    As a context, it aborts on leaving unless committed: whatever goes wrong
    while the bytes arrive, a half or wrong copy never enters the cache.
    """

    def __init__(self, cache: Cache, digest: str, size: int, executable: bool,
                 duplicate: bool) -> None:
        self.cache, self.digest, self.size, self.executable = cache, digest, size, executable
        self.received = 0
        self._duplicate = duplicate  # already held: count the bytes, keep none of them
        self._hash = hashlib.sha256()
        self._temp: Path | None = None
        self._file: BinaryIO | None = None
        self._done = False
        if not duplicate:
            fd, temp = tempfile.mkstemp(prefix=f"{digest[:16]}-", dir=cache.incoming)
            self._temp, self._file = Path(temp), os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        if self._done:
            raise CacheError(f"{self.digest}: write after commit or abort")
        self.received += len(chunk)
        if self.received > self.size:
            self.abort()
            raise CacheError(f"{self.digest}: more than the announced {self.size} bytes")
        if self._file is not None:
            self._hash.update(chunk)
            self._file.write(chunk)

    def commit(self) -> Path:
        """Check the bytes against size and digest, then make the file part of the cache."""
        if self._done:
            raise CacheError(f"{self.digest}: commit after commit or abort")
        if self.received != self.size:
            self.abort()
            raise CacheError(f"{self.digest}: got {self.received} bytes of {self.size}")
        if self._duplicate:
            held = self.cache.has(self.digest)  # pinned, so only a failed verify removes it
            self._finish()
            if not held:
                raise CacheError(f"{self.digest} was dropped while its duplicate arrived")
            return self.cache.path(self.digest)
        actual = self._hash.hexdigest()
        if actual != self.digest:
            self.abort()
            raise CacheError(f"hash mismatch: announced {self.digest}, received {actual}")
        assert self._file is not None and self._temp is not None
        self._file.close()
        self._done = True
        try:
            return self.cache._admit(self._temp, self.digest, self.size, self.executable)
        except BaseException:
            self._temp.unlink(missing_ok=True)
            raise

    def __enter__(self) -> Incoming:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()

    def abort(self) -> None:
        """Throw away what was received; safe to call more than once, or after commit."""
        if self._done:
            return
        self._finish()
        if self._temp is not None:
            self._temp.unlink(missing_ok=True)

    def _finish(self) -> None:
        self._done = True
        if self._file is not None:
            self._file.close()
        if self._duplicate:
            self.cache._release(self.digest)


class Sandbox:
    """A task's private directory: inputs linked in, outputs collected, then removed.

    Inputs are hard links to the cache's read-only files, so a 100 MB input
    costs no copy per task. A hard link is the same inode, though: a task can
    chmod its input writable and change the cached file for every later task.
    abengine runs trusted commands, so the cache defends against accidents,
    not attacks: `link` re-hashes a file whose size, mtime or mode changed
    since commit and evicts it if its bytes are wrong. Pass `cache=False` for
    an input a task is meant to modify: it gets a private, writable copy.
    """

    def __init__(self, cache: Cache, path: Path) -> None:
        self.cache = cache
        self.path = path
        self._pinned: list[str] = []
        self._removed = False

    def link(self, digest: str, name: str, executable: bool = False, cache: bool = True) -> Path:
        """Put the cached file of `digest` at `name`: a hard link, or a copy where that fails."""
        target = self._new_file(name)
        source, mode = self.cache._checkout(digest, executable)
        linked = False
        try:
            linked = cache and _hard_link(source, target)
            if not linked:
                _copy(source, target, mode if cache else 0o755 if executable else 0o644)
        finally:
            if linked:  # a copy owes the cache nothing; a link keeps its file from eviction
                self._pinned.append(digest)
            else:
                self.cache._release(digest)
        return target

    def _new_file(self, name: str) -> Path:
        """The path for a new input `name`, its parent directories made; no symlink followed."""
        parts = safe_name(name).split("/")
        parent = self.path
        for part in parts[:-1]:
            parent = parent / part
            try:
                os.mkdir(parent)
            except FileExistsError:
                st = os.lstat(parent)
                if stat.S_ISLNK(st.st_mode):
                    raise UnsafeName(f"{name!r}: {parent.relative_to(self.path)} is a symlink") \
                        from None
                if not stat.S_ISDIR(st.st_mode):
                    raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(parent)) \
                        from None
        target = parent / parts[-1]
        if os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, f"{name!r} is already in the sandbox", str(target))
        return target

    def collect(self, name: str) -> Path:
        """The path of output `name`, if it is a regular file reached without any symlink."""
        parts = safe_name(name).split("/")
        path = self.path
        for i, part in enumerate(parts):
            path = path / part
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                raise FileNotFoundError(errno.ENOENT, f"output {name!r} was not produced",
                                        str(path)) from None
            if stat.S_ISLNK(st.st_mode):
                where = "/".join(parts[: i + 1])
                raise UnsafeName(f"output {name!r}: {where!r} is a symlink")
        if not stat.S_ISREG(st.st_mode):
            raise FileNotFoundError(errno.ENOENT, f"output {name!r} is not a regular file",
                                    str(path))
        base = os.path.realpath(self.path)
        if os.path.commonpath([base, os.path.realpath(path)]) != base:  # belt and braces
            raise UnsafeName(f"output {name!r} resolves outside the sandbox")
        return path

    def remove(self) -> None:
        """Delete the sandbox, even directories the task made read-only; release its files."""
        if self._removed:
            return
        self._removed = True
        if not self.cache._recycle(self.path):
            _remove_tree(self.path)
        for digest in self._pinned:
            self.cache._release(digest)
        self._pinned.clear()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.remove()


def _hard_link(source: Path, target: Path) -> bool:
    """Hard-link `target` to `source`; False where links cannot be made (so copy instead)."""
    try:
        os.link(source, target)
    except FileExistsError:
        raise
    except OSError:  # another filesystem, one without hard links, or too many links
        return False
    return True


def _copy(source: Path, target: Path, mode: int) -> None:
    """Copy into a new file (never through an existing name or symlink), then set its mode."""
    with open(source, "rb") as src, open(target, "xb") as dst:
        shutil.copyfileobj(src, dst, CHUNK)
    os.chmod(target, mode)


def _remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        _remove_tree(path)
    else:
        path.unlink(missing_ok=True)


def _usable_empty_dir(path: Path) -> bool:
    """Is `path` still a private, empty directory (whatever its last task did to it)?"""
    try:
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode):
            return False
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.chmod(path, 0o700)
        with os.scandir(path) as it:
            return next(it, None) is None
    except OSError:
        return False


def _remove_tree(top: Path) -> None:
    """rmtree that also gets through directories a task made read-only or unreadable."""
    try:
        if not stat.S_ISDIR(os.lstat(top).st_mode):
            return
        # The usual sandbox holds only files (linked inputs, outputs): no tree walk needed.
        with os.scandir(top) as it:
            entries = list(it)
        if not any(e.is_dir(follow_symlinks=False) for e in entries):
            for entry in entries:
                os.unlink(entry.path)
            os.rmdir(top)
            return
    except FileNotFoundError:
        return
    except OSError:
        pass  # a directory made unwritable, say: the thorough way below
    stack = [str(top)]
    while stack:  # owner rwx on every real directory first; files need no write bit to go
        directory = stack.pop()
        try:
            os.chmod(directory, 0o700)
            with os.scandir(directory) as entries:
                stack.extend(e.path for e in entries if e.is_dir(follow_symlinks=False))
        except OSError:
            pass
    shutil.rmtree(top, ignore_errors=True)
