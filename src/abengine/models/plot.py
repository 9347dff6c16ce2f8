"""`--plot FILE.png`: predicted time against block size, with measured points where there are some.

matplotlib is an optional extra (`pip install 'abengine[plot]'`); it is
imported only here, and only when a picture is asked for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import UsageError
from .common import Prediction


def check_plot_path(path: str | Path) -> Path:
    """Refuse a picture that cannot be written before any work starts."""
    path = Path(path)
    if path.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise UsageError(f"--plot {path}: use a .png (or .svg, .pdf) file name")
    if not path.parent.is_dir():
        raise UsageError(f"--plot {path}: directory {path.parent} does not exist")
    _pyplot()
    return path


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'abengine[plot]'") from None
    return plt


def plot_predictions(path: str | Path, series: Sequence[tuple[str, Prediction]],
                     measured: Mapping[str, Mapping[int, float]] | None = None,
                     title: str = "") -> Path:
    """Draw each prediction's curve (one per engine, say) and the measured points.

    `measured[name][size]` is the measured wall time at that block size for the
    series called `name`; the chosen block of each series is marked.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for k, (name, pred) in enumerate(series):
        color = f"C{k}"
        points = sorted(pred.candidates, key=lambda c: c.size)
        ax.plot([c.size for c in points], [c.seconds for c in points], "-", color=color,
                label=f"{name}: predicted")
        ax.plot([pred.chosen.size], [pred.chosen.seconds], "*", color=color, markersize=14,
                label=f"{name}: chosen ({pred.chosen.label})")
        seen = (measured or {}).get(name)
        if seen:
            sizes = sorted(seen)
            ax.plot(sizes, [seen[s] for s in sizes], "o", color=color, markerfacecolor="none",
                    label=f"{name}: measured")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(series[0][1].x_label if series else "block size")
    ax.set_ylabel("wall time (s)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title, fontsize="medium")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
