"""LoRA objective: closed-form gradient vs autograd, the factorization identity, training."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from landscapes import (
    balanced_factors,
    gaussian_problem,
    lora_value,
    lora_value_and_grad,
    minimize_lora,
    solve_nuc,
)
from theory import r_max


@given(
    seed=st.integers(0, 2**31 - 1),
    r=st.integers(1, 4),
    loss=st.sampled_from(["squared", "cross_entropy", "logistic"]),
)
def test_gradient_matches_autograd(seed, r, loss):
    K = {"squared": 2, "cross_entropy": 3, "logistic": 1}[loss]
    P = gaussian_problem(K=K, N=4, blocks=[(5, 4), (3, 6)], lam=[0.1, 0.3], loss=loss, seed=seed)
    g = torch.Generator().manual_seed(seed)
    U = [torch.randn(m, r, generator=g, dtype=torch.float64, requires_grad=True) for m, _ in P.blocks]
    V = [torch.randn(n, r, generator=g, dtype=torch.float64, requires_grad=True) for _, n in P.blocks]
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


@given(
    seed=st.integers(0, 2**31 - 1),
    r=st.integers(1, 3),
    loss=st.sampled_from(["squared", "cross_entropy", "logistic"]),
)
def test_hvp_matches_autograd(seed, r, loss):
    from landscapes.lora import lora_hvp

    K = {"squared": 2, "cross_entropy": 3, "logistic": 1}[loss]
    P = gaussian_problem(K=K, N=4, blocks=[(4, 3), (2, 5)], lam=[0.1, 0.3], loss=loss, seed=seed)
    g = torch.Generator().manual_seed(seed)
    shapes = [(m, r) for m, _ in P.blocks] + [(n, r) for _, n in P.blocks]
    X = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    dX = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]

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
