"""The lean L-BFGS: compact form vs the two-loop recursion and the dense BFGS update, minimizers
against closed forms and SciPy, the weak Wolfe search, callbacks and bad input."""

import math

import numpy as np
import pytest
import scipy.optimize as sopt
import torch
from hypothesis import given
from hypothesis import strategies as st

from landscapes.lbfgs import _apply_inverse, _weak_wolfe, lbfgs


def _pairs(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``k`` steps ``s_i`` and gradient changes ``y_i = A s_i`` of an SPD ``A`` (rows, oldest first)."""
    g = torch.Generator().manual_seed(seed)
    B = torch.randn(n, n, generator=g, dtype=torch.float64)
    A = (B @ B.T + n * torch.eye(n, dtype=torch.float64)).numpy()
    S = torch.randn(k, n, generator=g, dtype=torch.float64).numpy()
    return S, S @ A


def _compact(g: np.ndarray, S: np.ndarray, Y: np.ndarray, slots: list[int]) -> np.ndarray:
    """``H g`` through :func:`_apply_inverse` with the pairs stored in the given (shuffled) slots."""
    k, n = S.shape
    Sb, Yb = np.zeros((k, n)), np.zeros((k, n))
    Sb[slots], Yb[slots] = S, Y
    gamma = float(S[-1] @ Y[-1] / (Y[-1] @ Y[-1]))
    return _apply_inverse(g, Sb, Yb, np.triu(S @ Y.T), Y @ Y.T, slots, gamma)


@given(seed=st.integers(0, 2**31 - 1), n=st.integers(2, 12), k=st.integers(1, 6), shuffle=st.booleans())
def test_compact_form_equals_the_two_loop_recursion(seed, n, k, shuffle):
    S, Y = _pairs(n, k, seed)
    g = np.random.default_rng(seed).standard_normal(n)
    slots = list(np.random.default_rng(seed + 1).permutation(k)) if shuffle else list(range(k))
    # Nocedal & Wright, Algorithm 7.4
    q, a = g.copy(), []
    for i in reversed(range(k)):
        a.append(float(S[i] @ q) / float(S[i] @ Y[i]))
        q -= a[-1] * Y[i]
    r = float(S[-1] @ Y[-1] / (Y[-1] @ Y[-1])) * q
    for i in range(k):
        r += S[i] * (a[k - 1 - i] - float(Y[i] @ r) / float(S[i] @ Y[i]))
    h = _compact(g, S, Y, slots)
    assert np.allclose(h, r, rtol=1e-10, atol=1e-12 * np.abs(r).max())


def test_compact_form_equals_the_dense_bfgs_inverse_update():
    """H_{k+1} = (I - rho s y^T) H_k (I - rho y s^T) + rho s s^T from H_0 = gamma I, as a matrix."""
    n, k = 7, 4
    S, Y = _pairs(n, k, 3)
    gamma = float(S[-1] @ Y[-1] / (Y[-1] @ Y[-1]))
    H = gamma * np.eye(n)
    for s, y in zip(S, Y):
        rho = 1.0 / float(s @ y)
        E = np.eye(n) - rho * np.outer(s, y)
        H = E @ H @ E.T + rho * np.outer(s, s)
    # the quasi-Newton (secant) condition holds for the newest pair
    assert np.allclose(H @ Y[-1], S[-1], rtol=1e-12)
    for j in range(n):
        e = np.eye(n)[j]
        assert np.allclose(_compact(e, S, Y, list(range(k))), H[:, j], rtol=1e-10, atol=1e-13)


@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 30), cond=st.floats(1.0, 1e4))
def test_quadratic_reaches_the_closed_form_minimizer(seed, n, cond):
    """f = x^T A x / 2 - b^T x: the minimizer is A^{-1} b; L-BFGS gets there to round-off."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    ev = torch.logspace(0, math.log10(cond), n, dtype=torch.float64)
    A = ((Q * ev) @ Q.T).numpy()
    b = torch.randn(n, generator=g, dtype=torch.float64).numpy()
    x_star = np.linalg.solve(A, b)
    res = lbfgs(lambda x: (0.5 * x @ A @ x - b @ x, A @ x - b), np.zeros(n), max_iter=2000)
    assert res.stopped in ("grad_zero", "line_search", "no_progress")  # stops by itself
    assert np.linalg.norm(res.x - x_star) <= 1e-9 * cond * max(1.0, np.linalg.norm(x_star))
    assert np.linalg.norm(res.grad) <= 1e-9 * max(1.0, np.linalg.norm(b)) * cond


def test_rosenbrock_agrees_with_scipy():
    """The extended Rosenbrock function: the same minimizer (all ones) as SciPy's L-BFGS-B."""
    x0 = np.tile([-1.2, 1.0], 10)
    res = lbfgs(lambda x: (sopt.rosen(x), sopt.rosen_der(x)), x0, max_iter=5000)
    ref = sopt.minimize(sopt.rosen, x0, jac=sopt.rosen_der, method="L-BFGS-B", options={"gtol": 1e-12})
    assert np.allclose(res.x, 1.0, atol=1e-8)
    assert np.allclose(res.x, ref.x, atol=1e-5)
    assert res.fun <= ref.fun + 1e-14


def test_gradient_goes_below_what_value_comparisons_allow():
    """Near the minimizer f changes by less than its round-off while the gradient is still 1e-7;
    the decrease test's round-off allowance lets the iteration reach gradients near 1e-13."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((80, 50))
    b = rng.standard_normal(80)

    def fun(x):
        r = A @ x - b
        return 10.0 + 0.5 * r @ r + 0.25 * np.sum(x**4), A.T @ r + x**3

    res = lbfgs(fun, np.zeros(50), max_iter=2000)
    assert np.linalg.norm(res.grad) <= 1e-11
    # ... and then stops at its round-off floor instead of wandering to max_iter, returning an
    # iterate no worse in value than every other it accepted (up to the round-off allowance)
    seen = []
    res = lbfgs(fun, np.zeros(50), max_iter=20000, callback=lambda x, g, k: seen.append(fun(x)[0]) and False)
    assert res.stopped == "no_progress" and res.iterations < 2000
    assert res.fun <= min(seen) + 100 * np.finfo(float).eps * abs(res.fun)


def test_weak_wolfe_step_meets_both_conditions():
    def fun(x):
        return float(np.sum(np.cosh(x))), np.sinh(x)

    x = np.array([2.0, -1.0])
    f, g = fun(x)
    d = -10.0 * g  # a far too long step: bisection must shorten it
    xn, fn, gn = _weak_wolfe(fun, x, d, f, float(g @ d), 1.0)
    t = float((xn - x)[0] / d[0])
    assert 0 < t < 1
    assert fn <= f + 1e-4 * t * float(g @ d)
    assert float(gn @ d) >= 0.9 * float(g @ d)
    # a too short start is doubled
    xn, _, gn = _weak_wolfe(fun, x, 1e-6 * d, f, float(g @ (1e-6 * d)), 1.0)
    assert float((xn - x)[0] / (1e-6 * d[0])) > 1.0


def test_nan_objective_stops_with_a_line_search_failure():
    def fun(x):
        return (float("nan"), x.copy()) if x[0] < 0.5 else (float(x @ x), 2 * x)

    res = lbfgs(fun, np.array([1.0, 1.0]), max_iter=50)
    assert res.stopped == "line_search"
    assert np.isfinite(res.fun) and res.x[0] >= 0.5


def test_callback_sees_the_iterate_and_its_gradient_and_can_stop():
    seen = []

    def cb(x, g, k):
        assert np.array_equal(g, sopt.rosen_der(x))
        seen.append(k)
        return k == 3

    res = lbfgs(lambda x: (sopt.rosen(x), sopt.rosen_der(x)), np.array([-1.2, 1.0]), callback=cb)
    assert res.stopped == "callback" and res.iterations == 3 and seen == [1, 2, 3]


def test_zero_gradient_at_the_start_returns_at_once():
    res = lbfgs(lambda x: (0.0, np.zeros_like(x)), np.ones(3))
    assert res.stopped == "grad_zero" and res.iterations == 0 and res.evaluations == 1


def test_bad_input_is_refused():
    f = lambda x: (float(x @ x), 2 * x)  # noqa: E731
    with pytest.raises(ValueError, match="memory: expected an int >= 1, got 0"):
        lbfgs(f, np.ones(2), memory=0)
    with pytest.raises(ValueError, match="patience: expected an int >= 1, got 0"):
        lbfgs(f, np.ones(2), patience=0)
    with pytest.raises(ValueError, match=r"x0: expected a 1-D array, got shape \(2, 2\)"):
        lbfgs(f, np.ones((2, 2)))
