"""The pieces shared files travel as: large files cut, small files packed.

A spanning tree moves one piece per transfer, and each transfer costs a
connection and a round trip beyond its bytes. A large file cut into pieces
lets the pieces' trees run side by side; many small files packed into one
piece pay that fixed cost once instead of once each. Every piece is hashed
here, so a worker checks each on arrival, and each file is rebuilt at the
worker from its `Part` (a byte range of pieces laid end to end) and checked
against its own hash again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1 << 20
#: Files under this fraction of a piece are packed together with others.
PACK_BELOW = 4


@dataclass(frozen=True, slots=True)
class Segment:
    """`size` bytes of `path` from `offset`."""

    path: Path
    offset: int
    size: int


@dataclass(frozen=True, slots=True)
class Piece:
    """What one transfer carries: its segments laid end to end, whose sha256 is `digest`
    (the file's own digest when the piece is a whole file)."""

    digest: str
    segments: tuple[Segment, ...]

    @property
    def size(self) -> int:
        return sum(s.size for s in self.segments)


@dataclass(frozen=True, slots=True)
class Part:
    """How a worker rebuilds a file: bytes offset..offset+size of `pieces` laid end to end."""

    pieces: tuple[str, ...]
    offset: int
    size: int


def layout(files: list[tuple[str, Path, int]], piece_bytes: int | None
           ) -> tuple[list[Piece], dict[str, Part]]:
    """The pieces that carry `files` ((digest, path, size) each, distinct digests), and how
    to rebuild each file that is not a piece of its own.

    No `piece_bytes`: every file travels whole. Otherwise files larger than a
    piece are cut; files under a quarter of one are packed, in the order given,
    into pieces of at most `piece_bytes` (a pack of one is just the file).
    """
    pieces: list[Piece] = []
    parts: dict[str, Part] = {}
    pack: list[tuple[str, Path, int]] = []

    def close_pack() -> None:
        if len(pack) == 1:
            digest, path, size = pack[0]
            pieces.append(Piece(digest, (Segment(path, 0, size),)))
        elif pack:
            segments = tuple(Segment(path, 0, size) for _, path, size in pack)
            piece = Piece(_digest(segments), segments)
            pieces.append(piece)
            offset = 0
            for digest, _, size in pack:
                parts[digest] = Part((piece.digest,), offset, size)
                offset += size
        pack.clear()

    for digest, path, size in files:
        if piece_bytes is None or piece_bytes // PACK_BELOW <= size <= piece_bytes:
            pieces.append(Piece(digest, (Segment(path, 0, size),)))
        elif size > piece_bytes:
            cut = [Piece(_digest(s), s) for s in _cut(path, size, piece_bytes)]
            pieces += cut
            parts[digest] = Part(tuple(p.digest for p in cut), 0, size)
        else:
            if sum(s for _, _, s in pack) + size > piece_bytes:
                close_pack()
            pack.append((digest, path, size))
    close_pack()
    return pieces, parts


def _cut(path: Path, size: int, piece_bytes: int) -> list[tuple[Segment, ...]]:
    return [(Segment(path, offset, min(piece_bytes, size - offset)),)
            for offset in range(0, size, piece_bytes)]


def _digest(segments: tuple[Segment, ...]) -> str:
    """The sha256 of the segments' bytes, read now."""
    h = hashlib.sha256()
    for segment in segments:
        with open(segment.path, "rb") as f:
            f.seek(segment.offset)
            left = segment.size
            while left and (chunk := f.read(min(CHUNK, left))):
                h.update(chunk)
                left -= len(chunk)
    return h.hexdigest()
