"""SOSP certificates, perturbed objectives, and the optimizers that reach SOSPs."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from landscapes import gaussian_problem, solve_nuc
from landscapes.curvature.hvp import lora_hvp
from landscapes.lora import (
    lora_value,
    lora_value_and_grad,
    minimize_lora,
    random_factors,
    random_perturbation,
)
from landscapes.sosp import certify_sosp, find_sosp, make_init, train
from theory import r_max


def _objective_autodiff(P, C):
    def f(*xs):
        b = len(P.blocks)
        U, V = xs[:b], xs[b:]
        D = [u @ v.T for u, v in zip(U, V)]
        z = P.f0 + (P.J.matrix @ torch.cat([d.reshape(-1) for d in D])).reshape(P.N, P.K)
        reg = sum(0.5 * lam * ((u * u).sum() + (v * v).sum()) for lam, u, v in zip(P.lam, U, V))
        if C is not None:
            for Cj, u, v in zip(C, U, V):
                R = torch.cat([u, v])
                reg = reg + 0.5 * (R * (Cj @ R)).sum()
        return P.loss.value(z, P.y).mean() + reg

    return f


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    form=st.sampled_from(["symmetric", "linear"]),
    loss=st.sampled_from(["squared", "cross_entropy"]),
)
def test_perturbed_gradient_and_hvp_match_autodiff(seed, form, loss):
    K = 1 if loss == "squared" else 2
    P = gaussian_problem(K=K, N=3, blocks=[(4, 3), (2, 3)], lam=[0.1, 0.2], loss=loss, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    pt = random_factors(P, [2, 2], scale=0.7, generator=gen)
    C = random_perturbation(P, form=form, scale=0.3, generator=gen)
    dX = [torch.randn(x.shape, generator=gen, dtype=torch.float64) for x in pt.U + pt.V]
    f = _objective_autodiff(P, C)
    X = [x.clone().requires_grad_(True) for x in pt.U + pt.V]
    val = f(*X)
    grads = torch.autograd.grad(val, X)
    F, gU, gV = lora_value_and_grad(P, pt.U, pt.V, perturbation=C)
    assert abs(F - float(val.detach())) <= 1e-12 * max(1.0, abs(F))
    assert abs(lora_value(P, pt.U, pt.V, perturbation=C) - F) <= 1e-13 * max(1.0, abs(F))
    for a, b in zip(gU + gV, grads):
        assert torch.allclose(a, b, atol=1e-12)
    _, ref = torch.autograd.functional.hvp(f, tuple(pt.U + pt.V), tuple(dX))
    hU, hV = lora_hvp(P, pt.U, pt.V, dX[:2], dX[2:], perturbation=C)
    for a, b in zip(hU + hV, ref):
        assert torch.allclose(a, b, atol=1e-11)
    if form == "linear":  # reading (b): exactly <P, U V^T>
        m = P.blocks[0][0]
        lin = sum(
            float((Cj[: u.shape[0], u.shape[0] :] * (u @ v.T)).sum()) for Cj, u, v in zip(C, pt.U, pt.V)
        )
        assert abs(F - lora_value(P, pt.U, pt.V) - lin) <= 1e-12
        assert m == 4


def test_zero_is_a_first_order_point_but_a_certified_strict_saddle():
    """Planted false claim 'every first-order stationary point is global': zero refutes it."""
    P = gaussian_problem(K=1, N=8, blocks=[(6, 5)], lam=0.01, seed=1)
    U = [torch.zeros(6, 4, dtype=torch.float64)]
    V = [torch.zeros(5, 4, dtype=torch.float64)]
    c = certify_sosp(P, U, V)
    assert c.grad_norm == 0.0
    assert c.S_op[0] > 0.01  # ||grad L(0)||_op > lam
    assert c.is_saddle and not c.is_sosp and not c.is_global
    assert c.curvature.upper < -c.curvature_tol
    assert c.curvature.lower == pytest.approx(0.01 - c.S_op[0], abs=1e-12)


@pytest.mark.parametrize("loss, K", [("squared", 1), ("cross_entropy", 2)])
def test_find_sosp_escapes_zero_and_reaches_the_nuc_optimum(loss, K):
    P = gaussian_problem(K=K, N=8 // K, blocks=[(7, 6)], lam=0.01, loss=loss, seed=3)
    r = r_max(K, 8 // K) + 1
    nuc = solve_nuc(P, gap_rtol=1e-11)
    init = make_init(P, [min(r, 6)], "zero", generator=torch.Generator().manual_seed(0))
    run = find_sosp(P, init)
    c = run.certificate
    assert run.escapes >= 1  # zero is a saddle: the eigenvector step is needed
    assert c.is_sosp and c.is_global
    assert c.objective - nuc.certificate.primal <= 1e-9
    assert c.objective >= nuc.certificate.dual - 1e-12
    assert c.gap_bound <= 1e-8 * max(1.0, abs(c.objective))


@pytest.mark.parametrize("optimizer", ["gd", "adam", "sgd"])
def test_first_order_optimizers_decrease_and_polish_to_an_sosp(optimizer):
    P = gaussian_problem(K=1, N=6, blocks=[(5, 5)], lam=0.02, seed=4)
    init = make_init(P, [4], "zero_b", generator=torch.Generator().manual_seed(1))
    end, hist = train(P, init, optimizer=optimizer, steps=400, batch_size=3, decay=optimizer != "gd")
    assert hist[-1][1] < hist[0][1]
    run = find_sosp(P, init, optimizer=optimizer, max_iter=300, batch_size=3)
    assert run.certificate.is_sosp
    assert run.optimizer in (optimizer, f"{optimizer}+lbfgs")


def test_global_bound_certifies_a_perturbed_optimum():
    """On a perturbed objective, L-BFGS at full rank reaches a point its Burer-Monteiro bound certifies."""
    P = gaussian_problem(K=1, N=6, blocks=[(5, 4)], lam=0.05, seed=7)
    C = random_perturbation(P, form="symmetric", scale=0.005, generator=torch.Generator().manual_seed(0))
    init = make_init(P, [4], "small", generator=torch.Generator().manual_seed(2))
    run = find_sosp(P, init, perturbation=C)
    c = run.certificate
    assert c.is_sosp and c.is_global
    assert min(c.Y_lambda_min) >= -1e-7
    # a non-stationary point is not certified global
    c2 = certify_sosp(P, init.U, init.V, perturbation=C)
    assert not c2.is_sosp


def test_rank_deficient_critical_point_below_the_bound_is_not_global():
    """The best rank-1 point of a problem whose NUC optimum has rank >= 2, padded with a zero column,
    is a first-order point that the certificate refuses to call global."""
    P = gaussian_problem(K=1, N=10, blocks=[(6, 6)], lam=0.005, seed=11)
    nuc = solve_nuc(P, gap_rtol=1e-11)
    assert nuc.ranks[0] >= 2
    res = minimize_lora(P, rank=1, seed=0, init_scale=0.3, grad_tol=1e-12)
    U = [torch.cat([res.point.U[0], torch.zeros(6, 1, dtype=torch.float64)], dim=1)]
    V = [torch.cat([res.point.V[0], torch.zeros(6, 1, dtype=torch.float64)], dim=1)]
    c = certify_sosp(P, U, V)
    assert c.grad_norm <= 1e-9
    assert not c.is_global and c.S_op[0] > 0.005
    assert c.is_saddle  # the padded column sees lam - sigma_1(S) < 0
    assert c.objective - nuc.certificate.primal > 1e-6


def test_bad_input():
    P = gaussian_problem(K=1, N=3, blocks=[(3, 3)], lam=0.1, seed=0)
    init = make_init(P, [2], "small", generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="kind: expected one of"):
        make_init(P, [2], "huge", generator=torch.Generator())
    with pytest.raises(ValueError, match="optimizer: expected one of"):
        find_sosp(P, init, optimizer="newton")
    with pytest.raises(ValueError, match="grad_rtol: expected a positive finite number"):
        certify_sosp(P, init.U, init.V, grad_rtol=0.0)
    with pytest.raises(ValueError, match="lr: expected None or a positive finite number"):
        find_sosp(P, init, optimizer="gd", lr=-1.0)
    bad = init.U[0].clone()
    bad[0, 0] = math.inf
    with pytest.raises(ValueError, match="expected finite factors"):
        certify_sosp(P, [bad], init.V)
    with pytest.raises(ValueError, match="adversarial_rank"):
        make_init(P, [2], "adversarial", generator=torch.Generator(), adversarial_rank=2)
    with pytest.raises(ValueError, match="form: expected"):
        random_perturbation(P, form="diagonal", scale=0.1, generator=torch.Generator())
