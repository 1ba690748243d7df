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
(a search in logarithms: :func:`math.lgamma` where its rounding error cannot change the
comparison, 60-digit decimals otherwise), :func:`polynomial_method_table` tabulates degree and
rank along one concrete instance of the regime, e.g. :math:`\varepsilon = 1/L`,
:math:`d = \lceil\ln L\rceil`, :math:`\Gamma = (\ln L)^{0.4}`, and :func:`rank_crossover` /
:func:`far_crossover` find the length from which that rank stays below ``L`` (the point from
which the factorization is cheaper than the ``L x L`` matrix).  Pure Python: ranks are exact
integers (:func:`math.comb`) where ``L`` can be formed, else compared in logarithms (decimals
where the two are within the floats' rounding error).
"""

from __future__ import annotations

import decimal
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal

from theory.errors import UserInputError
from theory.search import bisect_boundary

__all__ = [
    "log_taylor_error_bound",
    "taylor_degree",
    "PolynomialMethodRow",
    "polynomial_method_table",
    "rank_crossover",
    "far_crossover",
    "FarCrossover",
    "doubling_lengths",
]

MRule = Literal["gamma^2", "d*gamma^2"]


def _check_real(name: str, v: object, *, positive: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise UserInputError(f"{name}: expected a finite number >= 0, got {v!r}")
    if positive and v <= 0:
        raise UserInputError(f"{name}: expected a finite number > 0, got {v!r}")
    return float(v)


_BIG = 1e200  # score bounds and |ln eps| above this overflow the float search
_DEC = decimal.Context(prec=60, Emax=10**9, Emin=-(10**9))
_PI = decimal.Decimal("3.14159265358979323846264338327950288419716939937510582097494")
_LN2PI = _DEC.ln(_DEC.multiply(2, _PI))


def _ln_factorial(n: int) -> decimal.Decimal:
    """``ln n!`` to about 55 digits: exact factorial below 2000, Stirling's series (error < n^-9) above."""
    c = _DEC
    if n < 2000:
        return c.ln(decimal.Decimal(math.factorial(n)))
    x = decimal.Decimal(n)
    s = c.subtract(c.multiply(x, c.ln(x)), x)
    s = c.add(s, c.divide(c.add(_LN2PI, c.ln(x)), 2))
    for num, den, p in ((1, 12, 1), (-1, 360, 3), (1, 1260, 5), (-1, 1680, 7)):
        s = c.add(s, c.divide(num, c.multiply(den, c.power(x, p))))
    return s


def _log_bound_exceeds(M: float, degree: int, log_eps: float) -> bool:
    """Whether ``M + (g+1) ln M - ln (g+1)! > log_eps``: floats where decisive, decimals otherwise."""
    lm = math.log(M)
    lb = M + (degree + 1) * lm - math.lgamma(degree + 2)
    scale = M + (degree + 1) * abs(lm) + math.lgamma(degree + 2) + abs(log_eps) + 1.0
    if abs(lb - log_eps) > 1e-12 * scale:
        return lb > log_eps
    c = _DEC
    dm = decimal.Decimal(M)
    exact = c.subtract(c.add(dm, c.multiply(degree + 1, c.ln(dm))), _ln_factorial(degree + 1))
    return exact > decimal.Decimal(log_eps)


def log_taylor_error_bound(M: float, degree: int) -> float:
    r"""The natural log of Lagrange's bound :math:`e^M M^{g+1}/(g+1)!` (``-inf`` at ``M = 0``).

    In logarithms, :math:`M + (g+1)\ln M - \ln\Gamma(g+2)`, so it never overflows; a float
    (its terms cancel, so its absolute rounding error is about :math:`10^{-16}` times the
    largest term: ~10 at :math:`M = 10^{15}` near the minimal degree).  :func:`taylor_degree`
    does not rely on it where that matters.
    """
    M = _check_real("M", M)
    if isinstance(degree, bool) or not isinstance(degree, int) or degree < 0:
        raise UserInputError(f"degree: expected an int >= 0, got {degree!r}")
    if M == 0:
        return -math.inf
    return M + (degree + 1) * math.log(M) - math.lgamma(degree + 2)


def taylor_degree(M: float, *, log_eps: float) -> int:
    r"""The smallest degree ``g`` with :math:`e^M M^{g+1}/(g+1)! \le \varepsilon = e^{\text{log\_eps}}`.

    ``log_eps`` (:math:`\ln\varepsilon`, negative: :math:`0 < \varepsilon < 1`) is given as a
    logarithm so that accuracies like :math:`2^{-4096}` are representable.  For
    :math:`g + 1 \le M` the bound is at least :math:`e^M \ge 1 > \varepsilon`; from
    :math:`g + 2 \ge M` on it decreases (its ratio of consecutive terms is :math:`M/(g+2)`), so
    the answer is found by doubling and bisection on that decreasing stretch.  Each comparison
    is made in floats (:func:`math.lgamma`) where their difference exceeds a bound on the
    rounding error (:math:`10^{-12}` times the sum of the terms' sizes), else again in
    60-digit decimals (:math:`\ln (g+1)!` exact below 2000, Stirling's series above), so the
    degree is the exact minimum up to ties closer than about :math:`10^{-40}`, for
    ``0 <= M <= 1e200`` and ``-1e200 <= log_eps < 0`` (larger inputs raise ``ValueError``).
    """
    M = _check_real("M", M)
    if M > _BIG:
        raise UserInputError(f"M: expected a score bound <= {_BIG:g} (larger overflow the search), got {M!r}")
    if (
        isinstance(log_eps, bool)
        or not isinstance(log_eps, (int, float))
        or not math.isfinite(log_eps)
        or not -_BIG <= log_eps < 0
    ):
        raise UserInputError(
            f"log_eps: expected a finite ln(eps) in [-{_BIG:g}, 0) (accuracy eps in (0, 1)), got {log_eps!r}"
        )
    if M == 0:
        return 0

    def ok(g: int) -> bool:
        return not _log_bound_exceeds(M, g, log_eps)

    lo = max(0, math.ceil(M) - 2)  # from here on the bound does not increase; below it, > 1
    if ok(lo):
        return lo
    step = 1
    while not ok(lo + step):
        step *= 2
    # ok(lo + step) holds, ok(lo + step // 2) does not (or step == 1): bisect between them
    return bisect_boundary(ok, lo + step // 2 if step > 1 else lo, lo + step)


@dataclass(frozen=True)
class PolynomialMethodRow:
    r"""One length of :func:`polynomial_method_table`.

    ``log2_L`` and, where it was formed, the int ``L``; the accuracy as ``log2_eps``; ``d``;
    ``gamma``; the score bound ``M``; the smallest Taylor ``degree`` meeting the accuracy;
    ``log2_rank`` of :math:`\binom{d+g}{g}` (from :func:`math.lgamma`) and, where it was needed,
    the exact int ``rank``; ``rank_below_L`` whether ``rank < L``, decided in exact integers
    (``exact``) whenever the two are within 2 bits of each other and ``L`` was formed, else in
    logarithms (60-digit decimals where the floats are within their rounding error).
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
        if abs(log2_rank - log2_L) < 1e-9 * (1.0 + log2_L):  # within lgamma's rounding: decide in decimals
            c = _DEC
            ln_rank = c.subtract(c.subtract(_ln_factorial(d + g), _ln_factorial(g)), _ln_factorial(d))
            below = ln_rank < c.multiply(decimal.Decimal(log2_L), c.ln(2))
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
        raise UserInputError(f"m_rule: expected 'gamma^2' or 'd*gamma^2', got {m_rule!r}")
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
        raise UserInputError("lengths, log2_lengths: expected at least one length")
    if any(isinstance(L, bool) or not isinstance(L, int) or L < 2 for L in ls):
        raise UserInputError(f"lengths: expected ints >= 2, got {ls[:5]!r}")
    if any(isinstance(k, bool) or not isinstance(k, (int, float)) or not 1 <= k < math.inf for k in ks):
        raise UserInputError(f"log2_lengths: expected finite numbers >= 1, got {ks[:5]!r}")
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
        raise UserInputError("rows: expected at least one row")
    found = None
    for row in reversed(ordered):
        if not row.rank_below_L:
            break
        found = row
    return found


@dataclass(frozen=True)
class FarCrossover:
    r"""Where :func:`far_crossover` finds the rank below ``L`` for good, and how far it looked.

    ``row``: the table row at :math:`\log_2 L = x`, one past the last length found with
    rank >= ``L`` (``x = last_flip + 1``; the bisection point when no flip follows it).
    ``flips``: the :math:`\log_2 L` after the bisection point where the rank is at least ``L``
    again.  ``scanned_after``: the number W of further doublings scanned past ``x``, all with
    rank below ``L``.  ``margin_bits`` and ``fluctuation_bits``: :math:`\log_2 L - \log_2`
    rank at the end of the scan and the per-step fluctuation bound there (see
    :func:`far_crossover`); ``settled`` whether the margin exceeded it within ``scan_limit``.
    """

    row: PolynomialMethodRow
    flips: tuple[int, ...]
    scanned_after: int
    margin_bits: float
    fluctuation_bits: float
    settled: bool


def _fluctuation_bits(row: PolynomialMethodRow) -> float:
    d, g = row.d, row.degree
    return math.log2((d + g + 1) / (g + 1)) + math.log2((d + g + 1) / (d + 1))


def far_crossover(
    *,
    min_log2: int = 1,
    max_log2: int = 1 << 40,
    eps_power: float = 1.0,
    d_factor: float = 1.0,
    gamma_exponent: float = 0.4,
    gamma_factor: float = 1.0,
    m_rule: MRule = "gamma^2",
    scan_limit: int = 1 << 16,
) -> tuple[FarCrossover | None, list[PolynomialMethodRow]]:
    r"""Where the rank falls below ``L`` for good, searched over :math:`\log_2 L` up to ``max_log2``.

    The scan takes :math:`\log_2 L = 2^j` (``min_log2 <= 2^j <= max_log2``, in logs), finds the
    last point whose rank is at least ``L`` and bisects on the integer :math:`\log_2 L` between it
    and the next point.  Near that crossing the integer degree ``g`` and the rounded-up ``d``
    make :math:`\log_2 L - \log_2\binom{d+g}{g}` flip sign several times, so the search then
    walks forward one doubling at a time and stops at the first length past the last flip where
    the margin :math:`\log_2 L - \log_2` rank exceeds the fluctuation bound
    :math:`\delta = \log_2\frac{d+g+1}{g+1} + \log_2\frac{d+g+1}{d+1}`: one more degree
    multiplies the rank by :math:`\frac{d+g+1}{g+1}`, one more ``d`` by :math:`\frac{d+g+1}{d+1}`,
    and rounding each up moves the rank by less than one such step above the smooth curve of
    real ``d`` and ``g``.  So while that smooth margin does not decrease (the rank's local
    exponent in ``L`` is below 1, as it is past the crossing in the regimes tabulated here; an
    assumption, not proved), no later length can have rank >= ``L`` once the realized margin
    exceeds :math:`\delta` (about 2 bits at the default regime's crossing).  The walk gives up
    after ``scan_limit`` doublings (``settled=False``).

    Returns the :class:`FarCrossover` (``None`` if the rank is still at least ``L`` at
    ``max_log2``) and the doubling-grid rows.  Rounding ``d`` up makes the rank's ratio to ``L``
    not monotone at small lengths too, so where ``L`` can be formed, :func:`rank_crossover`
    over the full doubling grid decides.
    """
    for name, v in (("min_log2", min_log2), ("max_log2", max_log2), ("scan_limit", scan_limit)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise UserInputError(f"{name}: expected an int >= 1, got {v!r}")
    if max_log2 < min_log2:
        raise UserInputError(f"max_log2: expected >= min_log2 = {min_log2}, got {max_log2}")
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
    best = first
    if i > 0:
        bad, good = int(rows[i - 1].log2_L), int(first.log2_L)
        while good - bad > 1:
            mid = (bad + good) // 2
            (row,) = table(log2_lengths=[mid])
            if row.rank_below_L:
                good, best = mid, row
            else:
                bad = mid
    # walk forward past the flips the integer degree and d cause near the crossing
    flips: list[int] = []
    k0 = int(best.log2_L)
    start: PolynomialMethodRow | None = best
    end = best
    settled = False
    for k in range(k0 + 1, k0 + scan_limit + 1):
        (end,) = table(log2_lengths=[k])
        if not end.rank_below_L:
            flips.append(k)
            start = None
            continue
        if start is None:
            start = end
        if end.log2_L - end.log2_rank > _fluctuation_bits(end):
            settled = True
            break
    if start is None:  # the walk ended on a flip (scan_limit reached)
        (start,) = table(log2_lengths=[flips[-1] + 1])
        end = start
    return (
        FarCrossover(
            row=start,
            flips=tuple(flips),
            scanned_after=int(end.log2_L - start.log2_L),
            margin_bits=end.log2_L - end.log2_rank,
            fluctuation_bits=_fluctuation_bits(end),
            settled=settled,
        ),
        rows,
    )


def doubling_lengths(max_log2: int, *, min_log2: int = 1) -> list[int]:
    """The doubling grid ``2^min_log2, ..., 2^max_log2``."""
    for name, v in (("min_log2", min_log2), ("max_log2", max_log2)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise UserInputError(f"{name}: expected an int >= 1, got {v!r}")
    if max_log2 < min_log2:
        raise UserInputError(f"max_log2: expected >= min_log2 = {min_log2}, got {max_log2}")
    return [1 << k for k in range(min_log2, max_log2 + 1)]
