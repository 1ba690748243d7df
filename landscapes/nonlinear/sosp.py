r"""Training LoRA on a non-linearized problem, and what its end point is ([KKR25]).

* :func:`train_lora` -- Adam or gradient descent on :math:`L^{\mathrm{lora}}_\lambda(A, B)` of a
  :class:`~landscapes.nonlinear.problems.NonlinearProblem` (weight decay inside the gradient), then
  optionally L-BFGS to a tight stationary point.
* :func:`truncate_factors`, :func:`polish_nonzero_columns` -- clean an end point: balanced factors
  at the numerical rank, and L-BFGS on the columns that are not exactly zero.
* :func:`end_point` -- the numbers [KKR25] classify an end point by: objective, risk, gradient
  norm, :math:`\lambda_{\min}` with residual, singular values and rank of :math:`X = AB^\top`,
  :math:`\|X\|_F`, :math:`\|X\|_*`, and whether it is an approximate SOSP; its smallest Hessian
  eigenvalue comes from :func:`~landscapes.curvature.nonlinear.lambda_min_lora`.

The factors and their zero columns are :mod:`landscapes.nonlinear.factors` (``Factors`` and
``inactive_columns`` are re-exported here, the types this module's functions take and return).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from landscapes.curvature.nonlinear import lambda_min_lora
from landscapes.curvature.vectors import flatten_factors, unflatten_factors
from landscapes.nonlinear.factors import (
    Factors,
    check_factors,
    embed_columns,
    inactive_columns,
    reduce_columns,
)
from landscapes.nonlinear.problems import NonlinearProblem
from landscapes.nuc import _spectra
from theory.errors import UserInputError

__all__ = [
    "train_lora",
    "train_sgd",
    "end_point",
    "EndPoint",
    "Factors",
    "inactive_columns",
    "truncate_factors",
    "polish_nonzero_columns",
]


def train_lora(
    problem: NonlinearProblem,
    init: Factors,
    *,
    optimizer: Literal["adam", "gd"] = "adam",
    steps: int = 1000,
    lr: float = 1e-2,
    polish: int = 0,
    grad_tol: float = 0.0,
    record_every: int = 10,
) -> tuple[Factors, tuple[tuple[int, float], ...]]:
    r"""Minimize :math:`L^{\mathrm{lora}}_\lambda` from ``init``: Adam or GD, then L-BFGS.

    ``steps`` of Adam (L2 form, :math:`\beta = (0.9, 0.999)`) or gradient descent with learning
    rate ``lr``, then up to ``polish`` L-BFGS iterations.  Stops early when the gradient norm is at most
    ``grad_tol``.  Returns the end point and the objective every ``record_every`` steps (the last entry
    at the end).
    """
    from landscapes.sosp import adam_direction

    check_factors(problem, init)
    if optimizer not in ("adam", "gd"):
        raise UserInputError(f"optimizer: expected 'adam' or 'gd', got {optimizer!r}")
    for name, v in (("steps", steps), ("polish", polish)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise UserInputError(f"{name}: expected an int >= 0, got {v!r}")
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise UserInputError(f"lr: expected a positive finite number, got {lr!r}")
    if isinstance(record_every, bool) or not isinstance(record_every, int) or record_every < 1:
        raise UserInputError(f"record_every: expected a positive int, got {record_every!r}")
    if not (isinstance(grad_tol, (int, float)) and grad_tol >= 0 and math.isfinite(grad_tol)):
        raise UserInputError(f"grad_tol: expected a finite number >= 0, got {grad_tol!r}")
    A = [a.clone() for a in init.A]
    B = [b.clone() for b in init.B]
    m1 = [torch.zeros_like(x) for x in A + B]
    m2 = [torch.zeros_like(x) for x in A + B]
    hist: list[tuple[int, float]] = []
    k = len(A)
    done = steps
    for it in range(steps):
        f, gA, gB = problem.lora_value_and_grad(A, B)
        if it % record_every == 0:
            hist.append((it, f))
        g = list(gA) + list(gB)
        if grad_tol > 0 and math.sqrt(sum(float((x * x).sum()) for x in g)) <= grad_tol:
            done = it
            break
        upd = adam_direction(g, m1, m2, it) if optimizer == "adam" else g
        params = [p - lr * d for p, d in zip(A + B, upd)]
        if not all(bool(torch.isfinite(p).all()) for p in params):
            raise FloatingPointError(f"{optimizer}: iterates diverged at step {it} (learning rate {lr:g})")
        A, B = params[:k], params[k:]
    end = Factors(tuple(A), tuple(B))
    if polish > 0:
        end = _lbfgs(problem, end, polish, grad_tol)
    hist.append((done, problem.lora_value_and_grad(end.A, end.B)[0]))
    return end, tuple(hist)


def train_sgd(
    problem: NonlinearProblem,
    init: Factors,
    *,
    batch: int,
    lr: float,
    steps: int,
    seed: int = 0,
    window: int = 100,
) -> tuple[Factors, float]:
    r"""Minibatch SGD with weight decay on :math:`L^{\mathrm{lora}}_\lambda`, as in [KKR25]'s Lemma 1.

    Each step draws ``batch`` examples (an epoch-wise shuffle, seeded) and updates
    :math:`A \leftarrow A - \mu(\nabla_A L_{\mathcal B} + \lambda A)`, the same for ``B``.
    Returns the last iterate and its *spread*: the largest
    :math:`\|X_t - X_T\|_F / \|X_T\|_F` over the last ``window`` steps (0 for a converged run;
    ``inf`` when :math:`X_T = 0`).  Needs ``problem.batch_risk`` and ``problem.meta["N"]``.
    """
    check_factors(problem, init)
    if problem.batch_risk is None or "N" not in problem.meta:
        raise UserInputError(
            f"problem: expected a batch_risk and meta['N'] for SGD, got {problem.name!r} without"
        )
    N = int(problem.meta["N"])
    for name, v in (("batch", batch), ("steps", steps), ("window", window)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise UserInputError(f"{name}: expected a positive int, got {v!r}")
    if batch > N:
        raise UserInputError(f"batch: expected at most N = {N}, got {batch}")
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise UserInputError(f"lr: expected a positive finite number, got {lr!r}")
    gen = torch.Generator().manual_seed(seed)
    A = [a.clone() for a in init.A]
    B = [b.clone() for b in init.B]
    k = len(A)
    batch_risk = problem.batch_risk
    order = torch.randperm(N, generator=gen)
    pos = 0
    recent: list[tuple[Tensor, ...]] = []
    for _ in range(steps):
        if pos + batch > N:
            order, pos = torch.randperm(N, generator=gen), 0
        idx = order[pos : pos + batch]
        pos += batch
        As = [a.detach().requires_grad_(True) for a in A]
        Bs = [b.detach().requires_grad_(True) for b in B]
        with torch.enable_grad():
            f = batch_risk(tuple(a @ b.T for a, b in zip(As, Bs)), idx)
            g = torch.autograd.grad(f, As + Bs)
        lams = list(problem.lam) * 2
        params = [p - lr * (d + lam * p) for p, d, lam in zip(As + Bs, g, lams)]
        A, B = [p.detach() for p in params[:k]], [p.detach() for p in params[k:]]
        if not all(bool(torch.isfinite(p).all()) for p in A + B):
            raise FloatingPointError(f"sgd: iterates diverged (learning rate {lr:g})")
        recent.append(tuple(a @ b.T for a, b in zip(A, B)))
        if len(recent) > window:
            recent.pop(0)
    XT = recent[-1]
    norm = math.sqrt(sum(float(x.pow(2).sum()) for x in XT))
    spread = (
        max(math.sqrt(sum(float((x - y).pow(2).sum()) for x, y in zip(X, XT))) for X in recent) / norm
        if norm > 0
        else math.inf
    )
    return Factors(tuple(A), tuple(B)), spread


def _lbfgs(problem: NonlinearProblem, start: Factors, max_iter: int, grad_tol: float) -> Factors:
    import scipy.optimize as sopt

    from landscapes.threads import scipy_blas_single_thread

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        A, B = unflatten_factors(
            torch.from_numpy(x).to(dtype=problem.dtype, device=problem.device), start.A, start.B
        )
        v, gA, gB = problem.lora_value_and_grad(A, B)
        return v, flatten_factors(gA, gB).cpu().double().numpy()

    x0 = flatten_factors(start.A, start.B).detach().cpu().double().numpy()
    with scipy_blas_single_thread():
        res = sopt.minimize(
            fun, x0, jac=True, method="L-BFGS-B", options={"maxiter": max_iter, "gtol": grad_tol, "ftol": 0.0}
        )
    if not np.all(np.isfinite(res.x)):
        raise FloatingPointError(f"L-BFGS: non-finite iterate ({res.message})")
    A, B = unflatten_factors(
        torch.from_numpy(res.x).to(dtype=problem.dtype, device=problem.device), start.A, start.B
    )
    return Factors(A, B)


def truncate_factors(point: Factors, *, rank_rtol: float) -> Factors:
    r"""Balanced factors of each :math:`X_j = A_j B_j^\top` truncated to its numerical rank.

    With :math:`X_j = P \Sigma Q^\top` and :math:`k_j` singular values above
    ``rank_rtol`` :math:`\sigma_1(X_j)`: :math:`A_j = [P_k \Sigma_k^{1/2}, 0]`,
    :math:`B_j = [Q_k \Sigma_k^{1/2}, 0]` with the original number of columns, the trailing ones
    exactly zero.  :math:`X_j` moves by :math:`\sigma_{k+1}(X_j)` in spectral norm.  (At a
    stationary point with weight decay :math:`A_j^\top A_j = B_j^\top B_j`: the factors are
    balanced already, and this only rotates them and removes round-off columns.)
    """
    if not (isinstance(rank_rtol, float) and 0 <= rank_rtol < 1):
        raise UserInputError(f"rank_rtol: expected a float in [0, 1), got {rank_rtol!r}")
    A, B = [], []
    for a, b in zip(point.A, point.B):
        r = a.shape[1]
        P, sv, Qh = torch.linalg.svd(a @ b.T, full_matrices=False)
        top = float(sv[0]) if sv.numel() else 0.0
        k = min(r, int((sv > rank_rtol * top).sum())) if top > 0 else 0
        root = sv[:k].sqrt()
        na, nb = torch.zeros_like(a), torch.zeros_like(b)
        na[:, :k] = P[:, :k] * root
        nb[:, :k] = Qh[:k].T * root
        A.append(na)
        B.append(nb)
    return Factors(tuple(A), tuple(B))


def polish_nonzero_columns(
    problem: NonlinearProblem, point: Factors, *, max_iter: int, grad_tol: float = 0.0
) -> Factors:
    r"""L-BFGS on the columns of ``point`` that are not exactly zero; the zero columns stay zero.

    The LoRA objective restricted to those columns is the objective of the smaller factors, and
    the gradient on a zero column is :math:`G_j \cdot 0 + \lambda_j \cdot 0 = 0`: the result is
    stationary in every coordinate when it is stationary in the polished ones.
    """
    check_factors(problem, point)
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 0:
        raise UserInputError(f"max_iter: expected an int >= 0, got {max_iter!r}")
    keep, reduced = reduce_columns(point, inactive_columns(point))
    if max_iter == 0 or not any(keep):
        return point
    done = _lbfgs(problem, reduced, max_iter, grad_tol)
    return embed_columns(done, keep, point)


@dataclass(frozen=True)
class EndPoint:
    """An end point of LoRA training on a non-linearized problem, with its [KKR25] numbers."""

    objective: float
    risk: float
    penalized: float
    grad_norm: float
    lambda_min: dict[str, Any]
    singular_values: tuple[tuple[float, ...], ...]
    ranks: tuple[int, ...]
    frobenius: float
    nuclear: float
    sosp: bool
    tolerances: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for reports."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def end_point(
    problem: NonlinearProblem,
    point: Factors,
    *,
    grad_rtol: float = 1e-6,
    curvature_rtol: float = 1e-6,
    rank_rtol: float = 1e-6,
    tol: float = 1e-8,
    maxiter: int | None = None,
    dense_max: int = 0,
) -> EndPoint:
    r"""Classify ``point`` by the numbers of [KKR25], and as an approximate SOSP or not.

    An SOSP: :math:`\|\nabla\| \le` ``grad_rtol`` :math:`\cdot \|\nabla L(0)\|_F`
    and :math:`\lambda_{\min} \ge -` ``curvature_rtol`` :math:`\cdot |\lambda_{\max}|` (both scale
    with the problem: a risk multiplied by ``c`` gets tolerances multiplied by ``c``; a zero
    :math:`\nabla L(0)` or :math:`\lambda_{\max}` falls back to 1)
    (:func:`~landscapes.curvature.nonlinear.lambda_min_lora`; ``dense_max`` is passed on).  With
    Lanczos the curvature test uses the Ritz value, an upper bound: a point it rejects has certified
    negative curvature; a point it accepts is an SOSP up to Lanczos' accuracy (stated as such), and
    only when Lanczos converged (``lambda_min["converged"]``).  With a dense (or closed-form) bottom
    it uses the rigorous lower bound.
    """
    check_factors(problem, point)
    f, gA, gB = problem.lora_value_and_grad(point.A, point.B)
    gn = float(flatten_factors(gA, gB).norm())
    g0 = math.sqrt(sum(float(x.pow(2).sum()) for x in problem.grad(problem.zeros())))
    lm = lambda_min_lora(problem, point, tol=tol, maxiter=maxiter, dense_max=dense_max)
    X = tuple(a @ b.T for a, b in zip(point.A, point.B))
    svs, ranks = _spectra(X, rank_rtol)
    scale = abs(lm.lambda_max) if math.isfinite(lm.lambda_max) and lm.lambda_max != 0 else 1.0
    gscale = g0 if g0 > 0 else 1.0
    # An unconverged Lanczos run proves nothing about the curvature: never an SOSP then.
    curvature = lm.lower if lm.lower_is_rigorous else lm.upper
    sosp = lm.converged and gn <= grad_rtol * gscale and curvature >= -curvature_rtol * scale
    return EndPoint(
        objective=f,
        risk=problem.value(X),
        penalized=problem.penalized(X),
        grad_norm=gn,
        lambda_min=lm.to_dict(),
        singular_values=svs,
        ranks=ranks,
        frobenius=math.sqrt(sum(float(x.pow(2).sum()) for x in X)),
        nuclear=sum(float(torch.linalg.matrix_norm(x, ord="nuc")) for x in X),
        sosp=bool(sosp),
        tolerances={"grad_rtol": grad_rtol, "curvature_rtol": curvature_rtol, "rank_rtol": rank_rtol},
    )
