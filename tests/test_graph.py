"""Tasks, task graphs, and the local engine running them for real."""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

import psutil
import pytest

from abengine import LocalEngine, PythonTask, Task, TaskGraph, current_sandbox


def run_graph(graph: TaskGraph, retries: int = 0, cores: int = 2, engine: LocalEngine | None = None):
    """Run `graph`; return the report and each successful task's result, in finishing order."""
    results: dict = {}
    order: list = []

    def on_result(task, result):
        results[task] = result
        order.append(task)

    if engine is not None:
        return engine.run(graph, on_result, retries=retries), results, order
    with LocalEngine(cores) as eng:
        report = eng.run(graph, on_result, retries=retries)
    return report, results, order


# -- the graph itself -------------------------------------------------------------------


def test_task_ids_are_unique_and_describe_names_the_command():
    tasks = [Task(command=f"echo {i}") for i in range(5)]
    assert len({t.id for t in tasks}) == 5
    assert "echo 3" in tasks[3].describe()
    assert str(tasks[3].id) in tasks[3].describe()


def test_add_input_and_output_record_files(tmp_path):
    t = Task(command="true")
    t.add_input(tmp_path / "in.txt")
    t.add_input(tmp_path / "other.txt", "renamed.txt")
    t.add_output("out.txt", tmp_path / "out.txt")
    assert [f.remote for f in t.inputs] == ["in.txt", "renamed.txt"]
    assert t.inputs[1].local == tmp_path / "other.txt"
    assert t.outputs[0].remote == "out.txt" and t.outputs[0].local == tmp_path / "out.txt"


def test_roots_dependents_dependencies_descendants():
    g = TaskGraph()
    a = g.add(Task(command="a"))
    b = g.add(Task(command="b"), after=[a])
    c = g.add(Task(command="c"), after=[a])
    d = g.add(Task(command="d"), after=[b, c])
    e = g.add(Task(command="e"))
    assert len(g) == 5
    assert set(g) == {a, b, c, d, e}
    assert a in g and Task(command="x") not in g
    assert set(g.roots()) == {a, e}
    assert set(g.dependents(a)) == {b, c}
    assert g.dependents(d) == []
    assert set(g.dependencies(d)) == {b, c}
    assert g.descendants(a) == {b, c, d}
    g.check()  # acyclic: no error


def test_add_after_a_task_not_in_the_graph_is_refused():
    g = TaskGraph()
    outsider = Task(command="outside")
    with pytest.raises(ValueError, match="not in the graph"):
        g.add(Task(command="t"), after=[outsider])


def test_cycle_is_detected_by_check_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    g = TaskGraph()
    a = g.add(Task(command=f"touch {marker}"))
    b = g.add(Task(command=f"touch {marker}"), after=[a])
    g.add(a, after=[b])  # re-adding a after b closes the cycle a -> b -> a
    with pytest.raises(ValueError, match="cycle"):
        g.check()
    with LocalEngine(1) as eng, pytest.raises(ValueError, match="cycle"):
        eng.run(g, lambda t, r: None)
    assert not marker.exists()


# -- the local engine -------------------------------------------------------------------


def test_dependencies_respected_a_task_reads_what_its_predecessor_wrote(tmp_path):
    g = TaskGraph()
    first = Task(command="sleep 0.3; echo hello > out.txt")
    first.add_output("out.txt", tmp_path / "stage1.txt")
    second = Task(command="cat in.txt in.txt > out.txt")
    second.add_input(tmp_path / "stage1.txt", "in.txt")
    second.add_output("out.txt", tmp_path / "stage2.txt")
    third = Task(command="wc -l < in.txt > count.txt")
    third.add_input(tmp_path / "stage2.txt", "in.txt")
    third.add_output("count.txt", tmp_path / "count.txt")
    g.add(first)
    g.add(second, after=[first])
    g.add(third, after=[second])
    report, results, order = run_graph(g)
    assert report.ok and report.done == 3
    assert order == [first, second, third]
    assert (tmp_path / "stage2.txt").read_text() == "hello\nhello\n"
    assert (tmp_path / "count.txt").read_text().strip() == "2"


def test_independent_tasks_all_run_and_report_stdout(tmp_path):
    g = TaskGraph()
    tasks = [g.add(Task(command=f"echo value{i}")) for i in range(6)]
    report, results, _ = run_graph(g)
    assert report.ok and report.done == 6
    for i, t in enumerate(tasks):
        assert results[t].ok and results[t].exit_code == 0
        assert results[t].stdout.strip() == f"value{i}"


def test_failed_task_is_retried_and_succeeds_on_second_attempt(tmp_path):
    counter = tmp_path / "attempts.log"  # outside any sandbox, so it survives attempts
    g = TaskGraph()
    t = g.add(Task(command=f'echo x >> {counter}; [ "$(wc -l < {counter})" -ge 2 ]'))
    report, results, _ = run_graph(g, retries=2)
    assert report.ok and report.done == 1
    assert results[t].ok
    assert counter.read_text().count("x") == 2


@pytest.mark.parametrize("retries", [0, 1, 3])
def test_retries_are_bounded(tmp_path, retries):
    counter = tmp_path / "attempts.log"
    g = TaskGraph()
    t = g.add(Task(command=f"echo x >> {counter}; echo oops >&2; exit 3"))
    report, results, _ = run_graph(g, retries=retries)
    assert not report.ok
    assert t not in results
    attempts = report.failed[t]
    assert len(attempts) == retries + 1
    assert counter.read_text().count("x") == retries + 1
    for attempt in attempts:
        assert not attempt.ok
        assert attempt.exit_code == 3
        assert attempt.error == "exit code 3"
        assert "oops" in attempt.stderr


def test_descendants_of_a_finally_failed_task_are_skipped(tmp_path):
    g = TaskGraph()
    bad = g.add(Task(command="exit 1"))
    child = g.add(Task(command=f"touch {tmp_path / 'child'}"), after=[bad])
    grandchild = g.add(Task(command=f"touch {tmp_path / 'grandchild'}"), after=[child])
    independent = g.add(Task(command=f"touch {tmp_path / 'independent'}"))
    report, results, _ = run_graph(g, retries=1)
    assert set(report.failed) == {bad}
    assert len(report.failed[bad]) == 2
    assert set(report.skipped) == {child, grandchild}
    assert len(report.skipped) == 2
    assert independent in results and report.done == 1
    assert not report.ok
    assert not (tmp_path / "child").exists() and not (tmp_path / "grandchild").exists()
    assert (tmp_path / "independent").exists()


def test_each_task_gets_a_fresh_sandbox_holding_only_its_inputs(tmp_path):
    for name in ("one.txt", "two.txt", "three.txt"):
        (tmp_path / name).write_text(name)
    g = TaskGraph()
    writer = Task(command="ls -A; touch junk")
    writer.add_input(tmp_path / "one.txt")
    reader = Task(command="ls -A; pwd")
    reader.add_input(tmp_path / "two.txt")
    reader.add_input(tmp_path / "three.txt", "sub/renamed.txt")
    g.add(writer)
    g.add(reader, after=[writer])
    report, results, _ = run_graph(g)
    assert report.ok
    assert results[writer].stdout.split() == ["one.txt"]
    listing = results[reader].stdout.split()
    assert sorted(listing[:-1]) == ["sub", "two.txt"]
    sandbox = Path(listing[-1])
    assert sandbox != tmp_path
    assert not sandbox.exists()  # removed after the task
    # input contents are what the user gave (linked, not emptied)
    g2 = TaskGraph()
    cat = g2.add(Task(command="cat sub/renamed.txt"))
    cat.add_input(tmp_path / "three.txt", "sub/renamed.txt")
    _, results2, _ = run_graph(g2)
    assert results2[cat].stdout == "three.txt"


def test_python_tasks_run_in_their_own_sandbox(tmp_path):
    (tmp_path / "data.txt").write_text("abc")

    def look(suffix):  # a closure: shipped by value to the worker processes
        sandbox = current_sandbox()
        return sorted(os.listdir(sandbox)), Path(os.getcwd()) == sandbox, suffix

    def look_threaded():
        return sorted(os.listdir(current_sandbox())), (current_sandbox() / "d.txt").read_text()

    g = TaskGraph()
    pooled = PythonTask(fn=look, args=("!",))
    pooled.add_input(tmp_path / "data.txt", "d.txt")
    threaded = PythonTask(fn=look_threaded, gil_free=True)
    threaded.add_input(tmp_path / "data.txt", "d.txt")
    g.add(pooled)
    g.add(threaded)
    report, results, _ = run_graph(g)
    assert report.ok
    assert results[pooled].value == (["d.txt"], True, "!")
    assert results[threaded].value == (["d.txt"], "abc")


def test_current_sandbox_outside_a_task_is_an_error():
    with pytest.raises(RuntimeError):
        current_sandbox()


def test_outputs_are_moved_out_of_the_sandbox(tmp_path):
    g = TaskGraph()
    t = Task(command="mkdir -p deep; echo one > a.txt; echo two > deep/b.txt")
    t.add_output("a.txt", tmp_path / "results" / "nested" / "a.txt")
    t.add_output("deep/b.txt", tmp_path / "b.txt")

    def produce():
        (current_sandbox() / "py.txt").write_text("from python")
        return 7

    p = PythonTask(fn=produce)
    p.add_output("py.txt", tmp_path / "py.txt")
    g.add(t)
    g.add(p)
    report, results, _ = run_graph(g)
    assert report.ok
    assert (tmp_path / "results" / "nested" / "a.txt").read_text() == "one\n"
    assert (tmp_path / "b.txt").read_text() == "two\n"
    assert (tmp_path / "py.txt").read_text() == "from python"
    assert results[p].value == 7


def test_a_missing_output_is_a_failure(tmp_path):
    g = TaskGraph()
    t = g.add(Task(command="echo made > other.txt"))
    t.add_output("wanted.txt", tmp_path / "wanted.txt")
    report, _, _ = run_graph(g, retries=1)
    attempts = report.failed[t]
    assert len(attempts) == 2
    assert "wanted.txt" in attempts[-1].error
    assert not (tmp_path / "wanted.txt").exists()


def test_a_missing_input_is_a_failure_not_a_crash(tmp_path):
    g = TaskGraph()
    t = Task(command="cat in.txt")
    t.add_input(tmp_path / "does-not-exist.txt", "in.txt")
    g.add(t)
    report, _, _ = run_graph(g)
    assert t in report.failed


def test_wall_time_kills_a_hung_command(tmp_path):
    pidfile = tmp_path / "pid"
    g = TaskGraph()
    t = g.add(Task(command=f"echo $$ > {pidfile}; exec sleep 30", wall_time=0.5))
    start = time.monotonic()
    report, _, _ = run_graph(g)
    elapsed = time.monotonic() - start
    assert elapsed < 10
    attempt = report.failed[t][-1]
    assert "wall time" in attempt.error
    pid = int(pidfile.read_text())
    if psutil.pid_exists(pid):  # only a reaped-late zombie may remain, never a sleeper
        assert psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_python_task_exception_is_a_failed_result(tmp_path):
    def boom():
        raise KeyError("nope")

    g = TaskGraph()
    t = g.add(PythonTask(fn=boom))
    report, _, _ = run_graph(g, retries=1)
    assert len(report.failed[t]) == 2
    assert "KeyError" in report.failed[t][-1].error


def test_worker_that_exits_is_a_failure_and_the_engine_keeps_working(tmp_path):
    with LocalEngine(2) as eng:
        g = TaskGraph()
        crash = g.add(PythonTask(fn=functools.partial(os._exit, 7)))
        start = time.monotonic()
        report, _, _ = run_graph(g, retries=1, engine=eng)
        assert time.monotonic() - start < 60
        attempts = report.failed[crash]
        assert len(attempts) == 2
        assert all(not a.ok for a in attempts)
        assert "died" in attempts[-1].error

        # the same engine runs later work normally, in a fresh process pool
        g2 = TaskGraph()
        squares = [g2.add(PythonTask(fn=lambda k=k: k * k)) for k in range(5)]
        cmd = g2.add(Task(command="echo still here"))
        report2, results2, _ = run_graph(g2, engine=eng)
        assert report2.ok and report2.done == 6
        assert [results2[t].value for t in squares] == [0, 1, 4, 9, 16]
        assert results2[cmd].stdout.strip() == "still here"


def test_an_exception_in_on_result_stops_the_run(tmp_path):
    g = TaskGraph()
    first = g.add(Task(command="true"))
    g.add(Task(command=f"touch {tmp_path / 'later'}"), after=[first])

    def refuse(task, result):
        raise OSError("disk full")

    with LocalEngine(1) as eng, pytest.raises(OSError, match="disk full"):
        eng.run(g, refuse)
    assert not (tmp_path / "later").exists()


def test_engine_refuses_negative_cores():
    with pytest.raises(ValueError):
        LocalEngine(-1)
