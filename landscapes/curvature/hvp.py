r"""Hessian-vector products of the LoRA objective of a linearized problem, in closed form.

:func:`lora_hvp` is the product (no Hessian is formed); :class:`LoRAHessianOperator` wraps it as a
symmetric :class:`~landscapes.operators.LinearOperator` on vectors in
:func:`~landscapes.curvature.vectors.flatten_factors` order, the input of the Lanczos and the
residual checks of every :math:`\lambda_{\min}` route.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from landscapes.curvature.vectors import flatten_factors, unflatten_factors
from landscapes.lora import check_factors, check_perturbation, product
from landscapes.operators import LinearOperator
from landscapes.problem import Blocks, Problem, RiskEvaluation

__all__ = ["lora_hvp", "LoRAHessianOperator"]


def lora_hvp(
    problem: Problem,
    U: Sequence[Tensor],
    V: Sequence[Tensor],
    dU: Sequence[Tensor],
    dV: Sequence[Tensor],
    *,
    perturbation: Sequence[Tensor] | None = None,
    evaluation: RiskEvaluation | None = None,
) -> tuple[Blocks, Blocks]:
    r"""Hessian-vector product of the LoRA objective, in closed form.

    With :math:`E_j = dU_j V_j^\top + U_j dV_j^\top`, :math:`S_j = \nabla_{D_j} L(UV^\top)` and
    :math:`H_L[E] = \operatorname{mat}(J^\top H_z J \operatorname{vec} E)` (:math:`H_z` the
    block-diagonal loss Hessians divided by ``N``):

    .. math:: \big(H_L[E]_j V_j + S_j\, dV_j + \lambda_j dU_j,\;
              H_L[E]_j^\top U_j + S_j^\top dU_j + \lambda_j dV_j\big).

    Costs one ``J`` product each way plus the gradient's; no Hessian is formed.  A perturbation
    adds :math:`C_j [dU_j; dV_j]`.  ``evaluation`` (``problem.evaluate(U V^T)``) may be passed to
    reuse it across products at the same point: then one product costs one ``J`` pass each way,
    about one gradient.
    """
    check_factors(problem, U, V)
    check_factors(problem, dU, dV)
    pert = check_perturbation(problem, perturbation)
    ev = evaluation if evaluation is not None else problem.evaluate(product(U, V))
    E = tuple(du @ v.T + u @ dv.T for u, v, du, dv in zip(U, V, dU, dV))
    dz = problem.J.matvec(problem.vec(E)).reshape(problem.N, problem.K)
    hz = problem.loss.hvp(ev.z, problem.y, dz) / problem.N
    HE = problem.unvec(problem.J.rmatvec(hz.reshape(-1)))
    outU = tuple(h @ v + S @ dv + lam * du for h, v, S, dv, du, lam in zip(HE, V, ev.S, dV, dU, problem.lam))
    outV = tuple(
        h.T @ u + S.T @ du + lam * dv for h, u, S, du, dv, lam in zip(HE, U, ev.S, dU, dV, problem.lam)
    )
    if pert is not None:
        CdR = [C @ torch.cat([du, dv], dim=0) for C, du, dv in zip(pert, dU, dV)]
        outU = tuple(o + c[: o.shape[0]] for o, c in zip(outU, CdR))
        outV = tuple(o + c[-o.shape[0] :] if o.shape[0] else o for o, c in zip(outV, CdR))
    return outU, outV


class LoRAHessianOperator(LinearOperator):
    """The LoRA Hessian at ``(U, V)`` as a symmetric operator (closed-form HVP); counts its products.

    The point's evaluation is computed once, so one product costs one ``J`` pass each way.
    """

    def __init__(
        self,
        problem: Problem,
        U: Sequence[Tensor],
        V: Sequence[Tensor],
        *,
        perturbation: Sequence[Tensor] | None = None,
    ) -> None:
        check_factors(problem, U, V)
        self.problem = problem
        self.U, self.V = tuple(U), tuple(V)
        self.perturbation = check_perturbation(problem, perturbation)
        # The point's risk evaluation (predictions, S) is shared by every product.
        self.evaluation = problem.evaluate(product(U, V))
        p = sum(u.numel() + v.numel() for u, v in zip(U, V))
        self.shape = (p, p)
        self.dtype = problem.dtype
        self.device = problem.device
        self.count = 0

    def _matvec(self, x: Tensor) -> Tensor:
        self.count += 1
        dU, dV = unflatten_factors(x, self.U, self.V)
        hU, hV = lora_hvp(
            self.problem, self.U, self.V, dU, dV, perturbation=self.perturbation, evaluation=self.evaluation
        )
        return flatten_factors(hU, hV)

    def _rmatvec(self, y: Tensor) -> Tensor:
        return self._matvec(y)

    def __repr__(self) -> str:
        return f"LoRAHessianOperator(n_params={self.shape[0]})"
