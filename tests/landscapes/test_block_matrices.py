"""The shared per-block check of ``landscapes.problem`` and the callers that use it."""

from __future__ import annotations

import pytest
import torch

from landscapes.inits import init_lora
from landscapes.nonlinear import from_problem, two_layer
from landscapes.problem import check_block_matrices
from landscapes.synthetic import teacher_problem

BLOCKS = ((3, 2), (2, 2))
F64 = torch.float64


def _point(*shapes, dtype=F64):
    return tuple(torch.zeros(m, n, dtype=dtype) for m, n in shapes)


def test_check_block_matrices_returns_the_matrices_as_a_tuple():
    X = list(_point(*BLOCKS))
    out = check_block_matrices("X", X, BLOCKS, dtype=F64, device=torch.device("cpu"))
    assert isinstance(out, tuple) and all(a is b for a, b in zip(out, X))


@pytest.mark.parametrize(
    "X, match",
    [
        (None, r"X: expected 2 matrices \(one per block\), got None"),
        (torch.zeros(3, 2), r"X: expected 2 matrices \(one per block\), got Tensor"),
        (_point((3, 2)), r"X: expected 2 matrices \(one per block\), got 1 matrix"),
        (_point((3, 2), (2, 3)), r"X\[1\]: expected shape \(2, 2\), got \(2, 3\)"),
        ((torch.zeros(3, 2, dtype=F64), "x"), r"X\[1\]: expected shape \(2, 2\), got str"),
        (
            _point((3, 2), (2, 2), dtype=torch.float32),
            r"X\[0\]: expected dtype torch.float64, got torch.float32",
        ),
        (
            (torch.zeros(3, 2, dtype=F64), torch.full((2, 2), float("nan"), dtype=F64)),
            r"X\[1\]: expected finite entries, got NaN or inf",
        ),
    ],
)
def test_check_block_matrices_names_what_is_wrong(X, match):
    with pytest.raises(ValueError, match=match):
        check_block_matrices("X", X, BLOCKS, dtype=F64)


def test_check_block_matrices_checks_each_matrix_in_full_before_the_next():
    # X[0] has the wrong dtype and X[1] the wrong shape: X[0] is reported.
    X = (torch.zeros(3, 2, dtype=torch.float32), torch.zeros(2, 3, dtype=F64))
    with pytest.raises(ValueError, match=r"X\[0\]: expected dtype"):
        check_block_matrices("X", X, BLOCKS, dtype=F64)


def test_check_block_matrices_optional_checks_are_off_by_request():
    nan = (torch.full((3, 2), float("nan")), torch.zeros(2, 2))
    assert len(check_block_matrices("X", nan, BLOCKS, finite=False)) == 2  # any dtype, NaN allowed
    with pytest.raises(ValueError, match=r"X\[0\]: expected finite entries"):
        check_block_matrices("X", nan, BLOCKS)


def test_nonlinear_check_point_says_how_many_matrices_it_got():
    problem = from_problem(teacher_problem(K=2, N=4, blocks=list(BLOCKS), lam=0.1, seed=0))
    with pytest.raises(ValueError, match=r"X: expected 2 matrices \(one per block\), got 1 matrix"):
        problem.check_point(_point((3, 2)))
    with pytest.raises(ValueError, match=r"X: expected 2 matrices \(one per block\), got Tensor"):
        problem.check_point(torch.zeros(3, 2, dtype=F64))
    one = two_layer(m=3, n=2, N=4, n_test=0)
    assert one.check_point(torch.zeros(3, 2, dtype=F64))[0].shape == (3, 2)  # one block: a bare matrix


def test_linear_check_point_keeps_its_messages_and_does_not_scan_entries():
    problem = teacher_problem(K=2, N=4, blocks=list(BLOCKS), lam=0.1, seed=0)
    with pytest.raises(ValueError, match=r"D: expected a tuple of 2 matrices, got one tensor"):
        problem.check_point(torch.zeros(3, 2, dtype=F64))
    with pytest.raises(ValueError, match=r"D: expected 2 blocks, got 1"):
        problem.check_point(_point((3, 2)))
    with pytest.raises(ValueError, match=r"D\[1\]: expected dtype torch.float64, got torch.float32"):
        problem.check_point((torch.zeros(3, 2, dtype=F64), torch.zeros(2, 2)))
    nan = (torch.full((3, 2), float("nan"), dtype=F64), torch.zeros(2, 2, dtype=F64))
    assert len(problem.check_point(nan)) == 2


def test_init_inputs_are_checked_then_cast_to_the_problem():
    problem = teacher_problem(K=2, N=4, blocks=[(6, 5)], lam=0.1, seed=0)
    G = [torch.randn(6, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float32)]
    init = init_lora(problem, "loraga", rank=1, gradient=G)
    assert init.A[0].dtype == F64
    with pytest.raises(ValueError, match=r"gradient: expected 1 matrices \(one per block\), got 2 matrices"):
        init_lora(problem, "loraga", rank=1, gradient=G + G)
