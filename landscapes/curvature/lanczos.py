r"""Lanczos (ARPACK ``eigsh``) on the LoRA Hessian: the route for problems without the structure.

:func:`lambda_min_lanczos` runs ``eigsh(which="SA")`` on the closed-form HVP operator.  Its
``lower`` is only ``theta - residual``: an eigenvalue lies within the residual of ``theta``, but
Lanczos does not prove there is none below.  :func:`smallest_ritz_pair` is the ARPACK call shared
with the autodiff route of :mod:`landscapes.curvature.nonlinear`; :func:`refine_compressed`
sharpens a candidate vector on :math:`\mathrm{span}(G)^\perp` for the structured route.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from landscapes.curvature.certificate import (
    LambdaMin,
    check_exclude,
    check_route_input,
    rayleigh_residual,
    route_cost,
)
from landscapes.curvature.hvp import LoRAHessianOperator
from landscapes.curvature.vectors import flatten_factors
from landscapes.operators import DenseOperator, LinearOperator
from landscapes.problem import Problem
from theory.errors import UserInputError

__all__ = ["smallest_ritz_pair", "lambda_min_lanczos", "refine_compressed"]


def smallest_ritz_pair(
    A: Any,
    P: int,
    *,
    tol: float,
    maxiter: int | None,
    seed: int,
    estimate_lambda_max: bool = True,
    count: Any = None,
) -> tuple[np.ndarray, np.ndarray, bool, int, float]:
    """``eigsh(which="SA")`` on a SciPy operator of size ``P``: Ritz pair, convergence, cost, ``lambda_max``.

    On ``ArpackNoConvergence`` the best Ritz pair is kept (or the start vector's Rayleigh
    quotient when ARPACK has none) and ``converged`` is ``False``.  ``lambda_max`` comes from a
    loose second ``eigsh(which="LA")`` (``nan`` when not estimated).  ``count()`` reads the number
    of matrix-vector products spent on the smallest pair.
    """
    from scipy.sparse.linalg import ArpackNoConvergence, eigsh

    from landscapes.threads import scipy_blas_single_thread

    v0 = np.random.default_rng(seed).standard_normal(P)
    converged = True
    with scipy_blas_single_thread():
        try:
            w, X = eigsh(A, k=1, which="SA", tol=tol, v0=v0, maxiter=maxiter)
        except ArpackNoConvergence as exc:  # keep the best Ritz pair
            converged = False
            if len(exc.eigenvalues):
                w, X = exc.eigenvalues, exc.eigenvectors
            else:
                w, X = np.array([float(v0 @ A.matvec(v0) / (v0 @ v0))]), (v0 / np.linalg.norm(v0))[:, None]
        n_min = int(count()) if count is not None else 0
        lam_max = float("nan")
        if estimate_lambda_max:
            try:
                lam_max = float(eigsh(A, k=1, which="LA", tol=1e-3, v0=v0)[0][0])
            except ArpackNoConvergence as exc:
                lam_max = float(exc.eigenvalues[0]) if len(exc.eigenvalues) else float("nan")
    return w, X, converged, n_min, lam_max


def lambda_min_lanczos(
    problem: Problem,
    U: Sequence[Tensor],
    V: Sequence[Tensor],
    *,
    perturbation: Sequence[Tensor] | None = None,
    tol: float = 1e-10,
    maxiter: int | None = None,
    seed: int = 0,
    t_grad: float | None = None,
    estimate_lambda_max: bool = True,
    exclude: Tensor | None = None,
) -> LambdaMin:
    r"""``eigsh(which="SA")`` (ARPACK, implicitly restarted Lanczos) on the closed-form HVP.

    ``tol`` is ARPACK's relative accuracy of the Ritz value.  ``converged`` is ``False`` when
    ARPACK stops at ``maxiter`` (the best Ritz pair is still returned).  The largest eigenvalue
    (the tolerance scale) is estimated with a loose second ``eigsh(which="LA")``, counted in the
    cost.
    """
    if not (isinstance(tol, float) and tol > 0):
        raise UserInputError(f"tol: expected a positive float, got {tol!r}")
    pert = check_route_input(problem, U, V, perturbation)
    t0 = time.perf_counter()
    op = LoRAHessianOperator(problem, U, V, perturbation=pert)
    if not isinstance(problem.J, DenseOperator):
        problem.J.check_deterministic(name="problem.J")
    op.check_deterministic(seed=seed, rtol=1e-10, name="Hessian operator")
    op.count = 0
    P = op.shape[0]
    G = check_exclude(exclude, P, flatten_factors(U, V))
    target: LinearOperator = op
    if G is not None and G.shape[1] > 0:
        target = _Compressed(op, G)
    w, X, converged, n_min, lam_max = smallest_ritz_pair(
        target.to_scipy(),
        P,
        tol=tol,
        maxiter=maxiter,
        seed=seed,
        estimate_lambda_max=estimate_lambda_max,
        count=lambda: op.count,
    )
    vec = torch.as_tensor(X[:, 0], dtype=problem.dtype, device=problem.device)
    if G is not None and G.shape[1] > 0:
        vec = vec - G @ (G.T @ vec)
    vec = vec / vec.norm()
    theta, resid = rayleigh_residual(op, vec, exclude=G)
    seconds, multiple = route_cost(problem, U, V, pert, t0, t_grad)
    return LambdaMin(
        value=theta,
        lower=theta - resid,
        upper=theta,
        residual=resid,
        lambda_max=lam_max,
        method="lanczos",
        lower_is_rigorous=False,
        converged=converged,
        matvecs=op.count,
        seconds=seconds,
        gradient_multiple=multiple,
        n_params=P,
        vector=vec,
        meta={"matvecs_lambda_min": n_min, "ritz_value": float(w[0])},
    )


class _Compressed(LinearOperator):
    r""":math:`(I - GG^\top) H (I - GG^\top) + \sigma GG^\top` with ``sigma`` twice a bound on ``|H|``."""

    def __init__(self, op: LoRAHessianOperator, G: Tensor) -> None:
        self.op, self.G = op, G
        self.shape, self.dtype, self.device = op.shape, op.dtype, op.device
        x = torch.ones(op.shape[0], dtype=op.dtype, device=op.device) / math.sqrt(op.shape[0])
        for _ in range(20):  # a rough |H| scale: sigma only has to push G's span away
            x = op.matvec(x)
            x = x / x.norm()
        self.sigma = 2.0 * float(op.matvec(x).norm()) + 1e-300

    def _matvec(self, x: Tensor) -> Tensor:
        G = self.G
        px = x - G @ (G.T @ x)
        hx = self.op.matvec(px)
        return hx - G @ (G.T @ hx) + self.sigma * (G @ (G.T @ x))

    def _rmatvec(self, y: Tensor) -> Tensor:
        return self._matvec(y)


def refine_compressed(
    op: LoRAHessianOperator, G: Tensor, start: Tensor, *, maxiter: int = 300
) -> tuple[float, float, Tensor] | None:
    r"""Lanczos on ``(I - GG^T) H (I - GG^T) + sigma GG^T`` from ``start``: Rayleigh quotient, residual, v.

    The returned unit ``v`` lies in :math:`\mathrm{span}(G)^\perp`, so its Rayleigh quotient of
    ``H`` bounds the smallest eigenvalue of ``H`` compressed to that space from above; the residual
    is the compressed one (:func:`~landscapes.curvature.certificate.rayleigh_residual`).  ``None``
    when ARPACK returns no Ritz pair or the vector lies in :math:`\mathrm{span}(G)`.
    """
    from scipy.sparse.linalg import ArpackNoConvergence, eigsh

    from landscapes.threads import scipy_blas_single_thread

    comp = _Compressed(op, G)
    v0 = start.detach().cpu().numpy()
    with scipy_blas_single_thread():
        try:
            _, X = eigsh(comp.to_scipy(), k=1, which="SA", tol=1e-10, v0=v0, maxiter=maxiter)
        except ArpackNoConvergence as exc:
            if not len(exc.eigenvalues):
                return None
            X = exc.eigenvectors
    v = torch.as_tensor(X[:, 0], dtype=start.dtype, device=start.device)
    v = v - G @ (G.T @ v)
    if float(v.norm()) == 0.0:
        return None
    v = v / v.norm()
    theta, resid = rayleigh_residual(op, v, exclude=G)
    return theta, resid, v
