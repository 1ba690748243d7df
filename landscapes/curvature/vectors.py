"""The parameter order of every Hessian in this room: the factors flattened block by block.

Block ``j`` contributes ``vec(U_j)`` then ``vec(V_j)`` (row-major), the order of
:func:`landscapes.lora.minimize_lora`; for a non-linearized problem ``(A_j, B_j)`` take the place
of ``(U_j, V_j)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from landscapes.problem import Blocks
from theory.errors import UserInputError

__all__ = ["flatten_factors", "unflatten_factors"]


def flatten_factors(U: Sequence[Tensor], V: Sequence[Tensor]) -> Tensor:
    """Concatenate ``vec(U_j), vec(V_j)`` block by block (row-major): the order of the Hessian."""
    return torch.cat([torch.cat([u.reshape(-1), v.reshape(-1)]) for u, v in zip(U, V)])


def unflatten_factors(x: Tensor, like_U: Sequence[Tensor], like_V: Sequence[Tensor]) -> tuple[Blocks, Blocks]:
    """Inverse of :func:`flatten_factors` for factors shaped like ``like_U``, ``like_V``."""
    U, V, k = [], [], 0
    for u, v in zip(like_U, like_V):
        U.append(x[k : k + u.numel()].reshape(u.shape))
        k += u.numel()
        V.append(x[k : k + v.numel()].reshape(v.shape))
        k += v.numel()
    if k != x.numel():
        raise UserInputError(f"x: expected {k} entries, got {x.numel()}")
    return tuple(U), tuple(V)
