r"""Certified bounds on the max-entry :math:`\varepsilon`-rank, and orthogonal-vectors instances.

The :math:`\varepsilon`-rank of a real matrix in the max-entry norm (Alon, Lee, Shraibman and
Vempala, *The approximate rank of a matrix and its algorithmic applications*, STOC 2013) is

.. math:: \operatorname{rank}_\varepsilon(A) = \min\{\operatorname{rank} B :
          \max_{ij} |A_{ij} - B_{ij}| \le \varepsilon\}.

It is the measure behind [HSK24]'s threshold (HSK-above): a fast route through a rank-``k``
factorization of the attention matrix needs ``k >= rank_eps``.  Computing it is hard; this module
brackets it.

**Upper bound** (:func:`eps_rank_bounds` ``.upper``): the smallest ``k`` found (doubling, then
bisection) whose truncated SVD :math:`A_k` satisfies :math:`\max|A - A_k| \le \varepsilon`.  The
truncation is a witness ``B``, so the bound is certified; it is optimal in the spectral norm, not
entrywise, so it may sit above :math:`\operatorname{rank}_\varepsilon`.  The witness is the exact
product :math:`B = F V_k^\top` of the stored factors (:math:`F = \mathrm{fl}(U_k \Sigma_k)`); the
residual is computed in floating point, so the test is :math:`\mathrm{fl}(\max|A - FV_k^\top|) \le
\varepsilon - 5k\,u\,\sigma_1`.  Margin: the computed product differs from the exact one by at
most :math:`\gamma_k \sum_l |F_{il}||V_{jl}| \le \gamma_k \sigma_1 \|U_{i,:}\|\|V_{j,:}\|
\approx 1.0001\,k u \sigma_1` (:math:`\gamma_k = ku/(1 - ku)`, any summation order; the computed
singular vectors' rows have norm at most :math:`1 + O(nu)`), and the subtraction and absolute value
add a relative :math:`u` of a residual at most :math:`\varepsilon \le \sigma_1`, as does the
subtraction on the right; :math:`1.0001k + 3 \le 5k`, so the exact residual of ``B`` is within
:math:`\varepsilon`.

**Lower bounds.**  Let ``B`` be any matrix with :math:`\max|A - B| \le \varepsilon` and ``I``,
``J`` any sets of ``p`` rows and ``q`` columns; the submatrix :math:`E = (A - B)_{IJ}` has
:math:`\|E\|_2 \le \|E\|_F \le \varepsilon\sqrt{pq}`, and
:math:`\operatorname{rank} B \ge \operatorname{rank} B_{IJ}`.

* spectral: if :math:`\operatorname{rank} B_{IJ} \le r`, Weyl's inequality gives
  :math:`\sigma_{r+1}(A_{IJ}) \le \sigma_{r+1}(B_{IJ}) + \|E\|_2 \le \varepsilon\sqrt{pq}`, so
  :math:`\operatorname{rank}_\varepsilon(A) \ge \#\{i : \sigma_i(A_{IJ}) > \varepsilon\sqrt{pq}\}`.
  On the whole matrix the threshold is :math:`\varepsilon L` (it loses a factor ``L``); on a
  ``k x k`` submatrix it is :math:`\varepsilon k`, which is why small well-conditioned submatrices
  help.
* trace: Cauchy-Schwarz over the nonzero singular values gives
  :math:`\operatorname{rank} C \ge \|C\|_*^2 / \|C\|_F^2` for every ``C``; with ``W`` of spectral
  norm at most one (here the polar factor :math:`UV^\top` of :math:`A_{IJ}`),
  :math:`\|B_{IJ}\|_* \ge \langle B_{IJ}, W\rangle \ge \langle A_{IJ}, W\rangle - \varepsilon
  \sum|W_{ij}|` and :math:`\|B_{IJ}\|_F \le \|\,|A_{IJ}| + \varepsilon\|_F`, so
  :math:`\operatorname{rank}_\varepsilon(A) \ge \big((\langle A_{IJ}, W\rangle - \varepsilon
  \|W\|_1)_+ / \|\,|A_{IJ}| + \varepsilon\|_F\big)^2`.  (This is the approximate trace-norm
  argument of Lee and Shraibman's lower bounds, with a Frobenius denominator; it is a feasible
  point of the dual, not the optimum of the :math:`\gamma_2^\alpha` program, so it is weaker but
  needs only an SVD.)

The submatrices are the leading ``k x k`` blocks of a Q-DEIM ordering (column-pivoted QR of the
leading singular vectors' transposes) for ``k`` on a geometric grid, plus the whole matrix; the
lower bound is the largest over them.  Every bound holds for the matrix as stored (float64);
:func:`eps_rank_bounds` works on :math:`A / 2^e` with :math:`2^e \le \max|A| < 2^{e+1}` (an exact
scaling except for entries that underflow, which move by at most :math:`2^{-1075}` and are paid
for by a widened tolerance below and a narrowed one above), so no scale overflows or underflows; the
thresholds carry a round-off margin of :math:`64\max(p,q)\,u\,\sigma_1` (``u`` the unit round-off)
and the trace bound a relative margin of :math:`10^{-9}`.

**Orthogonal-vectors instances** (:func:`orthogonal_vectors_pre_activations`): the reduction
behind SETH-hardness results for attention maps an Orthogonal-Vectors instance (0/1 vectors
``a_i``, ``b_j``) to pre-activations :math:`q_i = -\Gamma a_i`, :math:`k_j = \Gamma b_j`, so
:math:`\exp\langle q_i, k_j\rangle` is 1 for orthogonal pairs and at most :math:`e^{-\Gamma^2}`
otherwise: once :math:`\Gamma^2` is large against :math:`\log(1/\varepsilon)` the matrix is within
:math:`\varepsilon` of the disjointness matrix of the sets, whose rank grows with the number of
distinct sets.  Random instances rarely come near this worst case.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla
from numpy.typing import NDArray

from landscapes.threads import scipy_blas_single_thread
from theory.errors import UserInputError
from theory.search import bisect_boundary

__all__ = [
    "EpsRankBounds",
    "eps_rank_bounds",
    "spectral_lower_bound",
    "trace_lower_bound",
    "truncation_upper_bound",
    "orthogonal_vectors_pre_activations",
]

_U = float(np.finfo(np.float64).eps)  # machine epsilon, 2u (u the unit round-off 2^-53)
_TINY = 2.0**-1074  # the smallest subnormal: bounds the error of a power-of-two scaling entry by entry
_REL_MARGIN = 1e-9


@dataclass(frozen=True)
class EpsRankBounds:
    r"""Certified bounds :math:`\text{lower} \le \operatorname{rank}_\varepsilon(A) \le \text{upper}`.

    Attributes
    ----------
    lower
        The largest of the lower bounds below.
    upper
        The truncated-SVD witness rank (:func:`truncation_upper_bound`).
    eps
        The absolute tolerance :math:`\varepsilon` (``rel_err`` times :math:`\max|A|`, one rounding;
        the bounds hold for exactly this value unless it leaves float64's normal range).
    lower_spectral
        The spectral count on the whole matrix (threshold :math:`\varepsilon\sqrt{mn}`).
    lower_trace
        The trace bound on the whole matrix.
    lower_submatrix
        The best spectral or trace bound over the Q-DEIM submatrices.
    submatrix_size
        The ``k`` of the ``k x k`` submatrix that gave ``lower_submatrix`` (0 if none helped).
    """

    lower: int
    upper: int
    eps: float
    lower_spectral: int
    lower_trace: int
    lower_submatrix: int
    submatrix_size: int


def _as_matrix(A: object, name: str = "A") -> NDArray[np.float64]:
    if hasattr(A, "detach"):
        A = A.detach().cpu().numpy()  # a torch tensor
    raw = np.asarray(A)
    if raw.dtype.kind not in "biuf":
        raise UserInputError(f"{name}: expected a real (bool, int or float) matrix, got dtype {raw.dtype}")
    arr = np.asarray(raw, dtype=np.float64)
    if arr.ndim != 2 or arr.size == 0:
        raise UserInputError(f"{name}: expected a non-empty 2-D matrix, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise UserInputError(f"{name}: expected finite entries")
    return arr


def _check_eps(eps: object) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (eps >= 0 and math.isfinite(eps)):
        raise UserInputError(f"eps: expected a finite number >= 0, got {eps!r}")
    return float(eps)


def _spectral_count(s: NDArray[np.float64], eps: float, p: int, q: int) -> int:
    top = float(s[0]) if s.size else 0.0
    threshold = eps * math.sqrt(p * q) + 64 * max(p, q) * _U * top
    return int(np.count_nonzero(s > threshold))


def _trace_bound(A: NDArray[np.float64], U: NDArray[np.float64], Vt: NDArray[np.float64], eps: float) -> int:
    W = U @ Vt
    num = float(np.sum(A * W)) - eps * float(np.abs(W).sum())
    den = float(np.linalg.norm(np.abs(A) + eps))
    if num <= 0 or den == 0:
        return 0
    value = (num * (1 - _REL_MARGIN) / (den * (1 + _REL_MARGIN))) ** 2
    return max(0, math.ceil(value - _REL_MARGIN * max(1.0, value)))


def spectral_lower_bound(A: object, eps: float) -> int:
    r"""Weyl's bound on the whole matrix: :math:`\#\{i : \sigma_i(A) > \varepsilon\sqrt{mn}\}`.

    >>> spectral_lower_bound(np.eye(4), 0.2)  # sigma = 1 > 0.2 * 4 four times
    4
    """
    M = _as_matrix(A)
    eps = _check_eps(eps)
    s = np.asarray(np.linalg.svd(M, compute_uv=False), dtype=np.float64)
    return _spectral_count(s, eps, *M.shape)


def trace_lower_bound(A: object, eps: float) -> int:
    r"""The trace bound on the whole matrix (see the module docstring).

    :math:`\big((\|A\|_* - \varepsilon\|UV^\top\|_1)_+ / \|\,|A| + \varepsilon\|_F\big)^2`, rounded up.

    >>> trace_lower_bound(np.eye(100), 0.01)  # (100 - 1)^2 / (100 * 1.01^2 + 9900 * 1e-4) = 95.1
    96
    """
    M = _as_matrix(A)
    eps = _check_eps(eps)
    U, _, Vt = np.linalg.svd(M, full_matrices=False)
    return _trace_bound(M, U, Vt, eps)


def _truncation_rank(
    M: NDArray[np.float64],
    U: NDArray[np.float64],
    s: NDArray[np.float64],
    Vt: NDArray[np.float64],
    eps: float,
) -> int:
    def ok(k: int) -> bool:
        # round-off margin for the witness U_k S_k V_k^T (module docstring): the exact product is within eps
        margin = 5 * k * (_U / 2) * float(s[0])
        return float(np.abs(M - (U[:, :k] * s[:k]) @ Vt[:k]).max()) <= eps - margin

    n = int(s.size)
    if float(np.abs(M).max()) <= eps:
        return 0  # B = 0 is within eps
    lo, hi = 0, n  # B = A (rank <= n) is within eps; rank 0 is not
    k = 1
    while k < n:  # doubling: cheap when the rank is small
        if ok(k):
            hi = k
            break
        lo = k
        k *= 2
    return bisect_boundary(ok, lo, hi)


def truncation_upper_bound(A: object, eps: float) -> int:
    r"""A ``k`` whose rank-``k`` SVD truncation is within ``eps`` of ``A`` entrywise (so ``k >= rank_eps``).

    Doubling from ``k = 1``, then bisection; the error is not monotone in ``k`` in general, so the
    returned ``k`` meets the tolerance (it was checked, with the round-off margin of the module
    docstring, or it is the full rank) and is not necessarily the smallest that does.

    >>> truncation_upper_bound(np.outer([1.0, 2.0], [3.0, 4.0]), 1e-9)
    1
    """
    M = _as_matrix(A)
    eps = _check_eps(eps)
    U, s, Vt = np.linalg.svd(M, full_matrices=False)
    return _truncation_rank(M, U, s, Vt, eps)


def _size_grid(n: int) -> list[int]:
    sizes: list[int] = []
    k = 1.0
    while round(k) < n:
        if not sizes or round(k) != sizes[-1]:
            sizes.append(int(round(k)))
        k *= math.sqrt(2)
    return sizes


def eps_rank_bounds(A: object, rel_err: float, *, max_submatrix: int | None = None) -> EpsRankBounds:
    r"""Certified bounds on :math:`\operatorname{rank}_\varepsilon(A)`, with ``eps = rel_err * max|A|``.

    One SVD of ``A`` gives the upper bound and the whole-matrix lower bounds; the submatrix bounds
    use the Q-DEIM ordering from the leading ``r`` singular vectors, ``r`` the upper bound (capped
    by ``max_submatrix``), on ``k x k`` blocks with ``k`` on a geometric grid of ratio
    :math:`\sqrt 2` up to ``r``.  See the module docstring for the inequalities.  The work is done
    on :math:`A / 2^e` with :math:`2^e \le \max|A| < 2^{e+1}` and tolerance ``rel_err`` times its
    maximum, so matrices of any finite scale (:math:`10^{307}` or subnormal) are handled alike.

    >>> b = eps_rank_bounds(np.eye(64), 1e-3)
    >>> (b.lower, b.upper)
    (64, 64)
    """
    M = _as_matrix(A)
    if not (isinstance(rel_err, float) and 0 < rel_err < 1):
        raise UserInputError(f"rel_err: expected a float in (0, 1), got {rel_err!r}")
    if max_submatrix is not None and (
        isinstance(max_submatrix, bool) or not isinstance(max_submatrix, int) or max_submatrix < 1
    ):
        raise UserInputError(f"max_submatrix: expected a positive int or None, got {max_submatrix!r}")
    top = float(np.abs(M).max())
    if top == 0:  # B = 0 is within any tolerance
        return EpsRankBounds(0, 0, 0.0, 0, 0, 0, 0)
    e = math.frexp(top)[1] - 1  # 2^e <= max|A| < 2^(e+1)
    S = np.ldexp(M, -e)  # exact unless an entry underflows (then off by < 2^-1074)
    exact = bool(np.array_equal(np.ldexp(S, e), M))
    eps_s = rel_err * float(np.abs(S).max())
    slack = 0.0 if exact else _TINY
    with scipy_blas_single_thread():  # BLAS threads spinning against torch's pool cost 20x on small machines
        b = _bounds(S, eps_s - slack, eps_s + slack, max_submatrix)
    return EpsRankBounds(
        lower=b.lower,
        upper=b.upper,
        eps=float(np.ldexp(eps_s, e)),
        lower_spectral=b.lower_spectral,
        lower_trace=b.lower_trace,
        lower_submatrix=b.lower_submatrix,
        submatrix_size=b.submatrix_size,
    )


def _bounds(
    M: NDArray[np.float64], eps_up: float, eps_low: float, max_submatrix: int | None
) -> EpsRankBounds:
    # eps_up: the tolerance the upper bound's witness must meet; eps_low (>= eps_up) the lower bounds'
    m, n = M.shape
    U, s, Vt = np.linalg.svd(M, full_matrices=False)
    upper = _truncation_rank(M, U, s, Vt, eps_up)
    eps = eps_low
    spectral = _spectral_count(s, eps, m, n)
    trace = _trace_bound(M, U, Vt, eps)
    r = min(upper, m, n) if max_submatrix is None else min(upper, m, n, max_submatrix)
    best, best_k = 0, 0
    if r >= 1:
        rows = sla.qr(U[:, :r].T, pivoting=True, mode="r")[1][:r]
        cols = sla.qr(Vt[:r], pivoting=True, mode="r")[1][:r]
        for k in [*_size_grid(r), r]:
            S = M[np.ix_(rows[:k], cols[:k])]
            Us, ss, Vts = np.linalg.svd(S)
            got = max(_spectral_count(ss, eps, k, k), _trace_bound(S, Us, Vts, eps))
            if got > best:
                best, best_k = got, k
    lower = max(spectral, trace, best)
    return EpsRankBounds(
        lower=min(lower, upper),
        upper=upper,
        eps=eps_low,
        lower_spectral=spectral,
        lower_trace=trace,
        lower_submatrix=best,
        submatrix_size=best_k,
    )


def orthogonal_vectors_pre_activations(
    L: int, m: int, gamma: float, *, density: float = 0.5, seed: int = 0
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    r"""Pre-activations ``Q = -gamma a``, ``K = gamma b`` from random 0/1 vectors (an OV instance).

    ``a_i``, ``b_j`` are ``L`` independent 0/1 vectors of length ``m`` with
    :math:`P(1) =` ``density`` each (seeded), so :math:`\langle q_i, k_j\rangle = -\Gamma^2
    \langle a_i, b_j\rangle` is 0 on orthogonal pairs (a fraction :math:`(1 - \text{density}^2)^m`
    of them) and at most :math:`-\Gamma^2` otherwise; entries of ``Q``, ``K`` are bounded by
    ``gamma``.  They are one self-attention head's: ``X = gamma [a | b]`` (width ``2m``),
    :math:`W_Q = [-I; 0]`, :math:`W_K = [0; I]`.

    >>> Q, K = orthogonal_vectors_pre_activations(8, 3, 2.0)
    >>> Q.shape, K.shape, float(np.abs(Q).max()) <= 2.0, bool(np.all(Q @ K.T <= 0))
    ((8, 3), (8, 3), True, True)
    """
    for name, v in (("L", L), ("m", m)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise UserInputError(f"{name}: expected a positive int, got {v!r}")
    if (
        isinstance(gamma, bool)
        or not isinstance(gamma, (int, float))
        or not (gamma > 0 and math.isfinite(gamma))
    ):
        raise UserInputError(f"gamma: expected a finite number > 0, got {gamma!r}")
    if isinstance(density, bool) or not isinstance(density, (int, float)) or not (0 < density < 1):
        raise UserInputError(f"density: expected a number in (0, 1), got {density!r}")
    rng = np.random.default_rng(seed)
    a = (rng.random((L, m)) < density).astype(np.float64)
    b = (rng.random((L, m)) < density).astype(np.float64)
    return -float(gamma) * a, float(gamma) * b
