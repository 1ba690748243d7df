r"""Loss-landscape slices of the LoRA objective around a point.

A slice evaluates

.. math:: F\big((U, V) + \alpha\,(dU_1, dV_1) + \beta\,(dU_2, dV_2)\big),
          \qquad F(U, V) = L(UV^\top) + \tfrac{\lambda}{2}(\|U\|_F^2 + \|V\|_F^2),

on a grid of :math:`\alpha` (and :math:`\beta`), along directions that are random, the Hessian's
extreme eigenvectors (:func:`~landscapes.curvature.dense.hessian_directions`, part of this
module's API), or the straight line toward a global minimizer.

Directions are normalized so that a step of 1 is comparable across factors and blocks:

* ``"lora"`` (LoRA-aware, the default): each factor's direction is scaled to that factor's
  Frobenius norm, :math:`dU_j \leftarrow dU_j \|U_j\|_F / \|dU_j\|_F` (likewise :math:`dV_j`), so
  that :math:`\alpha = 1` moves every factor by its own size;
* ``"filter"``: the filter normalization of Li et al. (2018), column by column ("filters" of a
  factor are its ``r`` columns): :math:`dU_{:a} \leftarrow dU_{:a} \|U_{:a}\| / \|dU_{:a}\|`;
* ``"none"``: as given.

A factor (or column) that is zero keeps a zero direction under both normalizations (there is no
size to match), except that a zero point with ``"lora"`` keeps the raw direction, scaled to unit
norm per factor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from landscapes.curvature.dense import hessian_directions
from landscapes.lora import LoRAPoint, balanced_factors, check_factors, lora_value
from landscapes.problem import Problem
from theory.errors import InputTypeError, UserInputError

__all__ = [
    "Normalization",
    "normalize_direction",
    "random_direction",
    "hessian_directions",
    "toward",
    "slice_grid",
]

Normalization = Literal["lora", "filter", "none"]


def _scale_to(d: Tensor, ref: Tensor) -> Tensor:
    nd, nr = float(d.norm()), float(ref.norm())
    if nd == 0.0:
        return d.clone()
    return d * (nr / nd) if nr > 0.0 else d / nd


def _check_direction(point: LoRAPoint, direction: LoRAPoint, name: str) -> None:
    if len(direction.U) != len(point.U):
        raise UserInputError(f"{name}: expected {len(point.U)} blocks, got {len(direction.U)}")
    for j, (u, du, v, dv) in enumerate(zip(point.U, direction.U, point.V, direction.V)):
        if du.shape != u.shape or dv.shape != v.shape:
            raise UserInputError(
                f"{name}[{j}]: expected shapes {tuple(u.shape)}, {tuple(v.shape)}, "
                f"got {tuple(du.shape)}, {tuple(dv.shape)}"
            )


def normalize_direction(
    point: LoRAPoint, direction: LoRAPoint, *, normalization: Normalization = "lora"
) -> LoRAPoint:
    """Scale ``direction`` to the sizes of ``point`` (see the module docstring)."""
    if normalization not in ("lora", "filter", "none"):
        raise UserInputError(f"normalization: expected 'lora', 'filter' or 'none', got {normalization!r}")
    _check_direction(point, direction, "direction")
    if normalization == "none":
        return direction
    if normalization == "lora":
        return LoRAPoint(
            tuple(_scale_to(du, u) for u, du in zip(point.U, direction.U)),
            tuple(_scale_to(dv, v) for v, dv in zip(point.V, direction.V)),
        )

    def cols(d: Tensor, ref: Tensor) -> Tensor:
        nd = d.norm(dim=0)
        nr = ref.norm(dim=0)
        scale = torch.where(nd > 0, nr / torch.where(nd > 0, nd, torch.ones_like(nd)), torch.zeros_like(nd))
        return d * scale

    return LoRAPoint(
        tuple(cols(du, u) for u, du in zip(point.U, direction.U)),
        tuple(cols(dv, v) for v, dv in zip(point.V, direction.V)),
    )


def random_direction(point: LoRAPoint, *, generator: torch.Generator) -> LoRAPoint:
    """A Gaussian direction with the shapes of ``point`` (entries from ``generator``, float64 then cast)."""
    if not isinstance(generator, torch.Generator):
        raise InputTypeError(f"generator: expected a torch.Generator, got {type(generator).__name__}")

    def draw(x: Tensor) -> Tensor:
        return torch.randn(x.shape, generator=generator, dtype=torch.float64).to(
            dtype=x.dtype, device=x.device
        )

    return LoRAPoint(tuple(draw(u) for u in point.U), tuple(draw(v) for v in point.V))


def toward(point: LoRAPoint, target: Sequence[Tensor]) -> LoRAPoint:
    """The straight line from ``point`` to the balanced factors of ``target`` (e.g. a NUC minimizer).

    ``target`` is a point ``D`` (one matrix per block); its balanced factors are padded to the
    point's ranks, so ``alpha = 1`` lands exactly on a rank-``r`` factorization of ``D`` (when its
    rank is at most ``r``).
    """
    ranks = [int(u.shape[1]) for u in point.U]
    tgt = balanced_factors(target, rank=ranks)
    return LoRAPoint(
        tuple(t - u for t, u in zip(tgt.U, point.U)),
        tuple(t - v for t, v in zip(tgt.V, point.V)),
    )


def _axis(name: str, values: Sequence[float] | Tensor) -> list[float]:
    vals = [float(a) for a in (values.tolist() if isinstance(values, Tensor) else values)]
    if not vals or not all(torch.isfinite(torch.tensor(vals))):
        raise UserInputError(f"{name}: expected a non-empty sequence of finite numbers, got {values!r}")
    return vals


def slice_grid(
    problem: Problem,
    point: LoRAPoint,
    d1: LoRAPoint,
    d2: LoRAPoint | None = None,
    *,
    alphas: Sequence[float] | Tensor,
    betas: Sequence[float] | Tensor | None = None,
) -> Tensor:
    r""":math:`F(\text{point} + \alpha\, d_1 [+ \beta\, d_2])` on the grid of ``alphas`` (and ``betas``).

    Returns shape ``(len(alphas),)``, or ``(len(alphas), len(betas))`` with ``d2``.  Directions are
    used as given (normalize them first with :func:`normalize_direction`).
    """
    check_factors(problem, point.U, point.V)
    _check_direction(point, d1, "d1")
    if d2 is not None:
        _check_direction(point, d2, "d2")
        if betas is None:
            raise UserInputError("betas: expected a grid for the second direction d2, got None")
    a = _axis("alphas", alphas)
    b = _axis("betas", betas) if d2 is not None and betas is not None else None
    if b is None:
        out = torch.empty(len(a), dtype=torch.float64)
        for i, x in enumerate(a):
            U = [u + x * du for u, du in zip(point.U, d1.U)]
            V = [v + x * dv for v, dv in zip(point.V, d1.V)]
            out[i] = lora_value(problem, U, V)
        return out
    assert d2 is not None
    out = torch.empty(len(a), len(b), dtype=torch.float64)
    for i, x in enumerate(a):
        for k, y in enumerate(b):
            U = [u + x * du + y * eu for u, du, eu in zip(point.U, d1.U, d2.U)]
            V = [v + x * dv + y * ev for v, dv, ev in zip(point.V, d1.V, d2.V)]
            out[i, k] = lora_value(problem, U, V)
    return out
