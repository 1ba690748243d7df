r"""One attention head with LoRA adapters and its exact gradients ([HSK24]; groundwork for HSK).

The setting of Hu, Su, Kuo, Song, Liu (2024): inputs :math:`X \in \mathbb R^{L \times d}`, one head

.. math:: Z = D^{-1} \exp(\beta\, X W_Q W_K^\top X^\top)\, X W_V, \qquad
          D = \operatorname{diag}(\exp(\beta\, X W_Q W_K^\top X^\top) \mathbf 1_L),

LoRA on the adapted weights :math:`W_\mu = W_\mu^\star + s B_\mu A_\mu` (:math:`B_\mu \in \mathbb
R^{d \times r}`, :math:`A_\mu \in \mathbb R^{r \times d}`, :math:`s = \alpha / r`) for
:math:`\mu \in \{Q, V\}` (case C1) or :math:`\{Q, K, V\}` (case C2), and the loss
:math:`\mathcal L = \tfrac12\|Z - Y\|_F^2`.

Exact gradients (derived here; checked against autograd in the tests).  With :math:`P = D^{-1}
\exp(S)`, :math:`S = \beta Q K^\top`, :math:`Q = XW_Q`, :math:`K = XW_K`, :math:`V = XW_V` and
:math:`G = Z - Y`:

.. math::
   G_V = P^\top G, \quad G_P = G V^\top, \quad
   G_S = P \odot \big(G_P - (G_P \odot P)\mathbf 1 \mathbf 1^\top\big), \\
   \nabla_{W_Q} = \beta X^\top G_S K, \quad \nabla_{W_K} = \beta X^\top G_S^\top Q, \quad
   \nabla_{W_V} = X^\top G_V, \\
   \nabla_{A_\mu} = s B_\mu^\top \nabla_{W_\mu}, \qquad \nabla_{B_\mu} = s \nabla_{W_\mu} A_\mu^\top .

In [HSK24]'s notation (:math:`C_1 = X`, :math:`C_2 = X W_K`, ``p`` the matrix :math:`G_S`)
the A-gradient reads :math:`B_Q^\top C_1^\top p C_2` and the B-gradient is
:math:`C_1^\top p C_2 A_Q^\top` (both times :math:`s\beta`).  The printed :math:`C_1^\top p A_Q
C_2` multiplies the ``L x L`` matrix ``p`` by the ``r x d`` matrix :math:`A_Q`: a dimension
mismatch in the formula (a typo; defined only when ``L = r = d``), which the derived gradient
corrects; it does not touch the paper's complexity results.  The exact route costs
:math:`O(L^2 d)` time; it runs densely (:math:`O(L^2)` memory) or streamed over blocks of query
rows (:math:`O(L d)` memory besides one ``block x L`` slab).

**The fast route** (the polynomial method of [HSK24], after Alman and Song).  The truncated Taylor
series of :math:`\exp\langle q, k\rangle = \prod_i \exp(q_i k_i)` is
:math:`\sum_{|\alpha| \le g} q^\alpha k^\alpha / \alpha! = \langle \phi(q), \phi(k)\rangle` with the
feature map :math:`\phi(x)_\alpha = x^\alpha / \sqrt{\alpha!}` over the
:math:`R = \binom{d+g}{g}` multi-indices of degree at most ``g``
(:func:`taylor_features`).  So :math:`\exp(\beta Q K^\top) \approx U W^\top` with ``U, W``
``L x R``, and every product the gradient needs is a chain of thin products:

.. math::
   D \approx \operatorname{diag}(U (W^\top \mathbf 1)), \quad P M = D^{-1} U (W^\top M), \quad
   P^\top M = W (U^\top D^{-1} M), \quad (G_P \odot P)\mathbf 1 = (G \odot Z)\mathbf 1, \\
   \big[(P \odot G V^\top) K\big]_{i} = \sum_c G_{ic} \big[P (V_{:c} \odot K)\big]_{i}, \qquad
   \big[(P \odot G V^\top)^\top Q\big]_{j} = \sum_c V_{jc} \big[P^\top (G_{:c} \odot Q)\big]_{j},

(:math:`V_{:c} \odot K` scales the rows of ``K``), which is :math:`O(L R d^2)` time and no
``L x L`` matrix (:func:`fast_gradients`).  Each entry of the truncated exponential errs by at most
:math:`e^M M^{g+1} / (g+1)!` with :math:`M = \max |\beta \langle q_i, k_j\rangle|` (Lagrange
remainder), which :func:`taylor_error_bound` returns.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from theory.errors import InputTypeError, UserInputError
from theory.hsk import log_taylor_error_bound
from theory.search import bisect_boundary

__all__ = [
    "AttentionLoRA",
    "CASES",
    "attention_output",
    "exact_gradients",
    "fast_gradients",
    "FastGradients",
    "taylor_features",
    "taylor_error_bound",
    "numerical_rank",
    "hsk_instance",
    "max_entry_error",
    "max_abs_entry_error",
    "HskSetting",
    "score_gradient",
]

#: Adapted weights per case of [HSK24]: C1 adapts W_Q and W_V, C2 also W_K.
CASES: Mapping[str, tuple[str, ...]] = {"C1": ("Q", "V"), "C2": ("Q", "K", "V")}


@dataclass(frozen=True)
class AttentionLoRA:
    """The base weights, the adapters, and the data of one head (see the module docstring).

    ``W`` maps ``"Q"``, ``"K"``, ``"V"`` to ``d x d`` base weights; ``A`` and ``B`` map each adapted
    name to ``r x d`` and ``d x r`` factors; ``scale`` is ``s``; ``beta`` the softmax temperature.
    """

    X: Tensor
    Y: Tensor
    W: Mapping[str, Tensor]
    A: Mapping[str, Tensor]
    B: Mapping[str, Tensor]
    scale: float = 1.0
    beta: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.X, Tensor) or self.X.ndim != 2:
            raise UserInputError(
                f"X: expected a 2-D tensor (L x d), got {getattr(self.X, 'shape', type(self.X))}"
            )
        L, d = self.X.shape
        if L < 1 or d < 1:
            raise UserInputError(
                f"X: expected at least one row and one column, got shape {tuple(self.X.shape)}"
            )
        if not isinstance(self.Y, Tensor) or tuple(self.Y.shape) != (L, d):
            raise UserInputError(f"Y: expected shape {(L, d)}, got {tuple(getattr(self.Y, 'shape', ()))}")
        if set(self.W) != {"Q", "K", "V"}:
            raise UserInputError(f"W: expected the keys Q, K, V, got {sorted(self.W)}")
        for k, w in self.W.items():
            if tuple(w.shape) != (d, d):
                raise UserInputError(f"W[{k!r}]: expected shape {(d, d)}, got {tuple(w.shape)}")
        if set(self.A) != set(self.B) or not set(self.A) <= {"Q", "K", "V"}:
            raise UserInputError(
                f"A, B: expected the same adapted names among Q, K, V, got {sorted(self.A)}, {sorted(self.B)}"
            )
        for k in self.A:
            a, b = self.A[k], self.B[k]
            if a.ndim != 2 or b.ndim != 2 or a.shape[1] != d or b.shape[0] != d or a.shape[0] != b.shape[1]:
                raise UserInputError(
                    f"A[{k!r}], B[{k!r}]: expected r x {d} and {d} x r, "
                    f"got {tuple(a.shape)} and {tuple(b.shape)}"
                )
        for name in ("scale", "beta"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v)):
                raise UserInputError(f"{name}: expected a finite number, got {v!r}")

    def weights(self) -> dict[str, Tensor]:
        r"""The adapted weights :math:`W_\mu^\star + s B_\mu A_\mu`."""
        return {k: w + self.scale * self.B[k] @ self.A[k] if k in self.A else w for k, w in self.W.items()}


def attention_output(h: AttentionLoRA) -> Tensor:
    r""":math:`Z = \operatorname{softmax}(\beta X W_Q W_K^\top X^\top) X W_V` (row-wise softmax)."""
    W = h.weights()
    S = h.beta * (h.X @ W["Q"]) @ (h.X @ W["K"]).T
    return torch.softmax(S, dim=-1) @ (h.X @ W["V"])


def exact_gradients(
    h: AttentionLoRA, *, block_size: int | None = None
) -> tuple[float, dict[str, Tensor], dict[str, Tensor]]:
    r"""The loss :math:`\tfrac12\|Z - Y\|_F^2` and its exact gradients in every ``A_mu`` and ``B_mu``.

    Returns ``(loss, grad_A, grad_B)`` keyed like ``h.A``; the formulas are in the module docstring.
    ``block_size=None`` forms the ``L x L`` attention matrix; an int streams it in slabs of that
    many query rows (each slab's softmax is exact: a row needs only its own scores), so memory
    is :math:`O(L d + \text{block} \cdot L)`; the result is the same up to round-off.
    """
    if not isinstance(h, AttentionLoRA):
        raise InputTypeError(f"h: expected an AttentionLoRA, got {type(h).__name__}")
    if block_size is not None and (
        isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1
    ):
        raise UserInputError(f"block_size: expected None or a positive int, got {block_size!r}")
    W = h.weights()
    Q, K, V = h.X @ W["Q"], h.X @ W["K"], h.X @ W["V"]
    L = h.X.shape[0]
    step = L if block_size is None else block_size
    MQ = torch.empty_like(Q)  # G_S K, row by row
    MK = torch.zeros_like(K)  # G_S^T Q, accumulated over slabs
    MV = torch.zeros_like(V)  # P^T G, accumulated over slabs
    loss = 0.0
    for i0 in range(0, L, step):
        i1 = min(L, i0 + step)
        P, G, GS = _slab(h, Q, K, V, i0, i1)
        loss += 0.5 * float((G * G).sum())
        MQ[i0:i1] = GS @ K
        MK += GS.T @ Q[i0:i1]
        MV += P.T @ G
    return loss, *_adapter_gradients(h, {"Q": h.beta * h.X.T @ MQ, "K": h.beta * h.X.T @ MK, "V": h.X.T @ MV})


def _slab(
    h: AttentionLoRA, Q: Tensor, K: Tensor, V: Tensor, i0: int, i1: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Rows ``i0:i1`` of ``P`` (the softmax), of ``G = Z - Y`` and of ``G_S`` (module docstring)."""
    P = torch.softmax(h.beta * Q[i0:i1] @ K.T, dim=-1)
    Z = P @ V
    G = Z - h.Y[i0:i1]
    # G_S = P * (G V^T - rowsum(P * G V^T)), and rowsum(P * G V^T) = rowsum(G * Z).
    return P, G, P * (G @ V.T - (G * Z).sum(dim=1, keepdim=True))


def score_gradient(h: AttentionLoRA) -> Tensor:
    r"""The dense ``L x L`` matrix :math:`G_S = \partial \mathcal L / \partial S` (``p`` in [HSK24])."""
    W = h.weights()
    Q, K, V = h.X @ W["Q"], h.X @ W["K"], h.X @ W["V"]
    return _slab(h, Q, K, V, 0, h.X.shape[0])[2]


def _adapter_gradients(
    h: AttentionLoRA, gW: Mapping[str, Tensor]
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    gA = {k: h.scale * h.B[k].T @ gW[k] for k in h.A}
    gB = {k: h.scale * gW[k] @ h.A[k].T for k in h.A}
    return gA, gB


def taylor_features(M: Tensor, degree: int) -> Tensor:
    r"""The feature map :math:`\phi(x)_\alpha = x^\alpha / \sqrt{\alpha!}` of each row of ``M``.

    Columns are the :math:`\binom{d+g}{g}` multi-indices with :math:`|\alpha| \le g` (``g`` =
    ``degree``), in graded order; :math:`\langle \phi(q), \phi(k)\rangle = \sum_{|\alpha|\le g}
    q^\alpha k^\alpha/\alpha!`, the degree-``g`` Taylor polynomial of :math:`e^{\langle q, k\rangle}`.
    """
    if not isinstance(M, Tensor) or M.ndim != 2:
        raise UserInputError(f"M: expected a 2-D tensor, got {getattr(M, 'shape', type(M))}")
    if isinstance(degree, bool) or not isinstance(degree, int) or degree < 0:
        raise UserInputError(f"degree: expected an int >= 0, got {degree!r}")
    L, d = M.shape
    cols = [torch.ones(L, 1, dtype=M.dtype, device=M.device)]
    prev = cols[0]
    # For each feature of the previous degree: the exponent of its last variable and that index;
    # multiplying by x_i for i >= that index enumerates each multi-index once.
    prev_last = torch.zeros(1, dtype=torch.long)
    prev_pow = torch.zeros(1, dtype=M.dtype)
    for _ in range(degree):
        parts, lasts, pows = [], [], []
        for i in range(d):
            keep = prev_last <= i
            if not bool(keep.any()):
                continue
            # The new exponent of x_i: one more than before if x_i was the last variable.
            new_pow = torch.where(prev_last[keep] == i, prev_pow[keep] + 1, torch.ones_like(prev_pow[keep]))
            parts.append(prev[:, keep] * M[:, i : i + 1] / new_pow.sqrt().to(M.device))
            lasts.append(torch.full((int(keep.sum()),), i, dtype=torch.long))
            pows.append(new_pow)
        prev = torch.cat(parts, dim=1)
        prev_last, prev_pow = torch.cat(lasts), torch.cat(pows)
        cols.append(prev)
    return torch.cat(cols, dim=1)


def taylor_error_bound(M: float, degree: int) -> float:
    r"""Lagrange's bound :math:`e^M M^{g+1}/(g+1)!` on the Taylor remainder of :math:`e^x`, :math:`|x| \le M`.

    The remainder is :math:`|e^x - \sum_{j \le g} x^j/j!|`.
    """
    if not (isinstance(M, (int, float)) and M >= 0 and math.isfinite(M)):
        raise UserInputError(f"M: expected a finite number >= 0, got {M!r}")
    log_bound = log_taylor_error_bound(float(M), degree)
    return math.exp(log_bound) if log_bound < 700 else math.inf


@dataclass(frozen=True)
class FastGradients:
    """The fast route's loss and adapter gradients, with the rank and degree it used."""

    loss: float
    grad_A: dict[str, Tensor]
    grad_B: dict[str, Tensor]
    rank: int
    degree: int
    min_row_sum: float


def fast_gradients(h: AttentionLoRA, *, degree: int) -> FastGradients:
    r"""Adapter gradients through the rank-:math:`\binom{d+g}{g}` Taylor factorization (module docstring).

    ``O(L R d^2)`` time and ``O(L (R + d^2))`` memory; no ``L x L`` matrix.  ``min_row_sum`` is the
    smallest approximate softmax normalizer: a non-positive one means the degree is far too low
    for the entry bound (the approximation is not a distribution), and a ``ValueError`` is raised.
    """
    if not isinstance(h, AttentionLoRA):
        raise InputTypeError(f"h: expected an AttentionLoRA, got {type(h).__name__}")
    W = h.weights()
    Q, K, V = h.X @ W["Q"], h.X @ W["K"], h.X @ W["V"]
    L, d = h.X.shape
    c = math.sqrt(abs(h.beta))
    U = taylor_features(math.copysign(c, h.beta) * Q, degree)
    Wf = taylor_features(c * K, degree)
    den = U @ Wf.sum(dim=0)
    low = float(den.min())
    if not low > 0:
        raise UserInputError(
            f"degree: the degree-{degree} features give a softmax normalizer {low:.3g} <= 0; "
            "raise the degree or lower the entry bound"
        )

    def pmul(M: Tensor) -> Tensor:  # P M
        return (U @ (Wf.T @ M)) / den[:, None]

    def ptmul(M: Tensor) -> Tensor:  # P^T M
        return Wf @ (U.T @ (M / den[:, None]))

    Z = pmul(V)
    G = Z - h.Y
    r = (G * Z).sum(dim=1)
    VK = (V[:, :, None] * K[:, None, :]).reshape(L, d * d)
    GSK = torch.einsum("ic,ice->ie", G, pmul(VK).reshape(L, d, d)) - r[:, None] * pmul(K)
    GQ = (G[:, :, None] * Q[:, None, :]).reshape(L, d * d)
    GSTQ = torch.einsum("jc,jce->je", V, ptmul(GQ).reshape(L, d, d)) - ptmul(r[:, None] * Q)
    gW = {"Q": h.beta * h.X.T @ GSK, "K": h.beta * h.X.T @ GSTQ, "V": h.X.T @ ptmul(G)}
    gA, gB = _adapter_gradients(h, gW)
    return FastGradients(
        loss=0.5 * float((G * G).sum()),
        grad_A=gA,
        grad_B=gB,
        rank=int(U.shape[1]),
        degree=degree,
        min_row_sum=low,
    )


def max_entry_error(approx: Mapping[str, Tensor], exact: Mapping[str, Tensor]) -> float:
    """The largest over keys of ``max |approx_k - exact_k| / max |exact_k|`` (the HSK error measure).

    Per key: the gradients of different adapters differ in scale (those of ``W_Q`` and ``W_K``
    carry ``beta`` and the entry bound twice), so one common denominator would hide their errors.
    NaN anywhere gives ``inf``.
    """
    return _worst_entry_error(approx, exact, relative=True)


def max_abs_entry_error(approx: Mapping[str, Tensor], exact: Mapping[str, Tensor]) -> float:
    r"""The absolute max-entry error :math:`\max_k \max_{ij} |(\text{approx}_k - \text{exact}_k)_{ij}|`.

    The norm of [HSK24]'s accuracy statement (surrogate gradients within :math:`\varepsilon` in
    max-entry norm); :func:`max_entry_error` is the same per key divided by each key's largest
    entry.  NaN anywhere gives ``inf``.
    """
    return _worst_entry_error(approx, exact, relative=False)


def _worst_entry_error(approx: Mapping[str, Tensor], exact: Mapping[str, Tensor], *, relative: bool) -> float:
    if set(approx) != set(exact):
        raise UserInputError(
            f"approx, exact: expected the same keys, got {sorted(approx)} and {sorted(exact)}"
        )
    worst = 0.0
    for k in exact:
        e = float((approx[k] - exact[k]).abs().max())
        if relative:
            den = float(exact[k].abs().max())
            e = e / den if den > 0 else e
        if not e <= worst:  # also catches NaN
            worst = e if math.isfinite(e) else math.inf
    return worst


def numerical_rank(M: Tensor, rel_err: float) -> int:
    r"""A ``k`` whose rank-``k`` SVD truncation is within ``rel_err`` of ``M`` entrywise (by bisection).

    Error measured as :math:`\max_{ij} |M - M_k|_{ij} / \max_{ij} |M_{ij}|`.  The SVD truncation is
    optimal in the spectral norm, not entrywise, so this is an upper bound on the max-entry
    numerical rank (the measure [HSK24]'s statements use).  Bisection over ``k``: the error is
    not monotone in ``k`` in general, so the returned ``k`` meets the tolerance and ``k - 1`` does
    not at the bracket it was found in.  Dense SVD: ``L`` up to a few thousand.
    """
    if not isinstance(M, Tensor) or M.ndim != 2:
        raise UserInputError(f"M: expected a 2-D tensor, got {getattr(M, 'shape', type(M))}")
    if not (isinstance(rel_err, float) and 0 < rel_err < 1):
        raise UserInputError(f"rel_err: expected a float in (0, 1), got {rel_err!r}")
    top = float(M.abs().max())
    if top == 0:
        return 0
    P, s, Qh = torch.linalg.svd(M, full_matrices=False)

    def ok(k: int) -> bool:
        return float((M - (P[:, :k] * s[:k]) @ Qh[:k]).abs().max()) <= rel_err * top

    return bisect_boundary(ok, 0, int(s.numel()))  # ok(numel) holds (round-off aside), ok(0) does not


def hsk_instance(
    *,
    L: int,
    d: int,
    r: int,
    gamma: float,
    case: str = "C1",
    seed: int = 0,
    beta: float = 1.0,
    dtype: torch.dtype = torch.float64,
) -> AttentionLoRA:
    r"""A random head whose pre-activations have entries bounded by ``gamma``.

    The pre-activations are :math:`Q = X W_Q` and :math:`K = X W_K`.

    Rademacher (``±1``) ``X``; Gaussian base weights, adapters and targets, all from a seeded
    generator; then ``X`` is rescaled so that :math:`\max(\|Q\|_{\max}, \|K\|_{\max}) = \gamma`
    exactly (the entry bound [HSK24]'s regimes are stated in), so
    :math:`|\beta\langle q_i, k_j\rangle| \le |\beta| d \gamma^2`.
    ``scale = 1/r`` (``alpha = 1``).
    """
    for name, v in (("L", L), ("d", d), ("r", r)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise UserInputError(f"{name}: expected a positive int, got {v!r}")
    if not (isinstance(gamma, (int, float)) and gamma > 0 and math.isfinite(gamma)):
        raise UserInputError(f"gamma: expected a finite number > 0, got {gamma!r}")
    if case not in CASES:
        raise UserInputError(f"case: expected one of {sorted(CASES)}, got {case!r}")
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    W = {k: rnd(d, d) / math.sqrt(d) for k in "QKV"}
    A = {k: rnd(r, d) / math.sqrt(d) for k in CASES[case]}
    B = {k: rnd(d, r) / math.sqrt(r) for k in CASES[case]}
    # Rademacher inputs: a bounded distribution, so the largest pre-activation entry (attained by
    # about one row in 2^d) and the typical one stay in a fixed ratio as L grows.  (Gaussian
    # inputs would make the bound gamma an outlier that moves away from the bulk like
    # sqrt(log L): instances would get easier with L at a fixed gamma.)
    X = torch.randint(0, 2, (L, d), generator=g).to(torch.float64) * 2 - 1
    Y = rnd(L, d)
    h = AttentionLoRA(X, Y, W, A, B, scale=1.0 / r, beta=beta)
    Wt = h.weights()
    peak = max(float((X @ Wt["Q"]).abs().max()), float((X @ Wt["K"]).abs().max()))
    X = X * (gamma / peak)
    return AttentionLoRA(
        X.to(dtype),
        Y.to(dtype),
        {k: w.to(dtype) for k, w in W.items()},
        {k: a.to(dtype) for k, a in A.items()},
        {k: b.to(dtype) for k, b in B.items()},
        scale=1.0 / r,
        beta=beta,
    )


@dataclass(frozen=True)
class HskSetting:
    """What the HSK checkers measure on: an adapter case and head sizes (instances from :func:`hsk_instance`).

    The checkers draw instances at the lengths ``L`` and entry bounds ``gamma`` of their grids,
    seeded by ``seed``; ``name`` labels verdicts and reports.
    """

    case: str = "C1"
    d: int = 4
    r: int = 2
    beta: float = 1.0
    seed: int = 0
    name: str = "hsk"

    def __post_init__(self) -> None:
        if self.case not in CASES:
            raise UserInputError(f"case: expected one of {sorted(CASES)}, got {self.case!r}")
        for field_name in ("d", "r"):
            v = getattr(self, field_name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UserInputError(f"{field_name}: expected a positive int, got {v!r}")
        if isinstance(self.beta, bool) or not (
            isinstance(self.beta, (int, float)) and math.isfinite(self.beta) and self.beta != 0
        ):
            raise UserInputError(f"beta: expected a finite nonzero number, got {self.beta!r}")

    def instance(self, L: int, gamma: float, *, seed_offset: int = 0) -> AttentionLoRA:
        """The head of length ``L`` with entry bound ``gamma``."""
        return hsk_instance(
            L=L, d=self.d, r=self.r, gamma=gamma, case=self.case, seed=self.seed + seed_offset, beta=self.beta
        )

    def fingerprint(self) -> dict[str, object]:
        """A short description for verdicts."""
        return {
            "name": self.name,
            "kind": "attention head (HSK24)",
            "case": self.case,
            "adapted": list(CASES[self.case]),
            "d": self.d,
            "r": self.r,
            "beta": self.beta,
            "seed": self.seed,
        }
