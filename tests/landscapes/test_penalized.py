"""The penalized reference minimum, structural restricted bounds, null directions, shifts, held-out risks."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from landscapes.nonlinear import problems as nl
from landscapes.nonlinear.factors import Factors
from landscapes.nonlinear.penalized import minimize_penalized, prox_gradient_residual
from landscapes.nonlinear.restricted import null_direction, restricted_bounds, restricted_constants
from landscapes.nonlinear.sosp import end_point
from landscapes.synthetic import gaussian_problem


def test_sensing_linear_form_is_the_same_risk():
    p = nl.matrix_sensing(m=5, n=4, N=30, rank=2, noise=0.1, lam=0.02, seed=3)
    X = (torch.randn(5, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64),)
    assert p.value(X) == pytest.approx(p.linear.risk(X), rel=1e-13)
    assert p.lam == p.linear.lam


def test_nuc_route_is_certified_and_matches_proximal_gradient():
    p = nl.matrix_sensing(m=6, n=5, N=40, rank=2, noise=0.05, lam=0.05, seed=1)
    a = minimize_penalized(p)
    assert a.method == "nuc" and a.certified
    assert a.value - a.lower_bound <= 1e-8 * max(1.0, a.value)
    b = minimize_penalized(dataclasses.replace(p, linear=None), tol=1e-11)
    assert b.method == "proximal-gradient" and not b.certified  # lam > 0, non-convex route: no bound
    assert b.value == pytest.approx(a.value, rel=1e-8)
    assert max(float((x - y).abs().max()) for x, y in zip(a.X, b.X)) < 1e-5
    assert a.stationarity < 1e-6 and b.stationarity < 1e-8


def test_nuc_route_agrees_with_cvxpy():
    cp = pytest.importorskip("cvxpy")
    p = nl.matrix_sensing(m=5, n=4, N=25, rank=2, noise=0.1, lam=0.05, seed=2)
    M = p.linear.J.matrix.numpy()
    y = p.linear.y[:, 0].numpy()
    X = cp.Variable((5, 4))
    obj = 0.5 * cp.sum_squares(M @ cp.vec(X, order="C") - y) / 25 + 0.05 * cp.normNuc(X)
    cp.Problem(cp.Minimize(obj)).solve(solver="CLARABEL")
    ours = minimize_penalized(p)
    assert ours.value == pytest.approx(float(obj.value), rel=1e-6)


def test_zero_risk_without_decay_is_certified_global():
    p = nl.two_layer(m=6, n=5, N=40, rank=1, lam=0.0, seed=0)
    ref = minimize_penalized(p)
    assert ref.method == "proximal-gradient"
    assert ref.certified and ref.value <= 1e-12 and ref.lower_bound == 0.0


def test_double_well_closed_form_points():
    lam = 0.05
    p = nl.double_well(lam=lam)
    pts = nl.double_well_points(lam)
    g1, _ = pts["global"]
    s1, s2 = pts["spurious"]
    # The cubic roots: w'(x) = -lam sign(x).
    w1 = lambda x: (x - 1) * (x + 3) * (2 * x + 2) / 4  # noqa: E731
    w2 = lambda x: x * (x + 3) * (2 * x + 3) / 4  # noqa: E731
    assert w1(g1) == pytest.approx(-lam, abs=1e-12) and w1(s1) == pytest.approx(lam, abs=1e-12)
    assert w2(s2) == pytest.approx(lam, abs=1e-12)
    ref = minimize_penalized(p)
    assert torch.allclose(ref.X[0], torch.diag(torch.tensor([g1, 0.0], dtype=torch.float64)), atol=1e-9)
    # The closed-form minimum certifies the reference (and is attained by it).
    assert ref.certified and ref.lower_bound == pytest.approx(nl.double_well_minimum(lam), abs=1e-15)
    assert ref.value == pytest.approx(nl.double_well_minimum(lam), abs=1e-14)
    assert ref.rank == 1
    Xs = torch.diag(torch.tensor([s1, s2], dtype=torch.float64))
    assert prox_gradient_residual(p, (Xs,)) < 1e-9
    assert p.penalized((Xs,)) > ref.value + 0.2
    # As LoRA factors (balanced, r = 2): a certified SOSP of rank 2 that is not global.
    root = torch.diag(torch.tensor([abs(s1), abs(s2)], dtype=torch.float64).sqrt())
    ep = end_point(p, Factors((-root,), (root,)))
    assert ep.sosp and ep.ranks == (2,)
    assert ep.penalized == pytest.approx(p.penalized((Xs,)), rel=1e-12)


def test_bad_penalized_options():
    p = nl.double_well()
    with pytest.raises(ValueError, match="gap_tol"):
        minimize_penalized(p, gap_tol=0.0)
    with pytest.raises(ValueError, match="max_iter"):
        minimize_penalized(p, max_iter=0)
    with pytest.raises(ValueError, match=r"starts\['a'\]"):
        minimize_penalized(p, starts={"a": (torch.zeros(3, 3, dtype=torch.float64),)})
    with pytest.raises(ValueError, match="lam"):
        nl.double_well(lam=0.7)


def test_identity_sensing_bounds_are_exact():
    # N = mn measurements forming an orthonormal basis (times sqrt(N)): H = I.
    m, n = 3, 2
    p = nl.matrix_sensing(m=m, n=n, N=6, rank=1, lam=0.1, seed=0)
    Q, _ = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    lin = dataclasses.replace(p.linear)
    object.__setattr__(lin, "J", type(p.linear.J)(Q * math.sqrt(6)))
    b = restricted_bounds(dataclasses.replace(p, linear=lin))
    assert b.alpha_lower == pytest.approx(1.0, abs=1e-12) and b.beta_upper == pytest.approx(1.0, abs=1e-12)
    assert b.special_certified


@given(seed=st.integers(0, 2**31 - 1))
def test_sampled_ratios_lie_within_the_structural_bounds(seed):
    p = nl.matrix_sensing(m=4, n=3, N=30, rank=1, lam=0.05, seed=seed % 1000)
    b = restricted_bounds(p)
    c = restricted_constants(p, rank=2, radius=2.0, samples=20, seed=seed)
    tol = 1e-10 * max(1.0, b.beta_upper)
    assert b.alpha_lower - tol <= c.alpha and c.beta <= b.beta_upper + tol


def test_bounds_without_structure_and_for_other_losses():
    assert not restricted_bounds(nl.two_layer(m=4, n=3, N=10)).special_certified
    assert restricted_bounds(nl.two_layer(m=4, n=3, N=10)).alpha_lower == -math.inf
    q = gaussian_problem(K=2, N=5, blocks=[(4, 3)], lam=0.1, loss="cross_entropy", seed=0)
    b = restricted_bounds(nl.from_problem(q))
    assert b.alpha_lower == -math.inf and 0 < b.beta_upper < math.inf


@given(seed=st.integers(0, 2**31 - 1), rank=st.integers(1, 2))
def test_null_direction_is_in_the_null_space_and_low_rank(seed, rank):
    q = gaussian_problem(K=1, N=7, blocks=[(8, 5)], lam=0.1, seed=seed % 1000)
    D = null_direction(q, rank=rank, seed=seed)
    assert D is not None
    assert float(q.J.matvec(q.vec(D)).norm()) < 1e-12
    assert int(torch.linalg.matrix_rank(D[0])) <= rank
    assert math.isclose(float(D[0].norm()), 1.0, rel_tol=1e-12)


def test_no_null_direction_when_the_block_is_too_small():
    q = gaussian_problem(K=1, N=9, blocks=[(8, 5)], lam=0.1, seed=0)
    assert null_direction(q, rank=1) is None  # m = 8 <= KN = 9


def test_shifted_problem_moves_the_variable():
    p = nl.matrix_sensing(m=5, n=4, N=30, rank=2, lam=0.02, seed=4)
    g = torch.Generator().manual_seed(5)
    O = (torch.randn(5, 4, generator=g, dtype=torch.float64),)  # noqa: E741
    Y = (torch.randn(5, 4, generator=g, dtype=torch.float64),)
    s = nl.shifted(p, O)
    Xm = (Y[0] - O[0],)
    assert s.value(Y) == pytest.approx(p.value(Xm), rel=1e-14)
    assert s.test_value(Y) == pytest.approx(p.test_value(Xm), rel=1e-14)
    assert s.linear.risk(Y) == pytest.approx(p.value(Xm), rel=1e-12)
    assert torch.allclose(s.x_star[0], p.x_star[0] + O[0])


def test_held_out_risk():
    p = nl.matrix_sensing(m=4, n=3, N=20, rank=1, seed=0)
    assert p.test_value(p.x_star) == pytest.approx(0.0, abs=1e-28)
    assert p.test_value(p.zeros()) > 0
    assert math.isnan(nl.matrix_sensing(m=4, n=3, N=20, rank=1, n_test=0).test_value(p.x_star))
    for make in (nl.two_layer, nl.attention_block):
        q = make(N=10) if make is nl.attention_block else make(m=4, n=3, N=10)
        assert q.test_value(q.x_star) == pytest.approx(0.0, abs=1e-24)
    # The training draws do not depend on the number of held-out examples.
    a = nl.matrix_sensing(m=4, n=3, N=20, rank=1, n_test=5)
    b = nl.matrix_sensing(m=4, n=3, N=20, rank=1, n_test=50)
    assert a.value(b.zeros()) == b.value(b.zeros())
    with pytest.raises(ValueError, match="n_test"):
        nl.two_layer(m=4, n=3, N=10, n_test=-1)
