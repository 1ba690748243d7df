r"""Symbolic confirmation of the closed-form derivatives of the LoRA objective.

The LoRA objective studied in [JLR24] writes the adapted weight as :math:`D = U V^\top` with
:math:`U \in \mathbb{R}^{m \times r}`, :math:`V \in \mathbb{R}^{n \times r}` and minimizes

.. math:: F(U, V) = L(U V^\top) + \tfrac{\lambda}{2} (\|U\|_F^2 + \|V\|_F^2)

for a smooth :math:`L : \mathbb{R}^{m \times n} \to \mathbb{R}`.  With :math:`S = \nabla L(D)` and
:math:`H_L[E]` the Hessian of :math:`L` at :math:`D` applied to a direction :math:`E`, the closed
forms used throughout the project are

* gradient: :math:`(\partial_U F, \partial_V F) = (S V + \lambda U,\ S^\top U + \lambda V)`;
* Hessian-vector product along :math:`(\dot U, \dot V)`, with
  :math:`E = \dot U V^\top + U \dot V^\top`:
  :math:`(H_L[E] V + S \dot V + \lambda \dot U,\ H_L[E]^\top U + S^\top \dot U + \lambda \dot V)`;
* at :math:`U = V = 0` the Hessian acts on every column pair :math:`(U_{:a}, V_{:a})` as
  :math:`M = \begin{pmatrix} \lambda I_m & S \\ S^\top & \lambda I_n \end{pmatrix}`, whose
  eigenvalues are :math:`\lambda \pm \sigma_i(S)` and :math:`\lambda` (multiplicity
  :math:`|m - n|`), so :math:`\lambda_{\min} = \lambda - \|S\|_{op}`;
* balance: :math:`U^\top \partial_U F - (\partial_V F)^\top V = \lambda (U^\top U - V^\top V)`
  everywhere, so every critical point with :math:`\lambda > 0` is balanced.

Each ``*_residual`` function below differentiates :math:`F` with sympy on small matrices of fresh
symbols, subtracts the closed form and returns the expanded difference, which is the zero matrix
exactly when the claim holds for that size.  The loss is, by default, a genuinely arbitrary smooth
function: an undefined sympy function of the ``m n`` entries of ``D`` whose partial derivatives are
themselves undefined functions (mixed partials are identified, i.e. Schwarz's theorem, the only
property of ``L`` assumed).  ``loss="cubic"`` instead uses the general polynomial of degree 3 in the
entries of ``D`` with symbolic coefficients, an independent, fully explicit cross-check.

Every residual function takes the claimed closed form as a keyword argument, so a deliberately
wrong formula can be planted to show that the check is able to fail.

[JLR24] U. Jang, J. D. Lee, E. K. Ryu, "LoRA Training in the NTK Regime has No Spurious Local
Minima", ICML 2024.

Pure Python and sympy: no torch here.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeAlias

import sympy as sp
from sympy.core.function import ArgumentIndexError

from theory.errors import UserInputError, positive_int

__all__ = [
    "LossKind",
    "lora_gradient",
    "lora_hvp",
    "zero_point_block",
    "zero_point_charpoly",
    "lora_gradient_residual",
    "lora_hvp_residual",
    "zero_point_hessian_residual",
    "zero_point_eigenvalues",
    "balance_residual",
    "balance_rhs",
    "confirm_all",
]

LossKind: TypeAlias = Literal["function", "cubic"]

Mat: TypeAlias = sp.MatrixBase
GradientForm: TypeAlias = Callable[[Mat, Mat, Mat, sp.Expr], tuple[Mat, Mat]]
HvpForm: TypeAlias = Callable[[Mat, Mat, Mat, Mat, Mat, Callable[[Mat], Mat], sp.Expr], tuple[Mat, Mat]]
BlockForm: TypeAlias = Callable[[Mat, sp.Expr], Mat]
CharpolyForm: TypeAlias = Callable[[sp.Symbol, sp.Symbol, Mat], sp.Expr]
BalanceForm: TypeAlias = Callable[[Mat, Mat, sp.Expr], Mat]


# --------------------------------------------------------------------------------------------
# The claimed closed forms (public so that a numerical implementation can mirror them).
# --------------------------------------------------------------------------------------------


def lora_gradient(U: Mat, V: Mat, S: Mat, lam: sp.Expr) -> tuple[Mat, Mat]:
    r"""Claimed gradient :math:`(S V + \lambda U,\ S^\top U + \lambda V)` of ``F`` at ``(U, V)``."""
    return S * V + lam * U, S.T * U + lam * V


def lora_hvp(
    U: Mat, V: Mat, dU: Mat, dV: Mat, S: Mat, hess_L: Callable[[Mat], Mat], lam: sp.Expr
) -> tuple[Mat, Mat]:
    r"""Claimed Hessian-vector product of ``F`` at ``(U, V)`` along ``(dU, dV)``.

    .. math:: E = \dot U V^\top + U \dot V^\top, \qquad
              \bigl(H_L[E] V + S \dot V + \lambda \dot U,\
              H_L[E]^\top U + S^\top \dot U + \lambda \dot V\bigr),

    where ``hess_L(E)`` returns :math:`H_L[E]`, the Hessian of ``L`` at ``U V^T`` applied to ``E``.
    """
    HE = hess_L(dU * V.T + U * dV.T)
    return HE * V + S * dV + lam * dU, HE.T * U + S.T * dU + lam * dV


def zero_point_block(S: Mat, lam: sp.Expr) -> Mat:
    r"""Claimed Hessian of ``F`` at ``U = V = 0`` on one column pair.

    .. math:: M = \begin{pmatrix} \lambda I_m & S \\ S^\top & \lambda I_n \end{pmatrix},
              \qquad S = \nabla L(0).
    """
    m, n = S.shape
    return sp.BlockMatrix([[lam * sp.eye(m), S], [S.T, lam * sp.eye(n)]]).as_explicit()


def zero_point_charpoly(x: sp.Symbol, lam: sp.Symbol, S: Mat) -> sp.Expr:
    r"""Characteristic polynomial predicted by the spectrum :math:`\lambda \pm \sigma_i(S)`.

    For :math:`m \ge n` it is :math:`(x - \lambda)^{m - n} \det((x - \lambda)^2 I_n - S^\top S)`,
    and :math:`(x - \lambda)^{n - m} \det((x - \lambda)^2 I_m - S S^\top)` otherwise.  The
    eigenvalues of the Gram matrix are the :math:`\sigma_i(S)^2`, so the determinant factors as
    :math:`\prod_i (x - \lambda - \sigma_i)(x - \lambda + \sigma_i)`: the roots are
    :math:`\lambda \pm \sigma_i(S)` and :math:`\lambda` with multiplicity :math:`|m - n|`.
    """
    m, n = S.shape
    gram = S.T * S if m >= n else S * S.T
    y = x - lam
    return y ** abs(m - n) * (y**2 * sp.eye(min(m, n)) - gram).det(method="berkowitz")


def balance_rhs(U: Mat, V: Mat, lam: sp.Expr) -> Mat:
    r"""Claimed value of :math:`U^\top \partial_U F - (\partial_V F)^\top V`.

    .. math:: U^\top \partial_U F - (\partial_V F)^\top V = \lambda (U^\top U - V^\top V).
    """
    return lam * (U.T * U - V.T * V)


# --------------------------------------------------------------------------------------------
# The generic loss and the symbolic set-up.
# --------------------------------------------------------------------------------------------


@functools.cache
def _loss_partial(size: int, index: tuple[int, ...]) -> type[sp.Function]:
    """Undefined function standing for the partial derivative of ``L`` along ``index``.

    ``index`` lists the (row-major) entries of ``D`` differentiated, sorted, so that mixed partials
    in any order are the same object (Schwarz).  Defining ``fdiff`` keeps sympy's chain rule
    free of the ``Subs``/``Derivative`` wrappers it produces for a plain undefined function, which
    do not cancel reliably; cached so that equal partials are the same class.
    """

    def fdiff(self: sp.Function, argindex: int = 1) -> sp.Expr:
        if not 1 <= argindex <= size:
            raise ArgumentIndexError(self, argindex)
        return _loss_partial(size, tuple(sorted(index + (argindex - 1,))))(*self.args)

    name = "L" if not index else "L_" + "_".join(str(i) for i in index)
    return type(name, (sp.Function,), {"nargs": size, "fdiff": fdiff})


def _loss(d: Mat, loss: LossKind) -> sp.Expr:
    """Build the loss ``L`` as an expression in the plain symbols ``d`` (the entries of ``D``)."""
    entries = list(d)
    if loss == "function":
        return _loss_partial(len(entries), ())(*entries)
    if loss == "cubic":
        # The general polynomial of degree <= 3: one symbolic coefficient per monomial.
        monomials = sorted(sp.itermonomials(entries, 3), key=sp.default_sort_key)
        return sp.Add(*(sp.Symbol(f"c_{k}") * mono for k, mono in enumerate(monomials)))
    raise UserInputError(f"loss: expected 'function' or 'cubic', got {loss!r}")


@dataclass(frozen=True)
class _Setup:
    """Symbols of one check: parameters, direction, ``lam`` and the loss with its derivatives."""

    U: Mat
    V: Mat
    dU: Mat
    dV: Mat
    lam: sp.Symbol
    F: sp.Expr  # F(U, V), differentiated by sympy
    S: Mat  # grad L evaluated at D = U V^T
    d: Mat  # plain symbols for the entries of D
    L: sp.Expr  # L(d)
    at_D: dict[sp.Symbol, sp.Expr]  # d -> U V^T

    def hess_L(self, E: Mat) -> Mat:
        """Return ``H_L[E]`` at ``D = U V^T``: ``sum_kl d^2 L / dD_ij dD_kl * E_kl``."""
        m, n = self.d.shape
        pairs = list(itertools.product(range(m), range(n)))
        return sp.Matrix(
            m,
            n,
            lambda i, j: sp.Add(
                *(self.L.diff(self.d[i, j], self.d[k, c]).xreplace(self.at_D) * E[k, c] for k, c in pairs)
            ),
        )


def _setup(m: int, n: int, r: int, loss: LossKind) -> _Setup:
    m, n, r = positive_int("m", m), positive_int("n", n), positive_int("r", r)

    def mat(name: str, rows: int) -> Mat:
        return sp.Matrix(rows, r, lambda i, a: sp.Symbol(f"{name}_{i}_{a}"))

    U, V, dU, dV = mat("u", m), mat("v", n), mat("du", m), mat("dv", n)
    lam = sp.Symbol("lam")
    d = sp.Matrix(m, n, lambda i, j: sp.Symbol(f"d_{i}_{j}"))
    L = _loss(d, loss)
    at_D = dict(zip(d, U * V.T, strict=True))
    F = L.xreplace(at_D) + lam / 2 * (sum(u**2 for u in U) + sum(v**2 for v in V))
    S = d.applyfunc(lambda dij: L.diff(dij).xreplace(at_D))
    return _Setup(U, V, dU, dV, lam, F, S, d, L, at_D)


def _grad(F: sp.Expr, X: Mat) -> Mat:
    """Entrywise ``dF/dX`` as a matrix shaped like ``X``."""
    return X.applyfunc(F.diff)


def _expanded(M: Mat) -> Mat:
    return M.applyfunc(sp.expand)


def _is_zero(M: Mat) -> bool:
    # Residuals come back expanded, so "zero" means every entry is literally 0.
    return all(e == 0 for e in M)


# --------------------------------------------------------------------------------------------
# The checks.
# --------------------------------------------------------------------------------------------


def lora_gradient_residual(
    m: int,
    n: int,
    r: int,
    *,
    closed_form: GradientForm = lora_gradient,
    loss: LossKind = "function",
) -> sp.Matrix:
    r"""Sympy gradient of ``F`` minus the closed form, stacked as an ``(m + n) x r`` matrix.

    .. math:: \begin{pmatrix} \partial_U F - (S V + \lambda U) \\
              \partial_V F - (S^\top U + \lambda V) \end{pmatrix} = 0 .

    Parameters
    ----------
    m, n, r : int
        Shape of ``D`` (``m x n``) and LoRA rank; positive.
    closed_form : callable, optional
        ``(U, V, S, lam) -> (G_U, G_V)``; defaults to :func:`lora_gradient`.
    loss : {"function", "cubic"}
        Arbitrary smooth ``L`` (undefined function) or the general cubic polynomial.

    Returns
    -------
    sympy.Matrix
        The expanded residual; the zero matrix iff the closed form is right at this size.

    """
    s = _setup(m, n, r, loss)
    GU, GV = closed_form(s.U, s.V, s.S, s.lam)
    return _expanded(sp.Matrix.vstack(_grad(s.F, s.U) - GU, _grad(s.F, s.V) - GV))


def lora_hvp_residual(
    m: int, n: int, r: int, *, closed_form: HvpForm = lora_hvp, loss: LossKind = "function"
) -> sp.Matrix:
    r"""Sympy Hessian of ``F`` applied to ``(dU, dV)`` minus the closed form, ``(m + n) x r``.

    The left side is :math:`\sum_k \partial_{x_k} \nabla F \, \dot x_k` over all entries
    :math:`x_k` of ``(U, V)``; the right side is :func:`lora_hvp` with :math:`S` and
    :math:`H_L[E]` built from ``L``'s own first and second derivatives evaluated at ``U V^T``.

    Parameters
    ----------
    m, n, r : int
        Shape of ``D`` and LoRA rank; positive.
    closed_form : callable, optional
        ``(U, V, dU, dV, S, hess_L, lam) -> (H_U, H_V)``; defaults to :func:`lora_hvp`.
    loss : {"function", "cubic"}
        As in :func:`lora_gradient_residual`.

    Returns
    -------
    sympy.Matrix
        The expanded residual; the zero matrix iff the closed form is right at this size.

    """
    s = _setup(m, n, r, loss)
    params = list(s.U) + list(s.V)
    direction = list(s.dU) + list(s.dV)

    def hvp(G: Mat) -> Mat:
        return G.applyfunc(
            lambda g: sp.Add(*(g.diff(x) * dx for x, dx in zip(params, direction, strict=True)))
        )

    HU, HV = closed_form(s.U, s.V, s.dU, s.dV, s.S, s.hess_L, s.lam)
    return _expanded(sp.Matrix.vstack(hvp(_grad(s.F, s.U)) - HU, hvp(_grad(s.F, s.V)) - HV))


def zero_point_hessian_residual(
    m: int, n: int, r: int, *, block: BlockForm = zero_point_block, loss: LossKind = "function"
) -> sp.Matrix:
    r"""Full sympy Hessian of ``F`` at ``U = V = 0`` minus ``diag(M, ..., M)`` (``r`` blocks).

    Variables are ordered column pair by column pair,

    .. math:: x = (U_{:,0}, V_{:,0}, U_{:,1}, V_{:,1}, \dots, U_{:,r-1}, V_{:,r-1}),

    in which the claimed Hessian is block diagonal with blocks
    :math:`M = \begin{pmatrix} \lambda I_m & S \\ S^\top & \lambda I_n \end{pmatrix}`,
    :math:`S = \nabla L(0)`; the residual is ``r (m + n)`` square.

    Parameters
    ----------
    m, n, r : int
        Shape of ``D`` and LoRA rank; positive.
    block : callable, optional
        ``(S, lam) -> M``; defaults to :func:`zero_point_block`.
    loss : {"function", "cubic"}
        As in :func:`lora_gradient_residual`.

    Returns
    -------
    sympy.Matrix
        The expanded residual; the zero matrix iff the block form is right at this size.

    """
    s = _setup(m, n, r, loss)
    order = [x for a in range(r) for x in (*s.U[:, a], *s.V[:, a])]
    origin = {x: sp.S.Zero for x in order}
    hessian = sp.hessian(s.F, order).xreplace(origin)
    S0 = s.S.xreplace(origin)
    return _expanded(hessian - sp.diag(*([block(S0, s.lam)] * r)))


def zero_point_eigenvalues(m: int, n: int, *, predicted: CharpolyForm = zero_point_charpoly) -> sp.Expr:
    r"""``det(x I - M)`` minus the characteristic polynomial predicted from ``lam +- sigma_i(S)``.

    With a fully symbolic ``m x n`` matrix ``S`` and
    :math:`M = \begin{pmatrix} \lambda I_m & S \\ S^\top & \lambda I_n \end{pmatrix}`, confirms
    :math:`\det(x I - M) = (x - \lambda)^{m - n} \det((x - \lambda)^2 I_n - S^\top S)` for
    :math:`m \ge n` (and the transposed statement otherwise).  Hence the spectrum of ``M`` is
    :math:`\lambda \pm \sigma_i(S)` plus :math:`\lambda` with multiplicity :math:`|m - n|`, and
    :math:`\lambda_{\min}(M) = \lambda - \|S\|_{op}`.

    Parameters
    ----------
    m, n : int
        Shape of ``S``; positive.
    predicted : callable, optional
        ``(x, lam, S) -> polynomial``; defaults to :func:`zero_point_charpoly`.

    Returns
    -------
    sympy.Expr
        The expanded residual polynomial; ``0`` iff the prediction is right at this size.

    """
    m, n = positive_int("m", m), positive_int("n", n)
    S = sp.Matrix(m, n, lambda i, j: sp.Symbol(f"s_{i}_{j}"))
    x, lam = sp.symbols("x lam")
    M = zero_point_block(S, lam)
    charpoly = (x * sp.eye(m + n) - M).det(method="berkowitz")
    return sp.expand(charpoly - predicted(x, lam, S))


def balance_residual(
    m: int, n: int, r: int, *, rhs: BalanceForm = balance_rhs, loss: LossKind = "function"
) -> sp.Matrix:
    r"""``U^T dF/dU - (dF/dV)^T V - lam (U^T U - V^T V)`` with sympy's gradient; ``r x r``.

    Uses the gradient differentiated by sympy, not the closed form, so the balance identity is
    confirmed independently of :func:`lora_gradient_residual`.  At a critical point the left side
    vanishes, so for :math:`\lambda > 0` it forces :math:`U^\top U = V^\top V`.

    Parameters
    ----------
    m, n, r : int
        Shape of ``D`` and LoRA rank; positive.
    rhs : callable, optional
        ``(U, V, lam) -> r x r matrix``; defaults to :func:`balance_rhs`.
    loss : {"function", "cubic"}
        As in :func:`lora_gradient_residual`.

    Returns
    -------
    sympy.Matrix
        The expanded residual; the zero matrix iff the identity holds at this size.

    """
    s = _setup(m, n, r, loss)
    lhs = s.U.T * _grad(s.F, s.U) - _grad(s.F, s.V).T * s.V
    return _expanded(lhs - rhs(s.U, s.V, s.lam))


def confirm_all(max_size: int = 2) -> dict[str, bool]:
    """Run every check over all ``(m, n, r)`` with ``1 <= m, n, r <= max_size``.

    Parameters
    ----------
    max_size : int
        Largest ``m``, ``n`` and ``r`` tried; positive.  Cost grows quickly: keep it at 2 or 3.

    Returns
    -------
    dict[str, bool]
        ``name -> True`` when that residual is exactly zero at every size tried.

    """
    max_size = positive_int("max_size", max_size)
    sizes = list(itertools.product(range(1, max_size + 1), repeat=3))
    shapes = sorted({(m, n) for m, n, _ in sizes})
    return {
        "gradient": all(_is_zero(lora_gradient_residual(*t)) for t in sizes),
        "hvp": all(_is_zero(lora_hvp_residual(*t)) for t in sizes),
        "zero_point_hessian": all(_is_zero(zero_point_hessian_residual(*t)) for t in sizes),
        "zero_point_eigenvalues": all(zero_point_eigenvalues(*s) == 0 for s in shapes),
        "balance": all(_is_zero(balance_residual(*t)) for t in sizes),
    }
