r"""An *exact* local minimizer of the LoRA objective near an approximate one, with its objective bounded.

A counterexample to "every SOSP is global" must be an exact second-order stationary point; an
optimizer only reaches approximate ones, and a strict saddle with a tiny negative eigenvalue is an
approximate SOSP too.  :func:`certify_local_min` proves that an exact local minimizer lies near a
point :math:`x = (U, V)` and bounds its objective, or says why it cannot.

**Slice.**  Let ``T`` be the gauge tangent space at ``x`` with orthonormal basis ``G``
(:mod:`landscapes.gauge`, transversality radius ``s``), and :math:`\phi(y) = F(x + y)` for ``y`` in
:math:`T^\perp`.  Suppose

* :math:`\mu \le \lambda_{\min}(H(x)|_{T^\perp})` (the rigorous lower end of the compressed
  :math:`\lambda_{\min}`, :mod:`landscapes.curvature` with ``exclude=G``), :math:`\mu > 0`;
* :math:`\|H(x + y) - H(x)\|_{op} \le \delta(\rho)` for :math:`\|y\| \le \rho` (below), and
  :math:`\mu_\rho = \mu - \delta(\rho) > 0`;
* :math:`\gamma = \|(I - GG^\top)\nabla F(x)\| < \mu_\rho \rho / 2` and :math:`\rho < s`.

Then :math:`\phi` is :math:`\mu_\rho`-strongly convex on the ball :math:`\|y\| \le \rho`, exceeds
:math:`\phi(0)` on its boundary (:math:`\phi(y) \ge \phi(0) - \gamma\rho + \mu_\rho\rho^2/2`), so
it has a unique minimizer :math:`y^\star` inside, with :math:`\|y^\star\| \le \gamma/\mu_\rho` and

.. math:: F(x) - \frac{\gamma^2}{2\mu_\rho} \;\le\; F(x + y^\star) \;\le\; F(x).

:math:`z^\star = x + y^\star` is a local minimizer of ``F`` itself: for :math:`\|Y_j\|_{op} < s`
the kept gauge directions :math:`R_j\Omega_j` have a positive inner product with
:math:`(R_j + Y_j)\Omega_j \in T_{z^\star}`, so :math:`T \cap T_{z^\star}^\perp = \{0\}`; the
gradient at :math:`z^\star` is orthogonal to :math:`T^\perp` (slice minimizer) and to
:math:`T_{z^\star}` (invariance), hence zero; and the orbit map is a submersion onto a
neighbourhood of :math:`z^\star` (:math:`T_{z^\star} + T^\perp` is the whole space), so every
nearby point has the objective of a slice point near :math:`z^\star`, at least
:math:`F(z^\star)`.  An exact local minimizer is an exact SOSP.

**Hessian variation** :math:`\delta(\rho)`.  With :math:`\|J\|_{op} \le j`, the loss's curvature
and third-derivative bounds :math:`c_2, c_3` (:mod:`landscapes.losses`), and
:math:`\nu = \max_j (\|U_j\|_{op}^2 + \|V_j\|_{op}^2)^{1/2}`: for a unit direction ``d``,
:math:`H[d, d] = \langle H_L[E], E\rangle + 2\sum_j \langle S_j, dU_j dV_j^\top\rangle + \ldots`
with :math:`E = dU V^\top + U dV^\top` (:math:`\|E\| \le \nu`; moving the point by ``y`` moves
it by at most :math:`\|y\|`, and moves :math:`D` by at most :math:`\nu\rho + \rho^2/2`); the
perturbation and weight-decay terms do not depend on the point.  Hence

.. math:: \delta(\rho) = \frac{c_2 j^2}{N}\Big(3\nu\rho + \tfrac32\rho^2\Big)
          + \frac{c_3 j^3 \nu^2}{N}\Big(\nu\rho + \tfrac12\rho^2\Big).

The certificate is exact mathematics applied to floating-point inputs: the gradient, ``mu`` and
``j`` are computed in float64 (``mu`` and ``j`` with their own rounding allowances); a verified
re-check in interval arithmetic is a separate matter.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from landscapes.curvature.certificate import LambdaMin
from landscapes.curvature.routes import lambda_min
from landscapes.curvature.vectors import flatten_factors
from landscapes.gauge import GaugeBasis, gauge_basis, project_out
from landscapes.lora import LoRAPoint, check_perturbation, lora_value_and_grad, minimize_lora
from landscapes.operators import DenseOperator
from landscapes.problem import Problem

__all__ = [
    "LocalMinCertificate",
    "certify_local_min",
    "polish_and_certify",
    "hessian_variation",
    "jacobian_norm_bound",
]


@dataclass(frozen=True)
class LocalMinCertificate:
    r"""Whether an exact local minimizer of ``F`` provably lies near a point (module docstring).

    Attributes
    ----------
    certified
        ``True`` when every condition holds.
    objective
        :math:`F(x)`, an upper bound on :math:`F(z^\star)`.
    objective_lower
        :math:`F(x) - \gamma^2 / (2\mu_\rho)`, a lower bound on :math:`F(z^\star)` (``-inf`` when
        not certified).
    distance
        :math:`\gamma / \mu_\rho \ge \|z^\star - x\|` (``inf`` when not certified).
    mu
        Rigorous lower end of :math:`\lambda_{\min}` on the gauge complement.
    mu_ball
        :math:`\mu_\rho = \mu - \delta(\rho)`.
    radius
        The ball radius :math:`\rho`.
    grad_norm
        :math:`\gamma = \|(I - GG^\top)\nabla F(x)\|`.
    transversality
        ``s`` of :mod:`landscapes.gauge` (``inf`` without gauge directions).
    constants
        ``j`` (bound on :math:`\|J\|_{op}`), ``c2``, ``c3``, ``nu``, ``gauge_dim``.
    reason
        One sentence.
    """

    certified: bool
    objective: float
    objective_lower: float
    distance: float
    mu: float
    mu_ball: float
    radius: float
    grad_norm: float
    transversality: float
    constants: dict[str, float] = field(default_factory=dict)
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "certified": self.certified,
            "objective": self.objective,
            "objective_lower": self.objective_lower,
            "distance": self.distance,
            "mu": self.mu,
            "mu_ball": self.mu_ball,
            "radius": self.radius,
            "grad_norm": self.grad_norm,
            "transversality": self.transversality,
            "constants": dict(self.constants),
            "reason": self.reason,
        }


def jacobian_norm_bound(problem: Problem) -> float | None:
    r"""An upper bound on :math:`\|J\|_{op}`, or ``None`` when none is cheap and rigorous.

    ``K N <= 4096``: :math:`\lambda_{\max}(JJ^\top)` from ``eigvalsh`` of the Gram matrix plus its
    rounding allowance :math:`10\,KN\,\epsilon\,\|JJ^\top\|_F`.  A larger stored ``J``: its
    Frobenius norm.  A larger operator: ``None``.
    """
    eps = float(torch.finfo(problem.dtype).eps)
    if problem.KN <= 4096:
        J = problem.J
        G = J.matrix @ J.matrix.T if isinstance(J, DenseOperator) else J.gram()
        lam = float(torch.linalg.eigvalsh(G)[-1])
        return math.sqrt(max(lam, 0.0) + 10.0 * problem.KN * eps * float(torch.linalg.matrix_norm(G)))
    if isinstance(problem.J, DenseOperator):
        return float(torch.linalg.matrix_norm(problem.J.matrix)) * (1.0 + 10.0 * eps * problem.KN)
    return None


def _op_norm(x: Tensor) -> float:
    return float(torch.linalg.matrix_norm(x, ord=2)) if x.numel() else 0.0


def hessian_variation(rho: float, *, j: float, c2: float, c3: float, nu: float, N: int) -> float:
    r""":math:`\delta(\rho) \ge \|H(x + y) - H(x)\|_{op}` whenever :math:`\|y\| \le \rho` (module doc)."""
    return (c2 * j * j / N) * (3.0 * nu * rho + 1.5 * rho * rho) + (c3 * j**3 * nu * nu / N) * (
        nu * rho + 0.5 * rho * rho
    )


def _radius(mu: float, gamma: float, s: float, delta: Any) -> tuple[float, float] | None:
    """The smallest ``rho < s`` with ``(mu - delta(rho)) rho / 2 > gamma`` (and its ``mu_rho``), if any."""

    def h(rho: float) -> float:
        return (mu - delta(rho)) * rho / 2.0

    # h rises then falls: locate its maximum on a log grid below s and below delta's root.
    hi = s if math.isfinite(s) else 1.0
    while math.isinf(s) and delta(hi) < mu:
        hi *= 2.0
        if hi > 1e300:
            break
    grid = [hi * 10.0 ** (-k / 20.0) for k in range(0, 600)]
    grid = [r for r in grid if r < s and delta(r) < mu and r > 0]
    if not grid:
        return None
    best = max(grid, key=h)
    if h(best) <= gamma:
        return None
    if gamma == 0.0:
        rho = min(grid)
        return rho, mu - delta(rho)
    lo_r, hi_r = 0.0, best  # h(lo) <= gamma < h(hi): bisect for the smallest feasible rho
    for _ in range(200):
        mid = 0.5 * (lo_r + hi_r)
        if h(mid) > gamma:
            hi_r = mid
        else:
            lo_r = mid
    return hi_r, mu - delta(hi_r)


def certify_local_min(
    problem: Problem,
    U: Sequence[Tensor],
    V: Sequence[Tensor],
    *,
    perturbation: Sequence[Tensor] | None = None,
    curvature: LambdaMin | None = None,
    gauge: GaugeBasis | None = None,
    method: Literal["auto", "structured", "lanczos", "dense"] = "auto",
) -> LocalMinCertificate:
    r"""Prove that an exact local minimizer of ``F`` lies near ``(U, V)`` and bound its objective.

    ``curvature`` (a compressed :math:`\lambda_{\min}` with ``exclude`` = ``gauge.basis``) and
    ``gauge`` are computed when not given.  Only a rigorous lower end counts (the Lanczos route's
    does not).  See the module docstring for the conditions and the bound.
    """
    pert = check_perturbation(problem, perturbation)
    F, gU, gV = lora_value_and_grad(problem, U, V, perturbation=pert)
    gb = gauge if gauge is not None else gauge_basis(U, V)
    curv = (
        curvature
        if curvature is not None
        else lambda_min(problem, U, V, method=method, perturbation=pert, exclude=gb.basis)
    )
    g = project_out(flatten_factors(gU, gV), gb.basis)
    gamma = float(g.norm())
    nu = max(math.hypot(_op_norm(u), _op_norm(v)) for u, v in zip(U, V))
    j = jacobian_norm_bound(problem)
    c2, c3 = float(problem.loss.max_curvature), float(problem.loss.max_third)
    consts: dict[str, float] = {
        "j": math.nan if j is None else j,
        "c2": c2,
        "c3": c3,
        "nu": nu,
        "gauge_dim": float(gb.dim),
    }
    mu = curv.lower if curv.lower_is_rigorous else -math.inf

    def fail(reason: str) -> LocalMinCertificate:
        return LocalMinCertificate(
            certified=False,
            objective=F,
            objective_lower=-math.inf,
            distance=math.inf,
            mu=mu,
            mu_ball=-math.inf,
            radius=0.0,
            grad_norm=gamma,
            transversality=gb.radius,
            constants=consts,
            reason=reason,
        )

    if not curv.lower_is_rigorous:
        return fail(f"no rigorous lower bound on lambda_min (the {curv.method} route gives none)")
    if mu <= 0:
        return fail(
            f"the Hessian on the gauge complement is not certified positive definite "
            f"(lambda_min in [{curv.lower:.3g}, {curv.upper:.3g}])"
        )
    if j is None:
        return fail("no rigorous bound on ||J||_op for this operator (K N > 4096)")

    def delta(rho: float) -> float:
        return hessian_variation(rho, j=j, c2=c2, c3=c3, nu=nu, N=problem.N)

    found = _radius(mu, gamma, gb.radius, delta)
    if found is None:
        return fail(
            f"gradient {gamma:.3g} too large for the curvature margin mu = {mu:.3g} over any ball "
            f"(transversality radius {gb.radius:.3g})"
        )
    rho, mu_rho = found
    lower = F - gamma * gamma / (2.0 * mu_rho)
    return LocalMinCertificate(
        certified=True,
        objective=F,
        objective_lower=lower,
        distance=gamma / mu_rho,
        mu=mu,
        mu_ball=mu_rho,
        radius=rho,
        grad_norm=gamma,
        transversality=gb.radius,
        constants=consts,
        reason=(
            f"an exact local minimizer lies within {gamma / mu_rho:.3g} (lambda_min on the gauge "
            f"complement >= {mu:.3g}, >= {mu_rho:.3g} over a ball of radius {rho:.3g}); its "
            f"objective is in [{lower:.10g}, {F:.10g}]"
        ),
    )


def polish_and_certify(
    problem: Problem,
    point: LoRAPoint,
    *,
    perturbation: Sequence[Tensor] | None = None,
    grad_tol: float,
    method: Literal["auto", "structured", "lanczos", "dense"] = "auto",
) -> tuple[LoRAPoint, LocalMinCertificate]:
    r""":func:`certify_local_min` at ``point``, then, if the gradient was too large, at L-BFGS polishes.

    The polishes run from ``point`` at gradient tolerances ``1e-3`` and ``1e-6`` times ``grad_tol``
    (the stationarity tolerance of the point): a local minimizer's basin is kept by descent, and the
    certificate then needs a smaller ball.  Returns the point that was certified (or the last one
    tried) and its certificate; the certificate's objective is that of the returned point.
    """
    pert = check_perturbation(problem, perturbation)
    cert = certify_local_min(problem, point.U, point.V, perturbation=pert, method=method)
    pt = point
    for factor in (1e-3, 1e-6):
        if cert.certified or not (cert.mu > 0 and math.isfinite(cert.mu)) or cert.grad_norm == 0.0:
            break
        res = minimize_lora(
            problem,
            rank=list(pt.ranks),
            init=pt,
            grad_tol=grad_tol * factor,
            perturbation=pert,
            max_iter=5000,
        )
        pt = res.point
        cert = certify_local_min(problem, pt.U, pt.V, perturbation=pert, method=method)
    return pt, cert
