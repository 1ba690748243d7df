"""The Rademacher bound of JLR-gen (theory.generalization): closed forms, exact references, properties."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from theory.generalization import (
    GRID_MASS,
    clipped_lipschitz,
    confidence_term,
    default_clip,
    generalization_bound,
    grid_delta,
    grid_index,
    grid_radius,
    hoeffding_radius,
    khintchine_bound,
    rademacher_term,
)


def _exact_expected_norm(mats: list[np.ndarray]) -> float:
    """E ||sum_k eps_k B_k||_op by enumerating all 2^n sign vectors (exact)."""
    total = 0.0
    for signs in itertools.product((-1.0, 1.0), repeat=len(mats)):
        total += np.linalg.norm(sum(s * B for s, B in zip(signs, mats)), 2)
    return total / 2 ** len(mats)


def _variance(mats: list[np.ndarray]) -> float:
    left = sum(B @ B.T for B in mats)
    right = sum(B.T @ B for B in mats)
    return max(np.linalg.norm(left, 2), np.linalg.norm(right, 2))


# ---- closed forms --------------------------------------------------------------------------------
def test_khintchine_closed_form_and_exact_cases():
    # one rank-one summand: ||eps E11|| = 1 always, v = 1
    assert khintchine_bound(1.0, 2, 2) == pytest.approx(math.sqrt(2 * math.log(4)), rel=1e-15)
    # K copies of the identity: Z = (sum eps) I, E|S_K| from the binomial law, v = K
    K, d = 9, 3
    exact = sum(math.comb(K, j) * abs(2 * j - K) for j in range(K + 1)) / 2**K
    assert _exact_expected_norm([np.eye(d)] * K) == pytest.approx(exact, rel=1e-12)
    assert _variance([np.eye(d)] * K) == pytest.approx(K)
    assert exact <= khintchine_bound(K, d, d)
    # diagonal units e_k e_k^T: ||diag(eps)|| = 1, v = 1
    units = [np.diag(np.eye(4)[k]) for k in range(4)]
    assert _exact_expected_norm(units) == pytest.approx(1.0)
    assert khintchine_bound(_variance(units), 4, 4) >= 1.0


@pytest.mark.parametrize("shape, n", [((3, 2), 8), ((4, 4), 10), ((2, 5), 12)])
def test_khintchine_is_above_the_exact_expectation(shape, n):
    rng = np.random.default_rng(sum(shape) + n)
    mats = [rng.standard_normal(shape) for _ in range(n)]
    exact = _exact_expected_norm(mats)
    bound = khintchine_bound(_variance(mats), *shape)
    assert exact <= bound
    # and not absurdly loose on these sizes: within the sqrt(2 log(d1+d2)) factor of sqrt(v)
    assert bound <= math.sqrt(2 * math.log(sum(shape))) * math.sqrt(_variance(mats)) * (1 + 1e-12)
    assert exact >= 0.3 * math.sqrt(_variance(mats))


def test_block_diagonal_variance_bounds_the_max_over_blocks():
    # the dual norm of sum_j ||D_j||_* is max_j ||Z_j||_op = ||diag(Z_1, Z_2)||_op
    rng = np.random.default_rng(3)
    n = 10
    b1 = [rng.standard_normal((3, 2)) for _ in range(n)]
    b2 = [0.5 * rng.standard_normal((2, 4)) for _ in range(n)]
    exact = 0.0
    for signs in itertools.product((-1.0, 1.0), repeat=n):
        z1 = np.linalg.norm(sum(s * B for s, B in zip(signs, b1)), 2)
        z2 = np.linalg.norm(sum(s * B for s, B in zip(signs, b2)), 2)
        exact += max(z1, z2)
    exact /= 2**n
    v = max(_variance(b1), _variance(b2))
    assert exact <= khintchine_bound(v, 3 + 2, 2 + 4)
    # the block-diagonal series has exactly this variance
    bd = [np.block([[x, np.zeros((3, 4))], [np.zeros((2, 2)), y]]) for x, y in zip(b1, b2)]
    assert _variance(bd) == pytest.approx(v, rel=1e-12)


def test_union_bound_arithmetic():
    delta = 0.05
    assert grid_delta(0, delta) == pytest.approx(delta / 3)
    assert grid_delta(-2, delta) == grid_delta(2, delta) == pytest.approx(delta / (GRID_MASS * 12))
    for L in (0, 1, 5, 40):
        partial = sum(grid_delta(k, delta) for k in range(-L, L + 1))
        assert partial == pytest.approx(delta * (1 - 4 / (3 * (L + 2))), rel=1e-12)
        assert partial < delta


def test_grid_index():
    assert grid_index(4.0, 1.0) == 2
    assert grid_index(4.000001, 1.0) == 3
    assert grid_index(0.3, 1.0) == -1  # 0.5 >= 0.3 > 0.25
    assert grid_index(1.0, 1.0) == 0
    assert grid_index(3.0, 0.75) == 2
    for B in (1e-9, 0.7, 69.3, 1e6):
        k = grid_index(B, 1.0)
        assert 2.0**k >= B > 2.0 ** (k - 1)


def test_bound_closed_form():
    b = generalization_bound(
        empirical=0.1, B=1.0, v=1.0, d1=1, d2=1, N=100, rho=1.0, clip=1.0, delta=0.05, base=1.0
    )
    comp = 2 * math.sqrt(2) * math.sqrt(2 * math.log(2)) / 100
    conf = 3 * math.sqrt(math.log(2 / (0.05 / 3)) / 200)
    assert (b.k, b.B_grid, b.delta_k) == (0, 1.0, pytest.approx(0.05 / 3))
    assert b.complexity == pytest.approx(comp, rel=1e-14)
    assert b.confidence == pytest.approx(conf, rel=1e-14)
    assert b.value == pytest.approx(0.1 + comp + conf, rel=1e-14)
    assert rademacher_term(rho=1.0, B=1.0, v=1.0, d1=1, d2=1, N=100) == pytest.approx(comp)
    assert confidence_term(clip=1.0, N=100, delta=0.05 / 3) == pytest.approx(conf)
    assert hoeffding_radius(clip=2.0, M=50, alpha=0.05) == pytest.approx(2 * math.sqrt(math.log(20) / 100))


def test_bound_searches_above_the_first_admissible_grid_point():
    # a tiny radius far below the base: without complexity the confidence term is smallest at k = 0
    b = generalization_bound(empirical=0.0, B=2.0**-10, v=1e-30, d1=2, d2=2, N=50, rho=1.0, clip=1.0)
    assert b.k == 0 and b.B_grid == 1.0
    # and with a real complexity term it stays at the first admissible point
    b = generalization_bound(empirical=0.0, B=3.0, v=100.0, d1=2, d2=2, N=50, rho=1.0, clip=1.0)
    assert b.k == 2 and b.B_grid == 4.0


def test_lipschitz_constants_closed_forms():
    assert clipped_lipschitz("cross_entropy", math.log(2)) == pytest.approx(math.sqrt(2) / 2)
    assert clipped_lipschitz("logistic", math.log(2)) == pytest.approx(0.5)
    assert clipped_lipschitz("squared", 2.0) == pytest.approx(2.0)
    assert default_clip("cross_entropy", 2) == pytest.approx(2 * math.log(2))
    assert default_clip("logistic", 1) == pytest.approx(2 * math.log(2))


def _ce(z: np.ndarray, y: int) -> float:
    return float(np.logaddexp.reduce(z) - z[y])


@given(
    st.lists(st.floats(-6, 6), min_size=3, max_size=3),
    st.lists(st.floats(-6, 6), min_size=3, max_size=3),
    st.integers(0, 2),
    st.floats(0.1, 4.0),
)
def test_clipped_cross_entropy_is_rho_lipschitz(z1, z2, y, b):
    a, c = np.array(z1), np.array(z2)
    rho = clipped_lipschitz("cross_entropy", b)
    lhs = abs(min(_ce(a, y), b) - min(_ce(c, y), b))
    assert lhs <= rho * np.linalg.norm(a - c) + 1e-12


def test_lipschitz_constants_are_attained():
    # the gradient norm approaches rho at the clipping level: the constants are not loose
    b = 1.2
    # K = 2, z = (0, t): l = log(1 + e^t) for y = 0, gradient norm sqrt(2) (1 - p_0)
    t = math.log(math.expm1(b))  # l = b exactly
    p0 = 1 / (1 + math.exp(t))
    assert math.sqrt(2) * (1 - p0) == pytest.approx(clipped_lipschitz("cross_entropy", b), rel=1e-12)
    # squared: l = |z - y|^2 / 2 = b at |z - y| = sqrt(2 b), gradient norm sqrt(2 b)
    assert math.sqrt(2 * b) == pytest.approx(clipped_lipschitz("squared", b))


# ---- properties ----------------------------------------------------------------------------------
_args = dict(d1=20, d2=16, rho=1.0, clip=1.5, delta=0.05, base=1.0)


@given(st.floats(0.0, 1.0), st.floats(1e-3, 1e3), st.floats(1.0, 4.0), st.floats(1e-2, 1e4))
def test_bound_is_monotone_in_B(emp, B, factor, v):
    lo = generalization_bound(empirical=emp, B=B, v=v, N=200, **_args)
    hi = generalization_bound(empirical=emp, B=B * factor, v=v, N=200, **_args)
    assert hi.value >= lo.value - 1e-12
    assert lo.B_grid >= B and hi.B_grid >= B * factor


@given(st.floats(0.0, 1.0), st.floats(1e-2, 1e2), st.integers(1, 10_000), st.integers(1, 10_000))
def test_bound_decreases_in_N(emp, B, n1, n2):
    # v grows linearly with N for i.i.d. rows: compare at v = N (the typical scaling) and at fixed v
    small, large = sorted((n1, n2))
    for v_of in (lambda n: float(n), lambda n: 50.0):
        a = generalization_bound(empirical=emp, B=B, v=v_of(small), N=small, **_args)
        b = generalization_bound(empirical=emp, B=B, v=v_of(large), N=large, **_args)
        assert b.value <= a.value + 1e-12


@given(st.floats(0.0, 1.0), st.floats(1e-2, 1e2), st.floats(1e-1, 1e4), st.integers(-20, 20))
def test_bound_is_scale_invariant(emp, B, v, e):
    # J -> cJ, lam -> c lam: B -> B / c, v -> c^2 v; with the grid base B_0 -> B_0 / c the bound is
    # unchanged (c a power of two keeps the arithmetic exact enough to compare to 1e-12)
    c = 2.0**e
    args = dict(_args)
    a = generalization_bound(empirical=emp, B=B, v=v, N=300, **args)
    args["base"] = args["base"] / c
    b = generalization_bound(empirical=emp, B=B / c, v=v * c * c, N=300, **args)
    assert b.k == a.k
    assert b.value == pytest.approx(a.value, rel=1e-12)


# ---- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: clipped_lipschitz("hinge", 1.0), "loss: expected"),
        (lambda: clipped_lipschitz("squared", 0.0), "clip: expected a finite positive number"),
        (lambda: default_clip("squared", 1), "clip: expected a positive number for the squared loss"),
        (lambda: default_clip("cross_entropy", 1), "K: expected at least 2"),
        (lambda: grid_delta(0, 1.5), "delta: expected a number in (0, 1)"),
        (lambda: grid_index(-1.0, 1.0), "B: expected a finite positive number"),
        (lambda: grid_index(1.0, 1.0, ratio=1.0), "ratio: expected a finite number > 1, got 1.0"),
        (lambda: grid_radius(2000, 1.0), "base: the grid radius base"),
        (lambda: grid_radius(-5000, 1.0, 2.0**0.25), "base: the grid radius base"),
        (lambda: khintchine_bound(-1.0, 2, 2), "v: expected a finite number >= 0"),
        (lambda: hoeffding_radius(clip=1.0, M=0, alpha=0.05), "M: expected a positive int"),
        (
            lambda: generalization_bound(empirical=2.0, B=1.0, v=1.0, d1=1, d2=1, N=1, rho=1.0, clip=1.0),
            "empirical: expected a mean of losses clipped at 1.0",
        ),
    ],
)
def test_bad_input(call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()


# ---- after a fresh-eyes review: the grid's ratio and its range -------------------------------------
@given(
    st.floats(min_value=-300, max_value=300),
    st.floats(min_value=-300, max_value=300),
    st.sampled_from([2.0, 2.0**0.25, 1.05, 10.0]),
)
def test_grid_index_is_the_smallest_admissible_grid_point(logB, logbase, ratio):
    # computed in logarithms: B / base may leave the float range (1e200 / 1e-300 is inf)
    B, base = 10.0**logB, 10.0**logbase
    try:
        k = grid_index(B, base, ratio)
    except ValueError as e:
        assert "outside the float range" in str(e)
        return
    assert grid_radius(k, base, ratio) >= B
    try:
        lower = grid_radius(k - 1, base, ratio)
    except ValueError:
        return  # B_{k-1} underflows: below B
    assert lower < B


def test_extreme_radius_and_base_do_not_overflow():
    k = grid_index(1e200, 1e-300)
    assert grid_radius(k, 1e-300) >= 1e200 > grid_radius(k - 1, 1e-300)
    b = generalization_bound(empirical=0.1, B=1e200, v=1.0, d1=2, d2=2, N=10, rho=1.0, clip=1.0, base=1e-300)
    assert b.B_grid >= 1e200 and 1 <= b.rounding < 2


@pytest.mark.parametrize("c", [1.3, 3.0, 10.0, 0.37])
def test_finer_grid_rounds_by_less_than_its_ratio(c):
    r = 2.0**0.25
    b = generalization_bound(empirical=0.1, B=2.933 / c, ratio=r, **_args, v=1e4 * c**2, N=5000)
    assert b.B_grid >= b.B and 1 <= b.rounding < r
    assert b.B_grid == pytest.approx(b.base * r**b.k) and b.ratio == r
    # the confidences are the ratio-free delta_k
    assert b.delta_k == grid_delta(b.k, 0.05)
