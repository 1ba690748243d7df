r"""The LoRA objective's Hessian by autodiff, from its definition: an independent reference.

:func:`objective_function` writes the objective afresh,

.. math:: F(U, V) = \frac1N\sum_i \ell\big(f_0 + J\operatorname{vec}(U_jV_j^\top), y_i\big)
          + \sum_j \frac{\lambda_j}2\big(\|U_j\|_F^2 + \|V_j\|_F^2\big),

sharing no code with the closed-form Hessian of :mod:`landscapes.curvature.dense` and
:mod:`landscapes.curvature.hvp`; :func:`lora_hessian_dense` differentiates it twice
(``torch.func.hessian``, small sizes), and :class:`AutodiffHessian` gives its Hessian-vector
products (``jvp`` of ``grad``, about two gradients each).  Variable order: for each block
``vec(U_j)`` then ``vec(V_j)`` (row-major).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from landscapes.operators import LinearOperator
from landscapes.problem import Problem

__all__ = ["AutodiffHessian", "lora_hessian_dense", "objective_function"]


def objective_function(
    problem: Problem, U: Sequence[Tensor], V: Sequence[Tensor]
) -> tuple[Callable[[Tensor], Tensor], Tensor]:
    """The LoRA objective of the flat factors, written from its definition (not the closed forms)."""
    sizes = [(u.shape, v.shape) for u, v in zip(U, V)]
    x0 = torch.cat([torch.cat([u.reshape(-1), v.reshape(-1)]) for u, v in zip(U, V)])

    def f(x: Tensor) -> Tensor:
        k, Ds, reg = 0, [], x.new_zeros(())
        for (su, sv), lam in zip(sizes, problem.lam):
            nu, nv = su[0] * su[1], sv[0] * sv[1]
            u = x[k : k + nu].reshape(su)
            v = x[k + nu : k + nu + nv].reshape(sv)
            k += nu + nv
            Ds.append(u @ v.T)
            reg = reg + 0.5 * lam * ((u * u).sum() + (v * v).sum())
        z = problem.f0 + problem.J.matvec(torch.cat([d.reshape(-1) for d in Ds])).reshape(
            problem.N, problem.K
        )
        return problem.loss.value(z, problem.y).mean() + reg

    return f, x0


def lora_hessian_dense(problem: Problem, U: Sequence[Tensor], V: Sequence[Tensor]) -> Tensor:
    """Dense Hessian of the LoRA objective by autodiff (``torch.func.hessian``); small sizes only.

    Variable order: for each block, ``vec(U_j)`` then ``vec(V_j)`` (row-major).
    """
    f, x0 = objective_function(problem, U, V)
    return torch.func.hessian(f)(x0)


class AutodiffHessian(LinearOperator):
    r"""The Hessian of the LoRA objective as an operator, by autodiff (``jvp`` of ``grad``).

    The objective is written from its definition (:func:`lora_hessian_dense`'s function), so its
    products share no code with the closed-form HVP of :mod:`landscapes.curvature.hvp`; one product costs
    about two gradients.
    """

    def __init__(self, problem: Problem, U: Sequence[Tensor], V: Sequence[Tensor]) -> None:
        f, self.x0 = objective_function(problem, U, V)
        self.grad = torch.func.grad(f)
        P = int(self.x0.numel())
        self.shape = (P, P)
        self.dtype, self.device = self.x0.dtype, self.x0.device
        self.count = 0

    def _matvec(self, x: Tensor) -> Tensor:
        self.count += 1
        return torch.func.jvp(self.grad, (self.x0,), (x,))[1]

    def _rmatvec(self, y: Tensor) -> Tensor:
        return self._matvec(y)
