r"""A Rademacher-complexity generalization bound for linearized LoRA (claim JLR-gen), pure Python.

Setting: the linearized predictor :math:`f_D(x) = f_0(x) + [\langle G_k(x), D\rangle]_{k<K}` with
adapted weight :math:`D = (D_1, \dots, D_b)` (one matrix per block), the class

.. math:: \mathcal F_B = \{D : \textstyle\sum_j \|D_j\|_* \le B\}

(the NUC regularizer's ball; with equal weight decays :math:`\lambda` the magnitude bound of
[JLR24] puts every NUC minimizer in it with :math:`B = L(0)/\lambda`), a convex per-example loss
:math:`\ell(z, y)` clipped at a level :math:`b` fixed in advance,
:math:`\ell_b = \min(\ell, b) \in [0, b]`, and ``N`` training examples drawn i.i.d.

**The loss.** Cross-entropy and the squared loss are unbounded, and a bound on the logits over the
distribution cannot be read off an empirical sample, so the bound is stated for the clipped loss
:math:`\ell_b` (and the checker measures the clipped held-out loss too): :math:`\ell_b` is bounded
and :math:`\rho`-Lipschitz in :math:`z` (Euclidean norm) with :math:`\rho = \sup_{\ell(z) < b}
\|\nabla_z \ell\|_2` (along a segment, :math:`\{\ell < b\}` is an interval by convexity and
:math:`\ell_b` is constant outside it):

* softmax cross-entropy: :math:`\|\operatorname{softmax}(z) - e_y\|_2 \le \sqrt2 (1 - p_y)` and
  :math:`p_y > e^{-b}` on :math:`\{\ell < b\}`, so :math:`\rho = \sqrt2 (1 - e^{-b})`;
* logistic (``K = 1``): :math:`\rho = 1 - e^{-b}`;
* squared, :math:`\tfrac12\|z - y\|^2`: :math:`\|z - y\| < \sqrt{2b}`, so :math:`\rho = \sqrt{2b}`.

:math:`\ell_b \le \ell`, so the bound says nothing about the unclipped test loss.

**The bound** (for one fixed ``B``). With probability at least :math:`1 - \delta` over the sample,
for every :math:`D \in \mathcal F_B`

.. math::
    \mathbb E\,\ell_b(f_D(x), y) \le \hat L_b(D) + \frac{4\rho B}{N}\sqrt{v \log(d_1 + d_2)}
    + 3b\sqrt{\frac{\log(2/\delta)}{2N}},

where :math:`\hat L_b` is the training mean of :math:`\ell_b`,
:math:`v = \max_j \max(\|\sum_{i,k} G_{ikj} G_{ikj}^\top\|_{op}, \|\sum_{i,k} G_{ikj}^\top
G_{ikj}\|_{op})` (the Jacobian slices :math:`G_{ikj} = \partial f_k(x_i)/\partial D_j` at the
training points) and :math:`d_1 = \sum_j m_j`, :math:`d_2 = \sum_j n_j`.  Steps, with sources:

1. Uniform deviation with the *empirical* Rademacher complexity
   :math:`\hat{\mathfrak R}_S(\mathcal H) = \mathbb E_\varepsilon \sup_{h}\frac1N\sum_i
   \varepsilon_i h(z_i)` of the clipped-loss class :math:`\mathcal H` (functions into
   :math:`[0, b]`): :math:`\mathbb E h \le \hat{\mathbb E} h + 2\hat{\mathfrak R}_S(\mathcal H)
   + 3b\sqrt{\log(2/\delta)/(2N)}` -- Mohri, Rostamizadeh, Talwalkar, *Foundations of Machine
   Learning* (2nd ed., 2018), Theorem 3.3 (stated for :math:`[0, 1]`; scale by ``b``), after
   Bartlett & Mendelson (2002), McDiarmid's inequality used twice.  (The form with
   :math:`b\sqrt{\log(1/\delta)/(2N)}` needs the *expected* complexity, which an empirical
   sample does not give.)
2. Vector contraction, Maurer (2016), *A vector-contraction inequality for Rademacher
   complexities*, Corollary 1: for :math:`\rho`-Lipschitz :math:`h_i : \mathbb R^K \to \mathbb R`,
   :math:`\mathbb E\sup_D \sum_i \varepsilon_i h_i(z_i(D)) \le \sqrt2\rho\, \mathbb E\sup_D
   \sum_{i,k}\varepsilon_{ik} z_{ik}(D)` (here :math:`h_i(z) = \ell_b(f_0(x_i) + z, y_i)`,
   :math:`z_{ik}(D) = \langle G_{ik}, D\rangle`).
3. Duality: :math:`\sup_{D\in\mathcal F_B} \sum_{ik}\varepsilon_{ik}\langle G_{ik}, D\rangle
   = B \max_j \|Z_j\|_{op}` with :math:`Z_j = \sum_{ik}\varepsilon_{ik} G_{ikj}` (the dual of
   :math:`\sum_j\|D_j\|_*` is :math:`\max_j \|\cdot\|_{op}`), and :math:`\max_j\|Z_j\|_{op} =
   \|\operatorname{diag}(Z_1, \dots, Z_b)\|_{op}`, itself a Rademacher series of
   :math:`d_1 \times d_2` matrices.
4. Matrix Rademacher series, Tropp (2015), *An Introduction to Matrix Concentration
   Inequalities*, Theorem 4.1.1: :math:`\mathbb E\|\sum_k \varepsilon_k B_k\|_{op} \le
   \sqrt{2 v \log(d_1 + d_2)}`, :math:`v = \max(\|\sum B_k B_k^\top\|, \|\sum B_k^\top B_k\|)`;
   for the block-diagonal series :math:`v` is the maximum over blocks above.

   Hence :math:`2\hat{\mathfrak R}_S(\mathcal H) \le \frac{2\sqrt2\rho B}{N}\sqrt{2v\log(d_1+d_2)}
   = \frac{4\rho B}{N}\sqrt{v\log(d_1+d_2)}`.

**Data-dependent B: a union bound over a grid.** ``B`` is read off the data (the nuclear norm of
the solution, or :math:`L(0)/\lambda`), so the bound is applied on the fixed geometric grid
:math:`B_k = B_0 r^k`, :math:`k \in \mathbb Z` (ratio :math:`r > 1`, ``ratio``; fixed in advance like
:math:`B_0`), at confidence :math:`\delta_k =
\frac{2\delta}{3(|k|+1)(|k|+2)}` (these sum to :math:`\delta`: :math:`\sum_{k\in\mathbb Z}
\frac1{(|k|+1)(|k|+2)} = \frac12 + 2\cdot\frac12 = \frac32`).  With probability
:math:`\ge 1 - \delta` all grid bounds hold at once, so for a data-dependent :math:`\hat D` the
smallest of them over the :math:`k` with :math:`B_k \ge \sum_j\|\hat D_j\|_*` is valid
(:func:`generalization_bound`).  The union bound does not depend on :math:`r`; a finer grid (the
checker's default :math:`r = 2^{1/4}`) rounds the radius up by a smaller factor :math:`B_k/B < r`
(with :math:`r = 2` that factor swings between 1 and 2 as the units of ``D`` change, and so can a
verdict).  :math:`B_0` (``base``) must be fixed before seeing the data; it
is in the units of ``D``, so the bound is invariant under :math:`(J, \lambda, B_0) \to
(cJ, c\lambda, B_0/c)` (then :math:`B \to B/c`, :math:`v \to c^2 v`).

**The held-out measurement.** The mean of :math:`\ell_b` over ``M`` held-out examples lies within
:math:`b\sqrt{\log(1/\alpha)/(2M)}` of its expectation with probability :math:`\ge 1 - \alpha`
on each side (Hoeffding, 1963, Theorem 2; also for sampling without replacement, Section 6):
:func:`hoeffding_radius`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from theory.errors import UserInputError

__all__ = [
    "GRID_MASS",
    "clipped_lipschitz",
    "default_clip",
    "grid_delta",
    "grid_index",
    "grid_radius",
    "khintchine_bound",
    "rademacher_term",
    "confidence_term",
    "hoeffding_radius",
    "GeneralizationBound",
    "generalization_bound",
]

#: :math:`\sum_{k \in \mathbb Z} 1/((|k|+1)(|k|+2))`: the normalization of the grid's confidences.
GRID_MASS = 1.5


def _positive(name: str, x: object) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or not x > 0:
        raise UserInputError(f"{name}: expected a finite positive number, got {x!r}")
    return float(x)


def _nonnegative(name: str, x: object) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x < 0:
        raise UserInputError(f"{name}: expected a finite number >= 0, got {x!r}")
    return float(x)


def _probability(name: str, x: object) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not 0 < x < 1:
        raise UserInputError(f"{name}: expected a number in (0, 1), got {x!r}")
    return float(x)


def _count(name: str, x: object) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or x < 1:
        raise UserInputError(f"{name}: expected a positive int, got {x!r}")
    return x


def clipped_lipschitz(loss: str, clip: float) -> float:
    r"""Lipschitz constant :math:`\rho` in :math:`z` (Euclidean norm) of :math:`\min(\ell, b)`.

    ``cross_entropy``: :math:`\sqrt2(1 - e^{-b})`; ``logistic``: :math:`1 - e^{-b}`; ``squared``
    (:math:`\tfrac12\|z-y\|^2`): :math:`\sqrt{2b}` (module docstring).
    """
    b = _positive("clip", clip)
    if loss == "cross_entropy":
        return math.sqrt(2.0) * -math.expm1(-b)
    if loss == "logistic":
        return -math.expm1(-b)
    if loss == "squared":
        return math.sqrt(2.0 * b)
    raise UserInputError(f"loss: expected 'cross_entropy', 'logistic' or 'squared', got {loss!r}")


def default_clip(loss: str, K: int) -> float:
    r"""The default clipping level :math:`b`: twice the loss of the uniform prediction, :math:`2\log K`.

    For ``logistic`` :math:`2\log 2`.  The squared loss has no natural scale: ``ValueError`` (give
    ``clip``).
    """
    K = _count("K", K)
    if loss == "cross_entropy":
        if K < 2:
            raise UserInputError(f"K: expected at least 2 classes for cross_entropy, got {K}")
        return 2.0 * math.log(K)
    if loss == "logistic":
        return 2.0 * math.log(2.0)
    if loss == "squared":
        raise UserInputError(
            "clip: expected a positive number for the squared loss (it has no natural scale), got None"
        )
    raise UserInputError(f"loss: expected 'cross_entropy', 'logistic' or 'squared', got {loss!r}")


def _ratio(ratio: object) -> float:
    r = _positive("ratio", ratio)
    if not r > 1:
        raise UserInputError(f"ratio: expected a finite number > 1, got {ratio!r}")
    return r


def grid_radius(k: int, base: float, ratio: float = 2.0) -> float:
    r"""The grid radius :math:`B_k = B_0 r^k`; ``ValueError`` when it is outside the float range."""
    if isinstance(k, bool) or not isinstance(k, int):
        raise UserInputError(f"k: expected an int, got {k!r}")
    base = _positive("base", base)
    r = _ratio(ratio)
    Bk = math.inf
    for h in (k, k // 2):  # r**k alone may leave the float range where base * r**k does not
        try:
            Bk = base * r**h * r ** (k - h)
        except OverflowError:
            continue
        if math.isfinite(Bk) and Bk > 0:
            break
    if not (math.isfinite(Bk) and Bk > 0):
        raise UserInputError(
            f"base: the grid radius base * ratio**k = {base!r} * {r!r}**{k} is outside the float range "
            "(expected a base within a float's range of B)"
        )
    return Bk


def grid_index(B: float, base: float, ratio: float = 2.0) -> int:
    r"""The smallest :math:`k \in \mathbb Z` with :math:`B_0 r^k \ge B` (``B > 0``, ``ratio`` :math:`r > 1`).

    Computed in logarithms (no overflow of ``B / base``); ``ValueError`` when that grid radius
    is outside the float range (:func:`grid_radius`).
    """
    B = _positive("B", B)
    base = _positive("base", base)
    r = _ratio(ratio)
    k = math.ceil((math.log(B) - math.log(base)) / math.log(r))
    # guard the rounding of the logarithms at exact grid points
    while grid_radius(k, base, r) < B:
        k += 1
    while True:
        try:
            below = grid_radius(k - 1, base, r)
        except ValueError:
            break  # B_{k-1} underflows: it is below B
        if below < B:
            break
        k -= 1
    return k


def grid_delta(k: int, delta: float) -> float:
    r""":math:`\delta_k = \delta / (\tfrac32 (|k|+1)(|k|+2))`.

    They sum to ``delta`` over :math:`k \in \mathbb Z` (:data:`GRID_MASS`).
    """
    if isinstance(k, bool) or not isinstance(k, int):
        raise UserInputError(f"k: expected an int, got {k!r}")
    delta = _probability("delta", delta)
    return delta / (GRID_MASS * (abs(k) + 1) * (abs(k) + 2))


def khintchine_bound(v: float, d1: int, d2: int) -> float:
    r"""Tropp (2015), Thm 4.1.1: :math:`\mathbb E\|\sum_k\varepsilon_k B_k\|_{op} \le \sqrt{2v\log(d_1+d_2)}`.

    ``v`` is the matrix variance :math:`\max(\|\sum B_k B_k^\top\|, \|\sum B_k^\top B_k\|)` of
    :math:`d_1 \times d_2` summands.
    """
    v = _nonnegative("v", v)
    d1, d2 = _count("d1", d1), _count("d2", d2)
    return math.sqrt(2.0 * v * math.log(d1 + d2))


def rademacher_term(*, rho: float, B: float, v: float, d1: int, d2: int, N: int) -> float:
    r"""Twice the Rademacher complexity bound: :math:`\frac{2\sqrt2\rho B}{N}\sqrt{2v\log(d_1+d_2)}`.

    Maurer's contraction (:math:`\sqrt2\rho`) times the duality (:math:`B\,\mathbb E\max_j
    \|Z_j\|_{op}`) times :func:`khintchine_bound`, over ``N``, doubled.
    """
    rho = _nonnegative("rho", rho)
    B = _nonnegative("B", B)
    N = _count("N", N)
    return 2.0 * math.sqrt(2.0) * rho * B * khintchine_bound(v, d1, d2) / N


def confidence_term(*, clip: float, N: int, delta: float) -> float:
    r""":math:`3b\sqrt{\log(2/\delta)/(2N)}` (Mohri et al. 2018, Thm 3.3, scaled to :math:`[0, b]`)."""
    b = _positive("clip", clip)
    N = _count("N", N)
    delta = _probability("delta", delta)
    return 3.0 * b * math.sqrt(math.log(2.0 / delta) / (2.0 * N))


def hoeffding_radius(*, clip: float, M: int, alpha: float) -> float:
    r"""One-sided Hoeffding radius :math:`b\sqrt{\log(1/\alpha)/(2M)}`.

    For the mean of ``M`` independent values in :math:`[0, b]` (Hoeffding 1963, Theorem 2).
    """
    b = _positive("clip", clip)
    M = _count("M", M)
    alpha = _probability("alpha", alpha)
    return b * math.sqrt(math.log(1.0 / alpha) / (2.0 * M))


@dataclass(frozen=True)
class GeneralizationBound:
    r"""The bound of the module docstring at the best admissible grid point.

    ``value = empirical + complexity + confidence``; ``B`` is the radius it was asked for,
    ``B_grid = base * ratio**k`` the grid radius used (``>= B``) and ``delta_k`` its confidence.
    """

    value: float
    empirical: float
    complexity: float
    confidence: float
    B: float
    B_grid: float
    k: int
    delta_k: float
    rho: float
    clip: float
    v: float
    d1: int
    d2: int
    N: int
    delta: float
    base: float
    ratio: float = 2.0

    @property
    def rounding(self) -> float:
        """``B_grid / B``: the factor by which the grid rounds the radius up (``inf`` for ``B = 0``)."""
        return self.B_grid / self.B if self.B > 0 else math.inf


def generalization_bound(
    *,
    empirical: float,
    B: float,
    v: float,
    d1: int,
    d2: int,
    N: int,
    rho: float,
    clip: float,
    delta: float = 0.05,
    base: float = 1.0,
    ratio: float = 2.0,
) -> GeneralizationBound:
    r"""The smallest grid bound valid for a predictor with :math:`\sum_j\|D_j\|_* \le B`.

    .. math::
        \min_{k \ge k_0}\; \hat L_b + \frac{4\rho B_0 r^k}{N}\sqrt{v\log(d_1+d_2)}
        + 3b\sqrt{\frac{\log(2/\delta_k)}{2N}},

    :math:`k_0` = :func:`grid_index` ``(B, base, ratio)`` (for ``B = 0`` the search starts at the
    grid point just above ``base * 2**-64``).  The grid ratio :math:`r` = ``ratio`` (> 1) sets how far
    the radius is rounded up (at most a factor :math:`r`); the confidences :math:`\delta_k` do not
    depend on it.  Valid with probability :math:`\ge 1 - \delta` simultaneously for all ``k``
    (module docstring), so the minimum is valid too.  ``empirical`` is the training mean of the
    clipped loss (in :math:`[0, b]`).
    """
    b = _positive("clip", clip)
    emp = _nonnegative("empirical", empirical)
    if emp > b * (1 + 1e-12):
        raise UserInputError(f"empirical: expected a mean of losses clipped at {b}, got {emp!r}")
    B = _nonnegative("B", B)
    base = _positive("base", base)
    r = _ratio(ratio)
    _probability("delta", delta)
    rho = _nonnegative("rho", rho)
    k = grid_index(B, base, r) if B > 0 else grid_index(base * 2.0**-64, base, r)
    best: GeneralizationBound | None = None
    while True:
        Bk = grid_radius(k, base, r)
        comp = rademacher_term(rho=rho, B=Bk, v=v, d1=d1, d2=d2, N=N)
        if best is not None and comp >= best.value - emp:
            break  # the complexity term alone already exceeds the best total: no larger k helps
        dk = grid_delta(k, delta)
        conf = confidence_term(clip=b, N=N, delta=dk)
        total = emp + comp + conf
        if best is None or total < best.value:
            best = GeneralizationBound(
                value=total,
                empirical=emp,
                complexity=comp,
                confidence=conf,
                B=B,
                B_grid=Bk,
                k=k,
                delta_k=dk,
                rho=rho,
                clip=b,
                v=float(v),
                d1=d1,
                d2=d2,
                N=N,
                delta=float(delta),
                base=base,
                ratio=r,
            )
        if comp == 0.0 and k >= 0:
            break  # no complexity (v = 0 or rho = 0): the confidence term is smallest at k = 0
        k += 1
    assert best is not None  # the loop evaluates at least one grid point
    return best
