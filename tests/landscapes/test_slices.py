"""Landscape slices: the grid is the objective at the grid points; the normalizations do what they say."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from landscapes.lora import LoRAPoint, lora_value, random_factors
from landscapes.nuc import solve_nuc
from landscapes.slices import hessian_directions, normalize_direction, random_direction, slice_grid, toward
from landscapes.synthetic import gaussian_problem
from verify.strategies import lora_points, problems


@pytest.fixture(scope="module")
def setup():
    P = gaussian_problem(K=1, N=6, blocks=[(5, 4), (3, 4)], lam=0.05, seed=0)
    pt = random_factors(P, [2, 3], scale=0.5, generator=torch.Generator().manual_seed(0))
    return P, pt


@given(data=st.data(), seed=st.integers(0, 2**31 - 1))
def test_2d_grid_is_the_objective_at_sampled_points(data, seed):
    P = data.draw(problems(K=(1, 2), N=(2, 5), blocks=(1, 2), m=(1, 4), n=(1, 4)))
    pt = data.draw(lora_points(P, rank=(1, 3)))
    g = torch.Generator().manual_seed(seed)
    d1 = normalize_direction(pt, random_direction(pt, generator=g))
    d2 = normalize_direction(pt, random_direction(pt, generator=g), normalization="filter")
    alphas, betas = [-1.0, -0.25, 0.0, 0.6], [-0.5, 0.0, 1.0]
    grid = slice_grid(P, pt, d1, d2, alphas=alphas, betas=betas)
    assert grid.shape == (4, 3)
    for i, a in enumerate(alphas):
        for k, b in enumerate(betas):
            U = [u + a * x + b * y for u, x, y in zip(pt.U, d1.U, d2.U)]
            V = [v + a * x + b * y for v, x, y in zip(pt.V, d1.V, d2.V)]
            assert float(grid[i, k]) == pytest.approx(lora_value(P, U, V), rel=1e-12, abs=1e-12)
    assert float(grid[2, 1]) == pytest.approx(lora_value(P, pt.U, pt.V), rel=1e-13, abs=1e-14)


def test_lora_normalization_matches_each_factor_norm(setup):
    P, pt = setup
    d = normalize_direction(pt, random_direction(pt, generator=torch.Generator().manual_seed(1)))
    for x, dx in zip(pt.U + pt.V, d.U + d.V):
        assert float(dx.norm()) == pytest.approx(float(x.norm()), rel=1e-12)


def test_filter_normalization_matches_each_column(setup):
    P, pt = setup
    d = normalize_direction(
        pt, random_direction(pt, generator=torch.Generator().manual_seed(2)), normalization="filter"
    )
    for x, dx in zip(pt.U + pt.V, d.U + d.V):
        torch.testing.assert_close(dx.norm(dim=0), x.norm(dim=0), rtol=1e-12, atol=0)


def test_zero_columns_keep_zero_directions(setup):
    P, pt = setup
    U0 = pt.U[0].clone()
    U0[:, 0] = 0.0
    z = LoRAPoint((U0, pt.U[1]), pt.V)
    d = normalize_direction(
        z, random_direction(z, generator=torch.Generator().manual_seed(3)), normalization="filter"
    )
    assert float(d.U[0][:, 0].abs().max()) == 0.0


def test_toward_reaches_the_global_minimizer(setup):
    P, pt = setup
    sol = solve_nuc(P, gap_rtol=1e-12)
    d = toward(pt, sol.D)
    end = slice_grid(P, pt, d, alphas=[0.0, 1.0])
    # alpha = 1 is a balanced factorization of the NUC minimizer: the LoRA objective is its NUC value
    assert float(end[1]) == pytest.approx(sol.certificate.primal, rel=1e-10)
    assert float(end[0]) > float(end[1])


def test_hessian_directions_are_eigenvectors(setup):
    P, pt = setup
    from landscapes.curvature.dense import lora_hessian

    vmin, vmax = hessian_directions(P, pt)
    H = lora_hessian(P, pt.U, pt.V)
    ev = torch.linalg.eigvalsh(H)
    flat = [torch.cat([x.reshape(-1) for u, v in zip(d.U, d.V) for x in (u, v)]) for d in (vmin, vmax)]
    for f, lam in zip(flat, (ev[0], ev[-1])):
        assert float(f.norm()) == pytest.approx(1.0, rel=1e-12)
        torch.testing.assert_close(H @ f, lam * f, rtol=0, atol=1e-10)
    # the 1-D slice along v_min has curvature lambda_min at 0 (second difference)
    h = 1e-3
    s = slice_grid(P, pt, vmin, alphas=[-h, 0.0, h])
    assert float((s[0] - 2 * s[1] + s[2]) / h**2) == pytest.approx(float(ev[0]), rel=1e-4, abs=1e-6)


def test_bad_arguments(setup):
    P, pt = setup
    d = random_direction(pt, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="normalization"):
        normalize_direction(pt, d, normalization="unit")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"direction\[0\]"):
        normalize_direction(pt, LoRAPoint((pt.U[0][:, :1], pt.U[1]), pt.V))
    with pytest.raises(ValueError, match="alphas"):
        slice_grid(P, pt, d, alphas=[])
    with pytest.raises(ValueError, match="betas"):
        slice_grid(P, pt, d, d, alphas=[0.0])
    with pytest.raises(TypeError, match="generator"):
        random_direction(pt, generator=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_params"):
        hessian_directions(P, pt, max_params=5)
