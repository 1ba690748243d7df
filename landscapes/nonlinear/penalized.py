r"""The penalized full problem :math:`\min_X L_{\mathrm{full}}(X) + \sum_j \lambda_j\|X_j\|_*` ([KKR25]).

For ``r >= r*`` its global minimum is the global minimum of the LoRA objective
:math:`L^{\mathrm{lora}}_\lambda`, so it is the yardstick that decides whether a LoRA end point is
a *global* minimizer or a *spurious* one.  :func:`minimize_penalized` returns a reference
minimizer and says how much is known about it:

* ``method="nuc"``: the risk is a linearized (convex) problem (``problem.linear``); the certified
  NUC solver of :mod:`landscapes.nuc` solves it and its duality gap bounds the suboptimality.
* ``method="proximal-gradient"``: any other risk.  Monotone FISTA with backtracking
  (Beck & Teboulle's MFISTA) and singular-value thresholding from several starts (the planted
  :math:`X^\star`, zero, and any points passed in), keeping the best.  The objective is not
  convex, so this is the best point *found*.  Lower bounds: 0 for a non-negative risk (it
  certifies the minimum when ``lam = 0`` and the risk reaches 0: planted noiseless teachers), and
  a closed-form minimum that a family states in ``meta["penalized_minimum"]`` (the double well).

Whatever the method, the reference is a feasible point, so an end point whose penalized value
exceeds the reference's by more than round-off is *certified* non-global; "global" is certified
only when ``certified`` is ``True``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from landscapes.nonlinear.problems import Blocks, NonlinearProblem
from landscapes.nuc import _spectra, singular_value_threshold, solve_nuc
from theory.errors import UserInputError

__all__ = ["PenalizedMinimum", "minimize_penalized", "prox_gradient_residual"]


@dataclass(frozen=True)
class PenalizedMinimum:
    r"""A reference minimizer of :math:`L_{\mathrm{full}} + \sum_j\lambda_j\|X_j\|_*`.

    Attributes
    ----------
    X
        The point, one matrix per block.
    value, risk
        Its penalized value and its risk.
    lower_bound
        A certified lower bound on the minimum (NUC dual value; 0 for a non-negative risk;
        ``-inf`` when nothing is known).
    certified
        ``value - lower_bound <= gap_tol`` (then ``X`` is a certified global minimizer up to
        ``gap_tol``).
    method
        ``"nuc"`` or ``"proximal-gradient"``.
    stationarity
        Frobenius norm of the proximal-gradient residual :math:`(X - \operatorname{prox}_{t\lambda
        \|\cdot\|_*}(X - t\nabla L(X)))/t` (0 at a stationary point of the penalized problem).
    starts
        Penalized value reached from each start (proximal gradient) or the NUC certificate.
    singular_values, ranks
        Spectrum of each block and its numerical rank (relative ``1e-8``).
    """

    X: Blocks
    value: float
    risk: float
    lower_bound: float
    certified: bool
    gap_tol: float
    method: str
    stationarity: float
    starts: Mapping[str, float]
    singular_values: tuple[tuple[float, ...], ...]
    ranks: tuple[int, ...]
    seconds: float

    @property
    def rank(self) -> int:
        """The largest block rank (``r*`` of [KKR25] for one block)."""
        return max(self.ranks) if self.ranks else 0

    @property
    def frobenius(self) -> float:
        r""":math:`\|X\|_F` over all blocks."""
        return math.sqrt(sum(s * s for sv in self.singular_values for s in sv))

    def to_dict(self) -> dict[str, Any]:
        """Plain data for reports (without the matrices)."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "X"}
        out["starts"] = dict(self.starts)
        out["rank"] = self.rank
        out["frobenius"] = self.frobenius
        return out


def _prox(problem: NonlinearProblem, Y: Blocks, G: Blocks, t: float) -> Blocks:
    return tuple(singular_value_threshold(y - t * g, t * lam)[0] for y, g, lam in zip(Y, G, problem.lam))


def _inner(a: Sequence[Tensor], b: Sequence[Tensor]) -> float:
    return float(sum((x * y).sum() for x, y in zip(a, b)))


def prox_gradient_residual(problem: NonlinearProblem, X: Sequence[Tensor], *, step: float = 1e-2) -> float:
    r"""The proximal-gradient residual of the penalized problem at ``X``.

    :math:`\|X - \operatorname{prox}_{t\lambda\|\cdot\|_*}(X - t\nabla L(X))\|/t` at
    ``t = step``; 0 exactly at the stationary points of the penalized problem.
    """
    Xs = problem.check_point(X)
    P = _prox(problem, Xs, problem.grad(Xs), step)
    return math.sqrt(sum(float((x - p).pow(2).sum()) for x, p in zip(Xs, P))) / step


def _mfista(
    problem: NonlinearProblem, X0: Blocks, *, max_iter: int, tol: float, deadline: float
) -> tuple[Blocks, float]:
    """Monotone FISTA with backtracking from ``X0``; returns the best point and its penalized value."""
    x = X0
    F_x = problem.penalized(x)
    y, t_k, step = x, 1.0, 1.0
    x_prev = x
    for _ in range(max_iter):
        if time.perf_counter() > deadline:
            break
        Ly = problem.value(y)
        gy = problem.grad(y)
        while True:
            z = _prox(problem, y, gy, step)
            d = tuple(a - b for a, b in zip(z, y))
            Lz = problem.value(z)
            if Lz <= Ly + _inner(gy, d) + _inner(d, d) / (2 * step) + 1e-15 * abs(Ly):
                break
            step *= 0.5
            if step < 1e-14:
                return x, F_x
        F_z = problem.penalized_at(z, Lz)
        x_prev = x
        if F_z <= F_x:
            x, F_x = z, F_z
        t_next = (1 + math.sqrt(1 + 4 * t_k * t_k)) / 2
        y = tuple(
            xx + (t_k / t_next) * (zz - xx) + ((t_k - 1) / t_next) * (xx - xp)
            for xx, zz, xp in zip(x, z, x_prev)
        )
        t_k = t_next
        if math.sqrt(_inner(d, d)) / step <= tol:
            break
        step *= 1.25  # let the step grow again (backtracking shrinks it)
    return x, F_x


def minimize_penalized(
    problem: NonlinearProblem,
    *,
    starts: Mapping[str, Sequence[Tensor]] | None = None,
    gap_tol: float = 1e-8,
    tol: float = 1e-9,
    max_iter: int = 5000,
    time_limit: float | None = None,
) -> PenalizedMinimum:
    r"""A reference minimizer of the penalized problem (see the module docstring).

    Parameters
    ----------
    problem
        Every ``lam_j`` must be positive for the NUC route; the proximal-gradient route also
        takes ``lam = 0`` (then it minimizes the risk).
    starts
        Extra starting points for the proximal-gradient route (name -> point); the planted
        ``x_star`` (when known) and zero are always tried.
    gap_tol
        ``certified`` is ``value - lower_bound <= gap_tol * max(1, |value|)``.
    tol
        Stopping tolerance on the proximal-gradient residual.
    max_iter
        Iterations per start of the proximal-gradient route.
    time_limit
        Seconds for the whole proximal-gradient route (the best point so far is returned).
    """
    if not (isinstance(gap_tol, float) and gap_tol > 0):
        raise UserInputError(f"gap_tol: expected a positive float, got {gap_tol!r}")
    if not (isinstance(tol, float) and tol > 0):
        raise UserInputError(f"tol: expected a positive float, got {tol!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise UserInputError(f"max_iter: expected a positive int, got {max_iter!r}")
    if time_limit is not None and not (isinstance(time_limit, (int, float)) and 0 < time_limit < math.inf):
        raise UserInputError(f"time_limit: expected None or a positive number of seconds, got {time_limit!r}")
    t0 = time.perf_counter()
    deadline = math.inf if time_limit is None else t0 + float(time_limit)
    if problem.linear is not None and all(lam > 0 for lam in problem.lam):
        sol = solve_nuc(problem.linear, gap_rtol=gap_tol)
        X = tuple(x.to(dtype=problem.dtype, device=problem.device) for x in sol.D)
        c = sol.certificate
        svs, ranks = _spectra(X, 1e-8)
        value = problem.penalized(X)
        return PenalizedMinimum(
            X=X,
            value=value,
            risk=problem.value(X),
            lower_bound=c.dual,
            certified=sol.converged,
            gap_tol=gap_tol,
            method="nuc",
            stationarity=prox_gradient_residual(problem, X),
            starts={"nuc_primal": c.primal, "nuc_dual": c.dual, "nuc_rel_gap": c.rel_gap},
            singular_values=svs,
            ranks=ranks,
            seconds=time.perf_counter() - t0,
        )
    tries: dict[str, Blocks] = {}
    if problem.x_star is not None:
        tries["x_star"] = problem.x_star
    tries["zero"] = problem.zeros()
    for name, pt in (starts or {}).items():
        tries[str(name)] = problem.check_point(pt, f"starts[{name!r}]")
    results: dict[str, float] = {}
    best: tuple[Blocks, float] | None = None
    for name, X0 in tries.items():
        X, F = _mfista(problem, X0, max_iter=max_iter, tol=tol, deadline=deadline)
        results[name] = F
        if best is None or F < best[1]:
            best = (X, F)
    assert best is not None
    X, value = best
    lower = 0.0 if problem.meta.get("risk_nonnegative", False) else -math.inf
    # A family may know its minimum in closed form (e.g. the double well): a certified lower bound.
    if "penalized_minimum" in problem.meta:
        lower = max(lower, float(problem.meta["penalized_minimum"]))
    svs, ranks = _spectra(X, 1e-8)
    return PenalizedMinimum(
        X=X,
        value=value,
        risk=problem.value(X),
        lower_bound=lower,
        certified=value - lower <= gap_tol * max(1.0, abs(value)),
        gap_tol=gap_tol,
        method="proximal-gradient",
        stationarity=prox_gradient_residual(problem, X),
        starts=results,
        singular_values=svs,
        ranks=ranks,
        seconds=time.perf_counter() - t0,
    )
