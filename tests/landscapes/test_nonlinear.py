"""Non-linearized LoRA problems and the Monte-Carlo restricted constants of [KKR25].

Oracles: closed forms of matrix sensing (gradient M^T r / N, Hessian M^T M / N), the linearized
``Problem`` with the same measurements (its closed-form LoRA gradient), quadratics whose restricted
constants are known exactly, and Hypothesis properties over random quadratics.
"""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from landscapes.lora import lora_value_and_grad
from landscapes.nonlinear.problems import (
    NonlinearProblem,
    attention_block,
    from_problem,
    matrix_sensing,
    nonlinear_sensing,
    two_layer,
)
from landscapes.nonlinear.restricted import restricted_constants, sample_restricted_set
from landscapes.problem import Problem


def _sensing_parts(p: NonlinearProblem, seed: int, m: int, n: int, N: int):
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(N, m, n, generator=g, dtype=torch.float64).reshape(N, m * n)
    y = M @ p.x_star[0].reshape(-1)
    return M, y


@given(seed=st.integers(0, 2**31 - 1))
def test_sensing_gradient_and_hessian_closed_form(seed):
    m, n, N = 5, 4, 30
    p = matrix_sensing(m=m, n=n, N=N, rank=2, seed=seed)
    M, y = _sensing_parts(p, seed, m, n, N)
    g = torch.Generator().manual_seed(seed + 7)
    X = torch.randn(m, n, generator=g, dtype=torch.float64)
    Z = torch.randn(m, n, generator=g, dtype=torch.float64)
    r = M @ X.reshape(-1) - y
    assert math.isclose(p.value((X,)), 0.5 * float((r * r).mean()), rel_tol=1e-12)
    assert torch.allclose(p.grad((X,))[0], (M.T @ r / N).reshape(m, n), atol=1e-12)
    assert torch.allclose(p.hvp((X,), (Z,))[0], (M.T @ (M @ Z.reshape(-1)) / N).reshape(m, n), atol=1e-12)
    assert p.value(p.x_star) < 1e-25  # noiseless: X* is a global minimizer


@given(seed=st.integers(0, 2**31 - 1), r=st.integers(1, 3))
def test_lora_objective_matches_the_linearized_closed_form(seed, r):
    # Linear sensing is its own linearization: the same LoRA objective as a Problem with J = M.
    m, n, N, lam = 5, 4, 12, 0.03
    p = matrix_sensing(m=m, n=n, N=N, rank=2, lam=lam, seed=seed)
    M, y = _sensing_parts(p, seed, m, n, N)
    lin = Problem(
        M, torch.zeros(N, 1, dtype=torch.float64), y[:, None], loss="squared", blocks=[(m, n)], lam=lam
    )
    g = torch.Generator().manual_seed(seed + 3)
    A = torch.randn(m, r, generator=g, dtype=torch.float64)
    B = torch.randn(n, r, generator=g, dtype=torch.float64)
    f, gA, gB = p.lora_value_and_grad((A,), (B,))
    f2, gU, gV = lora_value_and_grad(lin, (A,), (B,))
    assert math.isclose(f, f2, rel_tol=1e-12)
    assert torch.allclose(gA[0], gU[0], atol=1e-12) and torch.allclose(gB[0], gV[0], atol=1e-12)


def test_nonlinear_sensing_is_not_quadratic():
    p = nonlinear_sensing(m=6, n=5, N=80, rank=2, seed=1)
    X = (torch.ones(6, 5, dtype=torch.float64),)
    Z = (torch.ones(6, 5, dtype=torch.float64) / 30,)
    assert p.value(p.x_star) == 0.0
    h0, h1 = p.curvature(p.x_star, Z), p.curvature(X, Z)
    assert abs(h0 - h1) > 1e-3 * abs(h0)  # the Hessian moves with X


# ---- restricted constants --------------------------------------------------------------------------


def test_identity_quadratic_has_alpha_equal_beta_equal_one():
    Xs = torch.randn(7, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    q = NonlinearProblem(lambda X: 0.5 * ((X[0] - Xs) ** 2).sum(), ((7, 5),), (0.0,), x_star=(Xs,))
    rc = restricted_constants(q, rank=5, radius=2.0, samples=40)
    assert math.isclose(rc.alpha, 1.0, rel_tol=1e-12) and math.isclose(rc.beta, 1.0, rel_tol=1e-12)
    assert rc.regime == "special" and not rc.certified  # 2 alpha > beta, but only sampled


@given(seed=st.integers(0, 2**31 - 1))
def test_every_ratio_lies_in_the_hessian_spectrum(seed):
    # f(X) = 1/2 vec(X - X*)^T H vec(X - X*): every RSC and RSM ratio is a Rayleigh quotient of H.
    g = torch.Generator().manual_seed(seed)
    m, n = 4, 3
    R = torch.randn(m * n, m * n, generator=g, dtype=torch.float64)
    H = R @ R.T / (m * n) + 0.1 * torch.eye(m * n, dtype=torch.float64)
    Xs = torch.randn(m, 1, generator=g, dtype=torch.float64) @ torch.randn(
        1, n, generator=g, dtype=torch.float64
    )

    def risk(X):
        d = (X[0] - Xs).reshape(-1)
        return 0.5 * d @ H @ d

    q = NonlinearProblem(risk, ((m, n),), (0.0,), x_star=(Xs,))
    ev = torch.linalg.eigvalsh(H)
    rc = restricted_constants(q, rank=2, radius=1.5, samples=30, seed=seed)
    lo, hi = float(ev[0]), float(ev[-1])
    assert lo * (1 - 1e-10) <= rc.alpha and rc.beta <= hi * (1 + 1e-10)
    assert rc.alpha_quantiles["min"] == rc.alpha and rc.beta_quantiles["max"] == rc.beta
    assert rc.regime in ("generic", "special")  # H is positive definite: RSC holds


@given(seed=st.integers(0, 2**31 - 1), r=st.integers(1, 4), d=st.floats(1e-3, 10.0))
def test_samples_are_in_the_restricted_set(seed, r, d):
    g = torch.Generator().manual_seed(seed)
    Xs = torch.randn(6, 1, generator=g, dtype=torch.float64) @ torch.randn(
        1, 5, generator=g, dtype=torch.float64
    )
    X = sample_restricted_set((Xs,), r, d, g)
    assert int(torch.linalg.matrix_rank(X[0])) <= r
    dist = float((X[0] - Xs).norm())
    assert d * (1 - 1e-9) <= dist <= d  # inside the ball, on its sphere up to bisection accuracy


def test_a_concave_risk_certifies_that_rsc_fails():
    Xs = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    q = NonlinearProblem(lambda X: -0.5 * ((X[0] - Xs) ** 2).sum(), ((5, 4),), (0.0,), x_star=(Xs,))
    rc = restricted_constants(q, rank=4, radius=1.0, samples=10)
    assert rc.alpha < 0 and rc.regime == "no-rsc" and rc.certified


def test_few_measurements_witness_the_generic_regime():
    # N = 60 measurements of a 12 x 10 matrix: the restricted eigenvalues spread, and the samples
    # themselves certify 2 alpha <= beta; with N = 400 they stay near 1 (special, estimated).
    few = restricted_constants(matrix_sensing(m=12, n=10, N=60, rank=2), rank=4, radius=1.0, samples=150)
    many = restricted_constants(matrix_sensing(m=12, n=10, N=400, rank=2), rank=4, radius=1.0, samples=150)
    assert few.regime == "generic" and few.certified
    assert many.regime == "special" and not many.certified and many.alpha > 0.5


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: matrix_sensing(m=4, n=3, N=10, rank=4), r"rank: expected at most min\(m, n\) = 3"),
        (lambda: matrix_sensing(m=4, n=3, N=10, condition=0.5), "condition: expected a finite number >= 1"),
        (lambda: nonlinear_sensing(m=4, n=3, N=10, link="relu"), "link: expected one of"),
        (lambda: NonlinearProblem(lambda X: X[0].sum(), ((3, 0),), (0.0,)), "blocks: expected"),
        (lambda: NonlinearProblem(lambda X: X[0].sum(), ((3, 2),), (-1.0,)), "lam: expected 1 finite"),
    ],
)
def test_bad_problems(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_points_and_options():
    p = matrix_sensing(m=4, n=3, N=20, rank=2)
    with pytest.raises(ValueError, match=r"X\[0\]: expected shape \(4, 3\), got \(3, 4\)"):
        p.value((torch.zeros(3, 4, dtype=torch.float64),))
    with pytest.raises(ValueError, match="rank: expected at least rank"):
        restricted_constants(p, rank=1, radius=1.0)
    with pytest.raises(ValueError, match="radius: expected a positive finite number"):
        restricted_constants(p, rank=2, radius=0.0)
    with pytest.raises(ValueError, match="samples: expected a positive int"):
        restricted_constants(p, rank=2, radius=1.0, samples=0)
    no_star = NonlinearProblem(p.risk, p.blocks, p.lam)
    with pytest.raises(ValueError, match="pass x_star="):
        restricted_constants(no_star, rank=2, radius=1.0)
    with pytest.raises(ValueError, match=r"X\[0\]: expected finite entries"):
        p.value((torch.full((4, 3), math.nan, dtype=torch.float64),))


# ---- more families -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: two_layer(m=7, n=5, N=40, rank=1, seed=3),
        lambda: attention_block(d=6, T=4, N=20, rank=1, seed=3),
        lambda: matrix_sensing(m=6, n=5, N=50, rank=2, measurement_condition=50.0, seed=3),
    ],
)
def test_teachers_are_global_minimizers_and_gradients_are_right(make):
    p = make()
    assert p.value(p.x_star) < 1e-28
    assert all(float(g.abs().max()) < 1e-14 for g in p.grad(p.x_star))
    g = torch.Generator().manual_seed(0)
    X = tuple(0.3 * torch.randn(m, n, generator=g, dtype=torch.float64) for m, n in p.blocks)
    D = tuple(torch.randn(m, n, generator=g, dtype=torch.float64) for m, n in p.blocks)
    eps = 1e-6
    fd = (
        p.value(tuple(x + eps * d for x, d in zip(X, D))) - p.value(tuple(x - eps * d for x, d in zip(X, D)))
    ) / (2 * eps)
    an = sum(float((a * d).sum()) for a, d in zip(p.grad(X), D))
    assert abs(fd - an) <= 1e-7 * max(1.0, abs(an))


def test_ill_conditioned_measurements_are_generic():
    rc = restricted_constants(
        matrix_sensing(m=10, n=8, N=300, rank=2, measurement_condition=100.0), rank=3, radius=1.0, samples=100
    )
    assert rc.regime == "generic" and rc.certified


def test_from_problem_is_the_same_objective():
    from landscapes.synthetic import gaussian_problem

    q = gaussian_problem(K=2, N=6, blocks=[(5, 4), (3, 6)], lam=[0.1, 0.2], loss="cross_entropy", seed=0)
    nl = from_problem(q)
    g = torch.Generator().manual_seed(0)
    A = tuple(torch.randn(m, 2, generator=g, dtype=torch.float64) for m, _ in q.blocks)
    B = tuple(torch.randn(n, 2, generator=g, dtype=torch.float64) for _, n in q.blocks)
    f, gA, gB = nl.lora_value_and_grad(A, B)
    f2, gU, gV = lora_value_and_grad(q, A, B)
    assert math.isclose(f, f2, rel_tol=1e-13)
    for a, b in zip(gA + gB, gU + gV):
        assert torch.allclose(a, b, atol=1e-13)


def test_bad_family_arguments():
    with pytest.raises(ValueError, match="measurement_condition: expected a finite number >= 1"):
        matrix_sensing(m=4, n=3, N=10, rank=1, measurement_condition=0.5)
    with pytest.raises(ValueError, match=r"rank: expected an int in \[1, min\(m, n\)\] = \[1, 3\]"):
        two_layer(m=4, n=3, N=10, rank=4)
    with pytest.raises(ValueError, match="T: expected a positive int"):
        attention_block(T=0)
