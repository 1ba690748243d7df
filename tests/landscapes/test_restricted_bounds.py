"""Certified restricted constants of generalized-linear sensing risks (``restricted_bounds`` with a radius).

The oracle is the full Hessian (autograd) at points of the set: the bounds claim
``G^- <= Hess f(Y) <= G^+`` for every ``Y`` with ``Y - X*`` of rank ``<= r + r*`` and norm ``<= D``,
so ``lambda_min(Hess f(Y)) >= alpha_lower`` and ``lambda_max(Hess f(Y)) <= beta_upper`` there.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from landscapes.nonlinear import problems as nl
from landscapes.nonlinear.restricted import (
    RestrictedBounds,
    _curvature_slack,
    _sensing_intervals,
    certified_radius,
    curvature_range,
    link_curvature,
    restricted_bounds,
    restricted_constants,
    rsc_ratio,
    rsc_search,
    sample_restricted_set,
    sensing_bounds,
)


def _hessian(problem: nl.NonlinearProblem, Y: torch.Tensor) -> torch.Tensor:
    m, n = problem.blocks[0]
    return torch.autograd.functional.hessian(lambda v: problem.risk((v.reshape(m, n),)), Y.reshape(-1))


def _exact_phi(link: str, z: torch.Tensor) -> torch.Tensor:
    if link == "tanh":
        return torch.tanh(z)
    if link == "softplus":
        return torch.logaddexp(z, torch.zeros_like(z))
    return z


@pytest.mark.parametrize("link", ["identity", "tanh", "softplus"])
def test_link_curvature_is_the_second_derivative_and_its_slack_bounds_the_third_order(link):
    gen = torch.Generator().manual_seed(0)
    z = 8 * torch.randn(400, generator=gen, dtype=torch.float64)
    y = 3 * torch.randn(400, generator=gen, dtype=torch.float64)
    zz = z.clone().requires_grad_(True)
    loss = 0.5 * (_exact_phi(link, zz) - y).pow(2)
    (d1,) = torch.autograd.grad(loss.sum(), zz, create_graph=True)
    if link == "identity":
        assert torch.allclose(d1, zz - y)
        assert torch.equal(link_curvature(link, z, y), torch.ones_like(z))
        return
    (d2,) = torch.autograd.grad(d1.sum(), zz, create_graph=True)
    torch.testing.assert_close(link_curvature(link, z, y), d2.detach(), rtol=1e-10, atol=1e-12)
    # |c''| at points of an interval never exceeds the closed-form bound of that interval.
    (cpp,) = torch.autograd.grad(torch.autograd.grad(d2.sum(), zz, create_graph=True)[0].sum(), zz)
    lo, hi = z - 0.5, z + 0.5
    k2, _ = _curvature_slack(link, lo, hi, y)
    assert bool((cpp.abs() <= k2).all())
    # ... and at the interval's ends (the bound covers the whole interval, not just its centre).
    for end in (lo, hi):
        e = end.clone().requires_grad_(True)
        c = link_curvature(link, e, y)
        (c1,) = torch.autograd.grad(c.sum(), e, create_graph=True)
        (c2,) = torch.autograd.grad(c1.sum(), e)
        assert bool((c2.abs() <= k2).all())


def _tanh_extremes(lo: float, hi: float, y: float) -> tuple[float, float]:
    """min / max of g(t) = (1 - t^2)(1 - 3t^2 + 2yt) over t in [tanh lo, tanh hi]: critical points of g."""
    ta, tb = math.tanh(lo), math.tanh(hi)
    cands = [ta, tb] + [r.real for r in np.roots([12.0, -6 * y, -8.0, 2 * y]) if abs(r.imag) < 1e-12]
    vals = [(1 - t * t) * (1 - 3 * t * t + 2 * y * t) for t in cands if ta <= t <= tb]
    return min(vals), max(vals)


@given(
    centre=st.floats(-6, 6),
    width=st.floats(1e-3, 5),
    y=st.floats(-1, 1),
)
def test_tanh_curvature_range_contains_and_is_close_to_the_closed_form(centre, width, y):
    lo = torch.tensor([centre - width], dtype=torch.float64)
    hi = torch.tensor([centre + width], dtype=torch.float64)
    cmin, cmax = curvature_range("tanh", lo, hi, torch.tensor([y], dtype=torch.float64))
    emin, emax = _tanh_extremes(float(lo), float(hi), y)
    slack = 1e-4 * width**2 + 1e-12  # K2 h^2 / 8 with K2 <= 84 + 28, h = 2 width / 4096
    assert float(cmin) <= emin <= float(cmin) + slack
    assert float(cmax) - slack <= emax <= float(cmax)


def test_softplus_curvature_range_contains_a_fine_grid():
    gen = torch.Generator().manual_seed(1)
    lo = 6 * torch.randn(30, generator=gen, dtype=torch.float64)
    hi = lo + 4 * torch.rand(30, generator=gen, dtype=torch.float64)
    y = torch.rand(30, generator=gen, dtype=torch.float64) * 3
    cmin, cmax = curvature_range("softplus", lo, hi, y)
    fine = lo[:, None] + (hi - lo)[:, None] * torch.linspace(0, 1, 200_001, dtype=torch.float64)
    c = link_curvature("softplus", fine, y[:, None])
    assert bool((cmin <= c.min(dim=1).values).all()) and bool((c.max(dim=1).values <= cmax).all())
    assert float((c.min(dim=1).values - cmin).max()) < 1e-5  # and tight
    # Fewer points: a looser but still valid bound.
    cmin2, _ = curvature_range("softplus", lo, hi, y, points=9)
    assert bool((cmin2 <= c.min(dim=1).values).all()) and bool((cmin2 <= cmin).all())


def test_softplus_range_covers_torchs_linear_tail():
    # torch's softplus is z above z = 20 (weight c = 1); the exact link's weight there is 1 - O(e^-20 |y|).
    lo, hi = torch.tensor([18.0, 21.0], dtype=torch.float64), torch.tensor([25.0, 22.0], dtype=torch.float64)
    y = torch.tensor([60.0, -60.0], dtype=torch.float64)
    cmin, cmax = curvature_range("softplus", lo, hi, y)
    z = torch.tensor([21.5, 21.5], dtype=torch.float64, requires_grad=True)
    loss = 0.5 * (torch.nn.functional.softplus(z) - y).pow(2)
    (d1,) = torch.autograd.grad(loss.sum(), z, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), z)
    assert torch.equal(d2, torch.ones(2, dtype=torch.float64))
    assert bool((cmin <= d2).all()) and bool((d2 <= cmax).all())
    assert float(cmax[0]) < 1 + 1e-5 and float(cmin[1]) > 1 - 1e-5  # the grid slack: K2 h^2 / 8 ~ 6e-6


def test_identity_link_gives_the_eigenvalues_of_the_quadratic():
    p = nl.matrix_sensing(m=5, n=4, N=60, rank=2, lam=0.01, n_test=0, seed=3)
    ref = restricted_bounds(p)
    assert ref.method == "eigenvalues of H = J^T J / N"
    J = p.linear.J.matrix
    ev = torch.linalg.eigvalsh(J.T @ J / 60)
    s = nl.SensingStructure(J.reshape(60, 5, 4), p.linear.y[:, 0], "identity")
    tol = 1e-10 * float(ev[-1])  # the round-off margins
    for radius, rank in ((0.1, 2), (10.0, None)):
        b = sensing_bounds(s, p.x_star[0], radius=radius, rank=rank)
        assert float(ev[0]) - tol <= b.alpha_lower <= float(ev[0])
        assert float(ev[-1]) <= b.beta_upper <= float(ev[-1]) + tol
    # The same quadratic through restricted_bounds: a risk declaring the structure, no linear form.
    risk = p.risk
    wrapped = dataclasses.replace(p, risk=lambda X: risk(X), linear=None)
    wrapped.risk.structure = s
    b = restricted_bounds(wrapped, radius=0.5, rank=2)
    assert b.method.startswith("generalized-linear sensing: interval curvature bounds on ||X - X*|| <= D")
    assert float(ev[0]) - tol <= b.alpha_lower <= float(ev[0])
    assert b.to_dict()["radius"] == 0.5 and b.to_dict()["rank"] == 2


def test_single_measurement_closed_form():
    # N = 1: G^-+ = c^-+ m m^T has eigenvalues c^-+ ||M||_F^2 and 0.
    M = torch.tensor([[[3.0, 0.0], [0.0, 4.0]]], dtype=torch.float64)  # singular values 4, 3
    Xs = torch.tensor([[0.1, 0.0], [0.0, 0.0]], dtype=torch.float64)  # rank 1, z* = 0.3
    y = torch.tensor([0.2], dtype=torch.float64)
    b = sensing_bounds(nl.SensingStructure(M, y, "tanh"), Xs, radius=0.05, rank=None)
    # rank None: w = D ||M||_F = 0.25; the interval is [0.05, 0.55].
    emin, emax = _tanh_extremes(0.05, 0.55, 0.2)
    assert emin > 0
    assert b.alpha_lower == pytest.approx(0.0, abs=1e-12)  # the orthogonal directions
    assert b.beta_upper == pytest.approx(emax * 25, rel=1e-6) and b.beta_upper >= emax * 25
    # rank 1 with r* = 1: k = 2 = min(m, n): the Frobenius interval again.
    b_rank1 = sensing_bounds(nl.SensingStructure(M, y, "tanh"), Xs, radius=0.05, rank=1)
    assert b_rank1.beta_upper == b.beta_upper
    # A 1 x 1 "matrix": the Gram matrix is the scalar c * M^2.
    b1 = sensing_bounds(nl.SensingStructure(M[:, :1, :1], y, "tanh"), Xs[:1, :1], radius=0.05)
    emin1, emax1 = _tanh_extremes(0.3 - 0.15, 0.3 + 0.15, 0.2)
    assert b1.alpha_lower == pytest.approx(9 * emin1, rel=1e-6) and b1.alpha_lower <= 9 * emin1
    assert b1.beta_upper == pytest.approx(9 * emax1, rel=1e-6) and b1.beta_upper >= 9 * emax1


def test_intervals_are_the_ky_fan_widths_and_are_attained():
    p = nl.nonlinear_sensing(m=6, n=5, N=40, rank=2, n_test=0, seed=2)
    s = p.risk.structure
    D = 0.3
    zc, w, k = _sensing_intervals(s.M, p.x_star[0], D, 1)
    assert k == 3
    sv = torch.linalg.svdvals(s.M)
    kyfan = sv[:, :3].pow(2).sum(dim=1).sqrt()
    assert bool((w >= D * kyfan).all()) and bool((w <= D * kyfan * (1 + 1e-9) + 1e-12).all())
    # The end of interval i is reached by Y = X* + D P_3(M_i) / ||P_3(M_i)||: rank 3, distance D.
    for i in range(5):
        U, S, Vh = torch.linalg.svd(s.M[i])
        P = (U[:, :3] * S[:3]) @ Vh[:3]
        Y = p.x_star[0] + D * P / P.norm()
        zi = float((s.M[i] * Y).sum())
        assert zc[i] + w[i] >= zi >= zc[i] + w[i] - 1e-9
    # Any rank: the Frobenius widths.
    _, wf, kf = _sensing_intervals(s.M, p.x_star[0], D, None)
    assert kf == 5 and bool((wf >= D * s.M.flatten(1).norm(dim=1)).all()) and bool((wf >= w).all())


def _points(problem, rank, D, gen, count):
    X0 = problem.x_star
    for j in range(count):
        u = (j + 1) / count
        X = sample_restricted_set(X0, rank, u * D, gen)[0]
        t = float(torch.rand((), generator=gen, dtype=torch.float64))
        yield X0[0] + t * (X - X0[0])


@given(
    seed=st.integers(0, 10_000),
    link=st.sampled_from(["tanh", "softplus"]),
    shape=st.sampled_from([(3, 3), (4, 3), (5, 4)]),
    star=st.integers(1, 2),
    extra=st.integers(0, 1),
    radius=st.sampled_from([0.01, 0.05, 0.2, 1.0]),
    scale=st.sampled_from([0.5, 1.0, 2.0]),
)
def test_hessians_in_the_set_lie_between_the_bounds(seed, link, shape, star, extra, radius, scale):
    m, n = shape
    p = nl.nonlinear_sensing(m=m, n=n, N=3 * m * n, rank=star, link=link, scale=scale, n_test=0, seed=seed)
    r = star + extra
    b = restricted_bounds(p, radius=radius, rank=r)
    assert b.method.startswith("generalized-linear sensing")
    gen = torch.Generator().manual_seed(seed)
    tol = 1e-10 * max(1.0, abs(b.beta_upper))
    for Y in _points(p, r, radius, gen, 6):
        ev = torch.linalg.eigvalsh(_hessian(p, Y))
        assert float(ev[0]) >= b.alpha_lower - tol and float(ev[-1]) <= b.beta_upper + tol
    c = restricted_constants(p, rank=r, radius=radius, samples=8, seed=seed)
    assert c.alpha >= b.alpha_lower - tol and c.beta <= b.beta_upper + tol


def test_the_oracle_catches_a_bound_used_beyond_its_radius():
    # Bounds at D = 0.01 do not hold 1.0 away: the Hessian oracle sees it (so the test above can fail).
    p = nl.nonlinear_sensing(m=4, n=3, N=36, rank=1, n_test=0, seed=5)
    small = restricted_bounds(p, radius=0.01, rank=1)
    assert small.alpha_lower > 0
    gen = torch.Generator().manual_seed(0)
    evs = [torch.linalg.eigvalsh(_hessian(p, Y)) for Y in _points(p, 1, 1.0, gen, 12)]
    lowest, highest = min(float(e[0]) for e in evs), max(float(e[-1]) for e in evs)
    assert lowest < small.alpha_lower or highest > small.beta_upper
    large = restricted_bounds(p, radius=1.0, rank=1)
    assert all(float(e[0]) >= large.alpha_lower and float(e[-1]) <= large.beta_upper for e in evs)


def test_rescaling_the_measurements():
    # M -> 2M, X* -> X*/2, D -> D/2 leaves every z_i and interval alone and scales the Hessian by 4.
    p = nl.nonlinear_sensing(m=5, n=4, N=60, rank=2, n_test=0, seed=4)
    s = p.risk.structure
    for link in ("tanh", "softplus"):
        a = sensing_bounds(dataclasses.replace(s, link=link), p.x_star[0], radius=0.03, rank=3)
        s2 = dataclasses.replace(s, M=2 * s.M, link=link)
        b = sensing_bounds(s2, p.x_star[0] / 2, radius=0.015, rank=3)
        assert b.alpha_lower == pytest.approx(4 * a.alpha_lower, rel=1e-9)
        assert b.beta_upper == pytest.approx(4 * a.beta_upper, rel=1e-9)


def test_measured_tanh_sensing_of_the_kkr_runs():
    # KKR_PROBLEMS["tanh-sensing"] (m 12, n 10, N 400, r* 2) at r = 4: alpha > 0 certified only near X*.
    p = nl.nonlinear_sensing(m=12, n=10, N=400, rank=2, lam=0.01, n_test=0, seed=0)
    near, far = restricted_bounds(p, radius=0.01, rank=4), restricted_bounds(p, radius=0.1, rank=4)
    assert 0 < near.alpha_lower < near.beta_upper and far.alpha_lower < 0 < near.beta_upper < far.beta_upper
    assert "tanh link" in near.method and "rank(X - X*) <= 6" in near.method
    # mn > N: G^- is singular, the bound is vacuous and says so.
    q = nl.nonlinear_sensing(m=6, n=5, N=20, rank=1, n_test=0, seed=0)
    b = restricted_bounds(q, radius=0.01, rank=1)
    assert b.alpha_lower <= 1e-12 and "vacuous for alpha since mn = 30 > N = 20" in b.method


def test_radius_free_and_structure_free_behaviour():
    p = nl.nonlinear_sensing(m=4, n=3, N=30, rank=1, n_test=0, seed=0)
    none = RestrictedBounds(-math.inf, math.inf, "none (not a linearized risk)")
    assert restricted_bounds(p) == none and restricted_bounds(p).to_dict().keys() == none.to_dict().keys()
    # A shifted problem has a new risk function: no structure, no alpha.
    sh = nl.shifted(p, (torch.ones(4, 3, dtype=torch.float64),))
    b = restricted_bounds(sh, radius=0.1, rank=1)
    assert b.alpha_lower == -math.inf and b.method.startswith("none available:")
    two = nl.two_layer(m=4, n=3, N=10)
    assert restricted_bounds(two, radius=0.1, rank=2).method.startswith("none available:")
    ms = nl.matrix_sensing(m=4, n=3, N=30, rank=1, n_test=0, seed=0)
    assert restricted_bounds(ms, radius=0.1, rank=1).alpha_lower == restricted_bounds(ms).alpha_lower
    big = restricted_bounds(p, radius=0.1, rank=1, max_params=5)
    assert big.alpha_lower == -math.inf and "max_params" in big.method


def test_bad_input():
    p = nl.nonlinear_sensing(m=4, n=3, N=30, rank=1, n_test=0, seed=0)
    for radius in (0, -1.0, math.nan, math.inf, True, "1"):
        with pytest.raises(ValueError, match="radius"):
            restricted_bounds(p, radius=radius, rank=1)
    for rank in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="rank"):
            restricted_bounds(p, radius=0.1, rank=rank)
    with pytest.raises(ValueError, match="radius"):
        restricted_bounds(p, rank=2)
    with pytest.raises(ValueError, match="x_star"):
        restricted_bounds(p, radius=0.1, x_star=(torch.zeros(3, 4, dtype=torch.float64),))
    with pytest.raises(ValueError, match="x_star"):
        restricted_bounds(dataclasses.replace(p, x_star=None), radius=0.1)
    s = p.risk.structure
    with pytest.raises(ValueError, match="link"):
        nl.SensingStructure(s.M, s.y, "relu")
    with pytest.raises(ValueError, match="M"):
        nl.SensingStructure(s.M[0], s.y, "tanh")
    with pytest.raises(ValueError, match="y"):
        nl.SensingStructure(s.M, s.y[:3], "tanh")
    with pytest.raises(TypeError, match="structure"):
        sensing_bounds(object(), p.x_star[0], radius=0.1)  # type: ignore[arg-type]
    z = torch.zeros(2, dtype=torch.float64)
    with pytest.raises(ValueError, match="points"):
        curvature_range("tanh", z, z, z, points=1)
    with pytest.raises(ValueError, match="lo, hi"):
        curvature_range("tanh", z + 1, z, z)
    with pytest.raises(ValueError, match="link"):
        curvature_range("relu", z, z, z)


@pytest.mark.parametrize("link", ["tanh", "softplus"])
def test_rsc_search_finds_a_point_of_the_set_between_the_certificate_and_the_samples(link):
    p = nl.nonlinear_sensing(m=6, n=5, N=90, rank=1, link=link, n_test=0, seed=7)
    D, r = 0.05, 2
    w = rsc_search(p, rank=r, radius=D, steps=150, restarts=1)
    X = w.X[0]
    assert int(torch.linalg.matrix_rank(X)) <= r and w.distance <= D
    assert w.alpha == rsc_ratio(p, w.X, p.x_star)[0]
    b = restricted_bounds(p, radius=D, rank=r)
    c = restricted_constants(p, rank=r, radius=D, samples=30, seed=0)
    assert b.alpha_lower <= w.alpha < c.alpha  # certified <= witnessed < sampled


def test_rsc_search_finds_the_null_tangent_directions_of_underdetermined_sensing():
    # 24 tangent dimensions at a rank-1 X* with r = 3 (r (m + n - r)) against N = 20 measurements:
    # some tangent direction is unseen, the RSC constant is 0 (up to the curvature of the set).
    p = nl.matrix_sensing(m=6, n=5, N=20, rank=1, n_test=0, seed=1)
    w = rsc_search(p, rank=3, radius=1.0, steps=400, restarts=1, fractions=(1e-3,))
    c = restricted_constants(p, rank=3, radius=1.0, samples=30, seed=0)
    # (the power iteration's slow convergence leaves ~4e-4 after 400 steps, ~4e-5 after 800)
    assert abs(w.alpha) < 1e-2 * c.alpha and c.alpha > 0.1


def test_rsc_search_bad_input():
    p = nl.nonlinear_sensing(m=4, n=3, N=30, rank=2, n_test=0, seed=0)
    with pytest.raises(ValueError, match="rank"):
        rsc_search(p, rank=1, radius=0.1)  # below rank(x_star)
    with pytest.raises(ValueError, match="radius"):
        rsc_search(p, rank=2, radius=-0.1)
    with pytest.raises(ValueError, match="steps"):
        rsc_search(p, rank=2, radius=0.1, steps=0)
    with pytest.raises(ValueError, match="fractions"):
        rsc_search(p, rank=2, radius=0.1, fractions=(0.0,))
    with pytest.raises(ValueError, match="x_star"):
        rsc_search(dataclasses.replace(p, x_star=None), rank=2, radius=0.1)


def test_certified_radius():
    p = nl.nonlinear_sensing(m=5, n=4, N=60, rank=1, n_test=0, seed=3)
    b = certified_radius(p, rank=2)
    assert b is not None and b.alpha_lower > 0 and b.rank == 2
    assert b == restricted_bounds(p, radius=b.radius, rank=2)
    assert restricted_bounds(p, radius=1.01 * b.radius, rank=2).alpha_lower <= 0
    # Underdetermined (mn > N): never positive; a quadratic: positive at every radius.
    assert certified_radius(nl.nonlinear_sensing(m=6, n=5, N=20, rank=1, n_test=0, seed=0), rank=1) is None
    q = certified_radius(nl.matrix_sensing(m=4, n=3, N=40, rank=1, n_test=0, seed=0), rank=1, hi=10.0)
    assert q is not None and q.radius == 10.0
    with pytest.raises(ValueError, match="lo, hi"):
        certified_radius(p, rank=2, lo=1.0, hi=0.5)
