"""A comparison function for 8×8 digit images that tolerates a one-pixel shift.

Plain cosine similarity punishes a digit drawn one pixel to the left; this
takes the best cosine over the nine shifts of b by at most one pixel. It is
ordinary Python + numpy on one pair at a time: the kind of F users write.
"""

from __future__ import annotations

import numpy as np

SIDE = 8
SHIFTS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]


def shifted_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Best cosine similarity of image a against image b shifted by ≤ 1 pixel."""
    a = np.asarray(a, dtype=np.float64).reshape(SIDE, SIDE)
    b = np.asarray(b, dtype=np.float64).reshape(SIDE, SIDE)
    padded = np.pad(b, 1)
    na = np.sqrt((a * a).sum()) or 1.0
    best = -1.0
    for dy, dx in SHIFTS:
        shifted = padded[1 + dy : 1 + dy + SIDE, 1 + dx : 1 + dx + SIDE]
        nb = np.sqrt((shifted * shifted).sum()) or 1.0
        best = max(best, float((a * shifted).sum()) / (na * nb))
    return best
