r"""One entry to :math:`\lambda_{\min}` of the LoRA Hessian of a linearized problem: pick a route.

``"structured"`` (:mod:`landscapes.curvature.structured`, the default where ``J`` gives cheap
factor products) certifies both ends by an inertia count; ``"lanczos"``
(:mod:`landscapes.curvature.lanczos`) needs only HVPs and bounds one end; ``"dense"``
(:mod:`landscapes.curvature.dense`) is the ``eigh`` oracle on small sizes.  Each returns a
:class:`~landscapes.curvature.certificate.LambdaMin`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from torch import Tensor

from landscapes.curvature.certificate import LambdaMin
from landscapes.curvature.dense import lambda_min_dense
from landscapes.curvature.lanczos import lambda_min_lanczos
from landscapes.curvature.structured import lambda_min_structured
from landscapes.problem import Problem
from theory.errors import UserInputError

__all__ = ["Method", "lambda_min"]

Method = Literal["structured", "lanczos", "dense"]


def lambda_min(
    problem: Problem,
    U: Sequence[Tensor],
    V: Sequence[Tensor],
    *,
    method: Method | Literal["auto"] = "auto",
    perturbation: Sequence[Tensor] | None = None,
    **options: Any,
) -> LambdaMin:
    """Dispatch to one route.

    ``"auto"`` is ``"structured"`` when ``J`` gives cheap factor products (a stored ``J``, an
    encoder's operator form), else ``"lanczos"``.  Every route takes ``exclude`` (orthonormal
    directions to leave out, e.g. :func:`landscapes.gauge.gauge_basis`).
    """
    if method == "auto":
        method = "structured" if getattr(problem.J, "cheap_factor_products", False) else "lanczos"
    if method == "structured":
        return lambda_min_structured(problem, U, V, perturbation=perturbation, **options)
    if method == "lanczos":
        return lambda_min_lanczos(problem, U, V, perturbation=perturbation, **options)
    if method == "dense":
        return lambda_min_dense(problem, U, V, perturbation=perturbation, **options)
    raise UserInputError(f"method: expected 'auto', 'structured', 'lanczos' or 'dense', got {method!r}")
