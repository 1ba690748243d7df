r"""Training LoRA on a non-linearized problem, and what its end point is ([KKR25]).

* :func:`train_lora` -- Adam or gradient descent on :math:`L^{\mathrm{lora}}_\lambda(A, B)` of a
  :class:`~landscapes.nonlinear.NonlinearProblem` (weight decay inside the gradient), then
  optionally L-BFGS to a tight stationary point.
* :func:`lambda_min_lora` -- the smallest Hessian eigenvalue of :math:`L^{\mathrm{lora}}_\lambda`
  by Lanczos (ARPACK ``eigsh``) on the autodiff Hessian-vector product: the generic route of
  DESIGN.md for landscapes without the linearized structure.  The Ritz value is a rigorous
  *upper* bound on :math:`\lambda_{\min}`; ``value - residual`` bounds *an* eigenvalue only.
* :func:`end_point` -- the numbers [KKR25] classify an end point by: objective, risk, gradient
  norm, :math:`\lambda_{\min}` with residual, singular values and rank of :math:`X = AB^\top`,
  :math:`\|X\|_F`, :math:`\|X\|_*`, and whether it is an approximate SOSP.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from landscapes.curvature import LambdaMin, flatten_factors, smallest_ritz_pair, unflatten_factors
from landscapes.nonlinear import NonlinearProblem
from landscapes.nuc import _spectra

__all__ = ["train_lora", "train_sgd", "lambda_min_lora", "end_point", "EndPoint", "Factors"]

Blocks = tuple[Tensor, ...]


@dataclass(frozen=True)
class Factors:
    """LoRA factors of a non-linearized problem: ``X_j = A_j B_j^T``, A_j of shape (m_j, r)."""

    A: Blocks
    B: Blocks


def _check_factors(problem: NonlinearProblem, f: Factors) -> None:
    if len(f.A) != len(problem.blocks) or len(f.B) != len(problem.blocks):
        raise ValueError(
            f"factors: expected {len(problem.blocks)} (A, B) pairs, got {len(f.A)} and {len(f.B)}"
        )
    for j, ((m, n), a, b) in enumerate(zip(problem.blocks, f.A, f.B)):
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != m or b.shape[0] != n or a.shape[1] != b.shape[1]:
            raise ValueError(
                f"factors[{j}]: expected A ({m}, r) and B ({n}, r) with the same r, "
                f"got {tuple(a.shape)} and {tuple(b.shape)}"
            )
        if not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all())):
            raise ValueError(f"factors[{j}]: expected finite entries, got NaN or inf")


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

    _check_factors(problem, init)
    if optimizer not in ("adam", "gd"):
        raise ValueError(f"optimizer: expected 'adam' or 'gd', got {optimizer!r}")
    for name, v in (("steps", steps), ("polish", polish)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{name}: expected an int >= 0, got {v!r}")
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr: expected a positive finite number, got {lr!r}")
    if isinstance(record_every, bool) or not isinstance(record_every, int) or record_every < 1:
        raise ValueError(f"record_every: expected a positive int, got {record_every!r}")
    if not (isinstance(grad_tol, (int, float)) and grad_tol >= 0 and math.isfinite(grad_tol)):
        raise ValueError(f"grad_tol: expected a finite number >= 0, got {grad_tol!r}")
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
    _check_factors(problem, init)
    if problem.batch_risk is None or "N" not in problem.meta:
        raise ValueError(
            f"problem: expected a batch_risk and meta['N'] for SGD, got {problem.name!r} without"
        )
    N = int(problem.meta["N"])
    for name, v in (("batch", batch), ("steps", steps), ("window", window)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: expected a positive int, got {v!r}")
    if batch > N:
        raise ValueError(f"batch: expected at most N = {N}, got {batch}")
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr: expected a positive finite number, got {lr!r}")
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

    from landscapes._threads import scipy_blas_single_thread

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


def lambda_min_lora(
    problem: NonlinearProblem, point: Factors, *, tol: float = 1e-8, maxiter: int | None = None, seed: int = 0
) -> LambdaMin:
    """Smallest eigenvalue of the LoRA Hessian at ``point``: Lanczos on the autodiff HVP."""
    from scipy.sparse.linalg import LinearOperator

    _check_factors(problem, point)
    t0 = time.perf_counter()
    P = sum(x.numel() for x in list(point.A) + list(point.B))
    count = {"n": 0}

    def hv(v: np.ndarray) -> np.ndarray:
        count["n"] += 1
        t = torch.from_numpy(np.ascontiguousarray(v).reshape(-1))
        dA, dB = unflatten_factors(t.to(dtype=problem.dtype, device=problem.device), point.A, point.B)
        hA, hB = problem.lora_hvp(point.A, point.B, dA, dB)
        return flatten_factors(hA, hB).detach().cpu().double().numpy()

    op = LinearOperator((P, P), matvec=hv, dtype=np.float64)
    w, X, converged, n_min, lam_max = smallest_ritz_pair(
        op, P, tol=tol, maxiter=maxiter, seed=seed, count=lambda: count["n"]
    )
    vec = torch.as_tensor(X[:, 0], dtype=torch.float64)
    vec = vec / vec.norm()
    Hv = torch.as_tensor(hv(vec.numpy()), dtype=torch.float64)
    theta = float(vec @ Hv)
    resid = float((Hv - theta * vec).norm())
    seconds = time.perf_counter() - t0
    tg = time.perf_counter()
    problem.lora_value_and_grad(point.A, point.B)
    t_grad = time.perf_counter() - tg
    return LambdaMin(
        value=theta,
        lower=theta - resid,
        upper=theta,
        residual=resid,
        lambda_max=lam_max,
        method="lanczos-autodiff",
        lower_is_rigorous=False,
        converged=converged,
        matvecs=count["n"],
        seconds=seconds,
        gradient_multiple=seconds / max(t_grad, 1e-12),
        n_params=P,
        vector=vec,
        meta={"matvecs_lambda_min": n_min, "ritz_value": float(w[0])},
    )


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
) -> EndPoint:
    r"""Classify ``point`` by the numbers of [KKR25], and as an approximate SOSP or not.

    An approximate SOSP: :math:`\|\nabla\| \le` ``grad_rtol`` :math:`\cdot \max(1, \|\nabla L(0)\|_F)`
    and the Lanczos :math:`\lambda_{\min} \ge -` ``curvature_rtol`` :math:`\cdot \max(1, |\lambda_{\max}|)`.
    The curvature test uses the Ritz value, an upper bound: a point it rejects has certified
    negative curvature; a point it accepts is an SOSP up to Lanczos' accuracy (stated as such),
    and only when Lanczos converged (``lambda_min["converged"]``).
    """
    _check_factors(problem, point)
    f, gA, gB = problem.lora_value_and_grad(point.A, point.B)
    gn = float(flatten_factors(gA, gB).norm())
    g0 = math.sqrt(sum(float(x.pow(2).sum()) for x in problem.grad(problem.zeros())))
    lm = lambda_min_lora(problem, point, tol=tol, maxiter=maxiter)
    X = tuple(a @ b.T for a, b in zip(point.A, point.B))
    svs, ranks = _spectra(X, rank_rtol)
    scale = max(1.0, abs(lm.lambda_max)) if math.isfinite(lm.lambda_max) else 1.0
    # An unconverged Lanczos run proves nothing about the curvature: never an SOSP then.
    sosp = lm.converged and gn <= grad_rtol * max(1.0, g0) and lm.upper >= -curvature_rtol * scale
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
