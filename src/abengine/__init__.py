"""abengine: state the abstraction, and the engine decides how to run it.

    >>> import numpy as np, abengine
    >>> X = np.random.default_rng(0).random((500, 64))
    >>> D = abengine.allpairs(X, X, "euclidean", symmetric=True)

See README.md for the command-line tools (`allpairs`, `abengine map`, ...).
"""

from . import sets
from .abstractions import AllPairs, Classify, Map, allpairs, classify, map  # noqa: A004
from .engines import Engine, LocalEngine
from .errors import AbengineError, Failure, TaskFailures, UsageError
from .functions import BUILTINS, vectorized
from .graph import File, PythonTask, Task, TaskGraph, TaskResult, current_sandbox

__version__ = "0.1.0"

__all__ = [
    "BUILTINS", "AbengineError", "AllPairs", "Classify", "Engine", "Failure", "File", "LocalEngine", "Map",
    "PythonTask", "Task", "TaskFailures", "TaskGraph", "TaskResult", "UsageError",
    "allpairs", "classify", "current_sandbox", "map", "sets", "vectorized", "wavefront",
]


def wavefront(*args: object, **kwargs: object) -> None:
    """Wavefront is not available yet in this release (it comes with the performance models)."""
    raise NotImplementedError("abengine.wavefront is not available yet in this release")
