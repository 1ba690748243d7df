"""Curvature of the LoRA objective: Hessian-vector products and certified smallest eigenvalues."""

from landscapes.curvature.lora import (
    LambdaMin,
    LoRAHessianOperator,
    flatten_factors,
    gradient_seconds,
    lambda_min,
    lambda_min_dense,
    lambda_min_lanczos,
    lambda_min_structured,
    unflatten_factors,
)

__all__ = [
    "LambdaMin",
    "LoRAHessianOperator",
    "lambda_min",
    "lambda_min_structured",
    "lambda_min_lanczos",
    "lambda_min_dense",
    "gradient_seconds",
    "flatten_factors",
    "unflatten_factors",
]
