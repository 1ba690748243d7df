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
C_2` multiplies the ``L x L`` matrix ``p`` by the ``r x d`` matrix :math:`A_Q`: it is
dimensionally inconsistent unless ``L = r``.  The exact route costs :math:`O(L^2 d)` time and
:math:`O(L^2)` memory.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["AttentionLoRA", "CASES", "attention_output", "exact_gradients"]

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
            raise ValueError(
                f"X: expected a 2-D tensor (L x d), got {getattr(self.X, 'shape', type(self.X))}"
            )
        L, d = self.X.shape
        if not isinstance(self.Y, Tensor) or tuple(self.Y.shape) != (L, d):
            raise ValueError(f"Y: expected shape {(L, d)}, got {tuple(getattr(self.Y, 'shape', ()))}")
        if set(self.W) != {"Q", "K", "V"}:
            raise ValueError(f"W: expected the keys Q, K, V, got {sorted(self.W)}")
        for k, w in self.W.items():
            if tuple(w.shape) != (d, d):
                raise ValueError(f"W[{k!r}]: expected shape {(d, d)}, got {tuple(w.shape)}")
        if set(self.A) != set(self.B) or not set(self.A) <= {"Q", "K", "V"}:
            raise ValueError(
                f"A, B: expected the same adapted names among Q, K, V, got {sorted(self.A)}, {sorted(self.B)}"
            )
        for k in self.A:
            a, b = self.A[k], self.B[k]
            if a.ndim != 2 or b.ndim != 2 or a.shape[1] != d or b.shape[0] != d or a.shape[0] != b.shape[1]:
                raise ValueError(
                    f"A[{k!r}], B[{k!r}]: expected r x {d} and {d} x r, "
                    f"got {tuple(a.shape)} and {tuple(b.shape)}"
                )
        for name in ("scale", "beta"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v)):
                raise ValueError(f"{name}: expected a finite number, got {v!r}")

    def weights(self) -> dict[str, Tensor]:
        r"""The adapted weights :math:`W_\mu^\star + s B_\mu A_\mu`."""
        return {k: w + self.scale * self.B[k] @ self.A[k] if k in self.A else w for k, w in self.W.items()}


def attention_output(h: AttentionLoRA) -> Tensor:
    r""":math:`Z = \operatorname{softmax}(\beta X W_Q W_K^\top X^\top) X W_V` (row-wise softmax)."""
    W = h.weights()
    S = h.beta * (h.X @ W["Q"]) @ (h.X @ W["K"]).T
    return torch.softmax(S, dim=-1) @ (h.X @ W["V"])


def exact_gradients(h: AttentionLoRA) -> tuple[float, dict[str, Tensor], dict[str, Tensor]]:
    r"""The loss :math:`\tfrac12\|Z - Y\|_F^2` and its exact gradients in every ``A_mu`` and ``B_mu``.

    Returns ``(loss, grad_A, grad_B)`` keyed like ``h.A``; the formulas are in the module docstring.
    """
    W = h.weights()
    Q, K, V = h.X @ W["Q"], h.X @ W["K"], h.X @ W["V"]
    P = torch.softmax(h.beta * Q @ K.T, dim=-1)
    G = P @ V - h.Y
    GP = G @ V.T
    GS = P * (GP - (GP * P).sum(dim=1, keepdim=True))
    gW = {
        "Q": h.beta * h.X.T @ (GS @ K),
        "K": h.beta * h.X.T @ (GS.T @ Q),
        "V": h.X.T @ (P.T @ G),
    }
    gA = {k: h.scale * h.B[k].T @ gW[k] for k in h.A}
    gB = {k: h.scale * gW[k] @ h.A[k].T for k in h.A}
    return 0.5 * float((G * G).sum()), gA, gB
