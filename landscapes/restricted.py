r"""Monte-Carlo estimates of the restricted constants of [KKR25] about a minimizer :math:`X^\star`.

On the set :math:`\mathcal S_{r,D} = \{X : \operatorname{rank} X_j \le r,\ \|X - X^\star\|_F \le D\}`:

* **RSC** -- the largest :math:`\alpha` with
  :math:`\langle \nabla f(X) - \nabla f(X^\star), X - X^\star\rangle \ge \alpha \|X - X^\star\|_F^2`
  on :math:`\mathcal S_{r,D}`;
* **RSM** -- the smallest :math:`\beta` with
  :math:`\nabla^2 f(X)[UX + XV, UX + XV] \le \beta \|UX + XV\|_F^2` on :math:`\mathcal S_{r,D}`
  for all rank-one ``U`` (``m x m``), ``V`` (``n x n``) of unit Frobenius norm.

Both are an infimum / supremum over a set, so sampling gives one-sided answers: the smallest
sampled RSC ratio :math:`\hat\alpha` is an **upper** estimate of :math:`\alpha`, and the largest
sampled RSM ratio :math:`\hat\beta` a **lower** estimate of :math:`\beta`.  Hence what samples can
certify, by witnesses, is:

* ``"no-rsc"`` -- :math:`\hat\alpha \le 0`: restricted strong convexity fails on the set
  (:math:`\alpha \le 0`), so neither regime of [KKR25] applies;
* ``"generic"`` -- :math:`2\hat\alpha \le \hat\beta` (with a round-off margin) and
  :math:`\hat\alpha > 0`: then :math:`2\alpha \le \beta` -- the generic regime, *if* RSC holds
  at all (:math:`\alpha > 0`, which sampling can never certify).

:math:`2\hat\alpha > \hat\beta` (the special regime) is only ever an estimate by sampling.

Two-sided information comes from structure, not samples (:func:`restricted_bounds`):

* a risk that is a convex quadratic (``problem.linear`` with the squared loss: matrix sensing,
  linearized squared-loss problems) has Hessian :math:`H = J^\top J / N` everywhere, so
  :math:`\lambda_{\min}(H) \le \alpha` and :math:`\beta \le \lambda_{\max}(H)` on every set:
  :math:`2\lambda_{\min}(H) > \lambda_{\max}(H)` *certifies* the special regime;
* any linearized risk (``problem.linear``) has :math:`\beta \le \ell''_{\max}\|J\|_{op}^2 / N`;
* a linearized risk with a low-rank null direction :math:`D = UV^\top`, :math:`J\operatorname{vec}
  D = 0` (found by :func:`null_direction`), has RSC ratio exactly 0 along :math:`X^\star + tD`
  (the predictions do not move), so :math:`\alpha \le 0` whenever that point lies in the set.

Sampling :math:`\mathcal S_{r,D}`: :math:`X = (P + tE)(Q + tF)^\top` with :math:`X^\star = PQ^\top`
(balanced factors padded to ``r`` columns) and Gaussian ``E``, ``F``, so every sample has rank
:math:`\le r`; ``t`` is set by bisection so that :math:`\|X - X^\star\|_F = uD`, with ``u``
log-uniform in ``[min_fraction, 1]`` (near and far points alike).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from landscapes.lora import balanced_factors
from landscapes.nonlinear import NonlinearProblem

__all__ = [
    "RestrictedConstants",
    "RestrictedBounds",
    "restricted_constants",
    "restricted_bounds",
    "null_direction",
    "rsc_ratio",
    "rsm_ratio",
    "sample_restricted_set",
]

Blocks = tuple[Tensor, ...]


@dataclass(frozen=True)
class RestrictedConstants:
    r"""Sampled RSC / RSM constants and the regime they imply.

    ``alpha`` is the smallest sampled RSC ratio (an upper estimate of the true constant),
    ``beta`` the largest sampled RSM ratio (a lower estimate).  ``regime``: ``"no-rsc"``
    (certified: a sample has a non-positive RSC ratio), ``"generic"`` (certified, given RSC:
    the samples witness :math:`2\alpha \le \beta`), or ``"special"`` (estimated only:
    ``certified`` is ``False``; more samples or a search could still find the generic regime).
    Quantiles describe the spread of the sampled ratios; distances are
    :math:`\|X - X^\star\|_F` of the extreme samples.
    """

    alpha: float
    beta: float
    regime: str
    certified: bool
    rank: int
    radius: float
    samples: int
    alpha_quantiles: dict[str, float]
    beta_quantiles: dict[str, float]
    alpha_distance: float
    beta_distance: float

    def to_dict(self) -> dict[str, Any]:
        """Plain data for reports."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _dist(X: Sequence[Tensor], Y: Sequence[Tensor]) -> float:
    return math.sqrt(sum(float((x - y).pow(2).sum()) for x, y in zip(X, Y)))


def sample_restricted_set(
    x_star: Sequence[Tensor], rank: int, distance: float, generator: torch.Generator
) -> Blocks:
    r"""One point ``X`` with every block of rank ``<= rank`` and :math:`\|X - X^\star\|_F = ` ``distance``."""
    pt = balanced_factors(tuple(x_star), rank=rank)
    factors = list(zip(pt.U, pt.V))
    dirs = [
        (
            torch.randn(u.shape, generator=generator, dtype=torch.float64).to(u),
            torch.randn(v.shape, generator=generator, dtype=torch.float64).to(v),
        )
        for u, v in factors
    ]

    def at(t: float) -> Blocks:
        return tuple((u + t * e) @ (v + t * f).T for (u, v), (e, f) in zip(factors, dirs))

    scale = math.sqrt(sum(float(x.pow(2).sum()) for x in x_star)) or 1.0
    hi = 1.0
    while _dist(at(hi), x_star) < distance:
        hi *= 2.0
        if hi > 1e12 * max(1.0, scale):
            break
    lo = 0.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if _dist(at(mid), x_star) < distance:
            lo = mid
        else:
            hi = mid
    return at(lo)  # the inner end of the bisection bracket: distance <= the requested one


def _quantiles(v: Tensor, qs: dict[str, float]) -> dict[str, float]:
    return {k: float(torch.quantile(v, q)) for k, q in qs.items()}


def rsc_ratio(
    problem: NonlinearProblem,
    X: Sequence[Tensor],
    x_star: Sequence[Tensor],
    *,
    grad_star: Sequence[Tensor] | None = None,
) -> tuple[float, float]:
    r"""The RSC ratio at ``X`` about :math:`X^\star`, and the distance :math:`\|X - X^\star\|_F`.

    The ratio is :math:`\langle \nabla f(X) - \nabla f(X^\star), X - X^\star\rangle / \|X - X^\star\|_F^2`;
    ``grad_star`` is :math:`\nabla f(X^\star)` when already known.  ``nan`` at ``X = X*``.
    """
    g0 = problem.grad(x_star) if grad_star is None else grad_star
    D = tuple(x - x0 for x, x0 in zip(X, x_star))
    num = sum(float(((a - b) * d).sum()) for a, b, d in zip(problem.grad(X), g0, D))
    den = sum(float(d.pow(2).sum()) for d in D)
    return (num / den if den > 0 else math.nan), math.sqrt(den)


def rsm_ratio(problem: NonlinearProblem, X: Sequence[Tensor], generator: torch.Generator) -> float:
    r"""One RSM ratio :math:`\nabla^2 f(X)[Z, Z] / \|Z\|_F^2` at ``X``.

    :math:`Z = UX + XV` with random rank-one ``U``, ``V`` of unit Frobenius norm, from
    ``generator`` (four Gaussian vectors per block); ``nan`` when ``Z = 0``.
    """
    Z = []
    for x in X:
        m, n = x.shape
        a = torch.randn(m, generator=generator, dtype=torch.float64).to(x)
        b = torch.randn(m, generator=generator, dtype=torch.float64).to(x)
        c = torch.randn(n, generator=generator, dtype=torch.float64).to(x)
        d = torch.randn(n, generator=generator, dtype=torch.float64).to(x)
        Uo = torch.outer(a, b) / (a.norm() * b.norm())
        Vo = torch.outer(c, d) / (c.norm() * d.norm())
        Z.append(Uo @ x + x @ Vo)
    zz = sum(float(z.pow(2).sum()) for z in Z)
    return problem.curvature(tuple(X), tuple(Z)) / zz if zz > 0 else math.nan


def restricted_constants(
    problem: NonlinearProblem,
    *,
    rank: int,
    radius: float,
    x_star: Sequence[Tensor] | None = None,
    samples: int = 200,
    min_fraction: float = 1e-3,
    seed: int = 0,
) -> RestrictedConstants:
    r"""Estimate the (``rank``, ``radius``)-RSC and -RSM constants of the risk about :math:`X^\star`.

    ``x_star`` defaults to ``problem.x_star``.  Each of ``samples`` points of
    :math:`\mathcal S_{r,D}` gives one RSC ratio and one RSM ratio (a fresh random rank-one
    ``U``, ``V`` per point).  Costs ``samples`` gradients and ``samples`` Hessian-vector products.
    """
    if x_star is None and problem.x_star is None:
        raise ValueError(
            "x_star: expected a minimizer to measure about (the problem has no x_star; pass x_star=)"
        )
    X0 = problem.check_point(x_star if x_star is not None else problem.x_star, "x_star")  # type: ignore[arg-type]
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank: expected a positive int, got {rank!r}")
    for name, v in (("radius", radius), ("min_fraction", min_fraction)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0 and math.isfinite(v)):
            raise ValueError(f"{name}: expected a positive finite number, got {v!r}")
    if min_fraction > 1:
        raise ValueError(f"min_fraction: expected a number in (0, 1], got {min_fraction!r}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples: expected a positive int, got {samples!r}")
    for j, x in enumerate(X0):
        if int(torch.linalg.matrix_rank(x)) > rank:
            raise ValueError(
                f"rank: expected at least rank(x_star[{j}]) = {int(torch.linalg.matrix_rank(x))}, got {rank}"
            )
    gen = torch.Generator().manual_seed(seed)
    g0 = problem.grad(X0)
    rsc, rsm, dist_a, dist_b = [], [], [], []
    for _ in range(samples):
        u = min_fraction ** float(torch.rand((), generator=gen, dtype=torch.float64))
        X = sample_restricted_set(X0, rank, u * radius, gen)
        ratio, dist = rsc_ratio(problem, X, X0, grad_star=g0)
        rsc.append(ratio)
        dist_a.append(dist)
        curv = rsm_ratio(problem, X, gen)
        if not math.isnan(curv):
            rsm.append(curv)
            dist_b.append(dist)
    a_t = torch.tensor(rsc, dtype=torch.float64)
    b_t = torch.tensor(rsm if rsm else [math.nan], dtype=torch.float64)
    ia, ib = int(a_t.argmin()), int(torch.nan_to_num(b_t, nan=-math.inf).argmax())
    alpha, beta = float(a_t[ia]), float(b_t[ib])
    # A margin of round-off (the ratios come from float64 inner products).
    margin = 64 * torch.finfo(torch.float64).eps * max(abs(alpha), abs(beta), 1e-300)
    if alpha <= margin:
        regime, certified = "no-rsc", True
    elif 2 * alpha <= beta - margin:
        regime, certified = "generic", True
    else:
        regime, certified = "special", False
    return RestrictedConstants(
        alpha=alpha,
        beta=beta,
        regime=regime,
        certified=certified,
        rank=rank,
        radius=float(radius),
        samples=samples,
        alpha_quantiles=_quantiles(a_t, {"min": 0.0, "q05": 0.05, "median": 0.5}),
        beta_quantiles=_quantiles(b_t, {"median": 0.5, "q95": 0.95, "max": 1.0}) if rsm else {},
        alpha_distance=dist_a[ia],
        beta_distance=dist_b[ib] if rsm else math.nan,
    )


@dataclass(frozen=True)
class RestrictedBounds:
    r"""Rigorous bounds :math:`\alpha \ge` ``alpha_lower``, :math:`\beta \le` ``beta_upper`` from structure.

    Valid for every rank and radius.

    ``alpha_lower = -inf`` / ``beta_upper = inf`` when nothing is known; ``method`` names the
    argument; ``special_certified`` is :math:`2\,\alpha_{\rm lower} > \beta_{\rm upper}`.
    """

    alpha_lower: float
    beta_upper: float
    method: str

    @property
    def special_certified(self) -> bool:
        """``2 alpha_lower > beta_upper``: the special regime holds on every set."""
        return 2 * self.alpha_lower > self.beta_upper

    def to_dict(self) -> dict[str, Any]:
        """Plain data for reports."""
        return {
            "alpha_lower": self.alpha_lower,
            "beta_upper": self.beta_upper,
            "method": self.method,
            "special_certified": self.special_certified,
        }


def restricted_bounds(problem: NonlinearProblem, *, max_params: int = 4096) -> RestrictedBounds:
    r"""Rigorous bounds on the restricted constants from the structure of the risk (module docstring).

    Squared-loss linear form with a dense Jacobian and at most ``max_params`` parameters: the
    extreme eigenvalues of :math:`H = J^\top J / N` (``eigvalsh``; their round-off,
    :math:`\sim p\,\varepsilon\,\|H\|`, is subtracted from / added to the bounds).  Other linear
    forms: :math:`\beta \le \ell''_{\max}\|J\|^2_{op}/N`.  Anything else: no bounds.
    """
    lin = problem.linear
    if lin is None:
        return RestrictedBounds(-math.inf, math.inf, "none (not a linearized risk)")
    from landscapes.nuc import jacobian_op_norm_sq
    from landscapes.operators import DenseOperator

    if lin.loss.name == "squared" and isinstance(lin.J, DenseOperator) and lin.num_params <= max_params:
        J = lin.J.matrix.to(torch.float64)
        H = J.T @ J / lin.N
        ev = torch.linalg.eigvalsh(H)
        # Round-off of forming J^T J (KN terms per entry) and of eigvalsh (p): a generous margin.
        err = 8 * (H.shape[0] + lin.KN) * torch.finfo(torch.float64).eps * float(ev.abs().max())
        return RestrictedBounds(float(ev[0]) - err, float(ev[-1]) + err, "eigenvalues of H = J^T J / N")
    beta = lin.loss.max_curvature * jacobian_op_norm_sq(lin) / lin.N
    return RestrictedBounds(-math.inf, beta * (1 + 1e-12), "beta <= max loss curvature * ||J||_op^2 / N")


def null_direction(problem: Any, *, rank: int = 1, seed: int = 0) -> Blocks | None:
    r"""A direction :math:`D` with blocks of rank :math:`\le` ``rank`` and :math:`J\operatorname{vec}D = 0`.

    ``problem`` is a linearized :class:`~landscapes.problem.Problem` (or a
    :class:`NonlinearProblem` with ``linear``).  For each block ``j`` in turn (the others zero),
    a random ``V`` (``n_j x rank``) makes :math:`J \operatorname{vec}(UV^\top) = 0` linear in
    ``U``; a null vector of that ``KN x m_j rank`` matrix (from its SVD) gives ``U``.  Exists
    when :math:`m_j\,\mathrm{rank} > KN`; returns ``None`` when no block has one.  The result is
    normalized to unit Frobenius norm.
    """
    lin = getattr(problem, "linear", None) or problem
    if not hasattr(lin, "J") or not hasattr(lin, "KN"):
        raise ValueError(
            "problem: expected a linearized Problem (or a NonlinearProblem with .linear), "
            f"got {type(problem).__name__}"
        )
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank: expected a positive int, got {rank!r}")
    gen = torch.Generator().manual_seed(seed)
    offset = 0
    for j, (m, n) in enumerate(lin.blocks):
        k = min(rank, m, n)
        if m * k > lin.KN:
            V = torch.randn(n, k, generator=gen, dtype=torch.float64).to(dtype=lin.dtype, device=lin.device)
            # M u = J vec(U V^T) for u = vec(U) (row-major): column (a, c) is J vec(e_a V[:, c]^T).
            dense = getattr(lin.J, "matrix", None)
            if dense is not None:
                Jj = dense[:, offset : offset + m * n].reshape(lin.KN, m, n)
                M = torch.einsum("kab,bc->kac", Jj, V).reshape(lin.KN, m * k)
            else:
                cols = []
                for a in range(m):
                    for c in range(k):
                        E = [torch.zeros(mm, nn, dtype=lin.dtype, device=lin.device) for mm, nn in lin.blocks]
                        E[j][a] = V[:, c]
                        cols.append(lin.J.matvec(lin.vec(E)))
                M = torch.stack(cols, dim=1)
            Vh = torch.linalg.svd(M, full_matrices=True)[2]
            u = Vh[-1].reshape(m, k)
            D = [torch.zeros(mm, nn, dtype=lin.dtype, device=lin.device) for mm, nn in lin.blocks]
            D[j] = u @ V.T
            norm = math.sqrt(sum(float(d.pow(2).sum()) for d in D))
            if norm > 0:
                return tuple(d / norm for d in D)
        offset += m * n
    return None
