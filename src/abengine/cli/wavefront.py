"""`wavefront`: not available yet; the command is reserved for its contract."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("wavefront: not available yet in this release of abengine "
          "(All-Pairs and Map are; see `allpairs --help` and `abengine map --help`)",
          file=sys.stderr)
    return 2
