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


@dataclass
class _Face:
    r"""The face being walked: :math:`D_j = P_j \operatorname{diag}(\sigma_j) Q_j^\top` and its constraints.

    ``C[j]`` holds :math:`C^j_k = P_j^\top \operatorname{mat}_j(J_k) Q_j` (``(KN, r_j, r_j)``).
    Dropped directions are only marked dead (``alive[j][i] = False``); a block's arrays are
    compacted when a quarter of it is dead, so a step does not copy the whole constraint tensor.
    """

    P: list[Tensor]
    Q: list[Tensor]
    sig: list[Tensor]
    C: list[Tensor]
    alive: list[list[bool]]

    def live_ranks(self) -> tuple[int, ...]:
        """The current rank of each block (its live directions)."""
        return tuple(sum(a) for a in self.alive)

    def sub_face(self, KN: int) -> list[list[int]]:
        """Per block, the live directions of the smallest singular values, until the face exceeds ``KN``."""
        order = sorted(
            ((float(s[i]), j, i) for j, s in enumerate(self.sig) for i in range(len(s)) if self.alive[j][i]),
            key=lambda t: t[0],
        )
        chosen: list[list[int]] = [[] for _ in self.sig]
        for _, j, i in order:
            chosen[j].append(i)
            if sum(triangular(len(c)) for c in chosen) > KN:
                break
        return chosen

    def direction(self, chosen: Sequence[Sequence[int]], null_rtol: float) -> list[Tensor] | None:
        r"""A symmetric :math:`\Delta` on the sub-face with :math:`\sum_j \langle C^j_k, \Delta_j\rangle = 0`.

        The last right singular vector of the ``(KN, #(j, a <= b))`` constraint matrix among those
        beyond its rank or with a singular value below ``null_rtol`` times the largest; ``None``
        when there is none.
        """
        cols, index = [], []
        for j, idx in enumerate(chosen):
            if not idx:
                continue
            sub = self.C[j][:, idx][:, :, idx]  # (KN, s, s)
            for a in range(len(idx)):
                for b in range(a, len(idx)):
                    cols.append(sub[:, a, a] if a == b else sub[:, a, b] + sub[:, b, a])
                    index.append((j, a, b))
        A = torch.stack(cols, dim=1)  # (KN, n_cols)
        _, sv, Vh = torch.linalg.svd(A, full_matrices=True)
        smax = float(sv[0]) if sv.numel() else 0.0
        n_cols = A.shape[1]
        null = [i for i in range(n_cols) if i >= sv.numel() or float(sv[i]) <= null_rtol * max(smax, 1e-300)]
        if not null:
            return None
        x = Vh[null[-1]]
        Delta = [torch.zeros(len(c), len(c), dtype=A.dtype, device=A.device) for c in chosen]
        for val, (j, a, b) in zip(x, index):
            Delta[j][a, b] = val
            Delta[j][b, a] = val
        return Delta

    def boundary_step(self, chosen: Sequence[Sequence[int]], Delta: Sequence[Tensor]) -> tuple[float, int]:
        r"""The largest ``t`` with :math:`\operatorname{diag}(\sigma_S) + t\Delta \succeq 0`, and its block.

        :math:`t^\star = \min_j -1/\lambda_{\min}(\Sigma_j^{-1/2} \Delta_j \Sigma_j^{-1/2})` over
        blocks where that eigenvalue is negative; ``(inf, -1)`` when :math:`\Delta \succeq 0`.
        """
        t_star, j_star = float("inf"), -1
        for j, idx in enumerate(chosen):
            if not idx:
                continue
            r_half = self.sig[j][idx].rsqrt()
            M = r_half[:, None] * Delta[j] * r_half[None, :]
            lmin = float(torch.linalg.eigvalsh(M)[0])
            if lmin < 0 and -1.0 / lmin < t_star:
                t_star, j_star = -1.0 / lmin, j
        return t_star, j_star

    def move(
        self,
        chosen: Sequence[Sequence[int]],
        Delta: Sequence[Tensor],
        t_star: float,
        j_star: int,
        until: Callable[[tuple[int, ...]], bool],
    ) -> None:
        r"""Step to :math:`T_j = \operatorname{diag}(\sigma_S) + t^\star \Delta_j`; drop its zero eigenvalues.

        The chosen columns of ``P``, ``Q`` and the constraint tensors are rotated by the
        eigenvectors ``R`` of ``T_j``; eigenvalues at round-off (and block ``j_star``'s smallest, zero
        by construction) are dropped.
        """
        for j, idx in enumerate(chosen):
            if not idx:
                continue
            T = torch.diag(self.sig[j][idx]) + t_star * Delta[j]
            lam_T, R = torch.linalg.eigh(0.5 * (T + T.T))
            top = float(self.sig[j].max())
            keep = lam_T > 1e-13 * top
            if j == j_star:
                # t* puts this block's smallest eigenvalue on zero by construction: drop it even if
                # round-off left it a little above the threshold (else the loop could spin).
                keep[0] = False
            Cj = self.C[j]
            idx_t = torch.tensor(idx, device=Cj.device)
            self.P[j][:, idx_t] = self.P[j][:, idx_t] @ R
            self.Q[j][:, idx_t] = self.Q[j][:, idx_t] @ R
            Cj[:, idx_t, :] = torch.einsum("ab,kac->kbc", R, Cj[:, idx_t, :])
            Cj[:, :, idx_t] = torch.einsum("kca,ab->kcb", Cj[:, :, idx_t], R)
            lam_T = torch.where(keep, lam_T, torch.zeros_like(lam_T))
            self.sig[j][idx_t] = lam_T
            for pos in torch.nonzero(~keep).flatten().tolist():
                self.alive[j][idx[pos]] = False
            dead = len(self.alive[j]) - sum(self.alive[j])
            if dead and (dead > len(self.alive[j]) // 4 or until(self.live_ranks())):
                mask = torch.tensor(self.alive[j], dtype=torch.bool, device=Cj.device)
                self.P[j], self.Q[j], self.sig[j] = self.P[j][:, mask], self.Q[j][:, mask], self.sig[j][mask]
                self.C[j] = Cj[:, mask][:, :, mask]
                self.alive[j] = [True] * int(mask.sum())


def _reduced_spectra(
    D: Sequence[Tensor], rank_rtol: float
) -> tuple[tuple[int, ...], tuple[float, ...], tuple[tuple[float, ...], ...]]:
    """Ranks (singular values above ``rank_rtol * sigma_1``), nuclear norms, leading ``rank + 2`` values."""
    ranks, nucs, svs = [], [], []
    for Dj in D:
        s = torch.linalg.svdvals(Dj)
        top = float(s[0]) if s.numel() else 0.0
        ranks.append(int((s > rank_rtol * top).sum()) if top > 0 else 0)
        svs.append(tuple(float(v) for v in s[: max(ranks[-1] + 2, 1)]))
        nucs.append(float(s.sum()))
    return tuple(ranks), tuple(nucs), tuple(svs)


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
    face = _Face(P, Q, sig, face_constraints(problem, P, Q), [[True] * len(s) for s in sig])
    steps = 0
    stopped = "bound reached"
    while not until(face.live_ranks()):
        if steps >= max_steps:
            stopped = "max_steps"
            break
        chosen = face.sub_face(problem.KN)
        Delta = face.direction(chosen, null_rtol)
        if Delta is None:
            stopped = "no direction with unchanged predictions"
            break
        wtr = sum(wj * float(torch.trace(Dl)) for wj, Dl in zip(w, Delta))
        if wtr > 0:
            Delta = [-Dl for Dl in Delta]
        t_star, j_star = face.boundary_step(chosen, Delta)
        if t_star == float("inf"):
            # Delta is PSD with non-positive weighted trace: then it is zero on weighted blocks;
            # move the other way (predictions still unchanged; the norm report shows any growth).
            Delta = [-Dl for Dl in Delta]
            t_star, j_star = face.boundary_step(chosen, Delta)
            if t_star == float("inf"):
                stopped = "degenerate direction"
                break
        face.move(chosen, Delta, t_star, j_star, until)
        steps += 1
    D_new = tuple((Pj * s) @ Qj.T for Pj, s, Qj in zip(face.P, face.sig, face.Q))
    z_old = problem.J.matvec(problem.vec(D))
    z_new = problem.J.matvec(problem.vec(D_new))
    diff, base = float((z_new - z_old).norm()), float(z_old.norm())
    resid = diff / base if base > 0 else (0.0 if diff == 0 else math.inf)
    ranks1, nuc1, svs = _reduced_spectra(D_new, rank_rtol)
    return RankReduction(
        D=D_new,
        ranks_before=tuple(ranks0),
        ranks_after=ranks1,
        steps=steps,
        prediction_residual=resid,
        nuclear_before=tuple(nuc0),
        nuclear_after=nuc1,
        singular_values=svs,
        stopped=stopped,
        seconds=time.perf_counter() - t0,
    )
