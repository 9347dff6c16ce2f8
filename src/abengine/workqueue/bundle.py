"""The worker as one file, for hosts that lack abengine (`python3 worker.py HOST PORT ...`).

The file embeds the sources of the worker's stdlib-only modules and installs
them under a private package name in `sys.modules` before running the worker,
so their relative imports work unchanged and names in different modules
never collide (as they would if the sources were simply concatenated).

    python -m abengine.workqueue.bundle OUT.py
"""

from __future__ import annotations

import sys
from pathlib import Path

#: The worker's modules, in import order; each may import only the ones before it.
MODULES = ("auth", "protocol", "cache", "tls", "worker")
PACKAGE = "abengine_worker"

LOADER = '''
import sys
import types

package = types.ModuleType({package!r})
package.__path__ = []
sys.modules[{package!r}] = package
for _name in {modules!r}:
    _module = types.ModuleType({package!r} + "." + _name)
    _module.__package__ = {package!r}
    sys.modules[_module.__name__] = _module
    exec(compile(SOURCES[_name], {package!r} + "/" + _name + ".py", "exec"), _module.__dict__)

if __name__ == "__main__":
    sys.exit(sys.modules[{package!r} + ".worker"].main())
'''


def worker_source() -> str:
    """The text of the single-file worker."""
    here = Path(__file__).parent
    sources = {name: (here / f"{name}.py").read_text() for name in MODULES}
    return (
        "#!/usr/bin/env python3\n"
        '"""abengine worker (single file, standard library only): '
        'python3 THIS_FILE HOST PORT --password-file FILE [--cores N] [--timeout S]."""\n'
        f"SOURCES = {sources!r}\n"
        + LOADER.format(package=PACKAGE, modules=MODULES)
    )


def write_worker(path: str | Path) -> Path:
    """Write the single-file worker to `path` (executable) and return the path."""
    path = Path(path)
    path.write_text(worker_source())
    path.chmod(0o755)
    return path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m abengine.workqueue.bundle OUT.py")
    print(write_worker(sys.argv[1]))
