r"""Second-order stationary points (SOSPs) of the LoRA objective: certify them, and reach them.

**Certificate** (:func:`certify_sosp`).  A point :math:`R_j = [U_j; V_j]` is an approximate SOSP
when :math:`\|\nabla F\| \le \epsilon_g` and :math:`\lambda_{\min}(\nabla^2 F) \ge -\epsilon_H`;
it is declared one only when the *lower* end of a rigorous :math:`\lambda_{\min}` interval
(structured or dense route of :mod:`landscapes.curvature`) meets the curvature tolerance -- a
Lanczos estimate alone never makes a point an SOSP.

**Global optimality** (Burer--Monteiro).  ``F`` is the factorized form of the convex problem
:math:`\min_{Z_j \succeq 0} L(\{Z_{j,12}\}) + \tfrac12\sum_j\langle \lambda_j I + C_j, Z_j\rangle`
(:math:`Z_j = R_j R_j^\top`, :math:`Z_{j,12} = U_j V_j^\top`; ``C_j`` the perturbation, 0 if
none), whose gradient in :math:`Z_j` is :math:`\tfrac12 Y_j` with the column-pair matrix
:math:`Y_j` (:func:`landscapes.curvature.dense.column_pair_matrix`).  By convexity, for any minimizer
:math:`Z^\star`,

.. math:: F(R) - F^\star \le \tfrac12\langle \nabla F(R), R\rangle
          + \tfrac12 \max_j\big(-\lambda_{\min}(Y_j)\big)_+ \operatorname{tr} Z^\star,
          \qquad \operatorname{tr} Z^\star \le \frac{2 \min(L(0), F(R))}{\min_j (\lambda_j - \|C_j\|_{op})},

(the trace bound from :math:`F(R^\star) \le \min(F(0), F(R))` and :math:`L \ge 0`).  So a stationary
point with :math:`Y_j \succeq 0` is global (:math:`\|S_j\|_{op} \le \lambda_j` when unperturbed:
the NUC certificate), and ``gap_bound`` is a certified bound on its suboptimality.

**Curvature is judged on the gauge complement.**  Rotations :math:`(U_jQ_j, V_jQ_j)` leave ``F``
unchanged, so a full-rank critical point has up to :math:`\sum_j r_j(r_j-1)/2` zero Hessian
eigenvalues that say nothing; :math:`\lambda_{\min}` is that of the Hessian compressed to the
orthogonal complement of those directions (:mod:`landscapes.gauge`).

**Scales** (so that a rescaled problem gets the same answers).  Under :math:`J \to cJ`,
:math:`\lambda \to c\lambda` the landscape is the same in :math:`(U, V)/\sqrt c`: objective values
are unchanged, gradients scale by :math:`\sqrt c`, Hessians by ``c``.  The tolerances follow:
objectives are compared at ``gap_rtol`` times :math:`\max(|F|, L(0))`, gradients at ``grad_rtol``
times :func:`gradient_scale` :math:`= \sqrt{L(0)\,\max(\|\nabla L(0)\|_{op}, \max_j\lambda_j)}`,
curvature at ``curvature_rtol`` times :math:`|\lambda_{\max}|` -- no ``max(1, .)``.

**Saddles and approximate SOSPs.**  A point is an *approximate* SOSP when the gradient and the
rigorous lower end of :math:`\lambda_{\min}` meet those tolerances; it is a *certified saddle*
when the upper end of :math:`\lambda_{\min}` (a Rayleigh quotient) is below minus the round-off
floor :math:`10\,P\,\epsilon\,|\lambda_{\max}|` (``P`` parameters) -- whether or not it is also an
approximate SOSP.  An approximate SOSP is not an exact one; that an exact local minimizer lies
nearby is proved separately (:mod:`landscapes.local_min`).

**Reaching SOSPs** (:func:`find_sosp`): L-BFGS (default), gradient descent, SGD over examples or
Adam -- all on the gradient of ``F`` itself (weight decay included in the gradient, so their fixed
points are ``F``'s critical points) -- then a negative-curvature escape along the eigenvector of
:math:`\lambda_{\min}` whenever the point is a certified saddle (and not already certified global:
no descent can then gain more than the global bound), repeated until an approximate SOSP that is
no certified saddle, or until an escape step finds no decrease of ``F`` above its rounding.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from landscapes.curvature.certificate import LambdaMin, gradient_seconds
from landscapes.curvature.dense import column_pair_matrix
from landscapes.curvature.routes import lambda_min
from landscapes.curvature.vectors import flatten_factors, unflatten_factors
from landscapes.gauge import gauge_basis
from landscapes.lora import (
    LoRAPoint,
    check_factors,
    check_finite_factors,
    check_perturbation,
    lora_value,
    lora_value_and_grad,
    minimize_lora,
    product,
)
from landscapes.operators import DenseOperator
from landscapes.problem import Problem
from theory.errors import UserInputError

__all__ = [
    "train",
    "INIT_KINDS",
    "make_init",
    "SOSPCertificate",
    "SOSPRun",
    "certify_sosp",
    "find_sosp",
    "gradient_scale",
    "objective_scale",
    "length_scale",
    "global_bound",
    "OPTIMIZERS",
]

Optimizer = Literal["lbfgs", "gd", "sgd", "adam"]
InitKind = Literal["small", "gaussian", "large", "zero_b", "zero", "adversarial"]
INIT_KINDS: tuple[str, ...] = ("small", "gaussian", "large", "zero_b", "zero", "adversarial")
OPTIMIZERS: tuple[str, ...] = ("lbfgs", "gd", "sgd", "adam")
_LBFGS_AIM = 0.01


def make_init(
    problem: Problem,
    ranks: Sequence[int],
    kind: InitKind,
    *,
    generator: torch.Generator,
    adversarial_rank: int | None = None,
    perturbation: Sequence[Tensor] | None = None,
    scale: float = 1.0,
) -> LoRAPoint:
    r"""A starting point of the kind named.

    ``"small"``: Gaussian entries of standard deviation ``1e-3``.  ``"gaussian"``:
    :math:`N(0, 1/\max(m, n))` (moderate).  ``"large"``: :math:`N(0, 1)` entries (large
    magnitude).  ``"zero_b"``: standard LoRA, :math:`B = U = 0` and :math:`A^\top = V` with
    :math:`N(0, 1/n)` entries.  ``"zero"``: :math:`U = V = 0` exactly (a first-order stationary
    point; a strict saddle when :math:`\|\nabla L(0)\|_{op} > \lambda`).  ``"adversarial"``: a
    rank-deficient critical point -- the L-BFGS end point at rank ``k < r`` (``adversarial_rank``,
    default drawn from ``1..r-1``), padded with zero columns, plus a ``1e-8`` nudge (at ``r = 1``:
    the ``1e-8`` nudge of ``U = V = 0``).  ``scale`` multiplies every drawn entry (the nudges
    included): under :math:`J \to cJ`, :math:`\lambda \to c\lambda` the starts that map onto
    today's are those with ``scale = 1 / sqrt(c)``.
    """
    if kind not in INIT_KINDS:
        raise UserInputError(f"kind: expected one of {INIT_KINDS}, got {kind!r}")
    if not (isinstance(scale, (int, float)) and not isinstance(scale, bool) and 0 < scale < math.inf):
        raise UserInputError(f"scale: expected a positive finite number, got {scale!r}")
    U, V = [], []
    dt, dev = problem.dtype, problem.device

    def gauss(rows: int, cols: int, std: float) -> Tensor:
        return (scale * std * torch.randn(rows, cols, generator=generator, dtype=torch.float64)).to(
            dtype=dt, device=dev
        )

    if kind == "adversarial":
        r = max(ranks)
        k = adversarial_rank
        if r == 1 and k is None:  # the only rank-deficient critical point is 0: start next to it
            for m, n in problem.blocks:
                U.append(gauss(m, 1, 1e-8))
                V.append(gauss(n, 1, 1e-8))
            return LoRAPoint(tuple(U), tuple(V))
        if k is None:
            k = 1 if r <= 2 else int(torch.randint(1, r, (1,), generator=generator))
        if not 1 <= k < r:
            raise UserInputError(
                f"adversarial_rank: expected an int in [1, r - 1] = [1, {r - 1}] (needs r >= 2), got {k!r}"
            )
        start = make_init(problem, [min(k, rr) for rr in ranks], "gaussian", generator=generator, scale=scale)
        res = minimize_lora(
            problem,
            rank=[min(k, rr) for rr in ranks],
            init=start,
            grad_tol=1e-7 * gradient_scale(problem),
            perturbation=perturbation,
            max_iter=5000,
        )
        for (m, n), rr, u, v in zip(problem.blocks, ranks, res.point.U, res.point.V):
            pad_u = torch.zeros(m, rr - u.shape[1], dtype=dt, device=dev)
            pad_v = torch.zeros(n, rr - v.shape[1], dtype=dt, device=dev)
            U.append(torch.cat([u, pad_u], dim=1) + gauss(m, rr, 1e-8))
            V.append(torch.cat([v, pad_v], dim=1) + gauss(n, rr, 1e-8))
        return LoRAPoint(tuple(U), tuple(V))
    for (m, n), r in zip(problem.blocks, ranks):
        if kind == "small":
            U.append(gauss(m, r, 1e-3))
            V.append(gauss(n, r, 1e-3))
        elif kind == "gaussian":
            s = 1.0 / math.sqrt(max(m, n))
            U.append(gauss(m, r, s))
            V.append(gauss(n, r, s))
        elif kind == "large":
            U.append(gauss(m, r, 1.0))
            V.append(gauss(n, r, 1.0))
        elif kind == "zero_b":
            U.append(torch.zeros(m, r, dtype=dt, device=dev))
            V.append(gauss(n, r, 1.0 / math.sqrt(n)))
        else:  # zero
            U.append(torch.zeros(m, r, dtype=dt, device=dev))
            V.append(torch.zeros(n, r, dtype=dt, device=dev))
    return LoRAPoint(tuple(U), tuple(V))


@dataclass(frozen=True)
class SOSPCertificate:
    """Evidence that ``(U, V)`` is (or is not) an approximate SOSP, and whether it is global."""

    objective: float
    grad_norm: float
    grad_tol: float
    curvature: LambdaMin = field(repr=False)
    curvature_tol: float
    is_sosp: bool
    is_saddle: bool
    Y_lambda_min: tuple[float, ...]
    S_op: tuple[float, ...]
    gap_bound: float
    is_global: bool
    stacked_ranks: tuple[int, ...]
    product_ranks: tuple[int, ...]
    ranks: tuple[int, ...]
    reason: str
    saddle_floor: float = 0.0
    gauge_dim: int = 0
    objective_scale: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "objective": self.objective,
            "grad_norm": self.grad_norm,
            "grad_tol": self.grad_tol,
            "lambda_min": self.curvature.to_dict(),
            "curvature_tol": self.curvature_tol,
            "is_sosp": self.is_sosp,
            "is_saddle": self.is_saddle,
            "Y_lambda_min": list(self.Y_lambda_min),
            "S_op": list(self.S_op),
            "gap_bound": self.gap_bound,
            "is_global": self.is_global,
            "stacked_ranks": list(self.stacked_ranks),
            "product_ranks": list(self.product_ranks),
            "ranks": list(self.ranks),
            "reason": self.reason,
            "saddle_floor": self.saddle_floor,
            "gauge_dim": self.gauge_dim,
            "objective_scale": self.objective_scale,
        }


def gradient_scale(problem: Problem) -> float:
    r"""Stationarity scale :math:`\sqrt{L(0)\,\max(\|\nabla L(0)\|_{op}, \max_j \lambda_j)}`.

    The geometric mean of an objective scale (:math:`L(0)`) and a curvature scale: under
    :math:`J \to cJ`, :math:`\lambda \to c\lambda` it scales by :math:`\sqrt c`, as the gradient in
    :math:`(U, V)/\sqrt c` does (module docstring).  ``L(0) = 0`` (nothing to fit) gives the
    smallest positive float: only an exactly stationary point passes.
    """
    L0, curv = _scales(problem)
    return max(math.sqrt(L0 * curv), float(torch.finfo(torch.float64).tiny))


def length_scale(problem: Problem) -> float:
    r"""Length scale of the factors: :math:`\sqrt{L(0) / \max(\|\nabla L(0)\|_{op}, \max_j \lambda_j)}`.

    It scales like :math:`(U, V)` under :math:`J \to cJ`, :math:`\lambda \to c\lambda` (by
    :math:`1/\sqrt c`): the unit of step sizes that are lengths in parameter space (Adam's) and of
    reference starts.  1 when ``L(0) = 0``.
    """
    L0, curv = _scales(problem)
    return math.sqrt(L0 / curv) if L0 > 0 and curv > 0 else 1.0


def _scales(problem: Problem) -> tuple[float, float]:
    """``L(0)`` and the curvature scale ``max(||grad L(0)||_op, max lam)``."""
    ev = problem.evaluate(problem.zeros())
    curv = max(
        max((float(torch.linalg.matrix_norm(S, ord=2)) if S.numel() else 0.0) for S in ev.S),
        max(problem.lam),
    )
    return max(float(ev.value), 0.0), curv


def objective_scale(problem: Problem, F: float) -> float:
    r"""Scale of objective comparisons: :math:`\max(|F|, L(0))` (invariant under the rescalings above)."""
    return max(abs(F), float(problem.risk(problem.zeros())), float(torch.finfo(torch.float64).tiny))


def _numerical_rank(X: Tensor, rtol: float) -> int:
    if X.numel() == 0:
        return 0
    s = torch.linalg.svdvals(X)
    top = float(s[0])
    return int((s > rtol * top).sum()) if top > 0 else 0


def global_bound(
    problem: Problem,
    U: Sequence[Tensor],
    V: Sequence[Tensor],
    *,
    perturbation: Sequence[Tensor] | None = None,
    F: float | None = None,
    grad: Tensor | None = None,
    perturbation_norms: Sequence[float] | None = None,
) -> tuple[float, tuple[float, ...], tuple[float, ...]]:
    r"""The Burer--Monteiro bound on :math:`F(R) - F^\star` (module docstring).

    Returns the bound, :math:`\lambda_{\min}(Y_j)` and :math:`\|S_j\|_{op}` per block; no
    Hessian is involved.
    """
    pert = check_perturbation(problem, perturbation)
    if F is None or grad is None:
        F, gU, gV = lora_value_and_grad(problem, U, V, perturbation=pert)
        grad = flatten_factors(gU, gV)
    ev = problem.evaluate(product(U, V))
    Ymins, S_ops, C_ops = [], [], []
    for j, (lam, S) in enumerate(zip(problem.lam, ev.S)):
        s_op = float(torch.linalg.matrix_norm(S, ord=2)) if S.numel() else 0.0
        S_ops.append(s_op)
        if pert is None:
            Ymins.append(lam - s_op)
            C_ops.append(0.0)
        else:
            Ymins.append(float(torch.linalg.eigvalsh(column_pair_matrix(S, lam, pert[j]))[0]))
            C_ops.append(
                float(perturbation_norms[j])
                if perturbation_norms is not None
                else float(torch.linalg.eigvalsh(pert[j]).abs().max())
            )
    first_order = abs(0.5 * float((flatten_factors(U, V) * grad).sum()))
    violation = max(0.0, -min(Ymins))
    margin = min(lam - c for lam, c in zip(problem.lam, C_ops))
    # tr Z* <= 2 min(F(0), F(R)) / margin, since F* <= both and L >= 0.
    L0 = min(problem.risk(problem.zeros()), max(F, 0.0))
    if violation == 0.0:
        gap_bound = first_order
    elif margin > 0:
        gap_bound = first_order + (violation / margin) * L0  # this order: violation * L0 underflows
    else:
        gap_bound = math.inf
    return gap_bound, tuple(Ymins), tuple(S_ops)


def certify_sosp(
    problem: Problem,
    U: Sequence[Tensor],
    V: Sequence[Tensor],
    *,
    perturbation: Sequence[Tensor] | None = None,
    grad_rtol: float = 1e-7,
    curvature_rtol: float = 1e-6,
    gap_rtol: float = 1e-8,
    rank_rtol: float = 1e-8,
    method: Literal["auto", "structured", "lanczos", "dense"] = "auto",
    grad_scale: float | None = None,
    curvature_options: dict[str, Any] | None = None,
    perturbation_norms: Sequence[float] | None = None,
) -> SOSPCertificate:
    r"""Certify ``(U, V)``: gradient norm, :math:`\lambda_{\min}` interval, global-optimality bound.

    :math:`\lambda_{\min}` is that of the Hessian on the complement of the gauge directions
    (module docstring).  ``is_sosp`` (an *approximate* SOSP): :math:`\|\nabla F\| \le`
    ``grad_rtol * grad_scale`` (default :func:`gradient_scale`) and the rigorous lower end of
    :math:`\lambda_{\min}` is at least ``-curvature_rtol * |lambda_max|``.  ``is_saddle``: the
    *upper* end of :math:`\lambda_{\min}` is below minus the round-off floor
    ``10 P eps |lambda_max|`` (``saddle_floor``); a point can be both.  ``is_global``:
    ``gap_bound <= gap_rtol * max(|F|, L(0))`` (module docstring).
    """
    for name, val in (("grad_rtol", grad_rtol), ("curvature_rtol", curvature_rtol), ("gap_rtol", gap_rtol)):
        if not (isinstance(val, (int, float)) and val > 0 and math.isfinite(val)):
            raise UserInputError(f"{name}: expected a positive finite number, got {val!r}")
    check_factors(problem, U, V)
    pert = check_perturbation(problem, perturbation)
    check_finite_factors(U, V)
    F, gU, gV = lora_value_and_grad(problem, U, V, perturbation=pert)
    g = flatten_factors(gU, gV)
    gnorm = float(g.norm())
    gscale = gradient_scale(problem) if grad_scale is None else float(grad_scale)
    gtol = grad_rtol * gscale
    gauge = gauge_basis(U, V)
    curv = lambda_min(
        problem, U, V, method=method, perturbation=pert, exclude=gauge.basis, **(curvature_options or {})
    )
    lam_max = abs(curv.lambda_max) if math.isfinite(curv.lambda_max) else max(problem.lam)
    htol = curvature_rtol * lam_max
    P = int(g.numel())
    floor = 10.0 * P * float(torch.finfo(g.dtype).eps) * lam_max
    gap_bound, Ymins, S_ops = global_bound(
        problem, U, V, perturbation=pert, F=F, grad=g, perturbation_norms=perturbation_norms
    )
    oscale = objective_scale(problem, F)
    is_global = gap_bound <= gap_rtol * oscale
    is_sosp = gnorm <= gtol and curv.lower_is_rigorous and curv.lower >= -htol
    is_saddle = curv.upper < -floor
    stacked = tuple(_numerical_rank(torch.cat([u, v]), rank_rtol) for u, v in zip(U, V))
    prod_r = tuple(_numerical_rank(D, rank_rtol) for D in product(U, V))
    ranks = tuple(int(u.shape[1]) for u in U)
    if gnorm > gtol:
        reason = f"not stationary: ||grad|| = {gnorm:.3g} > {gtol:.3g}"
    elif is_sosp and is_saddle:
        reason = (
            f"approximate SOSP and certified saddle: ||grad|| = {gnorm:.3g}, lambda_min in "
            f"[{curv.lower:.3g}, {curv.upper:.3g}] (tolerance {htol:.3g}, round-off floor {floor:.3g})"
        )
    elif is_saddle:
        reason = f"certified saddle: lambda_min <= {curv.upper:.3g} < -{floor:.3g} (round-off floor)"
    elif is_sosp:
        reason = f"approximate SOSP: ||grad|| = {gnorm:.3g}, lambda_min >= {curv.lower:.3g}"
    elif not curv.lower_is_rigorous:
        reason = (
            f"curvature not certified: the {curv.method} estimate {curv.value:.3g} "
            "has no rigorous lower bound"
        )
    else:
        reason = (
            f"curvature undecided: lambda_min in [{curv.lower:.3g}, {curv.upper:.3g}], tolerance {htol:.3g}"
        )
    return SOSPCertificate(
        objective=F,
        grad_norm=gnorm,
        grad_tol=gtol,
        curvature=curv,
        curvature_tol=htol,
        is_sosp=is_sosp,
        is_saddle=is_saddle,
        Y_lambda_min=tuple(Ymins),
        S_op=tuple(S_ops),
        gap_bound=gap_bound,
        is_global=is_global,
        stacked_ranks=stacked,
        product_ranks=prod_r,
        ranks=ranks,
        reason=reason,
        saddle_floor=floor,
        gauge_dim=gauge.dim,
        objective_scale=oscale,
    )


@dataclass(frozen=True)
class SOSPRun:
    """One run of :func:`find_sosp`: end point, its certificate, and the path's cost."""

    point: LoRAPoint
    certificate: SOSPCertificate
    optimizer: str
    iterations: int
    gradient_evaluations: int
    escapes: int
    seconds: float
    history: tuple[tuple[int, float], ...]
    converged: bool
    escape_stalled: bool = False


def adam_direction(
    grads: Sequence[Tensor], m1: Sequence[Tensor], m2: Sequence[Tensor], it: int, *, eps: float = 1e-12
) -> list[Tensor]:
    r"""One Adam step direction (:math:`\beta = (0.9, 0.999)`), bias-corrected.

    Updates the moment estimates ``m1``, ``m2`` in place for step ``it`` (from 0) and returns
    :math:`\hat m / (\sqrt{\hat v} + \epsilon)` per tensor; the caller scales it by the learning rate.
    ``eps`` is in the units of the gradient (:func:`train` passes ``1e-12`` times
    :func:`gradient_scale`).
    """
    beta1, beta2 = 0.9, 0.999
    for a, b, x in zip(m1, m2, grads):
        a.mul_(beta1).add_(x, alpha=1 - beta1)
        b.mul_(beta2).addcmul_(x, x, value=1 - beta2)
    c1, c2 = 1 - beta1 ** (it + 1), 1 - beta2 ** (it + 1)
    return [(a / c1) / ((b / c2).sqrt() + eps) for a, b in zip(m1, m2)]


def train(
    problem: Problem,
    init: LoRAPoint,
    *,
    optimizer: Literal["gd", "sgd", "adam"],
    steps: int,
    lr: float | None = None,
    batch_size: int | None = None,
    decay: bool = False,
    seed: int = 0,
    record_every: int = 10,
    grad_tol: float = 0.0,
    perturbation: Sequence[Tensor] | None = None,
) -> tuple[LoRAPoint, tuple[tuple[int, float], ...]]:
    r"""Plain first-order training of ``F`` (weight decay inside the gradient).

    ``"gd"``: :math:`\theta \leftarrow \theta - \eta_t \nabla F(\theta)`.  ``"sgd"``: the same
    with the risk of a mini-batch of ``batch_size`` examples drawn without replacement each step
    (seeded).  ``"adam"``: Adam (:math:`\beta = (0.9, 0.999)`, :math:`\epsilon = 10^{-12}` times
    :func:`gradient_scale`) on
    :math:`\nabla F` -- the L2 form, so its fixed points are ``F``'s critical points; on
    mini-batches when ``batch_size < N``.
    :math:`\eta_t = \eta / (1 + t/500)` with ``decay``, else :math:`\eta` (default ``0.5 / Lipschitz`` for
    GD/SGD, ``1e-3`` times :func:`length_scale` for Adam).  Stops early when the full gradient norm is at
    most ``grad_tol`` (full-batch runs only; 0: never).  Returns the end point and the objective every
    ``record_every`` steps (full objective, also on mini-batches); the last entry is the
    number of steps taken.
    """
    if optimizer not in ("gd", "sgd", "adam"):
        raise UserInputError(f"optimizer: expected 'gd', 'sgd' or 'adam', got {optimizer!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise UserInputError(f"steps: expected a positive int, got {steps!r}")
    pert = check_perturbation(problem, perturbation)
    U = [u.clone() for u in init.U]
    V = [v.clone() for v in init.V]
    eta0 = lr if lr is not None else _default_lr(problem, optimizer)
    adam_eps = 1e-12 * gradient_scale(problem) if optimizer == "adam" else 1e-12
    gen = torch.Generator().manual_seed(seed)
    m1 = [torch.zeros_like(x) for x in U + V]
    m2 = [torch.zeros_like(x) for x in U + V]
    b = len(U)
    history: list[tuple[int, float]] = []
    stochastic = optimizer in ("sgd", "adam") and batch_size is not None and batch_size < problem.N
    rows = (batch_size or problem.N) * problem.K
    buf = (
        torch.empty(rows, problem.num_params, dtype=problem.dtype, device=problem.device)
        if stochastic and isinstance(problem.J, DenseOperator)
        else None
    )
    for it in range(steps):
        if stochastic:
            idx = torch.randperm(problem.N, generator=gen)[: int(batch_size)]  # type: ignore[arg-type]
            F, gU, gV = lora_value_and_grad(problem.subset(idx, buffer=buf), U, V, perturbation=pert)
            if it % record_every == 0:
                history.append((it, lora_value(problem, U, V, perturbation=pert)))
        else:
            F, gU, gV = lora_value_and_grad(problem, U, V, perturbation=pert)
            if it % record_every == 0:
                history.append((it, F))
            if grad_tol > 0 and math.sqrt(sum(float((x * x).sum()) for x in gU + gV)) <= grad_tol:
                if not history or history[-1][0] != it:
                    history.append((it, F))  # the last entry always carries the step count
                return LoRAPoint(tuple(U), tuple(V)), tuple(history)
        g = list(gU) + list(gV)
        eta = eta0 / (1.0 + it / 500.0) if decay else eta0
        if optimizer == "adam":
            upd = adam_direction(g, m1, m2, it, eps=adam_eps)
        else:
            upd = g
        params = [p - eta * d for p, d in zip(U + V, upd)]
        if not all(bool(torch.isfinite(p).all()) for p in params):
            raise FloatingPointError(f"{optimizer}: iterates diverged at step {it} (learning rate {eta:.3g})")
        U, V = params[:b], params[b:]
    history.append((steps, lora_value(problem, U, V, perturbation=pert)))
    return LoRAPoint(tuple(U), tuple(V)), tuple(history)


def _first_order(
    problem: Problem,
    pt: LoRAPoint,
    *,
    optimizer: str,
    pert: tuple[Tensor, ...] | None,
    gtol: float,
    max_iter: int,
    lr: float | None,
    batch_size: int | None,
    seed: int,
    history: list[tuple[int, float]],
    it0: int,
    record_every: int,
) -> tuple[LoRAPoint, int, int]:
    """Run the first-order method from ``pt``; return the end point, iterations, gradient evaluations."""
    if optimizer == "lbfgs":
        res = minimize_lora(
            problem, rank=list(pt.ranks), init=pt, max_iter=max_iter, grad_tol=gtol, perturbation=pert
        )
        history.append((it0 + res.iterations, res.value))
        return res.point, res.iterations, res.gradient_evaluations
    end, hist = train(
        problem,
        pt,
        optimizer=optimizer,  # type: ignore[arg-type]
        steps=max_iter,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        record_every=record_every,
        grad_tol=0.0 if optimizer == "sgd" else gtol,
        perturbation=pert,
    )
    history.extend((it0 + t, f) for t, f in hist)
    steps = hist[-1][0] if hist else max_iter
    return end, steps, steps


def _default_lr(problem: Problem, optimizer: str) -> float:
    if optimizer == "adam":  # a length: Adam's steps are about lr per coordinate
        return 1e-3 * length_scale(problem)
    from landscapes.nuc import jacobian_op_norm_sq

    L = problem.loss.max_curvature / problem.N * jacobian_op_norm_sq(problem) + max(problem.lam)
    return 0.5 / L


def _escape(
    problem: Problem,
    pt: LoRAPoint,
    curv: LambdaMin,
    pert: tuple[Tensor, ...] | None,
) -> tuple[LoRAPoint, bool]:
    """Step along the negative-curvature eigenvector (sign and length by a decreasing line search).

    Returns the new point and whether ``F`` decreased; when no step of the search lowered ``F`` by
    a quarter of the second-order model's gain (the curvature is then below what ``F``'s rounding
    resolves along this direction), the point is returned unchanged with ``False``.
    """
    x = flatten_factors(pt.U, pt.V)
    v = curv.vector / curv.vector.norm()
    F0, gU, gV = lora_value_and_grad(problem, pt.U, pt.V, perturbation=pert)
    g = flatten_factors(gU, gV)
    if float(g @ v) > 0:
        v = -v
    # Along v, F(x + a v) ~ F0 + a g.v + a^2 theta / 2 with theta < 0: start from a step tied to
    # the size of the factors and to sqrt(|theta| / lambda_max) times the problem's length scale
    # sqrt(F-scale / lambda_max) (both scale like the factors under J -> cJ, lam -> c lam), and
    # halve until F decreases by a quarter of the second-order model's gain.
    lmax = max(abs(curv.lambda_max), 1e-300)
    length = math.sqrt(objective_scale(problem, F0) / lmax)
    alpha = max(1e-3 * float(x.norm()), math.sqrt(abs(curv.upper) / lmax) * length)
    for _ in range(60):
        U, V = unflatten_factors(x + alpha * v, pt.U, pt.V)
        Fa = lora_value(problem, U, V, perturbation=pert)
        if Fa < F0 + 0.25 * alpha * alpha * curv.upper:
            return LoRAPoint(U, V), True
        alpha *= 0.5
    return pt, False


def _check_run_options(optimizer: str, max_iter: int, batch_size: int | None, lr: float | None) -> None:
    """Raise ``ValueError`` on an optimizer option of :func:`find_sosp` that is out of range."""
    if optimizer not in OPTIMIZERS:
        raise UserInputError(f"optimizer: expected one of {OPTIMIZERS}, got {optimizer!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise UserInputError(f"max_iter: expected a positive int, got {max_iter!r}")
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise UserInputError(f"batch_size: expected None or a positive int, got {batch_size!r}")
    if lr is not None and not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise UserInputError(f"lr: expected None or a positive finite number, got {lr!r}")


def _sharpen(
    problem: Problem,
    pt: LoRAPoint,
    pert: tuple[Tensor, ...] | None,
    *,
    gtol: float,
    gap_rtol: float,
    pnorms: list[float] | None,
    max_iter: int,
) -> tuple[LoRAPoint, int, int]:
    """Sharpen a stationary point whose global-optimality bound is not met yet; iterations, evaluations.

    The bound is first order in the stationarity error: the same critical point is refined by
    L-BFGS at 100x and 10^4x smaller gradient tolerances, so that its curvature is certified once,
    at the sharpened point.  Nothing is done to a point above ``gtol``, one already certified, or
    one far from it (e.g. a saddle).
    """
    iters = evals = 0
    F, gU, gV = lora_value_and_grad(problem, pt.U, pt.V, perturbation=pert)
    g = flatten_factors(gU, gV)
    refinements = 0
    while float(g.norm()) <= gtol and refinements < 2:
        gb, _, _ = global_bound(
            problem, pt.U, pt.V, perturbation=pert, F=F, grad=g, perturbation_norms=pnorms
        )
        tol_gap = gap_rtol * objective_scale(problem, F)
        if gb <= tol_gap or gb > 1e3 * tol_gap:  # certified, or far from it (e.g. a saddle)
            break
        refinements += 1
        res = minimize_lora(
            problem,
            rank=list(pt.ranks),
            init=pt,
            max_iter=max_iter,
            grad_tol=gtol * _LBFGS_AIM * 100.0**-refinements,
            perturbation=pert,
        )
        iters, evals = iters + res.iterations, evals + res.gradient_evaluations
        pt = res.point
        F, gU, gV = lora_value_and_grad(problem, pt.U, pt.V, perturbation=pert)
        g = flatten_factors(gU, gV)
    return pt, iters, evals


def find_sosp(
    problem: Problem,
    init: LoRAPoint,
    *,
    optimizer: Optimizer = "lbfgs",
    perturbation: Sequence[Tensor] | None = None,
    grad_rtol: float = 1e-7,
    curvature_rtol: float = 1e-6,
    gap_rtol: float = 1e-8,
    max_iter: int = 20000,
    max_escapes: int = 20,
    lr: float | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    method: Literal["auto", "structured", "lanczos", "dense"] = "auto",
    record_every: int = 10,
    polish: bool = True,
) -> SOSPRun:
    r"""Reach a certified approximate SOSP from ``init``.

    Runs ``optimizer`` until :math:`\|\nabla F\| \le` ``grad_rtol * gradient_scale(problem)``
    (or ``max_iter`` iterations), certifies the curvature, and at a certified strict saddle steps
    along the negative-curvature eigenvector and starts again (at most ``max_escapes`` times).
    With ``polish`` (default) a first-order method that stalls above the gradient tolerance
    (SGD noise, a fixed learning rate) is finished by L-BFGS from its end point, so that the
    point can be certified; the run records whether that happened.
    """
    _check_run_options(optimizer, max_iter, batch_size, lr)
    check_factors(problem, init.U, init.V)
    pert = check_perturbation(problem, perturbation)
    t0 = time.perf_counter()
    gscale = gradient_scale(problem)
    gtol = grad_rtol * gscale
    history: list[tuple[int, float]] = []
    pt = init
    pnorms = None if pert is None else [float(torch.linalg.eigvalsh(C).abs().max()) for C in pert]
    copts = {"t_grad": gradient_seconds(problem, init.U, init.V, perturbation=pert)}
    if method == "lanczos":
        copts["seed"] = seed
    iters = evals = escapes = 0
    stalled = False
    cert = None
    opt = optimizer
    while True:
        pt, it, ev = _first_order(
            problem,
            pt,
            optimizer=opt,
            pert=pert,
            # L-BFGS aims below the tolerance: the global-optimality bound is first order in the
            # stationarity error, and a restarted L-BFGS (the refinement below) loses its memory.
            gtol=gtol * (_LBFGS_AIM if opt == "lbfgs" else 1.0),
            max_iter=max_iter,
            lr=lr,
            batch_size=batch_size,
            seed=seed + escapes,
            history=history,
            it0=iters,
            record_every=record_every,
        )
        iters, evals = iters + it, evals + ev
        # a stationary point whose global-optimality bound is not met yet is sharpened first
        pt, it, ev = _sharpen(
            problem, pt, pert, gtol=gtol, gap_rtol=gap_rtol, pnorms=pnorms, max_iter=max_iter
        )
        iters, evals = iters + it, evals + ev
        cert = certify_sosp(
            problem,
            pt.U,
            pt.V,
            perturbation=pert,
            grad_rtol=grad_rtol,
            curvature_rtol=curvature_rtol,
            gap_rtol=gap_rtol,
            method=method,
            grad_scale=gscale,
            curvature_options=copts if method != "dense" else {"t_grad": copts["t_grad"]},
            perturbation_norms=pnorms,
        )
        if cert.grad_norm > gtol:
            if polish and opt != "lbfgs":
                opt = "lbfgs"
                continue
            break
        if cert.is_global:  # no descent from here can gain more than the certified gap bound
            break
        if cert.is_saddle and escapes < max_escapes:
            escapes += 1
            pt, decreased = _escape(problem, pt, cert.curvature, pert)
            if decreased:
                continue
            stalled = True  # F does not go down along the negative curvature above its rounding
        break
    return SOSPRun(
        point=pt,
        certificate=cert,
        optimizer=optimizer if opt == optimizer else f"{optimizer}+lbfgs",
        iterations=iters,
        gradient_evaluations=evals,
        escapes=escapes,
        seconds=time.perf_counter() - t0,
        history=tuple(history),
        converged=cert.is_sosp,
        escape_stalled=stalled,
    )
