"""abengine: state the abstraction, and the engine decides how to run it.

    >>> import numpy as np, abengine
    >>> X = np.random.default_rng(0).random((500, 64))
    >>> D = abengine.allpairs(X, X, "euclidean", symmetric=True)
    >>> R = abengine.wavefront(lambda x, y, left, below, diag: left + below + diag, range(11), range(11))

See README.md for the command-line tools (`allpairs`, `wavefront`, `abengine map`, ...).
"""

from . import sets
from .abstractions import (  # noqa: A004
    AllPairs,
    Classify,
    Lazy,
    Map,
    Wavefront,
    allpairs,
    classify,
    map,
    wavefront,
)
from .engines import Engine, LocalEngine
from .errors import AbengineError, Failure, TaskFailures, UsageError
from .functions import BUILTINS, vectorized
from .graph import File, PythonTask, Task, TaskGraph, TaskResult, current_sandbox

__version__ = "0.1.0"

__all__ = [
    "BUILTINS", "AbengineError", "AllPairs", "Classify", "Engine", "Failure", "File", "Lazy", "LocalEngine", "Map",
    "PythonTask", "Task", "TaskFailures", "TaskGraph", "TaskResult", "UsageError", "Wavefront",
    "allpairs", "classify", "current_sandbox", "map", "sets", "vectorized", "wavefront",
]

