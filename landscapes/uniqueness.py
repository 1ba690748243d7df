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

from dataclasses import dataclass

import torch
from torch import Tensor

from landscapes.problem import Blocks, Problem
from landscapes.rank_reduction import face_constraints

__all__ = ["UniquenessCertificate", "ft_uniqueness", "nuc_uniqueness", "shift_projector"]


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


def nuc_uniqueness(
    problem: Problem, D: Blocks, S: Blocks, *, face_rtol: float = 1e-6, inj_rtol: float = 1e-8
) -> UniquenessCertificate:
    """NUC minimizer uniqueness from the gradient blocks ``S`` at a certified optimum ``D``."""
    P_list, Q_list, dims, margins = [], [], [], []
    for Sj, lam in zip(S, problem.lam):
        U, s, Vh = torch.linalg.svd(-Sj, full_matrices=False)
        k = int((s >= lam * (1 - face_rtol)).sum())
        nxt = float(s[k]) if k < s.numel() else 0.0
        margins.append((lam - nxt) / lam)
        P_list.append(U[:, :k])
        Q_list.append(Vh[:k].T)
        dims.append(k)
    if sum(dims) == 0:
        return UniquenessCertificate(
            True, 1.0, tuple(dims), tuple(margins), "face is {0}: D = 0 is the unique minimizer"
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
        )
    s = torch.linalg.svdvals(A)
    inj = float(s[-1] / s[0]) if float(s[0]) > 0 else 0.0
    ok = inj > inj_rtol and min(margins) > 10 * face_rtol
    why = (
        "face map injective and face separated from the rest of the spectrum"
        if ok
        else "face map not injective or face not separated"
    )
    return UniquenessCertificate(ok, inj, tuple(dims), tuple(margins), why)
