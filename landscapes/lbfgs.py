r"""A lean unconstrained L-BFGS for small, cheap objectives (compact representation).

SciPy's L-BFGS-B spends about 120--150 microseconds per iteration outside the objective (the
bound-constrained machinery and its reverse-communication driver); at the sizes where the NUC
solver's factored stage runs in milliseconds (``m = n = 64``, ``KN = 64``: about 100 microseconds
per objective) that overhead is most of the solve.  This routine applies the inverse-Hessian
approximation in the compact form of Byrd, Nocedal and Schnabel (1994, Math. Program. 63):

.. math::

    H = \gamma I + [S\ \ \gamma Y]
        \begin{bmatrix} R^{-\top}(D + \gamma Y^\top Y)R^{-1} & -R^{-\top} \\ -R^{-1} & 0 \end{bmatrix}
        \begin{bmatrix} S^\top \\ \gamma Y^\top \end{bmatrix},

with the last ``memory`` steps ``S`` and gradient changes ``Y`` as rows, ``R`` the upper triangle of
``S Y^\top`` (chronological order), ``D`` its diagonal and ``gamma = s^T y / y^T y`` of the newest
pair: two products with the ``(2 memory, n)`` history and small triangular solves per iteration.

The step length is 1 when it satisfies the weak Wolfe conditions (``c1 = 1e-4``, ``c2 = 0.9``),
as it does on most iterations; otherwise bracketing and bisection find one (:func:`_weak_wolfe`,
which also allows the round-off of ``f`` in the decrease test, so that the iteration goes on to
gradients near round-off).  Pairs with ``s^T y <= 1e-12 ||s|| ||y||`` are not stored (the
approximation stays positive definite).  Both tests and the first step (``||x|| / ||g||`` along
``-g``) are invariant under a rescaling of the variables and the objective's curvature, so a
rescaled problem (``landscapes.sosp``) gets the same iterates.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.linalg.lapack import dtrtrs as _dtrtrs

from theory.errors import UserInputError

__all__ = ["LbfgsResult", "lbfgs"]

_C1, _C2 = 1e-4, 0.9


@dataclass(frozen=True)
class LbfgsResult:
    """End point of :func:`lbfgs`.

    ``stopped`` is ``"callback"``, ``"max_iter"``, ``"grad_zero"``, ``"no_progress"`` (round-off
    floor: see :func:`lbfgs`) or ``"line_search"`` (no step satisfying the Wolfe conditions was
    found).
    """

    x: np.ndarray
    fun: float
    grad: np.ndarray
    iterations: int
    evaluations: int
    stopped: str


def lbfgs(
    fun: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x0: np.ndarray,
    *,
    memory: int = 20,
    max_iter: int = 20000,
    patience: int = 10,
    callback: Callable[[np.ndarray, np.ndarray, int], bool] | None = None,
) -> LbfgsResult:
    r"""Minimize a smooth ``fun`` (returning value and gradient) from ``x0`` with L-BFGS.

    ``callback(x, g, k)`` is called with every accepted iterate ``x``, its gradient ``g`` and
    ``k = 1, 2, ...``; returning ``True`` stops.  The iteration also stops (``"no_progress"``)
    after ``patience`` accepted steps that lower neither the smallest value nor the smallest
    gradient norm seen, and then returns the last iterate that lowered one of them.  ``fun`` must
    not keep references to the array it is given (it is not copied).
    """
    if not (isinstance(memory, int) and memory >= 1):
        raise UserInputError(f"memory: expected an int >= 1, got {memory!r}")
    if not (isinstance(patience, int) and patience >= 1):
        raise UserInputError(f"patience: expected an int >= 1, got {patience!r}")
    x = np.array(x0, dtype=np.float64)
    if x.ndim != 1:
        raise UserInputError(f"x0: expected a 1-D array, got shape {x.shape}")
    count = [0]

    def call(v: np.ndarray) -> tuple[float, np.ndarray]:
        count[0] += 1
        return fun(v)

    f, g = call(x)
    n = x.size
    S = np.zeros((memory, n))  # history rows, stored cyclically in slots
    Y = np.zeros((memory, n))
    order: list[int] = []  # slots, oldest first
    R = np.zeros((0, 0))  # upper triangle of S Y^T, chronological order
    YY = np.zeros((0, 0))
    gamma = 1.0
    it = 0
    stopped = "max_iter"
    # Progress: the smallest value and the smallest gradient norm so far.  Steps within the
    # round-off allowance may raise f slightly; after `patience` accepted steps that improve
    # neither, the iteration is at its round-off floor and stops, returning the last iterate
    # that improved one of them (so f cannot drift up over many noise-level steps).
    best_f, best_g, keep, stale = f, float(np.linalg.norm(g)), (x, f, g), 0
    while it < max_iter:
        if not np.any(g):
            stopped = "grad_zero"
            break
        d = -_apply_inverse(g, S, Y, R, YY, order, gamma)
        slope = float(g @ d)
        if not slope < 0.0:  # numerical breakdown of the approximation: restart as steepest descent
            order.clear()
            R, YY = np.zeros((0, 0)), np.zeros((0, 0))
            gamma = 1.0
            d, slope = -g, -float(g @ g)
        gg = float(g @ g)
        if not gg > 0.0:  # the gradient underflows
            stopped = "grad_zero"
            break
        # First step of a steepest-descent direction: as long as the point itself (||x|| / ||g||,
        # which scales like a step under a rescaling of the problem), or 1 / ||g|| at x = 0.
        xx = float(x @ x)
        first = math.sqrt(xx / gg) if xx > 0.0 else 1.0 / math.sqrt(gg)
        found = _weak_wolfe(call, x, d, f, slope, 1.0 if order else first)
        if found is None:
            stopped = "line_search"
            break
        xn, fn, gn = found
        s, y = xn - x, gn - g
        sy, yy = float(s @ y), float(y @ y)
        if yy > 0.0 and sy > 1e-12 * math.sqrt(float(s @ s) * yy):
            if len(order) == memory:
                slot = order.pop(0)
                R, YY = R[1:, 1:], YY[1:, 1:]
            else:
                slot = len(order)
            S[slot], Y[slot] = s, y
            order.append(slot)
            k = len(order)
            sy_col = (S @ y)[order]  # s_i . y_new, chronological
            yy_col = (Y @ y)[order]
            Rn = np.zeros((k, k))
            Rn[: k - 1, : k - 1] = R
            Rn[:, k - 1] = sy_col
            YYn = np.empty((k, k))
            YYn[: k - 1, : k - 1] = YY
            YYn[:, k - 1] = YYn[k - 1, :] = yy_col
            R, YY = Rn, YYn
            gamma = sy / yy
        x, f, g = xn, fn, gn
        it += 1
        gn_norm = float(np.linalg.norm(g))
        if f < best_f or gn_norm < best_g:
            best_f, best_g, keep, stale = min(best_f, f), min(best_g, gn_norm), (x, f, g), 0
        else:
            stale += 1
        if callback is not None and callback(x, g, it):
            stopped = "callback"
            break
        if stale >= patience:
            stopped = "no_progress"
            x, f, g = keep
            break
    return LbfgsResult(x=x, fun=float(f), grad=g, iterations=it, evaluations=count[0], stopped=stopped)


def _weak_wolfe(
    call: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x: np.ndarray,
    d: np.ndarray,
    f: float,
    slope: float,
    alpha: float,
    *,
    max_evals: int = 60,
) -> tuple[np.ndarray, float, np.ndarray] | None:
    r"""A step along ``d`` meeting the weak Wolfe conditions, by bracketing and bisection.

    Lewis and Overton (2013, Math. Program. 141): with ``phi(t) = fun(x + t d)``, keep
    ``phi(t) <= phi(0) + c1 t phi'(0)`` (sufficient decrease) and ``phi'(t) >= c2 phi'(0)``
    (curvature); double ``t`` until the first fails to hold or the second holds, then bisect.
    Sufficient decrease is allowed the round-off of ``f`` (``100 eps |f|``): near a minimizer the
    decrease of ``f`` falls below it while the gradient is still well above round-off.  ``None``
    when no step is found within ``max_evals`` evaluations.
    """
    noise = 100.0 * np.finfo(np.float64).eps * abs(f)
    lo, hi = 0.0, math.inf
    for _ in range(max_evals):
        xn = x + alpha * d
        fn, gn = call(xn)
        if not fn <= f + _C1 * alpha * slope + noise:  # also catches NaN
            hi = alpha
        elif float(gn @ d) < _C2 * slope:
            lo = alpha
        else:
            return xn, fn, gn
        alpha = 0.5 * (lo + hi) if hi < math.inf else 2.0 * lo
        if hi - lo <= 1e-16 * max(lo, 1e-300):
            break
    return None


def _apply_inverse(
    g: np.ndarray, S: np.ndarray, Y: np.ndarray, R: np.ndarray, YY: np.ndarray, order: list[int], gamma: float
) -> np.ndarray:
    """``H g`` for the compact L-BFGS inverse-Hessian approximation (module docstring).

    ``S``, ``Y`` hold the pairs in slots ``order`` (oldest first); ``R`` (upper triangle of
    ``S Y^T``) and ``YY`` are ``k x k`` in chronological order, ``k = len(order)``.
    """
    k = len(order)
    if k == 0:
        return g.copy()
    o = order
    a = (S @ g)[o]
    b = (Y @ g)[o]
    r1 = _dtrtrs(R, a, lower=0, trans=0)[0]
    inner = np.diag(R) * r1 + gamma * (YY @ r1) - gamma * b
    top = _dtrtrs(R, inner, lower=0, trans=1)[0]
    cs = np.zeros(S.shape[0])
    cy = np.zeros(S.shape[0])
    cs[o], cy[o] = top, -gamma * r1
    return gamma * g + cs @ S + cy @ Y
