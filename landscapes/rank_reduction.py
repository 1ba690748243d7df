r"""Constructive Barvinok--Pataki rank reduction: same predictions, no larger nuclear norm.

Let :math:`D_j = P_j \Sigma_j Q_j^\top` (rank :math:`r_j`).  The points
:math:`D_j(T) = P_j T_j Q_j^\top` with :math:`T_j \succeq 0` symmetric form a face of the SDP lift
of the nuclear norm, on which :math:`\|D_j(T)\|_* \le \operatorname{tr} T_j` (equality for
:math:`T_j \succeq 0`).  The predictions are linear in :math:`T`:
:math:`J \operatorname{vec} D(T) = \sum_j \langle C^j_k, T_j\rangle` with
:math:`C^j_k = P_j^\top \operatorname{mat}_j(J_k) Q_j`.  When
:math:`\sum_j r_j(r_j+1)/2 > KN` these ``KN`` linear conditions leave a non-zero symmetric
direction :math:`\Delta` with unchanged predictions; choose its sign so that
:math:`\sum_j w_j \operatorname{tr}\Delta_j \le 0` (the weighted nuclear norm does not grow) and
step :math:`T \leftarrow \Sigma + t\Delta` to the boundary of the PSD cone, where a rank drops.
Repeating reaches :math:`\sum_j r_j(r_j+1)/2 \le KN` (Barvinok 1995, Pataki 1998; used in [JLR24]).

Each step works on a sub-face of only :math:`\approx\sqrt{2KN}` directions (those of the smallest
singular values), so a full-rank :math:`384 \times 384` start costs one pass over ``J`` plus
:math:`O(KN\, r\, \sqrt{KN})` per step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from landscapes.operators import DenseOperator
from landscapes.problem import Blocks, Problem
from theory.bounds import triangular

__all__ = ["RankReduction", "reduce_rank", "face_constraints"]


@dataclass(frozen=True)
class RankReduction:
    r"""Result of :func:`reduce_rank` with the evidence that it kept the predictions.

    ``prediction_residual`` is
    :math:`\|J\operatorname{vec}(D' - D)\|_2 / \|J \operatorname{vec} D\|_2` (``0`` when both are
    zero), computed directly from ``J`` at the end (not accumulated); relative, so a rescaled
    problem gets the same residual.
    """

    D: Blocks
    ranks_before: tuple[int, ...]
    ranks_after: tuple[int, ...]
    steps: int
    prediction_residual: float
    nuclear_before: tuple[float, ...]
    nuclear_after: tuple[float, ...]
    singular_values: tuple[tuple[float, ...], ...]
    stopped: str
    seconds: float


def _block_rows(problem: Problem, j: int) -> tuple[int, int]:
    start = sum(m * n for m, n in problem.blocks[:j])
    m, n = problem.blocks[j]
    return start, start + m * n


def face_constraints(problem: Problem, P: Sequence[Tensor], Q: Sequence[Tensor]) -> list[Tensor]:
    r""":math:`C^j_k = P_j^\top \operatorname{mat}_j(J_k) Q_j` for every row ``k``.

    Returns a list of ``(KN, r_j, r_j)`` tensors, one per block.
    """
    out = []
    rows = problem.J.matrix if isinstance(problem.J, DenseOperator) else None
    for j, ((m, n), Pj, Qj) in enumerate(zip(problem.blocks, P, Q)):
        a, b = _block_rows(problem, j)
        if rows is not None:
            Jj = rows[:, a:b].reshape(problem.KN, m, n)
            out.append(torch.einsum("ma,kmb->kab", Pj, Jj @ Qj))
        else:
            eye = torch.eye(problem.KN, dtype=problem.dtype, device=problem.device)
            out.append(
                torch.stack(
                    [Pj.T @ problem.J.rmatvec(eye[k])[a:b].reshape(m, n) @ Qj for k in range(problem.KN)]
                )
            )
    return out


def _default_until(problem: Problem) -> Callable[[tuple[int, ...]], bool]:
    return lambda ranks: sum(triangular(r) for r in ranks) <= problem.KN


def reduce_rank(
    problem: Problem,
    D: Sequence[Tensor],
    *,
    until: Callable[[tuple[int, ...]], bool] | None = None,
    weights: Sequence[float] | None = None,
    rank_rtol: float = 1e-8,
    null_rtol: float = 1e-10,
    max_steps: int = 100000,
) -> RankReduction:
    r"""Reduce the ranks of ``D`` keeping ``J vec D`` and not increasing :math:`\sum_j w_j\|D_j\|_*`.

    Parameters
    ----------
    problem
        The problem whose predictions are kept.
    D
        The starting point (one matrix per block).
    until
        Stop when ``until(ranks)`` is true; default the bound :math:`\sum_j r_j(r_j+1)/2 \le KN`.
        The loop also stops when the face has no direction with unchanged predictions (the
        constraint matrix has no singular value below ``null_rtol`` times its largest).
    weights
        Per-block weights of the nuclear norms; default ``problem.lam`` (or ones if some is 0).
    rank_rtol
        Singular values of the input below ``rank_rtol * sigma_1`` are treated as zero.
    null_rtol
        Relative size below which a singular value of the constraint matrix counts as zero.
    max_steps
        Safety limit on the number of steps.
    """
    D = problem.check_point(D)
    t0 = time.perf_counter()
    until = until or _default_until(problem)
    if weights is None:
        weights = problem.lam if all(v > 0 for v in problem.lam) else tuple(1.0 for _ in problem.blocks)
    w = [float(v) for v in weights]
    P, Q, sig, ranks0, nuc0 = [], [], [], [], []
    for Dj in D:
        U, s, Vh = torch.linalg.svd(Dj, full_matrices=False)
        top = float(s[0]) if s.numel() else 0.0
        k = int((s > rank_rtol * top).sum()) if top > 0 else 0
        P.append(U[:, :k])
        Q.append(Vh[:k].T)
        sig.append(s[:k].clone())
        ranks0.append(k)
        nuc0.append(float(s.sum()))
    C = face_constraints(problem, P, Q)
    steps = 0
    stopped = "bound reached"
    # Dropped directions are only marked dead; arrays are compacted when a quarter is dead, so a
    # step does not copy the whole (KN, r, r) constraint tensor.
    alive = [[True] * len(s) for s in sig]

    def live_ranks() -> tuple[int, ...]:
        return tuple(sum(a) for a in alive)

    while not until(live_ranks()):
        if steps >= max_steps:
            stopped = "max_steps"
            break
        # Sub-face: the smallest singular values across blocks until the face is larger than KN.
        order = sorted(
            ((float(s[i]), j, i) for j, s in enumerate(sig) for i in range(len(s)) if alive[j][i]),
            key=lambda t: t[0],
        )
        chosen: list[list[int]] = [[] for _ in sig]
        for _, j, i in order:
            chosen[j].append(i)
            if sum(triangular(len(c)) for c in chosen) > problem.KN:
                break
        # Constraint matrix on the sub-face (columns: (j, a <= b) pairs).
        cols, index = [], []
        for j, idx in enumerate(chosen):
            if not idx:
                continue
            sub = C[j][:, idx][:, :, idx]  # (KN, s, s)
            for a in range(len(idx)):
                for b in range(a, len(idx)):
                    cols.append(sub[:, a, a] if a == b else sub[:, a, b] + sub[:, b, a])
                    index.append((j, a, b))
        A = torch.stack(cols, dim=1)  # (KN, n_cols)
        _, sv, Vh = torch.linalg.svd(A, full_matrices=True)
        smax = float(sv[0]) if sv.numel() else 0.0
        n_cols = A.shape[1]
        # Null space: columns beyond the rank, plus numerically zero singular values.
        full = torch.zeros(n_cols, dtype=A.dtype, device=A.device)
        full[: sv.numel()] = sv
        null = [i for i in range(n_cols) if i >= sv.numel() or float(sv[i]) <= null_rtol * max(smax, 1e-300)]
        if not null:
            stopped = "no direction with unchanged predictions"
            break
        x = Vh[null[-1]]
        # Assemble block directions.
        Delta = [torch.zeros(len(c), len(c), dtype=A.dtype, device=A.device) for c in chosen]
        for val, (j, a, b) in zip(x, index):
            Delta[j][a, b] = val
            Delta[j][b, a] = val
        wtr = sum(wj * float(torch.trace(Dl)) for wj, Dl in zip(w, Delta))
        if wtr > 0:
            Delta = [-Dl for Dl in Delta]
        # Largest step keeping diag(sigma_S) + t Delta PSD (attained in block j_star).
        t_star, j_star = float("inf"), -1
        for j, idx in enumerate(chosen):
            if not idx:
                continue
            r_half = sig[j][idx].rsqrt()
            M = r_half[:, None] * Delta[j] * r_half[None, :]
            lmin = float(torch.linalg.eigvalsh(M)[0])
            if lmin < 0 and -1.0 / lmin < t_star:
                t_star, j_star = -1.0 / lmin, j
        if t_star == float("inf"):
            # Delta is PSD with non-positive weighted trace: then it is zero on weighted blocks;
            # move the other way (predictions still unchanged; the norm report shows any growth).
            Delta = [-Dl for Dl in Delta]
            for j, idx in enumerate(chosen):
                if not idx:
                    continue
                r_half = sig[j][idx].rsqrt()
                lmin = float(torch.linalg.eigvalsh(r_half[:, None] * Delta[j] * r_half[None, :])[0])
                if lmin < 0 and -1.0 / lmin < t_star:
                    t_star, j_star = -1.0 / lmin, j
            if t_star == float("inf"):
                stopped = "degenerate direction"
                break
        for j, idx in enumerate(chosen):
            if not idx:
                continue
            T = torch.diag(sig[j][idx]) + t_star * Delta[j]
            lam_T, R = torch.linalg.eigh(0.5 * (T + T.T))
            top = float(sig[j].max())
            keep = lam_T > 1e-13 * top
            if j == j_star:
                # t* puts this block's smallest eigenvalue on zero by construction: drop it even if
                # round-off left it a little above the threshold (else the loop could spin).
                keep[0] = False
            idx_t = torch.tensor(idx, device=A.device)
            # Rotate the chosen columns of P, Q and the constraint tensors by R.
            P[j][:, idx_t] = P[j][:, idx_t] @ R
            Q[j][:, idx_t] = Q[j][:, idx_t] @ R
            Cj = C[j]
            Cj[:, idx_t, :] = torch.einsum("ab,kac->kbc", R, Cj[:, idx_t, :])
            Cj[:, :, idx_t] = torch.einsum("kca,ab->kcb", Cj[:, :, idx_t], R)
            lam_T = torch.where(keep, lam_T, torch.zeros_like(lam_T))
            sig[j][idx_t] = lam_T
            for pos in torch.nonzero(~keep).flatten().tolist():
                alive[j][idx[pos]] = False
            dead = len(alive[j]) - sum(alive[j])
            if dead and (dead > len(alive[j]) // 4 or until(live_ranks())):
                mask = torch.tensor(alive[j], dtype=torch.bool, device=A.device)
                P[j], Q[j], sig[j] = P[j][:, mask], Q[j][:, mask], sig[j][mask]
                C[j] = Cj[:, mask][:, :, mask]
                alive[j] = [True] * int(mask.sum())
        steps += 1
    D_new = tuple((Pj * s) @ Qj.T for Pj, s, Qj in zip(P, sig, Q))
    z_old = problem.J.matvec(problem.vec(D))
    z_new = problem.J.matvec(problem.vec(D_new))
    diff, base = float((z_new - z_old).norm()), float(z_old.norm())
    resid = diff / base if base > 0 else (0.0 if diff == 0 else math.inf)
    svs, ranks1, nuc1 = [], [], []
    for Dj in D_new:
        s = torch.linalg.svdvals(Dj)
        top = float(s[0]) if s.numel() else 0.0
        ranks1.append(int((s > rank_rtol * top).sum()) if top > 0 else 0)
        svs.append(tuple(float(v) for v in s[: max(ranks1[-1] + 2, 1)]))
        nuc1.append(float(s.sum()))
    return RankReduction(
        D=D_new,
        ranks_before=tuple(ranks0),
        ranks_after=tuple(ranks1),
        steps=steps,
        prediction_residual=resid,
        nuclear_before=tuple(nuc0),
        nuclear_after=tuple(nuc1),
        singular_values=tuple(svs),
        stopped=stopped,
        seconds=time.perf_counter() - t0,
    )
