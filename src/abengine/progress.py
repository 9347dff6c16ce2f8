"""A progress bar on stderr (cells done, rate, ETA) for runs longer than a moment."""

from __future__ import annotations

import sys

from tqdm import tqdm

#: Runs that finish sooner than this never draw a bar.
DELAY_SECONDS = 2.0


def progress_bar(total: int, enabled: bool = True, unit: str = "cell", initial: int = 0) -> tqdm:
    return tqdm(
        total=total, initial=initial, unit=unit, unit_scale=True, delay=DELAY_SECONDS,
        mininterval=0.5, file=sys.stderr, disable=not enabled, dynamic_ncols=True,
        leave=False,
    )
