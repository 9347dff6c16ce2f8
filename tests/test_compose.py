"""Abstractions chained into one task graph (lazy results), Map's vector results, memoisation."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import make_script, write_numbered

import abengine
from abengine import TaskFailures, UsageError
from abengine.abstractions.compose import Pipeline
from abengine.engines.workqueue import WorkQueueEngine


def extractor(tmp_path: Path, log: Path) -> Path:
    """An executable feature extractor that logs each element it computes."""
    return make_script(tmp_path / "extract.sh", f"""
        read a < "$1"
        echo "$1" >> {log}
        echo $a $((a * a)) 1
    """)


def features_of(numbers: range) -> np.ndarray:
    return np.array([[a, a * a, 1] for a in numbers], dtype=float)


def calls(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


# -- Map's vector results ------------------------------------------------------------------


def test_map_of_vectors_is_a_matrix(tmp_path):
    listing = write_numbered(tmp_path / "set", 7)
    f = extractor(tmp_path, tmp_path / "log")
    assert (abengine.map(listing, str(f), progress=False) == features_of(range(7))).all()
    X = np.arange(12.0).reshape(6, 2)
    got = abengine.map(X, lambda x: [x.sum(), x.max()], progress=False, block=4)
    assert (got == np.stack([X.sum(1), X.max(1)], axis=1)).all()


def test_map_vectors_to_text_h5_and_npy(tmp_path):
    listing = write_numbered(tmp_path / "set", 4)
    f = str(extractor(tmp_path, tmp_path / "log"))
    text = abengine.map(listing, f, output=tmp_path / "out.txt", progress=False)
    assert sorted(text.read_text().splitlines()) == [f"n00{i}.txt\t{i} {i * i} 1" for i in range(4)]
    for name in ("out.npy", "out.h5"):
        out = abengine.map(listing, f, output=tmp_path / name, progress=False)
        if name.endswith(".npy"):
            got = np.load(out)
        else:
            import h5py

            with h5py.File(out) as h5:
                got = h5["result"][...]
        assert (got == features_of(range(4))).all()


def test_map_vectors_of_different_lengths_name_the_element(tmp_path):
    X = np.arange(5.0).reshape(5, 1)
    with pytest.raises(UsageError, match=r"element 3: F gave 1 values, but 2"):
        abengine.map(X, lambda x: [1.0, 2.0] if x[0] != 3 else [1.0], progress=False, block=5)


# -- one graph ------------------------------------------------------------------------------


def test_allpairs_of_a_lazy_map_equals_the_stages_run_apart(tmp_path, engine):
    listing = write_numbered(tmp_path / "set", 12)
    log = tmp_path / "log"
    feats = abengine.map(listing, str(extractor(tmp_path, log)), lazy=True, block=3)
    assert len(feats) == 12 and not log.exists()  # nothing ran yet
    got = abengine.allpairs(feats, feats, "euclidean", engine=engine, progress=False,
                            memo=False, block=(5, 5))
    F = features_of(range(12))
    expected = np.sqrt(((F[:, None, :] - F[None, :, :]) ** 2).sum(-1))
    assert np.allclose(got, expected)
    # Each element's features once, plus the one element run to learn the vectors' length.
    assert feats.job.sampled_cells == 1 and calls(log) == 12 + 1
    sym = abengine.allpairs(feats, None, lambda a, b: float(a @ b), symmetric=True,
                            engine=engine, progress=False, memo=False)
    assert np.allclose(sym, F @ F.T)


def test_the_probe_is_the_only_extra_call(tmp_path, engine):
    listing = write_numbered(tmp_path / "set", 10)
    log = tmp_path / "log"
    job = abengine.Map(listing, str(extractor(tmp_path, log)))
    got = abengine.allpairs(abengine.Lazy(job), listing, lambda a, b: 0.0, engine=engine,
                            progress=False, memo=False)
    assert got.shape == (10, 10)
    assert calls(log) == 10 + job.sampled_cells


def test_blocks_wait_only_for_the_batches_that_make_their_rows():
    A = np.arange(40.0).reshape(20, 2)
    feats = abengine.map(A, lambda x: x * 2, lazy=True, block=5)
    job = abengine.AllPairs(feats, A, "dot", block=(10, 20))
    pipeline = Pipeline(job)
    up, final = pipeline.stages
    up.block, final.block = (5,), (10, 20)
    graph = pipeline._graph({0: set(up.job.keys(up.block)), 1: set(job.keys(final.block))})
    needs = {node.tag[1]: sorted(dep.tag[1] for dep in graph.dependencies(node))
             for node in graph if node.tag[0] == 1}
    assert needs == {(0, 0): [(0,), (1,)], (1, 0): [(2,), (3,)]}


def test_a_chain_of_three_and_numpy_asarray(engine):
    X = np.random.default_rng(1).random((30, 4))
    doubled = abengine.map(X, lambda x: x * 2, lazy=True, block=7)
    plus = abengine.map(doubled, lambda x: x + 1, lazy=True, block=4)
    got = abengine.allpairs(plus, X, "dot", engine=engine, progress=False, memo=False)
    assert np.allclose(got, (2 * X + 1) @ X.T)
    assert np.allclose(np.asarray(plus), 2 * X + 1)


def test_lazy_allpairs_rows_feed_a_map_and_classify(engine):
    rng = np.random.default_rng(2)
    X = rng.random((40, 3))
    sim = abengine.allpairs(X, X[:6], "euclidean", lazy=True)
    nearest = abengine.map(sim, np.argmin, engine=engine, progress=False, memo=False)
    d = np.sqrt(((X[:, None] - X[None, :6]) ** 2).sum(-1))
    assert (nearest == d.argmin(1)).all()
    y = d.argmin(1) % 2
    labels = abengine.classify(sim, (sim, y), lambda tx, ty, x: ty[np.argmin(
        ((x[:, None] - tx[None]) ** 2).sum(-1), axis=1)], n=1, partition="random",
        progress=False)
    assert (labels == y).all()


def test_intermediates_are_removed(tmp_path, monkeypatch, engine):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    X = np.arange(20.0).reshape(10, 2)
    feats = abengine.map(X, lambda x: x, lazy=True)
    abengine.allpairs(feats, feats, "dot", engine=engine, progress=False)
    assert not [p for p in os.listdir(tmp_path) if p.startswith("abengine-pipeline-")]


def test_a_failed_element_is_named_and_its_cells_are_nan(tmp_path, engine):
    listing = write_numbered(tmp_path / "set", 6)
    f = make_script(tmp_path / "f.sh", """
        read a < "$1"
        if [ "$a" = "4" ]; then echo broken >&2; exit 3; fi
        echo $a 1
    """)
    feats = abengine.map(listing, str(f), lazy=True, block=2)
    with pytest.raises(TaskFailures) as caught:
        abengine.allpairs(feats, feats, "dot", engine=engine, progress=False, memo=False)
    failures = caught.value.failures
    assert [f.where for f in failures] == ["element n004.txt"]
    result = caught.value.result
    assert np.isnan(result[4]).all() and np.isnan(result[:, 4]).all()
    assert result[1, 2] == 1 * 2 + 1


def test_lazy_rows_for_an_executable_f_are_refused(tmp_path):
    listing = write_numbered(tmp_path / "set", 3)
    feats = abengine.map(np.ones((3, 2)), lambda x: x, lazy=True)
    f = make_script(tmp_path / "cmp.sh", "echo 1")
    with pytest.raises(UsageError, match="SET_A: an executable F needs files, but this set is "
                                         "the rows of a lazy result"):
        abengine.AllPairs(feats, listing, str(f))


def test_a_pipeline_on_work_queue_equals_local(engine):
    X = np.random.default_rng(3).random((25, 3))
    feats = abengine.map(X, lambda x: np.append(x, x.sum()), lazy=True, block=6)
    expected = abengine.allpairs(feats, feats, "cosine", engine=engine, progress=False,
                                 memo=False)
    with WorkQueueEngine(workers=2) as wq:
        got = abengine.allpairs(feats, feats, "cosine", engine=wq, progress=False, memo=False,
                                block=(10, 10))
    assert np.allclose(got, expected)


# -- memoisation ----------------------------------------------------------------------------


def test_rerun_recomputes_only_what_changed(tmp_path, engine, private_memo):
    directory = tmp_path / "set"
    listing = write_numbered(directory, 8)
    log = tmp_path / "log"
    f = str(extractor(tmp_path, log))

    def pipeline(compare, **options):
        feats = abengine.map(listing, f, lazy=True, block=2)
        return abengine.allpairs(feats, feats, compare, engine=engine, progress=False,
                                 **options)

    first = pipeline("dot")
    computed = calls(log)
    assert computed >= 8
    assert (pipeline("dot") == first).all() and calls(log) == computed  # nothing recomputed
    assert np.allclose(pipeline("euclidean"), np.sqrt(np.maximum(
        0, np.diag(first)[:, None] + np.diag(first)[None] - 2 * first)))
    assert calls(log) == computed  # a new compare reuses every feature
    (directory / "n005.txt").write_text("50\n")
    changed = pipeline("dot")
    assert calls(log) == computed + 2  # only the batch holding n005 (n004, n005)
    assert changed[5, 5] == 50 * 50 + 2500 * 2500 + 1
    pipeline("dot", memo=False)
    assert calls(log) == computed + 2 + 8 + 1  # memo off: everything again (+1 to learn widths)
    assert (private_memo / "memo.sqlite3").exists()


def test_memo_for_a_single_abstraction_only_when_asked(tmp_path, engine, private_memo):
    listing = write_numbered(tmp_path / "set", 4)
    log = tmp_path / "log"
    f = str(extractor(tmp_path, log))
    abengine.map(listing, f, engine=engine, progress=False, block=2)
    assert not private_memo.exists()
    abengine.map(listing, f, engine=engine, progress=False, block=2, memo=True)
    before = calls(log)
    again = abengine.map(listing, f, engine=engine, progress=False, block=2, memo=True)
    assert calls(log) == before and (again == features_of(range(4))).all()


def test_map_of_vectors_calls_f_once_per_element_and_resumes(tmp_path):
    listing = write_numbered(tmp_path / "set", 6)
    log = tmp_path / "log"
    f = str(extractor(tmp_path, log))
    got = abengine.map(listing, f, block=2, progress=False)
    assert (got == features_of(range(6))).all() and calls(log) == 6  # no extra call to learn w
    out = tmp_path / "out.h5"
    abengine.map(listing, f, block=2, output=out, progress=False)
    abengine.map(listing, f, block=2, output=out, resume=True, progress=False)
    import h5py

    with h5py.File(out) as h5:
        assert (h5["result"][...] == features_of(range(6))).all()
    assert calls(log) == 12  # the resumed run found every block done


def test_the_readme_pipeline_runs_end_to_end(tmp_path, engine):
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    directory = tmp_path / "digits"
    subprocess.run([sys.executable, str(root / "datasets" / "generate.py"), "digits-images",
                    str(directory), "--limit", "240"], check=True, capture_output=True)
    sys.path.insert(0, str(root / "examples"))
    try:
        from pipeline import pipeline
    finally:
        sys.path.remove(str(root / "examples"))
    similarity, labels, truth = pipeline(directory, 30, engine=engine, progress=False)
    assert similarity.shape == (240, 30)
    assert np.mean(labels == truth) > 0.8
    again, labels_again, _ = pipeline(directory, 30, engine=engine, progress=False)
    assert (again == similarity).all() and (labels_again == labels).all()
