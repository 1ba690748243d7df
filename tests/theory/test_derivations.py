"""Tests for theory.derivations: the closed forms check out, wrong ones are caught."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import sympy as sp

from theory import derivations as dv
from theory.derivations import (
    balance_residual,
    confirm_all,
    lora_gradient_residual,
    lora_hvp_residual,
    zero_point_eigenvalues,
    zero_point_hessian_residual,
)

ROOT = Path(__file__).resolve().parents[2]

SIZES = [(1, 1, 1), (2, 1, 1), (1, 2, 1), (2, 2, 1), (2, 2, 2), (1, 2, 2), (3, 2, 1), (3, 3, 2)]
# The cubic loss is slower (degree-6 polynomials after D = U V^T); a few sizes suffice.
CUBIC_SIZES = [(1, 1, 1), (2, 1, 2), (2, 2, 1), (2, 2, 2)]
LOSSES = [("function", s) for s in SIZES] + [("cubic", s) for s in CUBIC_SIZES]


def is_zero(residual: sp.MatrixBase | sp.Expr) -> bool:
    entries = list(residual) if isinstance(residual, sp.MatrixBase) else [residual]
    return all(sp.expand(e) == 0 for e in entries)


# ---------------------------------------------------------------------------------------------
# The claimed closed forms hold.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("loss", "size"), LOSSES)
def test_gradient_closed_form(loss, size):
    m, n, r = size
    residual = lora_gradient_residual(m, n, r, loss=loss)
    assert residual.shape == (m + n, r)
    assert is_zero(residual)


@pytest.mark.parametrize(("loss", "size"), LOSSES)
def test_hvp_closed_form(loss, size):
    m, n, r = size
    residual = lora_hvp_residual(m, n, r, loss=loss)
    assert residual.shape == (m + n, r)
    assert is_zero(residual)


@pytest.mark.parametrize(("loss", "size"), LOSSES)
def test_zero_point_hessian_block_form(loss, size):
    m, n, r = size
    residual = zero_point_hessian_residual(m, n, r, loss=loss)
    assert residual.shape == (r * (m + n), r * (m + n))
    assert is_zero(residual)


@pytest.mark.parametrize(("m", "n"), [(1, 1), (2, 1), (1, 2), (2, 2), (3, 1), (3, 2), (2, 3)])
def test_zero_point_charpoly(m, n):
    assert zero_point_eigenvalues(m, n) == 0


@pytest.mark.parametrize(("loss", "size"), LOSSES)
def test_balance_identity(loss, size):
    m, n, r = size
    residual = balance_residual(m, n, r, loss=loss)
    assert residual.shape == (r, r)
    assert is_zero(residual)


def test_confirm_all():
    assert confirm_all(max_size=2) == {
        "gradient": True,
        "hvp": True,
        "zero_point_hessian": True,
        "zero_point_eigenvalues": True,
        "balance": True,
    }
    assert all(confirm_all(max_size=1).values())


@pytest.mark.slow
def test_confirm_all_size_three():
    # Every (m, n, r) in {1, 2, 3}^3: about 20 s.
    assert all(confirm_all(max_size=3).values())


def test_zero_point_spectrum_concrete():
    # S = (3, 4)^T has the single singular value 5; with lam = 2 the spectrum is {7, -3, 2}:
    # lam +- sigma plus lam once (|m - n| = 1), so lambda_min = lam - ||S||_op = -3.
    M = dv.zero_point_block(sp.Matrix([[3], [4]]), sp.Integer(2))
    assert M.eigenvals() == {7: 1, -3: 1, 2: 1}


def test_generic_loss_is_generic():
    # The undefined loss's mixed partials commute (the only property assumed) and are not
    # identified with anything else, so the checks do not hold for a special L only.
    d = sp.Matrix(2, 2, lambda i, j: sp.Symbol(f"d_{i}_{j}"))
    L = dv._loss(d, "function")
    assert L.diff(d[0, 1], d[1, 0]) == L.diff(d[1, 0], d[0, 1])
    assert L.diff(d[0, 1], d[1, 0]) != L.diff(d[0, 1], d[0, 1])
    assert L.diff(d[0, 0]) != L.diff(d[1, 1])
    assert L.diff(d[0, 0], d[0, 1], d[1, 1]) == L.diff(d[1, 1], d[0, 0], d[0, 1])


# ---------------------------------------------------------------------------------------------
# Planted wrong formulas are detected (the checks can fail).
# ---------------------------------------------------------------------------------------------


def grad_sign_flip(U, V, S, lam):
    return S * V - lam * U, S.T * U + lam * V


def grad_transposed_S(U, V, S, lam):  # S^T V instead of S V (needs m == n)
    return S.T * V + lam * U, S.T * U + lam * V


def grad_zero(U, V, S, lam):
    return sp.zeros(*U.shape), sp.zeros(*V.shape)


@pytest.mark.parametrize("loss", ["function", "cubic"])
@pytest.mark.parametrize("wrong", [grad_sign_flip, grad_transposed_S, grad_zero])
def test_wrong_gradient_detected(loss, wrong):
    assert not is_zero(lora_gradient_residual(2, 2, 1, closed_form=wrong, loss=loss))


def hvp_without_S_dV(U, V, dU, dV, S, hess_L, lam):
    HE = hess_L(dU * V.T + U * dV.T)
    return HE * V + lam * dU, HE.T * U + S.T * dU + lam * dV


def hvp_without_hessian_of_L(U, V, dU, dV, S, hess_L, lam):
    return S * dV + lam * dU, S.T * dU + lam * dV


def hvp_half_E(U, V, dU, dV, S, hess_L, lam):  # E = dU V^T, forgetting U dV^T
    HE = hess_L(dU * V.T)
    return HE * V + S * dV + lam * dU, HE.T * U + S.T * dU + lam * dV


def hvp_untransposed(U, V, dU, dV, S, hess_L, lam):  # H_L[E] U instead of H_L[E]^T U
    HE = hess_L(dU * V.T + U * dV.T)
    return HE * V + S * dV + lam * dU, HE * U + S.T * dU + lam * dV


@pytest.mark.parametrize("loss", ["function", "cubic"])
@pytest.mark.parametrize("wrong", [hvp_without_S_dV, hvp_without_hessian_of_L, hvp_half_E, hvp_untransposed])
def test_wrong_hvp_detected(loss, wrong):
    assert not is_zero(lora_hvp_residual(2, 2, 1, closed_form=wrong, loss=loss))


def test_hvp_without_S_dV_detected_at_rank_one_scalar():
    # Even m = n = r = 1 sees the missing S dV term.
    assert not is_zero(lora_hvp_residual(1, 1, 1, closed_form=hvp_without_S_dV))


def block_minus_S(S, lam):
    m, n = S.shape
    return sp.BlockMatrix([[lam * sp.eye(m), -S], [-S.T, lam * sp.eye(n)]]).as_explicit()


def block_without_S(S, lam):
    return lam * sp.eye(sum(S.shape))


@pytest.mark.parametrize("wrong", [block_minus_S, block_without_S])
def test_wrong_zero_point_block_detected(wrong):
    assert not is_zero(zero_point_hessian_residual(2, 1, 2, block=wrong))


def charpoly_plus_lam(x, lam, S):  # roots -lam +- sigma_i
    return dv.zero_point_charpoly(x, -lam, S)


def charpoly_no_extra_lam(x, lam, S):  # forgets the |m - n| eigenvalues equal to lam
    m, n = S.shape
    y = x - lam
    return (y**2 * sp.eye(min(m, n)) - (S.T * S if m >= n else S * S.T)).det()


def charpoly_plain_sigma(x, lam, S):  # roots lam +- sigma_i^2 (Gram eigenvalues, not roots)
    m, n = S.shape
    y = x - lam
    gram = S.T * S if m >= n else S * S.T
    return y ** abs(m - n) * (y * sp.eye(min(m, n)) - gram).det() * (y * sp.eye(min(m, n)) + gram).det()


@pytest.mark.parametrize("wrong", [charpoly_plus_lam, charpoly_no_extra_lam, charpoly_plain_sigma])
def test_wrong_spectrum_detected(wrong):
    assert zero_point_eigenvalues(2, 1, predicted=wrong) != 0


def balance_plus(U, V, lam):
    return lam * (U.T * U + V.T * V)


def balance_zero(U, V, lam):  # "always balanced": true only at critical points / lam = 0
    return sp.zeros(U.shape[1], U.shape[1])


@pytest.mark.parametrize("wrong", [balance_plus, balance_zero])
def test_wrong_balance_detected(wrong):
    assert not is_zero(balance_residual(2, 1, 2, rhs=wrong))


# ---------------------------------------------------------------------------------------------
# Argument validation.
# ---------------------------------------------------------------------------------------------

RESIDUALS_3 = [
    lora_gradient_residual,
    lora_hvp_residual,
    zero_point_hessian_residual,
    balance_residual,
]


@pytest.mark.parametrize("fn", RESIDUALS_3)
@pytest.mark.parametrize(
    ("args", "name", "exc", "shown"),
    [
        ((0, 1, 1), "m", ValueError, "0"),
        ((1, -2, 1), "n", ValueError, "-2"),
        ((1, 1, 0), "r", ValueError, "0"),
        ((1.0, 1, 1), "m", TypeError, "float 1.0"),
        ((1, True, 1), "n", TypeError, "bool True"),
        ((1, 1, "2"), "r", TypeError, "str '2'"),
    ],
)
def test_bad_sizes_rejected(fn, args, name, exc, shown):
    with pytest.raises(exc) as info:
        fn(*args)
    message = str(info.value)
    assert message.startswith(f"{name}:")
    assert "expected a positive int" in message
    assert shown in message


@pytest.mark.parametrize(("args", "name", "exc"), [((0, 1), "m", ValueError), ((2, None), "n", TypeError)])
def test_bad_eigen_sizes_rejected(args, name, exc):
    with pytest.raises(exc, match=rf"^{name}: expected a positive int"):
        zero_point_eigenvalues(*args)


@pytest.mark.parametrize(("value", "exc"), [(0, ValueError), (2.0, TypeError)])
def test_bad_max_size_rejected(value, exc):
    with pytest.raises(exc, match=r"^max_size: expected a positive int"):
        confirm_all(max_size=value)


def test_bad_loss_rejected():
    with pytest.raises(ValueError, match=r"^loss: expected 'function' or 'cubic', got 'quadratic'"):
        lora_gradient_residual(1, 1, 1, loss="quadratic")


def test_no_torch_import():
    # theory/ must never import torch: check in a fresh interpreter.
    code = "import sys, theory.derivations; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"
