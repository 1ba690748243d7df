r"""Training LoRA on a non-linearized problem, and what its end point is ([KKR25]).

* :func:`train_lora` -- Adam or gradient descent on :math:`L^{\mathrm{lora}}_\lambda(A, B)` of a
  :class:`~landscapes.nonlinear.problems.NonlinearProblem` (weight decay inside the gradient), then
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from landscapes.curvature.lora import LambdaMin, flatten_factors, smallest_ritz_pair, unflatten_factors
from landscapes.nonlinear.problems import NonlinearProblem
from landscapes.nuc import _spectra
from theory.errors import UserInputError

__all__ = [
    "train_lora",
    "train_sgd",
    "lambda_min_lora",
    "end_point",
    "EndPoint",
    "Factors",
    "inactive_columns",
    "truncate_factors",
    "polish_nonzero_columns",
]

Blocks = tuple[Tensor, ...]


@dataclass(frozen=True)
class Factors:
    """LoRA factors of a non-linearized problem: ``X_j = A_j B_j^T``, A_j of shape (m_j, r)."""

    A: Blocks
    B: Blocks


def _check_factors(problem: NonlinearProblem, f: Factors) -> None:
    if len(f.A) != len(problem.blocks) or len(f.B) != len(problem.blocks):
        raise UserInputError(
            f"factors: expected {len(problem.blocks)} (A, B) pairs, got {len(f.A)} and {len(f.B)}"
        )
    for j, ((m, n), a, b) in enumerate(zip(problem.blocks, f.A, f.B)):
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != m or b.shape[0] != n or a.shape[1] != b.shape[1]:
            raise UserInputError(
                f"factors[{j}]: expected A ({m}, r) and B ({n}, r) with the same r, "
                f"got {tuple(a.shape)} and {tuple(b.shape)}"
            )
        if not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all())):
            raise UserInputError(f"factors[{j}]: expected finite entries, got NaN or inf")


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
    _check_factors(problem, init)
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


def inactive_columns(point: Factors) -> tuple[tuple[int, ...], ...]:
    """Per block, the columns ``c`` with ``A_j[:, c] = 0`` and ``B_j[:, c] = 0`` exactly."""
    out = []
    for a, b in zip(point.A, point.B):
        zero = ~(a.ne(0).any(dim=0) | b.ne(0).any(dim=0))
        out.append(tuple(int(c) for c in torch.nonzero(zero).flatten()))
    return tuple(out)


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
    _check_factors(problem, point)
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 0:
        raise UserInputError(f"max_iter: expected an int >= 0, got {max_iter!r}")
    keep, reduced = _reduce(point, inactive_columns(point))
    if max_iter == 0 or not any(keep):
        return point
    done = _lbfgs(problem, reduced, max_iter, grad_tol)
    return _embed(done, keep, point)


def _reduce(point: Factors, zero: Sequence[Sequence[int]]) -> tuple[list[list[int]], Factors]:
    """The columns kept per block (all but ``zero``) and the factors restricted to them."""
    keep = [[c for c in range(a.shape[1]) if c not in z] for a, z in zip(point.A, zero)]
    reduced = Factors(
        tuple(a[:, k] for a, k in zip(point.A, keep)), tuple(b[:, k] for b, k in zip(point.B, keep))
    )
    return keep, reduced


def _embed(reduced: Factors, keep: Sequence[Sequence[int]], like: Factors) -> Factors:
    """``reduced`` put back in the columns ``keep`` of factors shaped like ``like``; zeros elsewhere."""
    A = [torch.zeros(a.shape, dtype=r.dtype, device=r.device) for a, r in zip(like.A, reduced.A)]
    B = [torch.zeros(b.shape, dtype=r.dtype, device=r.device) for b, r in zip(like.B, reduced.B)]
    for j, k in enumerate(keep):
        A[j][:, k] = reduced.A[j]
        B[j][:, k] = reduced.B[j]
    return Factors(tuple(A), tuple(B))


def _hvp(problem: NonlinearProblem, point: Factors) -> Callable[[np.ndarray], np.ndarray]:
    """The LoRA Hessian at ``point`` as a float64 numpy matvec (flattened factor order)."""

    def hv(v: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(v).reshape(-1))
        dA, dB = unflatten_factors(t.to(dtype=problem.dtype, device=problem.device), point.A, point.B)
        hA, hB = problem.lora_hvp(point.A, point.B, dA, dB)
        return flatten_factors(hA, hB).detach().cpu().double().numpy()

    return hv


def _dense_lora_hessian(problem: NonlinearProblem, point: Factors, *, chunk: int = 8) -> Tensor:
    """The LoRA Hessian at ``point`` as a dense float64 CPU matrix: one HVP per unit vector.

    The HVPs run ``chunk`` at a time under ``torch.func.vmap``; a progress bar shows on the
    terminal for long builds.
    """
    from tqdm.auto import tqdm

    P = sum(x.numel() for x in list(point.A) + list(point.B))

    def hv(v: Tensor) -> Tensor:
        dA, dB = unflatten_factors(v, point.A, point.B)
        hA, hB = problem.lora_hvp(point.A, point.B, dA, dB)
        return flatten_factors(hA, hB)

    eye = torch.eye(P, dtype=problem.dtype, device=problem.device)
    rows = []
    for i in tqdm(
        range(0, P, chunk), desc="Hessian columns", unit="chunk", disable=None if P > 256 else True
    ):
        rows.append(torch.func.vmap(hv)(eye[i : i + chunk]).detach().to(dtype=torch.float64, device="cpu"))
    return torch.cat(rows)


def _dense_bottom(H: Tensor, eps: float) -> tuple[float, Tensor, float, float]:
    """Smallest eigenpair of the symmetrized ``H``, a round-off allowance, and the largest eigenvalue.

    The allowance is half the measured asymmetry ``||H - H^T||_F`` (the skew part of the HVP
    columns' round-off), plus ``2 P eps ||H||_F`` for their symmetric part (which the asymmetry
    cannot show; ``eps`` is that of the HVP's dtype) and eigh's backward error.  It is a
    round-off model, not an a-priori bound on the autodiff HVP's error.
    """
    Hs = 0.5 * (H + H.T)
    w, V = torch.linalg.eigh(Hs)
    P = H.shape[0]
    f64 = torch.finfo(torch.float64).eps
    allowance = 0.5 * float((H - H.T).norm()) + P * (2.0 * eps + f64) * float(Hs.norm())
    return float(w[0]), V[:, 0], allowance, float(w[-1])


def _lanczos(
    problem: NonlinearProblem, point: Factors, *, tol: float, maxiter: int | None, seed: int
) -> tuple[Tensor, bool, int, int, float]:
    """ARPACK's smallest Ritz vector of the LoRA Hessian, convergence, matvecs (all, for it), lambda_max."""
    from scipy.sparse.linalg import LinearOperator

    P = sum(x.numel() for x in list(point.A) + list(point.B))
    hv = _hvp(problem, point)
    count = {"n": 0}

    def counted(v: np.ndarray) -> np.ndarray:
        count["n"] += 1
        return hv(v)

    op = LinearOperator((P, P), matvec=counted, dtype=np.float64)
    w, X, converged, n_min, lam_max = smallest_ritz_pair(
        op, P, tol=tol, maxiter=maxiter, seed=seed, count=lambda: count["n"]
    )
    vec = torch.as_tensor(X[:, 0], dtype=torch.float64)
    return vec / vec.norm(), converged, count["n"], n_min, lam_max


def _bottom(
    problem: NonlinearProblem,
    point: Factors,
    *,
    tol: float,
    maxiter: int | None,
    seed: int,
    dense_max: int,
) -> tuple[Tensor, bool, int, int, float, float | None]:
    """Bottom of the LoRA Hessian at ``point`` by the dense route (up to ``dense_max``) or Lanczos.

    Returns the unit vector, converged, matvecs (all, for it), lambda_max, and for the dense
    route a rigorous lower bound on the smallest eigenvalue (``None`` for Lanczos): eigh's
    smallest eigenvalue minus the error allowance.
    """
    P = sum(x.numel() for x in list(point.A) + list(point.B))
    if P <= dense_max:
        eps = torch.finfo(problem.dtype).eps
        w0, v, allowance, w_max = _dense_bottom(_dense_lora_hessian(problem, point), eps)
        return v, True, P, P, w_max, w0 - allowance
    vec, converged, n_all, n_min, lam_max = _lanczos(problem, point, tol=tol, maxiter=maxiter, seed=seed)
    return vec, converged, n_all, n_min, lam_max, None


def lambda_min_lora(
    problem: NonlinearProblem,
    point: Factors,
    *,
    tol: float = 1e-8,
    maxiter: int | None = None,
    seed: int = 0,
    structured: bool = True,
    dense_max: int = 0,
) -> LambdaMin:
    r"""Smallest eigenvalue of the LoRA Hessian at ``point``: Lanczos (or a dense build) on the autodiff HVP.

    ``structured=True`` and columns that are exactly zero in both factors (see
    :func:`truncate_factors`): such a column ``c`` of block ``j`` moves :math:`X_j` only at second
    order, so the Hessian splits exactly into the Hessian of the *reduced* point (the other
    columns) and, per zero column, :math:`\begin{bmatrix}\lambda_j I & G_j \\ G_j^\top &
    \lambda_j I\end{bmatrix}`, :math:`G_j = \nabla_{X_j} L`, with eigenvalues
    :math:`\lambda_j \pm \sigma_i(G_j)` (and :math:`\lambda_j`).  Then

    .. math:: \lambda_{\min} = \min\Big(\lambda_{\min}(H_{\text{reduced}}),\
              \min_{j \text{ with zero columns}} \lambda_j - \|G_j\|_{op}\Big),

    the second term in closed form, and the first on the reduced point only: fewer parameters,
    and without the cluster of :math:`r_0 \cdot \#\{i: \sigma_i(G_j) \approx \lambda_j\}`
    eigenvalues near 0 that the zero columns contribute at a rank-deficient stationary point.

    The reduced (or, without zero columns, the whole) Hessian's bottom comes from Lanczos, or,
    when it has at most ``dense_max`` parameters, from the dense matrix built with one HVP per
    unit vector and ``eigh``: then ``lower`` is a bound up to the round-off of the computed
    Hessian (allowed for by the columns' measured asymmetry, a ``P eps ||H||_F`` term for the
    symmetric part, and eigh's backward error; ``lower_is_rigorous`` is ``True`` in this sense,
    as for the structured route's computed matrices) and ``converged`` is ``True``.  The returned
    vector's Rayleigh quotient and residual are computed with the HVP of the *whole* Hessian (a
    check of the splitting); ``meta`` records both parts.
    """
    _check_factors(problem, point)
    if isinstance(dense_max, bool) or not isinstance(dense_max, int) or dense_max < 0:
        raise UserInputError(f"dense_max: expected an int >= 0, got {dense_max!r}")
    t0 = time.perf_counter()
    P = sum(x.numel() for x in list(point.A) + list(point.B))
    zero = inactive_columns(point) if structured else tuple(() for _ in point.A)
    meta: dict[str, Any] = {}
    eps = torch.finfo(problem.dtype).eps
    lower: float | None = None
    if any(zero):
        keep, reduced = _reduce(point, zero)
        G = problem.grad(tuple(a @ b.T for a, b in zip(point.A, point.B)))
        closed, closed_vec, closed_max = math.inf, None, -math.inf
        for j, (g, lam, z) in enumerate(zip(G, problem.lam, zero)):
            if not z:
                continue
            # [[lam I, G], [G^T, lam I]] [u; -v] = (lam - sigma_1) [u; -v] for the top pair (u, v)
            Ug, sg, Vh = torch.linalg.svd(g, full_matrices=False)
            s1 = float(sg[0])
            closed_max = max(closed_max, lam + s1)
            if lam - s1 < closed:
                closed = lam - s1
                dA = [torch.zeros_like(a) for a in point.A]
                dB = [torch.zeros_like(b) for b in point.B]
                dA[j][:, z[0]] = Ug[:, 0] / math.sqrt(2.0)
                dB[j][:, z[0]] = -Vh[0] / math.sqrt(2.0)
                closed_vec = flatten_factors(dA, dB).to(dtype=torch.float64, device="cpu")
        n_red = sum(x.numel() for x in list(reduced.A) + list(reduced.B))
        meta.update(closed_form_lambda_min=closed, reduced_params=n_red)
        red_low: float | None = math.inf
        if n_red:
            rvec, converged, n_all, n_min, lam_max, red_low = _bottom(
                problem, reduced, tol=tol, maxiter=maxiter, seed=seed, dense_max=dense_max
            )
            # embed the reduced vector in the whole coordinates (zeros on the zero columns)
            rA, rB = unflatten_factors(rvec, reduced.A, reduced.B)
            emb = _embed(
                Factors(
                    tuple(x.to(torch.float64).cpu() for x in rA), tuple(x.to(torch.float64).cpu() for x in rB)
                ),
                keep,
                point,
            )
            red_vec = flatten_factors(emb.A, emb.B)
        else:
            red_vec, converged, n_all, n_min, lam_max = None, True, 0, 0, -math.inf
        full_hv = _hvp(problem, point)
        cands = [v for v in (red_vec, closed_vec) if v is not None]
        quotients = []
        for v in cands:
            Hv = torch.as_tensor(full_hv(v.numpy()), dtype=torch.float64)
            quotients.append((float(v @ Hv), v, Hv))
        theta, vec, Hv = min(quotients, key=lambda q: q[0])
        # the closed form's Rayleigh quotient through the whole HVP: a check of the splitting
        meta.update(
            reduced_ritz_value=quotients[0][0] if red_vec is not None else None,
            closed_form_check=abs(quotients[-1][0] - closed),
        )
        if red_low is not None:  # a dense (or empty) reduced part: a rigorous lower bound
            # lam - sigma_1(G): G and its SVD carry round-off of order P eps ||G||
            lower = min(closed - 4 * P * eps * max(1.0, closed_max), red_low)
        lam_max = max(lam_max, closed_max) if math.isfinite(lam_max) else closed_max
        matvecs = n_all + len(cands)
        method = "zero-columns+" + ("lanczos" if red_low is None else "dense") + "-autodiff"
        if not n_red:
            method = "zero-columns-closed-form"
    else:
        vec, converged, n_all, n_min, lam_max, lower = _bottom(
            problem, point, tol=tol, maxiter=maxiter, seed=seed, dense_max=dense_max
        )
        Hv = torch.as_tensor(_hvp(problem, point)(vec.numpy()), dtype=torch.float64)
        theta = float(vec @ Hv)
        matvecs = n_all + 1
        method = "lanczos-autodiff" if lower is None else "dense-autodiff"
    resid = float((Hv - theta * vec).norm())
    seconds = time.perf_counter() - t0
    tg = time.perf_counter()
    problem.lora_value_and_grad(point.A, point.B)
    t_grad = time.perf_counter() - tg
    meta["matvecs_lambda_min"] = n_min
    return LambdaMin(
        value=theta,
        lower=theta - resid if lower is None else lower,
        upper=theta,
        residual=resid,
        lambda_max=lam_max,
        method=method,
        lower_is_rigorous=lower is not None,
        converged=converged,
        matvecs=matvecs,
        seconds=seconds,
        gradient_multiple=seconds / max(t_grad, 1e-12),
        n_params=P,
        vector=vec,
        meta=meta,
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
    dense_max: int = 0,
) -> EndPoint:
    r"""Classify ``point`` by the numbers of [KKR25], and as an approximate SOSP or not.

    An SOSP: :math:`\|\nabla\| \le` ``grad_rtol`` :math:`\cdot \|\nabla L(0)\|_F`
    and :math:`\lambda_{\min} \ge -` ``curvature_rtol`` :math:`\cdot |\lambda_{\max}|` (both scale
    with the problem: a risk multiplied by ``c`` gets tolerances multiplied by ``c``; a zero
    :math:`\nabla L(0)` or :math:`\lambda_{\max}` falls back to 1)
    (:func:`lambda_min_lora`; ``dense_max`` is passed on).  With Lanczos the curvature test uses
    the Ritz value, an upper bound: a point it rejects has certified negative curvature; a point it
    accepts is an SOSP up to Lanczos' accuracy (stated as such), and only when Lanczos converged
    (``lambda_min["converged"]``).  With a dense (or closed-form) bottom it uses the rigorous
    lower bound.
    """
    _check_factors(problem, point)
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
