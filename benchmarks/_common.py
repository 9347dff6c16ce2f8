"""Helpers shared by the benchmarks: interleaved timing, medians, machine facts, output.

The machine the benchmarks run on may be shared and noisy, so no figure is an
absolute time on its own: every system is timed side by side with an anchor in
the same run, the systems are interleaved (their order rotates from one repeat
to the next, so drift hits them all alike), and each figure is the median of
the repeats. A ratio is the median of the per-repeat ratios (paired), which
cancels slow phases of the machine that hit both sides of one repeat.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATASETS = REPO / "datasets"


def generate_module():
    """datasets/generate.py, imported (it is not a package)."""
    if str(DATASETS) not in sys.path:
        sys.path.insert(0, str(DATASETS))
    import generate

    return generate


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def interleaved(systems: dict[str, Callable[[], object]], repeats: int,
                warmup: bool = True, log: bool = True) -> dict[str, list[float]]:
    """Wall seconds of each system, `repeats` times, in an order that rotates every repeat.

    One untimed warm-up round first (imports, page faults, thread pools).
    """
    names = list(systems)
    if warmup:
        for name in names:
            systems[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            start = time.perf_counter()
            systems[name]()
            times[name].append(time.perf_counter() - start)
        if log:
            shown = "  ".join(f"{n}={times[n][-1]:.3f}s" for n in names)
            print(f"  repeat {r + 1}/{repeats}: {shown}", file=sys.stderr, flush=True)
    return times


def paired_ratio(num: Sequence[float], den: Sequence[float]) -> float:
    """Median over repeats of num[i] / den[i]."""
    return median([a / b for a, b in zip(num, den, strict=True)])


def machine() -> dict[str, str]:
    """nproc, CPU model, numpy's BLAS, versions and the date: what a reader needs to compare."""
    import numpy as np

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    blas = "unknown"
    try:
        info = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = f"{info.get('name')} {info.get('version')}"
    except Exception:  # older numpy: no dict mode
        pass
    threads = "?"
    try:
        from threadpoolctl import threadpool_info

        threads = ",".join(f"{i['internal_api']}:{i['num_threads']}" for i in threadpool_info())
    except Exception:
        pass
    load = "?"
    with contextlib.suppress(OSError):
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": blas,
        "blas_threads": threads,
        "loadavg": load,
    }


def print_machine() -> None:
    for key, value in machine().items():
        print(f"# {key}: {value}")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain left/right aligned text table (numbers right-aligned)."""
    cells = [[str(h) for h in headers]] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(row[k]) for row in cells) for k in range(len(headers))]
    lines = []
    for i, row in enumerate(cells):
        parts = []
        for k, text in enumerate(row):
            numeric = i > 0 and isinstance(rows[i - 1][k], (int, float))
            parts.append(text.rjust(widths[k]) if numeric else text.ljust(widths[k]))
        lines.append("  ".join(parts).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
        return f"{value:.2e}"
    return str(value)


def summary(**values: object) -> str:
    """The machine-readable last line: key=value pairs, floats to 4 significant digits."""
    parts = []
    for key, value in values.items():
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        parts.append(f"{key}={shown}")
    return " ".join(parts)
