r"""What every :math:`\lambda_{\min}` route returns, and the checks the routes share.

:class:`LambdaMin` holds the estimate, the interval, the residual and the cost;
:func:`rayleigh_residual` is the closing check of every route (one HVP: the Rayleigh quotient of
the returned vector and :math:`\|Hv - \theta v\|`); :func:`check_route_input` and
:func:`check_exclude` validate a route's point and the directions it leaves out (gauge
directions); :func:`gradient_seconds` is the unit of cost, :func:`route_cost` a route's cost in it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from landscapes.lora import check_factors, check_finite_factors, check_perturbation, lora_value_and_grad
from landscapes.operators import LinearOperator
from landscapes.problem import Blocks, Problem
from theory.errors import UserInputError

__all__ = [
    "LambdaMin",
    "gradient_seconds",
    "rayleigh_residual",
    "check_exclude",
    "check_route_input",
    "route_cost",
]


@dataclass(frozen=True)
class LambdaMin:
    r"""The smallest Hessian eigenvalue at a point, with its evidence and cost.

    Attributes
    ----------
    value
        The estimate :math:`\theta`.
    lower, upper
        ``structured``/``dense``: :math:`\lambda_{\min} \in [\text{lower}, \text{upper}]`
        (``lower`` from an inertia count or from ``eigh``'s backward error, ``upper`` a Rayleigh
        quotient).  ``lanczos``: ``upper`` is a Rayleigh quotient; ``lower = theta - residual``
        only bounds *an* eigenvalue (``lower_is_rigorous = False``).
    residual
        :math:`\|H v - \theta v\|` for the returned unit vector ``v``, computed with the
        closed-form HVP.
    lambda_max
        An upper bound (structured, dense) or estimate (lanczos) of the largest eigenvalue, the
        scale of the curvature tolerance.
    vector
        The unit eigenvector, flattened in :func:`flatten_factors` order.
    matvecs
        Cost in Hessian-vector products; the structured route counts its pass over the rows of
        ``J`` (building ``Phi`` costs about ``K N p r`` flops, an HVP ``2 K N p``) as ``r / 2``
        HVPs, plus the one HVP of the residual.
    gradient_multiple
        ``seconds`` divided by the time of one gradient of the LoRA objective at this point.
    """

    value: float
    lower: float
    upper: float
    residual: float
    lambda_max: float
    method: str
    lower_is_rigorous: bool
    converged: bool
    matvecs: int
    seconds: float
    gradient_multiple: float
    n_params: int
    vector: Tensor = field(repr=False)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def width(self) -> float:
        """``upper - lower``."""
        return self.upper - self.lower

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (the vector is omitted)."""
        return {
            "value": self.value,
            "lower": self.lower,
            "upper": self.upper,
            "residual": self.residual,
            "lambda_max": self.lambda_max,
            "method": self.method,
            "lower_is_rigorous": self.lower_is_rigorous,
            "converged": self.converged,
            "matvecs": self.matvecs,
            "seconds": self.seconds,
            "gradient_multiple": self.gradient_multiple,
            "n_params": self.n_params,
            **{k: v for k, v in self.meta.items() if isinstance(v, (int, float, str, bool))},
        }


def gradient_seconds(
    problem: Problem,
    U: Sequence[Tensor],
    V: Sequence[Tensor],
    *,
    perturbation: Sequence[Tensor] | None = None,
    repeats: int = 5,
) -> float:
    """Median wall time of one LoRA objective-and-gradient evaluation (the unit of cost)."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        lora_value_and_grad(problem, U, V, perturbation=perturbation)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def rayleigh_residual(op: LinearOperator, v: Tensor, *, exclude: Tensor | None = None) -> tuple[float, float]:
    r"""Rayleigh quotient and residual norm of the unit vector ``v`` (one HVP).

    :math:`\theta = v^\top H v` and :math:`\|Hv - \theta v\|`, ``H`` the operator ``op``.  With
    ``exclude`` (orthonormal columns ``G``, ``v`` orthogonal to them) the residual is that of the
    compressed operator, :math:`\|(I - GG^\top) H v - \theta v\|`.
    """
    Hv = op.matvec(v)
    theta = float(v @ Hv)
    if exclude is not None and exclude.shape[1] > 0:
        Hv = Hv - exclude @ (exclude.T @ Hv)
    return theta, float((Hv - theta * v).norm())


def check_exclude(exclude: Tensor | None, P: int, like: Tensor) -> Tensor | None:
    """Validate directions to leave out: ``None`` or ``(P, t)`` orthonormal columns of ``like``'s dtype."""
    if exclude is None:
        return None
    if not isinstance(exclude, Tensor) or exclude.ndim != 2 or exclude.shape[0] != P:
        got = tuple(exclude.shape) if isinstance(exclude, Tensor) else type(exclude).__name__
        raise UserInputError(f"exclude: expected a ({P}, t) tensor of orthonormal columns, got {got}")
    if exclude.dtype != like.dtype:
        raise UserInputError(f"exclude: expected dtype {like.dtype}, got {exclude.dtype}")
    t = exclude.shape[1]
    if t:
        eye = torch.eye(t, dtype=exclude.dtype, device=exclude.device)
        err = float((exclude.T @ exclude - eye).abs().max())
        if err > 1e-8:
            raise UserInputError(f"exclude: expected orthonormal columns, got |G^T G - I|_max = {err:.2e}")
    return exclude


def check_route_input(
    problem: Problem, U: Sequence[Tensor], V: Sequence[Tensor], perturbation: Sequence[Tensor] | None
) -> Blocks | None:
    """Validate a route's point (factors of the problem's shapes, finite); return the checked perturbation."""
    check_factors(problem, U, V)
    check_finite_factors(U, V)
    return check_perturbation(problem, perturbation)


def route_cost(
    problem: Problem,
    U: Sequence[Tensor],
    V: Sequence[Tensor],
    perturbation: Blocks | None,
    t0: float,
    t_grad: float | None,
) -> tuple[float, float]:
    """Seconds since ``t0``, and them as a multiple of one gradient (``t_grad``, measured when ``None``)."""
    seconds = time.perf_counter() - t0
    tg = t_grad if t_grad is not None else gradient_seconds(problem, U, V, perturbation=perturbation)
    return seconds, seconds / max(tg, 1e-12)
