"""Start-up of batch workers: from the command to the first task running, per system.

Runs, for each system that is up (local always; ssh, slurm and sge when
scripts/clusters/up.sh wrote them into /var/tmp/abengine-clusters/env):

    allpairs SET SET F -t 0.01 -x 1 -y 1 -q --engine workqueue --workers 2 --batch SYSTEM

where F, a shell script, first appends the time it starts (date +%s.%N) to a
file. "first task" is the earliest of those times minus the moment the
command was started (the interpreter's start-up included); "total" is the
whole command (4x4 cells, one per task, then every job removed). The systems
are interleaved, each figure is the median of the repeats. Target: local
SLURM with 2 workers under 10 s to the first task.

    python benchmarks/batch_startup.py            # 5 repeats
    python benchmarks/batch_startup.py --quick    # 2 repeats

The last line is `key=value ...` for scripts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENV_FILE = Path("/var/tmp/abengine-clusters/env")
ALLPAIRS = Path(sys.executable).parent / "allpairs"


def clusters() -> dict[str, str]:
    if not ENV_FILE.is_file():
        return {}
    pairs = (line.split("=", 1) for line in ENV_FILE.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs}


def systems(env: dict[str, str]) -> dict[str, list[str]]:
    """System name -> its extra command-line options, for the systems that are up."""
    found = {"local": []}
    if "ABENGINE_TEST_SSH_HOST" in env:
        host = (f"{env['ABENGINE_TEST_SSH_USER']}@{env['ABENGINE_TEST_SSH_HOST']}:"
                f"{env['ABENGINE_TEST_SSH_PORT']}")
        found["ssh"] = ["--hosts", host, "--ssh-key", env["ABENGINE_TEST_SSH_KEY"],
                        "--ssh-known-hosts", env["ABENGINE_TEST_SSH_KNOWN_HOSTS"]]
    if "ABENGINE_TEST_SLURM" in env:
        found["slurm"] = []
    if "ABENGINE_TEST_SGE" in env:
        found["sge"] = []
    return found


def make_inputs(root: Path) -> tuple[Path, Path, Path]:
    """A 4-element set, and F that stamps its start in `stamps` and sums two numbers."""
    names = []
    for i in range(4):
        (root / f"n{i}.txt").write_text(f"{i}\n")
        names.append(f"n{i}.txt")
    listing = root / "set.list"
    listing.write_text("\n".join(names) + "\n")
    stamps = root / "stamps"
    f = root / "f.sh"
    f.write_text(f'#!/bin/sh\ndate +%s.%N >> {stamps}\n'
                 'a=$(cat "$1"); b=$(cat "$2"); echo $((a + b))\n')
    f.chmod(0o755)
    return listing, f, stamps


def one_run(system: str, options: list[str], listing: Path, f: Path, stamps: Path,
            env: dict[str, str]) -> tuple[float, float]:
    """(seconds to the first task, seconds in all) of one command."""
    stamps.unlink(missing_ok=True)
    start = time.time()
    done = subprocess.run([str(ALLPAIRS), str(listing), str(listing), str(f), "-t", "0.01",
                           "-x", "1", "-y", "1", "-q", "--engine", "workqueue", "--workers", "2",
                           "--batch", system, *options], capture_output=True, text=True,
                          env=env, stdin=subprocess.DEVNULL)
    total = time.time() - start
    if done.returncode != 0 or len(done.stdout.splitlines()) != 16:
        sys.exit(f"batch_startup: {system} failed ({done.returncode}):\n{done.stderr}")
    first = min(float(line) for line in stamps.read_text().split())
    return first - start, total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2 repeats instead of 5")
    args = p.parse_args()
    repeats = 2 if args.quick else 5
    env_file = clusters()
    env = {**os.environ, **{k: v for k, v in env_file.items() if k.startswith("SGE_")}}
    found = systems(env_file)
    for missing in sorted({"ssh", "slurm", "sge"} - set(found)):
        print(f"# {missing}: not up (run scripts/clusters/up.sh {missing}); skipped")
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in found}
    with tempfile.TemporaryDirectory(prefix="abengine-bench-") as tmp:
        listing, f, stamps = make_inputs(Path(tmp))
        names = list(found)
        for r in range(repeats):
            for name in names[r % len(names):] + names[:r % len(names)]:
                results[name].append(one_run(name, found[name], listing, f, stamps, env))
                first, total = results[name][-1]
                print(f"  repeat {r + 1}/{repeats} {name}: first task {first:.2f} s, "
                      f"total {total:.2f} s", file=sys.stderr, flush=True)
    print(f"{'system':<8} {'first_task_s':>13} {'total_s':>9}   (2 workers, median of {repeats})")
    summary = []
    for name, runs in results.items():
        first = statistics.median(r[0] for r in runs)
        total = statistics.median(r[1] for r in runs)
        print(f"{name:<8} {first:>13.2f} {total:>9.2f}")
        summary.append(f"{name}_first_task_s={first:.2f} {name}_total_s={total:.2f}")
    print(" ".join(summary))


if __name__ == "__main__":
    main()
