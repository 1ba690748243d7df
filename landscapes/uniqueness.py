r"""Certificates that a convex problem has a *unique* minimizer, so its rank is the minimal rank.

A rank claim "some minimizer has rank <= r" can only be refuted by showing that *every*
minimizer has larger rank.  Both FT and NUC have the same gradient :math:`g^\star` at all their
minimizers (the losses are strictly convex in ``z`` up to the shift :math:`z_i + t\mathbf 1` of
cross-entropy, along which the gradient is constant), so predictions are unique modulo that
shift. With :math:`\Pi` the projection removing the shift (identity for squared and logistic):

* **FT**: the minimizer is unique iff :math:`\Pi J` has full column rank.
* **NUC**: every minimizer is :math:`D_j = P_j T_j Q_j^\top`, :math:`T_j \succeq 0`, where
  :math:`P_j, Q_j` are the singular vectors of :math:`-S_j` with singular value :math:`\lambda_j`
  (the subgradient condition).  The minimizer is unique iff
  :math:`T \mapsto \Pi J \operatorname{vec} D(T)` is injective on symmetric ``T``.

Numerically, the singular value :math:`\lambda_j` is matched within ``face_rtol`` and the margin
to the next singular value is reported, as is the conditioning of the injectivity test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from landscapes.problem import Blocks, Problem
from landscapes.rank_reduction import face_constraints

__all__ = ["UniquenessCertificate", "ft_uniqueness", "nuc_uniqueness", "roundoff_gap", "shift_projector"]


@dataclass(frozen=True)
class UniquenessCertificate:
    r"""``unique`` with the numbers behind it.

    ``injectivity`` is :math:`\sigma_{\min}/\sigma_{\max}` of the linear map whose injectivity
    implies uniqueness; ``face_dims`` the face sizes (NUC) and ``lam_margin`` the relative gap
    :math:`(\lambda_j - \sigma_{k+1}(S_j))/\lambda_j` below the face (NUC).
    """

    unique: bool
    injectivity: float
    face_dims: tuple[int, ...]
    lam_margin: tuple[float, ...]
    reason: str
    sin_theta: float = 0.0
    rank_error: float = math.inf


def shift_projector(problem: Problem) -> Tensor:
    """Projection on prediction space removing per-example constant shifts (cross-entropy only)."""
    KN = problem.KN
    eye = torch.eye(KN, dtype=problem.dtype, device=problem.device)
    if problem.loss.name != "cross_entropy":
        return eye
    K = problem.K
    block = torch.eye(K, dtype=problem.dtype) - torch.full((K, K), 1.0 / K, dtype=problem.dtype)
    return torch.block_diag(*[block] * problem.N).to(problem.device)


def ft_uniqueness(problem: Problem, *, inj_rtol: float = 1e-9) -> UniquenessCertificate:
    """FT has a unique minimizer (when it has one) iff ``Pi J`` has full column rank."""
    if problem.num_params > problem.KN:
        return UniquenessCertificate(
            False,
            0.0,
            (),
            (),
            f"p = {problem.num_params} > KN = {problem.KN}: J has a null space, minimizers are not unique",
        )
    A = shift_projector(problem) @ problem.J.rows()
    s = torch.linalg.svdvals(A)
    inj = float(s[-1] / s[0]) if float(s[0]) > 0 else 0.0
    ok = inj > inj_rtol
    return UniquenessCertificate(
        ok, inj, (), (), "Pi J has full column rank" if ok else "Pi J is (numerically) rank deficient"
    )


def _block_op_norms(problem: Problem) -> list[float]:
    rows = problem.J.rows()
    out, k = [], 0
    for m, n in problem.blocks:
        out.append(float(torch.linalg.matrix_norm(rows[:, k : k + m * n], ord=2)))
        k += m * n
    return out


def roundoff_gap(problem: Problem, D: Blocks, gap: float) -> float:
    r"""The duality gap to reason with: ``|gap|``, at least the objective's rounding level.

    The primal and dual values are sums of about ``KN`` terms each; their computed difference is
    uncertain by :math:`c\,\varepsilon\,|P(D)|` with :math:`c = \max(64, KN)`.
    """
    level = max(64, problem.KN) * torch.finfo(problem.dtype).eps * abs(problem.nuc_objective(D))
    return max(abs(float(gap)), level)


def nuc_uniqueness(
    problem: Problem, D: Blocks, S: Blocks, *, gap: float, inj_rtol: float = 1e-8
) -> UniquenessCertificate:
    r"""NUC minimizer uniqueness, with error bounds derived from the duality ``gap`` of ``D``.

    ``F`` is convex and :math:`(L_\ell/N)`-smooth in the predictions, and the regularizer's part of
    :math:`P(D) - P^\star` is non-negative, so :math:`\|g - g^\star\|^2 \le 2 (L_\ell/N)\,
    \mathrm{gap}` and :math:`\|S_j - S_j^\star\|_{op} \le \delta_j = \|J_j\|_{op}
    \sqrt{2 L_\ell\, \mathrm{gap}/N}`.  Hence (Weyl) the optimal face of every block has
    dimension at most :math:`k_j = \#\{\sigma_i(S_j) \ge \lambda_j - \delta_j\}`, and
    (Davis--Kahan) its subspace is within an angle :math:`\sin\theta \le \delta_j /
    (\lambda_j - \delta_j - \sigma_{k_j+1}(S_j))` of the computed one.  Uniqueness is declared
    when the face map is injective with room to spare for that angle
    (:math:`\sigma_{\min}/\sigma_{\max} > 4 \sin\theta`).

    A computed gap is known only up to rounding: one below the rounding level of the objective
    (zero or negative at round-off, which happens at tight solves) is replaced by that level
    (:func:`roundoff_gap`); taking it as exactly zero would put singular values a rounding error
    below :math:`\lambda_j` outside the face and certify a face, and ranks, too small.

    For the squared loss the predictions are also pinned, :math:`\|z - z^\star\| \le
    \sqrt{2N\,\mathrm{gap}}`, which bounds :math:`\|D - D^\star\|_F` by ``rank_error`` (used
    to certify the rank of the unique minimizer); for other losses ``rank_error`` is ``inf``.
    """
    if problem.loss.name not in ("squared", "logistic", "cross_entropy"):
        return UniquenessCertificate(False, 0.0, (), (), "custom loss: strict convexity unknown")
    gap = roundoff_gap(problem, D, gap)
    norms = _block_op_norms(problem)
    P_list, Q_list, dims, margins, sines = [], [], [], [], []
    for Sj, lam, Jn in zip(S, problem.lam, norms):
        delta = Jn * math.sqrt(2.0 * problem.loss.max_curvature * gap / problem.N)
        U, s, Vh = torch.linalg.svd(-Sj, full_matrices=False)
        k = int((s >= lam - delta).sum())
        nxt = float(s[k]) if k < s.numel() else 0.0
        sep = lam - delta - nxt
        margins.append(sep / lam)
        sines.append(delta / sep if sep > 0 else math.inf)
        P_list.append(U[:, :k])
        Q_list.append(Vh[:k].T)
        dims.append(k)
    sin_theta = max(sines) if sines else 0.0
    if sum(dims) == 0:
        return UniquenessCertificate(
            True,
            1.0,
            tuple(dims),
            tuple(margins),
            "face is {0}: D = 0 is the unique minimizer",
            sin_theta,
            0.0,
        )
    C = face_constraints(problem, P_list, Q_list)
    Pi = shift_projector(problem)
    cols = []
    for Cj, k in zip(C, dims):
        for a in range(k):
            for b in range(a, k):
                cols.append(Cj[:, a, a] if a == b else Cj[:, a, b] + Cj[:, b, a])
    A = Pi @ torch.stack(cols, dim=1)
    if A.shape[1] > A.shape[0]:
        return UniquenessCertificate(
            False,
            0.0,
            tuple(dims),
            tuple(margins),
            f"face of dimension {A.shape[1]} > KN = {A.shape[0]}: not unique",
            sin_theta,
            math.inf,
        )
    sv = torch.linalg.svdvals(A)
    inj = float(sv[-1] / sv[0]) if float(sv[0]) > 0 else 0.0
    ok = inj > max(inj_rtol, 4.0 * sin_theta)
    rank_error = math.inf
    if ok and problem.loss.name == "squared":
        dz = math.sqrt(2.0 * problem.N * gap)
        dnorm = math.sqrt(sum(float((d * d).sum()) for d in D))
        rank_error = dz / float(sv[-1]) + 2.0 * sin_theta * dnorm
    why = (
        "face map injective, with room for the face's uncertainty"
        if ok
        else "face map not injective, or not by enough for the face's uncertainty"
    )
    return UniquenessCertificate(ok, inj, tuple(dims), tuple(margins), why, sin_theta, rank_error)
