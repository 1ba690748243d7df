r"""Curvature of the LoRA objective: every HVP, dense Hessian and :math:`\lambda_{\min}` route, in one room.

Linearized problems (closed form).  The Hessian of the (optionally perturbed) LoRA objective
splits as

.. math:: H = M + W W^\top, \qquad M = \bigoplus_j (Y_j \otimes I_{r_j}), \qquad
          W W^\top = \tfrac1N \Phi^\top H_z \Phi,

with :math:`Y_j` the ``(m_j + n_j)``-square column-pair matrix (eigenvalues
:math:`\lambda_j \pm \sigma_i(S_j)` and :math:`\lambda_j` when unperturbed) and ``W`` of rank at
most ``K N``.

* :mod:`~landscapes.curvature.vectors` -- the parameter order (:func:`flatten_factors`).
* :mod:`~landscapes.curvature.hvp` -- the closed-form HVP (:func:`lora_hvp`,
  :class:`LoRAHessianOperator`).
* :mod:`~landscapes.curvature.dense` -- the closed-form dense Hessian (:func:`lora_hessian`, its
  terms :func:`column_pair_matrix` and :func:`loss_hessian_blocks`), its extreme eigenvectors
  (:func:`hessian_directions`) and the ``eigh`` route :func:`lambda_min_dense`.
* :mod:`~landscapes.curvature.certificate` -- :class:`LambdaMin`, what every route returns.
* :mod:`~landscapes.curvature.structured` -- :func:`lambda_min_structured`, both ends certified
  by an inertia count (the default).
* :mod:`~landscapes.curvature.lanczos` -- :func:`lambda_min_lanczos` (ARPACK on the HVP).
* :mod:`~landscapes.curvature.routes` -- :func:`lambda_min`, which picks one of the three.
* :mod:`~landscapes.curvature.autodiff` -- the same Hessian by autodiff from the objective's
  definition (:func:`lora_hessian_dense`, :class:`AutodiffHessian`): an independent reference.

Non-linearized problems (autodiff): :mod:`~landscapes.curvature.nonlinear` --
:func:`nonlinear_hvp`, :func:`nonlinear_hessian`, :func:`lambda_min_lora`.
"""

from landscapes.curvature.autodiff import AutodiffHessian, lora_hessian_dense, objective_function
from landscapes.curvature.certificate import LambdaMin, gradient_seconds
from landscapes.curvature.dense import (
    column_pair_matrix,
    hessian_directions,
    lambda_min_dense,
    lora_hessian,
    loss_hessian_blocks,
)
from landscapes.curvature.hvp import LoRAHessianOperator, lora_hvp
from landscapes.curvature.lanczos import lambda_min_lanczos, smallest_ritz_pair
from landscapes.curvature.nonlinear import lambda_min_lora, nonlinear_hessian, nonlinear_hvp
from landscapes.curvature.routes import Method, lambda_min
from landscapes.curvature.structured import lambda_min_structured
from landscapes.curvature.vectors import flatten_factors, unflatten_factors

__all__ = [
    "AutodiffHessian",
    "lora_hessian_dense",
    "objective_function",
    "LambdaMin",
    "LoRAHessianOperator",
    "lambda_min",
    "Method",
    "lambda_min_structured",
    "lambda_min_lanczos",
    "lambda_min_dense",
    "gradient_seconds",
    "flatten_factors",
    "unflatten_factors",
    "lora_hvp",
    "lora_hessian",
    "column_pair_matrix",
    "loss_hessian_blocks",
    "hessian_directions",
    "smallest_ritz_pair",
    "nonlinear_hvp",
    "nonlinear_hessian",
    "lambda_min_lora",
]
