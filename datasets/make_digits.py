"""Convert scikit-learn's bundled handwritten digits into datasets/digits/digits.csv.

Run once; the CSV is committed so nothing needs scikit-learn at run time.

    .venv/bin/python datasets/make_digits.py

The source is ``sklearn/datasets/data/digits.csv.gz`` inside an installed scikit-learn:
1797 rows of 65 comma-separated integers (64 pixel intensities 0..16 in row-major
order of an 8x8 image, then the label 0..9). We read that file directly rather than
calling ``load_digits`` so the output is byte-for-byte the bundled values, in the
original order, with nothing converted through floats.
"""

from __future__ import annotations

import argparse
import collections
import csv
import gzip
import importlib.resources
import io
import sys
from pathlib import Path

N_PIXELS = 64
OUT_DEFAULT = Path(__file__).resolve().parent / "digits" / "digits.csv"


def bundled_digits_text() -> str:
    """Return the text of scikit-learn's digits.csv.gz (the only place sklearn is needed)."""
    resource = importlib.resources.files("sklearn.datasets.data").joinpath("digits.csv.gz")
    with resource.open("rb") as raw, gzip.open(raw, "rt", encoding="ascii") as text:
        return text.read()


def parse_rows(text: str) -> list[list[int]]:
    """Parse and validate the 65-column rows, so a changed upstream format fails loudly."""
    rows: list[list[int]] = []
    for lineno, fields in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not fields:
            continue
        if len(fields) != N_PIXELS + 1:
            raise ValueError(f"line {lineno}: expected {N_PIXELS + 1} fields, got {len(fields)}")
        values = [float(f) for f in fields]
        if any(v != int(v) for v in values):
            raise ValueError(f"line {lineno}: non-integer value")
        row = [int(v) for v in values]
        if not all(0 <= p <= 16 for p in row[:N_PIXELS]) or not 0 <= row[-1] <= 9:
            raise ValueError(f"line {lineno}: value out of range")
        rows.append(row)
    return rows


def write_csv(rows: list[list[int]], out: Path) -> None:
    """Write the header ``p0,...,p63,label`` and plain integer rows (small, diff-friendly)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    header = [f"p{i}" for i in range(N_PIXELS)] + ["label"]
    with out.open("w", encoding="ascii", newline="") as fh:
        fh.write(",".join(header) + "\n")
        for row in rows:
            fh.write(",".join(map(str, row)) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT_DEFAULT, help="output CSV path")
    args = parser.parse_args(argv)

    rows = parse_rows(bundled_digits_text())
    write_csv(rows, args.out)
    counts = collections.Counter(row[-1] for row in rows)
    dist = " ".join(f"{label}:{counts[label]}" for label in sorted(counts))
    print(f"wrote {len(rows)} digits to {args.out} (labels {dist})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
