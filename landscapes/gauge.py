r"""The gauge directions of the LoRA objective: rotations of the factors that leave it unchanged.

For any orthogonal :math:`Q_j \in O(r_j)`, :math:`(U_j Q_j, V_j Q_j)` has the same product
:math:`U_j V_j^\top` and the same norms, so ``F`` (with either perturbation of
:func:`landscapes.lora.random_perturbation`, both functions of :math:`R_j R_j^\top` and
:math:`U_j V_j^\top`) is constant on the orbit.  Its tangent space at :math:`R_j = [U_j; V_j]` is

.. math:: T = \{(R_j \Omega_j)_j : \Omega_j = -\Omega_j^\top\}.

At a critical point the Hessian vanishes on ``T`` (differentiate :math:`\nabla F(RQ(t)) =
\nabla F(R)\,Q(t)`: :math:`H\,R\Omega = \nabla F(R)\,\Omega`), so a full-rank critical point has
up to :math:`\sum_j r_j(r_j-1)/2` zero eigenvalues that say nothing about the landscape; curvature
is judged on the orthogonal complement :math:`T^\perp`.

Closed form.  With the SVD :math:`R_j = A \Sigma B^\top` and the orthonormal skew basis
:math:`E_{ab} = (e_a e_b^\top - e_b e_a^\top)/\sqrt2` (:math:`a < b`), the map
:math:`\Omega \mapsto R_j\Omega` sends :math:`B E_{ab} B^\top` to :math:`A \Sigma E_{ab} B^\top`;
these images are mutually orthogonal with norms :math:`s_{ab} = \sqrt{(\sigma_a^2 + \sigma_b^2)/2}`,
the singular values of the map.  Pairs with :math:`s_{ab}` at most ``rtol`` (default ``1e-6``)
times the largest are dropped: rotations among (nearly) zero columns, e.g. the ``1e-8`` nudges of
an adversarial start, move nothing the landscape sees, and leaving them out keeps the negative
curvature along those columns in view (a dropped direction stays in the complement, which can
only make the compressed :math:`\lambda_{\min}` smaller: the safe side).  The smallest kept :math:`s_{ab}`
is the *transversality radius*: for a displacement ``Y`` of the point with
:math:`\|Y_j\|_{op} < s_{ab}` the kept tangent directions stay transversal to the displaced
orbit (used by :mod:`landscapes.local_min`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from theory.errors import UserInputError

__all__ = ["GaugeBasis", "gauge_basis", "project_out"]


@dataclass(frozen=True)
class GaugeBasis:
    """An orthonormal basis of the gauge tangent space, in ``flatten_factors`` order.

    The order is that of :func:`landscapes.curvature.vectors.flatten_factors`.

    Attributes
    ----------
    basis
        ``(P, t)`` with orthonormal columns (``t = 0``: no gauge directions, e.g. all ``r_j = 1``).
    dims
        ``t_j`` per block.
    radius
        The transversality radius: the smallest kept singular value :math:`s_{ab}` over all
        blocks (``inf`` when ``t = 0``).
    """

    basis: Tensor
    dims: tuple[int, ...]
    radius: float

    @property
    def dim(self) -> int:
        """``t``, the number of gauge directions kept."""
        return int(self.basis.shape[1])


def gauge_basis(U: Sequence[Tensor], V: Sequence[Tensor], *, rtol: float = 1e-6) -> GaugeBasis:
    r"""The gauge tangent space at ``(U, V)`` (module docstring), from one SVD of each :math:`[U_j; V_j]`."""
    if not (isinstance(rtol, float) and 0 < rtol < 1):
        raise UserInputError(f"rtol: expected a float in (0, 1), got {rtol!r}")
    P = sum(u.numel() + v.numel() for u, v in zip(U, V))
    ref = U[0] if len(U) else torch.zeros(0, dtype=torch.float64)
    cols: list[Tensor] = []
    dims: list[int] = []
    radius = math.inf
    offset = 0
    for u, v in zip(U, V):
        m, r = u.shape
        n = v.shape[0]
        size = (m + n) * r
        R = torch.cat([u, v])
        kept = 0
        if r >= 2 and R.numel():
            A, sig, Bt = torch.linalg.svd(R, full_matrices=False)
            k = int(sig.numel())
            a_idx, b_idx = torch.triu_indices(r, r, offset=1, device=R.device)
            sa = torch.cat([sig, sig.new_zeros(r - k)])
            # hypot, not sqrt(a^2 + b^2): squares of singular values near 1e-160 underflow
            s_ab = torch.hypot(sa[a_idx], sa[b_idx]) / math.sqrt(2.0)
            top = float(s_ab.max()) if s_ab.numel() else 0.0
            keep = s_ab > rtol * top if top > 0 else torch.zeros_like(s_ab, dtype=torch.bool)
            # A Sigma E_ab B^T: column b of A Sigma goes to B's row a, and minus column a to row b.
            AS = A * sig  # (m + n, k)
            B = Bt.T  # (r, k); rows beyond k do not exist: r <= m + n is not required, pad
            for a, b, s, ok in zip(a_idx.tolist(), b_idx.tolist(), s_ab.tolist(), keep.tolist()):
                if not ok:
                    continue
                ca = AS[:, a] if a < k else AS.new_zeros(m + n)
                cb = AS[:, b] if b < k else AS.new_zeros(m + n)
                ra = B[:, a] if a < k else B.new_zeros(r)
                rb = B[:, b] if b < k else B.new_zeros(r)
                img = (torch.outer(ca, rb) - torch.outer(cb, ra)) / math.sqrt(2.0)
                vec = torch.zeros(P, dtype=R.dtype, device=R.device)
                vec[offset : offset + m * r] = img[:m].reshape(-1)
                vec[offset + m * r : offset + size] = img[m:].reshape(-1)
                cols.append(vec / s)
                radius = min(radius, s)
                kept += 1
        dims.append(kept)
        offset += size
    basis = torch.stack(cols, dim=1) if cols else torch.zeros(P, 0, dtype=ref.dtype, device=ref.device)
    return GaugeBasis(basis=basis, dims=tuple(dims), radius=radius)


def project_out(x: Tensor, basis: Tensor) -> Tensor:
    """``x`` minus its component in the span of the orthonormal columns of ``basis``."""
    if basis.shape[1] == 0:
        return x
    return x - basis @ (basis.T @ x)
