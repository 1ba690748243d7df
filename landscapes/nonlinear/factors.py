r"""LoRA factors of a non-linearized problem, and the columns that are exactly zero.

:class:`Factors` holds :math:`X_j = A_j B_j^\top`.  A column ``c`` with :math:`A_j[:, c] = 0` and
:math:`B_j[:, c] = 0` (:func:`inactive_columns`) moves :math:`X_j` only at second order: the
objective restricted to the other columns (:func:`reduce_columns`) is the objective of the
smaller factors, and a result on them is put back with :func:`embed_columns`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from landscapes.nonlinear.problems import Blocks, NonlinearProblem
from theory.errors import UserInputError

__all__ = ["Factors", "check_factors", "inactive_columns", "reduce_columns", "embed_columns"]


@dataclass(frozen=True)
class Factors:
    """LoRA factors of a non-linearized problem: ``X_j = A_j B_j^T``, A_j of shape (m_j, r)."""

    A: Blocks
    B: Blocks


def check_factors(problem: NonlinearProblem, f: Factors) -> None:
    """Raise ``ValueError`` unless ``f`` has one finite pair ``A_j (m_j, r)``, ``B_j (n_j, r)`` per block."""
    if len(f.A) != len(problem.blocks) or len(f.B) != len(problem.blocks):
        raise UserInputError(
            f"factors: expected {len(problem.blocks)} (A, B) pairs, got {len(f.A)} and {len(f.B)}"
        )
    for j, ((m, n), a, b) in enumerate(zip(problem.blocks, f.A, f.B)):
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != m or b.shape[0] != n or a.shape[1] != b.shape[1]:
            raise UserInputError(
                f"factors[{j}]: expected A ({m}, r) and B ({n}, r) with the same r, "
                f"got {tuple(a.shape)} and {tuple(b.shape)}"
            )
        if not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all())):
            raise UserInputError(f"factors[{j}]: expected finite entries, got NaN or inf")


def inactive_columns(point: Factors) -> tuple[tuple[int, ...], ...]:
    """Per block, the columns ``c`` with ``A_j[:, c] = 0`` and ``B_j[:, c] = 0`` exactly."""
    out = []
    for a, b in zip(point.A, point.B):
        zero = ~(a.ne(0).any(dim=0) | b.ne(0).any(dim=0))
        out.append(tuple(int(c) for c in torch.nonzero(zero).flatten()))
    return tuple(out)


def reduce_columns(point: Factors, zero: Sequence[Sequence[int]]) -> tuple[list[list[int]], Factors]:
    """The columns kept per block (all but ``zero``) and the factors restricted to them."""
    keep = [[c for c in range(a.shape[1]) if c not in z] for a, z in zip(point.A, zero)]
    reduced = Factors(
        tuple(a[:, k] for a, k in zip(point.A, keep)), tuple(b[:, k] for b, k in zip(point.B, keep))
    )
    return keep, reduced


def embed_columns(reduced: Factors, keep: Sequence[Sequence[int]], like: Factors) -> Factors:
    """``reduced`` put back in the columns ``keep`` of factors shaped like ``like``; zeros elsewhere."""
    A = [torch.zeros(a.shape, dtype=r.dtype, device=r.device) for a, r in zip(like.A, reduced.A)]
    B = [torch.zeros(b.shape, dtype=r.dtype, device=r.device) for b, r in zip(like.B, reduced.B)]
    for j, k in enumerate(keep):
        A[j][:, k] = reduced.A[j]
        B[j][:, k] = reduced.B[j]
    return Factors(tuple(A), tuple(B))
