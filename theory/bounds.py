"""Rank bounds of the NTK-regime LoRA theory [JLR24].

The loss of a linearized model depends on an adapted weight ``D`` only through the ``K N`` numbers
``J vec(D)``.  Among all ``D`` with the same predictions, one of minimal nuclear norm solves an SDP
with ``K N`` equality constraints, and the Barvinok--Pataki theorem gives such a solution of rank
``r`` with ``r (r + 1) / 2 <= K N``.  With several adapted matrices (blocks) the same argument on
the block-diagonal SDP gives ``sum_j r_j (r_j + 1) / 2 <= K N``.  The no-spurious guarantee is
per block instead (:func:`ranks_above_bound`).

Pure Python: no torch here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from theory.errors import UserInputError, nonnegative_int, positive_int

__all__ = [
    "r_max",
    "triangular",
    "rank_within_bound",
    "ranks_within_bound",
    "rank_above_bound",
    "ranks_above_bound",
]


def triangular(r: int) -> int:
    r"""Return :math:`r (r + 1) / 2`, the dimension of the symmetric :math:`r \times r` matrices."""
    r = nonnegative_int("r", r)
    return r * (r + 1) // 2


def r_max(K: int, N: int) -> int:
    r"""Largest rank allowed by the Barvinok--Pataki bound.

    .. math:: r_{\max}(K, N) = \max\{r : r (r + 1) / 2 \le K N\}
              = \left\lfloor \frac{\sqrt{8 K N + 1} - 1}{2} \right\rfloor .

    Computed in exact integer arithmetic (``math.isqrt``), so it is right for every size.

    >>> r_max(2, 32)   # the paper's K = 2, N = 32: KN = 64
    10
    >>> r_max(1, 1)
    1
    """
    K = positive_int("K", K)
    N = positive_int("N", N)
    r = (math.isqrt(8 * K * N + 1) - 1) // 2
    # isqrt is exact; the asserts document the defining property.
    assert triangular(r) <= K * N < triangular(r + 1)
    return r


def rank_within_bound(r: int, K: int, N: int) -> bool:
    """``True`` when ``r (r + 1) / 2 <= K N`` (the rank of the low-rank solution the theory promises)."""
    return triangular(nonnegative_int("r", r)) <= positive_int("K", K) * positive_int("N", N)


def rank_above_bound(r: int, K: int, N: int) -> bool:
    """``True`` when ``r (r + 1) / 2 > K N``: the regime of the no-spurious-minima claim of [JLR24]."""
    return not rank_within_bound(r, K, N)


def ranks_within_bound(ranks: Sequence[int], K: int, N: int) -> bool:
    """Block form of the bound: ``sum_j r_j (r_j + 1) / 2 <= K N``."""
    if len(ranks) == 0:
        raise UserInputError("ranks: expected at least one block rank, got an empty sequence")
    total = sum(triangular(nonnegative_int(f"ranks[{i}]", r)) for i, r in enumerate(ranks))
    return total <= positive_int("K", K) * positive_int("N", N)


def ranks_above_bound(ranks: Sequence[int], K: int, N: int) -> bool:
    r"""The no-spurious hypothesis of [JLR24], several blocks: :math:`r_j(r_j+1)/2 > KN` for *every* ``j``.

    Not the sum.  At a critical point the generic-perturbation argument bounds
    :math:`\sum_j k_j(k_j+1)/2 \le KN` over the *actual* ranks :math:`k_j` of the stacked factors
    :math:`[U_j; V_j]`, so one block can stay at full rank :math:`k_j = r_j` while another collapses.
    Only when every block's own :math:`r_j(r_j+1)/2` exceeds :math:`KN` is every block
    rank-deficient at a second-order stationary point, and a point rank-deficient in every block is
    global (the Burer--Monteiro lemma applied block by block).  The *existence* of a low-rank NUC
    minimizer (:func:`ranks_within_bound`, JLR-rank-blocks) keeps the sum form.  With one block the
    two forms are complements of each other.

    >>> ranks_above_bound([11, 11], 2, 32)   # the paper's W_q, W_v at K = 2, N = 32
    True
    >>> ranks_above_bound([7, 1], 1, 20)     # sum 29 > 20, but block 2 is below
    False
    """
    if len(ranks) == 0:
        raise UserInputError("ranks: expected at least one block rank, got an empty sequence")
    KN = positive_int("K", K) * positive_int("N", N)
    return all(triangular(nonnegative_int(f"ranks[{i}]", r)) > KN for i, r in enumerate(ranks))
