"""The polynomial method's degree and rank in [HSK24]'s regime (theory.hsk): closed forms, brute force."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from theory.hsk import (
    doubling_lengths,
    far_crossover,
    log_taylor_error_bound,
    polynomial_method_table,
    rank_crossover,
    taylor_degree,
)


def _brute_degree(M: Fraction, eps: Fraction) -> int:
    """The smallest g with e^M M^(g+1)/(g+1)! <= eps, scanning g upward in exact rationals.

    e^M is bracketed by partial sums of its series (a lower bound) and the same plus a geometric
    tail (an upper bound); a g is accepted when the upper bound is <= eps, rejected when the lower
    bound is > eps (the test draws cases away from a tie).
    """
    lo = sum(M**j / math.factorial(j) for j in range(60))
    hi = lo + M**60 / math.factorial(60) * 2  # M <= 8: the tail is below twice its first term
    g = 0
    while True:
        t = M ** (g + 1) / math.factorial(g + 1)
        if hi * t <= eps:
            return g
        assert lo * t > eps, "too close to a tie for this brute force"
        g += 1


@given(
    M_num=st.integers(1, 80),
    eps_exp=st.integers(1, 40),
)
def test_taylor_degree_equals_brute_force(M_num, eps_exp):
    M = Fraction(M_num, 10)  # 0.1 .. 8
    eps = Fraction(1, 3**eps_exp)
    g = taylor_degree(float(M), log_eps=math.log(float(eps)))
    # away from ties only (the float and the exact answer agree there)
    margin = abs(log_taylor_error_bound(float(M), g) - math.log(float(eps)))
    prev = abs(log_taylor_error_bound(float(M), g - 1) - math.log(float(eps))) if g else 1.0
    if min(margin, prev) > 1e-9:
        assert g == _brute_degree(M, eps)


@given(
    M=st.floats(0.0, 500.0),
    a=st.floats(0.01, 400.0),
    b=st.floats(0.01, 400.0),
)
def test_taylor_degree_is_minimal_and_monotone(M, a, b):
    g = taylor_degree(M, log_eps=-a)
    assert log_taylor_error_bound(M, g) <= -a
    if g > 0:
        assert log_taylor_error_bound(M, g - 1) > -a
    # a smaller accuracy needs no smaller degree; a larger score bound neither
    lo, hi = sorted((a, b))
    assert taylor_degree(M, log_eps=-hi) >= taylor_degree(M, log_eps=-lo)
    assert taylor_degree(M + 1.0, log_eps=-a) >= g


def test_taylor_degree_closed_forms():
    # M = 1: e M^{g+1}/(g+1)! <= 1e-3 first at (g+1)! >= 2718.3, i.e. g + 1 = 7 (5040; 720 is too small)
    assert taylor_degree(1.0, log_eps=math.log(1e-3)) == 6
    assert taylor_degree(0.0, log_eps=-5.0) == 0
    # huge accuracies stay finite in logs: eps = 2^-4096 at M = 1
    # (at M = 1 the log bound is 1 - ln (g+1)!; minimal: the degree below misses)
    g = taylor_degree(1.0, log_eps=-4096 * math.log(2))
    # exact oracle in integers: the smallest k with k! >= e 2^4096 (e bracketed by two rationals
    # that give the same k), and the degree is k - 1
    from fractions import Fraction

    def smallest(e: Fraction) -> int:
        k, f = 1, 1
        while f < e * 2**4096:
            k += 1
            f *= k
        return k

    k_lo, k_hi = smallest(Fraction(27182818284, 10**10)), smallest(Fraction(27182818285, 10**10))
    assert k_lo == k_hi
    assert g == k_lo - 1


def test_table_rows_by_hand():
    (row,) = polynomial_method_table([8])
    ln8 = math.log(8)
    assert row.d == 3 and row.gamma == pytest.approx(ln8**0.4) and row.M == pytest.approx(ln8**0.8)
    g = taylor_degree(ln8**0.8, log_eps=-ln8)
    assert row.degree == g and row.rank == math.comb(3 + g, g) and row.exact
    assert row.rank_below_L == (row.rank < 8) and row.log2_eps == pytest.approx(-3.0)
    (unscaled,) = polynomial_method_table([8], m_rule="d*gamma^2")
    assert unscaled.M == pytest.approx(3 * ln8**0.8) and unscaled.degree >= row.degree
    # the same length given in logs: same degree, the rank in logs only
    (far,) = polynomial_method_table(log2_lengths=[3.0])
    assert far.L is None and far.rank is None and far.degree == g
    assert far.log2_rank == pytest.approx(math.log2(math.comb(3 + g, g)), rel=1e-12)


def test_exact_comparison_where_rank_and_L_are_close():
    rows = polynomial_method_table(doubling_lengths(300))
    for r in rows:
        if abs(r.log2_rank - r.log2_L) < 2 or r.log2_rank < 256:
            assert r.exact and r.rank == math.comb(r.d + r.degree, r.degree)
            assert r.rank_below_L == (r.rank < r.L)
        else:
            assert r.rank_below_L == (r.log2_rank < r.log2_L)


def test_crossover_on_a_regime_that_crosses_early_and_one_that_never_does():
    # A constant score bound M = 1 (gamma_exponent 0) with d = ceil(ln L): the rank is L^{o(1)}
    # and falls below L for good within 2^300 (d's rounding makes it flip a few times before)
    kw = dict(gamma_exponent=0.0, gamma_factor=1.0, d_factor=1.0)
    rows = polynomial_method_table(doubling_lengths(300), **kw)
    c = rank_crossover(rows)
    assert c is not None and 2 < c.log2_L < 300
    assert all(r.rank_below_L for r in rows if r.log2_L >= c.log2_L)
    assert not next(r for r in rows if r.log2_L == c.log2_L - 1).rank_below_L
    # far_crossover (powers-of-two grid in log2 L, then bisection) lands on the same length here
    f, scan = far_crossover(max_log2=1 << 12, **kw)
    assert f is not None and f.row.log2_L == c.log2_L and scan[-1].log2_L == 1 << 12
    # the unscaled regime M = d Gamma^2: the rank stays above L (it grows faster than any power)
    none, scan = far_crossover(max_log2=1 << 30, m_rule="d*gamma^2")
    assert none is None and scan[-1].log2_rank > 10 * scan[-1].log2_L


def test_far_crossover_walks_past_the_flips_near_the_crossing():
    # Near the default regime's crossing the integer degree and ceil(ln L) make rank - L change
    # sign several times; bisection alone lands on the first crossing it meets (2^60,841,944).
    f, _ = far_crossover()
    assert f is not None and f.settled
    x = int(f.row.log2_L)
    assert f.flips and f.flips[-1] == x - 1 and all(k < x for k in f.flips)
    # every flip is a length with rank >= L; from x on the rank is below L over the walk
    assert not any(r.rank_below_L for r in polynomial_method_table(log2_lengths=list(f.flips)))
    after = polynomial_method_table(log2_lengths=list(range(x, x + f.scanned_after + 1)))
    assert all(r.rank_below_L for r in after)
    (just_before,) = polynomial_method_table(log2_lengths=[min(f.flips) - 1])
    assert just_before.rank_below_L  # the first dip below L, before the flips
    # the walk stops where the margin exceeds one step of d and g: log2((d+g+1)/(g+1)) + log2((d+g+1)/(d+1))
    last = after[-1]
    d, g = last.d, last.degree
    delta = math.log2((d + g + 1) / (g + 1)) + math.log2((d + g + 1) / (d + 1))
    assert f.fluctuation_bits == pytest.approx(delta) and f.margin_bits > delta > 1.5
    assert last.log2_L - last.log2_rank == pytest.approx(f.margin_bits)
    assert all(r.log2_L - r.log2_rank <= delta for r in after[:-1])
    assert (x, f.flips) == (60_841_960, (60_841_945, 60_841_948, 60_841_953, 60_841_956, 60_841_959))


def test_taylor_degree_is_exact_at_large_score_bounds():
    # at M >= 1e15 the float terms of the log bound cancel to ~10 absolute: the decimals decide there
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 60
    for M, log_eps in ((1e15, -20.0), (1e17, -5.0), (3.2e9, -7.6e11), (1e6, -10.0)):
        g = taylor_degree(M, log_eps=log_eps)

        def bound(k: int, M: float = M) -> object:
            m = mp.mpf(M)
            return m + (k + 1) * mp.log(m) - mp.loggamma(k + 2)

        assert bound(g) <= log_eps < bound(g - 1), (M, log_eps, g)


def test_bad_input():
    with pytest.raises(ValueError, match="log_eps: expected a finite"):
        taylor_degree(1.0, log_eps=-math.inf)
    with pytest.raises(ValueError, match="M: expected a score bound <= 1e"):
        taylor_degree(1e308, log_eps=-1.0)
    with pytest.raises(ValueError, match="scan_limit"):
        far_crossover(scan_limit=0)
    with pytest.raises(ValueError, match="log_eps: expected"):
        taylor_degree(1.0, log_eps=0.0)
    with pytest.raises(ValueError, match="M: expected"):
        taylor_degree(-1.0, log_eps=-1.0)
    with pytest.raises(ValueError, match="degree: expected"):
        log_taylor_error_bound(1.0, -1)
    with pytest.raises(ValueError, match="lengths: expected ints >= 2"):
        polynomial_method_table([1])
    with pytest.raises(ValueError, match="lengths, log2_lengths"):
        polynomial_method_table()
    with pytest.raises(ValueError, match="m_rule"):
        polynomial_method_table([4], m_rule="gamma")
    with pytest.raises(ValueError, match="eps_power"):
        polynomial_method_table([4], eps_power=0)
    with pytest.raises(ValueError, match="max_log2"):
        far_crossover(min_log2=8, max_log2=4)
    with pytest.raises(ValueError, match="rows"):
        rank_crossover([])
