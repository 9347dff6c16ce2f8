"""The worker's file cache and sandboxes: real files in tmp_path, real threads, no mocks."""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from abengine.workqueue.cache import Cache, CacheError, UnsafeName, safe_name

UNSAFE = ["../x", "/abs", "a/../b", "", ".", "a\0b", "a\\b", "a//b", "a/", "./a", "..", "a/./b"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put(cache: Cache, data: bytes, executable: bool = False, chunk: int = 7) -> Path:
    """Receive `data` the way a worker does: announced, streamed in chunks, committed."""
    incoming = cache.receive(sha(data), len(data), executable=executable)
    for i in range(0, len(data), chunk):
        incoming.write(data[i : i + chunk])
    return incoming.commit()


def leftovers(cache: Cache) -> list[Path]:
    return list(cache.incoming.iterdir())


@pytest.fixture
def cache(tmp_path: Path) -> Cache:
    return Cache(tmp_path / "work")


# -- receiving ------------------------------------------------------------------------


def test_receive_in_chunks_commits_a_read_only_file(cache: Cache) -> None:
    data = os.urandom(1000)
    path = put(cache, data)
    assert path == cache.path(sha(data)) and path.read_bytes() == data
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    assert cache.has(sha(data)) and cache.digests() == [sha(data)] and cache.size() == 1000
    assert leftovers(cache) == []
    for d in (cache.root, cache.files, cache.incoming):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700


def test_empty_file(cache: Cache) -> None:
    assert cache.receive(sha(b""), 0).commit().read_bytes() == b""


def test_hash_mismatch_is_refused_and_leaves_nothing(cache: Cache) -> None:
    incoming = cache.receive(sha(b"expected"), 8)
    incoming.write(b"tampered")
    with pytest.raises(CacheError, match="hash mismatch"):
        incoming.commit()
    assert not cache.has(sha(b"expected")) and leftovers(cache) == [] and cache.size() == 0


def test_oversize_is_refused_and_leaves_nothing(cache: Cache) -> None:
    incoming = cache.receive(sha(b"abc"), 3)
    incoming.write(b"ab")
    with pytest.raises(CacheError, match="more than"):
        incoming.write(b"cd")
    incoming.abort()  # what the worker does on any error: harmless after the refusal
    assert leftovers(cache) == [] and list(cache.files.iterdir()) == []


def test_short_file_is_refused(cache: Cache) -> None:
    incoming = cache.receive(sha(b"abc"), 3)
    incoming.write(b"ab")
    with pytest.raises(CacheError, match="2 bytes of 3"):
        incoming.commit()
    assert leftovers(cache) == [] and not cache.has(sha(b"abc"))


def test_abort_removes_the_temp_file(cache: Cache) -> None:
    incoming = cache.receive(sha(b"abc"), 3)
    incoming.write(b"a")
    assert len(leftovers(cache)) == 1
    incoming.abort()
    assert leftovers(cache) == []
    with pytest.raises(CacheError):
        incoming.write(b"bc")


@pytest.mark.parametrize("digest", ["", "ab", "A" * 64, "g" * 64, "../" + "a" * 61, "a" * 65,
                                    "a" * 63 + "\n"])
def test_malformed_digests_are_refused(cache: Cache, digest: str) -> None:
    with pytest.raises(CacheError, match="digest"):
        cache.receive(digest, 1)
    with pytest.raises(CacheError):
        cache.path(digest)
    assert not cache.has(digest)


def test_duplicate_receive_discards_the_bytes(cache: Cache) -> None:
    first = put(cache, b"same bytes")
    mtime = first.stat().st_mtime_ns
    assert put(cache, b"same bytes") == first
    assert first.stat().st_mtime_ns == mtime and cache.size() == 10 and leftovers(cache) == []
    with pytest.raises(CacheError, match="held with 10 bytes"):
        cache.receive(sha(b"same bytes"), 11)


def test_add_file_keeps_the_executable_bit(cache: Cache, tmp_path: Path) -> None:
    local = tmp_path / "tool.sh"
    local.write_bytes(b"#!/bin/sh\necho hi\n")
    local.chmod(0o755)
    digest = cache.add_file(local)
    assert digest == sha(local.read_bytes())
    assert cache.path(digest).read_bytes() == local.read_bytes()
    assert stat.S_IMODE(cache.path(digest).stat().st_mode) == 0o555
    assert stat.S_IMODE(local.stat().st_mode) == 0o755  # the user's file is left alone
    assert cache.add_file(local) == digest and cache.size() == local.stat().st_size


def test_concurrent_receives_from_8_threads(cache: Cache) -> None:
    blobs = [os.urandom(50_000 + i) for i in range(4)] * 2  # each file received twice at once
    start = threading.Barrier(len(blobs))
    errors: list[BaseException] = []

    def receive(data: bytes) -> None:
        try:
            start.wait()
            put(cache, data, chunk=4096)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=receive, args=(b,)) for b in blobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(cache.digests()) == sorted({sha(b) for b in blobs})
    assert all(cache.path(sha(b)).read_bytes() == b for b in blobs)
    assert cache.size() == sum(len(b) for b in blobs[:4]) and leftovers(cache) == []


# -- sandboxes --------------------------------------------------------------------------


def test_link_and_collect(cache: Cache) -> None:
    digest = sha(put(cache, b"input data").read_bytes())
    with cache.sandbox(7) as box:
        assert box.path.parent == cache.sandboxes and box.path.name.startswith("t7-")
        linked = box.link(digest, "in/deep/data.txt")
        assert linked == box.path / "in/deep/data.txt" and linked.read_bytes() == b"input data"
        assert os.path.samefile(linked, cache.path(digest))  # a hard link, not a copy
        assert not os.access(linked, os.X_OK)
        (box.path / "out").mkdir()
        (box.path / "out/result.txt").write_text("done")
        assert box.collect("out/result.txt").read_text() == "done"
        assert box.collect("in/deep/data.txt") == linked  # an input may be an output too
    assert not box.path.exists()
    assert cache.path(digest).read_bytes() == b"input data"


def test_sandboxes_are_fresh_and_distinct(cache: Cache) -> None:
    a, b = cache.sandbox(1), cache.sandbox(1)
    assert a.path != b.path and list(a.path.iterdir()) == []
    a.remove()
    a.remove()  # twice is fine
    b.remove()
    assert len(list(cache.sandboxes.iterdir())) == 2  # emptied, kept for the next tasks


def test_a_reused_sandbox_is_empty_and_private_whatever_its_last_task_did(cache: Cache) -> None:
    digest = sha(put(cache, b"input").read_bytes())
    with cache.sandbox(1) as first:
        first.link(digest, "in.txt")
        (first.path / "out.txt").write_text("x")
        first.path.chmod(0o755)
    with cache.sandbox(2) as second:
        assert second.path == first.path  # only plain files in it: emptied and reused
        assert list(second.path.iterdir()) == []
        assert stat.S_IMODE(second.path.stat().st_mode) == 0o700
        (second.path / "sub").mkdir()  # a directory: removed the thorough way instead
    assert not second.path.exists()
    with cache.sandbox(3) as third:
        assert third.path != first.path
    cache.cleanup()
    assert not cache.root.exists()


def test_executable_bit(cache: Cache) -> None:
    tool = put(cache, b"#!/bin/sh\nexit 0\n", executable=True)
    assert stat.S_IMODE(tool.stat().st_mode) == 0o555
    plain = sha(put(cache, b"#!/bin/sh\nexit 3\n").read_bytes())
    with cache.sandbox(1) as box:
        assert os.access(box.link(sha(tool.read_bytes()), "tool"), os.X_OK)
        assert os.access(box.link(plain, "run.sh", executable=True), os.X_OK)
        assert stat.S_IMODE(cache.path(plain).stat().st_mode) == 0o555  # still read-only
        copied = box.link(plain, "mine.sh", executable=True, cache=False)
        assert stat.S_IMODE(copied.stat().st_mode) == 0o755


def test_uncached_link_is_a_private_writable_copy(cache: Cache) -> None:
    digest = sha(put(cache, b"original").read_bytes())
    with cache.sandbox(1) as box:
        copy = box.link(digest, "scratch.dat", cache=False)
        assert not os.path.samefile(copy, cache.path(digest))
        assert stat.S_IMODE(copy.stat().st_mode) == 0o644
        copy.write_bytes(b"changed by the task")
        assert box.link(digest, "again.dat").read_bytes() == b"original"
    assert cache.verify(digest)


@pytest.mark.parametrize("name", UNSAFE)
def test_unsafe_names_are_refused_everywhere(cache: Cache, name: str) -> None:
    with pytest.raises(UnsafeName):
        safe_name(name)
    digest = sha(put(cache, b"x").read_bytes())
    with cache.sandbox(1) as box:
        with pytest.raises(UnsafeName):
            box.link(digest, name)
        with pytest.raises(UnsafeName):
            box.collect(name)
    assert list(cache.root.parent.iterdir()) == [cache.root]  # nothing made beside the root


def test_safe_names_pass_through() -> None:
    for name in ["a", "a/b/c.txt", ".hidden", "a..b", "...", "x y", "dir/.config"]:
        assert safe_name(name) == name
    with pytest.raises(UnsafeName):
        safe_name(b"bytes")  # type: ignore[arg-type]


def test_link_refuses_an_existing_name(cache: Cache) -> None:
    digest = sha(put(cache, b"x").read_bytes())
    with cache.sandbox(1) as box:
        box.link(digest, "a/x")
        with pytest.raises(FileExistsError):
            box.link(digest, "a/x")
        with pytest.raises(NotADirectoryError):
            box.link(digest, "a/x/y")
        (box.path / "dangling").symlink_to(box.path / "nowhere")
        with pytest.raises(FileExistsError):
            box.link(digest, "dangling")
        assert not (box.path / "nowhere").exists()


def test_link_refuses_a_symlinked_parent(cache: Cache, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    digest = sha(put(cache, b"x").read_bytes())
    with cache.sandbox(1) as box:
        (box.path / "sub").mkdir()
        (box.path / "sub/escape").symlink_to(outside)
        with pytest.raises(UnsafeName, match="symlink"):
            box.link(digest, "sub/escape/x")
        with pytest.raises(UnsafeName, match="symlink"):
            box.link(digest, "sub/escape/new/x")
    assert list(outside.iterdir()) == []


def test_link_of_a_file_not_held(cache: Cache) -> None:
    with cache.sandbox(1) as box, pytest.raises(CacheError, match="not in the cache"):
        box.link(sha(b"never sent"), "x")


# -- collecting outputs --------------------------------------------------------------


def test_collect_refuses_a_symlink_to_etc_passwd(cache: Cache) -> None:
    with cache.sandbox(1) as box:
        (box.path / "out").symlink_to("/etc/passwd")
        with pytest.raises(UnsafeName, match="symlink"):
            box.collect("out")


def test_collect_refuses_a_symlink_to_a_directory_outside(cache: Cache, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("no")
    with cache.sandbox(1) as box:
        (box.path / "d").symlink_to(outside)
        for name in ["d", "d/secret"]:
            with pytest.raises(UnsafeName, match="symlink"):
                box.collect(name)


def test_collect_refuses_a_path_through_a_symlinked_directory(cache: Cache) -> None:
    with cache.sandbox(1) as box:
        (box.path / "real").mkdir()
        (box.path / "real/out").write_text("ok")
        (box.path / "alias").symlink_to("real")  # points inside, still refused
        with pytest.raises(UnsafeName, match="'alias' is a symlink"):
            box.collect("alias/out")
        assert box.collect("real/out").read_text() == "ok"


def test_collect_refuses_directories_and_missing_files(cache: Cache) -> None:
    with cache.sandbox(1) as box:
        (box.path / "dir").mkdir()
        (box.path / "file").write_text("x")
        os.mkfifo(box.path / "fifo")
        for name in ["dir", "missing", "dir/missing", "file/below", "fifo"]:
            with pytest.raises(FileNotFoundError):
                box.collect(name)


def test_remove_gets_through_read_only_directories(cache: Cache) -> None:
    box = cache.sandbox(1)
    (box.path / "a/b").mkdir(parents=True)
    (box.path / "a/b/f").write_text("x")
    (box.path / "a/b/f").chmod(0o400)
    (box.path / "a/b").chmod(0o500)
    (box.path / "a").chmod(0o000)
    box.remove()
    assert not box.path.exists()


def test_remove_does_not_follow_symlinks(cache: Cache, tmp_path: Path) -> None:
    outside = tmp_path / "keep"
    outside.mkdir()
    (outside / "f").write_text("keep me")
    outside.chmod(0o500)
    with cache.sandbox(1) as box:
        (box.path / "link").symlink_to(outside)
    assert (outside / "f").read_text() == "keep me"
    assert stat.S_IMODE(outside.stat().st_mode) == 0o500  # not chmod-ed through the link


# -- eviction -------------------------------------------------------------------------


def test_eviction_is_least_recently_linked_first(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "work", max_bytes=250)
    a, b = (sha(put(cache, bytes([i]) * 100).read_bytes()) for i in (1, 2))
    with cache.sandbox(1) as box:
        box.link(a, "a")  # a is now more recently used than b
    c = sha(put(cache, b"\3" * 100).read_bytes())
    assert cache.has(a) and not cache.has(b) and cache.has(c) and cache.size() == 200
    assert not cache.path(b).exists()
    assert cache.digests() == [c, a]


def test_eviction_spares_files_linked_into_live_sandboxes(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "work", max_bytes=250)
    a = sha(put(cache, b"\1" * 100).read_bytes())
    box = cache.sandbox(1)
    box.link(a, "a")
    b = sha(put(cache, b"\2" * 100).read_bytes())
    c = sha(put(cache, b"\3" * 100).read_bytes())
    assert cache.has(a) and not cache.has(b) and cache.has(c)  # a is older, but in use
    d = sha(put(cache, b"\4" * 300).read_bytes())  # larger than the budget: admitted anyway
    assert cache.has(a) and not cache.has(c) and cache.has(d) and cache.size() == 400
    box.remove()
    e = sha(put(cache, b"\5" * 10).read_bytes())
    assert not cache.has(a) and cache.has(e)


def test_no_limit_means_no_eviction(cache: Cache) -> None:
    for i in range(20):
        put(cache, bytes([i]) * 1000, chunk=1000)
    assert len(cache.digests()) == 20 and cache.size() == 20_000


# -- corruption through a hard link ---------------------------------------------------------


def test_a_task_that_modifies_its_input_is_caught_and_the_file_refetched(cache: Cache) -> None:
    data = b"pristine input"
    digest = sha(put(cache, data).read_bytes())
    with cache.sandbox(1) as box:
        linked = box.link(digest, "in.dat")
        linked.chmod(0o644)  # the same inode: this is the cached file's mode too
        linked.write_bytes(b"scribbled over")
    with cache.sandbox(2) as box, pytest.raises(CacheError, match="corrupted"):
        box.link(digest, "in.dat")
    assert not cache.has(digest) and not cache.path(digest).exists() and cache.size() == 0
    put(cache, data)  # the master sends it again
    with cache.sandbox(3) as box:
        assert box.link(digest, "in.dat").read_bytes() == data
        assert stat.S_IMODE((box.path / "in.dat").stat().st_mode) == 0o444


def test_verify_rehashes_even_a_change_that_hides_from_the_cheap_check(cache: Cache) -> None:
    path = put(cache, b"aaaa")
    digest = sha(b"aaaa")
    assert cache.verify(digest)
    before = path.stat()
    path.chmod(0o644)
    path.write_bytes(b"bbbb")  # same size, then mode and mtime put back
    path.chmod(0o444)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert not cache.verify(digest)
    assert not cache.has(digest) and not path.exists()
    assert not cache.verify(digest)  # not held: nothing to vouch for


def test_a_chmod_alone_is_rehashed_and_undone(cache: Cache) -> None:
    path = put(cache, b"data")
    path.chmod(0o666)
    with cache.sandbox(1) as box:
        assert box.link(sha(b"data"), "x").read_bytes() == b"data"
    assert stat.S_IMODE(path.stat().st_mode) == 0o444 and cache.has(sha(b"data"))


def test_files_left_on_disk_are_adopted_and_hashed_before_use(tmp_path: Path) -> None:
    first = Cache(tmp_path / "work")
    good, bad = put(first, b"good"), put(first, b"bad")
    bad.chmod(0o644)
    bad.write_bytes(b"BAD")
    bad.chmod(0o444)
    (first.incoming / "half-received").write_bytes(b"partial")
    again = Cache(tmp_path / "work")
    assert sorted(again.digests()) == sorted([sha(b"good"), sha(b"bad")])
    assert list(again.incoming.iterdir()) == []
    with again.sandbox(1) as box:
        assert box.link(sha(b"good"), "good").read_bytes() == b"good"
        with pytest.raises(CacheError, match="corrupted"):
            box.link(sha(b"bad"), "bad")
    assert again.has(sha(b"good")) and not again.has(sha(b"bad")) and good.exists()


# -- the end ----------------------------------------------------------------------------


def test_cleanup_removes_everything(cache: Cache) -> None:
    digest = sha(put(cache, b"x", executable=True).read_bytes())
    box = cache.sandbox(1)
    box.link(digest, "ro/x")
    (box.path / "ro").chmod(0o500)
    half = cache.receive(sha(b"half"), 4)
    half.write(b"ha")
    cache.cleanup()
    assert not cache.root.exists()
    assert not cache.has(digest) and cache.size() == 0 and cache.digests() == []


# -- properties -----------------------------------------------------------------------


@given(st.text(alphabet="ab./\\\0", max_size=12))
@example("...")
@example("..a/b")
@example("a/..")
@example("//a")
def test_safe_names_never_escape(name: str) -> None:
    try:
        accepted = safe_name(name)
    except UnsafeName:
        return
    normal = os.path.normpath(accepted)
    # "..." and "..a" are ordinary names: escaping means a leading ".." component
    assert normal.split("/")[0] != ".." and not os.path.isabs(normal)
    assert normal == accepted  # one spelling per file: nothing for normpath to fold
