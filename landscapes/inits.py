r"""LoRA initializations, in PEFT's convention, with the weight offset that keeps outputs unchanged.

**Convention.**  An adapter on block ``j`` (weight :math:`W_j`, shape ``m x n`` = ``d_out x d_in``)
has factors :math:`B_j \in \mathbb{R}^{m \times r}`, :math:`A_j \in \mathbb{R}^{r \times n}` and the
scale :math:`s = \alpha / r` (rsLoRA: :math:`\alpha / \sqrt r`).  An init that starts with
:math:`B_0 A_0 \ne 0` moves the base weight, :math:`W_j \leftarrow W_j - O_j` with the offset
:math:`O_j = s B_{0,j} A_{0,j}` stored explicitly, so that the model is unchanged at step 0:

.. math:: \Delta W_j(B, A) = s B_j A_j - O_j, \qquad \Delta W_j(B_0, A_0) = 0.

On a linearized problem the offset is a shift of the pretrained outputs,
:math:`f_0 \to f_0 - J \operatorname{vec}(O)` (:func:`shifted_problem`), and the adapter is the
LoRA point :math:`U = \sqrt s\, B`, :math:`V = \sqrt s\, A^\top` of that shifted problem
(:meth:`LoRAInit.point`): ``U V^T = s B A``.  Weight decay ``lam/2 (||U||^2 + ||V||^2)`` on that
point is :math:`\tfrac{\lambda s}{2}(\|B\|^2 + \|A\|^2)`.

**Inits** (:data:`INIT_NAMES`):

* ``"vanilla"`` -- PEFT's (and loralib's) default: :math:`B_0 = 0`, :math:`A_0` Kaiming-uniform
  with :math:`a = \sqrt 5`, i.e. entries :math:`\mathcal U(-1/\sqrt n, 1/\sqrt n)`.
* ``"gaussian"`` -- PEFT's ``init_lora_weights="gaussian"``: :math:`B_0 = 0`,
  :math:`A_0 \sim \mathcal N(0, 1/r^2)`.
* ``"loraga"`` -- the LoRA-GA reference code [WYL24]: with :math:`G = U \Sigma V^\top` the gradient of
  the full weight at :math:`W_0`, direction ``"ArB2r"`` takes :math:`A_0 = c\, V_{[:, 1..r]}^\top`,
  :math:`B_0 = c\, U_{[:, r+1..2r]}`, the "stable" scale :math:`c = m^{1/4} / \sqrt\gamma` on both
  (``gamma = 16``).  Then the first SGD step changes the weight by
  :math:`-\mathrm{lr}\, s^2 (G A_0^\top A_0 + B_0 B_0^\top G) = -\mathrm{lr}\, s^2 c^2 G_{[2r]}`
  to first order, :math:`G_{[2r]}` the best rank-``2r`` approximation of ``G``.  Directions
  ``"A2rBr"`` (A from ``r+1..2r``, B from ``1..r``), ``"ArBr"`` (A from the even, B from the odd
  positions ``2, 4, ..`` / ``1, 3, ..`` in 1-based order) and ``"random"`` (a seeded random split
  of ``1..2r``) give the same first step.
* ``"loraga-peft"`` -- LoRA-GA as PEFT (0.21) implements it: :math:`B_0` is multiplied by its
  singular values, :math:`B_0 = c\, U_{[:, B]} \Sigma_B`, :math:`A_0 = V_{[:, A]}^\top`, the
  stable scale on ``B`` only; its ``"random"`` direction uses one index set for both factors.
  The first step is then not proportional to :math:`G_{[2r]}`.
* ``"pissa"`` -- principal singular vectors of the base weight (PiSSA):
  :math:`A_0 = \operatorname{diag}(\sqrt{\sigma/s}) V_r^\top`,
  :math:`B_0 = U_r \operatorname{diag}(\sqrt{\sigma/s})`, so that :math:`O = W_{0,[r]}`.  Needs the
  base weights (``weights=``).

The gradient ``G`` of a linearized problem is :math:`S_j(0) = \operatorname{mat}_j(J^\top \nabla_z
\ell / N)` (:func:`full_gradient`), which is also the exact gradient of the real model at
:math:`W_0`; :func:`sampled_gradient` is the reference code's estimate (64 batches of 2 examples,
each example once: the full gradient when ``N <= 128``).  The SVD is exact (``svd="full"``) or
randomized like the reference code (``svd="randomized"``: ``torch.svd_lowrank`` with
``q = min(4r, m, n)``, ``niter = 4``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import torch
from torch import Tensor

from landscapes.lora import LoRAPoint
from landscapes.problem import Blocks, Problem, check_block_matrices
from theory.errors import UserInputError

__all__ = [
    "INIT_NAMES",
    "DIRECTIONS",
    "LoRAInit",
    "lora_scale",
    "init_lora",
    "full_gradient",
    "sampled_gradient",
    "gradient_svd",
    "randomized_svd",
    "gradient_spread",
    "direction_indices",
    "shifted_problem",
    "first_step_change",
    "synthetic_weights",
    "planted_gradient_problem",
]

InitName = Literal["vanilla", "gaussian", "loraga", "loraga-peft", "pissa"]
INIT_NAMES: tuple[str, ...] = ("vanilla", "gaussian", "loraga", "loraga-peft", "pissa")
Direction = Literal["ArB2r", "A2rBr", "ArBr", "random"]
DIRECTIONS: tuple[str, ...] = ("ArB2r", "A2rBr", "ArBr", "random")


@dataclass(frozen=True)
class LoRAInit:
    """An initialized adapter: factors, scale and weight offset, one entry per block.

    Attributes
    ----------
    name
        The init (one of :data:`INIT_NAMES`).
    B, A
        ``B_j`` (``m_j x r``) and ``A_j`` (``r x n_j``).
    scale
        :math:`s` (``alpha / r``, or ``alpha / sqrt(r)`` with rsLoRA).
    offset
        :math:`O_j = s B_{0,j} A_{0,j}`, subtracted from the base weight (zeros for the zero-B inits).
    details
        How it was made: ``alpha``, ``rslora``, ``direction``, ``gamma``, the stable scale ``c``,
        the SVD route, the singular values used, the gradient's source.
    """

    name: str
    B: Blocks
    A: Blocks
    scale: float
    offset: Blocks
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "details", MappingProxyType(dict(self.details)))

    @property
    def rank(self) -> int:
        """The LoRA rank ``r`` (columns of ``B``)."""
        return int(self.B[0].shape[1])

    def point(self) -> LoRAPoint:
        r"""The LoRA point :math:`U_j = \sqrt s B_j`, :math:`V_j = \sqrt s A_j^\top` (``U V^T = s B A``)."""
        root = math.sqrt(self.scale)
        return LoRAPoint(tuple(root * b for b in self.B), tuple(root * a.T for a in self.A))

    def delta(self, B: Sequence[Tensor] | None = None, A: Sequence[Tensor] | None = None) -> Blocks:
        r"""The weight change :math:`s B_j A_j - O_j` at ``(B, A)`` (default: the init: 0 up to round-off)."""
        B = self.B if B is None else B
        A = self.A if A is None else A
        return tuple(self.scale * (b @ a) - o for b, a, o in zip(B, A, self.offset))


def lora_scale(alpha: float, r: int, *, rslora: bool = False) -> float:
    r"""PEFT's adapter scale: :math:`\alpha / r`, or :math:`\alpha / \sqrt r` with rsLoRA."""
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise UserInputError(f"r: expected a positive int, got {r!r}")
    _check_positive_finite("alpha", alpha)
    return float(alpha) / (math.sqrt(r) if rslora else r)


def _check_positive_finite(name: str, value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (value > 0 and math.isfinite(value))
    ):
        raise UserInputError(f"{name}: expected a positive finite number, got {value!r}")


def full_gradient(problem: Problem) -> Blocks:
    r"""The full-batch gradient :math:`G_j = \nabla_{W_j} L(W_0) = S_j(0)` of every block."""
    return problem.evaluate(problem.zeros()).S


def sampled_gradient(
    problem: Problem, *, batch_size: int = 2, batches: int = 64, generator: torch.Generator
) -> Blocks:
    r"""The reference code's estimate of ``G``: mini-batch gradients over the first examples of a shuffle.

    The reference code averages ``batches`` mini-batches of ``batch_size`` examples taken in order
    from the training set (each example once).  Here the order is a seeded permutation
    (``generator``) and the batches take its first ``min(N, batch_size * batches)`` examples, in
    consecutive batches (the last one may be smaller); the estimate is the mean of the batch
    gradients weighted by batch size, i.e. the gradient of the mean risk over those examples.
    With ``N <= batch_size * batches`` it is the full gradient, and :func:`full_gradient` is returned
    (so the estimate does not depend on the seed, bit for bit).  Needs a dense ``J``.
    """
    for name, v in (("batch_size", batch_size), ("batches", batches)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise UserInputError(f"{name}: expected a positive int, got {v!r}")
    if batch_size > problem.N:
        raise UserInputError(f"batch_size: expected at most N = {problem.N}, got {batch_size}")
    used = min(problem.N, batch_size * batches)
    if used == problem.N:
        return full_gradient(problem)  # every example once: the full gradient (in its own summation order)
    order = torch.randperm(problem.N, generator=generator)[:used].to(problem.device)
    acc = [torch.zeros(m, n, dtype=problem.dtype, device=problem.device) for m, n in problem.blocks]
    zero = problem.zeros()
    for start in range(0, used, batch_size):
        idx = order[start : start + batch_size]
        S = problem.subset(idx).evaluate(zero).S
        for a, s in zip(acc, S):
            a.add_(s, alpha=idx.numel() / used)
    return tuple(acc)


def gradient_spread(problem: Problem, *, chunk: int = 64, scale: float = 1.0) -> tuple[dict[str, float], ...]:
    r"""Per block, the spread of the per-example gradients :math:`g_{ij}` about their mean :math:`G_j`.

    :math:`g_{ij} = \operatorname{mat}_j(J_i^\top \nabla_z \ell(z_i, y_i))` is example ``i``'s
    gradient at :math:`W_0` and :math:`G_j` their mean (:func:`full_gradient`).  Keys: ``"fro2"``
    :math:`S_j^2 = \frac1N\sum_i \|g_{ij} - G_j\|_F^2`; ``"left"``, ``"right"`` the spectral norms of
    :math:`\frac1N\sum_i (g_{ij} - G_j)(g_{ij} - G_j)^\top` and of
    :math:`\frac1N\sum_i (g_{ij} - G_j)^\top(g_{ij} - G_j)`; ``"max2"``
    :math:`\max_i \|g_{ij} - G_j\|_2`.  The mean of ``n`` examples drawn without replacement
    (:func:`sampled_gradient`) has :math:`\mathbb E \|\hat G_j - G_j\|_F^2 = \frac{N - n}{n (N - 1)}
    S_j^2` (the finite-population variance of a sample mean; Cochran, *Sampling Techniques*, 3rd
    ed., Thm. 2.2, coordinate-wise); the other three are the matrix-Bernstein parameters.  Needs a
    dense ``J``; ``chunk`` examples at a time.  ``scale``: the spread of :math:`g_{ij} /` ``scale``
    (a power of two near :math:`\max|G|` keeps the squares finite at extreme scales).
    """
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise UserInputError(f"chunk: expected a positive int, got {chunk!r}")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < math.inf:
        raise UserInputError(f"scale: expected a positive finite number, got {scale!r}")
    from landscapes.operators import DenseOperator

    if not isinstance(problem.J, DenseOperator):
        raise UserInputError(
            "problem: per-example gradients need a dense J (a stored matrix), got an operator"
        )
    ev = problem.evaluate(problem.zeros())
    resid = ev.g * problem.N  # per-example dl_i/dz_i, shape (N, K)
    M = problem.J.matrix
    G = torch.cat([g.reshape(-1) for g in ev.S])
    bounds = [0]
    for m, n in problem.blocks:
        bounds.append(bounds[-1] + m * n)
    fro = [0.0 for _ in problem.blocks]
    mx = [0.0 for _ in problem.blocks]
    left = [torch.zeros(m, m, dtype=problem.dtype, device=problem.device) for m, _ in problem.blocks]
    right = [torch.zeros(n, n, dtype=problem.dtype, device=problem.device) for _, n in problem.blocks]
    for start in range(0, problem.N, chunk):
        stop = min(problem.N, start + chunk)
        Jc = M[start * problem.K : stop * problem.K].reshape(stop - start, problem.K, -1)
        per = (torch.einsum("nk,nkp->np", resid[start:stop], Jc) - G) / scale  # (g_i - G) / scale, flattened
        for j, (m, n) in enumerate(problem.blocks):
            D = per[:, bounds[j] : bounds[j + 1]].reshape(-1, m, n)
            fro[j] += float(D.pow(2).sum())
            left[j] += torch.einsum("bij,bkj->ik", D, D)
            right[j] += torch.einsum("bji,bjk->ik", D, D)
            mx[j] = max(mx[j], float(torch.linalg.matrix_norm(D, ord=2).max()))
    N = problem.N
    return tuple(
        {
            "fro2": fro[j] / N,
            "left": float(torch.linalg.matrix_norm(left[j] / N, ord=2)),
            "right": float(torch.linalg.matrix_norm(right[j] / N, ord=2)),
            "max2": mx[j],
        }
        for j in range(len(problem.blocks))
    )


def gradient_svd(
    G: Tensor,
    k: int,
    *,
    svd: Literal["full", "randomized"] = "full",
    niter: int = 4,
    sketch: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Top-``k`` singular triplets :math:`(U_k, \sigma_k, V_k)` of ``G``, ``U_k`` of shape ``m x k``.

    ``"full"``: ``torch.linalg.svd`` (exact).  ``"randomized"``: :func:`randomized_svd` on a sketch
    of ``q = min(sketch, m, n)`` columns (default ``sketch = 2k``: with ``k = 2r`` the reference
    code's ``q = 4r``) and ``niter`` power iterations, seeded through ``generator`` (torch's global
    generator is left as it was).
    """
    if G.ndim != 2:
        raise UserInputError(f"G: expected a matrix, got shape {tuple(G.shape)}")
    m, n = G.shape
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= min(m, n):
        raise UserInputError(f"k: expected an int in [1, min(m, n)] = [1, {min(m, n)}], got {k!r}")
    if svd == "full":
        U, s, Vh = torch.linalg.svd(G, full_matrices=False)
        return U[:, :k], s[:k], Vh[:k].T
    if svd != "randomized":
        raise UserInputError(f"svd: expected 'full' or 'randomized', got {svd!r}")
    U, s, V = randomized_svd(
        G, min(2 * k if sketch is None else sketch, m, n), niter=niter, generator=generator
    )
    if U.shape[1] < k:
        raise UserInputError(f"sketch: expected at least k = {k} columns, got {U.shape[1]}")
    return U[:, :k], s[:k], V[:, :k]


def randomized_svd(
    G: Tensor, q: int, *, niter: int = 4, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    r"""All ``q`` triplets of ``torch.svd_lowrank(G, q, niter)``: the exact SVD of :math:`H = Q Q^\top G`.

    (For ``m < n`` ``torch.svd_lowrank`` sketches :math:`G^\top`: then :math:`H = G Q Q^\top`, the
    same statements with the sides exchanged.)  ``G`` is rescaled by a power of two near
    :math:`\max|G|` first (exact; the power iterations stay finite at extreme scales).

    ``Q`` is an orthonormal basis of the range of :math:`(G G^\top)^{\text{niter}} G\,\Omega`,
    :math:`\Omega` a Gaussian ``n x q`` test matrix (subspace iteration, Halko, Martinsson and
    Tropp 2011, Alg. 4.4), seeded through ``generator`` without touching torch's global generator.
    :math:`\|G - H\|_2 = \|(I - QQ^\top) G\|_2` is the sketch's error (their Sec. 10).
    """
    if isinstance(q, bool) or not isinstance(q, int) or not 1 <= q <= min(G.shape):
        raise UserInputError(f"q: expected an int in [1, min(m, n)] = [1, {min(G.shape)}], got {q!r}")
    seed = int(torch.randint(0, 2**62, (1,), generator=generator)) if generator is not None else None
    with torch.random.fork_rng(devices=[] if G.device.type == "cpu" else [G.device]):
        if seed is not None:
            torch.manual_seed(seed)
        # Exact rescaling by a power of two near max |G|: the power iterations' (G G^T)^niter G
        # neither overflow nor underflow at extreme scales (the same bits at ordinary ones).
        gmax = float(G.abs().max()) if G.numel() else 0.0
        gs = math.ldexp(1.0, math.frexp(gmax)[1]) if 0 < gmax < math.inf else 1.0
        U, s, V = torch.svd_lowrank(G / gs, q=q, niter=niter)
    return U, s * gs, V


def direction_indices(
    direction: str, r: int, *, generator: torch.Generator | None = None, variant: str = "reference"
) -> tuple[list[int], list[int]]:
    """0-based singular indices of ``A`` and of ``B`` for a LoRA-GA direction.

    ``variant="reference"`` splits ``0..2r-1`` between the factors; ``"peft"`` reproduces PEFT's
    ``"random"`` direction, which gives both factors the same ``r`` indices.
    """
    if direction == "ArB2r":
        return list(range(r)), list(range(r, 2 * r))
    if direction == "A2rBr":
        return list(range(r, 2 * r)), list(range(r))
    if direction == "ArBr":
        return list(range(1, 2 * r, 2)), list(range(0, 2 * r, 2))
    if direction == "random":
        perm = torch.randperm(2 * r, generator=generator).tolist()
        if variant == "peft":
            return perm[:r], perm[:r]
        return perm[:r], perm[r:]
    raise UserInputError(f"direction: expected one of {DIRECTIONS}, got {direction!r}")


def _check_blocks(name: str, X: Sequence[Tensor] | None, problem: Problem) -> Blocks:
    """One finite matrix per block of ``problem`` (any dtype and device), cast to the problem's."""
    checked = check_block_matrices(name, X, problem.blocks)
    return tuple(x.to(dtype=problem.dtype, device=problem.device) for x in checked)


def init_lora(
    problem: Problem,
    name: str,
    *,
    rank: int,
    alpha: float | None = None,
    rslora: bool = False,
    seed: int = 0,
    gradient: Sequence[Tensor] | None = None,
    weights: Sequence[Tensor] | None = None,
    direction: str = "ArB2r",
    gamma: float = 16.0,
    svd: Literal["full", "randomized"] = "full",
    niter: int = 4,
    sketch: int | None = None,
) -> LoRAInit:
    r"""Initialize a rank-``rank`` adapter on every block of ``problem`` by the init ``name``.

    Parameters
    ----------
    problem
        The (linearized) problem: its blocks give the shapes, dtype and device.
    name
        One of :data:`INIT_NAMES`.
    rank
        The LoRA rank ``r`` (``2 r <= min(m_j, n_j)`` for the LoRA-GA inits).
    alpha, rslora
        The scale :math:`s = \alpha/r` (rsLoRA: :math:`\alpha/\sqrt r`); ``alpha`` defaults to ``2 r``
        (``s = 2``; rsLoRA: ``s = 2 sqrt(r)``).
    seed
        Seeds the random factors (``vanilla``, ``gaussian``), the randomized SVD and the
        ``"random"`` direction.
    gradient
        ``G_j`` for the LoRA-GA inits (default: :func:`full_gradient`).
    weights
        The base weights :math:`W_{0,j}` for ``pissa`` (a linearized problem does not carry them:
        use the model's, or :func:`synthetic_weights`).
    direction, gamma
        LoRA-GA's component split and stable-scale parameter :math:`c = m^{1/4}/\sqrt\gamma`.
    svd, niter, sketch
        Exact or randomized SVD (see :func:`gradient_svd`); ``sketch`` is the randomized SVD's
        ``q`` (default ``4 r`` for LoRA-GA, ``2 r`` for PiSSA).  A randomized LoRA-GA init records
        :math:`\|G - Q Q^\top G\|_2` per block in ``details["sketch_residual"]``.
    """
    alpha, s = _checked_scale(problem, name, rank, alpha, rslora, direction, gamma, svd, niter, sketch, seed)
    gen = torch.Generator().manual_seed(seed)
    details: dict[str, Any] = {"alpha": float(alpha), "rslora": bool(rslora), "seed": seed}
    if name in ("vanilla", "gaussian"):
        return _zero_b_init(problem, name, rank, s, gen, details)
    if name == "pissa":
        W = _check_blocks("weights", weights, problem)
        return _pissa_init(problem, W, rank, s, gen, details, svd=svd, niter=niter, sketch=sketch)
    G = _check_blocks("gradient", gradient, problem) if gradient is not None else full_gradient(problem)
    source = "given" if gradient is not None else "full"
    return _loraga_init(problem, name, G, source, rank, s, gen, details, direction, gamma, svd, niter, sketch)


def _checked_scale(
    problem: Problem,
    name: str,
    rank: int,
    alpha: float | None,
    rslora: bool,
    direction: str,
    gamma: float,
    svd: str,
    niter: int,
    sketch: int | None,
    seed: int,
) -> tuple[float, float]:
    """Validate :func:`init_lora`'s options (in its order); return ``alpha`` (default ``2 r``) and ``s``."""
    if name not in INIT_NAMES:
        raise UserInputError(f"name: expected one of {INIT_NAMES}, got {name!r}")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise UserInputError(f"rank: expected a positive int (rank >= 1), got {rank!r}")
    r = rank
    if alpha is None:
        alpha = 2.0 * r
    s = lora_scale(alpha, r, rslora=rslora)
    if direction not in DIRECTIONS:
        raise UserInputError(f"direction: expected one of {DIRECTIONS}, got {direction!r}")
    _check_positive_finite("gamma", gamma)
    if svd not in ("full", "randomized"):
        raise UserInputError(f"svd: expected 'full' or 'randomized', got {svd!r}")
    if isinstance(niter, bool) or not isinstance(niter, int) or niter < 0:
        raise UserInputError(f"niter: expected an int >= 0, got {niter!r}")
    if sketch is not None and (isinstance(sketch, bool) or not isinstance(sketch, int) or sketch < 1):
        raise UserInputError(f"sketch: expected None or a positive int, got {sketch!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise UserInputError(f"seed: expected an int, got {seed!r}")
    for j, (m, n) in enumerate(problem.blocks):
        if r > min(m, n):
            raise UserInputError(f"rank: expected r <= min(m, n) = {min(m, n)} on block {j}, got {r}")
    return alpha, s


def _zero_b_init(
    problem: Problem, name: str, r: int, s: float, gen: torch.Generator, details: dict[str, Any]
) -> LoRAInit:
    r"""``vanilla`` (PEFT's Kaiming-uniform ``A``) or ``gaussian`` (:math:`A \sim N(0, 1/r^2)`), ``B = 0``."""
    dt, dev = problem.dtype, problem.device
    B: list[Tensor] = []
    A: list[Tensor] = []
    for m, n in problem.blocks:
        if name == "vanilla":
            # kaiming_uniform_(a=sqrt(5)) on an (r, n) weight: bound sqrt(6 / ((1 + a^2) n)) = 1/sqrt(n).
            a0 = torch.empty(r, n, dtype=torch.float64)
            torch.nn.init.kaiming_uniform_(a0, a=math.sqrt(5), generator=gen)
        else:
            a0 = torch.randn(r, n, generator=gen, dtype=torch.float64) / r
        A.append(a0.to(dtype=dt, device=dev))
        B.append(torch.zeros(m, r, dtype=dt, device=dev))
    offset = tuple(torch.zeros(m, n, dtype=dt, device=dev) for m, n in problem.blocks)
    return LoRAInit(name, tuple(B), tuple(A), s, offset, details)


def _pissa_init(
    problem: Problem,
    W: Blocks,
    r: int,
    s: float,
    gen: torch.Generator,
    details: dict[str, Any],
    *,
    svd: Literal["full", "randomized"],
    niter: int,
    sketch: int | None,
) -> LoRAInit:
    r"""PiSSA: :math:`B = U \sqrt{\Sigma / s}`, :math:`A = \sqrt{\Sigma / s} V^\top` (top-``r`` SVD of ``W``).

    The offset :math:`s B A` is the rank-``r`` part of ``W`` the adapter takes over.
    """
    B: list[Tensor] = []
    A: list[Tensor] = []
    svals = []
    for Wj in W:
        U, sv, V = gradient_svd(Wj, r, svd=svd, niter=niter, sketch=sketch, generator=gen)
        root = (sv / s).sqrt()
        B.append(U * root)
        A.append(root[:, None] * V.T)
        svals.append(sv.tolist())
    details.update(svd=svd, singular_values=svals)
    offset = tuple(s * (b @ a) for b, a in zip(B, A))
    return LoRAInit("pissa", tuple(B), tuple(A), s, offset, details)


def _loraga_init(
    problem: Problem,
    name: str,
    G: Blocks,
    source: str,
    r: int,
    s: float,
    gen: torch.Generator,
    details: dict[str, Any],
    direction: str,
    gamma: float,
    svd: Literal["full", "randomized"],
    niter: int,
    sketch: int | None,
) -> LoRAInit:
    r"""LoRA-GA (reference or PEFT variant) from the top-``2 r`` SVD of each gradient :math:`G_j`.

    With the stable scale :math:`c = m^{1/4}/\sqrt\gamma`: reference :math:`A = c V_{:,I_A}^\top`,
    :math:`B = c U_{:,I_B}`; PEFT :math:`A = V_{:,I_A}^\top`, :math:`B = c\, U_{:,I_B} \Sigma_{I_B}`
    (indices from :func:`direction_indices`); the offset is :math:`s B A`.  ``source`` says where
    ``G`` came from (``"given"`` or ``"full"``).
    """
    variant = "peft" if name == "loraga-peft" else "reference"
    ia, ib = direction_indices(direction, r, generator=gen, variant=variant)
    B: list[Tensor] = []
    A: list[Tensor] = []
    svals, cs = [], []
    residuals: list[float] = []
    for j, ((m, n), Gj) in enumerate(zip(problem.blocks, G)):
        if 2 * r > min(m, n):
            raise UserInputError(
                f"rank: LoRA-GA needs 2 r <= min(m, n) = {min(m, n)} on block {j}, got r = {r}"
            )
        if svd == "randomized":
            q = min(4 * r if sketch is None else sketch, m, n)
            if q < 2 * r:
                raise UserInputError(f"sketch: LoRA-GA needs q >= 2 r = {2 * r} columns, got {q}")
            Uq, sq, Vq = randomized_svd(Gj, q, niter=niter, generator=gen)
            residuals.append(float(torch.linalg.matrix_norm(Gj - (Uq * sq) @ Vq.T, ord=2)))
            U, sv, V = Uq[:, : 2 * r], sq[: 2 * r], Vq[:, : 2 * r]
        else:
            U, sv, V = gradient_svd(Gj, 2 * r, svd="full")
        c = m**0.25 / math.sqrt(gamma)
        if variant == "reference":
            A.append(c * V[:, ia].T)
            B.append(c * U[:, ib])
        else:
            A.append(V[:, ia].T.clone())
            B.append(c * U[:, ib] * sv[ib])
        svals.append(sv.tolist())
        cs.append(c)
    details.update(
        direction=direction,
        gamma=float(gamma),
        stable_scale=cs,
        svd=svd,
        niter=niter if svd == "randomized" else None,
        sketch=(4 * r if sketch is None else sketch) if svd == "randomized" else None,
        sketch_residual=residuals if svd == "randomized" else None,
        indices_A=ia,
        indices_B=ib,
        singular_values=svals,
        gradient=source,
    )
    offset = tuple(s * (b @ a) for b, a in zip(B, A))
    return LoRAInit(name, tuple(B), tuple(A), s, offset, details)


def shifted_problem(problem: Problem, offset: Sequence[Tensor], *, name: str | None = None) -> Problem:
    r"""The problem an adapter with weight offset ``O`` trains: :math:`f_0 \to f_0 - J \operatorname{vec}(O)`.

    Its LoRA objective at :math:`(U, V) = (\sqrt s B, \sqrt s A^\top)` is
    :math:`L(s B A - O) + \tfrac\lambda2(\|U\|^2 + \|V\|^2)`; ``J``, ``y``, loss, blocks and ``lam``
    are shared with ``problem``.
    """
    off = _check_blocks("offset", offset, problem)
    if all(not bool(o.any()) for o in off):
        return problem
    f0 = problem.f0 - problem.J.matvec(problem.vec(off)).reshape(problem.N, problem.K)
    meta = dict(problem.meta, offset_norms=[float(o.norm()) for o in off])
    return Problem(
        problem.J,
        f0,
        problem.y,
        loss=problem.loss,
        blocks=problem.blocks,
        lam=problem.lam,
        seed=problem.seed,
        name=name or (problem.name + "+offset" if problem.name else "offset"),
        meta=meta,
    )


def first_step_change(init: LoRAInit, G: Sequence[Tensor], lr: float) -> tuple[Blocks, Blocks, Blocks]:
    r"""Weight change of one SGD step (learning rate ``lr``) from ``init``; ``G`` the loss gradient at W0.

    With :math:`\nabla_B = s G A_0^\top`, :math:`\nabla_A = s B_0^\top G`:
    :math:`\Delta W = s(B_1 A_1 - B_0 A_0) = -\mathrm{lr}\, s^2 (G A_0^\top A_0 + B_0 B_0^\top G)
    + \mathrm{lr}^2 s^3\, G A_0^\top B_0^\top G`.  Returns (first-order term, second-order term,
    the change computed from the stepped factors).
    """
    s = init.scale
    first, second, stepped = [], [], []
    for b, a, g in zip(init.B, init.A, G):
        first.append(-lr * s * s * (g @ a.T @ a + b @ (b.T @ g)))
        second.append(lr * lr * s**3 * ((g @ a.T) @ (b.T @ g)))
        b1 = b - lr * s * (g @ a.T)
        a1 = a - lr * s * (b.T @ g)
        stepped.append(s * (b1 @ a1 - b @ a))
    return tuple(first), tuple(second), tuple(stepped)


def synthetic_weights(problem: Problem, *, seed: int = 0, decay: float = 0.5, scale: float = 1.0) -> Blocks:
    r"""Stand-in base weights for synthetic problems: :math:`W_j = P \operatorname{diag}(\sigma) Q^\top`.

    Haar-random ``P``, ``Q`` and :math:`\sigma_i = \text{scale} \cdot (1 + i)^{-\text{decay}}`
    (a power-law spectrum like pretrained weights).  Only ``pissa`` uses base weights.
    """
    gen = torch.Generator().manual_seed(seed)
    out = []
    for m, n in problem.blocks:
        P, _ = torch.linalg.qr(torch.randn(m, m, generator=gen, dtype=torch.float64))
        Q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
        k = min(m, n)
        sig = scale * (1.0 + torch.arange(k, dtype=torch.float64)) ** (-decay)
        out.append(((P[:, :k] * sig) @ Q[:, :k].T).to(dtype=problem.dtype, device=problem.device))
    return tuple(out)


def planted_gradient_problem(
    *,
    N: int,
    m: int,
    n: int,
    spectrum: Sequence[float],
    spread: float = 0.05,
    lam: float = 0.01,
    seed: int = 0,
) -> Problem:
    r"""A linearized problem whose per-example gradients at :math:`W_0` are :math:`M + \xi_i` (K = 1).

    :math:`M = P \operatorname{diag}(\text{spectrum}) Q^\top` with Haar-random ``P``, ``Q``
    (``spectrum`` padded with zeros to ``min(m, n)``); :math:`\xi_i` Gaussian with
    :math:`\mathbb E\|\xi_i\|_F^2 = (\text{spread}\,\|M\|_F)^2`.  Squared loss, :math:`f_0 = 0`,
    :math:`y_i = -1`, so :math:`\nabla_z \ell = 1` and example ``i``'s gradient is
    :math:`\operatorname{mat}(J_i^\top) = M + \xi_i`; the full gradient is their mean.  For the
    LoRA-GA pipeline verdicts: the spectrum sets the gap :math:`\sigma_{2r} - \sigma_{2r+1}`, ``spread``
    the noise of the reference code's sampled ``G``.
    """
    for name, v in (("N", N), ("m", m), ("n", n)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise UserInputError(f"{name}: expected a positive int, got {v!r}")
    sig = [float(x) for x in spectrum]
    if not sig or len(sig) > min(m, n) or any(not (x >= 0 and math.isfinite(x)) for x in sig):
        raise UserInputError(
            f"spectrum: expected 1 to min(m, n) = {min(m, n)} finite values >= 0, got {list(spectrum)!r}"
        )
    if (
        isinstance(spread, bool)
        or not isinstance(spread, (int, float))
        or not (spread >= 0 and spread < math.inf)
    ):
        raise UserInputError(f"spread: expected a finite number >= 0, got {spread!r}")
    gen = torch.Generator().manual_seed(seed)
    P, _ = torch.linalg.qr(torch.randn(m, m, generator=gen, dtype=torch.float64))
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    k = len(sig)
    M = (P[:, :k] * torch.tensor(sig, dtype=torch.float64)) @ Q[:, :k].T
    xi = torch.randn(N, m * n, generator=gen, dtype=torch.float64) * (
        spread * float(M.norm()) / math.sqrt(m * n)
    )
    J = M.reshape(1, -1) + xi
    f0 = torch.zeros(N, 1, dtype=torch.float64)
    y = -torch.ones(N, 1, dtype=torch.float64)
    return Problem(
        J,
        f0,
        y,
        loss="squared",
        blocks=[(m, n)],
        lam=lam,
        seed=seed,
        name="planted-gradient",
        meta={"generator": "planted_gradient_problem", "spectrum": sig, "spread": float(spread)},
    )
