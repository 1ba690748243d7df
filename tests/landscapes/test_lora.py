"""LoRA objective: closed-form gradient vs autograd, the factorization identity, training."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from landscapes import (
    Problem,
    balanced_factors,
    gaussian_problem,
    lora_value,
    lora_value_and_grad,
    minimize_lora,
    solve_nuc,
)
from theory import r_max
from verify.strategies import lora_points, problems

# Two blocks of different shapes and weight decays, every loss; factors of rank up to 4, not
# capped at min(m_j, n_j) (a rank above a block's size is a valid, redundant factorization).
TWO_BLOCK_PROBLEMS = problems(
    K=(1, 3), N=4, blocks=2, m=(2, 6), n=(2, 6), lam=(0.05, 0.5), lam_per_block=True, kinds=("gaussian",)
)


@given(data=st.data())
def test_gradient_matches_autograd(data):
    P = data.draw(TWO_BLOCK_PROBLEMS)
    pt = data.draw(lora_points(P, rank=(1, 4), scale=1.0, cap_rank=False))
    U = [u.clone().requires_grad_() for u in pt.U]
    V = [v.clone().requires_grad_() for v in pt.V]
    D = [u @ v.T for u, v in zip(U, V)]
    z = P.f0 + (P.J.matrix @ torch.cat([d.reshape(-1) for d in D])).reshape(P.N, P.K)
    f = P.loss.value(z, P.y).mean() + sum(
        0.5 * lam * ((u * u).sum() + (v * v).sum()) for lam, u, v in zip(P.lam, U, V)
    )
    grads = torch.autograd.grad(f, U + V)
    val, gU, gV = lora_value_and_grad(P, [u.detach() for u in U], [v.detach() for v in V])
    assert abs(val - f.item()) <= 1e-12 * max(1.0, abs(val))
    for a, b in zip(gU + gV, grads):
        assert torch.allclose(a, b, atol=1e-12, rtol=1e-10)


@given(data=st.data(), single=st.booleans())
def test_fused_training_objective_matches_the_closed_form(data, single):
    """minimize_lora's inner-loop objective (no per-call validation, the gradient written into the
    returned array) equals lora_value_and_grad, on one or two blocks, float64 and float32."""
    import numpy as np

    from landscapes.lora import _fused_objective

    P = data.draw(TWO_BLOCK_PROBLEMS)
    pt = data.draw(lora_points(P, rank=(1, 4), scale=1.0))
    sizes = [(m, n, u.shape[1]) for (m, n), u in zip(P.blocks, pt.U)]
    x = torch.cat([torch.cat([u.reshape(-1), v.reshape(-1)]) for u, v in zip(pt.U, pt.V)]).numpy()
    f, g = _fused_objective(P, sizes)(x)
    val, gU, gV = lora_value_and_grad(P, pt.U, pt.V)
    ref = torch.cat([torch.cat([a.reshape(-1), b.reshape(-1)]) for a, b in zip(gU, gV)]).numpy()
    assert abs(f - val) <= 1e-12 * max(1.0, abs(val))
    assert np.allclose(g, ref, atol=1e-12, rtol=1e-10)
    if single:  # the float32 route converts in and out
        y32 = P.y.float() if P.y.is_floating_point() else P.y
        P32 = Problem(P.J.matrix.float(), P.f0.float(), y32, loss=P.loss.name, blocks=P.blocks, lam=P.lam)
        f32, g32 = _fused_objective(P32, sizes)(x)
        assert g32.dtype == np.float64 and np.allclose(g32, ref, atol=1e-4, rtol=1e-3)
        assert abs(f32 - val) <= 1e-4 * max(1.0, abs(val))


@given(seed=st.integers(0, 2**31 - 1), m=st.integers(1, 7), n=st.integers(1, 7))
def test_balanced_factors_realize_the_nuclear_norm(seed, m, n):
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(m, n, generator=g, dtype=torch.float64)
    pt = balanced_factors((D,))
    U, V = pt.U[0], pt.V[0]
    assert torch.allclose(U @ V.T, D, atol=1e-12)
    assert torch.allclose(U.T @ U, V.T @ V, atol=1e-12)  # balanced
    nuc = float(torch.linalg.matrix_norm(D, ord="nuc"))
    assert abs(0.5 * (float((U * U).sum()) + float((V * V).sum())) - nuc) <= 1e-12 * max(1, nuc)
    padded = balanced_factors((D,), rank=min(m, n) + 2)
    assert padded.U[0].shape[1] == min(m, n) + 2
    assert torch.allclose(padded.U[0] @ padded.V[0].T, D, atol=1e-12)


@pytest.mark.parametrize("loss, K", [("squared", 1), ("cross_entropy", 2)])
def test_lora_above_the_bound_reaches_the_nuc_optimum(loss, K):
    P = gaussian_problem(K=K, N=6, blocks=[(8, 8)], lam=0.02, loss=loss, seed=5)
    nuc = solve_nuc(P)
    bf = balanced_factors(nuc.D)
    assert abs(lora_value(P, bf.U, bf.V) - nuc.certificate.primal) <= 1e-13
    res = minimize_lora(P, rank=r_max(K, 6) + 1, seed=1, init_scale=0.5)
    assert res.value - nuc.certificate.primal <= 1e-9
    assert res.value >= nuc.certificate.dual - 1e-12  # never below the certified lower bound


def test_minimize_lora_bad_rank():
    P = gaussian_problem(K=1, N=3, blocks=[(3, 3)], lam=0.1, seed=0)
    with pytest.raises(ValueError, match="rank: expected a positive int"):
        minimize_lora(P, rank=0)
    with pytest.raises(ValueError, match="U, V: expected 1 factor pairs"):
        lora_value(P, (), ())


@given(data=st.data())
def test_hvp_matches_autograd(data):
    from landscapes.curvature.hvp import lora_hvp

    P = data.draw(TWO_BLOCK_PROBLEMS)
    r = data.draw(st.integers(1, 3))
    pt = data.draw(lora_points(P, rank=r, scale=1.0, cap_rank=False))
    dpt = data.draw(lora_points(P, rank=r, scale=1.0, cap_rank=False))
    X = list(pt.U) + list(pt.V)
    dX = list(dpt.U) + list(dpt.V)

    def f(*xs):
        U, V = xs[: len(P.blocks)], xs[len(P.blocks) :]
        D = [u @ v.T for u, v in zip(U, V)]
        z = P.f0 + (P.J.matrix @ torch.cat([d.reshape(-1) for d in D])).reshape(P.N, P.K)
        reg = sum(0.5 * lam * ((u * u).sum() + (v * v).sum()) for lam, u, v in zip(P.lam, U, V))
        return P.loss.value(z, P.y).mean() + reg

    _, ref = torch.autograd.functional.hvp(f, tuple(X), tuple(dX))
    b = len(P.blocks)
    hU, hV = lora_hvp(P, X[:b], X[b:], dX[:b], dX[b:])
    for a, c in zip(list(hU) + list(hV), ref):
        assert torch.allclose(a, c, atol=1e-11, rtol=1e-9)


@given(data=st.data())
def test_dense_hessian_matches_autodiff_and_hvp(data):
    """Closed-form dense Hessian == torch.func.hessian == columns of the closed-form HVP."""
    from landscapes.curvature.dense import lora_hessian
    from landscapes.curvature.hvp import lora_hvp

    P = data.draw(TWO_BLOCK_PROBLEMS)
    pt = data.draw(lora_points(P, rank=(1, 3), scale=0.8, cap_rank=False))
    H = lora_hessian(P, pt.U, pt.V)
    sizes = [(u.shape, v.shape) for u, v in zip(pt.U, pt.V)]

    def f(x):
        k, Ds, reg = 0, [], x.new_zeros(())
        for (su, sv), lam in zip(sizes, P.lam):
            nu, nv = su[0] * su[1], sv[0] * sv[1]
            u, v = x[k : k + nu].reshape(su), x[k + nu : k + nu + nv].reshape(sv)
            k += nu + nv
            Ds.append(u @ v.T)
            reg = reg + 0.5 * lam * ((u * u).sum() + (v * v).sum())
        z = P.f0 + (P.J.matrix @ torch.cat([d.reshape(-1) for d in Ds])).reshape(P.N, P.K)
        return P.loss.value(z, P.y).mean() + reg

    x0 = torch.cat([torch.cat([u.reshape(-1), v.reshape(-1)]) for u, v in zip(pt.U, pt.V)])
    ref = torch.func.hessian(f)(x0)
    assert torch.allclose(H, ref, atol=1e-12, rtol=1e-10)
    assert torch.equal(H, H.T)
    # one column through the HVP
    e = torch.zeros_like(x0)
    e[1] = 1.0
    dU, dV, k = [], [], 0
    for su, sv in sizes:
        nu, nv = su[0] * su[1], sv[0] * sv[1]
        dU.append(e[k : k + nu].reshape(su))
        dV.append(e[k + nu : k + nu + nv].reshape(sv))
        k += nu + nv
    hU, hV = lora_hvp(P, pt.U, pt.V, dU, dV)
    col = torch.cat([torch.cat([a.reshape(-1), b.reshape(-1)]) for a, b in zip(hU, hV)])
    assert torch.allclose(H[:, 1], col, atol=1e-12, rtol=1e-10)


@given(problem=problems(blocks=1), r=st.integers(1, 3))
def test_dense_hessian_at_zero_has_the_closed_form_spectrum(problem, r):
    """At U = V = 0 the Hessian is [[lam I, S (x) I], [S^T (x) I, lam I]]: eigenvalues lam +- sigma_i(S),
    and lam for the remaining |m - n| directions of each column pair (every loss: the Gauss-Newton
    term vanishes at zero)."""
    from landscapes.curvature.dense import lora_hessian

    P = problem
    ((m, n),) = P.blocks
    lam = P.lam[0]
    H = lora_hessian(P, [torch.zeros(m, r, dtype=torch.float64)], [torch.zeros(n, r, dtype=torch.float64)])
    S = P.evaluate(P.zeros()).S[0]
    s = torch.linalg.svdvals(S)
    ev = torch.linalg.eigvalsh(H)
    want = sorted(
        [lam + float(x) for x in s] * r + [lam - float(x) for x in s] * r + [lam] * (abs(m - n) * r)
    )
    assert torch.allclose(ev, torch.tensor(want, dtype=torch.float64), atol=1e-13)
