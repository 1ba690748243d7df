r"""The LoRA objective of a linearized problem and its gradient (closed form).

.. math:: F(U, V) = L(U V^\top) + \tfrac{\lambda}{2}\left(\|U\|_F^2 + \|V\|_F^2\right),

block by block (``U_j`` is ``m_j x r_j``, ``V_j`` is ``n_j x r_j``; LoRA's ``B A`` is ``U V^T``).
With :math:`S_j = \nabla_{D_j} L(UV^\top)` the gradient is
:math:`(S_j V_j + \lambda_j U_j,\; S_j^\top U_j + \lambda_j V_j)`.  Because
:math:`\min_{UV^\top = D} (\|U\|_F^2 + \|V\|_F^2)/2 = \|D\|_*`, the minimum of ``F`` equals the NUC
minimum once ``r_j`` is at least the rank of a NUC minimizer [JLR24].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from landscapes.problem import Blocks, Problem

__all__ = ["LoRAPoint", "lora_value", "lora_value_and_grad", "balanced_factors", "product"]


@dataclass(frozen=True)
class LoRAPoint:
    """LoRA factors, one ``(U_j, V_j)`` pair per block; ``D_j = U_j V_j^T``."""

    U: Blocks
    V: Blocks

    @property
    def ranks(self) -> tuple[int, ...]:
        """Number of columns of each factor pair (the LoRA rank per block)."""
        return tuple(int(u.shape[1]) for u in self.U)


def _check_factors(problem: Problem, U: Sequence[Tensor], V: Sequence[Tensor]) -> None:
    if len(U) != len(problem.blocks) or len(V) != len(problem.blocks):
        raise ValueError(
            f"U, V: expected {len(problem.blocks)} factor pairs (one per block), got {len(U)} and {len(V)}"
        )
    for j, ((m, n), u, v) in enumerate(zip(problem.blocks, U, V)):
        if u.ndim != 2 or v.ndim != 2 or u.shape[0] != m or v.shape[0] != n or u.shape[1] != v.shape[1]:
            raise ValueError(
                f"U[{j}], V[{j}]: expected shapes ({m}, r) and ({n}, r) with the same r, "
                f"got {tuple(u.shape)} and {tuple(v.shape)}"
            )
        if u.shape[1] < 1:
            raise ValueError(f"U[{j}]: expected rank r >= 1, got r = {u.shape[1]}")


def product(U: Sequence[Tensor], V: Sequence[Tensor]) -> Blocks:
    """``D_j = U_j V_j^T`` for each block."""
    return tuple(u @ v.T for u, v in zip(U, V))


def lora_value(problem: Problem, U: Sequence[Tensor], V: Sequence[Tensor]) -> float:
    """The LoRA objective ``F(U, V)``."""
    _check_factors(problem, U, V)
    reg = sum(0.5 * lam * (float((u * u).sum()) + float((v * v).sum())) for lam, u, v in zip(problem.lam, U, V))
    return problem.risk(product(U, V)) + reg


def lora_value_and_grad(
    problem: Problem, U: Sequence[Tensor], V: Sequence[Tensor]
) -> tuple[float, Blocks, Blocks]:
    r"""``F(U, V)`` and its gradient :math:`(S_j V_j + \lambda_j U_j, S_j^\top U_j + \lambda_j V_j)`."""
    _check_factors(problem, U, V)
    ev = problem.evaluate(product(U, V))
    reg = 0.0
    gU, gV = [], []
    for lam, u, v, S in zip(problem.lam, U, V, ev.S):
        reg += 0.5 * lam * (float((u * u).sum()) + float((v * v).sum()))
        gU.append(S @ v + lam * u)
        gV.append(S.T @ u + lam * v)
    return ev.value + reg, tuple(gU), tuple(gV)


def balanced_factors(D: Sequence[Tensor], *, rank: int | Sequence[int] | None = None) -> LoRAPoint:
    r"""Balanced factors of ``D``: with :math:`D = P \Sigma Q^\top`, ``U = P Sigma^{1/2}``, ``V = Q Sigma^{1/2}``.

    They satisfy :math:`U^\top U = V^\top V = \Sigma` and
    :math:`(\|U\|_F^2 + \|V\|_F^2)/2 = \|D\|_*`.  ``rank`` pads with zero columns (or truncates)
    to ``r`` columns per block; by default the numerical rank is kept.
    """
    Us, Vs = [], []
    ranks = [rank] * len(D) if (rank is None or isinstance(rank, int)) else list(rank)
    for j, Dj in enumerate(D):
        P, s, Qh = torch.linalg.svd(Dj, full_matrices=False)
        tol = 1e-12 * float(s[0]) if s.numel() and float(s[0]) > 0 else 0.0
        k = int((s > tol).sum()) if float(s[0] if s.numel() else 0) > 0 else 0
        r = ranks[j] if ranks[j] is not None else max(k, 1)
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise ValueError(f"rank: expected a positive int, got {r!r}")
        kk = min(k, r)
        root = s[:kk].sqrt()
        u = torch.zeros(Dj.shape[0], r, dtype=Dj.dtype, device=Dj.device)
        v = torch.zeros(Dj.shape[1], r, dtype=Dj.dtype, device=Dj.device)
        u[:, :kk] = P[:, :kk] * root
        v[:, :kk] = Qh[:kk].T * root
        Us.append(u)
        Vs.append(v)
    return LoRAPoint(tuple(Us), tuple(Vs))
