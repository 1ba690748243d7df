r"""Certified smallest eigenvalue of the LoRA Hessian: structured, Lanczos and dense routes.

The Hessian of the (optionally perturbed) LoRA objective of a linearized problem splits as
(see :func:`landscapes.lora.lora_hessian`)

.. math:: H = M + W W^\top, \qquad M = \bigoplus_j (Y_j \otimes I_{r_j}), \qquad
          W W^\top = \tfrac1N \Phi^\top H_z \Phi,

with :math:`Y_j` the ``(m_j + n_j)``-square column-pair matrix
(:func:`landscapes.lora.column_pair_matrix`, eigenvalues :math:`\lambda_j \pm \sigma_i(S_j)` and
:math:`\lambda_j` when unperturbed) and ``W`` of rank at most ``K N``.  Three routes to
:math:`\lambda_{\min}(H)`:

``"structured"`` (:func:`lambda_min_structured`, the default for linearized problems)
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
``"lanczos"`` (:func:`lambda_min_lanczos`)
    ARPACK's ``eigsh(which="SA")`` on the closed-form HVP operator: for problems without the
    structure.  Its ``lower`` is only ``theta - residual``: an eigenvalue lies within the residual
    of ``theta``, but Lanczos does not prove there is none below.
``"dense"`` (:func:`lambda_min_dense`)
    ``eigh`` of the closed-form dense Hessian: the oracle on small sizes.

Each returns a :class:`LambdaMin` with the estimate, the interval, the residual, the cost
(HVP-equivalents and seconds, also as a multiple of one gradient) and a converged flag.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from landscapes.lora import (
    _check_factors,
    check_finite_factors,
    check_perturbation,
    column_pair_matrix,
    lora_hessian,
    lora_hvp,
    lora_value_and_grad,
    loss_hessian_blocks,
    prediction_jacobian,
    product,
)
from landscapes.operators import DenseOperator, LinearOperator
from landscapes.problem import Blocks, Problem
from theory.errors import UserInputError

__all__ = [
    "LambdaMin",
    "LoRAHessianOperator",
    "lambda_min",
    "lambda_min_structured",
    "lambda_min_lanczos",
    "lambda_min_dense",
    "gradient_seconds",
    "flatten_factors",
    "unflatten_factors",
]

Method = Literal["structured", "lanczos", "dense"]


@dataclass(frozen=True)
class LambdaMin:
    r"""The smallest Hessian eigenvalue at a point, with its evidence and cost.

    Attributes
    ----------
    value
        The estimate :math:`\theta`.
    lower, upper
        ``structured``/``dense``: :math:`\lambda_{\min} \in [\text{lower}, \text{upper}]`
        (``lower`` from an inertia count or from ``eigh``'s backward error, ``upper`` a Rayleigh
        quotient).  ``lanczos``: ``upper`` is a Rayleigh quotient; ``lower = theta - residual``
        only bounds *an* eigenvalue (``lower_is_rigorous = False``).
    residual
        :math:`\|H v - \theta v\|` for the returned unit vector ``v``, computed with the
        closed-form HVP.
    lambda_max
        An upper bound (structured, dense) or estimate (lanczos) of the largest eigenvalue, the
        scale of the curvature tolerance.
    vector
        The unit eigenvector, flattened in :func:`flatten_factors` order.
    matvecs
        Cost in Hessian-vector products; the structured route counts its pass over the rows of
        ``J`` (building ``Phi`` costs about ``K N p r`` flops, an HVP ``2 K N p``) as ``r / 2``
        HVPs, plus the one HVP of the residual.
    gradient_multiple
        ``seconds`` divided by the time of one gradient of the LoRA objective at this point.
    """

    value: float
    lower: float
    upper: float
    residual: float
    lambda_max: float
    method: str
    lower_is_rigorous: bool
    converged: bool
    matvecs: int
    seconds: float
    gradient_multiple: float
    n_params: int
    vector: Tensor = field(repr=False)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def width(self) -> float:
        """``upper - lower``."""
        return self.upper - self.lower

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (the vector is omitted)."""
        return {
            "value": self.value,
            "lower": self.lower,
            "upper": self.upper,
            "residual": self.residual,
            "lambda_max": self.lambda_max,
            "method": self.method,
            "lower_is_rigorous": self.lower_is_rigorous,
            "converged": self.converged,
            "matvecs": self.matvecs,
            "seconds": self.seconds,
            "gradient_multiple": self.gradient_multiple,
            "n_params": self.n_params,
            **{k: v for k, v in self.meta.items() if isinstance(v, (int, float, str, bool))},
        }


# ---- flattening -----------------------------------------------------------------------------------
def flatten_factors(U: Sequence[Tensor], V: Sequence[Tensor]) -> Tensor:
    """Concatenate ``vec(U_j), vec(V_j)`` block by block (row-major): the order of the Hessian."""
    return torch.cat([torch.cat([u.reshape(-1), v.reshape(-1)]) for u, v in zip(U, V)])


def unflatten_factors(x: Tensor, like_U: Sequence[Tensor], like_V: Sequence[Tensor]) -> tuple[Blocks, Blocks]:
    """Inverse of :func:`flatten_factors` for factors shaped like ``like_U``, ``like_V``."""
    U, V, k = [], [], 0
    for u, v in zip(like_U, like_V):
        U.append(x[k : k + u.numel()].reshape(u.shape))
        k += u.numel()
        V.append(x[k : k + v.numel()].reshape(v.shape))
        k += v.numel()
    if k != x.numel():
        raise UserInputError(f"x: expected {k} entries, got {x.numel()}")
    return tuple(U), tuple(V)


class LoRAHessianOperator(LinearOperator):
    """The LoRA Hessian at ``(U, V)`` as a symmetric operator (closed-form HVP); counts its products.

    The point's evaluation is computed once, so one product costs one ``J`` pass each way.
    """

    def __init__(
        self,
        problem: Problem,
        U: Sequence[Tensor],
        V: Sequence[Tensor],
        *,
        perturbation: Sequence[Tensor] | None = None,
    ) -> None:
        _check_factors(problem, U, V)
        self.problem = problem
        self.U, self.V = tuple(U), tuple(V)
        self.perturbation = check_perturbation(problem, perturbation)
        # The point's risk evaluation (predictions, S) is shared by every product.
        self.evaluation = problem.evaluate(product(U, V))
        p = sum(u.numel() + v.numel() for u, v in zip(U, V))
        self.shape = (p, p)
        self.dtype = problem.dtype
        self.device = problem.device
        self.count = 0

    def _matvec(self, x: Tensor) -> Tensor:
        self.count += 1
        dU, dV = unflatten_factors(x, self.U, self.V)
        hU, hV = lora_hvp(
            self.problem, self.U, self.V, dU, dV, perturbation=self.perturbation, evaluation=self.evaluation
        )
        return flatten_factors(hU, hV)

    def _rmatvec(self, y: Tensor) -> Tensor:
        return self._matvec(y)

    def __repr__(self) -> str:
        return f"LoRAHessianOperator(n_params={self.shape[0]})"


def gradient_seconds(
    problem: Problem,
    U: Sequence[Tensor],
    V: Sequence[Tensor],
    *,
    perturbation: Sequence[Tensor] | None = None,
    repeats: int = 5,
) -> float:
    """Median wall time of one LoRA objective-and-gradient evaluation (the unit of cost)."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        lora_value_and_grad(problem, U, V, perturbation=perturbation)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def _residual(op: LoRAHessianOperator, v: Tensor, *, exclude: Tensor | None = None) -> tuple[float, float]:
    r"""Rayleigh quotient and residual norm of the unit vector ``v`` (one HVP).

    With ``exclude`` (orthonormal columns ``G``, ``v`` orthogonal to them) the residual is that of
    the compressed operator, :math:`\|(I - GG^\top) H v - \theta v\|`.
    """
    Hv = op.matvec(v)
    theta = float(v @ Hv)
    if exclude is not None and exclude.shape[1] > 0:
        Hv = Hv - exclude @ (exclude.T @ Hv)
    return theta, float((Hv - theta * v).norm())


def _check_exclude(exclude: Tensor | None, P: int, like: Tensor) -> Tensor | None:
    if exclude is None:
        return None
    if not isinstance(exclude, Tensor) or exclude.ndim != 2 or exclude.shape[0] != P:
        got = tuple(exclude.shape) if isinstance(exclude, Tensor) else type(exclude).__name__
        raise UserInputError(f"exclude: expected a ({P}, t) tensor of orthonormal columns, got {got}")
    if exclude.dtype != like.dtype:
        raise UserInputError(f"exclude: expected dtype {like.dtype}, got {exclude.dtype}")
    t = exclude.shape[1]
    if t:
        eye = torch.eye(t, dtype=exclude.dtype, device=exclude.device)
        err = float((exclude.T @ exclude - eye).abs().max())
        if err > 1e-8:
            raise UserInputError(f"exclude: expected orthonormal columns, got |G^T G - I|_max = {err:.2e}")
    return exclude


def _refine_compressed(
    op: LoRAHessianOperator, G: Tensor, start: Tensor, *, maxiter: int = 300
) -> tuple[float, float, Tensor] | None:
    """Lanczos on ``(I - GG^T) H (I - GG^T) + sigma GG^T`` from ``start``: Rayleigh quotient, residual, v."""
    from scipy.sparse.linalg import ArpackNoConvergence, eigsh

    from landscapes._threads import scipy_blas_single_thread

    comp = _Compressed(op, G)
    v0 = start.detach().cpu().numpy()
    with scipy_blas_single_thread():
        try:
            _, X = eigsh(comp.to_scipy(), k=1, which="SA", tol=1e-10, v0=v0, maxiter=maxiter)
        except ArpackNoConvergence as exc:
            if not len(exc.eigenvalues):
                return None
            X = exc.eigenvectors
    v = torch.as_tensor(X[:, 0], dtype=start.dtype, device=start.device)
    v = v - G @ (G.T @ v)
    if float(v.norm()) == 0.0:
        return None
    v = v / v.norm()
    theta, resid = _residual(op, v, exclude=G)
    return theta, resid, v


def _to_eigenbasis(x: Tensor, Qs: Sequence[Tensor], U: Sequence[Tensor], V: Sequence[Tensor]) -> Tensor:
    """A parameter-order vector in the eigenbasis of ``M`` (inverse of the structured ``to_params``)."""
    out, k = [], 0
    for Q, u, v in zip(Qs, U, V):
        (m, r), n = u.shape, v.shape[0]
        block = x[k : k + (m + n) * r].reshape(m + n, r)
        out.append((Q.T @ block).reshape(-1))
        k += (m + n) * r
    return torch.cat(out)


# ---- structured route -------------------------------------------------------------------------------
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
    _check_factors(problem, U, V)
    check_finite_factors(U, V)
    pert = check_perturbation(problem, perturbation)
    t0 = time.perf_counter()
    if not isinstance(problem.J, DenseOperator):
        problem.J.check_deterministic(name="problem.J")
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
    mu_all = torch.cat(mus)
    Z = torch.cat(Zs)
    P = int(mu_all.numel())
    mu_sorted = torch.sort(mu_all)[0]
    mu1 = float(mu_sorted[0])
    zz = float(torch.linalg.eigvalsh(Z.T @ Z)[-1]) if q else 0.0
    lam_max_bound = float(mu_sorted[-1]) + zz
    Gx = _check_exclude(exclude, P, Z)
    Z_gn = Z  # the Gauss-Newton columns alone
    if Gx is not None and Gx.shape[1] > 0:
        # H + sigma G G^T: G in M's eigenbasis joins Z as t more columns.
        sigma = 2.0 * (float(mu_all.abs().max()) + zz)
        GM = torch.stack([_to_eigenbasis(Gx[:, c], Qs, U, V) for c in range(Gx.shape[1])], dim=1)
        Z = torch.cat([Z, math.sqrt(sigma) * GM], dim=1)
        q = Z.shape[1]
        zz = float(torch.linalg.eigvalsh(Z.T @ Z)[-1])

    eps = float(torch.finfo(Z.dtype).eps)

    def count_below(x: float) -> int | None:
        """Eigenvalues of H below x (Haynsworth), or None when the sign count is not reliable."""
        d = mu_all - x
        if bool((d == 0).any()):
            x = math.nextafter(x, math.inf)
            d = mu_all - x
        G = -torch.eye(q, dtype=Z.dtype, device=Z.device) - Z.T @ (Z / d.unsqueeze(1))
        ev = torch.linalg.eigvalsh(G)
        big = float(ev.abs().max()) if q else 0.0
        if q and float(ev.abs().min()) <= 1e3 * q * eps * big:
            return None  # an eigenvalue of G at rounding level: its sign is not trustworthy
        neg = int((ev < 0).sum())
        return int((mu_all < x).sum()) + neg - q

    # bracket: [mu_1, min(mu_{KN+1}, Rayleigh quotient of M's bottom eigenvector)]
    i1 = int(torch.argmin(mu_all))
    hi = float(mu_all[i1]) + float(Z[i1] @ Z[i1])
    if P > q:
        hi = min(hi, float(mu_sorted[q]))
    lo = mu1
    tol_scale = 1e-6 * abs(lam_max_bound)

    def width_tol(a: float, b: float) -> float:
        return rtol * max(min(abs(a), abs(b)) if a * b > 0 else 0.0, tol_scale)

    # Invariant: no eigenvalue below lo; at least one eigenvalue <= hi.  An unreliable count
    # never moves lo; it moves hi, but only reliable counts (hi_sure) back the returned upper.
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
    x = 0.5 * (lo + hi)
    # Rounding: the eigendecompositions and Z carry backward errors ~ P eps (|mu| + |Z|^2).
    slack = 10.0 * P * eps * (float(mu_all.abs().max()) + zz)

    op = LoRAHessianOperator(problem, U, V, perturbation=pert)

    def to_params(vM: Tensor) -> Tensor:
        """Map a vector in M's eigenbasis back to parameter order."""
        out, k = [], 0
        for Q, u, v in zip(Qs, U, V):
            (m, r), n = u.shape, v.shape[0]
            block = vM[k : k + (m + n) * r].reshape(m + n, r)
            out.append((Q @ block).reshape(-1))
            k += (m + n) * r
        return torch.cat(out)

    # Candidate eigenvectors, in M's eigenbasis.  (1) The secular vector (diag(mu) - x)^{-1} Z c.
    candidates = []
    d = mu_all - x
    nz = d != 0
    Dinv = torch.where(nz, 1.0 / torch.where(nz, d, torch.ones_like(d)), torch.zeros_like(d))
    if q:
        G = torch.eye(q, dtype=Z.dtype, device=Z.device) + Z.T @ (Z * Dinv.unsqueeze(1))
        gw, gv = torch.linalg.eigh(G)
        vM = -(Dinv * (Z @ gv[:, int(torch.argmin(gw.abs()))]))
        if float(vM.norm()) > 0:
            candidates.append(vM / vM.norm())
    # (2) Eigenvectors of M that Z does not see (e.g. the rotations U Q, V Q of balanced factors):
    # within M's eigenvalues <= hi (at most K N + 1 of them, ties aside), the null space of Z^T.
    # (With excluded directions: the null space of the Gauss-Newton columns alone; the projection
    # below removes the excluded part.)
    cluster = torch.nonzero(mu_all <= hi).flatten()
    if cluster.numel() > 0:
        Zc = Z_gn[cluster]
        Uc, sv, _ = torch.linalg.svd(Zc, full_matrices=True)
        rank_c = int((sv > 1e-12 * (float(sv.max()) if sv.numel() else 0.0)).sum())
        if rank_c < cluster.numel():
            Nb = Uc[:, rank_c:]
            ew, evec = torch.linalg.eigh(Nb.T @ (mu_all[cluster].unsqueeze(1) * Nb))
            vM = torch.zeros(P, dtype=Z.dtype, device=Z.device)
            vM[cluster] = Nb @ evec[:, 0]
            candidates.append(vM / vM.norm())
    if not candidates:  # pragma: no cover - P >= 1 always gives a candidate
        vM = torch.zeros(P, dtype=Z.dtype, device=Z.device)
        vM[i1] = 1.0
        candidates.append(vM)
    if Gx is not None and Gx.shape[1] > 0:
        # each candidate projected onto span(G)^perp, judged by its Rayleigh quotient of H itself
        best = None
        for c in candidates:
            v = to_params(c)
            v = v - Gx @ (Gx.T @ v)
            if float(v.norm()) == 0.0:
                continue
            v = v / v.norm()
            th, rs = _residual(op, v, exclude=Gx)
            if best is None or th < best[0]:
                best = (th, rs, v)
        if best is None:  # pragma: no cover - a candidate inside span(G) only
            raise RuntimeError("lambda_min_structured: every candidate vector lies in span(exclude)")
        theta, resid, vec = best
        if lo < 0 and theta - lo > width_tol(lo, theta):
            # The projected candidates can be poor: where negative curvature is possible (lower end
            # below 0), refine the upper end by Lanczos on the compressed operator from the best
            # candidate; any Rayleigh quotient of H on span(G)^perp is still an upper bound.  (With
            # lower > 0 no saddle is possible and the width only costs accuracy, not a decision.)
            refined = _refine_compressed(op, Gx, vec)
            if refined is not None and refined[0] < theta:
                theta, resid, vec = refined
    else:
        rq = [float((mu_all * c * c).sum() + (Z.T @ c).pow(2).sum()) for c in candidates]
        vec = to_params(candidates[int(np.argmin(rq))])
        vec = vec / vec.norm()
        theta, resid = _residual(op, vec)
    converged = hi - lo <= width_tol(lo, hi)
    if Gx is not None and Gx.shape[1] > 0:
        converged = theta - lo <= width_tol(lo, theta)  # the width of the interval returned
    # with excluded directions the inertia counts bound H + sigma G G^T, whose smallest
    # eigenvalue is below the compressed one: only the Rayleigh quotient bounds it from above
    upper = theta if Gx is not None and Gx.shape[1] > 0 else min(hi_sure, theta)
    lower = lo - slack
    seconds = time.perf_counter() - t0
    tg = t_grad if t_grad is not None else gradient_seconds(problem, U, V, perturbation=pert)
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
        gradient_multiple=seconds / max(tg, 1e-12),
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


# ---- Lanczos route ------------------------------------------------------------------------------------
def smallest_ritz_pair(
    A: Any,
    P: int,
    *,
    tol: float,
    maxiter: int | None,
    seed: int,
    estimate_lambda_max: bool = True,
    count: Any = None,
) -> tuple[np.ndarray, np.ndarray, bool, int, float]:
    """``eigsh(which="SA")`` on a SciPy operator of size ``P``: Ritz pair, convergence, cost, ``lambda_max``.

    On ``ArpackNoConvergence`` the best Ritz pair is kept (or the start vector's Rayleigh
    quotient when ARPACK has none) and ``converged`` is ``False``.  ``lambda_max`` comes from a
    loose second ``eigsh(which="LA")`` (``nan`` when not estimated).  ``count()`` reads the number
    of matrix-vector products spent on the smallest pair.
    """
    from scipy.sparse.linalg import ArpackNoConvergence, eigsh

    from landscapes._threads import scipy_blas_single_thread

    v0 = np.random.default_rng(seed).standard_normal(P)
    converged = True
    with scipy_blas_single_thread():
        try:
            w, X = eigsh(A, k=1, which="SA", tol=tol, v0=v0, maxiter=maxiter)
        except ArpackNoConvergence as exc:  # keep the best Ritz pair
            converged = False
            if len(exc.eigenvalues):
                w, X = exc.eigenvalues, exc.eigenvectors
            else:
                w, X = np.array([float(v0 @ A.matvec(v0) / (v0 @ v0))]), (v0 / np.linalg.norm(v0))[:, None]
        n_min = int(count()) if count is not None else 0
        lam_max = float("nan")
        if estimate_lambda_max:
            try:
                lam_max = float(eigsh(A, k=1, which="LA", tol=1e-3, v0=v0)[0][0])
            except ArpackNoConvergence as exc:
                lam_max = float(exc.eigenvalues[0]) if len(exc.eigenvalues) else float("nan")
    return w, X, converged, n_min, lam_max


def lambda_min_lanczos(
    problem: Problem,
    U: Sequence[Tensor],
    V: Sequence[Tensor],
    *,
    perturbation: Sequence[Tensor] | None = None,
    tol: float = 1e-10,
    maxiter: int | None = None,
    seed: int = 0,
    t_grad: float | None = None,
    estimate_lambda_max: bool = True,
    exclude: Tensor | None = None,
) -> LambdaMin:
    r"""``eigsh(which="SA")`` (ARPACK, implicitly restarted Lanczos) on the closed-form HVP.

    ``tol`` is ARPACK's relative accuracy of the Ritz value.  ``converged`` is ``False`` when
    ARPACK stops at ``maxiter`` (the best Ritz pair is still returned).  The largest eigenvalue
    (the tolerance scale) is estimated with a loose second ``eigsh(which="LA")``, counted in the
    cost.
    """
    if not (isinstance(tol, float) and tol > 0):
        raise UserInputError(f"tol: expected a positive float, got {tol!r}")
    _check_factors(problem, U, V)
    check_finite_factors(U, V)
    pert = check_perturbation(problem, perturbation)
    t0 = time.perf_counter()
    op = LoRAHessianOperator(problem, U, V, perturbation=pert)
    if not isinstance(problem.J, DenseOperator):
        problem.J.check_deterministic(name="problem.J")
    op.check_deterministic(seed=seed, rtol=1e-10, name="Hessian operator")
    op.count = 0
    P = op.shape[0]
    G = _check_exclude(exclude, P, flatten_factors(U, V))
    target: LinearOperator = op
    if G is not None and G.shape[1] > 0:
        target = _Compressed(op, G)
    w, X, converged, n_min, lam_max = smallest_ritz_pair(
        target.to_scipy(),
        P,
        tol=tol,
        maxiter=maxiter,
        seed=seed,
        estimate_lambda_max=estimate_lambda_max,
        count=lambda: op.count,
    )
    vec = torch.as_tensor(X[:, 0], dtype=problem.dtype, device=problem.device)
    if G is not None and G.shape[1] > 0:
        vec = vec - G @ (G.T @ vec)
    vec = vec / vec.norm()
    theta, resid = _residual(op, vec, exclude=G)
    seconds = time.perf_counter() - t0
    tg = t_grad if t_grad is not None else gradient_seconds(problem, U, V, perturbation=pert)
    return LambdaMin(
        value=theta,
        lower=theta - resid,
        upper=theta,
        residual=resid,
        lambda_max=lam_max,
        method="lanczos",
        lower_is_rigorous=False,
        converged=converged,
        matvecs=op.count,
        seconds=seconds,
        gradient_multiple=seconds / max(tg, 1e-12),
        n_params=P,
        vector=vec,
        meta={"matvecs_lambda_min": n_min, "ritz_value": float(w[0])},
    )


class _Compressed(LinearOperator):
    r""":math:`(I - GG^\top) H (I - GG^\top) + \sigma GG^\top` with ``sigma`` twice a bound on ``|H|``."""

    def __init__(self, op: LoRAHessianOperator, G: Tensor) -> None:
        self.op, self.G = op, G
        self.shape, self.dtype, self.device = op.shape, op.dtype, op.device
        x = torch.ones(op.shape[0], dtype=op.dtype, device=op.device) / math.sqrt(op.shape[0])
        for _ in range(20):  # a rough |H| scale: sigma only has to push G's span away
            x = op.matvec(x)
            x = x / x.norm()
        self.sigma = 2.0 * float(op.matvec(x).norm()) + 1e-300

    def _matvec(self, x: Tensor) -> Tensor:
        G = self.G
        px = x - G @ (G.T @ x)
        hx = self.op.matvec(px)
        return hx - G @ (G.T @ hx) + self.sigma * (G @ (G.T @ x))

    def _rmatvec(self, y: Tensor) -> Tensor:
        return self._matvec(y)


# ---- dense route --------------------------------------------------------------------------------------
def lambda_min_dense(
    problem: Problem,
    U: Sequence[Tensor],
    V: Sequence[Tensor],
    *,
    perturbation: Sequence[Tensor] | None = None,
    max_params: int = 4000,
    t_grad: float | None = None,
    exclude: Tensor | None = None,
) -> LambdaMin:
    r"""``eigh`` of the closed-form dense Hessian (the oracle; at most ``max_params`` parameters).

    ``lower = theta - max(residual, 10 P eps ||H||)`` (``eigh`` is backward stable).  With
    ``exclude`` (orthonormal ``G``), ``eigh`` of :math:`B^\top H B` for an orthonormal basis ``B`` of
    :math:`\mathrm{span}(G)^\perp`.
    """
    _check_factors(problem, U, V)
    check_finite_factors(U, V)
    pert = check_perturbation(problem, perturbation)
    P = sum(u.numel() + v.numel() for u, v in zip(U, V))
    if P > max_params:
        raise UserInputError(
            f"max_params: the dense Hessian has {P} parameters, more than max_params={max_params}"
        )
    if not isinstance(problem.J, DenseOperator) and problem.KN > 4096:
        raise UserInputError(f"problem: the dense route materializes J's {problem.KN} rows; use 'lanczos'")
    t0 = time.perf_counter()
    H = lora_hessian(problem, U, V, perturbation=pert)
    G = _check_exclude(exclude, P, H)
    if G is not None and G.shape[1] > 0:
        Qf, _ = torch.linalg.qr(torch.cat([G, torch.eye(P, dtype=H.dtype, device=H.device)], dim=1))
        B = Qf[:, G.shape[1] : P]
        w, X = torch.linalg.eigh(B.T @ H @ B)
        vec = B @ X[:, 0]
        vec = vec - G @ (G.T @ vec)
        vec = vec / vec.norm()
    else:
        w, X = torch.linalg.eigh(H)
        vec = X[:, 0]
    op = LoRAHessianOperator(problem, U, V, perturbation=pert)
    theta, resid = _residual(op, vec, exclude=G)
    eps = float(torch.finfo(H.dtype).eps)
    slack = max(resid, 10 * P * eps * float(w.abs().max()))
    seconds = time.perf_counter() - t0
    tg = t_grad if t_grad is not None else gradient_seconds(problem, U, V, perturbation=pert)
    return LambdaMin(
        value=float(w[0]),
        lower=float(w[0]) - slack,
        upper=min(theta, float(w[0]) + slack),
        residual=resid,
        lambda_max=float(w[-1]),
        method="dense",
        lower_is_rigorous=True,
        converged=True,
        matvecs=op.count,
        seconds=seconds,
        gradient_multiple=seconds / max(tg, 1e-12),
        n_params=P,
        vector=vec,
        meta={
            "second_smallest": float(w[1]) if w.numel() > 1 else float("nan"),
            "excluded_directions": 0 if G is None else int(G.shape[1]),
        },
    )


def lambda_min(
    problem: Problem,
    U: Sequence[Tensor],
    V: Sequence[Tensor],
    *,
    method: Method | Literal["auto"] = "auto",
    perturbation: Sequence[Tensor] | None = None,
    **options: Any,
) -> LambdaMin:
    """Dispatch to one route.

    ``"auto"`` is ``"structured"`` when ``J`` gives cheap factor products (a stored ``J``, an
    encoder's operator form), else ``"lanczos"``.  Every route takes ``exclude`` (orthonormal
    directions to leave out, e.g. :func:`landscapes.gauge.gauge_basis`).
    """
    if method == "auto":
        method = "structured" if getattr(problem.J, "cheap_factor_products", False) else "lanczos"
    if method == "structured":
        return lambda_min_structured(problem, U, V, perturbation=perturbation, **options)
    if method == "lanczos":
        return lambda_min_lanczos(problem, U, V, perturbation=perturbation, **options)
    if method == "dense":
        return lambda_min_dense(problem, U, V, perturbation=perturbation, **options)
    raise UserInputError(f"method: expected 'auto', 'structured', 'lanczos' or 'dense', got {method!r}")
