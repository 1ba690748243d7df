"""Barvinok-Pataki rank reduction and the FT solver."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from landscapes import Problem, gaussian_problem, reduce_rank, solve_ft
from landscapes.nuc import nuc_certificate
from theory import r_max
from theory.bounds import triangular


@given(
    seed=st.integers(0, 2**31 - 1),
    K=st.integers(1, 3),
    N=st.integers(1, 6),
    m=st.integers(1, 9),
    n=st.integers(1, 9),
    two_blocks=st.booleans(),
)
def test_reduction_keeps_predictions_and_meets_the_bound(seed, K, N, m, n, two_blocks):
    blocks = [(m, n), (n, m + 1)] if two_blocks else [(m, n)]
    P = gaussian_problem(K=K, N=N, blocks=blocks, lam=0.1, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    D = tuple(torch.randn(a, b, generator=g, dtype=torch.float64) for a, b in blocks)
    red = reduce_rank(P, D, weights=[1.0] * len(blocks))
    assert sum(triangular(r) for r in red.ranks_after) <= P.KN
    assert red.prediction_residual <= 1e-10
    z0, z1 = P.predictions(D), P.predictions(red.D)
    assert torch.allclose(z0, z1, atol=1e-9 * max(1.0, float(z0.abs().max())))
    # the (weighted) nuclear norm never grows
    assert sum(red.nuclear_after) <= sum(red.nuclear_before) * (1 + 1e-10) + 1e-12


def test_no_work_when_already_within_the_bound():
    P = gaussian_problem(K=2, N=5, blocks=[(8, 8)], lam=0.1, seed=0)
    g = torch.Generator().manual_seed(0)
    D = torch.randn(8, 2, generator=g, dtype=torch.float64) @ torch.randn(
        2, 8, generator=g, dtype=torch.float64
    )
    red = reduce_rank(P, (D,))
    assert red.steps == 0 and red.ranks_after == (2,)
    assert torch.allclose(red.D[0], D, atol=1e-12)


def test_reduction_from_a_full_rank_point_reaches_r_max_exactly():
    # a generic full-rank start: the face argument cannot stop before the bound, and stops at it
    P = gaussian_problem(K=1, N=10, blocks=[(12, 12)], lam=0.1, seed=1)
    g = torch.Generator().manual_seed(2)
    D = torch.randn(12, 12, generator=g, dtype=torch.float64)
    red = reduce_rank(P, (D,))
    assert red.ranks_before == (12,)
    assert red.ranks_after == (r_max(1, 10),)
    assert red.stopped == "bound reached"


@pytest.mark.parametrize("n", [4, 9])
def test_reduction_keeps_a_nuc_optimum_optimal(n):
    # Closed form: J = vec(I)^T, so L depends on tr D only: L = (tr D - 1)^2 / 2.  Every PSD D with
    # tr D = 1 - lam is a NUC minimizer, among them the full-rank (1 - lam)/n * I; the bound
    # (KN = 1) promises one of rank 1, and the reduction must find it without losing optimality.
    lam = 0.1
    eye = torch.eye(n, dtype=torch.float64)
    P = Problem(
        eye.reshape(1, -1),
        torch.zeros(1, 1, dtype=torch.float64),
        torch.ones(1, 1, dtype=torch.float64),
        loss="squared",
        blocks=[(n, n)],
        lam=lam,
    )
    D_full = (1 - lam) / n * eye
    c0 = nuc_certificate(P, (D_full,))
    assert c0.gap <= 1e-15  # optimal, by its own certificate
    red = reduce_rank(P, (D_full,))
    assert red.ranks_before == (n,) and red.ranks_after == (1,)
    c1 = nuc_certificate(P, red.D)
    assert abs(c1.primal - c0.primal) <= 1e-14 and c1.gap <= 1e-14
    assert abs(float(torch.trace(red.D[0])) - (1 - lam)) <= 1e-14


def test_custom_stop_rule_and_stall():
    # asking for rank 1 on a problem whose constraints pin the point: the loop stops when the
    # face has no direction with unchanged predictions, and says so
    P = gaussian_problem(K=1, N=30, blocks=[(3, 3)], lam=0.1, seed=0)
    g = torch.Generator().manual_seed(1)
    D = torch.randn(3, 3, generator=g, dtype=torch.float64)
    red = reduce_rank(P, (D,), until=lambda ranks: ranks[0] <= 1)
    assert red.ranks_after == (3,)
    assert red.stopped == "no direction with unchanged predictions"


# ---------------------------------------------------------------------------------------------- FT
def test_ft_squared_interpolates_with_minimum_norm():
    P = gaussian_problem(K=2, N=5, blocks=[(6, 6)], lam=0.1, seed=0)
    ft = solve_ft(P)
    assert ft.exists and ft.risk <= 1e-25 and ft.grad_norm <= 1e-12
    # minimum norm: the solution lies in the row space of J
    J = P.J.matrix
    x = P.vec(ft.D)
    proj = J.T @ torch.linalg.lstsq(J @ J.T, J @ x).solution
    assert torch.allclose(proj, x, atol=1e-10)


def test_ft_cross_entropy_separable_has_no_minimizer():
    P = gaussian_problem(K=2, N=8, blocks=[(5, 5)], lam=0.1, loss="cross_entropy", seed=0)
    ft = solve_ft(P)
    assert not ft.exists and ft.D is None
    d = ft.direction
    margins = d.gather(1, P.y.unsqueeze(1)).squeeze(1) - d.gather(1, (1 - P.y).unsqueeze(1)).squeeze(1)
    assert float(margins.min()) >= -1e-9 and abs(float(margins.sum()) - 1.0) <= 1e-8
    # the loss decreases along the direction (it is in the range of J): a certificate one can replay
    z0 = P.f0
    assert P.risk_at(z0 + 10 * d) < P.risk_at(z0)


@pytest.mark.parametrize("loss, K", [("cross_entropy", 2), ("logistic", 1)])
def test_ft_non_separable_minimizer_is_stationary(loss, K):
    P = gaussian_problem(K=K, N=50, blocks=[(6, 6)], lam=0.1, loss=loss, seed=1, jacobian_rank=5)
    ft = solve_ft(P)
    assert ft.exists and ft.grad_norm <= 1e-10 * max(1.0, ft.grad_norm_at_zero)
    # no nearby point is better (convexity + stationarity), spot-checked along random directions
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        E = tuple(1e-3 * torch.randn(6, 6, generator=g, dtype=torch.float64) for _ in P.blocks)
        assert P.risk(tuple(a + b for a, b in zip(ft.D, E))) >= ft.risk - 1e-14


def test_ft_with_operator_form_matches_dense():
    from landscapes import FunctionOperator

    P = gaussian_problem(K=1, N=6, blocks=[(4, 5)], lam=0.1, seed=3)
    J = P.J.matrix
    op = FunctionOperator(lambda x: J @ x, lambda y: J.T @ y, tuple(J.shape))
    Q = Problem(op, P.f0, P.y, loss="squared", blocks=P.blocks, lam=P.lam)
    a, b = solve_ft(P), solve_ft(Q)
    assert torch.allclose(a.D[0], b.D[0], atol=1e-12)
    ra, rb = reduce_rank(P, a.D), reduce_rank(Q, b.D)
    assert ra.ranks_after == rb.ranks_after
