"""Property: however the matrix is cut into blocks, All-Pairs equals the naive double loop."""

from __future__ import annotations

import numpy as np
from conftest import naive
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import cdist

import abengine


@st.composite
def workloads(draw):
    symmetric = draw(st.booleans())
    n = draw(st.integers(1, 12))
    m = n if symmetric else draw(st.integers(1, 12))
    width = draw(st.integers(1, 4))
    bx = draw(st.integers(1, 13))
    by = bx if symmetric else draw(st.integers(1, 13))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n, width)) * draw(st.sampled_from([1e-3, 1.0, 1e3]))
    B = A if symmetric else rng.normal(size=(m, width))
    return A, B, (bx, by), symmetric


def symmetric_f(a, b):
    """Exactly symmetric in (a, b) (every step commutes), and not a builtin."""
    return float(np.abs(a - b).sum() + (a * b).sum() + (a.sum() + b.sum()))


@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(workloads())
def test_blocked_allpairs_equals_the_double_loop(engine, case):
    A, B, block, symmetric = case
    n, m = len(A), len(B)
    expected = naive(A, B, symmetric_f)

    r = abengine.allpairs(A, B, symmetric_f, block=block, symmetric=symmetric, progress=False,
                          engine=engine)
    assert r.shape == (n, m)
    np.testing.assert_array_equal(r, expected)
    if symmetric:
        np.testing.assert_array_equal(r, r.T)

    r = abengine.allpairs(A, B, "manhattan", block=block, symmetric=symmetric, progress=False,
                          engine=engine)
    np.testing.assert_allclose(r, cdist(A, B, "cityblock"), rtol=1e-12, atol=0)

    r = abengine.allpairs(A, B, "euclidean", block=block, symmetric=symmetric, progress=False,
                          engine=engine)
    np.testing.assert_allclose(r, cdist(A, B), rtol=1e-9, atol=1e-12)
    if symmetric:
        assert np.all(np.diag(r) == 0.0)

    kernel = abengine.vectorized(lambda X, Y: X @ Y.T)
    r = abengine.allpairs(A, B, kernel, block=block, symmetric=symmetric, progress=False,
                          engine=engine)
    np.testing.assert_allclose(r, A @ B.T, rtol=1e-9, atol=1e-12 * np.abs(A).max() ** 2)
