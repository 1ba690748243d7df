"""Tests for landscapes.operators.LowRankOperator against the dense product J = left @ right."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from landscapes.curvature import lambda_min
from landscapes.operators import DenseOperator, LinearOperator, LowRankOperator
from landscapes.problem import Problem

DT = torch.float64


def factors(seed: int, q: int, s: int, p: int, dtype: torch.dtype = DT) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(q, s, generator=g, dtype=dtype), torch.randn(s, p, generator=g, dtype=dtype)


def uv(seed: int, blocks, ranks, dtype: torch.dtype = DT):
    g = torch.Generator().manual_seed(seed + 1000)
    U = [torch.randn(m, r, generator=g, dtype=dtype) for (m, _), r in zip(blocks, ranks)]
    V = [torch.randn(n, r, generator=g, dtype=dtype) for (_, n), r in zip(blocks, ranks)]
    return U, V


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@given(seed=st.integers(0, 2**31 - 1), q=st.integers(1, 7), s=st.integers(1, 5), p=st.integers(1, 9))
@settings(max_examples=25, deadline=None)
def test_products_match_dense(dtype, seed, q, s, p):
    L, R = factors(seed, q, s, p, dtype)
    op = LowRankOperator(L, R)
    J = L @ R
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    assert isinstance(op, LinearOperator)
    assert op.shape == (q, p) and op.dtype == dtype and op.rank == s
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(p, generator=g, dtype=dtype)
    y = torch.randn(q, generator=g, dtype=dtype)
    torch.testing.assert_close(op.matvec(x), J @ x, **tol)
    torch.testing.assert_close(op.rmatvec(y), J.T @ y, **tol)
    torch.testing.assert_close(op.rows(), J, **tol)
    torch.testing.assert_close(op.gram(), J @ J.T, **tol)
    sp = op.to_scipy()
    np.testing.assert_allclose(sp.matvec(x.double().numpy()), (J @ x).double().numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("blocks", "ranks"),
    [([(3, 4)], [2]), ([(2, 3), (4, 1)], [1, 3]), ([(5, 5), (1, 1), (2, 6)], [2, 1, 4])],
)
def test_factor_products_match_dense(blocks, ranks):
    p = sum(m * n for m, n in blocks)
    L, R = factors(7, 6, 3, p)
    op = LowRankOperator(L, R)
    U, V = uv(7, blocks, ranks)
    got = op.factor_products(blocks, U, V)
    want = DenseOperator(L @ R).factor_products(blocks, U, V)
    assert got.shape == want.shape == (6, sum((m + n) * r for (m, n), r in zip(blocks, ranks)))
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # and against the definition: row i, block j: vec(A_i V_j), vec(A_i^T U_j)
    J = L @ R
    k0, col = 0, 0
    for (m, n), u, v in zip(blocks, U, V):
        for i in range(6):
            A = J[i, k0 : k0 + m * n].reshape(m, n)
            torch.testing.assert_close(got[i, col : col + m * u.shape[1]], (A @ v).reshape(-1))
            torch.testing.assert_close(
                got[i, col + m * u.shape[1] : col + (m + n) * u.shape[1]], (A.T @ u).reshape(-1)
            )
        k0 += m * n
        col += (m + n) * u.shape[1]


def test_cheap_factor_products_flag_and_repr():
    op = LowRankOperator(*factors(0, 4, 2, 6))
    assert op.cheap_factor_products is True
    assert repr(op) == "LowRankOperator(shape=(4, 6), rank=2, dtype=torch.float64)"


def test_problem_with_low_rank_J_matches_dense_problem():
    blocks = [(3, 2), (2, 2)]
    L, R = factors(3, 5, 2, 10)
    g = torch.Generator().manual_seed(3)
    f0 = torch.randn(5, 1, generator=g, dtype=DT)
    y = torch.randn(5, 1, generator=g, dtype=DT)
    lr = Problem(LowRankOperator(L, R), f0, y, loss="squared", blocks=blocks, lam=0.1)
    de = Problem(L @ R, f0, y, loss="squared", blocks=blocks, lam=0.1)
    D = tuple(torch.randn(m, n, generator=g, dtype=DT) for m, n in blocks)
    assert lr.risk(D) == pytest.approx(de.risk(D), rel=1e-13)
    for a, b in zip(lr.evaluate(D).S, de.evaluate(D).S):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    U, V = uv(3, blocks, [1, 2])
    a = lambda_min(lr, U, V)  # auto: the structured route, through factor_products
    b = lambda_min(de, U, V, method="dense")
    assert a.value == pytest.approx(b.value, rel=1e-8, abs=1e-10)


@pytest.mark.parametrize(
    ("left", "right", "exc", "match"),
    [
        (np.zeros((2, 2)), torch.zeros(2, 2), TypeError, r"left: expected a torch\.Tensor, got ndarray"),
        (torch.zeros(2, 2), [[0.0]], TypeError, r"right: expected a torch\.Tensor, got list"),
        (torch.zeros(4), torch.zeros(1, 4), ValueError, r"left: expected a 2-D tensor, got shape \(4,\)"),
        (torch.zeros(2, 1), torch.zeros(1, 2, 2), ValueError, r"right: expected a 2-D tensor, got shape"),
        (torch.zeros(2, 2, dtype=torch.int64), torch.zeros(2, 2), ValueError, r"left: expected a floating"),
        (torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.int32), ValueError, r"right: expected a floating"),
        (torch.zeros(0, 2), torch.zeros(2, 2), ValueError, r"left: expected a non-empty matrix"),
        (torch.zeros(2, 2), torch.zeros(2, 0), ValueError, r"right: expected a non-empty matrix"),
        (
            torch.zeros(2, 2, dtype=torch.float32),
            torch.zeros(2, 2, dtype=torch.float64),
            ValueError,
            r"right: expected dtype torch\.float32 \(the dtype of left\), got torch\.float64",
        ),
        (torch.zeros(2, 3), torch.zeros(2, 5), ValueError, r"right: expected 3 rows .*got shape \(2, 5\)"),
        (torch.full((2, 2), float("nan")), torch.zeros(2, 2), ValueError, r"left: expected finite values"),
        (torch.zeros(2, 2), torch.full((2, 2), float("inf")), ValueError, r"right: expected finite values"),
    ],
)
def test_validation(left, right, exc, match):
    with pytest.raises(exc, match=match):
        LowRankOperator(left, right)


def test_factor_products_validation():
    op = LowRankOperator(*factors(0, 4, 2, 6))
    U, V = uv(0, [(2, 3)], [1])
    with pytest.raises(ValueError, match="blocks: expected sizes summing to 6"):
        op.factor_products([(2, 2)], U, V)
    with pytest.raises(ValueError, match=r"U\[0\], V\[0\]: expected shapes \(2, r\) and \(3, r\)"):
        op.factor_products([(2, 3)], [U[0]], [torch.zeros(2, 1, dtype=DT)])
    with pytest.raises(ValueError, match="U, V: expected one factor per block"):
        op.factor_products([(2, 3)], U, [])


def test_matvec_checks_inputs():
    op = LowRankOperator(*factors(0, 4, 2, 6))
    with pytest.raises(ValueError, match=r"x: expected shape \(6,\)"):
        op.matvec(torch.zeros(4, dtype=DT))
    with pytest.raises(ValueError, match="y: expected dtype torch.float64"):
        op.rmatvec(torch.zeros(4, dtype=torch.float32))
