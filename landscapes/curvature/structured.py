r"""The structured route to a certified :math:`\lambda_{\min}` of the LoRA Hessian (linearized problems).

The Hessian splits as :math:`H = M + W W^\top` with :math:`M = \bigoplus_j (Y_j \otimes I_{r_j})`
(:func:`~landscapes.curvature.dense.column_pair_matrix`) and
:math:`W W^\top = \tfrac1N \Phi^\top H_z \Phi` of rank at most ``K N``.
One eigendecomposition of each :math:`Y_j` gives :math:`M = Q\,\mathrm{diag}(\mu)\,Q^\top`;
then :math:`Q^\top H Q = \mathrm{diag}(\mu) + Z Z^\top`, :math:`Z = Q^\top W`.  Since
:math:`WW^\top \succeq 0`, :math:`\lambda_{\min}(H) \ge \mu_1 = \min_j \lambda_{\min}(Y_j)`
for free (:math:`\lambda - \|S\|_{op}` unperturbed), and by interlacing
:math:`\lambda_{\min}(H) \le \mu_{KN+1}`.  Haynsworth's inertia formula applied to
:math:`\begin{pmatrix} \mathrm{diag}(\mu) - x & Z \\ Z^\top & -I \end{pmatrix}` counts the
eigenvalues below ``x`` with ``K N``-dimensional work,

.. math:: \#\{\lambda_i(H) < x\} = \#\{\mu_i < x\}
          + \#\mathrm{neg}\big(-I - Z^\top (\mathrm{diag}(\mu) - x)^{-1} Z\big) - KN,

so bisection brackets :math:`\lambda_{\min}` (``lower``: no eigenvalue below it).  The vector
:math:`(\mathrm{diag}(\mu) - x)^{-1} Z c` (``c`` the null vector of the ``K N``-square secular
matrix) gives ``upper`` as a Rayleigh quotient -- a rigorous upper bound -- and a residual
:math:`\|Hv - \theta v\|` computed with the closed-form HVP (an independent check of the
whole construction).  No Krylov iteration over :math:`\sum_j (m_j + n_j) r_j` unknowns.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from landscapes.curvature.certificate import (
    LambdaMin,
    check_exclude,
    check_route_input,
    rayleigh_residual,
    route_cost,
)
from landscapes.curvature.dense import column_pair_matrix, loss_hessian_blocks
from landscapes.curvature.hvp import LoRAHessianOperator
from landscapes.curvature.lanczos import refine_compressed
from landscapes.lora import (
    prediction_jacobian,
    product,
)
from landscapes.operators import DenseOperator
from landscapes.problem import Blocks, Problem
from theory.errors import UserInputError

__all__ = ["lambda_min_structured"]


def _gauss_newton_factor(problem: Problem, U: Sequence[Tensor], V: Sequence[Tensor]) -> Tensor:
    r"""``W^T`` with :math:`W W^\top = \frac1N \Phi^\top H_z \Phi`, shape ``(K N, P)``."""
    ev = problem.evaluate(product(U, V))
    q = problem.KN
    Phi = prediction_jacobian(problem, U, V)
    if problem.loss.name == "squared":
        return Phi / math.sqrt(problem.N)
    Hz = loss_hessian_blocks(problem, ev.z) / problem.N  # (N, K, K), PSD for convex losses
    w, Qh = torch.linalg.eigh(Hz)
    root = (Qh * w.clamp_min(0.0).sqrt().unsqueeze(1)) @ Qh.transpose(1, 2)
    return (root @ Phi.reshape(problem.N, problem.K, -1)).reshape(q, -1)


def _eigenbasis(
    problem: Problem, U: Sequence[Tensor], V: Sequence[Tensor], pert: Blocks | None
) -> tuple[Tensor, Tensor, list[Tensor]]:
    r"""``(mu, Z, Qs)``: :math:`Q^\top H Q = \mathrm{diag}(\mu) + Z Z^\top` with ``Q`` block-diagonal.

    ``Qs[j]`` holds the eigenvectors of :math:`Y_j`; ``mu`` repeats each eigenvalue of :math:`Y_j`
    ``r_j`` times (the row ``(e, a)``: eigenvector ``e``, column ``a``); ``Z`` is ``(P, K N)``.
    """
    ev = problem.evaluate(product(U, V))
    WT = _gauss_newton_factor(problem, U, V)  # (KN, P)
    q = WT.shape[0]
    mus, Zs, Qs = [], [], []
    o = 0
    for j, (lam, u, v, S) in enumerate(zip(problem.lam, U, V, ev.S)):
        (m, r), n = u.shape, v.shape[0]
        Y = column_pair_matrix(S, lam, None if pert is None else pert[j])
        mu, Q = torch.linalg.eigh(Y)
        Wj = WT[:, o : o + (m + n) * r].reshape(q, m + n, r)  # rows of [U; V] x columns
        Zj = torch.einsum("ie,qir->erq", Q, Wj).reshape((m + n) * r, q)  # (eig e, column a) x KN
        mus.append(mu.repeat_interleave(r))
        Zs.append(Zj)
        Qs.append(Q)
        o += (m + n) * r
    return torch.cat(mus), torch.cat(Zs), Qs


def _to_eigenbasis(x: Tensor, Qs: Sequence[Tensor], U: Sequence[Tensor], V: Sequence[Tensor]) -> Tensor:
    """A parameter-order vector in the eigenbasis of ``M`` (inverse of the structured ``to_params``)."""
    out, k = [], 0
    for Q, u, v in zip(Qs, U, V):
        (m, r), n = u.shape, v.shape[0]
        block = x[k : k + (m + n) * r].reshape(m + n, r)
        out.append((Q.T @ block).reshape(-1))
        k += (m + n) * r
    return torch.cat(out)


def _to_params(vM: Tensor, Qs: Sequence[Tensor], U: Sequence[Tensor], V: Sequence[Tensor]) -> Tensor:
    """Map a vector in M's eigenbasis back to parameter order (inverse of :func:`_to_eigenbasis`)."""
    out, k = [], 0
    for Q, u, v in zip(Qs, U, V):
        (m, r), n = u.shape, v.shape[0]
        block = vM[k : k + (m + n) * r].reshape(m + n, r)
        out.append((Q @ block).reshape(-1))
        k += (m + n) * r
    return torch.cat(out)


def _count_below(x: float, mu: Tensor, Z: Tensor, eps: float) -> int | None:
    r"""Eigenvalues of :math:`\mathrm{diag}(\mu) + Z Z^\top` below ``x`` (Haynsworth, module docstring).

    ``None`` when the sign count is not reliable: an eigenvalue of the secular matrix
    :math:`-I - Z^\top (\mathrm{diag}(\mu) - x)^{-1} Z` at rounding level.
    """
    q = Z.shape[1]
    d = mu - x
    if bool((d == 0).any()):
        x = math.nextafter(x, math.inf)
        d = mu - x
    G = -torch.eye(q, dtype=Z.dtype, device=Z.device) - Z.T @ (Z / d.unsqueeze(1))
    ev = torch.linalg.eigvalsh(G)
    big = float(ev.abs().max()) if q else 0.0
    if q and float(ev.abs().min()) <= 1e3 * q * eps * big:
        return None  # an eigenvalue of G at rounding level: its sign is not trustworthy
    neg = int((ev < 0).sum())
    return int((mu < x).sum()) + neg - q


def _bisect(
    count_below: Callable[[float], int | None],
    lo: float,
    hi: float,
    width_tol: Callable[[float, float], float],
    max_bisections: int,
) -> tuple[float, float, float, int, bool]:
    """Bisect ``[lo, hi]`` on the inertia count: ``(lo, hi, hi_sure, bisections, ambiguous)``.

    Invariant: no eigenvalue below ``lo``; at least one eigenvalue ``<= hi``.  An unreliable count
    (``None``) never moves ``lo``; it moves ``hi``, but only reliable counts move ``hi_sure``, the
    end that backs the returned upper bound.
    """
    bisections = 0
    ambiguous = False
    hi_sure = hi  # the smallest hi backed by a reliable count
    while bisections < max_bisections and hi - lo > width_tol(lo, hi):
        mid = 0.5 * (lo + hi)
        if not lo < mid < hi:
            break
        bisections += 1
        cnt = count_below(mid)
        if cnt is None:
            ambiguous = True
            hi = mid
        elif cnt >= 1:
            hi = hi_sure = mid
        else:
            lo = mid
    return lo, hi, hi_sure, bisections, ambiguous


def _candidates(mu: Tensor, Z: Tensor, Z_gn: Tensor, x: float, hi: float, i1: int) -> list[Tensor]:
    r"""Unit candidate eigenvectors of ``H`` in M's eigenbasis, near the bracket's midpoint ``x``.

    (1) The secular vector :math:`(\mathrm{diag}(\mu) - x)^{-1} Z c`.  (2) Eigenvectors of ``M``
    that ``Z`` does not see (e.g. the rotations ``U Q, V Q`` of balanced factors): within M's
    eigenvalues ``<= hi`` (at most ``K N + 1`` of them, ties aside), the null space of
    ``Z_gn^T`` -- the Gauss-Newton columns alone, also with excluded directions (their projection
    removes the excluded part).  (3) Failing both, M's bottom eigenvector ``i1``.
    """
    P, q = int(mu.numel()), Z.shape[1]
    candidates = []
    d = mu - x
    nz = d != 0
    Dinv = torch.where(nz, 1.0 / torch.where(nz, d, torch.ones_like(d)), torch.zeros_like(d))
    if q:
        G = torch.eye(q, dtype=Z.dtype, device=Z.device) + Z.T @ (Z * Dinv.unsqueeze(1))
        gw, gv = torch.linalg.eigh(G)
        vM = -(Dinv * (Z @ gv[:, int(torch.argmin(gw.abs()))]))
        if float(vM.norm()) > 0:
            candidates.append(vM / vM.norm())
    cluster = torch.nonzero(mu <= hi).flatten()
    if cluster.numel() > 0:
        Zc = Z_gn[cluster]
        Uc, sv, _ = torch.linalg.svd(Zc, full_matrices=True)
        rank_c = int((sv > 1e-12 * (float(sv.max()) if sv.numel() else 0.0)).sum())
        if rank_c < cluster.numel():
            Nb = Uc[:, rank_c:]
            ew, evec = torch.linalg.eigh(Nb.T @ (mu[cluster].unsqueeze(1) * Nb))
            vM = torch.zeros(P, dtype=Z.dtype, device=Z.device)
            vM[cluster] = Nb @ evec[:, 0]
            candidates.append(vM / vM.norm())
    if not candidates:  # pragma: no cover - P >= 1 always gives a candidate
        vM = torch.zeros(P, dtype=Z.dtype, device=Z.device)
        vM[i1] = 1.0
        candidates.append(vM)
    return candidates


def _with_excluded(
    Z: Tensor, G: Tensor, sigma: float, Qs: Sequence[Tensor], U: Sequence[Tensor], V: Sequence[Tensor]
) -> Tensor:
    r"""``Z`` with :math:`\sqrt\sigma\, Q^\top G` as more columns: the ``Z`` of :math:`H + \sigma GG^\top`."""
    GM = torch.stack([_to_eigenbasis(G[:, c], Qs, U, V) for c in range(G.shape[1])], dim=1)
    return torch.cat([Z, math.sqrt(sigma) * GM], dim=1)


def _best_unprojected(
    op: LoRAHessianOperator,
    candidates: Sequence[Tensor],
    mu: Tensor,
    Z: Tensor,
    Qs: Sequence[Tensor],
    U: Sequence[Tensor],
    V: Sequence[Tensor],
) -> tuple[float, float, Tensor]:
    r"""The candidate of least Rayleigh quotient :math:`\sum_i \mu_i c_i^2 + \|Z^\top c\|^2`.

    Returns ``(theta, residual, vector)``, the vector in parameter order, with ``theta`` and the
    residual recomputed by one closed-form HVP (:func:`~landscapes.curvature.certificate.rayleigh_residual`).
    """
    rq = [float((mu * c * c).sum() + (Z.T @ c).pow(2).sum()) for c in candidates]
    vec = _to_params(candidates[int(np.argmin(rq))], Qs, U, V)
    vec = vec / vec.norm()
    theta, resid = rayleigh_residual(op, vec)
    return theta, resid, vec


def _best_projected(
    op: LoRAHessianOperator,
    candidates: Sequence[Tensor],
    G: Tensor,
    lo: float,
    width_tol: Callable[[float, float], float],
) -> tuple[float, float, Tensor]:
    r"""The best candidate (parameter order) projected onto :math:`\mathrm{span}(G)^\perp`.

    Each is judged by its Rayleigh quotient of ``H`` itself: ``(theta, residual, vector)``.  The
    projected candidates can be poor: where negative curvature is possible (``lo < 0``) the upper
    end is refined by Lanczos on the compressed operator from the best one
    (:func:`~landscapes.curvature.lanczos.refine_compressed`); any Rayleigh quotient of ``H`` on
    :math:`\mathrm{span}(G)^\perp` is still an upper bound.  (With ``lo > 0`` no saddle is possible
    and the width only costs accuracy, not a decision.)
    """
    best = None
    for v in candidates:
        v = v - G @ (G.T @ v)
        if float(v.norm()) == 0.0:
            continue
        v = v / v.norm()
        th, rs = rayleigh_residual(op, v, exclude=G)
        if best is None or th < best[0]:
            best = (th, rs, v)
    if best is None:  # pragma: no cover - a candidate inside span(G) only
        raise RuntimeError("lambda_min_structured: every candidate vector lies in span(exclude)")
    theta, resid, vec = best
    if lo < 0 and theta - lo > width_tol(lo, theta):
        refined = refine_compressed(op, G, vec)
        if refined is not None and refined[0] < theta:
            theta, resid, vec = refined
    return theta, resid, vec


def lambda_min_structured(
    problem: Problem,
    U: Sequence[Tensor],
    V: Sequence[Tensor],
    *,
    perturbation: Sequence[Tensor] | None = None,
    rtol: float = 1e-8,
    max_bisections: int = 200,
    t_grad: float | None = None,
    exclude: Tensor | None = None,
) -> LambdaMin:
    r"""Certified :math:`\lambda_{\min}` by the structured route (module docstring).

    ``exclude``: orthonormal columns ``G`` (``(P, t)``, parameter order) of directions to leave
    out -- the gauge directions of :mod:`landscapes.gauge`.  Then the interval is that of
    :math:`\lambda_{\min}` of ``H`` compressed to :math:`\mathrm{span}(G)^\perp`: the inertia
    count runs on :math:`H + \sigma G G^\top` (``sigma`` above the spectrum of ``H``; one more
    low-rank PSD term, so ``Z`` gains ``t`` columns), whose smallest eigenvalue is at most the
    compressed one (for :math:`s \perp G`, :math:`s^\top (H + \sigma GG^\top) s = s^\top H s`), so
    ``lower`` stays rigorous; ``upper`` is the Rayleigh quotient of ``H`` at the candidate vector
    projected onto :math:`\mathrm{span}(G)^\perp`.

    Bisection stops when the bracket is narrower than
    ``rtol * max(|lambda_min|, 1e-6 * |lambda_max|)`` (relative accuracy ``rtol``, or
    ``rtol`` times the default curvature tolerance when :math:`\lambda_{\min} \approx 0`);
    ``lower`` then also subtracts a rounding slack ``10 P eps (max|mu| + ||Z||^2)`` (in ``meta``),
    and a sign count of the secular matrix at rounding level never raises ``lower``.
    Needs ``J``'s rows (dense ``J``; an operator is materialized with ``K N`` products).
    Cost: one eigendecomposition of each ``Y_j``, one pass over the rows of ``J`` for ``Phi``,
    and per bisection step a ``K N x K N`` product
    :math:`Z^\top D^{-1} Z` (``P (KN)^2`` flops) and its eigenvalues; one HVP for the residual.
    """
    if not (isinstance(rtol, float) and rtol > 0):
        raise UserInputError(f"rtol: expected a positive float, got {rtol!r}")
    pert = check_route_input(problem, U, V, perturbation)
    t0 = time.perf_counter()
    if not isinstance(problem.J, DenseOperator):
        problem.J.check_deterministic(name="problem.J")
    mu_all, Z, Qs = _eigenbasis(problem, U, V, pert)
    q = Z.shape[1]
    P = int(mu_all.numel())
    mu_sorted = torch.sort(mu_all)[0]
    mu1 = float(mu_sorted[0])
    zz = float(torch.linalg.eigvalsh(Z.T @ Z)[-1]) if q else 0.0
    lam_max_bound = float(mu_sorted[-1]) + zz
    Gx = check_exclude(exclude, P, Z)
    Z_gn = Z  # the Gauss-Newton columns alone
    if Gx is not None and Gx.shape[1] > 0:
        # H + sigma G G^T: G in M's eigenbasis joins Z as t more columns.
        Z = _with_excluded(Z, Gx, 2.0 * (float(mu_all.abs().max()) + zz), Qs, U, V)
        q = Z.shape[1]
        zz = float(torch.linalg.eigvalsh(Z.T @ Z)[-1])
    eps = float(torch.finfo(Z.dtype).eps)

    # bracket: [mu_1, min(mu_{KN+1}, Rayleigh quotient of M's bottom eigenvector)]
    i1 = int(torch.argmin(mu_all))
    hi = float(mu_all[i1]) + float(Z[i1] @ Z[i1])
    if P > q:
        hi = min(hi, float(mu_sorted[q]))
    tol_scale = 1e-6 * abs(lam_max_bound)

    def width_tol(a: float, b: float) -> float:
        return rtol * max(min(abs(a), abs(b)) if a * b > 0 else 0.0, tol_scale)

    lo, hi, hi_sure, bisections, ambiguous = _bisect(
        lambda x: _count_below(x, mu_all, Z, eps), mu1, hi, width_tol, max_bisections
    )
    x = 0.5 * (lo + hi)
    # Rounding: the eigendecompositions and Z carry backward errors ~ P eps (|mu| + |Z|^2).
    slack = 10.0 * P * eps * (float(mu_all.abs().max()) + zz)

    op = LoRAHessianOperator(problem, U, V, perturbation=pert)
    candidates = _candidates(mu_all, Z, Z_gn, x, hi, i1)
    if Gx is not None and Gx.shape[1] > 0:
        theta, resid, vec = _best_projected(
            op, [_to_params(c, Qs, U, V) for c in candidates], Gx, lo, width_tol
        )
        converged = theta - lo <= width_tol(lo, theta)  # the width of the interval returned
        # the inertia counts bound H + sigma G G^T, whose smallest eigenvalue is below the
        # compressed one: only the Rayleigh quotient bounds it from above
        upper = theta
    else:
        theta, resid, vec = _best_unprojected(op, candidates, mu_all, Z, Qs, U, V)
        converged = hi - lo <= width_tol(lo, hi)
        upper = min(hi_sure, theta)
    lower = lo - slack
    seconds, multiple = route_cost(problem, U, V, pert, t0, t_grad)
    # One pass over J's rows for Phi costs ~ K N p r flops, an HVP ~ 2 K N p: count r/2 HVPs.
    rmax = max(u.shape[1] for u in U)
    return LambdaMin(
        value=min(max(x, lower), upper),
        lower=lower,
        upper=upper,
        residual=resid,
        lambda_max=lam_max_bound,
        method="structured",
        lower_is_rigorous=True,
        converged=converged,
        matvecs=op.count + math.ceil(rmax / 2),
        seconds=seconds,
        gradient_multiple=multiple,
        n_params=P,
        vector=vec,
        meta={
            "free_lower_bound": mu1,
            "bisections": bisections,
            "secular_dimension": q,
            "rayleigh_quotient": theta,
            "rounding_slack": slack,
            "ambiguous_counts": ambiguous,
            "excluded_directions": 0 if Gx is None else int(Gx.shape[1]),
        },
    )
