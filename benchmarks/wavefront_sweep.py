"""Wavefront block-size sweep: the model's predicted time against the measured one.

Three series, each a sweep of block sides plus `auto` (the model's own choice,
its probe included), interleaved and repeated (medians):

  local-python   the local engine, a Python F of ~100 µs of arithmetic per cell
  wq-python      Work Queue with 2 local workers (1 core each), the same F
  cli-exec       the `wavefront` command on the local engine, an executable F
                 (a /bin/sh script: one process per cell), and `cli-startup`, a
                 1 × 1 run, for the command's fixed cost

For every block side the prediction uses the parameters the `auto` run of the
same repeat measured (F's time per cell, the dispatch latency and the master's
CPU per task, the slots); the figure is the median over the repeats. The CLI's
prediction is for the run, so its measured points have the median start-up
subtracted. Checks: every result equals a plain double loop. Targets: the
automatically chosen block within 15% of the best measured time, and the
prediction at the chosen block within 35% of the time measured there.

    python benchmarks/wavefront_sweep.py                 # all three series (~5 minutes)
    python benchmarks/wavefront_sweep.py --plot docs/wavefront_sweep.png
    python benchmarks/wavefront_sweep.py --quick         # a smoke test
"""

from __future__ import annotations

import argparse
import functools
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from _common import interleaved, median, print_machine, summary, table

import abengine
from abengine.engines import make_engine
from abengine.models import wavefront as model
from abengine.models.common import Candidate, Measured, Prediction, Resources

WAVEFRONT = Path(sys.executable).parent / "wavefront"
#: Iterations of F's inner loop: set by `calibrate` so that F costs about --cell-us.
LOOPS = 100


def work(x: int, y: int, left: int, below: int, diag: int) -> int:
    """F: a recurrence step whose local cost is LOOPS rounds of integer arithmetic."""
    acc = (left * 31 + below * 17 + diag * 7 + x * y) % 1000003
    for _ in range(LOOPS):
        acc = (acc * 1103515245 + 12345) % 2147483647
    return acc % 1000003


def calibrate(target_us: float) -> float:
    """Set LOOPS so one call of `work` takes about `target_us` here; return the µs per call."""
    global LOOPS
    for _ in range(3):
        start = time.perf_counter()
        for i in range(300):
            work(i, i, i, i, i)
        per_call = (time.perf_counter() - start) / 300
        LOOPS = max(1, round(LOOPS * target_us * 1e-6 / per_call))
    start = time.perf_counter()
    for i in range(500):
        work(i, i, i, i, i)
    return (time.perf_counter() - start) / 500 * 1e6


def reference(N: int, F) -> list[list[int]]:
    R = [[0] * (N + 1) for _ in range(N + 1)]
    for i in range(N + 1):
        R[i][0] = R[0][i] = i
    for x in range(1, N + 1):
        for y in range(1, N + 1):
            R[x][y] = F(x, y, R[x - 1][y], R[x][y - 1], R[x - 1][y - 1])
    return R


SH_F = """#!/bin/sh
read l < "$3"; read b < "$4"; read d < "$5"
echo $(( (l * 31 + b * 17 + d * 7 + $1 * $2) % 1000003 ))
"""


def sh_step(x: int, y: int, left: int, below: int, diag: int) -> int:
    return (left * 31 + below * 17 + diag * 7 + x * y) % 1000003


@dataclass
class Series:
    """One engine and F: the sides swept, the times measured, the parameters the model got."""

    name: str
    N: int
    sides: list[int]
    times: dict[str, list[float]] = field(default_factory=dict)
    measured: list[Measured] = field(default_factory=list)
    chosen: list[int] = field(default_factory=list)
    startup: float = 0.0  # CLI: the command's fixed cost, taken off its points
    choice: int = 0  # the side the timed `auto` runs chose (most of them)

    def measured_at(self, key: str) -> float:
        return median(self.times[key]) - self.startup

    def predicted(self, side: int) -> float:
        return median([model.predict_seconds(self.N, self.N, side, m.seconds_per_cell,
                                             m.resources) for m in self.measured])

    def prediction(self) -> Prediction:
        """The model's curve over every side it weighs (median parameters), for the picture."""
        t = median([m.seconds_per_cell for m in self.measured])
        middle = sorted(self.measured, key=lambda m: m.resources.dispatch_latency)
        typical = middle[len(middle) // 2]
        low = max(1, min(self.sides) // 2)  # the curve over the swept range, not beyond
        sides = {b for b in model.block_sides(self.N, self.N) if b >= low} | set(self.sides)
        candidates = {b: Candidate(str(b), b, 0, self.predicted(b)) for b in sorted(sides)}
        return Prediction(Measured(t, typical.resources), list(candidates.values()),
                          candidates[self.choice])


def api_systems(series: Series, engine, expected) -> dict:
    boundary = list(range(series.N + 1))

    def fixed(side: int):
        def run() -> None:
            R = abengine.wavefront(work, boundary, boundary, block_size=side, engine=engine,
                                   progress=False)
            check(R.tolist() == expected, f"{series.name} b={side}: wrong result")
        return run

    def auto() -> None:
        job = abengine.Wavefront(work, boundary, boundary)
        R = job.run(engine=engine, progress=False)
        check(R.tolist() == expected, f"{series.name} auto: wrong result")
        series.measured.append(job.measured)
        series.chosen.append(job.block)

    systems = {str(side): fixed(side) for side in series.sides}
    systems["auto"] = auto
    return systems


PLAN = re.compile(r"blocks of (\d+) \(\d+ tasks\) on (\d+) slots; predicted \S+ s "
                  r"\(F (\S+) s per cell, dispatch (\S+) s per task, master (\S+) s\)")


def cli_systems(series: Series, scratch: Path, expected) -> dict:
    N = series.N
    script = scratch / "step.sh"
    script.write_text(SH_F)
    script.chmod(0o755)
    given = scratch / "in.txt"
    given.write_text("".join(f"{i} 0 {i}\n0 {i} {i}\n" for i in range(1, N + 1)) + "0 0 0\n")
    tiny = scratch / "in1.txt"
    tiny.write_text("0 0 0\n1 0 1\n0 1 1\n")
    want = {(x, y): str(expected[x][y]) for x in range(1, N + 1) for y in range(1, N + 1)}

    def command(*args: object) -> subprocess.CompletedProcess:
        done = subprocess.run([str(WAVEFRONT), *map(str, args)], capture_output=True, text=True)
        check(done.returncode == 0, f"wavefront {args}: exit {done.returncode}: {done.stderr}")
        return done

    def fixed(side: int):
        def run() -> None:
            out = scratch / f"out-{side}.txt"
            command(script, N, N, given, out, "-b", side, "-q")
            check(read_cells(out) == want, f"cli b={side}: wrong result")
        return run

    def auto() -> None:
        out = scratch / "out-auto.txt"
        done = command(script, N, N, given, out)
        check(read_cells(out) == want, "cli auto: wrong result")
        plan = PLAN.search(done.stderr)
        check(plan is not None, f"cli auto: no plan line in {done.stderr!r}")
        side, slots, t, latency, master = plan.groups()  # what the CLI's model used
        series.chosen.append(int(side))
        series.measured.append(Measured(float(t), Resources(int(slots), float(latency),
                                                            master_seconds=float(master))))

    def startup() -> None:
        command(script, 1, 1, tiny, scratch / "out-1.txt", "-b", 1, "-q")

    systems = {str(side): fixed(side) for side in series.sides}
    systems["auto"] = auto
    systems["cli-startup"] = startup
    return systems


def sweep(series: Series, systems, repeats: int) -> None:
    """Two `auto` runs first, whose chosen sides join the sweep; then the interleaved
    repeats (after their warm-up round). The model's parameters, and the side judged,
    are those of the timed repeats' `auto` runs (the side most of them chose)."""
    for _ in range(2):
        systems()["auto"]()
    series.sides = sorted(set(series.sides) | set(series.chosen))
    series.times = interleaved(systems(), repeats)
    series.measured, series.chosen = series.measured[3:], series.chosen[3:]
    swept = [side for side in series.chosen if side in series.sides] or series.sides
    series.choice = max(set(swept), key=lambda side: (swept.count(side), -side))


def read_cells(path: Path) -> dict[tuple[int, int], str]:
    cells = {}
    for line in path.read_text().splitlines():
        x, y, value = line.split(" ", 2)
        cells[(int(x), int(y))] = value
    return cells


FAILED: list[str] = []


def check(ok: bool, message: str) -> None:
    if not ok:
        FAILED.append(message)
        print(f"CHECK FAILED: {message}", file=sys.stderr)


def report(series: Series) -> dict[str, float]:
    """The series' table, and its verdicts: auto against the best, prediction against time."""
    rows = []
    for side in series.sides:
        key = str(side)
        measured, predicted = series.measured_at(key), series.predicted(side)
        gx = model.block_grid(series.N, series.N, side)
        rows.append([side, gx[0] * gx[1], measured, min(series.times[key]) - series.startup,
                     max(series.times[key]) - series.startup, predicted, predicted / measured])
    auto_time = series.measured_at("auto")
    rows.append(["auto+probe", "", auto_time, min(series.times["auto"]) - series.startup,
                 max(series.times["auto"]) - series.startup, "", ""])
    print(f"\n## {series.name}: {series.N} x {series.N} cells; the model chose side "
          f"{series.choice} (sides chosen in the timed repeats: {series.chosen})")
    for m in series.measured:
        print(m.describe())
    if series.startup:
        print(f"# cli-startup (subtracted from every time below): {series.startup:.3f} s")
    print(table(["side", "tasks", "median s", "min s", "max s", "predicted s", "pred/meas"], rows))
    best_side = min(series.sides, key=lambda s: series.measured_at(str(s)))
    best = series.measured_at(str(best_side))
    chosen = series.measured_at(str(series.choice))
    predicted = series.predicted(series.choice)
    within = sum(abs(r[6] - 1) <= 0.35 for r in rows[:-1])
    verdict = {
        "choice": series.choice, "best_side": best_side, "chosen_vs_best": chosen / best,
        "auto_vs_best": auto_time / best, "pred_vs_meas": predicted / chosen,
        "points_within_35pct": within, "points": len(rows) - 1,
    }
    print(f"chosen side {series.choice}: {chosen:.3f} s = {chosen / best:.3f} x the best measured "
          f"(side {best_side}, {best:.3f} s) -> {'met' if chosen <= 1.15 * best else 'MISSED'} "
          f"(target <= 1.15); with its probe (auto+probe): {auto_time / best:.3f} x")
    print(f"prediction at the chosen side: {predicted:.3f} s = {predicted / chosen:.3f} x measured "
          f"-> {'met' if abs(predicted / chosen - 1) <= 0.35 else 'MISSED'} (target within 35%); "
          f"{within} of {len(rows) - 1} swept sides within 35%")
    return verdict


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    p.add_argument("--series", default="local-python,wq-python,cli-exec",
                   help="which series to run (comma-separated)")
    p.add_argument("--cell-us", type=float, default=100.0, help="µs per call of the Python F")
    p.add_argument("--plot", metavar="PNG", help="draw predicted against measured")
    args = p.parse_args()
    wanted = args.series.split(",")
    print_machine()
    per_call = calibrate(args.cell_us)
    print(f"# Python F: {per_call:.1f} µs per call here ({LOOPS} loops)")
    if args.quick:
        sizes = {"local-python": (30, [2, 5, 10, 30]), "wq-python": (20, [5, 10, 20]),
                 "cli-exec": (8, [1, 2, 4, 8])}
    else:
        sizes = {"local-python": (150, [3, 5, 8, 12, 19, 25, 38, 50, 75, 150]),
                 "wq-python": (200, [25, 34, 50, 67, 100, 200]),
                 "cli-exec": (40, [1, 2, 3, 5, 8, 10, 14, 20, 40])}
    results: dict[str, Series] = {}
    verdicts = {}
    for name in wanted:
        N, sides = sizes[name]
        series = Series(name, N, sides)
        print(f"\n# {name}: {N} x {N}, sides {sides}, {args.repeats} repeats", flush=True)
        if name == "cli-exec":
            expected = reference(N, sh_step)
            with tempfile.TemporaryDirectory(prefix="wavefront-sweep-") as scratch:
                systems = functools.partial(cli_systems, series, Path(scratch), expected)
                sweep(series, systems, args.repeats)
            series.startup = median(series.times.pop("cli-startup"))
        else:
            expected = reference(N, work)
            engine = (make_engine("workqueue", 1, 2) if name == "wq-python"
                      else make_engine("local"))
            with engine:
                sweep(series, functools.partial(api_systems, series, engine, expected),
                      args.repeats)
        results[name] = series
        verdicts[name] = report(series)
    if args.plot:
        from abengine.models.plot import plot_predictions

        points = {name: {s: max(1e-3, r.measured_at(str(s))) for s in r.sides}
                  for name, r in results.items()}
        plot_predictions(args.plot, [(name, r.prediction()) for name, r in results.items()],
                         points, title="Wavefront: predicted (lines) vs measured (circles), "
                                       "2 cores")
        print(f"\nwrote {args.plot}")
    met_auto = all(v["chosen_vs_best"] <= 1.15 for v in verdicts.values())
    met_pred = all(abs(v["pred_vs_meas"] - 1) <= 0.35 for v in verdicts.values())
    fields = {}
    for name, v in verdicts.items():
        key = name.replace("-", "_")
        fields[f"{key}_choice"] = v["choice"]
        fields[f"{key}_best"] = v["best_side"]
        fields[f"{key}_chosen_vs_best"] = float(v["chosen_vs_best"])
        fields[f"{key}_auto_vs_best"] = float(v["auto_vs_best"])
        fields[f"{key}_pred_vs_meas"] = float(v["pred_vs_meas"])
    print("\n" + summary(**fields, auto_within_15pct=met_auto, prediction_within_35pct=met_pred,
                         checks="FAILED" if FAILED else "ok"))
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
