"""Streaming a large All-Pairs result to HDF5: peak memory and time, against a hand-written loop.

The set is N x 256 float32 vectors saved as .npy (datasets/generate.py
`vectors`); F is the builtin euclidean with dtype="float32"; the N x N result
goes to an .h5 file in a scratch directory on the repository's disk
(default /work/main/.bench-tmp, removed afterwards). At N = 20000 the result is
20000 x 20000 float32 = 1600 MB.

Each run is a fresh child process, so its peak RSS is its own: the parent
reads it from os.wait4 (the kernel's ru_maxrss for exactly that child) and
also polls the child with psutil as a cross-check. Per size, interleaved:

    abengine   abengine.allpairs(V.npy, V.npy, "euclidean", dtype="float32",
                                 output=OUT.h5, progress=False)
    loop       the anchor: a numpy + h5py loop written by hand, 2048 x 2048 tiles,
               sqrt(max(|a|^2 + |b|^2 - 2 A B^T, 0)) in float32, each tile written
               to a chunked dataset as soon as it is computed

plus, once, the resting RSS of each kind of child (imports and the set opened,
no work), so memory beyond the interpreter and libraries is visible. The first
abengine output of each size is checked: random 64 x 64 tiles (and the
diagonal tile) against a direct float64 numpy computation.

    python benchmarks/h5_memory.py                 # N = 5000, 10000, 20000
    python benchmarks/h5_memory.py --size 20000    # one size
    python benchmarks/h5_memory.py --quick         # N = 1000, 2000

The last line is `key=value ...` for scripts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _common import REPO, generate_module, median, paired_ratio, print_machine, summary, table

DIM = 256
MB = 1e6  # decimal megabytes: 20000 x 20000 float32 = 1600 MB
NEED_FREE = 5e9  # bytes free on the scratch disk before a full-size run
TOLERANCE = 1e-5  # float32 result vs float64 reference, relative to the values' scale
LOOP_TILE = 2048


# -- children -------------------------------------------------------------


def child(mode: str, vectors: str, out: str) -> None:
    """Run one measured job in this (child) process; print a JSON line with its own figures."""
    import resource

    import h5py  # noqa: F401 - imports happen before the clock starts, in every mode

    if mode.endswith("abengine"):
        import abengine
    start = time.perf_counter()
    if mode == "abengine":
        abengine.allpairs(vectors, vectors, "euclidean", dtype="float32", output=out,
                          progress=False)
    elif mode == "loop":
        loop_to_h5(vectors, out)
    elif mode == "rest-abengine":  # what the abengine child has loaded, minus the work
        abengine.sets.load_set(vectors)
    elif mode == "rest-loop":
        np.load(vectors, mmap_mode="r")
    else:
        raise SystemExit(f"unknown child mode {mode}")
    seconds = time.perf_counter() - start
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB
    print(json.dumps({"seconds": seconds, "self_rss_mb": own}))


def loop_to_h5(vectors: str, out: str) -> None:
    """The anchor: what a careful numpy user writes by hand to stream the matrix to HDF5."""
    import h5py

    X = np.load(vectors, mmap_mode="r")
    n = len(X)
    tile = min(LOOP_TILE, n)
    x2 = np.einsum("ij,ij->i", X, X)
    with h5py.File(out, "w") as f:
        dset = f.create_dataset("result", shape=(n, n), dtype="float32", chunks=(tile, tile))
        for i in range(0, n, tile):
            A = np.asarray(X[i:i + tile])
            for j in range(0, n, tile):
                D = A @ np.asarray(X[j:j + tile]).T
                D *= -2.0
                D += x2[i:i + tile, None]
                D += x2[None, j:j + tile]
                np.maximum(D, 0.0, out=D)
                np.sqrt(D, out=D)
                dset[i:i + tile, j:j + tile] = D


# -- parent ---------------------------------------------------------------


def tree_rss(proc) -> int:
    """Resident bytes of a process and its descendants now (0 once it is gone)."""
    import psutil

    total = 0
    try:
        members = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    for member in members:
        with contextlib.suppress(psutil.Error):
            total += member.memory_info().rss
    return total


def run_child(mode: str, vectors: Path, out: Path) -> dict[str, float]:
    """Start a child, poll its RSS, reap it with wait4: its peak RSS and times."""
    import psutil

    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode,
           "--vectors", str(vectors), "--out", str(out)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    polled = 0
    watched = psutil.Process(proc.pid)
    while True:
        polled = max(polled, tree_rss(watched))
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        time.sleep(0.02)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"child {mode} failed ({proc.returncode}):\n{stderr}")
    own = json.loads(stdout.strip().splitlines()[-1])
    return {
        "peak_rss_mb": usage.ru_maxrss * 1024 / MB,  # this child (and any child it reaped)
        "polled_rss_mb": polled / MB,
        "seconds": own["seconds"],  # the call itself, inside the child, after imports
        "wall": wall,  # including interpreter start-up and imports
    }


def verify(out: Path, vectors: Path, tiles: int = 5, side: int = 64, seed: int = 0) -> float:
    """Largest relative difference of random tiles of the .h5 to a direct float64 computation."""
    import h5py

    X = np.load(vectors).astype(np.float64)
    n = len(X)
    side = min(side, n)
    rng = np.random.default_rng(seed)
    corners = [(0, 0)] + [tuple(int(v) for v in rng.integers(0, n - side + 1, 2))
                          for _ in range(tiles)]
    worst = 0.0
    with h5py.File(out, "r") as f:
        if tuple(f["result"].shape) != (n, n) or f["result"].dtype != np.float32:
            raise AssertionError(f"{out}: result is {f['result'].shape} {f['result'].dtype}")
        if "complete" in f.attrs and not bool(f.attrs["complete"]):
            raise AssertionError(f"{out}: not marked complete")
        for i, j in corners:
            got = f["result"][i:i + side, j:j + side].astype(np.float64)
            diff = X[i:i + side, None, :] - X[None, j:j + side, :]
            ref = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))
            worst = max(worst, float(np.max(np.abs(got - ref)) / np.max(np.abs(ref))))
    return worst


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, help="one size N (default: 5000, 10000 and 20000)")
    p.add_argument("--sizes", type=int, nargs="+", default=[5000, 10000, 20000])
    p.add_argument("--repeats", type=int, default=5, help="runs per system and size (default 5)")
    p.add_argument("--tmp", type=Path, default=REPO / ".bench-tmp",
                   help="scratch directory on the repository's disk (removed afterwards)")
    p.add_argument("--quick", action="store_true", help="N = 1000 and 2000")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--vectors", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child, args.vectors, args.out)
        return 0
    sizes = [1000, 2000] if args.quick else [args.size] if args.size else args.sizes
    if args.repeats < 1 or min(sizes) < 1:
        p.error("--repeats and sizes must be at least 1")

    args.tmp.mkdir(parents=True, exist_ok=True)
    largest = max(sizes) ** 2 * 4
    need = 3 * largest + 1e8 if args.quick else max(NEED_FREE, 3 * largest)
    free = shutil.disk_usage(args.tmp).free
    print_machine()
    if free < need:
        print(f"# SKIPPED: {args.tmp} has {free / 1e9:.1f} GB free; this run needs "
              f"{need / 1e9:.1f} GB (the largest result is {largest / 1e9:.1f} GB)")
        print(summary(skipped="low_disk", free_gb=free / 1e9, need_gb=need / 1e9))
        shutil.rmtree(args.tmp, ignore_errors=True)
        return 0
    print(f"# scratch {args.tmp} ({free / 1e9:.0f} GB free); {DIM}-dim float32 vectors, "
          f"euclidean, float32 result; {args.repeats} interleaved runs per system; medians")

    gen = generate_module()
    rows, out_kv, all_ok = [], {}, True
    try:
        first = args.tmp / f"v{sizes[0]}.npy"
        gen.write_vectors(first, rows=sizes[0], dim=DIM, dtype="float32", seed=0)
        rest = {m: run_child(f"rest-{m}", first, args.tmp / "unused.h5")["peak_rss_mb"]
                for m in ("abengine", "loop")}
        print(f"# resting RSS (imports, set opened, no work): abengine child "
              f"{rest['abengine']:.0f} MB, loop child {rest['loop']:.0f} MB")
        for n in sizes:
            vectors = args.tmp / f"v{n}.npy"
            if not vectors.exists():
                gen.write_vectors(vectors, rows=n, dim=DIM, dtype="float32", seed=0)
            matrix_mb = n * n * 4 / MB
            runs: dict[str, list[dict[str, float]]] = {"abengine": [], "loop": []}
            error = None
            for r in range(args.repeats):
                order = ["abengine", "loop"] if r % 2 == 0 else ["loop", "abengine"]
                for mode in order:
                    out = args.tmp / f"{mode}-{n}.h5"
                    runs[mode].append(run_child(mode, vectors, out))
                    if error is None and mode == "abengine":
                        error = verify(out, vectors)
                    out.unlink(missing_ok=True)
                shown = "  ".join(f"{m}={runs[m][-1]['seconds']:.2f}s/"
                                  f"{runs[m][-1]['peak_rss_mb']:.0f}MB" for m in runs)
                print(f"  N={n} run {r + 1}/{args.repeats}: {shown}", file=sys.stderr, flush=True)
            ok = error is not None and error <= TOLERANCE
            all_ok &= ok
            for mode, rs in runs.items():
                rss = median([x["peak_rss_mb"] for x in rs])
                rows.append([n, mode, matrix_mb, rss, max(x["polled_rss_mb"] for x in rs),
                             rss / matrix_mb, median([x["seconds"] for x in rs]),
                             paired_ratio([x["seconds"] for x in rs],
                                          [x["seconds"] for x in runs["loop"]]),
                             f"{error:.1e}" if mode == "abengine" else "-"])
            ab = runs["abengine"]
            out_kv[f"n{n}_rss_mb"] = median([x["peak_rss_mb"] for x in ab])
            out_kv[f"n{n}_rss_over_matrix"] = out_kv[f"n{n}_rss_mb"] / matrix_mb
            out_kv[f"n{n}_loop_rss_mb"] = median([x["peak_rss_mb"] for x in runs["loop"]])
            out_kv[f"n{n}_seconds"] = median([x["seconds"] for x in ab])
            out_kv[f"n{n}_vs_loop"] = paired_ratio([x["seconds"] for x in ab],
                                                   [x["seconds"] for x in runs["loop"]])
            print(f"# N={n}: matrix {matrix_mb:.0f} MB, abengine peak RSS "
                  f"{out_kv[f'n{n}_rss_mb']:.0f} MB; max rel diff of checked tiles {error:.1e}"
                  + ("" if ok else f"  ** ABOVE {TOLERANCE:g} **"), file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(args.tmp, ignore_errors=True)

    print()
    print(table(["N", "system", "matrix_MB", "peak_rss_MB", "polled_max_MB", "rss/matrix",
                 "median_s", "/loop_s", "rel_diff"], rows))
    ab_rss = [out_kv[f"n{n}_rss_mb"] for n in sizes]
    growth = ab_rss[-1] / ab_rss[0]
    print()
    print(f"# abengine peak RSS over N = {', '.join(map(str, sizes))}: "
          + ", ".join(f"{x:.0f}" for x in ab_rss)
          + f" MB (x{growth:.2f} from smallest to largest, while the matrix grows "
          f"x{(sizes[-1] / sizes[0]) ** 2:.0f}); resting RSS {rest['abengine']:.0f} MB")
    print(summary(**out_kv, rest_rss_mb=rest["abengine"], rss_growth=growth,
                  correct="yes" if all_ok else "no", repeats=args.repeats))
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
