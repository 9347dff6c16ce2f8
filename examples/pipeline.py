"""Images → features (Map) → similarity (All-Pairs) → labels (Classify), end to end.

    python datasets/generate.py digits-images /tmp/digits     # 1797 8×8 PGM images
    python examples/pipeline.py /tmp/digits

Map extracts a feature vector from every image file; All-Pairs compares every
image with a set of prototype images (the Map and All-Pairs stages run as one
task graph: a block of comparisons starts as soon as its rows' features
exist); Classify trains nine classifiers on the similarity rows of the
training images and lets them vote on the rest. Run it twice: the second run
takes its features and similarities from the memo and only votes again.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from digit_similarity import shifted_cosine  # noqa: E402

import abengine  # noqa: E402

SIDE = 8


def features(path: str) -> np.ndarray:
    """An 8×8 PGM image (maxval 16) as 64 numbers: its pixels, centred and scaled, so that
    faint and bold strokes of one digit look alike."""
    data = Path(path).read_bytes()
    pixels = np.frombuffer(data[-SIDE * SIDE:], dtype=np.uint8).astype(float)
    return (pixels - pixels.mean()) / (pixels.std() or 1.0)


def nearest_neighbour(train_X: np.ndarray, train_y: np.ndarray, test_X: np.ndarray) -> np.ndarray:
    """A small classifier: the label of the closest training row."""
    distances = ((test_X**2).sum(1)[:, None] + (train_X**2).sum(1)[None]
                 - 2 * test_X @ train_X.T)
    return train_y[distances.argmin(1)]


def split(count: int, prototypes: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Prototype, training and testing image indices (training includes the prototypes)."""
    order = np.random.default_rng(seed).permutation(count)
    train, test = np.sort(order[: count * 2 // 3]), np.sort(order[count * 2 // 3:])
    return train[:prototypes], train, test


def pipeline(directory: Path, prototypes: int = 100, *, engine=None, memo=None,
             progress: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(similarity matrix, labels voted for the testing images, their true labels)."""
    images = [str(directory / name) for name in (directory / "digits.list").read_text().split()]
    truth = np.loadtxt(directory / "labels.txt", dtype=int)
    protos, train, test = split(len(images), prototypes)
    feats = abengine.map(images, features, lazy=True)
    proto_feats = abengine.map([images[i] for i in protos], features, lazy=True)
    similarity = abengine.allpairs(feats, proto_feats, shifted_cosine, engine=engine,
                                   memo=memo, progress=progress)
    labels = abengine.classify(similarity[test], (similarity[train], truth[train]),
                               nearest_neighbour, n=9, partition="bootstrap", engine=engine,
                               progress=progress)
    return similarity, labels, truth[test]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("images", type=Path, help="a directory from generate.py digits-images")
    parser.add_argument("--prototypes", type=int, default=100)
    parser.add_argument("--no-memo", action="store_true", help="recompute every stage")
    args = parser.parse_args()
    start = time.perf_counter()
    similarity, labels, truth = pipeline(args.images, args.prototypes,
                                         memo=False if args.no_memo else None)
    print(f"{similarity.shape[0]} images x {similarity.shape[1]} prototypes; accuracy of the "
          f"vote on {len(truth)} test images: {np.mean(labels == truth):.3f} "
          f"({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
