"""All-Pairs of in-memory vectors: abengine against scipy's cdist and a numpy GEMM.

A (4000 x 256) and B (3000 x 256) float64, seeded uniform [0, 1) (the sizes and
seeds of datasets/README.md). For F in euclidean and cosine it times, side by
side and interleaved:

    abengine     abengine.allpairs(A, B, F, progress=False): what a user pays,
                 including the probe that times F and the planning
    abengine-t   the same with seconds_per_cell= given (no probe)
    cdist        scipy.spatial.distance.cdist(A, B, metric)
                 (cosine: abengine returns the similarity, 1 - cdist's distance)
    gemm         one numpy computation built on a single A @ B.T
                 euclidean: sqrt(max(|a|^2 + |b|^2 - 2 A B^T, 0))
                 cosine:    A B^T / (|a| |b|)

and checks that every result matches cdist to 1e-6, relative to the scale of
the values. Targets: abengine faster than cdist, and within 1.5x of the GEMM.

    python benchmarks/allpairs_vectors.py            # the issue's sizes
    python benchmarks/allpairs_vectors.py --quick    # small sizes, a smoke test
    python benchmarks/allpairs_vectors.py --breakdown  # also where abengine's time goes

The last line is `key=value ...` for scripts.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from _common import (
    generate_module,
    interleaved,
    median,
    paired_ratio,
    print_machine,
    summary,
    table,
)
from scipy.spatial.distance import cdist

import abengine

METRICS = ("euclidean", "cosine")
TOLERANCE = 1e-6
TARGET_VS_CDIST = 1.0  # abengine / cdist below this
TARGET_VS_GEMM = 1.5  # abengine / gemm at most this


def gemm_euclidean(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    a2 = np.einsum("ij,ij->i", A, A)
    b2 = np.einsum("ij,ij->i", B, B)
    D = A @ B.T
    D *= -2.0
    D += a2[:, None]
    D += b2[None, :]
    np.maximum(D, 0.0, out=D)
    return np.sqrt(D, out=D)


def gemm_cosine(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    na = np.sqrt(np.einsum("ij,ij->i", A, A))
    nb = np.sqrt(np.einsum("ij,ij->i", B, B))
    S = A @ B.T
    S /= na[:, None]
    S /= nb[None, :]
    return S


GEMM = {"euclidean": gemm_euclidean, "cosine": gemm_cosine}


def scipy_reference(A: np.ndarray, B: np.ndarray, metric: str) -> np.ndarray:
    D = cdist(A, B, metric)
    return 1.0 - D if metric == "cosine" else D


def rel_diff(x: np.ndarray, ref: np.ndarray) -> float:
    """Largest absolute difference, relative to the largest magnitude in the reference."""
    return float(np.max(np.abs(x - ref)) / max(np.max(np.abs(ref)), np.finfo(float).tiny))


def probe_seconds_per_cell(A: np.ndarray, B: np.ndarray, metric: str) -> tuple[float, tuple]:
    """What abengine's own probe measures for F (median of 3), and the block it then picks."""
    values = []
    with abengine.LocalEngine() as engine:
        job = abengine.AllPairs(A, B, metric)
        for _ in range(3):
            values.append(job.measure(engine))
        t = median(values)
        job.seconds_per_cell = t
        block = job.choose_block(engine)
    return t, tuple(block)


def breakdown(A: np.ndarray, B: np.ndarray, metric: str, block: tuple[int, int],
              repeats: int) -> tuple[list[list[object]], list[list[object]]]:
    """Time the pieces of an abengine call on their own (internal APIs: for diagnosis only).

    Per block: the builtin kernel on one block of the shape abengine picks, against
    A @ B.T and the GEMM reference on the same block. Per call: what abengine does
    once per call besides the kernels, against the GEMM reference on the whole matrix.
    """
    from abengine.functions import BUILTINS
    from abengine.sets import load_set

    kernel = BUILTINS[metric].kernel
    Ab, Bb = A[: block[0]], B[: block[1]]
    per_block = interleaved({
        "A @ B.T": lambda: Ab @ Bb.T,
        "gemm reference": lambda: GEMM[metric](Ab, Bb),
        f"abengine kernel ({metric})": lambda: kernel(Ab, Bb),
    }, repeats, log=False)
    anchor = per_block["A @ B.T"]
    block_rows = [[name, median(t) * 1e3, paired_ratio(t, anchor)]
                  for name, t in per_block.items()]

    sets = [load_set(A, "A"), load_set(B, "B")]

    def fingerprints() -> None:
        for s in sets:
            s._digest = ""
            s.fingerprint()

    def probe() -> None:
        with abengine.LocalEngine() as engine:
            abengine.AllPairs(A, B, metric).measure(engine)

    per_call = interleaved({
        "gemm reference, whole matrix": lambda: GEMM[metric](A, B),
        "set fingerprints (sha256 of A and B)": fingerprints,
        "result allocation np.full(nan)": lambda: np.full((len(A), len(B)), np.nan),
        "probe (AllPairs.measure)": probe,
        "abengine.allpairs, whole call": lambda: abengine.allpairs(A, B, metric,
                                                                   progress=False),
    }, repeats, log=False)
    anchor = per_call["gemm reference, whole matrix"]
    call_rows = [[name, median(t) * 1e3, paired_ratio(t, anchor)]
                 for name, t in per_call.items()]
    return block_rows, call_rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows-a", type=int, default=4000)
    p.add_argument("--rows-b", type=int, default=3000)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--repeats", type=int, default=7, help="timed repeats per system (default 7)")
    p.add_argument("--metrics", nargs="+", choices=METRICS, default=list(METRICS))
    p.add_argument("--quick", action="store_true", help="small sizes (500 x 400 x 64)")
    p.add_argument("--breakdown", action="store_true",
                   help="also time the pieces of an abengine call (kernel, hashing, probe...)")
    args = p.parse_args(argv)
    if args.quick:
        args.rows_a, args.rows_b, args.dim = 500, 400, 64
    if args.repeats < 1:
        p.error("--repeats must be at least 1")

    gen = generate_module()
    A = gen.make_vectors(args.rows_a, args.dim, "float64", seed=0)
    B = gen.make_vectors(args.rows_b, args.dim, "float64", seed=1)
    print_machine()
    print(f"# A {A.shape} B {B.shape} float64, {args.repeats} interleaved repeats, "
          "medians; ratios are medians of per-repeat ratios")

    rows, results, blocks, all_ok = [], {}, {}, True
    for metric in args.metrics:
        t_cell, block_t = probe_seconds_per_cell(A, B, metric)
        blocks[metric] = block_t
        ref = scipy_reference(A, B, metric)
        errors = {
            "abengine": rel_diff(abengine.allpairs(A, B, metric, progress=False), ref),
            "abengine-t": rel_diff(abengine.allpairs(A, B, metric, progress=False,
                                                     seconds_per_cell=t_cell), ref),
            "gemm": rel_diff(GEMM[metric](A, B), ref),
        }
        del ref
        ok = all(e <= TOLERANCE for e in errors.values())
        all_ok &= ok
        print(f"# {metric}: seconds_per_cell={t_cell:.3g} (abengine's probe) -> block {block_t}; "
              "max rel diff to cdist: "
              + ", ".join(f"{k} {v:.2e}" for k, v in errors.items())
              + ("" if ok else f"  ** ABOVE {TOLERANCE:g} **"))
        systems = {
            "abengine": lambda m=metric: abengine.allpairs(A, B, m, progress=False),
            "abengine-t": lambda m=metric, t=t_cell: abengine.allpairs(
                A, B, m, progress=False, seconds_per_cell=t),
            "cdist": lambda m=metric: cdist(A, B, m),
            "gemm": lambda m=metric: GEMM[m](A, B),
        }
        print(f"# timing {metric} ...", file=sys.stderr, flush=True)
        times = interleaved(systems, args.repeats)
        results[metric] = times
        for name, t in times.items():
            rows.append([metric, name, median(t), min(t), max(t),
                         paired_ratio(t, times["cdist"]), paired_ratio(t, times["gemm"]),
                         f"{errors[name]:.1e}" if name in errors else "(ref)"])

    print()
    print(table(["F", "system", "median_s", "min_s", "max_s", "/cdist", "/gemm", "rel_diff"],
                rows))

    if args.breakdown:
        for metric in args.metrics:
            block_rows, call_rows = breakdown(A, B, metric, blocks[metric], args.repeats)
            print(f"\n# where the time goes, {metric}: one {blocks[metric][0]}x"
                  f"{blocks[metric][1]} block (median of {args.repeats})")
            print(table(["per block", "median_ms", "/A@B.T"], block_rows))
            print(f"# {metric}: once per call (median of {args.repeats})")
            print(table(["per call", "median_ms", "/gemm_ref"], call_rows))

    out: dict[str, object] = {}
    verdicts = []
    for metric, times in results.items():
        short = "euc" if metric == "euclidean" else "cos"
        vs_cdist = paired_ratio(times["abengine"], times["cdist"])
        vs_gemm = paired_ratio(times["abengine"], times["gemm"])
        vs_gemm_t = paired_ratio(times["abengine-t"], times["gemm"])
        out[f"{short}_abengine_s"] = median(times["abengine"])
        out[f"{short}_abengine_t_s"] = median(times["abengine-t"])
        out[f"{short}_cdist_s"] = median(times["cdist"])
        out[f"{short}_gemm_s"] = median(times["gemm"])
        out[f"{short}_vs_cdist"] = vs_cdist
        out[f"{short}_vs_gemm"] = vs_gemm
        out[f"{short}_t_vs_gemm"] = vs_gemm_t
        met_cdist = vs_cdist < TARGET_VS_CDIST
        met_gemm = vs_gemm <= TARGET_VS_GEMM
        out[f"{short}_target_cdist"] = "met" if met_cdist else "missed"
        out[f"{short}_target_gemm"] = "met" if met_gemm else "missed"
        verdicts.append(f"{metric}: abengine/cdist {vs_cdist:.3f} "
                        f"({'met' if met_cdist else 'MISSED'}: < {TARGET_VS_CDIST:g}), "
                        f"abengine/gemm {vs_gemm:.3f} "
                        f"({'met' if met_gemm else 'MISSED'}: <= {TARGET_VS_GEMM:g}); "
                        f"with seconds_per_cell: /gemm {vs_gemm_t:.3f}")
    print()
    for line in verdicts:
        print("# " + line)
    out["correct"] = "yes" if all_ok else "no"
    out["repeats"] = args.repeats
    out["size"] = f"{args.rows_a}x{args.rows_b}x{args.dim}"
    print(summary(**out))
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
