"""All-Pairs with an executable F: abengine against bare subprocess calls of the same F.

60 random files (datasets/generate.py `files`) and F = a /bin/sh script that
prints 1 (generate.py `script`): 60 x 60 = 3600 invocations of F. Timed side
by side and interleaved:

    abengine-api   abengine.allpairs(LIST, LIST, F, progress=False)
    abengine-cli   allpairs LIST LIST F -q > /dev/null   (includes interpreter start-up,
                   imports and writing the 3600 text lines)
    bare           subprocess.run([F, fileA, fileB], capture_output=True) for the same
                   3600 pairs from ThreadPoolExecutor(os.cpu_count()) threads

Reported: cells/s of each and the ratio abengine/bare of throughputs (the median of
the per-repeat ratios). Target: abengine/bare >= 0.6.

    python benchmarks/allpairs_executable.py           # 60 files, 3600 cells
    python benchmarks/allpairs_executable.py --quick   # 15 files, 225 cells

The last line is `key=value ...` for scripts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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

import abengine

TARGET = 0.6  # abengine throughput / bare throughput at least this


def allpairs_program() -> str:
    """The `allpairs` console script of this interpreter's environment."""
    beside = Path(sys.executable).parent / "allpairs"
    if beside.exists():
        return str(beside)
    found = shutil.which("allpairs")
    if found is None:
        raise SystemExit("allpairs command not found: install the project (pip install -e .)")
    return found


def bare(F: str, paths: list[str], workers: int) -> list[bytes]:
    pairs = [(a, b) for a in paths for b in paths]

    def call(pair: tuple[str, str]) -> bytes:
        return subprocess.run([F, *pair], capture_output=True).stdout

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(call, pairs))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=60, help="files per set (default 60: 3600 cells)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per system (default 5)")
    p.add_argument("--quick", action="store_true", help="15 files (225 cells)")
    p.add_argument("--keep", action="store_true", help="keep the generated inputs (path printed)")
    args = p.parse_args(argv)
    if args.quick:
        args.count = 15
    if args.repeats < 1 or args.count < 1:
        p.error("--repeats and --count must be at least 1")

    gen = generate_module()
    workers = os.cpu_count() or 1
    tmp = Path(tempfile.mkdtemp(prefix="abengine-bench-exec-"))
    try:
        listing = str(gen.write_files(tmp / "files", count=args.count))
        F = str(gen.write_script(tmp / "f.sh", "1"))
        paths = [str(tmp / "files" / name) for name in Path(listing).read_text().split()]
        cells = args.count * args.count
        cli = [allpairs_program(), listing, listing, F, "-q"]

        print_machine()
        print(f"# {args.count} files x {args.count} files = {cells} calls of {F} (prints 1); "
              f"bare: ThreadPoolExecutor({workers}); {args.repeats} interleaved repeats, medians")
        print(f"# cli: {' '.join(cli)} > /dev/null")

        # Correctness, once: every cell of every system is 1.
        M = abengine.allpairs(listing, listing, F, progress=False)
        ok_api = M.shape == (args.count, args.count) and bool(np.all(M == 1.0))
        text = subprocess.run(cli, capture_output=True, text=True, check=True).stdout.splitlines()
        ok_cli = len(text) == cells and all(line.endswith("\t1") for line in text)
        ok_bare = all(out == b"1\n" for out in bare(F, paths, workers))
        ok = ok_api and ok_cli and ok_bare
        print(f"# every cell is 1: api {ok_api}, cli {ok_cli}, bare {ok_bare}")
        with abengine.LocalEngine() as engine:
            job = abengine.AllPairs(listing, listing, F)
            t_cell = job.measure(engine)
            job.seconds_per_cell = t_cell
            block = job.choose_block(engine)
        print(f"# abengine's probe: {t_cell * 1e3:.2f} ms per call of F -> block {tuple(block)}")

        systems = {
            "abengine-api": lambda: abengine.allpairs(listing, listing, F, progress=False),
            "abengine-cli": lambda: subprocess.run(cli, stdout=subprocess.DEVNULL, check=True),
            "bare": lambda: bare(F, paths, workers),
        }
        times = interleaved(systems, args.repeats)
    finally:
        if args.keep:
            print(f"# inputs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    rows = []
    for name, t in times.items():
        # throughput ratio = bare time / abengine time, paired per repeat
        ratio = paired_ratio(times["bare"], t)
        rows.append([name, median(t), min(t), max(t), cells / median(t), ratio])
    print()
    print(table(["system", "median_s", "min_s", "max_s", "cells_per_s", "vs_bare"], rows))
    api = paired_ratio(times["bare"], times["abengine-api"])
    via_cli = paired_ratio(times["bare"], times["abengine-cli"])
    print()
    print(f"# abengine/bare throughput: api {api:.3f}, cli {via_cli:.3f} "
          f"(target >= {TARGET:g}: api {'met' if api >= TARGET else 'MISSED'}, "
          f"cli {'met' if via_cli >= TARGET else 'MISSED'})")
    print(summary(
        cells=cells,
        api_cells_per_s=cells / median(times["abengine-api"]),
        cli_cells_per_s=cells / median(times["abengine-cli"]),
        bare_cells_per_s=cells / median(times["bare"]),
        api_vs_bare=api, cli_vs_bare=via_cli,
        api_target="met" if api >= TARGET else "missed",
        cli_target="met" if via_cli >= TARGET else "missed",
        correct="yes" if ok else "no", repeats=args.repeats,
    ))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
