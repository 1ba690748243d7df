"""Certified eps-rank bounds: checked against exact eps-ranks, explicit witnesses and closed forms."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest

from landscapes.eps_rank import (
    eps_rank_bounds,
    orthogonal_vectors_pre_activations,
    spectral_lower_bound,
    trace_lower_bound,
    truncation_upper_bound,
)


def _det_range(A: np.ndarray, eps: float) -> tuple[float, float]:
    # det is affine in each entry, so over the box |B - A| <= eps its extremes sit at vertices
    n = A.shape[0]
    dets = [
        np.linalg.det(A + eps * np.array(signs).reshape(n, n))
        for signs in itertools.product((-1.0, 1.0), repeat=n * n)
    ]
    return min(dets), max(dets)


def _exact_eps_rank_2x2(A: np.ndarray, eps: float) -> int:
    if np.abs(A).max() <= eps:
        return 0
    lo, hi = _det_range(A, eps)
    return 1 if lo <= 0 <= hi else 2  # the box is connected and det continuous


def test_bounds_bracket_the_exact_eps_rank_of_2x2_matrices():
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(300):
        A = rng.standard_normal((2, 2))
        rel = float(rng.choice([0.05, 0.2, 0.45]))
        b = eps_rank_bounds(A, rel)
        exact = _exact_eps_rank_2x2(A, b.eps)
        assert b.lower <= exact <= b.upper, (A, rel, b, exact)
        seen.add((b.lower, exact))
    assert (2, 2) in seen and (1, 1) in seen  # the bounds are tight on some of them


def test_full_rank_of_3x3_is_certified_only_where_no_singular_matrix_is_within_eps():
    rng = np.random.default_rng(1)
    certified = 0
    for _ in range(60):
        A = rng.standard_normal((3, 3))
        b = eps_rank_bounds(A, 0.05)
        lo, hi = _det_range(A, b.eps)
        singular_within = lo <= 0 <= hi
        if b.lower == 3:
            certified += 1
            assert not singular_within
        if not singular_within:
            assert b.upper == 3  # rank_eps = 3 then, and the upper bound must not go below it
    assert certified >= 10


@pytest.mark.parametrize("seed", range(4))
def test_lower_bound_never_exceeds_an_explicit_witness(seed):
    # A = (rank-r matrix) + entrywise noise of size <= eps: that rank-r matrix is a witness, rank_eps <= r
    rng = np.random.default_rng(seed)
    r = 3 + seed
    low = rng.standard_normal((60, r)) @ rng.standard_normal((r, 50))
    noise = rng.uniform(-1, 1, (60, 50))
    A = low + 0.9 * 1e-2 * np.abs(low).max() * noise
    b = eps_rank_bounds(A, 1e-2)
    assert np.abs(A - low).max() <= b.eps
    assert 1 <= b.lower <= r
    assert b.lower <= b.upper
    assert b.lower_spectral <= r and b.lower_trace <= r and b.lower_submatrix <= r


def test_identity_is_certified_at_full_rank_and_the_trace_bound_matches_its_closed_form():
    b = eps_rank_bounds(np.eye(200), 1e-3)
    assert b.lower == b.upper == 200
    # trace bound: ((n - n eps) / sqrt(n (1 + eps)^2 + (n^2 - n) eps^2))^2
    n, eps = 200, 0.02
    closed = ((n - n * eps) / math.sqrt(n * (1 + eps) ** 2 + (n * n - n) * eps**2)) ** 2
    assert trace_lower_bound(np.eye(n), eps) == math.ceil(closed)
    # spectral on the whole matrix needs sigma > eps * n: 1 > 0.02 * 200 fails, so it certifies nothing
    assert spectral_lower_bound(np.eye(n), eps) == 0
    # a 40 x 40 block has 1 > 0.02 * 40: the submatrix route recovers what the whole-matrix bound loses
    assert eps_rank_bounds(np.eye(n), eps).lower_submatrix >= 40


def test_upper_bound_is_a_witness():
    rng = np.random.default_rng(3)
    A = np.exp(rng.standard_normal((80, 4)) @ rng.standard_normal((4, 80)))
    eps = 1e-3 * np.abs(A).max()
    k = truncation_upper_bound(A, eps)
    U, s, Vt = np.linalg.svd(A)
    assert np.abs(A - (U[:, :k] * s[:k]) @ Vt[:k]).max() <= eps
    assert k == eps_rank_bounds(A, 1e-3).upper


def test_orthogonal_vectors_instance_is_near_the_disjointness_matrix():
    L, m, gamma = 300, 6, 3.0
    Q, K = orthogonal_vectors_pre_activations(L, m, gamma, seed=2)
    assert np.abs(Q).max() <= gamma and np.abs(K).max() <= gamma
    a, b = Q != 0, K != 0
    D = (a.astype(float) @ b.T.astype(float) == 0).astype(float)  # 1 on orthogonal pairs
    E = np.exp(Q @ K.T)
    assert np.abs(E - D).max() <= math.exp(-(gamma**2)) + 1e-15
    # at eps >= e^{-gamma^2} the disjointness matrix is a witness: the lower bound stays below its rank
    bounds = eps_rank_bounds(E, 2e-4)
    assert math.exp(-(gamma**2)) <= bounds.eps
    rank_d = np.linalg.matrix_rank(D)
    assert bounds.lower <= rank_d
    assert bounds.lower >= 0.8 * rank_d  # and the certified bound comes close to it
    Q2, _ = orthogonal_vectors_pre_activations(L, m, gamma, seed=2)
    assert np.array_equal(Q, Q2)


def test_bad_input():
    with pytest.raises(ValueError, match="rel_err"):
        eps_rank_bounds(np.eye(3), 1.5)
    with pytest.raises(ValueError, match="A: expected a non-empty 2-D"):
        eps_rank_bounds(np.ones(3), 0.1)
    with pytest.raises(ValueError, match="A: expected finite"):
        eps_rank_bounds(np.array([[np.nan]]), 0.1)
    with pytest.raises(ValueError, match="eps"):
        spectral_lower_bound(np.eye(2), -1.0)
    with pytest.raises(ValueError, match="max_submatrix"):
        eps_rank_bounds(np.eye(3), 0.1, max_submatrix=0)
    with pytest.raises(ValueError, match="density"):
        orthogonal_vectors_pre_activations(4, 2, 1.0, density=1.0)
    with pytest.raises(ValueError, match="gamma"):
        orthogonal_vectors_pre_activations(4, 2, 0.0)


def _exact_residual(M: np.ndarray, k: int) -> Fraction:
    # the witness B = fl(U_k S_k) V_k^T as the code forms it, its residual in exact rational arithmetic
    U, s, Vt = np.linalg.svd(M, full_matrices=False)
    F = U[:, :k] * s[:k]
    m, n = M.shape
    return max(
        abs(
            Fraction(float(M[i, j]))
            - sum(Fraction(float(F[i, t])) * Fraction(float(Vt[t, j])) for t in range(k))
        )
        for i in range(m)
        for j in range(n)
    )


def test_upper_bound_witness_is_within_eps_in_exact_arithmetic():
    # eps set at (or one ulp above) the float-computed residual of a rank-k truncation: without a
    # round-off margin the check would accept k even where the exact residual is larger than eps
    rng = np.random.default_rng(0)
    understated = 0
    for _ in range(60):
        n = 6
        M = rng.standard_normal((n, n)) @ np.diag(10.0 ** -np.arange(n)) @ rng.standard_normal((n, n))
        k = int(rng.integers(1, n))
        U, s, Vt = np.linalg.svd(M, full_matrices=False)
        fl_res = float(np.abs(M - (U[:, :k] * s[:k]) @ Vt[:k]).max())
        exact_k = _exact_residual(M, k)
        understated += exact_k > Fraction(fl_res)
        for eps in (fl_res, float(np.nextafter(fl_res, 1.0))):
            got = truncation_upper_bound(M, eps)
            assert _exact_residual(M, got) <= Fraction(eps), (k, got, eps)
    assert understated >= 5  # the float residual does understate the exact one: the margin is needed


def test_upper_bound_margin_costs_nothing_away_from_the_boundary():
    rng = np.random.default_rng(1)
    M = rng.standard_normal((40, 5)) @ rng.standard_normal((5, 40))
    M += 1e-6 * rng.standard_normal((40, 40))
    assert truncation_upper_bound(M, 1e-4) == 5  # a residual ~1e-6 passes a tolerance 1e-4 at once


def test_any_finite_scale_gives_the_same_bounds():
    rng = np.random.default_rng(2)
    A = rng.standard_normal((50, 4)) @ rng.standard_normal((4, 50)) + 1e-3 * rng.standard_normal((50, 50))
    ref = eps_rank_bounds(A, 1e-2)
    assert ref.upper >= 4
    for e in (1018, -1040):  # max|A| * 2^e near 1e307, and subnormal (the scaling then loses low bits)
        B = np.ldexp(A, e)
        # an eps in the subnormals may underflow (harmless); overflow or nan would not be
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            b = eps_rank_bounds(B, 1e-2)
        assert (b.lower, b.upper) == (ref.lower, ref.upper), e
        if e > 0:
            assert b.eps == np.ldexp(ref.eps, e)
    for scale, n in ((1e307, 50), (1e-310, 20)):  # the review's cases: identity at huge and subnormal scale
        b = eps_rank_bounds(scale * np.eye(n), 0.01)
        assert b.lower == b.upper == n
    assert eps_rank_bounds(np.zeros((3, 3)), 0.1).upper == 0


def test_complex_and_non_numeric_input_is_refused():
    with pytest.raises(ValueError, match=r"A: expected a real .* got dtype complex128"):
        eps_rank_bounds(np.array([[1 + 5j, 0], [0, 1j]]), 0.1)
    with pytest.raises(ValueError, match=r"A: expected a real .* got dtype <U1"):
        eps_rank_bounds(np.array([["1", "2"], ["3", "4"]]), 0.1)
    with pytest.raises(ValueError, match=r"A: expected a real .* got dtype object"):
        truncation_upper_bound(np.array([[Fraction(1), 2]], dtype=object), 0.1)
    assert eps_rank_bounds(np.eye(3, dtype=int), 0.1).lower == 3  # ints and bools are real
