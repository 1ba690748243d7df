r"""Synthetic NTK-regime problems with known structure.

Three families, all seeded (a ``torch.Generator`` built from ``seed``), float64 by default:

* :func:`gaussian_problem` -- i.i.d. Gaussian Jacobian with entries ``N(0, 1/s)``,
  ``s = max_j (m_j + n_j)/2``, so that gradients have operator norm O(1) at every size.
* :func:`teacher_problem` -- a planted low-rank teacher :math:`D^\star` of rank ``teacher_rank``;
  labels come from :math:`f_0 + J \operatorname{vec} D^\star` (plus noise for squared loss, the
  arg-max or a Bernoulli draw for classification losses).
* :func:`random_features_problem` -- the exact Jacobian of a tiny random network
  :math:`f(X) = C\, \operatorname{mean}_t \tanh(W x_t)` with respect to :math:`W`: every row of
  ``J`` is a sum of ``T`` rank-one matrices, the structure of per-example gradients of a linear
  layer seeing ``T`` tokens.

Labels follow :mod:`landscapes.losses`: squared (``y`` real ``(N, K)``), logistic (``K = 1``, 0/1
labels), cross_entropy (``K >= 2``, class indices).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from landscapes.losses import get_loss
from landscapes.problem import Problem
from theory.errors import UserInputError

__all__ = ["gaussian_problem", "teacher_problem", "random_features_problem"]


def _check_sizes(K: int, N: int, blocks: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    for name, v in (("K", K), ("N", N)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise UserInputError(f"{name}: expected a positive int, got {v!r}")
    if isinstance(blocks, tuple) and len(blocks) == 2 and all(isinstance(b, int) for b in blocks):
        blocks = [blocks]  # type: ignore[list-item]
    out = []
    for j, b in enumerate(blocks):
        if len(b) != 2 or not all(isinstance(s, int) and s >= 1 for s in b):
            raise UserInputError(f"blocks[{j}]: expected a pair of positive ints (m, n), got {b!r}")
        out.append((int(b[0]), int(b[1])))
    if not out:
        raise UserInputError("blocks: expected at least one (m, n) shape, got none")
    return out


def _gaussian_jacobian(
    rows: int, shapes: list[tuple[int, int]], gen: torch.Generator, dtype: torch.dtype
) -> Tensor:
    """Entries ``N(0, 1/s)``, ``s = max_j (m_j + n_j)/2``: ``||mat(J^T g)||_op`` is O(||g||) at every size."""
    p = sum(m * n for m, n in shapes)
    s = max((m + n) / 2 for m, n in shapes)
    return torch.randn(rows, p, generator=gen, dtype=dtype) / math.sqrt(s)


def _labels(loss: str, z: Tensor, gen: torch.Generator, noise: float) -> Tensor:
    """Labels from teacher outputs ``z`` (shape ``(N, K)``)."""
    name = get_loss(loss).name
    if name == "squared":
        return z + noise * torch.randn(z.shape, generator=gen, dtype=z.dtype)
    if name == "logistic":
        p = torch.sigmoid(z[:, 0] / max(noise, 1e-12)) if noise > 0 else (z[:, 0] > 0).to(z.dtype)
        return (torch.rand(p.shape, generator=gen, dtype=z.dtype) < p).long()
    # cross-entropy: Gumbel-max sampling at temperature `noise` (argmax when noise == 0)
    if noise > 0:
        u = torch.rand(z.shape, generator=gen, dtype=z.dtype).clamp_min(1e-300)
        z = z / noise - torch.log(-torch.log(u))
    return z.argmax(dim=1)


def gaussian_problem(
    *,
    K: int,
    N: int,
    blocks: Sequence[tuple[int, int]],
    lam: float | Sequence[float],
    loss: str = "squared",
    seed: int = 0,
    f0_scale: float = 0.0,
    noise: float = 1.0,
    jacobian_rank: int | None = None,
    dtype: torch.dtype = torch.float64,
) -> Problem:
    """Gaussian Jacobian with random labels (no planted structure).

    ``J`` has i.i.d. ``N(0, 1/s)`` entries, ``s = max_j (m_j + n_j)/2``, so the gradient at zero
    has operator norm of order ``sqrt(K/N)`` whatever the sizes. ``f0`` is ``f0_scale`` times a
    standard Gaussian. For squared loss ``y = noise * N(0, 1)``; for classification, uniformly
    random labels.

    ``jacobian_rank = rho`` makes ``J = A B / sqrt(rho)`` with Gaussian ``A`` (``KN x rho``) and
    ``B`` (``rho x p``): the per-example gradients share a ``rho``-dimensional span (each element
    a full-rank matrix).  With ``rho`` well below ``N`` cross-entropy is not separable, so FT has
    a minimizer, while that minimizer still has full rank before reduction.
    """
    shapes = _check_sizes(K, N, blocks)
    gen = torch.Generator().manual_seed(seed)
    J = _gaussian_jacobian(K * N, shapes, gen, dtype)
    if jacobian_rank is not None:
        if isinstance(jacobian_rank, bool) or not isinstance(jacobian_rank, int) or jacobian_rank < 1:
            raise UserInputError(f"jacobian_rank: expected None or a positive int, got {jacobian_rank!r}")
        A = torch.randn(K * N, jacobian_rank, generator=gen, dtype=dtype)
        J = A @ J[:jacobian_rank] / math.sqrt(jacobian_rank) if jacobian_rank <= K * N else J
    f0 = f0_scale * torch.randn(N, K, generator=gen, dtype=dtype)
    if get_loss(loss).name == "squared":
        y = noise * torch.randn(N, K, generator=gen, dtype=dtype)
    else:
        y = _labels(loss, torch.randn(N, K, generator=gen, dtype=dtype), gen, 0.0)
    return Problem(
        J,
        f0,
        y,
        loss=loss,
        blocks=shapes,
        lam=lam,
        seed=seed,
        name=f"gaussian-{loss}",
        meta={"generator": "gaussian_problem"},
    )


def teacher_problem(
    *,
    K: int,
    N: int,
    blocks: Sequence[tuple[int, int]],
    lam: float | Sequence[float],
    teacher_rank: int = 1,
    loss: str = "squared",
    seed: int = 0,
    noise: float = 0.1,
    dtype: torch.dtype = torch.float64,
) -> Problem:
    r"""Gaussian Jacobian and labels generated by a planted rank-``teacher_rank`` weight :math:`D^\star`.

    :math:`D^\star_j = A_j B_j^\top` with Gaussian factors, scaled to Frobenius norm 3; the
    teacher's predictions are :math:`z^\star = f_0 + J \operatorname{vec} D^\star` (with
    :math:`f_0 = 0`). ``meta['teacher']`` keeps :math:`D^\star` (a tuple of tensors).
    """
    shapes = _check_sizes(K, N, blocks)
    if isinstance(teacher_rank, bool) or not isinstance(teacher_rank, int) or teacher_rank < 1:
        raise UserInputError(f"teacher_rank: expected a positive int, got {teacher_rank!r}")
    gen = torch.Generator().manual_seed(seed)
    J = _gaussian_jacobian(K * N, shapes, gen, dtype)
    Ds = []
    for m, n in shapes:
        k = min(teacher_rank, m, n)
        A = torch.randn(m, k, generator=gen, dtype=dtype)
        B = torch.randn(n, k, generator=gen, dtype=dtype)
        D = A @ B.T
        Ds.append(D / torch.linalg.matrix_norm(D) * 3.0)
    f0 = torch.zeros(N, K, dtype=dtype)
    z = f0 + (J @ torch.cat([D.reshape(-1) for D in Ds])).reshape(N, K)
    y = _labels(loss, z, gen, noise)
    return Problem(
        J,
        f0,
        y,
        loss=loss,
        blocks=shapes,
        lam=lam,
        seed=seed,
        name=f"teacher-{loss}",
        meta={"generator": "teacher_problem", "teacher_rank": teacher_rank, "teacher": tuple(Ds)},
    )


def random_features_problem(
    *,
    K: int,
    N: int,
    m: int,
    n: int,
    lam: float | Sequence[float],
    tokens: int = 4,
    loss: str = "cross_entropy",
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> Problem:
    r"""Jacobian of a tiny random network with respect to its hidden weight.

    Inputs :math:`X_i \in \mathbb{R}^{T \times n}` (``T = tokens``, correlated Gaussian rows),
    hidden weight :math:`W_0 \in \mathbb{R}^{m \times n}` and head :math:`C \in \mathbb{R}^{K\times m}`:

    .. math:: f(X_i; W) = C \cdot \frac1T \sum_t \tanh(W x_{it}),

    .. math:: \frac{\partial f_k}{\partial W}
              = \frac1T \sum_t \big(C_k \odot \tanh'(W_0 x_{it})\big)\, x_{it}^\top.

    ``f0`` is the network output at :math:`W_0`; labels come from a random teacher direction
    (Gaussian, rank 1) added to :math:`W_0`, passed through the same linearization.
    """
    shapes = _check_sizes(K, N, [(m, n)])
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise UserInputError(f"tokens: expected a positive int, got {tokens!r}")
    gen = torch.Generator().manual_seed(seed)
    mix = torch.randn(n, n, generator=gen, dtype=dtype) / math.sqrt(n)
    X = torch.randn(N, tokens, n, generator=gen, dtype=dtype) @ (torch.eye(n, dtype=dtype) + mix)
    W0 = torch.randn(m, n, generator=gen, dtype=dtype) / math.sqrt(n)
    C = torch.randn(K, m, generator=gen, dtype=dtype) / math.sqrt(m)
    pre = X @ W0.T  # (N, T, m)
    f0 = torch.tanh(pre).mean(dim=1) @ C.T  # (N, K)
    dact = 1.0 - torch.tanh(pre) ** 2  # (N, T, m)
    # G[i, k] = (1/T) sum_t (C_k * dact[i, t]) x_{it}^T  -> (N, K, m, n)
    G = torch.einsum("km,ntm,ntj->nkmj", C, dact, X) / tokens
    J = G.reshape(K * N, m * n)
    a = torch.randn(m, generator=gen, dtype=dtype)
    b = torch.randn(n, generator=gen, dtype=dtype)
    Dstar = torch.outer(a, b) / (a.norm() * b.norm()) * 3.0
    z = f0 + (J @ Dstar.reshape(-1)).reshape(N, K)
    y = _labels(loss, z, gen, 0.0 if get_loss(loss).name != "squared" else 0.1)
    return Problem(
        J,
        f0,
        y,
        loss=loss,
        blocks=shapes,
        lam=lam,
        seed=seed,
        name=f"features-{loss}",
        meta={"generator": "random_features_problem", "tokens": tokens},
    )
