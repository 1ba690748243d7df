"""NUC solver: closed forms, cvxpy as the reference, Hypothesis properties."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from landscapes import Problem, gaussian_problem, nuc_certificate, solve_nuc, teacher_problem
from landscapes.nuc import singular_value_threshold
from tests.oracles import cvxpy_nuc_objective
from verify.strategies import problems


def denoising_problem(Y: torch.Tensor, lam: float) -> Problem:
    """J = I: L(D) = ||D - Y||_F^2 / (2 N) with N = m n examples, K = 1."""
    m, n = Y.shape
    N = m * n
    return Problem(
        torch.eye(N, dtype=torch.float64),
        torch.zeros(N, 1, dtype=torch.float64),
        Y.reshape(N, 1).clone(),
        loss="squared",
        blocks=[(m, n)],
        lam=lam,
    )


def test_closed_form_singular_value_thresholding():
    # min ||D - Y||^2/(2N) + lam ||D||_*  =>  D* = SVT(Y, N lam)
    g = torch.Generator().manual_seed(0)
    Y = torch.randn(7, 5, generator=g, dtype=torch.float64)
    s_Y = torch.linalg.svdvals(Y)
    lam = float(s_Y[2]) / 35  # threshold N * lam = the third singular value: rank 2 remains
    P = denoising_problem(Y, lam)
    sol = solve_nuc(P)
    expected, s = singular_value_threshold(Y, P.N * lam)
    assert sol.converged
    assert torch.allclose(sol.D[0], expected, atol=1e-6)
    assert sol.ranks[0] == int((s > 0).sum())
    assert 0 < sol.ranks[0] < 5  # the threshold is active: a real test of the rank


def test_zero_is_optimal_iff_gradient_small():
    P = gaussian_problem(K=1, N=10, blocks=[(6, 5)], lam=0.05, seed=0)
    s0 = float(torch.linalg.matrix_norm(P.evaluate(P.zeros()).S[0], ord=2))
    big = Problem(P.J.matrix, P.f0, P.y, loss="squared", blocks=P.blocks, lam=1.01 * s0)
    sol = solve_nuc(big)
    assert sol.ranks == (0,)
    cert0 = nuc_certificate(big, big.zeros())
    assert cert0.gap <= 1e-14  # D = 0 is certified optimal by its own dual point
    small = Problem(P.J.matrix, P.f0, P.y, loss="squared", blocks=P.blocks, lam=0.99 * s0)
    assert nuc_certificate(small, small.zeros()).gap > 1e-6
    assert solve_nuc(small).ranks[0] >= 1


@pytest.mark.parametrize(
    "loss, K", [("squared", 1), ("squared", 2), ("logistic", 1), ("cross_entropy", 2), ("cross_entropy", 3)]
)
def test_agrees_with_cvxpy(loss, K):
    P = gaussian_problem(K=K, N=6, blocks=[(6, 5)], lam=0.03, loss=loss, seed=3)
    sol = solve_nuc(P)
    assert sol.converged and sol.certificate.rel_gap <= 1e-8
    ref = cvxpy_nuc_objective(P, "CLARABEL")
    assert abs(sol.certificate.primal - ref) <= 1e-6 * max(1.0, abs(ref))
    # the certified dual bound is a true lower bound on the reference optimum
    assert sol.certificate.dual <= ref + 1e-7


@pytest.mark.parametrize("loss, K", [("squared", 2), ("cross_entropy", 2), ("logistic", 1)])
def test_factored_and_apg_agree(loss, K):
    P = teacher_problem(K=K, N=8, blocks=[(8, 6)], lam=0.02, loss=loss, seed=1, teacher_rank=2)
    a = solve_nuc(P, method="factored")
    b = solve_nuc(P, method="apg")
    assert a.converged and b.converged
    assert abs(a.certificate.primal - b.certificate.primal) <= 2e-8 * max(1, abs(a.certificate.primal))
    assert a.ranks == b.ranks


def test_multi_block_certificate_and_solution():
    P = gaussian_problem(K=2, N=6, blocks=[(6, 5), (4, 4)], lam=[0.01, 0.04], seed=2)
    sol = solve_nuc(P)
    c = sol.certificate
    assert sol.converged
    # subgradient condition, accurate to about sqrt(gap)
    assert all(s <= lam * (1 + 1e-4) for s, lam in zip(c.S_op, c.lam))
    assert sol.ranks[1] == 0 and c.S_op[1] < 0.04  # the second block's optimum is exactly zero


@given(P=problems(K=(1, 2), N=(1, 8), blocks=1, m=(1, 7), n=(1, 7), lam=(1e-3, 0.5), kinds=("gaussian",)))
def test_weak_duality_and_certified_solution(P):
    ((m, n),) = P.blocks
    g = torch.Generator().manual_seed(P.seed)
    D = torch.randn(m, n, generator=g, dtype=torch.float64)
    assert nuc_certificate(P, (D,)).gap >= -1e-12  # weak duality at an arbitrary point
    sol = solve_nuc(P, seed=P.seed)
    assert sol.converged, sol.certificate
    assert sol.certificate.rel_gap <= 1e-8
    # the returned objective is no worse than D = 0 (a feasible point)
    assert sol.certificate.primal <= P.nuc_objective(P.zeros()) + 1e-12


def test_weight_decay_reaches_the_iterates():
    # The released code of the paper never applied its weight decay; ours must: a larger lam
    # gives a strictly smaller nuclear norm, and the LoRA gradient carries lam * U exactly.
    from landscapes.lora import lora_value_and_grad

    P1 = gaussian_problem(K=1, N=10, blocks=[(6, 6)], lam=0.01, seed=0)
    P2 = gaussian_problem(K=1, N=10, blocks=[(6, 6)], lam=0.05, seed=0)
    n1 = float(torch.linalg.matrix_norm(solve_nuc(P1).D[0], ord="nuc"))
    n2 = float(torch.linalg.matrix_norm(solve_nuc(P2).D[0], ord="nuc"))
    assert n2 < n1
    g = torch.Generator().manual_seed(0)
    U, V = (
        torch.randn(6, 2, generator=g, dtype=torch.float64),
        torch.randn(6, 2, generator=g, dtype=torch.float64),
    )
    _, gu1, _ = lora_value_and_grad(P1, (U,), (V,))
    _, gu2, _ = lora_value_and_grad(P2, (U,), (V,))
    assert torch.allclose(gu2[0] - gu1[0], (0.05 - 0.01) * U, atol=1e-14)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(method="newton"), "method: expected"),
        (dict(gap_rtol=-1.0), "gap_rtol: expected a positive float"),
        (dict(rank=0), "rank: expected a positive int"),
    ],
)
def test_bad_options(kwargs, match):
    P = gaussian_problem(K=1, N=4, blocks=[(3, 3)], lam=0.1, seed=0)
    with pytest.raises(ValueError, match=match):
        solve_nuc(P, **kwargs)


def test_time_limit_returns_unconverged_best_point():
    P = gaussian_problem(K=1, N=20, blocks=[(40, 40)], lam=0.01, seed=0)
    sol = solve_nuc(P, method="apg", time_limit=0.0, check_every=5)
    assert not sol.converged and sol.iterations == 5
    assert sol.certificate.primal <= P.nuc_objective(P.zeros())


def test_lam_zero_is_rejected():
    P = gaussian_problem(K=1, N=4, blocks=[(3, 3)], lam=0.0, seed=0)
    with pytest.raises(ValueError, match="lam: NUC needs lam > 0"):
        solve_nuc(P)
    assert math.isfinite(P.risk(P.zeros()))


@pytest.mark.parametrize("loss, K", [("squared", 1), ("cross_entropy", 2)])
def test_newton_refinement_dense_and_cg_routes_agree(loss, K):
    """From a coarse factored point, Newton at the support rank reaches the fine gap by both routes
    (dense closed-form Hessian + Cholesky, and CG on the HVP), to the same minimizer."""
    from landscapes.nuc import _factored, _newton_refine

    P = gaussian_problem(K=K, N=16 // K, blocks=[(12, 10)], lam=0.02, loss=loss, seed=4)
    D, *_ = _factored(P, gap_rtol=1e-5, rank=None, max_iter=5000, seed=0, check_every=5)
    c = nuc_certificate(P, D, refine=False)  # the solver decides on the scaled gradient's gap
    tau = math.sqrt(c.rel_gap)
    outs = [
        _newton_refine(P, D, c, gap_rtol=1e-11, rank_rtol=tau, deadline=math.inf, dense_max=dm)
        for dm in (10**6, 0)
    ]
    for _, cn, _, _ in outs:
        assert cn.rel_gap <= max(1e-11, 1e-3 * c.rel_gap)
    assert torch.allclose(outs[0][0][0], outs[1][0][0], atol=1e-6)


def test_drop_vanishing_columns_keeps_the_product_up_to_the_dropped_direction():
    from landscapes.nuc import _drop_vanishing_columns

    g = torch.Generator().manual_seed(0)
    P, _ = torch.linalg.qr(torch.randn(7, 3, generator=g, dtype=torch.float64))
    Q, _ = torch.linalg.qr(torch.randn(5, 3, generator=g, dtype=torch.float64))
    s = torch.tensor([2.0, 1.0, 1e-4], dtype=torch.float64)
    R = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))[0]  # unbalance the factors
    U, V = (P * s.sqrt()) @ R, (Q * s.sqrt()) @ R
    Ut, Vt, dropped = _drop_vanishing_columns([U], [V], ratio=1e-2)
    assert dropped and Ut[0].shape[1] == 2
    D2 = (P[:, :2] * s[:2]) @ Q[:, :2].T
    assert torch.allclose(Ut[0] @ Vt[0].T, D2, atol=1e-12)
    _, _, dropped = _drop_vanishing_columns([U], [V], ratio=1e-5)
    assert not dropped


def _on_manifold(D_star: torch.Tensor, E: torch.Tensor, delta: float, k: int) -> torch.Tensor:
    """The rank-``k`` truncation of ``D* + delta E``: a point at distance O(delta) on D*'s rank manifold."""
    P, s, Qh = torch.linalg.svd(D_star + delta * E, full_matrices=False)
    return (P[:, :k] * s[:k]) @ Qh[:k]


def test_support_corrected_certificate_is_second_order():
    """Denoising, threshold strictly between two singular values of Y (strict complementarity):
    on the rank-2 manifold at distance delta the plain gap falls like delta, the corrected like
    delta^2, and both stay above the exact P* - P(D) (weak duality)."""
    g = torch.Generator().manual_seed(0)
    Y = torch.randn(7, 5, generator=g, dtype=torch.float64)
    s_Y = torch.linalg.svdvals(Y)
    P = denoising_problem(Y, float(s_Y[1] + s_Y[2]) / 2 / 35)
    D_star, _ = singular_value_threshold(Y, P.N * P.lam[0])
    p_star = P.nuc_objective((D_star,))
    E = torch.randn(7, 5, generator=g, dtype=torch.float64)
    E /= E.norm()
    plain, corrected = [], []
    for delta in (1e-3, 1e-4):
        D = (_on_manifold(D_star, E, delta, 2),)
        c0, c1 = nuc_certificate(P, D, refine=False), nuc_certificate(P, D)
        assert c0.support_ranks == () and c1.support_ranks == (2,)
        assert c1.dual >= c0.dual and c1.dual <= p_star + 1e-15
        plain.append(c0.gap)
        corrected.append(c1.gap)
    assert 5 < plain[0] / plain[1] < 20  # first order
    assert corrected[0] / corrected[1] > 50  # second order
    assert corrected[1] < 1e-2 * plain[1]


def test_support_corrected_certificate_degenerate_optimum_stays_valid():
    """Threshold exactly at a singular value of Y: S* has a third singular value equal to lam
    outside the rank-2 support, so no rank-2 correction removes the first-order term; the
    certificate is still valid, and no worse than the plain one."""
    g = torch.Generator().manual_seed(0)
    Y = torch.randn(7, 5, generator=g, dtype=torch.float64)
    P = denoising_problem(Y, float(torch.linalg.svdvals(Y)[2]) / 35)
    D_star, _ = singular_value_threshold(Y, P.N * P.lam[0])
    p_star = P.nuc_objective((D_star,))
    E = torch.randn(7, 5, generator=g, dtype=torch.float64)
    gaps = []
    for delta in (1e-3, 1e-4):
        D = (_on_manifold(D_star, E / E.norm(), delta, 2),)
        c0, c1 = nuc_certificate(P, D, refine=False), nuc_certificate(P, D)
        assert c0.dual <= c1.dual <= p_star + 1e-15
        gaps.append(c1.gap)
    assert 5 < gaps[0] / gaps[1] < 20


@given(
    P=problems(K=(1, 3), N=(2, 8), blocks=(1, 2), m=(2, 6), n=(2, 6), lam=(1e-3, 0.2), kinds=("gaussian",))
)
def test_corrected_dual_point_never_exceeds_the_optimum(P):
    """Weak duality for the support-corrected point near the solution and at a random point, for
    every loss (cross-entropy's correction must stay in the conjugate's domain)."""
    sol = solve_nuc(P, seed=P.seed, gap_rtol=1e-13)
    assert sol.certificate.rel_gap <= 1e-13
    p_upper = sol.certificate.primal  # >= P*
    g = torch.Generator().manual_seed(P.seed)
    near = tuple(
        _on_manifold(d, torch.randn(d.shape, generator=g, dtype=torch.float64), 1e-3, max(r, 1))
        for d, r in zip(sol.D, sol.ranks)
    )
    far = tuple(torch.randn(d.shape, generator=g, dtype=torch.float64) for d in sol.D)
    for D in (near, far):
        c1 = nuc_certificate(P, D)
        assert math.isfinite(c1.dual)
        # p_upper is within 1e-13 (relative) of P*: a dual value above it by more is a violation
        assert c1.dual <= p_upper + 2e-13 * max(1.0, abs(p_upper))


@given(seed=st.integers(0, 2**31 - 1), K=st.integers(1, 4), N=st.integers(1, 6), scale=st.floats(0.01, 100.0))
def test_the_correction_step_stays_in_the_conjugate_domain(seed, K, N, scale):
    """_domain_step keeps N w + e_y in the simplex (cross-entropy) or [0, 1] (logistic), even from
    saturated predictions, so the conjugate is never evaluated outside its domain."""
    from landscapes.nuc import _domain_step

    g = torch.Generator().manual_seed(seed)
    loss = "logistic" if K == 1 else "cross_entropy"
    P = gaussian_problem(K=K, N=N, blocks=[(3, 2)], lam=0.1, loss=loss, seed=seed % 1000)
    z = scale * torch.randn(N, K, generator=g, dtype=torch.float64)
    w0 = (P.loss.grad(z, P.y) / N).reshape(-1)
    dw = scale * torch.randn(N * K, generator=g, dtype=torch.float64) / N
    t = _domain_step(P, w0, dw)
    assert 0.0 <= t <= 1.0
    p = N * (w0 + t * dw).view(N, K)
    if loss == "cross_entropy":
        p = p + torch.nn.functional.one_hot(P.y.long(), K).to(p.dtype)
        assert torch.allclose(p.sum(dim=1), torch.ones(N, dtype=p.dtype), atol=1e-13)
        assert float(p.min()) >= -1e-15
    else:
        p = p + P.y.view(N, 1).to(p.dtype)
        assert float(p.min()) >= -1e-15 and float(p.max()) <= 1 + 1e-15
    assert math.isfinite(float(P.loss.conjugate(N * (w0 + t * dw).view(N, K), P.y).sum()))
