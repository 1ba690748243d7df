"""lambda_min certificates: closed form at zero, structured vs dense vs Lanczos, bad input."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from landscapes import balanced_factors, gaussian_problem, solve_nuc
from landscapes.curvature import (
    LoRAHessianOperator,
    flatten_factors,
    lambda_min,
    lambda_min_dense,
    lambda_min_lanczos,
    lambda_min_structured,
    lora_hessian,
    unflatten_factors,
)
from landscapes.lora import random_factors, random_perturbation
from verify.strategies import lora_points, problems


def _zeros(P, r):
    return (
        [torch.zeros(m, r, dtype=torch.float64) for m, _ in P.blocks],
        [torch.zeros(n, r, dtype=torch.float64) for _, n in P.blocks],
    )


@pytest.mark.parametrize("loss, K", [("squared", 1), ("cross_entropy", 2), ("logistic", 1)])
def test_closed_form_at_zero(loss, K):
    """At U = V = 0 the Hessian is M: lambda_min = lam - ||grad L(0)||_op, by every route."""
    P = gaussian_problem(K=K, N=6, blocks=[(7, 5)], lam=0.01, loss=loss, seed=2)
    U, V = _zeros(P, 3)
    S0 = P.evaluate(P.zeros()).S[0]
    expected = 0.01 - float(torch.linalg.matrix_norm(S0, ord=2))
    st_ = lambda_min_structured(P, U, V)
    de = lambda_min_dense(P, U, V)
    la = lambda_min_lanczos(P, U, V, tol=1e-12)
    assert st_.lower <= expected + 1e-14 and expected <= st_.upper + 1e-14
    assert abs(st_.value - expected) <= 1e-12
    assert abs(de.value - expected) <= 1e-12
    assert abs(la.value - expected) <= 1e-9
    assert st_.residual <= 1e-12 and st_.converged
    assert st_.meta["free_lower_bound"] == pytest.approx(expected, abs=1e-15)


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    loss=st.sampled_from(["squared", "cross_entropy", "logistic"]),
    pert=st.sampled_from([None, "symmetric", "linear"]),
    scale=st.sampled_from([0.05, 0.5, 2.0]),
)
def test_structured_matches_dense_and_lanczos_at_random_points(seed, loss, pert, scale):
    K = {"squared": 1, "cross_entropy": 3, "logistic": 1}[loss]
    P = gaussian_problem(K=K, N=4, blocks=[(5, 4), (3, 6)], lam=[0.02, 0.05], loss=loss, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    pt = random_factors(P, [3, 2], scale=scale, generator=gen)
    C = None if pert is None else random_perturbation(P, form=pert, scale=0.01, generator=gen)
    s = lambda_min_structured(P, pt.U, pt.V, perturbation=C, rtol=1e-12)
    d = lambda_min_dense(P, pt.U, pt.V, perturbation=C)
    la = lambda_min_lanczos(P, pt.U, pt.V, perturbation=C, tol=1e-13)
    scale_ = max(1.0, abs(d.lambda_max))
    # the rigorous interval contains the dense eigenvalue, and is tight
    assert s.lower - 1e-12 * scale_ <= d.value <= s.upper + 1e-12 * scale_
    assert s.upper - s.lower <= 1e-9 * scale_
    assert abs(s.value - d.value) <= 1e-9 * scale_
    assert abs(la.value - d.value) <= 1e-8 * scale_
    assert s.residual <= 1e-6 * scale_
    # the structured lambda_max is an upper bound
    assert s.lambda_max >= d.lambda_max - 1e-12 * scale_
    # the free lower bound lam - sigma_1(S) (min over blocks, unperturbed) holds
    assert s.meta["free_lower_bound"] <= d.value + 1e-12 * scale_


def test_hessian_operator_is_symmetric_and_matches_dense():
    P = gaussian_problem(K=2, N=3, blocks=[(4, 3)], lam=0.1, loss="cross_entropy", seed=0)
    pt = random_factors(P, [2], scale=0.5, generator=torch.Generator().manual_seed(1))
    op = LoRAHessianOperator(P, pt.U, pt.V)
    H = lora_hessian(P, pt.U, pt.V)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(op.shape[0], generator=g, dtype=torch.float64)
    y = torch.randn(op.shape[0], generator=g, dtype=torch.float64)
    assert abs(float(y @ op.matvec(x)) - float(x @ op.matvec(y))) <= 1e-12
    assert torch.allclose(op.matvec(x), H @ x, atol=1e-12)
    A = op.to_scipy()
    assert abs(float(A.matvec(x.numpy()) @ y.numpy()) - float(y @ (H @ x))) <= 1e-12
    U2, V2 = unflatten_factors(flatten_factors(pt.U, pt.V), pt.U, pt.V)
    assert all(torch.equal(a, b) for a, b in zip(U2 + V2, pt.U + pt.V))


@settings(max_examples=10, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    loss=st.sampled_from(["squared", "cross_entropy", "logistic"]),
    pad=st.integers(1, 3),
)
def test_psd_at_a_certified_global_minimum(seed, loss, pad):
    """At balanced factors of a certified NUC optimum (padded to r), the Hessian is PSD within the
    curvature tolerance; padded columns (and rotations) give an exactly flat direction."""
    K = 2 if loss == "cross_entropy" else 1
    P = gaussian_problem(K=K, N=8 // K, blocks=[(9, 7)], lam=0.01, loss=loss, seed=seed)
    sol = solve_nuc(P, gap_rtol=1e-12)
    assert sol.converged
    k = sol.ranks[0]
    bf = balanced_factors(sol.D, rank=min(k + pad, 7))
    s = lambda_min_structured(P, bf.U, bf.V)
    tol = 1e-6 * max(1.0, s.lambda_max)
    assert s.lower >= -tol
    d = lambda_min_dense(P, bf.U, bf.V)
    assert d.value >= -tol
    assert abs(s.value - d.value) <= 1e-8 * max(1.0, d.lambda_max)
    if k + pad <= 7:  # a padded zero column: lambda - sigma_1(S) = 0 at the optimum, up to the gap
        assert abs(d.value) <= 1e-6


def test_bad_input():
    P = gaussian_problem(K=1, N=3, blocks=[(3, 3)], lam=0.1, seed=0)
    pt = random_factors(P, [2], scale=0.5, generator=torch.Generator().manual_seed(0))
    bad = pt.U[0].clone()
    bad[0, 0] = math.nan
    with pytest.raises(ValueError, match="expected finite factors"):
        lambda_min_structured(P, [bad], pt.V)
    with pytest.raises(ValueError, match=r"U\[0\], V\[0\]: expected shapes"):
        lambda_min_structured(P, pt.U, [torch.zeros(3, 1, dtype=torch.float64)])
    with pytest.raises(ValueError, match="rtol: expected a positive float"):
        lambda_min_structured(P, pt.U, pt.V, rtol=0.0)
    with pytest.raises(ValueError, match="tol: expected a positive float"):
        lambda_min_lanczos(P, pt.U, pt.V, tol=-1.0)
    with pytest.raises(ValueError, match="method: expected"):
        lambda_min(P, pt.U, pt.V, method="power")
    with pytest.raises(ValueError, match="max_params"):
        lambda_min_dense(P, pt.U, pt.V, max_params=3)
    with pytest.raises(ValueError, match="perturbation: expected 1 matrices"):
        lambda_min_structured(P, pt.U, pt.V, perturbation=())
    C = torch.randn(6, 6, dtype=torch.float64)
    with pytest.raises(ValueError, match="symmetric"):
        lambda_min_structured(P, pt.U, pt.V, perturbation=(C,))


def test_nondeterministic_operator_is_refused():
    """A Jacobian operator with randomness left on (e.g. dropout) must not yield a certificate."""
    from landscapes import FunctionOperator, Problem

    P = gaussian_problem(K=1, N=4, blocks=[(4, 3)], lam=0.1, seed=0)
    A = P.J.matrix
    noise = torch.Generator().manual_seed(0)

    def mv(x):
        return A @ x * (1 + 1e-3 * torch.rand((), generator=noise, dtype=torch.float64))

    def rmv(y):
        return A.T @ y

    Q = Problem(
        FunctionOperator(mv, rmv, tuple(A.shape)), P.f0, P.y, loss="squared", blocks=P.blocks, lam=0.1
    )
    pt = random_factors(Q, [2], scale=0.5, generator=torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="problem.J: expected a deterministic linear map"):
        lambda_min_lanczos(Q, pt.U, pt.V)
    with pytest.raises(ValueError, match="deterministic"):
        lambda_min_structured(Q, pt.U, pt.V)
    # the same operator without the noise is accepted, and agrees with the dense route
    R = Problem(
        FunctionOperator(lambda x: A @ x, rmv, tuple(A.shape)),
        P.f0,
        P.y,
        loss="squared",
        blocks=P.blocks,
        lam=0.1,
    )
    la = lambda_min_lanczos(R, pt.U, pt.V, tol=1e-12)
    de = lambda_min_dense(P, pt.U, pt.V)
    assert abs(la.value - de.value) <= 1e-9


@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_hvp_operator_is_symmetric(data):
    P = data.draw(problems(K=(1, 2), N=3, blocks=2, lam=(0.05, 0.1), lam_per_block=True, kinds=("gaussian",)))
    pt = data.draw(lora_points(P, rank=(1, 2), scale=1.0))
    gen = torch.Generator().manual_seed(P.seed)
    op = LoRAHessianOperator(P, pt.U, pt.V)
    x = torch.randn(op.shape[0], generator=gen, dtype=torch.float64)
    y = torch.randn(op.shape[0], generator=gen, dtype=torch.float64)
    lhs, rhs = float(y @ op.matvec(x)), float(x @ op.matvec(y))
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs))
