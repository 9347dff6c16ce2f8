"""`python -m abengine.engines.pyrun CALL RESULT`: a PythonTask on a remote worker.

CALL holds (fn, args) pickled by value with cloudpickle; the call runs in the
task's sandbox (the working directory) and its return value is pickled to
RESULT. An exception prints its traceback on stderr and exits 1, so the
master reports it like any failed command.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

import cloudpickle

from ..graph import _sandbox


def main(argv: list[str]) -> int:
    call, result = argv
    with open(call, "rb") as f:
        fn, args = cloudpickle.load(f)
    _sandbox.set(Path(os.getcwd()))
    try:
        value = fn(*args)
    except Exception:
        traceback.print_exc()
        return 1
    with open(result, "wb") as f:
        cloudpickle.dump(value, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
