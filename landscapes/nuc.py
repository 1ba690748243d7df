r"""The nuclear-norm-regularized problem (NUC) with a certified primal--dual gap.

.. math:: \min_D\; P(D) = L(D) + \sum_j \lambda_j \|D_j\|_*, \qquad
          L(D) = \tfrac1N \sum_i \ell(f_{0,i} + J_i \operatorname{vec} D,\, y_i).

**Certificate.**  With :math:`F(u) = \frac1N\sum_i \ell(f_{0,i} + u_i, y_i)` and the Fenchel dual

.. math:: \Delta(w) = \sum_i \Big(\langle w_i, f_{0,i}\rangle - \tfrac1N\,\ell^*(N w_i; y_i)\Big)
          \quad\text{s.t.}\quad \|\operatorname{mat}_j(J^\top w)\|_{op} \le \lambda_j\ \forall j,

weak duality gives :math:`\Delta(w) \le P^\star \le P(D)` for every feasible ``w``.  Two dual
points are tried and the better one is kept:

* the *scaled gradient*: the gradient of ``F`` at ``D``, :math:`g = \frac1N \nabla\ell`, scaled into
  the feasible set: :math:`w = c\, g`, :math:`c = \min(1, \min_j \lambda_j / \|S_j\|_{op})` with
  :math:`S_j = \operatorname{mat}_j(J^\top g)`.  For the three losses ``c g`` stays in the domain of
  the conjugate.  At distance :math:`\delta` from the optimum its gap is of order :math:`\delta`.
* the *support-corrected* point: ``g`` plus the least-norm correction that makes
  :math:`P_k^\top S_j Q_k = -\lambda_j I` on the top-``k`` singular pairs of each ``D_j`` (what the
  optimum satisfies), then scaled the same way; its gap is of order :math:`\delta^2`, so a point
  accurate to 1e-5 certifies a gap near 1e-10 (see :func:`_support_corrected_dual`).

The gap :math:`P(D) - \Delta(w) \ge P(D) - P^\star` is what a reported optimum carries.

**Solvers.**  ``method="factored"`` (default) minimizes the LoRA objective
:math:`L(UV^\top) + \sum_j \frac{\lambda_j}{2}(\|U_j\|^2 + \|V_j\|^2)` at ``r = r_max(K, N) + 1``
with L-BFGS: smooth, and above the bound [JLR24] rules out spurious second-order
stationary points; whatever the landscape, the gap above certifies the result.
``method="apg"`` is the independent second method: accelerated proximal gradient (FISTA with
adaptive restart) with singular-value thresholding.
Both stop as soon as the relative gap :math:`(P - \Delta)/|P|` reaches ``gap_rtol``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from landscapes.curvature.dense import lora_hessian
from landscapes.curvature.hvp import lora_hvp
from landscapes.lora import (
    LoRAPoint,
    balanced_factors,
    lora_value,
    lora_value_and_grad,
    minimize_lora,
    product,
)
from landscapes.operators import DenseOperator
from landscapes.problem import Blocks, Problem, RiskEvaluation
from theory.bounds import r_max
from theory.errors import UserInputError

__all__ = [
    "NucCertificate",
    "NucSolution",
    "nuc_certificate",
    "solve_nuc",
    "singular_value_threshold",
    "jacobian_op_norm_sq",
    "truncate_to_numerical_rank",
]


@dataclass(frozen=True)
class NucCertificate:
    """Evidence of (near-)optimality of a point ``D`` for NUC.

    ``primal - dual`` bounds the suboptimality ``P(D) - P*``; ``rel_gap`` divides it by ``|primal|``
    (``0`` when both are ``0``), so a rescaled problem gets the same relative gap.
    ``S_op[j] / lam[j] <= 1`` is the subgradient condition on block ``j`` (``S_j`` the gradient at
    ``D``).  ``dual`` is the better of two feasible dual points (module docstring): the scaled
    gradient (``support_ranks == ()``) or the support-corrected one, built on the top
    ``support_ranks[j]`` singular pairs of each block; ``dual_scale`` is the scale that made the
    chosen point feasible.
    """

    primal: float
    dual: float
    gap: float
    rel_gap: float
    dual_scale: float
    S_op: tuple[float, ...]
    lam: tuple[float, ...]
    support_ranks: tuple[int, ...] = ()

    def within(self, gap_rtol: float) -> bool:
        """``True`` when the relative gap lies in ``[-gap_rtol, gap_rtol]``.

        Weak duality makes the exact gap ``>= 0``; a computed gap below 0 is round-off, and one
        below ``-gap_rtol`` is more round-off than the tolerance allows (the bounds themselves are
        then not to be trusted), so it certifies nothing.
        """
        return -gap_rtol <= self.rel_gap <= gap_rtol


@dataclass(frozen=True)
class NucSolution:
    """A certified NUC solution: the point, its certificate, spectrum and cost."""

    D: Blocks
    certificate: NucCertificate
    singular_values: tuple[tuple[float, ...], ...]
    ranks: tuple[int, ...]
    method: str
    iterations: int
    gradient_evaluations: int
    seconds: float
    converged: bool


#: Gap at which the factored method stops L-BFGS to try Newton at the support rank.
_COARSE_RTOL = 1e-5
#: Fewest iterations between two certificate checks of the factored method.
_MIN_CHECK_EVERY = 5


def _require_positive_lam(problem: Problem) -> None:
    for j, lam in enumerate(problem.lam):
        if not lam > 0:
            raise UserInputError(
                f"lam: NUC needs lam > 0 on every block (a minimizer may not exist otherwise), "
                f"got {lam!r} for block {j}"
            )


def _op_norm(S: Tensor) -> float:
    """``||S||_op`` as the square root of the top eigenvalue of the smaller Gram matrix.

    Relative accuracy of order machine epsilon, like the SVD, at about half its cost.
    """
    if not S.numel():
        return 0.0
    G = S @ S.T if S.shape[0] <= S.shape[1] else S.T @ S
    return math.sqrt(max(float(torch.linalg.eigvalsh(G)[-1]), 0.0))


def nuc_certificate(problem: Problem, D: Sequence[Tensor], *, refine: bool = True) -> NucCertificate:
    r"""Primal value, dual value and gap of ``D`` (see the module docstring for the dual points).

    ``refine=False`` uses the scaled gradient only (cheaper; its gap is first order in the
    distance to the optimum, the support-corrected point's about second order).
    """
    D = problem.check_point(D)
    _require_positive_lam(problem)
    return _dense_certificate(problem, D, refine_below=math.inf if refine else -1.0)


#: A thin SVD ``(P, s, Q)`` of one block, ``D_j = P diag(s) Q^T``.
_Svd = tuple[Tensor, Tensor, Tensor]


def _dense_certificate(problem: Problem, D: Blocks, *, refine_below: float = -1.0) -> NucCertificate:
    """The certificate of a point given densely (by default the scaled gradient only).

    The solvers decide on the scaled gradient's gap, which is first order in the distance to the
    minimizer: a returned point is then accurate as a point, not only in objective value.  Only
    the certificate they return also tries the support-corrected point.
    """

    def svd() -> list[_Svd]:
        return [(P, s, Qh.T) for P, s, Qh in (torch.linalg.svd(Dj, full_matrices=False) for Dj in D)]

    ev = problem.evaluate(D)
    if refine_below == math.inf:  # the corrected point will be tried: one SVD, with vectors
        parts = svd()
        return _certificate(problem, ev, [s for _, s, _ in parts], lambda: parts, refine_below=refine_below)
    return _certificate(problem, ev, [torch.linalg.svdvals(Dj) for Dj in D], svd, refine_below=refine_below)


def _factor_certificate(
    problem: Problem, U: Sequence[Tensor], V: Sequence[Tensor], *, refine_below: float = -1.0
) -> NucCertificate:
    r"""The certificate of ``D = U V^T``, its SVD from the small cores.

    With :math:`U_j = Q_u R_u`, :math:`V_j = Q_v R_v` and :math:`R_u R_v^\top = A \Sigma B^\top`:
    :math:`U_j V_j^\top = (Q_u A) \Sigma (Q_v B)^\top`.
    """
    qrs = [(torch.linalg.qr(u), torch.linalg.qr(v)) for u, v in zip(U, V)]
    cores = [Ru @ Rv.T for (_, Ru), (_, Rv) in qrs]

    def svd() -> list[_Svd]:  # the singular vectors only when the corrected point is tried
        out = []
        for ((Qu, _), (Qv, _)), C in zip(qrs, cores):
            A, s, Bh = torch.linalg.svd(C)
            out.append((Qu @ A, s, Qv @ Bh.T))
        return out

    svs = [torch.linalg.svdvals(C) for C in cores]
    return _certificate(problem, problem.evaluate(product(U, V)), svs, svd, refine_below=refine_below)


def _dual_value(problem: Problem, w: Tensor) -> float:
    conj = problem.loss.conjugate(problem.N * w, problem.y)
    return float((w * problem.f0).sum() - conj.sum() / problem.N)


def _relative(gap: float, primal: float) -> float:
    """``gap / |primal|``: scale-free (a floor such as ``max(1, |primal|)`` made tiny problems pass)."""
    if primal == 0.0:
        return 0.0 if gap <= 0.0 else math.inf
    return gap / abs(primal)


def _certificate(
    problem: Problem,
    ev: RiskEvaluation,
    svs: Sequence[Tensor],
    svd: Callable[[], Sequence[_Svd]],
    *,
    refine_below: float,
) -> NucCertificate:
    """The certificate; tries the support-corrected point when the plain gap is <= ``refine_below``."""
    primal = ev.value + sum(lam * float(s.sum()) for lam, s in zip(problem.lam, svs))
    S_op = tuple(_op_norm(S) for S in ev.S)
    c = 1.0
    for lam, s in zip(problem.lam, S_op):
        if s > lam:
            c = min(c, lam / s)
    dual = _dual_value(problem, c * ev.g)
    support: tuple[int, ...] = ()
    if _relative(primal - dual, primal) <= refine_below and getattr(
        problem.J, "cheap_factor_products", False
    ):
        better = _support_corrected_dual(problem, ev, svd())
        if better is not None and better[0] > dual:
            dual, c, support = better
    gap = primal - dual
    return NucCertificate(
        primal=primal,
        dual=dual,
        gap=gap,
        rel_gap=_relative(gap, primal),
        dual_scale=c,
        S_op=S_op,
        lam=problem.lam,
        support_ranks=support,
    )


#: Relative singular-value thresholds that propose the support ranks of the corrected dual point.
_SUPPORT_RTOLS = (1e-3, 1e-6)


def _rank_above(s: Tensor, rtol: float) -> int:
    """Number of singular values above ``rtol * s[0]`` (0 for a zero block)."""
    top = float(s[0]) if s.numel() else 0.0
    return int((s > rtol * top).sum()) if top > 0 else 0


def _largest_drop(s: Tensor) -> int:
    """The ``k`` with the largest ratio ``s[k-1] / s[k]`` among the nonzero singular values."""
    s = s[s > 0]
    if s.numel() < 2:
        return int(s.numel())
    return int(torch.argmax(s[:-1] / s[1:])) + 1


def _support_corrected_dual(
    problem: Problem, ev: RiskEvaluation, parts: Sequence[_Svd]
) -> tuple[float, float, tuple[int, ...]] | None:
    r"""The best support-corrected dual point over the candidate ranks: (dual value, scale, ranks).

    At the optimum :math:`D_j^\star = P \Sigma Q^\top` (rank ``k_j``) the gradient satisfies
    :math:`P^\top S_j^\star Q = -\lambda_j I_{k_j}`: the dual point sits on the boundary of the
    feasible set.  The scaled gradient of a point at distance :math:`\delta` leaves that boundary
    by :math:`O(\delta)` and loses as much dual value.  Here the gradient ``g`` is first moved by
    the least-norm :math:`\Delta w` with
    :math:`P_k^\top \operatorname{mat}_j(J^\top (g + \Delta w))\, Q_k = -\lambda_j I_{k_j}` on every
    block (``P_k, Q_k`` the top singular vectors of ``D_j``, accurate to :math:`O(\delta)`, which
    changes the condition by :math:`O(\delta^2)` only; for cross-entropy also
    :math:`\sum_c \Delta w_{ic} = 0`, the conjugate's domain).  That puts it back on the boundary
    to first order; it is then scaled into the feasible set like the plain point.  Weak duality
    holds for every feasible point, so the certificate is valid whatever the candidate ranks.
    ``None`` when no candidate is usable (zero point, more conditions than outputs, a singular
    system, outside the conjugate's domain).
    """
    q = problem.KN
    extra = problem.N if problem.loss.name == "cross_entropy" else 0
    proposals = [tuple(_rank_above(s, rtol) for _P, s, _Q in parts) for rtol in _SUPPORT_RTOLS]
    proposals.append(tuple(_largest_drop(s) for _P, s, _Q in parts))
    candidates: list[tuple[int, ...]] = []
    for ranks in proposals:
        if any(ranks) and sum(k * k for k in ranks) + extra < q and ranks not in candidates:
            candidates.append(ranks)
    if not candidates:
        return None
    # (At least one column per block: some operators' factor products need r >= 1.)
    kmax = [max(1, *(c[j] for c in candidates)) for j in range(len(parts))]
    Ps = [P[:, :k] for (P, _s, _Q), k in zip(parts, kmax)]
    Qs = [Q[:, :k] for (_P, _s, Q), k in zip(parts, kmax)]
    # Row i, block j: the k x k matrix P_k^T A_ij Q_k (A_ij: row i of J restricted to block j).
    Phi = problem.J.factor_products(problem.blocks, Ps, Qs)
    cores, o = [], 0
    for (m, n), P, k in zip(problem.blocks, Ps, kmax):
        cores.append(torch.einsum("xa,ixb->iab", P, Phi[:, o : o + m * k].reshape(q, m, k)))
        o += (m + n) * k
    w0 = ev.g.reshape(-1)
    best: tuple[float, float, tuple[int, ...]] | None = None
    for ranks in candidates:
        cols, rhs = [], []
        for core, S, P, Q, lam, k in zip(cores, ev.S, Ps, Qs, problem.lam, ranks):
            if k:
                cols.append(core[:, :k, :k].reshape(q, k * k))
                target = -lam * torch.eye(k, dtype=S.dtype, device=S.device)
                rhs.append((target - P[:, :k].T @ S @ Q[:, :k]).reshape(-1))
        if extra:
            eye = torch.eye(problem.N, dtype=w0.dtype, device=w0.device)
            cols.append(eye.repeat_interleave(problem.K, dim=0))
            rhs.append(torch.zeros(problem.N, dtype=w0.dtype, device=w0.device))
        M = torch.cat(cols, dim=1)
        coef, info = torch.linalg.solve_ex(M.T @ M, torch.cat(rhs))
        if int(info) != 0 or not bool(torch.isfinite(coef).all()):
            continue
        dw = M @ coef
        t = _domain_step(problem, w0, dw)
        if t <= 0.0:
            continue
        w = w0 + t * dw
        c = 1.0
        for lam, S in zip(problem.lam, problem.unvec(problem.J.rmatvec(w))):
            op = _op_norm(S)
            if op > lam:
                c = min(c, lam / op)
        dual = _dual_value(problem, (c * w).reshape(problem.N, problem.K))
        if math.isfinite(dual) and (best is None or dual > best[0]):
            best = (dual, c, ranks)
    return best


def _domain_step(problem: Problem, w0: Tensor, dw: Tensor) -> float:
    r"""The step ``t`` in ``[0, 1]`` that keeps ``w0 + t dw`` inside the conjugate's domain.

    ``w0`` (the gradient) is inside: :math:`N w_0 + e_y` is the softmax (cross-entropy) or the
    sigmoid (logistic).  A longer correction could leave the domain by more than the conjugate's
    round-off allowance, where the true conjugate is :math:`+\infty`; so the step is shortened to
    99 % of the distance to the boundary.  For cross-entropy ``dw``'s row means are removed first
    (in place), so every row of :math:`N w` sums to zero as the domain requires.
    """
    name = problem.loss.name
    if name == "squared":
        return 1.0
    N, K = problem.N, problem.K
    D = dw.view(N, K)
    if name == "cross_entropy":
        D -= D.mean(dim=1, keepdim=True)
        p0 = (N * w0.view(N, K) + torch.nn.functional.one_hot(problem.y.long(), K).to(w0.dtype)).clamp_min(
            0.0
        )
        room = [(p0, -N * D)]
    else:  # logistic, K = 1: p = N w + y in [0, 1]
        p0 = (N * w0.view(N, K) + problem.y.view(N, K).to(w0.dtype)).clamp(0.0, 1.0)
        room = [(p0, -N * D), (1.0 - p0, N * D)]
    t = 1.0
    for slack, rate in room:
        moving = rate > 0
        if bool(moving.any()):
            t = min(t, 0.99 * float((slack[moving] / rate[moving]).min()))
    return max(t, 0.0)


def singular_value_threshold(X: Tensor, tau: float) -> tuple[Tensor, Tensor]:
    r"""Prox of :math:`\tau\|\cdot\|_*`: :math:`P \max(\Sigma - \tau, 0) Q^\top`.

    Also returns the new singular values.
    """
    P, s, Qh = torch.linalg.svd(X, full_matrices=False)
    s = (s - tau).clamp_min(0.0)
    k = int((s > 0).sum())
    return (P[:, :k] * s[:k]) @ Qh[:k], s


def jacobian_op_norm_sq(problem: Problem) -> float:
    """``||J||_op^2`` (largest eigenvalue of the Gram matrix ``J J^T``)."""
    if problem.KN <= 4096:
        G = (
            problem.J.gram()
            if not isinstance(problem.J, DenseOperator)
            else problem.J.matrix @ problem.J.matrix.T
        )
        return float(torch.linalg.eigvalsh(G)[-1])
    from scipy.sparse.linalg import svds

    s = svds(problem.J.to_scipy(), k=1, return_singular_vectors=False)
    return float(s[0]) ** 2


def _spectra(D: Blocks, rank_rtol: float) -> tuple[tuple[tuple[float, ...], ...], tuple[int, ...]]:
    svs, ranks = [], []
    for Dj in D:
        s = torch.linalg.svdvals(Dj)
        svs.append(tuple(float(v) for v in s))
        top = float(s[0]) if s.numel() else 0.0
        ranks.append(int((s > rank_rtol * top).sum()) if top > 0 else 0)
    return tuple(svs), tuple(ranks)


def truncate_to_numerical_rank(D: Blocks, rank_rtol: float) -> Blocks:
    """Drop singular values below ``rank_rtol * sigma_1`` in each block (all of them if ``sigma_1 = 0``)."""
    return _truncate(D, rank_rtol)[0]


def _truncate(D: Blocks, rank_rtol: float) -> tuple[Blocks, bool]:
    """:func:`truncate_to_numerical_rank` and whether a dropped value was above round-off (1e-14 sigma_1)."""
    out, changed = [], False
    for Dj in D:
        P, s, Qh = torch.linalg.svd(Dj, full_matrices=False)
        top = float(s[0]) if s.numel() else 0.0
        k = int((s > rank_rtol * top).sum()) if top > 0 else 0
        changed = changed or (k < s.numel() and float(s[k]) > 1e-14 * top)
        out.append((P[:, :k] * s[:k]) @ Qh[:k])
    return tuple(out), changed


def solve_nuc(
    problem: Problem,
    *,
    method: Literal["factored", "apg"] = "factored",
    gap_rtol: float = 1e-8,
    rank: int | None = None,
    max_iter: int = 20000,
    time_limit: float | None = None,
    seed: int = 0,
    init: Sequence[Tensor] | None = None,
    rank_rtol: float = 1e-8,
    check_every: int = 25,
    polish_steps: int = 3,
    check_schedule: Literal["adaptive", "fixed"] = "adaptive",
) -> NucSolution:
    r"""Solve NUC to a certified relative duality gap ``gap_rtol``.

    Parameters
    ----------
    problem
        The problem; every ``lam`` must be positive.
    method
        ``"factored"``: L-BFGS on the LoRA factorization at ``r = rank`` (default
        ``r_max(K, N) + 1``, capped at ``min(m_j, n_j)``), finished by proximal-gradient steps if
        the gap is not yet met.  ``"apg"``: accelerated proximal gradient with singular-value
        thresholding from ``init`` (default ``D = 0``).
    gap_rtol
        Target relative gap ``(P - Delta) / |P|``.
    rank_rtol
        Singular values below ``rank_rtol * sigma_1`` are dropped from the returned point when
        that does not worsen the gap (they are round-off of the factorization).
    polish_steps
        Proximal-gradient steps after the factored solve (exact zeros, never a worse objective).
    seed
        Seeds the random initial factors of the factored method.
    rank
        LoRA rank of the factored method (default ``r_max(K, N) + 1``).
    init
        Starting point of ``"apg"`` (default ``D = 0``).
    max_iter
        Iteration limit of each stage.
    time_limit
        Wall-clock limit in seconds for the whole solve (checked at certificate evaluations);
        when it is hit the best point so far is returned with ``converged=False``.
    check_every
        Iterations between two certificate evaluations.
    check_schedule
        ``"adaptive"`` (default): the factored method also evaluates the certificate earlier
        while one evaluation costs less than a quarter of the time since the last (the wall clock
        then decides at which iteration L-BFGS stops, so repeated solves can differ in the last
        bits).  ``"fixed"``: exactly every ``check_every`` iterations, so that without a
        ``time_limit`` the result is a deterministic function of the problem, ``seed`` and the
        thread settings (sweeps whose stored results must be reproducible use this).

    Returns
    -------
    NucSolution
        ``converged`` is ``True`` iff the certificate meets ``gap_rtol``.
    """
    _check_solve_options(problem, method, gap_rtol, rank, time_limit, check_schedule)
    t0 = time.perf_counter()
    deadline = math.inf if time_limit is None else t0 + float(time_limit)
    if method == "factored":
        D, iters, evals = _solve_factored(
            problem,
            gap_rtol=gap_rtol,
            rank=rank,
            max_iter=max_iter,
            seed=seed,
            rank_rtol=rank_rtol,
            check_every=check_every,
            polish_steps=polish_steps,
            deadline=deadline,
            adaptive=check_schedule == "adaptive",
        )
    else:
        D0 = problem.check_point(init, "init") if init is not None else problem.zeros()
        D, iters, evals = _apg(
            problem, D0, gap_rtol=gap_rtol, max_iter=max_iter, check_every=check_every, deadline=deadline
        )
    # The returned certificate also tries the support-corrected dual point (a tighter valid gap).
    cert = _dense_certificate(problem, D, refine_below=math.inf)
    svs, ranks = _spectra(D, rank_rtol)
    return NucSolution(
        D=D,
        certificate=cert,
        singular_values=svs,
        ranks=ranks,
        method=method,
        iterations=iters,
        gradient_evaluations=evals,
        seconds=time.perf_counter() - t0,
        converged=cert.within(gap_rtol),
    )


def _check_solve_options(
    problem: Problem,
    method: str,
    gap_rtol: float,
    rank: int | None,
    time_limit: float | None,
    check_schedule: str,
) -> None:
    """Raise ``ValueError`` on an option of :func:`solve_nuc` that is out of range."""
    _require_positive_lam(problem)
    if method not in ("factored", "apg"):
        raise UserInputError(f"method: expected 'factored' or 'apg', got {method!r}")
    if not (isinstance(gap_rtol, float) and gap_rtol > 0):
        raise UserInputError(f"gap_rtol: expected a positive float, got {gap_rtol!r}")
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        raise UserInputError(f"rank: expected a positive int (rank >= 1), got {rank!r}")
    if time_limit is not None and not (isinstance(time_limit, (int, float)) and time_limit >= 0):
        raise UserInputError(f"time_limit: expected None or seconds >= 0, got {time_limit!r}")
    if check_schedule not in ("adaptive", "fixed"):
        raise UserInputError(f"check_schedule: expected 'adaptive' or 'fixed', got {check_schedule!r}")


def _solve_factored(
    problem: Problem,
    *,
    gap_rtol: float,
    rank: int | None,
    max_iter: int,
    seed: int,
    rank_rtol: float,
    check_every: int,
    polish_steps: int,
    deadline: float,
    adaptive: bool,
) -> tuple[Blocks, int, int]:
    """The factored method of :func:`solve_nuc`: the point, iterations and gradient evaluations.

    It aims 10x below the target, so that the cleaning steps (:func:`_clean_factored`: truncation,
    exact zeros) can spend a little of the gap and still meet it.  Stage 1: L-BFGS on the
    factorization only until the support shows (a coarse gap); Newton at the support rank then
    converges quadratically.  If that fails (a wrong support guess), L-BFGS resumes from where it
    stopped and runs to the fine gap.
    """
    fine = 0.1 * gap_rtol
    coarse = max(fine, _COARSE_RTOL)

    def factored(gap: float, init: LoRAPoint | None = None) -> tuple[Blocks, int, int, LoRAPoint]:
        return _factored(
            problem,
            gap_rtol=gap,
            rank=rank,
            max_iter=max_iter,
            seed=seed,
            check_every=check_every,
            deadline=deadline,
            init=init,
            adaptive=adaptive,
        )

    D, iters, evals, pt = factored(coarse)
    cert = _dense_certificate(problem, D)
    if coarse > fine and not cert.within(fine):
        support_rtol = max(rank_rtol, math.sqrt(max(cert.rel_gap, 0.0)))
        Dn, cn, it3, ev3 = _newton_refine(
            problem, D, cert, gap_rtol=gap_rtol, rank_rtol=support_rtol, deadline=deadline
        )
        iters, evals = iters + it3, evals + ev3
        if cn.within(gap_rtol):
            D, cert = Dn, cn
        else:
            D, it1, ev1, pt = factored(fine, init=pt)
            iters, evals = iters + it1, evals + ev1
            cert = _dense_certificate(problem, D)
            if cn.gap < cert.gap:
                D, cert = Dn, cn
    D, it2, ev2 = _clean_factored(
        problem,
        D,
        cert,
        gap_rtol=gap_rtol,
        rank_rtol=rank_rtol,
        polish_steps=polish_steps,
        max_iter=max_iter,
        check_every=check_every,
        deadline=deadline,
    )
    return D, iters + it2, evals + ev2


def _clean_factored(
    problem: Problem,
    D: Blocks,
    cert: NucCertificate,
    *,
    gap_rtol: float,
    rank_rtol: float,
    polish_steps: int,
    max_iter: int,
    check_every: int,
    deadline: float,
) -> tuple[Blocks, int, int]:
    """Finish a factored solution (truncation, Newton, proximal polish, APG): point, iterations, evaluations.

    Each stage runs only where it can still change something, and none returns a worse gap.
    """
    iters = evals = 0
    # (only when it drops more than round-off: otherwise the point and its gap stay the same)
    Dt, changed = _truncate(D, rank_rtol)
    if changed:
        cert_t = _dense_certificate(problem, Dt)
        if cert_t.within(gap_rtol) or cert_t.gap <= cert.gap:
            D, cert = Dt, cert_t
    # L-BFGS's line search compares objective values, so it stalls once changes reach the
    # round-off of the objective (gradients near sqrt(eps)); the certificate's dual point is
    # first-order in that error.  Newton steps (at the support rank) use gradients only and
    # take the gap down by orders of magnitude.
    if not cert.within(gap_rtol):
        D, cert, iters, evals = _newton_refine(
            problem, D, cert, gap_rtol=gap_rtol, rank_rtol=rank_rtol, deadline=deadline
        )
    # A few proximal-gradient steps: never increase the objective (step 1/Lipschitz) and set
    # the singular values that belong to zero exactly to zero (the factorization leaves
    # round-off there, e.g. a whole block of size 1e-14 when that block's optimum is 0).
    # Only where it can change something: the gap is still open, or a nonzero block has
    # ||S_j||_op clearly below lam_j (its optimum given the others is 0: round-off remains).
    if not cert.within(gap_rtol) or any(
        op < (1.0 - 1e-6) * lam and bool(d.any()) for op, lam, d in zip(cert.S_op, cert.lam, D)
    ):
        D, cert = _prox_polish(problem, D, cert, steps=polish_steps, gap_rtol=gap_rtol)
        evals += polish_steps
    if not cert.within(gap_rtol):
        # Last resort after the factored stages: a bounded number of APG steps (the gap
        # usually sits at its round-off floor by now, where more steps buy nothing).
        D, it2, ev2 = _apg(
            problem,
            D,
            gap_rtol=gap_rtol,
            max_iter=min(max_iter, 2000),
            check_every=check_every,
            deadline=deadline,
        )
        iters, evals = iters + it2, evals + ev2
    return D, iters, evals


def _factored(
    problem: Problem,
    *,
    gap_rtol: float,
    rank: int | None,
    max_iter: int,
    seed: int,
    check_every: int,
    deadline: float = math.inf,
    init: LoRAPoint | None = None,
    adaptive: bool = True,
) -> tuple[Blocks, int, int, LoRAPoint]:
    r = rank if rank is not None else r_max(problem.K, problem.N) + 1

    # Certificates are checked every `check_every` iterations, and more often (down to every
    # few iterations) while one costs less than a quarter of the iterations since the last check:
    # the time spent on certificates stays at most about a fifth of the total.  (Checking k
    # iterations apart costs C / k per iteration plus an overshoot of about k / 2 iterations; at
    # m = 64 one check C costs about 2.5 iterations, and "a quarter" puts k near 10.)
    last = {"it": 0, "t": time.perf_counter(), "cost": math.inf}

    def certified(pt: LoRAPoint, it: int) -> bool:
        now = time.perf_counter()
        if now > deadline:
            return True
        if it - last["it"] < check_every and (not adaptive or now - last["t"] < 4 * last["cost"]):
            return False
        ok = _factor_certificate(problem, pt.U, pt.V).within(gap_rtol)
        done = time.perf_counter()
        last.update(it=it, t=done, cost=done - now)
        return ok

    # Small random start: away from the saddle at 0, well inside the small-norm region.
    res = minimize_lora(
        problem,
        rank=r,
        init=init,
        seed=seed,
        init_scale=1e-2,
        max_iter=max_iter,
        callback=certified,
        callback_every=min(check_every, _MIN_CHECK_EVERY),
    )
    return product(res.point.U, res.point.V), res.iterations, res.gradient_evaluations, res.point


def _newton_direction(
    problem: Problem,
    U: list[Tensor],
    V: list[Tensor],
    g: list[Tensor],
    *,
    cg_iter: int,
    dense_max: int,
    work: dict[str, Tensor] | None = None,
    reuse: bool = False,
) -> tuple[list[Tensor], int, bool]:
    """Newton direction ``-H^{-1} g`` at ``(U, V)``, the HVP-equivalents spent, and whether it reused.

    Dense (closed-form Hessian, Cholesky) when there are at most ``dense_max`` variables; the
    Hessian's null directions (the rotations ``U Q, V Q`` of balanced factors) carry no gradient,
    so a tiny diagonal shift is harmless; an indefinite Hessian gets a larger shift.
    ``reuse=True`` solves with the Cholesky factor of the previous call in ``work`` (a chord
    step: two triangular solves instead of a new Hessian and factorization) when the number of
    variables is unchanged.  Otherwise truncated CG on the closed-form HVP, stopped on negative
    curvature.
    """
    b = len(U)
    P = sum(x.numel() for x in g)
    if P <= dense_max and isinstance(problem.J, DenseOperator):
        # lora_hessian orders the variables block by block: vec(U_j), then vec(V_j).
        order = [x for j in range(b) for x in (g[j], g[b + j])]
        gv = torch.cat([x.reshape(-1) for x in order])
        # Reused P x P buffers (fresh large allocations are slow: page faults on every call).
        work = {} if work is None else work
        if reuse and "factor" in work and work["factor"].shape[0] == P:
            chord = -_cholesky_solve(gv, work["factor"])
            return _unorder(chord, order, b), 1, True
        work.pop("factor", None)
        if "H" not in work or work["H"].shape[0] != P:
            work["H"] = torch.empty(P, P, dtype=problem.dtype, device=problem.device)
            work["L"] = torch.empty(P, P, dtype=problem.dtype, device=problem.device)
            work["info"] = torch.empty((), dtype=torch.int32, device=problem.device)
        H = lora_hessian(problem, U, V, out=work["H"])
        scale = max(float(H.diagonal().abs().max()), 1e-300)
        # F is invariant under (U_j, V_j) -> (U_j R, V_j R) for orthogonal R: the directions
        # (U_j A, V_j A), A skew, carry no gradient, and away from a stationary point the
        # Hessian is slightly *negative* along them (about the gradient's size), which would
        # force a large shift on every direction.  Penalizing them (they are not a descent
        # direction anyway) keeps the shift at round-off level near the solution.
        G = _gauge_directions(U, V)
        if G is not None:
            H.addmm_(G, G.T, alpha=scale)
        # Levenberg-style shifts: the smallest of 1e-10, 1e-7, ... (relative) that makes the
        # shifted Hessian positive definite; the first one is round-off level.  (In place on
        # H's diagonal: no P x P temporaries.)
        diag = H.diagonal()
        dv: Tensor | None = None
        added = 0.0
        for rel in (1e-10, 1e-7, 1e-4, 1e-1, 1.0):
            diag.add_(rel * scale - added)
            added = rel * scale
            L, info = torch.linalg.cholesky_ex(H, out=(work["L"], work["info"]))
            if int(info) == 0:
                dv = -_cholesky_solve(gv, L)
                work["factor"] = L
                break
        if dv is None:  # pragma: no cover - diagonal dominance makes the last shift PD
            dv = -gv / scale
        # Cost in HVP-equivalents (an HVP is ~2 K N p flops): Phi costs K N p r, Phi^T Phi K N P^2.
        n_p, r = problem.num_params, max(u.shape[1] for u in U)
        return _unorder(dv, order, b), math.ceil(r / 2 + P * P / (2 * n_p)), False

    def dot(a: list[Tensor], c: list[Tensor]) -> float:
        return float(sum((x * y).sum() for x, y in zip(a, c)))

    gnorm = math.sqrt(dot(g, g))
    d = [torch.zeros_like(x) for x in g]
    res = [-x for x in g]
    p = [x.clone() for x in res]
    rr = dot(res, res)
    tol = min(0.1, gnorm) * gnorm
    used = 0
    for _cg in range(cg_iter):
        hU, hV = lora_hvp(problem, U, V, p[:b], p[b:])
        used += 1
        Hp = list(hU) + list(hV)
        pHp = dot(p, Hp)
        if pHp <= 0:
            break
        alpha = rr / pHp
        d = [x + alpha * y for x, y in zip(d, p)]
        res = [x - alpha * y for x, y in zip(res, Hp)]
        rr_new = dot(res, res)
        if math.sqrt(rr_new) <= tol:
            break
        p = [x + (rr_new / rr) * y for x, y in zip(res, p)]
        rr = rr_new
    return d, used, False


def _cholesky_solve(b: Tensor, L: Tensor) -> Tensor:
    """``(L L^T)^{-1} b`` by two triangular solves (``torch.cholesky_solve`` is ~25x slower on CPU)."""
    z = torch.linalg.solve_triangular(L, b.unsqueeze(1), upper=False)
    return torch.linalg.solve_triangular(L.T, z, upper=True).squeeze(1)


def _unorder(dv: Tensor, order: list[Tensor], b: int) -> list[Tensor]:
    """Split a block-wise ``(vec U_j, vec V_j)_j`` vector into ``[U_1..U_b, V_1..V_b]``."""
    parts, k = [], 0
    for x in order:
        parts.append(dv[k : k + x.numel()].reshape(x.shape))
        k += x.numel()
    return [parts[2 * j] for j in range(b)] + [parts[2 * j + 1] for j in range(b)]


def _gauge_directions(U: list[Tensor], V: list[Tensor]) -> Tensor | None:
    """Orthonormal basis of the directions ``(U_j A, V_j A)``, ``A`` skew (block-wise variable order)."""
    sizes = [(u.numel() + v.numel()) for u, v in zip(U, V)]
    P = sum(sizes)
    cols = []
    o = 0
    for u, v, size in zip(U, V, sizes):
        r = u.shape[1]
        for a in range(r):
            for c in range(a + 1, r):
                A = torch.zeros(r, r, dtype=u.dtype, device=u.device)
                A[a, c], A[c, a] = 1.0, -1.0
                col = torch.zeros(P, dtype=u.dtype, device=u.device)
                col[o : o + size] = torch.cat([(u @ A).reshape(-1), (v @ A).reshape(-1)])
                cols.append(col)
        o += size
    if not cols:
        return None
    Q, R = torch.linalg.qr(torch.stack(cols, dim=1))
    keep = R.diagonal().abs() > 1e-12 * max(float(R.diagonal().abs().max()), 1e-300)
    return Q[:, keep] if bool(keep.any()) else None


def _drop_vanishing_columns(
    U: list[Tensor], V: list[Tensor], *, ratio: float
) -> tuple[list[Tensor], list[Tensor], bool]:
    """Re-balance each ``(U_j, V_j)`` and drop its last singular direction if ``sigma_k < ratio sigma_{k-1}``.

    Uses ``U = Q_u R_u``, ``V = Q_v R_v`` and the SVD of the small ``R_u R_v^T`` (``O(m r^2)``).
    """
    outU, outV, dropped = [], [], False
    for u, v in zip(U, V):
        k = u.shape[1]
        if k < 2:
            outU.append(u)
            outV.append(v)
            continue
        Qu, Ru = torch.linalg.qr(u)
        Qv, Rv = torch.linalg.qr(v)
        A, sig, Bh = torch.linalg.svd(Ru @ Rv.T)
        if float(sig[-1]) < ratio * float(sig[-2]):
            root = sig[:-1].sqrt()
            outU.append((Qu @ A[:, :-1]) * root)
            outV.append((Qv @ Bh[:-1].T) * root)
            dropped = True
        else:
            outU.append(u)
            outV.append(v)
    return outU, outV, dropped


def _newton_refine(
    problem: Problem,
    D: Blocks,
    cert: NucCertificate,
    *,
    gap_rtol: float,
    rank_rtol: float,
    deadline: float,
    steps: int = 8,
    cg_iter: int = 200,
    dense_max: int = 1600,
    drop_ratio: float = 1e-2,
) -> tuple[Blocks, NucCertificate, int, int]:
    """Newton on the LoRA objective at the support rank, from the balanced factors of ``D``.

    The support rank of each block is the number of singular values above ``rank_rtol * sigma_1``.
    Returns the best point seen (smallest gap), never a worse one than ``D``.
    """
    ranks = []
    for Dj in D:
        sv = torch.linalg.svdvals(Dj)
        top = float(sv[0]) if sv.numel() else 0.0
        ranks.append(max(1, int((sv > rank_rtol * top).sum()) if top > 0 else 1))
    pt = balanced_factors(D, rank=ranks)
    U, V = list(pt.U), list(pt.V)
    best_D, best = D, cert
    work: dict[str, Tensor] = {}
    prev_gap = cert.gap
    evals = 0
    done = 0
    b = len(U)
    # After a step that cut the gap at least tenfold, the next one reuses the factorization
    # (a chord step: superlinear progress continues at a fraction of the cost); a chord step
    # that does worse, or fails its line search, is followed by a fresh Newton step.
    chord = False
    factorizations = 0
    while factorizations < steps and done < 2 * steps:
        if time.perf_counter() > deadline:
            break
        done += 1
        F, gU, gV = lora_value_and_grad(problem, U, V)
        evals += 1
        g = list(gU) + list(gV)
        if all(float(x.abs().max()) == 0.0 for x in g if x.numel()):
            break
        d, used, reused = _newton_direction(
            problem, U, V, g, cg_iter=cg_iter, dense_max=dense_max, work=work, reuse=chord
        )
        fresh = not reused
        factorizations += fresh
        evals += used
        slope = float(sum((x * y).sum() for x, y in zip(g, d)))
        if not slope < 0.0:
            if fresh:
                break  # no descent direction left (round-off level)
            chord = False
            continue
        # Backtracking (Armijo) on F: pure Newton steps are taken near the solution; farther
        # away (a coarse start, an over-estimated support) the step is damped instead of
        # going uphill.
        # Near the minimizer F - F* (about the squared distance) falls below the round-off of F:
        # an increase at that level is noise, not a failed step (halving the step on such noise
        # would turn quadratic convergence into halving the gap per step).
        noise = 8.0 * torch.finfo(problem.dtype).eps * abs(F)
        alpha, accepted = 1.0, False
        for _ls in range(12):
            Un = [x + alpha * y for x, y in zip(U, d[:b])]
            Vn = [x + alpha * y for x, y in zip(V, d[b:])]
            Fn = lora_value(problem, Un, Vn)
            evals += 1
            if Fn <= F + 1e-4 * alpha * slope + noise:
                accepted = True
                break
            alpha *= 0.5
        if not accepted:
            if fresh:
                break
            chord = False
            continue
        U, V = Un, Vn
        Dn = product(U, V)
        c = _dense_certificate(problem, Dn)
        # An over-estimated support shows as a column that Newton drives to zero (only
        # linearly: the Hessian is singular there).  Try dropping it; keep whichever is better.
        Ut, Vt, dropped = _drop_vanishing_columns(U, V, ratio=drop_ratio)
        if dropped:
            Dt = product(Ut, Vt)
            ct = _dense_certificate(problem, Dt)
            if ct.gap < c.gap:
                U, V, Dn, c = Ut, Vt, Dt, ct
        at_floor = fresh and done >= 2 and best.rel_gap < 1e-8 and not c.gap < 0.5 * prev_gap
        chord = c.gap < 0.1 * prev_gap
        prev_gap = c.gap
        if c.gap < best.gap:
            best_D, best = Dn, c
        if best.within(gap_rtol) or at_floor:
            # At the support rank Newton at least halves a small gap per step; when it stops
            # doing so the gap has reached its round-off floor and more steps buy nothing.
            break
    return best_D, best, done, evals


def _lipschitz(problem: Problem) -> float:
    return problem.loss.max_curvature / problem.N * jacobian_op_norm_sq(problem)


def _prox_polish(
    problem: Problem, D: Blocks, cert: NucCertificate, *, steps: int, gap_rtol: float
) -> tuple[Blocks, NucCertificate]:
    if steps <= 0:
        return D, cert
    step = 1.0 / max(_lipschitz(problem), 1e-300)
    best_D, best = D, cert
    for _ in range(steps):
        ev = problem.evaluate(D)
        D = tuple(
            singular_value_threshold(d - step * S, step * lam)[0] for d, S, lam in zip(D, ev.S, problem.lam)
        )
        c = _dense_certificate(problem, D)
        # Prefer the polished point (exact zeros) whenever it is within the target or better.
        if c.within(gap_rtol) or c.gap <= best.gap:
            best_D, best = D, c
    return best_D, best


def _apg(
    problem: Problem,
    D0: Blocks,
    *,
    gap_rtol: float,
    max_iter: int,
    check_every: int,
    deadline: float = math.inf,
    stall_checks: int = 40,
) -> tuple[Blocks, int, int]:
    step = 1.0 / max(_lipschitz(problem), 1e-300)
    x_prev = tuple(d.clone() for d in D0)
    yk = x_prev
    tk = 1.0
    evals = 0
    obj_prev = math.inf
    best_gap, since = math.inf, 0
    for it in range(1, max_iter + 1):
        ev = problem.evaluate(yk)
        evals += 1
        x = tuple(
            singular_value_threshold(y - step * S, step * lam)[0] for y, S, lam in zip(yk, ev.S, problem.lam)
        )
        obj = problem.nuc_objective(x)
        # Adaptive restart (O'Donoghue & Candes): drop momentum when the objective goes up.
        # (A plain step, tk == 1, can only go up by round-off: accept it, else this would loop.)
        if obj > obj_prev and tk > 1.0:
            tk = 1.0
            yk = x_prev
            obj_prev = problem.nuc_objective(x_prev)
            continue
        t_next = (1.0 + math.sqrt(1.0 + 4.0 * tk * tk)) / 2.0
        beta = (tk - 1.0) / t_next
        yk = tuple(a + beta * (a - b) for a, b in zip(x, x_prev))
        x_prev, tk, obj_prev = x, t_next, obj
        if it % check_every == 0:
            c = _dense_certificate(problem, x)
            if c.within(gap_rtol) or time.perf_counter() > deadline:
                return x, it, evals
            # Stall: the gap has not improved by 1% over the last `stall_checks` checks (e.g. a
            # target below the round-off floor of the certificate); stop instead of grinding on.
            if c.gap < 0.99 * best_gap:
                best_gap, since = c.gap, 0
            else:
                since += 1
                if since >= stall_checks:
                    return x, it, evals
    return x_prev, max_iter, evals
