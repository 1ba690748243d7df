r"""Curvature of the LoRA objective of a non-linearized problem ([KKR25]), by autodiff.

:math:`L^{\mathrm{lora}}_\lambda(A, B)` of a :class:`~landscapes.nonlinear.problems.NonlinearProblem`
has no closed-form Hessian here: every product is the problem's autodiff HVP
(:meth:`~landscapes.nonlinear.problems.NonlinearProblem.lora_hvp`).  :func:`nonlinear_hvp` wraps it
as a float64 numpy matvec, :func:`nonlinear_hessian` builds the dense matrix from one HVP per unit
vector, and :func:`lambda_min_lora` finds the smallest eigenvalue by Lanczos (ARPACK ``eigsh``) or,
on small sizes, by ``eigh`` of that matrix: the generic route of DESIGN.md for landscapes without
the linearized structure.  The Ritz value is a rigorous *upper* bound on :math:`\lambda_{\min}`;
``value - residual`` bounds *an* eigenvalue only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from landscapes.curvature.certificate import LambdaMin
from landscapes.curvature.lanczos import smallest_ritz_pair
from landscapes.curvature.vectors import flatten_factors, unflatten_factors
from landscapes.nonlinear.factors import (
    Factors,
    check_factors,
    embed_columns,
    inactive_columns,
    reduce_columns,
)
from landscapes.nonlinear.problems import NonlinearProblem
from theory.errors import UserInputError

__all__ = ["nonlinear_hvp", "nonlinear_hessian", "lambda_min_lora"]


def nonlinear_hvp(problem: NonlinearProblem, point: Factors) -> Callable[[np.ndarray], np.ndarray]:
    """The LoRA Hessian at ``point`` as a float64 numpy matvec (flattened factor order).

    ``v`` (any float array of the right size) is cast to the problem's dtype and device, multiplied
    by the autodiff HVP, and returned as a float64 numpy vector.
    """

    def hv(v: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(v).reshape(-1))
        dA, dB = unflatten_factors(t.to(dtype=problem.dtype, device=problem.device), point.A, point.B)
        hA, hB = problem.lora_hvp(point.A, point.B, dA, dB)
        return flatten_factors(hA, hB).detach().cpu().double().numpy()

    return hv


def nonlinear_hessian(problem: NonlinearProblem, point: Factors, *, chunk: int = 8) -> Tensor:
    """The LoRA Hessian at ``point`` as a dense float64 CPU matrix: one HVP per unit vector.

    Row ``i`` is the HVP of the ``i``-th unit vector in
    :func:`~landscapes.curvature.vectors.flatten_factors` order (so the matrix is symmetric up to
    the HVP's round-off; :func:`lambda_min_lora` allows for the asymmetry).

    The HVPs run ``chunk`` at a time under ``torch.func.vmap``; a progress bar shows on the
    terminal for long builds.
    """
    from tqdm.auto import tqdm

    P = sum(x.numel() for x in list(point.A) + list(point.B))

    def hv(v: Tensor) -> Tensor:
        dA, dB = unflatten_factors(v, point.A, point.B)
        hA, hB = problem.lora_hvp(point.A, point.B, dA, dB)
        return flatten_factors(hA, hB)

    eye = torch.eye(P, dtype=problem.dtype, device=problem.device)
    rows = []
    for i in tqdm(
        range(0, P, chunk), desc="Hessian columns", unit="chunk", disable=None if P > 256 else True
    ):
        rows.append(torch.func.vmap(hv)(eye[i : i + chunk]).detach().to(dtype=torch.float64, device="cpu"))
    return torch.cat(rows)


def _dense_bottom(H: Tensor, eps: float) -> tuple[float, Tensor, float, float]:
    """Smallest eigenpair of the symmetrized ``H``, a round-off allowance, and the largest eigenvalue.

    The allowance is half the measured asymmetry ``||H - H^T||_F`` (the skew part of the HVP
    columns' round-off), plus ``2 P eps ||H||_F`` for their symmetric part (which the asymmetry
    cannot show; ``eps`` is that of the HVP's dtype) and eigh's backward error.  It is a
    round-off model, not an a-priori bound on the autodiff HVP's error.
    """
    Hs = 0.5 * (H + H.T)
    w, V = torch.linalg.eigh(Hs)
    P = H.shape[0]
    f64 = torch.finfo(torch.float64).eps
    allowance = 0.5 * float((H - H.T).norm()) + P * (2.0 * eps + f64) * float(Hs.norm())
    return float(w[0]), V[:, 0], allowance, float(w[-1])


def _lanczos(
    problem: NonlinearProblem, point: Factors, *, tol: float, maxiter: int | None, seed: int
) -> tuple[Tensor, bool, int, int, float]:
    """ARPACK's smallest Ritz vector of the LoRA Hessian, convergence, matvecs (all, for it), lambda_max."""
    from scipy.sparse.linalg import LinearOperator

    P = sum(x.numel() for x in list(point.A) + list(point.B))
    hv = nonlinear_hvp(problem, point)
    count = {"n": 0}

    def counted(v: np.ndarray) -> np.ndarray:
        count["n"] += 1
        return hv(v)

    op = LinearOperator((P, P), matvec=counted, dtype=np.float64)
    w, X, converged, n_min, lam_max = smallest_ritz_pair(
        op, P, tol=tol, maxiter=maxiter, seed=seed, count=lambda: count["n"]
    )
    vec = torch.as_tensor(X[:, 0], dtype=torch.float64)
    return vec / vec.norm(), converged, count["n"], n_min, lam_max


def _bottom(
    problem: NonlinearProblem,
    point: Factors,
    *,
    tol: float,
    maxiter: int | None,
    seed: int,
    dense_max: int,
) -> tuple[Tensor, bool, int, int, float, float | None]:
    """Bottom of the LoRA Hessian at ``point`` by the dense route (up to ``dense_max``) or Lanczos.

    Returns the unit vector, converged, matvecs (all, for it), lambda_max, and for the dense
    route a rigorous lower bound on the smallest eigenvalue (``None`` for Lanczos): eigh's
    smallest eigenvalue minus the error allowance.
    """
    P = sum(x.numel() for x in list(point.A) + list(point.B))
    if P <= dense_max:
        eps = torch.finfo(problem.dtype).eps
        w0, v, allowance, w_max = _dense_bottom(nonlinear_hessian(problem, point), eps)
        return v, True, P, P, w_max, w0 - allowance
    vec, converged, n_all, n_min, lam_max = _lanczos(problem, point, tol=tol, maxiter=maxiter, seed=seed)
    return vec, converged, n_all, n_min, lam_max, None


@dataclass(frozen=True)
class _Found:
    """The bottom of the Hessian found by one branch of :func:`lambda_min_lora`.

    ``theta`` and ``Hv`` are the Rayleigh quotient and HVP of the unit ``vec`` through the *whole*
    Hessian; ``lower`` is a rigorous lower bound (dense or closed-form parts) or ``None`` (Lanczos).
    """

    theta: float
    vec: Tensor
    Hv: Tensor
    converged: bool
    matvecs: int
    n_min: int
    lam_max: float
    lower: float | None
    method: str


def _zero_column_curvature(
    problem: NonlinearProblem, point: Factors, zero: tuple[tuple[int, ...], ...]
) -> tuple[float, Tensor | None, float]:
    r"""The closed-form part: :math:`\min_j \lambda_j - \|G_j\|_{op}` over blocks with zero columns.

    Returns it, its unit eigenvector (flattened, float64 CPU: :math:`(u, -v)/\sqrt2` for the top
    singular pair of :math:`G_j = \nabla_{X_j} L` in one zero column) and
    :math:`\max_j \lambda_j + \|G_j\|_{op}`.
    """
    G = problem.grad(tuple(a @ b.T for a, b in zip(point.A, point.B)))
    closed, closed_vec, closed_max = math.inf, None, -math.inf
    for j, (g, lam, z) in enumerate(zip(G, problem.lam, zero)):
        if not z:
            continue
        # [[lam I, G], [G^T, lam I]] [u; -v] = (lam - sigma_1) [u; -v] for the top pair (u, v)
        Ug, sg, Vh = torch.linalg.svd(g, full_matrices=False)
        s1 = float(sg[0])
        closed_max = max(closed_max, lam + s1)
        if lam - s1 < closed:
            closed = lam - s1
            dA = [torch.zeros_like(a) for a in point.A]
            dB = [torch.zeros_like(b) for b in point.B]
            dA[j][:, z[0]] = Ug[:, 0] / math.sqrt(2.0)
            dB[j][:, z[0]] = -Vh[0] / math.sqrt(2.0)
            closed_vec = flatten_factors(dA, dB).to(dtype=torch.float64, device="cpu")
    return closed, closed_vec, closed_max


def _reduced_bottom(
    problem: NonlinearProblem,
    point: Factors,
    zero: tuple[tuple[int, ...], ...],
    *,
    tol: float,
    maxiter: int | None,
    seed: int,
    dense_max: int,
) -> tuple[Tensor | None, bool, int, int, float, float | None, int]:
    """:func:`_bottom` of the point without its zero columns, the vector embedded in the whole coordinates.

    Returns the vector (``None`` when no column is left), converged, matvecs (all, for it),
    lambda_max, the lower bound (``inf`` when no column is left, ``None`` for Lanczos) and the
    number of reduced parameters.
    """
    keep, reduced = reduce_columns(point, zero)
    n_red = sum(x.numel() for x in list(reduced.A) + list(reduced.B))
    if not n_red:
        return None, True, 0, 0, -math.inf, math.inf, 0
    rvec, converged, n_all, n_min, lam_max, red_low = _bottom(
        problem, reduced, tol=tol, maxiter=maxiter, seed=seed, dense_max=dense_max
    )
    # embed the reduced vector in the whole coordinates (zeros on the zero columns)
    rA, rB = unflatten_factors(rvec, reduced.A, reduced.B)
    emb = embed_columns(
        Factors(tuple(x.to(torch.float64).cpu() for x in rA), tuple(x.to(torch.float64).cpu() for x in rB)),
        keep,
        point,
    )
    return flatten_factors(emb.A, emb.B), converged, n_all, n_min, lam_max, red_low, n_red


def _split_bottom(
    problem: NonlinearProblem,
    point: Factors,
    zero: tuple[tuple[int, ...], ...],
    meta: dict[str, Any],
    *,
    tol: float,
    maxiter: int | None,
    seed: int,
    dense_max: int,
) -> _Found:
    """The bottom from the splitting of :func:`lambda_min_lora`: reduced point plus closed-form columns.

    Both candidates are judged by their Rayleigh quotient through the whole HVP (for the closed
    form, a check of the splitting recorded in ``meta``).
    """
    P = sum(x.numel() for x in list(point.A) + list(point.B))
    eps = torch.finfo(problem.dtype).eps
    closed, closed_vec, closed_max = _zero_column_curvature(problem, point, zero)
    red_vec, converged, n_all, n_min, lam_max, red_low, n_red = _reduced_bottom(
        problem, point, zero, tol=tol, maxiter=maxiter, seed=seed, dense_max=dense_max
    )
    meta.update(closed_form_lambda_min=closed, reduced_params=n_red)
    full_hv = nonlinear_hvp(problem, point)
    cands = [v for v in (red_vec, closed_vec) if v is not None]
    quotients = []
    for v in cands:
        Hv = torch.as_tensor(full_hv(v.numpy()), dtype=torch.float64)
        quotients.append((float(v @ Hv), v, Hv))
    theta, vec, Hv = min(quotients, key=lambda q: q[0])
    # the closed form's Rayleigh quotient through the whole HVP: a check of the splitting
    meta.update(
        reduced_ritz_value=quotients[0][0] if red_vec is not None else None,
        closed_form_check=abs(quotients[-1][0] - closed),
    )
    lower = None
    if red_low is not None:  # a dense (or empty) reduced part: a rigorous lower bound
        # lam - sigma_1(G): G and its SVD carry round-off of order P eps ||G||
        lower = min(closed - 4 * P * eps * max(1.0, closed_max), red_low)
    lam_max = max(lam_max, closed_max) if math.isfinite(lam_max) else closed_max
    method = "zero-columns+" + ("lanczos" if red_low is None else "dense") + "-autodiff"
    if not n_red:
        method = "zero-columns-closed-form"
    return _Found(theta, vec, Hv, converged, n_all + len(cands), n_min, lam_max, lower, method)


def _whole_bottom(
    problem: NonlinearProblem, point: Factors, *, tol: float, maxiter: int | None, seed: int, dense_max: int
) -> _Found:
    """The bottom of the whole Hessian by :func:`_bottom`, with one more HVP for its Rayleigh quotient."""
    vec, converged, n_all, n_min, lam_max, lower = _bottom(
        problem, point, tol=tol, maxiter=maxiter, seed=seed, dense_max=dense_max
    )
    Hv = torch.as_tensor(nonlinear_hvp(problem, point)(vec.numpy()), dtype=torch.float64)
    method = "lanczos-autodiff" if lower is None else "dense-autodiff"
    return _Found(float(vec @ Hv), vec, Hv, converged, n_all + 1, n_min, lam_max, lower, method)


def lambda_min_lora(
    problem: NonlinearProblem,
    point: Factors,
    *,
    tol: float = 1e-8,
    maxiter: int | None = None,
    seed: int = 0,
    structured: bool = True,
    dense_max: int = 0,
) -> LambdaMin:
    r"""Smallest eigenvalue of the LoRA Hessian at ``point``: Lanczos (or a dense build) on the autodiff HVP.

    ``structured=True`` and columns that are exactly zero in both factors (see
    :func:`~landscapes.nonlinear.sosp.truncate_factors`): such a column ``c`` of block ``j`` moves
    :math:`X_j` only at second order, so the Hessian splits exactly into the Hessian of the
    *reduced* point (the other columns) and, per zero column,
    :math:`\begin{bmatrix}\lambda_j I & G_j \\ G_j^\top & \lambda_j I\end{bmatrix}`,
    :math:`G_j = \nabla_{X_j} L`, with eigenvalues
    :math:`\lambda_j \pm \sigma_i(G_j)` (and :math:`\lambda_j`).  Then

    .. math:: \lambda_{\min} = \min\Big(\lambda_{\min}(H_{\text{reduced}}),\
              \min_{j \text{ with zero columns}} \lambda_j - \|G_j\|_{op}\Big),

    the second term in closed form, and the first on the reduced point only: fewer parameters,
    and without the cluster of :math:`r_0 \cdot \#\{i: \sigma_i(G_j) \approx \lambda_j\}`
    eigenvalues near 0 that the zero columns contribute at a rank-deficient stationary point.

    The reduced (or, without zero columns, the whole) Hessian's bottom comes from Lanczos, or,
    when it has at most ``dense_max`` parameters, from the dense matrix built with one HVP per
    unit vector and ``eigh``: then ``lower`` is a bound up to the round-off of the computed
    Hessian (allowed for by the columns' measured asymmetry, a ``P eps ||H||_F`` term for the
    symmetric part, and eigh's backward error; ``lower_is_rigorous`` is ``True`` in this sense,
    as for the structured route's computed matrices) and ``converged`` is ``True``.  The returned
    vector's Rayleigh quotient and residual are computed with the HVP of the *whole* Hessian (a
    check of the splitting); ``meta`` records both parts.
    """
    check_factors(problem, point)
    if isinstance(dense_max, bool) or not isinstance(dense_max, int) or dense_max < 0:
        raise UserInputError(f"dense_max: expected an int >= 0, got {dense_max!r}")
    t0 = time.perf_counter()
    P = sum(x.numel() for x in list(point.A) + list(point.B))
    zero = inactive_columns(point) if structured else tuple(() for _ in point.A)
    meta: dict[str, Any] = {}
    if any(zero):
        found = _split_bottom(
            problem, point, zero, meta, tol=tol, maxiter=maxiter, seed=seed, dense_max=dense_max
        )
    else:
        found = _whole_bottom(problem, point, tol=tol, maxiter=maxiter, seed=seed, dense_max=dense_max)
    resid = float((found.Hv - found.theta * found.vec).norm())
    seconds = time.perf_counter() - t0
    tg = time.perf_counter()
    problem.lora_value_and_grad(point.A, point.B)
    t_grad = time.perf_counter() - tg
    meta["matvecs_lambda_min"] = found.n_min
    return LambdaMin(
        value=found.theta,
        lower=found.theta - resid if found.lower is None else found.lower,
        upper=found.theta,
        residual=resid,
        lambda_max=found.lam_max,
        method=found.method,
        lower_is_rigorous=found.lower is not None,
        converged=found.converged,
        matvecs=found.matvecs,
        seconds=seconds,
        gradient_multiple=seconds / max(t_grad, 1e-12),
        n_params=P,
        vector=found.vec,
        meta=meta,
    )
