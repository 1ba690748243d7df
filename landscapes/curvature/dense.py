r"""The dense Hessian of the LoRA objective of a linearized problem, in closed form, and ``eigh`` on it.

.. math:: \nabla^2 F = \tfrac1N \Phi^\top H_z \Phi + \bigoplus_j (Y_j \otimes I_{r_j}),

:math:`\Phi = \partial z / \partial (U, V)` (:func:`landscapes.lora.prediction_jacobian`),
:math:`H_z` the per-example loss Hessians (:func:`loss_hessian_blocks`) and :math:`Y_j` the
column-pair matrix (:func:`column_pair_matrix`).  :func:`lora_hessian` assembles it (small sizes);
:func:`hessian_directions` and :func:`lambda_min_dense` (the oracle route of
:func:`landscapes.curvature.lambda_min`) diagonalize it.  The structured route
(:mod:`landscapes.curvature.structured`) uses the same two terms without forming the matrix.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

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
from landscapes.curvature.vectors import unflatten_factors
from landscapes.lora import (
    LoRAPoint,
    check_factors,
    check_perturbation,
    prediction_jacobian,
    product,
)
from landscapes.operators import DenseOperator
from landscapes.problem import Problem
from theory.errors import UserInputError

__all__ = [
    "column_pair_matrix",
    "loss_hessian_blocks",
    "lora_hessian",
    "hessian_directions",
    "lambda_min_dense",
]


def column_pair_matrix(S: Tensor, lam: float, C: Tensor | None = None) -> Tensor:
    r""":math:`Y = \begin{pmatrix}\lambda I & S\\ S^\top & \lambda I\end{pmatrix} + C`.

    The part of the LoRA Hessian that does not involve ``J``'s second pass: it acts on each
    column pair :math:`(dU_{:a}, dV_{:a})` separately.  It is also the gradient of the convex
    problem over :math:`Z = [U; V][U; V]^\top` (times 2), so :math:`Y \succeq 0` is the global
    optimality test for a stationary point [Burer--Monteiro]; with ``C = 0`` it reads
    :math:`\|S\|_{op} \le \lambda`.
    """
    m, n = S.shape
    Y = torch.zeros(m + n, m + n, dtype=S.dtype, device=S.device)
    Y[:m, m:] = S
    Y[m:, :m] = S.T
    idx = torch.arange(m + n, device=S.device)
    Y[idx, idx] = lam
    if C is not None:
        Y = Y + C
    return Y


def loss_hessian_blocks(problem: Problem, z: Tensor) -> Tensor:
    r"""Per-example loss Hessians :math:`\nabla_z^2 \ell(z_i, y_i)`, shape ``(N, K, K)``."""
    N, K = problem.N, problem.K
    cols = []
    for k in range(K):
        e = torch.zeros(N, K, dtype=z.dtype, device=z.device)
        e[:, k] = 1.0
        cols.append(problem.loss.hvp(z, problem.y, e))
    return torch.stack(cols, dim=2)


def lora_hessian(
    problem: Problem,
    U: Sequence[Tensor],
    V: Sequence[Tensor],
    *,
    perturbation: Sequence[Tensor] | None = None,
    out: Tensor | None = None,
) -> Tensor:
    r"""Dense Hessian of the LoRA objective ``F(U, V)``, in closed form (small sizes).

    Variables are ordered block by block, ``vec(U_j)`` then ``vec(V_j)`` (row-major), the order
    of :func:`~landscapes.lora.minimize_lora`.  With :math:`\Phi = \partial z / \partial (U, V)` (row ``i``:
    :math:`(\operatorname{vec}(A_i V_j), \operatorname{vec}(A_i^\top U_j))` for
    :math:`A_i = \operatorname{mat}(J_i)` restricted to block ``j``),

    .. math:: \nabla^2 F = \tfrac1N \Phi^\top H_z \Phi
              + \begin{pmatrix} \lambda_j I & S_j \otimes I_r \\ S_j^\top \otimes I_r & \lambda_j I
              \end{pmatrix}_j,

    :math:`H_z` the block-diagonal per-example loss Hessians, :math:`S_j = \nabla_{D_j} L`.  The
    first term has rank at most ``K N``; the second acts on each column pair
    :math:`([U_j]_{:a}, [V_j]_{:a})` as the ``(m_j + n_j)``-square matrix of
    :func:`column_pair_matrix` (eigenvalues :math:`\lambda_j \pm \sigma_i(S_j)` and
    :math:`\lambda_j`; plus :math:`C_j` with a perturbation).  Cost: one pass over the rows of ``J``
    and a ``P x P`` product, ``P = sum_j (m_j + n_j) r_j``.

    ``out`` (a ``P x P`` tensor of the problem's dtype) receives the Hessian without allocating
    one (inner loops reuse it); it is then symmetric up to round-off only (a Cholesky
    factorization reads one triangle), while the returned fresh matrix is exactly symmetric.
    """
    check_factors(problem, U, V)
    pert = check_perturbation(problem, perturbation)
    ev = problem.evaluate(product(U, V))
    q = problem.KN
    Phi = prediction_jacobian(problem, U, V)  # (K N, P)
    P = Phi.shape[1]
    if out is not None and (
        not isinstance(out, Tensor)
        or tuple(out.shape) != (P, P)
        or out.dtype != Phi.dtype
        or out.device != Phi.device
    ):
        got = (tuple(out.shape), out.dtype) if isinstance(out, Tensor) else type(out).__name__
        raise UserInputError(f"out: expected a tensor of shape ({P}, {P}) and dtype {Phi.dtype}, got {got}")
    if problem.loss.name == "squared":
        right = Phi / problem.N
    else:
        Hz = loss_hessian_blocks(problem, ev.z) / problem.N  # (N, K, K)
        right = (Hz @ Phi.reshape(problem.N, problem.K, -1)).reshape(q, -1)
    if out is None:
        H = Phi.T @ right
        H = 0.5 * (H + H.T)  # exactly symmetric (the product is symmetric up to round-off)
    else:
        H = torch.matmul(Phi.T, right, out=out)
    o = 0
    for j, (lam, u, v, S) in enumerate(zip(problem.lam, U, V, ev.S)):
        (m, r), n = u.shape, v.shape[0]
        Y = column_pair_matrix(S, lam, None if pert is None else pert[j])
        # Variables of block j in order vec(U) then vec(V) are the rows of R = [U; V], row-major:
        # the column-pair term acts as kron(Y, I_r), i.e. H4[a, i, b, i] += Y[a, b] for every i
        # of the view H4 = H_jj as (m+n, r, m+n, r) -- added in place, without forming the kron.
        Hjj = H[o : o + (m + n) * r, o : o + (m + n) * r].view(m + n, r, m + n, r)
        Hjj.diagonal(dim1=1, dim2=3).add_(Y.unsqueeze(-1))
        o += (m + n) * r
    return H


def hessian_directions(
    problem: Problem, point: LoRAPoint, *, max_params: int = 4000
) -> tuple[LoRAPoint, LoRAPoint]:
    """Unit eigenvectors of the smallest and the largest Hessian eigenvalue of ``F`` at ``point``.

    Dense (``eigh`` of :func:`lora_hessian`), so only up to ``max_params``
    variables; returns ``(v_min, v_max)``.
    """
    check_factors(problem, point.U, point.V)
    P = sum(u.numel() + v.numel() for u, v in zip(point.U, point.V))
    if P > max_params:
        raise UserInputError(f"point: expected at most max_params = {max_params} LoRA parameters, got {P}")
    _, vecs = torch.linalg.eigh(lora_hessian(problem, point.U, point.V))
    return (
        LoRAPoint(*unflatten_factors(vecs[:, 0], point.U, point.V)),
        LoRAPoint(*unflatten_factors(vecs[:, -1], point.U, point.V)),
    )


def lambda_min_dense(
    problem: Problem,
    U: Sequence[Tensor],
    V: Sequence[Tensor],
    *,
    perturbation: Sequence[Tensor] | None = None,
    max_params: int = 4000,
    t_grad: float | None = None,
    exclude: Tensor | None = None,
) -> LambdaMin:
    r"""``eigh`` of the closed-form dense Hessian (the oracle; at most ``max_params`` parameters).

    ``lower = theta - max(residual, 10 P eps ||H||)`` (``eigh`` is backward stable).  With
    ``exclude`` (orthonormal ``G``), ``eigh`` of :math:`B^\top H B` for an orthonormal basis ``B`` of
    :math:`\mathrm{span}(G)^\perp`.
    """
    pert = check_route_input(problem, U, V, perturbation)
    P = sum(u.numel() + v.numel() for u, v in zip(U, V))
    if P > max_params:
        raise UserInputError(
            f"max_params: the dense Hessian has {P} parameters, more than max_params={max_params}"
        )
    if not isinstance(problem.J, DenseOperator) and problem.KN > 4096:
        raise UserInputError(f"problem: the dense route materializes J's {problem.KN} rows; use 'lanczos'")
    t0 = time.perf_counter()
    H = lora_hessian(problem, U, V, perturbation=pert)
    G = check_exclude(exclude, P, H)
    if G is not None and G.shape[1] > 0:
        Qf, _ = torch.linalg.qr(torch.cat([G, torch.eye(P, dtype=H.dtype, device=H.device)], dim=1))
        B = Qf[:, G.shape[1] : P]
        w, X = torch.linalg.eigh(B.T @ H @ B)
        vec = B @ X[:, 0]
        vec = vec - G @ (G.T @ vec)
        vec = vec / vec.norm()
    else:
        w, X = torch.linalg.eigh(H)
        vec = X[:, 0]
    op = LoRAHessianOperator(problem, U, V, perturbation=pert)
    theta, resid = rayleigh_residual(op, vec, exclude=G)
    eps = float(torch.finfo(H.dtype).eps)
    slack = max(resid, 10 * P * eps * float(w.abs().max()))
    seconds, multiple = route_cost(problem, U, V, pert, t0, t_grad)
    return LambdaMin(
        value=float(w[0]),
        lower=float(w[0]) - slack,
        upper=min(theta, float(w[0]) + slack),
        residual=resid,
        lambda_max=float(w[-1]),
        method="dense",
        lower_is_rigorous=True,
        converged=True,
        matvecs=op.count,
        seconds=seconds,
        gradient_multiple=multiple,
        n_params=P,
        vector=vec,
        meta={
            "second_smallest": float(w[1]) if w.numel() > 1 else float("nan"),
            "excluded_directions": 0 if G is None else int(G.shape[1]),
        },
    )
