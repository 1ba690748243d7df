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
Random samples can sit far above the true :math:`\alpha` (they rarely meet the flattest
directions); :func:`rsc_search` aims at those directions (projected power iteration on the
Hessian at :math:`X^\star`) and returns a point of the set whose ratio is a sharper upper bound.

Two-sided information comes from structure, not samples (:func:`restricted_bounds`):

* a risk that is a convex quadratic (``problem.linear`` with the squared loss: matrix sensing,
  linearized squared-loss problems) has Hessian :math:`H = J^\top J / N` everywhere, so
  :math:`\lambda_{\min}(H) \le \alpha` and :math:`\beta \le \lambda_{\max}(H)` on every set:
  :math:`2\lambda_{\min}(H) > \lambda_{\max}(H)` *certifies* the special regime;
* any linearized risk (``problem.linear``) has :math:`\beta \le \ell''_{\max}\|J\|_{op}^2 / N`;
* a generalized-linear sensing risk (:func:`~landscapes.nonlinear.problems.nonlinear_sensing`; the risk
  function declares ``risk.structure``) has :math:`\nabla^2 f(Y) = \frac1N\sum_i c_i(\langle
  M_i, Y\rangle)\operatorname{vec}M_i\operatorname{vec}M_i^\top`; on :math:`\mathcal S_{r,D}`
  each :math:`\langle M_i, Y\rangle` stays in an interval of half-width :math:`D` times a Ky Fan
  norm of :math:`M_i`, so certified ranges :math:`[c_i^-, c_i^+]` of the link's curvature there
  give :math:`\alpha \ge \lambda_{\min}(\frac1N\sum_i c_i^- m_i m_i^\top)` and
  :math:`\beta \le \lambda_{\max}(\frac1N\sum_i c_i^+ m_i m_i^\top)`
  (:func:`sensing_bounds`); the first is over all directions, so vacuous when :math:`mn > N`.
  Other non-quadratic risks: no certified :math:`\alpha` (the full Hessian is singular when
  :math:`mn > KN`, so a Lipschitz bound alone cannot give :math:`\alpha > 0`);
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
from landscapes.nonlinear.problems import Blocks, NonlinearProblem, SensingStructure
from theory.errors import InputTypeError, UserInputError

__all__ = [
    "RestrictedWitnesses",
    "restricted_witnesses",
    "RestrictedConstants",
    "RestrictedBounds",
    "restricted_constants",
    "restricted_bounds",
    "sensing_bounds",
    "certified_radius",
    "rsc_search",
    "RscWitness",
    "curvature_range",
    "link_curvature",
    "null_direction",
    "rsc_ratio",
    "rsm_ratio",
    "sample_restricted_set",
]


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


def _center(problem: NonlinearProblem, x_star: Sequence[Tensor] | None, rank: int, purpose: str) -> Blocks:
    """The point to ``purpose`` about (``x_star`` or ``problem.x_star``), checked; ``rank`` a positive int."""
    if x_star is None and problem.x_star is None:
        raise UserInputError(
            f"x_star: expected a minimizer to {purpose} about (the problem has no x_star; pass x_star=)"
        )
    X0 = problem.check_point(x_star if x_star is not None else problem.x_star, "x_star")  # type: ignore[arg-type]
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise UserInputError(f"rank: expected a positive int, got {rank!r}")
    return X0


def _check_rank_covers(X0: Blocks, rank: int) -> None:
    """Raise ``ValueError`` when a block of ``X0`` has rank above ``rank`` (the set would not contain it)."""
    for j, x in enumerate(X0):
        if int(torch.linalg.matrix_rank(x)) > rank:
            raise UserInputError(
                f"rank: expected at least rank(x_star[{j}]) = {int(torch.linalg.matrix_rank(x))}, got {rank}"
            )


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
    X0 = _center(problem, x_star, rank, "measure")
    for name, v in (("radius", radius), ("min_fraction", min_fraction)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0 and math.isfinite(v)):
            raise UserInputError(f"{name}: expected a positive finite number, got {v!r}")
    if min_fraction > 1:
        raise UserInputError(f"min_fraction: expected a number in (0, 1], got {min_fraction!r}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise UserInputError(f"samples: expected a positive int, got {samples!r}")
    _check_rank_covers(X0, rank)
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

    With ``radius = None`` valid for every rank and radius; otherwise valid on the set
    :math:`\mathcal S_{r,D}` with :math:`D =` ``radius`` and :math:`r =` ``rank`` (``None``: any
    rank) about the ``x_star`` they were computed for.

    ``alpha_lower = -inf`` / ``beta_upper = inf`` when nothing is known; ``method`` names the
    argument; ``special_certified`` is :math:`2\,\alpha_{\rm lower} > \beta_{\rm upper}`.
    """

    alpha_lower: float
    beta_upper: float
    method: str
    radius: float | None = None
    rank: int | None = None

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
            **({} if self.radius is None else {"radius": self.radius, "rank": self.rank}),
        }


def link_curvature(link: str, z: Tensor, y: Tensor) -> Tensor:
    r"""The Hessian weight :math:`c(z) = \phi'(z)^2 + (\phi(z) - y)\,\phi''(z)` of one measurement.

    For :math:`\ell(z) = \frac12(\phi(z) - y)^2`, :math:`\ell''(z) = c(z)`.  ``link``:
    ``"identity"`` (:math:`c = 1`), ``"tanh"`` (:math:`t = \tanh z`:
    :math:`c = (1 - t^2)(1 - 3t^2 + 2yt)`), ``"softplus"`` (:math:`\phi = \log(1 + e^z)`,
    :math:`\sigma` the logistic function: :math:`c = \sigma^2 + (\phi - y)\,\sigma(1 - \sigma)`).
    ``z`` and ``y`` broadcast.
    """
    if link == "identity":
        return torch.ones_like(z + y)
    if link == "tanh":
        t = torch.tanh(z)
        d = 1 - t * t
        return d * d - 2 * (t - y) * t * d
    if link == "softplus":
        s = torch.sigmoid(z)
        p = s * torch.sigmoid(-z)  # sigma (1 - sigma) without cancellation
        return s * s + (torch.logaddexp(z, torch.zeros_like(z)) - y) * p
    raise UserInputError(f"link: expected one of 'identity', 'tanh', 'softplus', got {link!r}")


def _curvature_slack(link: str, lo: Tensor, hi: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    r"""Per interval: a bound ``k2`` on :math:`|c''|` over ``[lo, hi]`` and ``ev`` on the round-off of ``c``.

    tanh (:math:`c = g(t)`, :math:`t = \tanh z`, :math:`g(t) = 3t^4 - 2yt^3 - 4t^2 + 2yt + 1`):
    :math:`c'' = g''(t)(1 - t^2)^2 - 2t(1 - t^2)g'(t)`, :math:`|g''| \le 44 + 12|y|`,
    :math:`|g'| \le 20 + 8|y|` on :math:`|t| \le 1`, so
    :math:`|c''| \le (1 - t_{\min}^2)[(44 + 12|y|)(1 - t_{\min}^2) + 2(20 + 8|y|)]` with
    :math:`t_{\min} = \min |t|` on the interval.  softplus (:math:`p = \sigma(1 - \sigma) \le 1/4`,
    :math:`u = 3\sigma + (\phi - y)(1 - 2\sigma)`): :math:`c' = pu`,
    :math:`c'' = p[(1 - 2\sigma)u + 3p + \sigma(1 - 2\sigma) - 2(\phi - y)p]`, so
    :math:`|c''| \le (4.75 + 1.5S)/4` with :math:`S = \max|\phi - y|` on the interval (at an end,
    :math:`\phi` being monotone).  Both are inflated by 1 % against round-off.
    """
    eps = torch.finfo(torch.float64).eps
    ay = y.abs()
    if link == "identity":
        return torch.zeros_like(lo), torch.zeros_like(lo)
    if link == "tanh":
        ta, tb = torch.tanh(lo).abs(), torch.tanh(hi).abs()
        tmin = torch.where((lo <= 0) & (hi >= 0), torch.zeros_like(ta), torch.minimum(ta, tb))
        q = (1 - tmin * tmin).clamp(min=0) + 4 * eps
        k2 = q * ((44 + 12 * ay) * q + 2 * (20 + 8 * ay))
        return 1.01 * k2, 64 * eps * (1 + ay)
    zero = torch.zeros_like(lo)
    S = torch.maximum((torch.logaddexp(lo, zero) - y).abs(), (torch.logaddexp(hi, zero) - y).abs())
    S = S * (1 + 1e-12) + 4 * eps * (hi.abs() + ay + 1)
    return 1.01 * (4.75 + 1.5 * S) / 4, 64 * eps * (1 + S + ay)


def curvature_range(
    link: str, lo: Tensor, hi: Tensor, y: Tensor, *, points: int = 4097
) -> tuple[Tensor, Tensor]:
    r"""Certified bounds :math:`c_i^- \le \min c \le \max c \le c_i^+` on intervals (:func:`link_curvature`).

    ``c`` is evaluated on ``points`` equally spaced points of each interval (ends included);
    on a cell of length ``h`` a function with :math:`|c''| \le K_2` lies within
    :math:`K_2 h^2 / 8` of its chord, so the smallest (largest) grid value minus (plus)
    :math:`K_2 h_{\max}^2 / 8` and a round-off allowance for evaluating ``c`` bounds the minimum
    (maximum) over the interval.  :math:`K_2` is the closed-form bound of the link's
    :math:`|c''|` on the interval (``_curvature_slack``).  ``lo``, ``hi``, ``y``: shape ``(N,)``.
    For softplus, intervals reaching above ``z = 20`` also contain ``c = 1``, the weight of
    ``torch.nn.functional.softplus`` there (it returns ``z`` itself).
    """
    if isinstance(points, bool) or not isinstance(points, int) or points < 2:
        raise UserInputError(f"points: expected an int >= 2, got {points!r}")
    for name, v in (("lo", lo), ("hi", hi), ("y", y)):
        if not isinstance(v, Tensor) or v.ndim != 1:
            raise UserInputError(
                f"{name}: expected a 1-d tensor, got {getattr(v, 'shape', type(v).__name__)}"
            )
    if not (lo.shape == hi.shape == y.shape):
        shapes = f"{tuple(lo.shape)}, {tuple(hi.shape)}, {tuple(y.shape)}"
        raise UserInputError(f"lo, hi, y: expected one shape, got {shapes}")
    lo, hi, y = (v.to(torch.float64) for v in (lo, hi, y))
    if not (torch.isfinite(lo).all() and torch.isfinite(hi).all() and bool((lo <= hi).all())):
        raise UserInputError("lo, hi: expected finite intervals with lo <= hi")
    frac = torch.linspace(0.0, 1.0, points, dtype=torch.float64, device=lo.device)
    Z = lo[:, None] + (hi - lo)[:, None] * frac[None, :]
    Z[:, 0], Z[:, -1] = lo, hi
    h = torch.diff(Z, dim=1).max(dim=1).values
    C = link_curvature(link, Z, y[:, None])
    k2, ev = _curvature_slack(link, lo, hi, y)
    slack = k2 * h * h / 8 + ev
    cmin, cmax = C.min(dim=1).values - slack, C.max(dim=1).values + slack
    if link == "softplus":
        # torch's softplus is z itself above z = 20 (c = 1 there): cover that Hessian too.
        above = hi > 20
        cmin = torch.where(above, cmin.clamp(max=1.0), cmin)
        cmax = torch.where(above, cmax.clamp(min=1.0), cmax)
    return cmin, cmax


def _positive_finite(v: object) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and v > 0 and math.isfinite(v)


def _gram_extremes(Mflat: Tensor, c: Tensor, which: str) -> float:
    """The smallest / largest eigenvalue of ``Mflat^T diag(c) Mflat / N``, minus / plus a round-off margin."""
    N, p = Mflat.shape
    G = Mflat.T @ (c[:, None] * Mflat) / N
    G = 0.5 * (G + G.T)
    ev = torch.linalg.eigvalsh(G)
    A = Mflat.abs()
    scale = float(torch.linalg.matrix_norm(A.T @ (c.abs()[:, None] * A) / N))
    scale += float(torch.linalg.matrix_norm(G))
    err = 8 * (N + p) * torch.finfo(torch.float64).eps * scale
    return float(ev[0]) - err if which == "min" else float(ev[-1]) + err


def _sensing_intervals(M: Tensor, Xs: Tensor, D: float, rank: int | None) -> tuple[Tensor, Tensor, int]:
    r"""Centers :math:`z_i^\star`, half-widths :math:`w_i` and ``k``: see :func:`sensing_bounds`."""
    N, m, n = M.shape
    eps = torch.finfo(torch.float64).eps
    Mflat = M.reshape(N, m * n)
    zc = Mflat @ Xs.reshape(-1)
    zerr = 2 * m * n * eps * (Mflat.abs() @ Xs.abs().reshape(-1))  # round-off of the centers
    fro = torch.linalg.matrix_norm(M)
    r_star = int(torch.linalg.matrix_rank(Xs))
    k = min(m, n) if rank is None else min(rank + r_star, m, n)
    if k >= min(m, n):
        w = D * fro
    else:
        U, S, Vh = torch.linalg.svd(Xs)
        R = Xs - (U[:, :r_star] * S[:r_star]) @ Vh[:r_star]
        tau = float(S[r_star:].pow(2).sum().sqrt())
        kyfan = torch.linalg.svdvals(M)[:, :k].pow(2).sum(dim=1).sqrt()
        w = (D + tau) * kyfan + (Mflat @ R.reshape(-1)).abs()
        w = w + 2 * m * n * eps * (Mflat.abs() @ R.abs().reshape(-1))
        w = torch.minimum(w, D * fro)  # never wider than the Frobenius interval
    return zc, (w + zerr) * (1 + 1e-12) + 8 * eps * zc.abs(), k


def sensing_bounds(
    structure: SensingStructure,
    x_star: Tensor,
    *,
    radius: float,
    rank: int | None = None,
    points: int = 4097,
) -> RestrictedBounds:
    r"""Certified RSC / RSM bounds of a generalized-linear sensing risk on :math:`\mathcal S_{r,D}`.

    For :math:`f(X) = \frac{1}{2N}\sum_i(\phi(\langle M_i, X\rangle) - y_i)^2` the Hessian is
    :math:`\nabla^2 f(Y)[\Delta, \Delta] = \frac1N\sum_i c_i(\langle M_i, Y\rangle)
    \langle M_i, \Delta\rangle^2` (:func:`link_curvature`).  RSC: with :math:`\Delta = X - X^\star`,
    :math:`\langle\nabla f(X) - \nabla f(X^\star), \Delta\rangle
    = \int_0^1 \nabla^2 f(X^\star + t\Delta)[\Delta, \Delta]\,dt`.
    Every :math:`Y = X^\star + t\Delta` there, and every point :math:`X` of the RSM condition,
    has :math:`z_i = \langle M_i, Y\rangle` in :math:`I_i = [z_i^\star - w_i, z_i^\star + w_i]`:
    write :math:`X^\star = \Pi + R` (``Pi`` its truncated SVD at its numerical rank
    :math:`r^\star`); :math:`X - \Pi` has rank :math:`\le k = r + r^\star` and norm
    :math:`\le D + \|R\|_F`, so
    :math:`w_i = (D + \|R\|_F)\,\|M_i\|_{(k)} + |\langle M_i, R\rangle|`, with the Ky Fan
    :math:`\|M\|_{(k)} = (\sum_{s \le k}\sigma_s(M)^2)^{1/2}` (and :math:`w_i = D\|M_i\|_F` when
    :math:`k \ge \min(m, n)` or ``rank`` is ``None``).  With certified :math:`c_i^\pm`
    (:func:`curvature_range`) and :math:`G^\pm = \frac1N\sum_i c_i^\pm\operatorname{vec}M_i
    \operatorname{vec}M_i^\top`, :math:`G^- \preceq \nabla^2 f(Y) \preceq G^+` on the set, hence
    :math:`\alpha \ge \lambda_{\min}(G^-)` and :math:`\beta \le \lambda_{\max}(G^+)` (negative
    :math:`c_i^-` included), each with a round-off margin.

    These are the *unrestricted* eigenvalues: :math:`\lambda_{\min}` over all directions, not only
    rank-:math:`k` ones, so ``alpha_lower <= 0`` (vacuous) whenever :math:`mn > N` (then
    :math:`G^-` is singular); :math:`\lambda_{\max}` over all directions for RSM too.  The
    intervals widen with ``D``, so ``alpha_lower`` falls as ``D`` grows.
    """
    if not isinstance(structure, SensingStructure):
        raise InputTypeError(f"structure: expected a SensingStructure, got {type(structure).__name__}")
    M = structure.M.to(torch.float64)
    N, m, n = M.shape
    if not isinstance(x_star, Tensor) or tuple(x_star.shape) != (m, n):
        got = getattr(x_star, "shape", x_star)
        raise UserInputError(f"x_star: expected a tensor of shape ({m}, {n}), got {got!r}")
    if not _positive_finite(radius):
        raise UserInputError(f"radius: expected a positive finite number, got {radius!r}")
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        raise UserInputError(f"rank: expected None or a positive int, got {rank!r}")
    Xs = x_star.to(dtype=torch.float64, device=M.device)
    if not bool(torch.isfinite(Xs).all()):
        raise UserInputError("x_star: expected finite entries")
    y = structure.y.to(dtype=torch.float64, device=M.device)
    D = float(radius)
    Mflat = M.reshape(N, m * n)
    zc, w, k = _sensing_intervals(M, Xs, D, rank)
    cmin, cmax = curvature_range(structure.link, zc - w, zc + w, y, points=points)
    alpha = _gram_extremes(Mflat, cmin, "min")
    beta = _gram_extremes(Mflat, cmax, "max")
    note = f"; vacuous for alpha since mn = {m * n} > N = {N}" if m * n > N else ""
    method = (
        "generalized-linear sensing: interval curvature bounds on ||X - X*|| <= D "
        f"({structure.link} link, D = {D:g}, rank(X - X*) <= {k}; unrestricted eigenvalues of the "
        f"weighted Gram matrices{note})"
    )
    return RestrictedBounds(alpha, beta, method, radius=D, rank=rank)


def restricted_bounds(
    problem: NonlinearProblem,
    *,
    max_params: int = 4096,
    x_star: Sequence[Tensor] | None = None,
    radius: float | None = None,
    rank: int | None = None,
) -> RestrictedBounds:
    r"""Rigorous bounds on the restricted constants from the structure of the risk (module docstring).

    Squared-loss linear form with a dense Jacobian and at most ``max_params`` parameters: the
    extreme eigenvalues of :math:`H = J^\top J / N` (``eigvalsh``; their round-off,
    :math:`\sim p\,\varepsilon\,\|H\|`, is subtracted from / added to the bounds), valid on every
    set.  Other linear forms: :math:`\beta \le \ell''_{\max}\|J\|^2_{op}/N`.

    With ``radius`` (``D``; ``x_star`` defaults to ``problem.x_star``; ``rank`` is ``r``, ``None``
    for any rank) and a risk that declares a generalized-linear sensing form
    (``problem.risk.structure``, a :class:`~landscapes.nonlinear.problems.SensingStructure`, as
    :func:`~landscapes.nonlinear.problems.nonlinear_sensing` attaches): :func:`sensing_bounds` on
    :math:`\mathcal S_{r,D}` (at most ``max_params`` parameters).  Anything else: no bound on
    :math:`\alpha` (``-inf``), and ``method`` says why none is available -- for a non-quadratic
    risk the full Hessian is singular whenever :math:`mn > KN`, so a bound restricted to low-rank
    directions is needed, and no method is implemented without structure.
    """
    if radius is None:
        if x_star is not None or rank is not None:
            raise UserInputError(
                "radius: expected a positive finite number when x_star= or rank= is given "
                "(the set ||X - X*|| <= radius), got None"
            )
    elif not _positive_finite(radius):
        raise UserInputError(f"radius: expected None or a positive finite number, got {radius!r}")
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        raise UserInputError(f"rank: expected None or a positive int, got {rank!r}")
    lin = problem.linear
    structure = getattr(problem.risk, "structure", None)
    if radius is not None and isinstance(structure, SensingStructure) and lin is None:
        if len(problem.blocks) != 1 or tuple(structure.M.shape[1:]) != problem.blocks[0]:
            raise UserInputError(
                f"problem: risk.structure has measurements of shape {tuple(structure.M.shape[1:])}, "
                f"expected one block {list(problem.blocks)}"
            )
        if x_star is None and problem.x_star is None:
            raise UserInputError(
                "x_star: expected a point to bound about (the problem has no x_star; pass x_star=)"
            )
        X0 = problem.check_point(x_star if x_star is not None else problem.x_star, "x_star")  # type: ignore[arg-type]
        p = problem.blocks[0][0] * problem.blocks[0][1]
        if p > max_params:
            return RestrictedBounds(
                -math.inf,
                math.inf,
                f"none available: {p} parameters > max_params = {max_params} (dense Gram eigenvalues)",
                radius=float(radius),
                rank=rank,
            )
        return sensing_bounds(structure, X0[0], radius=float(radius), rank=rank)
    if lin is None:
        if radius is None:
            return RestrictedBounds(-math.inf, math.inf, "none (not a linearized risk)")
        return RestrictedBounds(
            -math.inf,
            math.inf,
            "none available: the risk is not a linearized risk and declares no generalized-linear "
            "sensing structure (risk.structure); a Lipschitz bound alone cannot give alpha > 0",
            radius=float(radius),
            rank=rank,
        )
    from landscapes.nuc import jacobian_op_norm_sq
    from landscapes.operators import DenseOperator

    D = None if radius is None else float(radius)
    if lin.loss.name == "squared" and isinstance(lin.J, DenseOperator) and lin.num_params <= max_params:
        J = lin.J.matrix.to(torch.float64)
        H = J.T @ J / lin.N
        ev = torch.linalg.eigvalsh(H)
        # Round-off of forming J^T J (KN terms per entry) and of eigvalsh (p): a generous margin.
        err = 8 * (H.shape[0] + lin.KN) * torch.finfo(torch.float64).eps * float(ev.abs().max())
        return RestrictedBounds(
            float(ev[0]) - err, float(ev[-1]) + err, "eigenvalues of H = J^T J / N", radius=D, rank=rank
        )
    beta = lin.loss.max_curvature * jacobian_op_norm_sq(lin) / lin.N
    method = "beta <= max loss curvature * ||J||_op^2 / N"
    if radius is not None:
        method += "; alpha: none available (a linearized risk with a non-quadratic loss or no dense Jacobian)"
    return RestrictedBounds(-math.inf, beta * (1 + 1e-12), method, radius=D, rank=rank)


def certified_radius(
    problem: NonlinearProblem,
    *,
    rank: int | None,
    x_star: Sequence[Tensor] | None = None,
    lo: float = 1e-6,
    hi: float = 1e3,
    steps: int = 40,
    max_params: int = 4096,
) -> RestrictedBounds | None:
    r"""The bounds at (about) the largest radius ``D`` in ``[lo, hi]`` with a certified ``alpha_lower > 0``.

    Geometric bisection on ``D`` with :func:`restricted_bounds` (``x_star``, ``rank``); the
    returned bounds were computed at their ``radius``, so positivity there is certified
    whatever the search missed (the bound is not exactly monotone in ``D``: the grid of
    :func:`curvature_range` changes with the interval).  ``None`` when even ``lo`` gives no
    positive bound (or the problem has no radius-dependent method); ``hi`` itself when it
    already does.
    """
    for name, v in (("lo", lo), ("hi", hi)):
        if not _positive_finite(v):
            raise UserInputError(f"{name}: expected a positive finite number, got {v!r}")
    if not lo < hi:
        raise UserInputError(f"lo, hi: expected lo < hi, got {lo!r}, {hi!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise UserInputError(f"steps: expected a positive int, got {steps!r}")

    def at(D: float) -> RestrictedBounds:
        return restricted_bounds(problem, x_star=x_star, radius=D, rank=rank, max_params=max_params)

    top = at(hi)
    if top.alpha_lower > 0:
        return top
    best = at(lo)
    if not best.alpha_lower > 0:
        return None
    a, b = lo, hi
    for _ in range(steps):
        mid = math.sqrt(a * b)
        bm = at(mid)
        if bm.alpha_lower > 0:
            a, best = mid, bm
        else:
            b = mid
    return best

@dataclass(frozen=True)
class RscWitness:
    r"""A point ``X`` of :math:`\mathcal S_{r,D}` with RSC ratio ``alpha``: so :math:`\alpha \le` ``alpha``.

    ``distance`` is :math:`\|X - X^\star\|_F` (``<= radius``); ``curvature`` the Hessian
    quadratic form at :math:`X^\star` along the searched direction (per unit norm).
    """

    alpha: float
    distance: float
    curvature: float
    X: Blocks

    def to_dict(self) -> dict[str, Any]:
        """Plain data for reports (without the point)."""
        return {"alpha": self.alpha, "distance": self.distance, "curvature": self.curvature}


def _truncate(x: Tensor, rank: int) -> Tensor:
    U, S, Vh = torch.linalg.svd(x, full_matrices=False)
    k = min(rank, S.shape[0])
    return (U[:, :k] * S[:k]) @ Vh[:k]


def rsc_search(
    problem: NonlinearProblem,
    *,
    rank: int,
    radius: float,
    x_star: Sequence[Tensor] | None = None,
    steps: int = 200,
    restarts: int = 2,
    fractions: Sequence[float] = (1e-3, 1e-2, 0.1, 0.3, 1.0),
    seed: int = 0,
) -> RscWitness:
    r"""Search :math:`\mathcal S_{r,D}` for a small RSC ratio: an upper witness for :math:`\alpha`.

    Random sampling (:func:`restricted_constants`) rarely meets the worst directions; this aims
    at them.  Projected power iteration on :math:`cI - \nabla^2 f(X^\star)` (``c`` above the
    largest eigenvalue, from a few power steps) over the directions
    :math:`d \propto \Pi_r(X^\star + \varepsilon d) - X^\star` (:math:`\Pi_r` the truncated SVD
    of each block, :math:`\varepsilon = 10^{-3}\,D`): the tangent directions of the rank-``r``
    set at :math:`X^\star` with the smallest curvature.  The found direction is then evaluated
    exactly: :math:`X = \Pi_r(X^\star + tDd)` for ``t`` in ``fractions`` (scaled into the ball when
    the projection moves it), and the smallest :func:`rsc_ratio` over those points and
    ``restarts`` random starts is returned with its point -- a certified *upper* bound on the
    (``rank``, ``radius``)-RSC constant (the point is in the set), not an estimate of it.
    Costs about ``30 + restarts * steps`` Hessian-vector products at :math:`X^\star`.
    """
    X0 = _center(problem, x_star, rank, "search")
    if not _positive_finite(radius):
        raise UserInputError(f"radius: expected a positive finite number, got {radius!r}")
    for name, v in (("steps", steps), ("restarts", restarts)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise UserInputError(f"{name}: expected a positive int, got {v!r}")
    fr = [float(f) for f in fractions]
    if not fr or any(not (0 < f <= 1) for f in fr):
        raise UserInputError(f"fractions: expected numbers in (0, 1], got {list(fractions)!r}")
    _check_rank_covers(X0, rank)
    gen = torch.Generator().manual_seed(seed)

    def unit(d: Sequence[Tensor]) -> Blocks:
        s = math.sqrt(sum(float(x.pow(2).sum()) for x in d))
        return tuple(x / s for x in d) if s > 0 else tuple(d)

    def rand() -> Blocks:
        return unit([torch.randn(x.shape, generator=gen, dtype=torch.float64).to(x) for x in X0])

    def quad(d: Blocks) -> float:
        return problem.curvature(X0, d)

    d = rand()
    for _ in range(30):  # power steps: about the largest curvature magnitude
        d = unit(problem.hvp(X0, d))
    c = 1.05 * abs(quad(d)) + 1e-12  # above (lambda_max + lambda_min) / 2: the power steps aim low
    eps = 1e-3 * float(radius)
    g0 = problem.grad(X0)
    best: RscWitness | None = None
    for _ in range(restarts):
        d = rand()
        for _ in range(steps):
            Hd = problem.hvp(X0, d)
            d = unit([c * a - b for a, b in zip(d, Hd)])
            d = unit([_truncate(x0 + eps * a, rank) - x0 for x0, a in zip(X0, d)])
        curv = quad(d)
        for f in fr:
            t = f * float(radius)
            for _ in range(60):  # shrink until the projected point lies in the ball
                X = tuple(_truncate(x0 + t * a, rank) for x0, a in zip(X0, d))
                if _dist(X, X0) <= f * float(radius):
                    break
                t *= 0.5
            ratio, dist = rsc_ratio(problem, X, X0, grad_star=g0)
            if dist > 0 and math.isfinite(ratio) and (best is None or ratio < best.alpha):
                best = RscWitness(ratio, dist, curv, X)
    if best is None:
        raise UserInputError(
            "radius: no point of the set at positive distance was found (is radius too small?)"
        )
    return best


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
        raise UserInputError(
            "problem: expected a linearized Problem (or a NonlinearProblem with .linear), "
            f"got {type(problem).__name__}"
        )
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise UserInputError(f"rank: expected a positive int, got {rank!r}")
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


@dataclass(frozen=True)
class RestrictedWitnesses:
    r"""Points of the (r, D) set bounding the [KKR25] constants on the side ``restricted_bounds`` does not.

    ``alpha_point`` :math:`X_\alpha` (rank :math:`\le r`, :math:`\|X_\alpha - X^\star\|_F \le D`)
    has RSC ratio ``alpha_upper``, so :math:`\alpha \le` ``alpha_upper``; ``beta_point``
    :math:`X_\beta` in the same set with rank-one ``beta_u``, ``beta_v`` of unit Frobenius norm has
    :math:`\nabla^2 f(X_\beta)[Z, Z]/\|Z\|_F^2 =` ``beta_lower`` for :math:`Z = U X_\beta + X_\beta V`,
    so :math:`\beta \ge` ``beta_lower``.  Hence :math:`\rho = 2\alpha/\beta \le` ``rho_upper``.
    Both ratios are recomputed through the problem's autodiff gradient and HVP.
    """

    alpha_point: Tensor
    alpha_upper: float
    beta_point: Tensor
    beta_u: Tensor
    beta_v: Tensor
    beta_lower: float
    rank: int
    radius: float

    @property
    def rho_upper(self) -> float:
        r""":math:`2\alpha_{\rm upper}/\beta_{\rm lower}`, an upper bound on :math:`\rho = 2\alpha/\beta`."""
        return 2 * self.alpha_upper / self.beta_lower


def restricted_witnesses(
    problem: NonlinearProblem,
    *,
    rank: int,
    radius: float,
    x_star: Blocks | None = None,
    starts: int = 8,
    seed: int = 0,
) -> RestrictedWitnesses:
    r"""Search the (``rank``, ``radius``) set about :math:`X^\star` for small RSC and large RSM ratios.

    For a one-block quadratic risk with Hessian :math:`H` (``problem.linear``, squared loss):

    * :math:`\alpha`: minimize :math:`d^\top H d / d^\top d`, :math:`d = \operatorname{vec}(PQ^\top -
      X^\star)`, over factors :math:`P, Q` of ``rank`` columns subject to :math:`\|d\| \le D` (SLSQP
      from ``starts`` seeded starts);
    * :math:`\beta`: maximize :math:`z^\top H z / z^\top z` over rank-:math:`\le 2` :math:`Z =
      \sigma_1 u_1 v_1^\top + \sigma_2 u_2 v_2^\top` (L-BFGS), realized as :math:`Z \propto U X + X V`
      with :math:`X = t\,u_2 v_1^\top`, :math:`U = u_1 u_2^\top`, :math:`V = c\,v_2^\top`,
      :math:`c = (\sigma_2/\sigma_1) v_1 + \sqrt{1 - \sigma_2^2/\sigma_1^2}\,w` (:math:`w \perp v_1`),
      which needs :math:`\|X^\star\|_F < D` and :math:`n \ge 3` (then a small :math:`t` keeps
      :math:`X` in the set).

    The search only finds *some* points: ``alpha_upper`` and ``beta_lower`` are rigorous one-sided
    bounds (explicit members of the set), not the constants.
    """
    import numpy as np

    lin = _check_witness_options(problem, rank, radius, starts)
    xs = problem.x_star if x_star is None else problem.check_point(x_star, "x_star")
    if xs is None:
        raise UserInputError("x_star: expected a point (the problem has no x_star)")
    J = lin.J.matrix.to(torch.float64).cpu().numpy()
    H = J.T @ J / lin.N
    Xst = xs[0].detach().cpu().numpy().astype(np.float64)
    D = float(radius)
    rng = np.random.default_rng(seed)
    Xa_np = _alpha_witness(H, Xst, rank, D, starts, rng)
    Xa = torch.tensor(Xa_np, dtype=problem.dtype, device=problem.device)
    alpha_up, _ = rsc_ratio(problem, (Xa,), xs)
    Xb_np, U_np, V_np = _beta_witness(H, Xst, D, starts, rng)
    Xb = torch.tensor(Xb_np, dtype=problem.dtype, device=problem.device)
    Uw = torch.tensor(U_np, dtype=problem.dtype, device=problem.device)
    Vw = torch.tensor(V_np, dtype=problem.dtype, device=problem.device)
    Zt = Uw @ Xb + Xb @ Vw
    beta_lo = problem.curvature((Xb,), (Zt,)) / float((Zt * Zt).sum())
    return RestrictedWitnesses(
        alpha_point=Xa,
        alpha_upper=float(alpha_up),
        beta_point=Xb,
        beta_u=Uw,
        beta_v=Vw,
        beta_lower=float(beta_lo),
        rank=rank,
        radius=D,
    )


def _check_witness_options(problem: NonlinearProblem, rank: int, radius: float, starts: int) -> Any:
    """Check the options of :func:`restricted_witnesses`; return the problem's linear form."""
    from landscapes.operators import DenseOperator

    lin = problem.linear
    if (
        len(problem.blocks) != 1
        or lin is None
        or lin.loss.name != "squared"
        or not isinstance(lin.J, DenseOperator)
        or min(problem.blocks[0]) < 3
    ):
        raise UserInputError(
            "problem: expected one block of size at least 3 x 3 with a dense squared-loss linear form, "
            f"got {len(problem.blocks)} block(s) {list(problem.blocks)} and linear={type(lin).__name__}"
        )
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise UserInputError(f"rank: expected a positive int, got {rank!r}")
    if not (isinstance(radius, (int, float)) and 0 < radius < math.inf):
        raise UserInputError(f"radius: expected a positive finite number, got {radius!r}")
    if isinstance(starts, bool) or not isinstance(starts, int) or starts < 1:
        raise UserInputError(f"starts: expected a positive int, got {starts!r}")
    return lin


def _unpack(x: Any, m: int, n: int, r: int) -> Any:
    """``P Q^T`` from the flat factors ``x = (vec P, vec Q)``, ``P`` ``(m, r)``, ``Q`` ``(n, r)`` (numpy)."""
    return x[: m * r].reshape(m, r) @ x[m * r :].reshape(n, r).T


def _quotient(H: Any, d: Any) -> float:
    """The Rayleigh quotient ``d^T H d / d^T d`` (numpy)."""
    return float(d @ H @ d / (d @ d))


def _alpha_witness(H: Any, Xst: Any, rank: int, D: float, starts: int, rng: Any) -> Any:
    r"""A rank-``rank`` :math:`X` with :math:`0 < \|X - X^\star\|_F \le D` of small RSC ratio (numpy).

    Minimizes :math:`d^\top H d / d^\top d`, :math:`d = \operatorname{vec}(X - X^\star)`, by SLSQP over
    the factors of :math:`X` inside the ball, from ``starts`` seeded starts; the best end point inside.
    """
    import numpy as np
    import scipy.optimize as sopt

    m, n = Xst.shape

    def inside(x: np.ndarray) -> float:
        return D**2 - float(((_unpack(x, m, n, rank) - Xst) ** 2).sum())

    best_a: tuple[float, np.ndarray | None] = (math.inf, None)
    for k in range(starts):
        x0 = rng.standard_normal(rank * (m + n)) * (0.3 + k / starts)
        res = sopt.minimize(
            lambda x: _quotient(H, (_unpack(x, m, n, rank) - Xst).reshape(-1)),
            x0,
            method="SLSQP",
            constraints=[{"type": "ineq", "fun": inside}],
            options={"maxiter": 500, "ftol": 1e-14},
        )
        X = _unpack(res.x, m, n, rank)
        dist = float(np.linalg.norm(X - Xst))
        if 1e-6 * D < dist <= D and np.all(np.isfinite(X)):
            q = _quotient(H, (X - Xst).reshape(-1))
            if q < best_a[0]:
                best_a = (q, X)
    if best_a[1] is None:
        raise RuntimeError("restricted_witnesses: no start ended inside the set")
    return best_a[1]


def _beta_witness(H: Any, Xst: Any, D: float, starts: int, rng: Any) -> tuple[Any, Any, Any]:
    r"""``(X, U, V)`` (numpy) in the set with :math:`Z = U X + X V` of large RSM ratio.

    The largest Rayleigh quotient of ``H`` over rank-:math:`\le 2` :math:`Z` (L-BFGS from the top
    eigenvector's best rank-2 approximation and ``starts`` random starts), realized as in
    :func:`restricted_witnesses`.
    """
    import numpy as np
    import scipy.optimize as sopt

    m, n = Xst.shape
    if float(np.linalg.norm(Xst)) >= D:
        raise UserInputError(
            f"radius: expected more than ||x_star||_F = {np.linalg.norm(Xst):.6g}, got {D!r}"
        )
    ev, vec = np.linalg.eigh(H)
    U0, s0, V0h = np.linalg.svd(vec[:, -1].reshape(m, n))
    inits = [np.concatenate([(U0[:, :2] * s0[:2]).reshape(-1), V0h[:2].T.reshape(-1)])]
    inits += [rng.standard_normal(2 * (m + n)) for _ in range(starts)]
    best_b: tuple[float, np.ndarray | None] = (-math.inf, None)
    for x0 in inits:
        res = sopt.minimize(lambda x: -_quotient(H, _unpack(x, m, n, 2).reshape(-1)), x0, method="L-BFGS-B")
        Z = _unpack(res.x, m, n, 2)
        if np.linalg.norm(Z) > 0 and -res.fun > best_b[0]:
            best_b = (-float(res.fun), Z)
    assert best_b[1] is not None
    Uz, sz, Vzh = np.linalg.svd(best_b[1])
    u1, u2, v1, v2 = Uz[:, 0], Uz[:, 1], Vzh[0], Vzh[1]
    t = 0.5 * (D - float(np.linalg.norm(Xst)))
    ratio = float(sz[1] / sz[0])
    w = Vzh[2]
    c = ratio * v1 + math.sqrt(max(0.0, 1 - ratio**2)) * w
    return t * np.outer(u2, v1), np.outer(u1, u2), np.outer(c, v2)
