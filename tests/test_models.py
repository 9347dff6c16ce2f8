"""The performance models: closed forms against brute force, the Wavefront model against a
simulation of the schedule the engines run, and the All-Pairs model's prediction."""

from __future__ import annotations

import heapq
import math
import re
from collections import deque

import pytest

from abengine.models import allpairs as ap
from abengine.models import wavefront as wf
from abengine.models.common import Candidate, Measured, Prediction, Resources


def brute_diagonals(X: int, Y: int, b: int) -> list[tuple[int, int, int]]:
    """(blocks, cells, largest block) per anti-diagonal, from the list of blocks."""
    gx, gy = wf.block_grid(X, Y, b)
    out = []
    for k in range(gx + gy - 1):
        sizes = [min(b, X - i * b) * min(b, Y - (k - i) * b)
                 for i in range(gx) if 0 <= k - i < gy]
        out.append((len(sizes), sum(sizes), max(sizes)))
    return out


def simulate(X: int, Y: int, b: int, t: float, d: float, slots: int) -> float:
    """Greedy list scheduling of the block DAG, as Engine.run dispatches it: a block
    starts when its three neighbours are done and a slot is free (first ready, first run)."""
    gx, gy = wf.block_grid(X, Y, b)
    cost = {(i, j): min(b, X - i * b) * min(b, Y - j * b) * t + d
            for i in range(gx) for j in range(gy)}
    waiting = {k: sum(n in cost for n in ((k[0] - 1, k[1]), (k[0], k[1] - 1),
                                          (k[0] - 1, k[1] - 1))) for k in cost}
    ready = deque(k for k, n in waiting.items() if n == 0)
    running: list[tuple[float, tuple[int, int]]] = []
    now, free = 0.0, slots
    while ready or running:
        while ready and free:
            key = ready.popleft()
            heapq.heappush(running, (now + cost[key], key))
            free -= 1
        now, (i, j) = heapq.heappop(running)
        free += 1
        for n in ((i + 1, j), (i, j + 1), (i + 1, j + 1)):
            if n in waiting:
                waiting[n] -= 1
                if waiting[n] == 0:
                    ready.append(n)
    return now


def test_diagonals_match_the_blocks_one_by_one():
    for X in range(1, 14):
        for Y in range(1, 14):
            for b in range(1, 15):
                count, cells, largest = wf.diagonals(X, Y, b)
                got = list(zip(count.tolist(), cells.tolist(), largest.tolist()))
                assert got == brute_diagonals(X, Y, b), (X, Y, b)
                assert int(cells.sum()) == X * Y


@pytest.mark.parametrize("slots", [1, 2, 3, 8, 64])
@pytest.mark.parametrize("X,Y,b", [(100, 100, 5), (100, 100, 10), (100, 100, 33), (100, 60, 7),
                                   (150, 150, 3), (40, 90, 12), (200, 200, 20)])
def test_the_model_is_within_10_percent_of_the_schedule_it_models(X, Y, b, slots):
    t, d = 1e-4, 1e-3
    simulated = simulate(X, Y, b, t, d, slots)
    predicted = wf.predict_seconds(X, Y, b, t, Resources(slots, d))
    lockstep = wf.predict_seconds(X, Y, b, t, Resources(slots, d), lockstep=True)
    assert abs(predicted / simulated - 1) <= 0.10, (predicted, simulated)
    assert lockstep >= simulated * (1 - 1e-9)  # whole waves never beat the real schedule


def test_the_classic_multicore_model_and_its_reference_example():
    # anchors.md: 500 x 500 cells of a 5 s function take 1,250,000 s one at a time
    assert wf.multicore_seconds(500, 500, 1, 5.0) == pytest.approx(1_250_000)
    # with a core per cell of the widest diagonal, each of the 999 diagonals takes 5 s
    assert wf.multicore_seconds(500, 500, 500, 5.0) == pytest.approx(999 * 5.0)
    # the classic sum: ceil(cells on the diagonal / cpus) steps per diagonal
    steps = sum(math.ceil(min(k + 1, 2 * 10 - 1 - k) / 3) for k in range(19))
    assert wf.multicore_seconds(10, 10, 3, 1.0) == pytest.approx(steps)


def test_the_block_balances_latency_against_concurrency():
    X = Y = 200
    t = 1e-4
    cheap = wf.choose_block(X, Y, t, Resources(8, 1e-6))
    dear = wf.choose_block(X, Y, t, Resources(8, 0.5))
    assert cheap < dear
    assert wf.choose_block(X, Y, t, Resources(1, 1e-3)) == 200  # one slot: one block
    assert wf.choose_block(X, Y, t, Resources(8, 100.0)) == 200  # latency beyond any work
    # the choice is the best the model knows of (or ties with it)
    res = Resources(4, 2e-3)
    chosen = wf.choose_block(X, Y, t, res)
    best = min(wf.predict_seconds(X, Y, b, t, res) for b in range(1, 201))
    assert wf.predict_seconds(X, Y, chosen, t, res) <= best * 1.021


def test_the_master_bounds_how_fast_tiny_tasks_go():
    res = Resources(16, 1e-3, master_seconds=1e-3)
    # 10,000 one-cell tasks cannot pass faster than the master prepares them
    assert wf.predict_seconds(100, 100, 1, 1e-6, res) >= 10_000 * 1e-3
    assert wf.predict_seconds(100, 100, 1, 1e-6, Resources(16, 1e-3)) < 10_000 * 1e-3


def test_block_sides_respect_the_caps():
    sides = wf.block_sides(1000, 10)
    assert sides[0] == 1 and 1000 in sides and 10 in sides  # 1000 x 10 cells: small enough
    assert max(wf.block_sides(5000, 5000)) == 500  # 512² = MAX_PER_CELL_BLOCK: 500 fits
    assert max(wf.block_sides(1000, 1000, seconds_per_cell=1.0)) <= math.isqrt(60)
    assert wf.block_sides(10, 10, seconds_per_cell=1000.0) == [1]


def test_wavefront_prediction_lines_end_with_the_choice():
    measured = Measured(1e-3, Resources(2, 5e-3, master_seconds=1e-3), sampled_cells=100,
                        latency_measured=True)
    chosen = wf.choose_block(50, 40, 1e-3, measured.resources)
    prediction = wf.prediction(50, 40, chosen, measured)
    lines = prediction.lines()
    assert lines[0].startswith("# F: 0.001 s per cell (sampled on 100 cells); 2 slots")
    assert re.fullmatch(rf"block_size={chosen} predicted_seconds=\d+\.\d{{3}}", lines[-1])
    assert sum("<- chosen" in line for line in lines) == 1
    assert prediction.chosen.seconds == pytest.approx(
        wf.predict_seconds(50, 40, chosen, 1e-3, measured.resources))


def test_allpairs_prediction_uses_the_same_model_as_the_choice():
    res = Resources(4, 2e-3)
    chosen = ap.choose_block(300, 200, 1e-4, res)
    prediction = ap.prediction(300, 200, chosen, Measured(1e-4, res))
    assert prediction.chosen.label == f"{chosen[0]}x{chosen[1]}"
    assert prediction.chosen.seconds == pytest.approx(ap.predict_block(300, 200, *chosen, 1e-4,
                                                                       res))
    assert re.fullmatch(r"block_size=\d+x\d+ predicted_seconds=\d+\.\d{3}",
                        prediction.lines()[-1])


def test_allpairs_distribution_term_counts_only_where_inputs_travel():
    local = Resources(4, 1e-3)
    remote = Resources(4, 1e-3, bandwidth=100e6)
    assert ap.distribution_seconds(1000, 1e6, local) == 0
    # by spanning tree, 1000 MB reach 4 slots in ceil(log2(5)) = 3 rounds at 100 MB/s;
    # from the master alone, 4 copies cross its link
    assert ap.distribution_seconds(1000, 1e6, remote) == pytest.approx(30.0)
    assert ap.distribution_seconds(1000, 1e6, remote, tree=False) == pytest.approx(40.0)
    base = ap.predict_block(500, 500, 50, 50, 1e-3, remote)
    assert ap.predict_block(500, 500, 50, 50, 1e-3, remote, element_bytes=1e6) == \
        pytest.approx(base + ap.distribution_seconds(1000, 1e6, remote))
    # it moves the prediction, not the choice
    assert ap.choose_block(500, 500, 1e-3, remote) == ap.choose_block(500, 500, 1e-3, local)


def test_prediction_lines_mark_one_choice():
    measured = Measured(0.5, Resources(3, 0.01))
    a, b = Candidate("2", 2, 10, 3.0), Candidate("4", 4, 3, 2.5)
    lines = Prediction(measured, [b, a], b).lines()
    assert lines[0] == "# F: 0.5 s per cell (given); 3 slots; dispatch 0.01 s per task (nominal)"
    assert lines[-1] == "block_size=4 predicted_seconds=2.500"
    assert [line.split()[0] for line in lines[2:4]] == ["2", "4"]  # by size


def test_allpairs_predict_shows_what_choose_block_uses(engine):
    import numpy as np

    import abengine

    X = np.random.default_rng(1).random((300, 8))
    job = abengine.AllPairs(X, X, lambda a, b: float(np.abs(a - b).sum()))
    prediction = job.prediction(engine)
    assert prediction.measured.sampled_cells > 0  # F was timed on a probe block
    assert prediction.measured is job.measured(engine)  # measured once, used by both
    bx, by = job.choose_block(engine)
    assert prediction.chosen.label == f"{bx}x{by}"
    assert prediction.measured.resources.bandwidth is None  # local: nothing travels


def test_allpairs_cli_plot(tmp_path):
    pytest.importorskip("matplotlib")
    from conftest import make_script, run_cli, write_numbered

    listing = write_numbered(tmp_path / "set", 4)
    script = make_script(tmp_path / "one.sh", "echo 1")
    result = run_cli(listing, listing, script, "--predict", "-t", "0.01", "--plot",
                     tmp_path / "p.png")
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"block_size=\d+x\d+ predicted_seconds=\d+\.\d{3}",
                        result.stdout.strip().splitlines()[-1])
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    result = run_cli(listing, listing, script, "-q", "--plot", tmp_path / "run.png")
    assert result.returncode == 0, result.stderr
    assert len(result.cells()) == 16 and (tmp_path / "run.png").exists()
