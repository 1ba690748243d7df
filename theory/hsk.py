r"""The polynomial method's degree and rank in the regime of [HSK24] Thm 3.1, counted analytically.

The fast route of [HSK24] (after Alman and Song) replaces :math:`e^{x}`, :math:`|x| \le M`, by its
degree-``g`` Taylor polynomial; Lagrange's remainder bounds each entry's error by

.. math:: \operatorname{err}(M, g) = e^{M} \frac{M^{g+1}}{(g+1)!},

and the factorization of :math:`\exp(Q K^\top)` it gives has rank :math:`\binom{d+g}{g}` (the
monomials of degree at most ``g`` in ``d`` variables).  The theorem's regime is an accuracy
:math:`\varepsilon = 1/\mathrm{poly}(L)`, a head size :math:`d = O(\log L)` and an entry bound
:math:`\Gamma = o(\sqrt{\log L})` on :math:`Q` and :math:`K`.  The score bound is
:math:`M = \Gamma^2` when the scores are scaled by :math:`1/d` (Alman and Song's attention
:math:`\exp(QK^\top/d)`) and :math:`M = d\Gamma^2` without that scaling
(:math:`|\langle q, k\rangle| \le d\Gamma^2`).

:func:`taylor_degree` is the smallest ``g`` with :math:`\operatorname{err}(M, g) \le \varepsilon`
(exact search in logarithms), :func:`polynomial_method_table` tabulates degree and rank along
one concrete instance of the regime, e.g. :math:`\varepsilon = 1/L`, :math:`d = \lceil\ln L\rceil`,
:math:`\Gamma = (\ln L)^{0.4}`, and :func:`rank_crossover` finds the length from which that
rank stays below ``L`` (the point from which the factorization is cheaper than the
``L x L`` matrix).  Pure Python: ranks are exact integers (:func:`math.comb`), degrees come
from :func:`math.lgamma`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal

__all__ = [
    "log_taylor_error_bound",
    "taylor_degree",
    "PolynomialMethodRow",
    "polynomial_method_table",
    "rank_crossover",
    "far_crossover",
    "doubling_lengths",
]

MRule = Literal["gamma^2", "d*gamma^2"]


def _check_real(name: str, v: object, *, positive: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise ValueError(f"{name}: expected a finite number >= 0, got {v!r}")
    if positive and v <= 0:
        raise ValueError(f"{name}: expected a finite number > 0, got {v!r}")
    return float(v)


def log_taylor_error_bound(M: float, degree: int) -> float:
    r"""The natural log of Lagrange's bound :math:`e^M M^{g+1}/(g+1)!` (``-inf`` at ``M = 0``).

    In logarithms, :math:`M + (g+1)\ln M - \ln\Gamma(g+2)`, so it never overflows.
    """
    M = _check_real("M", M)
    if isinstance(degree, bool) or not isinstance(degree, int) or degree < 0:
        raise ValueError(f"degree: expected an int >= 0, got {degree!r}")
    if M == 0:
        return -math.inf
    return M + (degree + 1) * math.log(M) - math.lgamma(degree + 2)


def taylor_degree(M: float, *, log_eps: float) -> int:
    r"""The smallest degree ``g`` with :math:`e^M M^{g+1}/(g+1)! \le \varepsilon = e^{\text{log\_eps}}`.

    ``log_eps`` (:math:`\ln\varepsilon`, negative: :math:`0 < \varepsilon < 1`) is given as a
    logarithm so that accuracies like :math:`2^{-4096}` are representable.  For
    :math:`g + 1 \le M` the bound is at least :math:`e^M \ge 1 > \varepsilon`; from
    :math:`g + 2 \ge M` on it decreases (its ratio of consecutive terms is :math:`M/(g+2)`), so
    the answer is found by doubling and bisection on that decreasing stretch.
    """
    M = _check_real("M", M)
    if isinstance(log_eps, bool) or not isinstance(log_eps, (int, float)) or not log_eps < 0:
        raise ValueError(f"log_eps: expected ln(eps) < 0 (an accuracy eps in (0, 1)), got {log_eps!r}")
    if M == 0:
        return 0

    def ok(g: int) -> bool:
        return log_taylor_error_bound(M, g) <= log_eps

    lo = max(0, math.ceil(M) - 2)  # from here on the bound does not increase; below it, > 1
    if ok(lo):
        return lo
    step = 1
    while not ok(lo + step):
        step *= 2
    # ok(lo + step) holds, ok(lo + step // 2) does not (or step == 1): bisect between them
    bad, good = lo + step // 2 if step > 1 else lo, lo + step
    while good - bad > 1:
        mid = (bad + good) // 2
        if ok(mid):
            good = mid
        else:
            bad = mid
    return good


@dataclass(frozen=True)
class PolynomialMethodRow:
    r"""One length of :func:`polynomial_method_table`.

    ``log2_L`` and, where it was formed, the int ``L``; the accuracy as ``log2_eps``; ``d``;
    ``gamma``; the score bound ``M``; the smallest Taylor ``degree`` meeting the accuracy;
    ``log2_rank`` of :math:`\binom{d+g}{g}` (from :func:`math.lgamma`) and, where it was needed,
    the exact int ``rank``; ``rank_below_L`` whether ``rank < L``, decided in exact integers
    (``exact``) whenever the two are within 2 bits of each other and ``L`` was formed.
    """

    L: int | None
    log2_L: float
    log2_eps: float
    d: int
    gamma: float
    M: float
    degree: int
    rank: int | None
    log2_rank: float
    rank_below_L: bool
    exact: bool


def _log2_comb(n: int, k: int) -> float:
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / math.log(2)


def _row(
    L: int | None, log2_L: float, eps_power: float, d_factor: float, gamma_exponent: float,
    gamma_factor: float, m_rule: MRule,
) -> PolynomialMethodRow:
    ln_L = log2_L * math.log(2)
    d = max(1, math.ceil(d_factor * ln_L))
    gamma = gamma_factor * ln_L**gamma_exponent
    M = gamma * gamma * (d if m_rule == "d*gamma^2" else 1)
    g = taylor_degree(M, log_eps=-eps_power * ln_L)
    log2_rank = _log2_comb(d + g, g)
    rank: int | None = None
    exact = False
    if L is not None and (log2_rank < 256 or abs(log2_rank - log2_L) < 2):
        rank, exact = math.comb(d + g, g), True
        log2_rank = math.log2(rank)
        below = rank < L
    else:
        below = log2_rank < log2_L
    return PolynomialMethodRow(
        L=L, log2_L=log2_L, log2_eps=-eps_power * log2_L, d=d, gamma=gamma, M=M, degree=g,
        rank=rank, log2_rank=log2_rank, rank_below_L=below, exact=exact,
    )


def _check_regime(
    eps_power: float, d_factor: float, gamma_exponent: float, gamma_factor: float, m_rule: str
) -> tuple[float, float, float, float]:
    out = (
        _check_real("eps_power", eps_power, positive=True),
        _check_real("d_factor", d_factor, positive=True),
        _check_real("gamma_exponent", gamma_exponent),
        _check_real("gamma_factor", gamma_factor, positive=True),
    )
    if m_rule not in ("gamma^2", "d*gamma^2"):
        raise ValueError(f"m_rule: expected 'gamma^2' or 'd*gamma^2', got {m_rule!r}")
    return out


def polynomial_method_table(
    lengths: Sequence[int] = (),
    *,
    log2_lengths: Sequence[float] = (),
    eps_power: float = 1.0,
    d_factor: float = 1.0,
    gamma_exponent: float = 0.4,
    gamma_factor: float = 1.0,
    m_rule: MRule = "gamma^2",
) -> list[PolynomialMethodRow]:
    r"""Degree and rank of the polynomial method along one instance of [HSK24] Thm 3.1's regime.

    For each ``L``: :math:`\varepsilon = L^{-\text{eps\_power}}`,
    :math:`d = \max(1, \lceil \text{d\_factor} \cdot \ln L\rceil)`,
    :math:`\Gamma = \text{gamma\_factor} \cdot (\ln L)^{\text{gamma\_exponent}}`
    (``gamma_exponent < 1/2`` keeps :math:`\Gamma = o(\sqrt{\log L})`),
    :math:`M = \Gamma^2` (``m_rule="gamma^2"``, scores scaled by :math:`1/d`) or :math:`d\Gamma^2`
    (``"d*gamma^2"``), then :math:`g` = :func:`taylor_degree` and the rank :math:`\binom{d+g}{g}`.

    ``lengths`` are ints >= 2 (the rank is compared with ``L`` in exact integers where it is
    close); ``log2_lengths`` (floats >= 1) reach lengths too large to form, compared in logs.
    Rows come in the order given, ``lengths`` first.
    """
    ls, ks = list(lengths), list(log2_lengths)
    if not ls and not ks:
        raise ValueError("lengths, log2_lengths: expected at least one length")
    if any(isinstance(L, bool) or not isinstance(L, int) or L < 2 for L in ls):
        raise ValueError(f"lengths: expected ints >= 2, got {ls[:5]!r}")
    if any(isinstance(k, bool) or not isinstance(k, (int, float)) or not 1 <= k < math.inf for k in ks):
        raise ValueError(f"log2_lengths: expected finite numbers >= 1, got {ks[:5]!r}")
    regime = _check_regime(eps_power, d_factor, gamma_exponent, gamma_factor, m_rule)
    rows = [_row(L, math.log2(L), *regime, m_rule) for L in ls]
    return rows + [_row(None, float(k), *regime, m_rule) for k in ks]


def rank_crossover(rows: Sequence[PolynomialMethodRow]) -> PolynomialMethodRow | None:
    """The row of smallest ``L`` from which the rank is below ``L`` at every later row; else ``None``.

    Rows are taken in increasing ``L``; ``None`` when the last row's rank is still at least ``L``
    (no crossover within the table).  "Stays below" is checked on the rows given only.
    """
    ordered = sorted(rows, key=lambda r: r.log2_L)
    if not ordered:
        raise ValueError("rows: expected at least one row")
    found = None
    for row in reversed(ordered):
        if not row.rank_below_L:
            break
        found = row
    return found


def far_crossover(
    *,
    min_log2: int = 1,
    max_log2: int = 1 << 40,
    eps_power: float = 1.0,
    d_factor: float = 1.0,
    gamma_exponent: float = 0.4,
    gamma_factor: float = 1.0,
    m_rule: MRule = "gamma^2",
) -> tuple[PolynomialMethodRow | None, list[PolynomialMethodRow]]:
    r"""Where the rank falls below ``L`` for good, searched over :math:`\log_2 L` up to ``max_log2``.

    The scan takes :math:`\log_2 L = 2^j` (``min_log2 <= 2^j <= max_log2``, in logs), finds the
    last point whose rank is at least ``L`` and bisects on the integer :math:`\log_2 L` between it
    and the next point (assuming one crossing there).  Returns the crossover row (``None`` if the
    rank is still at least ``L`` at ``max_log2``) and the scanned rows.  Rounding ``d`` up makes
    the rank's ratio to ``L`` not monotone in ``L`` at small lengths (it can cross back and forth),
    so where ``L`` can be formed, :func:`rank_crossover` over the full doubling grid decides.
    """
    for name, v in (("min_log2", min_log2), ("max_log2", max_log2)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {v!r}")
    if max_log2 < min_log2:
        raise ValueError(f"max_log2: expected >= min_log2 = {min_log2}, got {max_log2}")
    table = partial(
        polynomial_method_table,
        eps_power=eps_power,
        d_factor=d_factor,
        gamma_exponent=gamma_exponent,
        gamma_factor=gamma_factor,
        m_rule=m_rule,
    )
    ks = sorted({min_log2, max_log2} | {1 << j for j in range(max_log2.bit_length()) if
                                        min_log2 <= 1 << j <= max_log2})
    rows = table(log2_lengths=ks)
    first = rank_crossover(rows)
    if first is None:
        return None, rows
    i = rows.index(first)
    if i == 0:
        return first, rows
    bad, good = int(rows[i - 1].log2_L), int(first.log2_L)
    best = first
    while good - bad > 1:
        mid = (bad + good) // 2
        (row,) = table(log2_lengths=[mid])
        if row.rank_below_L:
            good, best = mid, row
        else:
            bad = mid
    return best, rows


def doubling_lengths(max_log2: int, *, min_log2: int = 1) -> list[int]:
    """The doubling grid ``2^min_log2, ..., 2^max_log2``."""
    for name, v in (("min_log2", min_log2), ("max_log2", max_log2)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {v!r}")
    if max_log2 < min_log2:
        raise ValueError(f"max_log2: expected >= min_log2 = {min_log2}, got {max_log2}")
    return [1 << k for k in range(min_log2, max_log2 + 1)]
