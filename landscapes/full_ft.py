r"""Full fine-tuning (FT) of a linearized model: :math:`\min_D L(D)`, when a minimizer exists.

Every minimizer can be moved to the *minimum-norm* one of the same predictions,
:math:`D = \operatorname{mat}(J^\top a)`, so FT reduces to the ``KN``-dimensional problem over the
range of the Gram matrix :math:`K = J J^\top = E \Lambda E^\top`: predictions :math:`z = f_0 + E_+ c`.

* **squared loss**: always solvable; :math:`c = E_+^\top (y - f_0)` (least squares).
* **logistic / cross-entropy**: the infimum is attained iff no direction :math:`d = E_+ c` in the
  range of ``J`` has all margins non-negative and one positive (then the loss decreases strictly
  along it forever).  A linear program (HiGHS) decides this; if it finds such a direction FT has
  no minimizer and the direction is returned as the certificate.  Otherwise damped Newton on
  ``c`` finds the minimizer.

Stationarity of the result is certified by :math:`\|\nabla L(D)\|_F = \|J^\top g\|_2`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.optimize as sopt
import torch
from torch import Tensor

from landscapes.problem import Blocks, Problem
from landscapes.threads import scipy_blas_single_thread
from theory.errors import UserInputError

__all__ = ["FTSolution", "solve_ft", "separating_direction"]


@dataclass(frozen=True)
class FTSolution:
    r"""Outcome of :func:`solve_ft`.

    ``exists`` says whether FT has a minimizer. When it does, ``D`` is the minimum-norm minimizer,
    ``grad_norm`` is :math:`\|\nabla L(D)\|_F` and ``grad_norm_at_zero`` the same at ``D = 0``
    (the scale for relative tolerances). When it does not, ``direction`` holds a prediction-space
    direction (shape ``(N, K)``) in the range of ``J`` with all margins ``>= 0`` summing to 1.
    """

    exists: bool
    D: Blocks | None
    risk: float
    grad_norm: float
    grad_norm_at_zero: float
    gram_rank: int
    direction: Tensor | None
    reason: str
    seconds: float


def _range_basis(problem: Problem, rtol: float = 1e-12) -> tuple[Tensor, Tensor, Tensor]:
    """Thin SVD ``J = E diag(sig) Z^T`` restricted to singular values above ``rtol * sig_1``.

    Working with ``J`` itself (not the Gram matrix ``J J^T``) keeps the error at
    ``eps * cond(J)`` instead of ``eps * cond(J)^2``.
    """
    rows = problem.J.rows()
    E, sig, Zh = torch.linalg.svd(rows, full_matrices=False)
    top = float(sig[0]) if sig.numel() else 0.0
    keep = sig > rtol * top if top > 0 else torch.zeros_like(sig, dtype=torch.bool)
    return E[:, keep], sig[keep], Zh[keep].T


def _margins_matrix(problem: Problem) -> np.ndarray:
    """Rows: one margin per (example, wrong class); columns: the KN predictions."""
    N, K = problem.N, problem.K
    y = problem.y.cpu().numpy()
    if problem.loss.name == "logistic":
        M = np.zeros((N, N))
        M[np.arange(N), np.arange(N)] = 2.0 * y - 1.0
        return M
    rows = []
    for i in range(N):
        for k in range(K):
            if k != int(y[i]):
                r = np.zeros(N * K)
                r[i * K + int(y[i])] = 1.0
                r[i * K + k] = -1.0
                rows.append(r)
    return np.array(rows)


def separating_direction(problem: Problem, E: Tensor) -> Tensor | None:
    """A direction ``d = E c`` with all margins ``>= 0`` and margin sum 1, or ``None`` (LP, HiGHS)."""
    M = _margins_matrix(problem)
    A = M @ E.cpu().double().numpy()  # margins of d = E c
    n = A.shape[1]
    # feasibility: A c >= 0, 1^T A c = 1, c free
    res = sopt.linprog(
        c=np.zeros(n),
        A_ub=-A,
        b_ub=np.zeros(A.shape[0]),
        A_eq=A.sum(axis=0, keepdims=True),
        b_eq=np.array([1.0]),
        bounds=[(None, None)] * n,
        method="highs",
    )
    if res.status == 2:  # infeasible: no separating direction
        return None
    if res.status != 0:
        raise RuntimeError(f"separability LP did not finish (HiGHS status {res.status}: {res.message})")
    d = E @ torch.as_tensor(res.x, dtype=E.dtype, device=E.device)
    # Re-check the LP's answer in floating point: margins >= 0 up to round-off, sum 1.
    margins = torch.as_tensor(M, dtype=E.dtype, device=E.device) @ d
    if float(margins.min()) < -1e-9 or abs(float(margins.sum()) - 1.0) > 1e-6:
        raise RuntimeError(
            f"separability LP returned a direction with margins down to {float(margins.min()):.1e}: "
            "not trusted"
        )
    return d.reshape(problem.N, problem.K)


def solve_ft(problem: Problem, *, max_newton: int = 200, grad_atol: float = 0.0) -> FTSolution:
    """Solve FT (see the module docstring); ``lam`` plays no role here."""
    t0 = time.perf_counter()
    if problem.loss.name not in ("squared", "logistic", "cross_entropy"):
        raise UserInputError(
            f"problem: solve_ft supports the built-in losses, got a custom loss {problem.loss!r}"
        )
    E, sig, Z = _range_basis(problem)
    zeros = problem.zeros()
    g0 = float(torch.cat([s.reshape(-1) for s in problem.evaluate(zeros).S]).norm())

    def D_of(c: Tensor) -> Blocks:
        # minimum-norm D with J vec D = E c:  vec D = Z diag(1/sig) c
        return problem.unvec(Z @ (c / sig))

    def solved(c: Tensor, reason: str) -> FTSolution:
        D = D_of(c)
        ev = problem.evaluate(D)
        gn = float(torch.cat([s.reshape(-1) for s in ev.S]).norm())
        return FTSolution(True, D, ev.value, gn, g0, int(E.shape[1]), None, reason, time.perf_counter() - t0)

    if E.shape[1] == 0:
        # J = 0: the loss does not depend on D; D = 0 is the minimum-norm minimizer.
        return solved(
            torch.zeros(0, dtype=problem.dtype, device=problem.device), "J = 0: the loss is constant"
        )
    if problem.loss.name == "squared":
        c = E.T @ (problem.y - problem.f0).reshape(-1)
        return solved(c, "least squares (always attained)")
    with scipy_blas_single_thread():
        d = separating_direction(problem, E)
    if d is not None:
        return FTSolution(
            False,
            None,
            float("nan"),
            float("nan"),
            g0,
            int(E.shape[1]),
            d,
            "no minimizer: a direction in the range of J raises every margin "
            "(the loss decreases along it forever)",
            time.perf_counter() - t0,
        )
    c = torch.zeros(E.shape[1], dtype=problem.dtype, device=problem.device)
    f = problem.f0.reshape(-1)
    z = f + E @ c
    for _ in range(max_newton):
        zz = z.reshape(problem.N, problem.K)
        g = problem.loss.grad(zz, problem.y).reshape(-1) / problem.N
        grad = E.T @ g
        H = torch.stack(
            [
                E.T
                @ (
                    problem.loss.hvp(zz, problem.y, E[:, i].reshape(problem.N, problem.K)).reshape(-1)
                    / problem.N
                )
                for i in range(E.shape[1])
            ],
            dim=1,
        )
        step = torch.linalg.lstsq(H, -grad.unsqueeze(1), rcond=1e-13).solution.squeeze(1)
        f_old = problem.risk_at(zz)
        t = 1.0
        while t > 1e-12:
            z_try = (z + t * (E @ step)).reshape(problem.N, problem.K)
            if problem.risk_at(z_try) <= f_old + 1e-4 * t * float(grad @ step):
                break
            t /= 2
        c = c + t * step
        z = f + E @ c
        if float(grad.norm()) <= max(grad_atol, 1e-15 * g0) or t <= 1e-12:  # relative: scale-free
            break
    return solved(c, "minimizer exists (no separating direction); Newton on the range of J")
