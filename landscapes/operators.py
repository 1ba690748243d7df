r"""One small linear-operator base shared by Jacobians (and later Hessians and Gram matrices).

An operator :math:`A: \mathbb{R}^p \to \mathbb{R}^q` provides ``matvec`` and ``rmatvec``
(:math:`A^\top`); ``to_scipy()`` exports it so SciPy's ``eigsh``/``svds``/``lsqr`` work on it.
Shapes are checked with messages that name the argument.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse.linalg as spla
import torch
from torch import Tensor

from theory.errors import InputTypeError, UserInputError

__all__ = [
    "LinearOperator",
    "DenseOperator",
    "LowRankOperator",
    "FunctionOperator",
    "TokenBucket",
    "TokenOperator",
]


class LinearOperator(ABC):
    """A linear map ``R^p -> R^q`` of a fixed dtype and device."""

    shape: tuple[int, int]
    dtype: torch.dtype
    device: torch.device

    @abstractmethod
    def _matvec(self, x: Tensor) -> Tensor: ...

    @abstractmethod
    def _rmatvec(self, y: Tensor) -> Tensor: ...

    def _check(self, name: str, v: Tensor, n: int) -> None:
        if not isinstance(v, Tensor):
            raise InputTypeError(f"{name}: expected a torch.Tensor, got {type(v).__name__}")
        if v.shape != (n,):
            raise UserInputError(f"{name}: expected shape ({n},), got {tuple(v.shape)}")
        if v.dtype != self.dtype:
            raise UserInputError(f"{name}: expected dtype {self.dtype}, got {v.dtype}")

    def matvec(self, x: Tensor) -> Tensor:
        """Return ``A x`` for ``x`` of shape ``(p,)``."""
        self._check("x", x, self.shape[1])
        return self._matvec(x)

    def rmatvec(self, y: Tensor) -> Tensor:
        """Return ``A^T y`` for ``y`` of shape ``(q,)``."""
        self._check("y", y, self.shape[0])
        return self._rmatvec(y)

    def check_deterministic(self, *, seed: int = 0, rtol: float = 1e-12, name: str = "operator") -> None:
        """Apply ``matvec`` and ``rmatvec`` twice to one random vector; raise if the results differ.

        Eigen-solvers and certificates assume a fixed linear map; an operator built from a model
        with dropout or other randomness left on is not one.
        """
        g = torch.Generator(device="cpu").manual_seed(seed)
        x = torch.randn(self.shape[1], generator=g, dtype=torch.float64).to(
            dtype=self.dtype, device=self.device
        )
        y = torch.randn(self.shape[0], generator=g, dtype=torch.float64).to(
            dtype=self.dtype, device=self.device
        )
        for what, f, v in (("matvec", self._matvec, x), ("rmatvec", self._rmatvec, y)):
            a, b = f(v), f(v)
            diff = float((a - b).norm())
            scale = max(float(a.norm()), float(b.norm()), 1e-300)
            if not diff <= rtol * scale:
                raise UserInputError(
                    f"{name}: expected a deterministic linear map, got {what} results that differ by "
                    f"{diff / scale:.2e} (relative) on the same vector (dropout or sampling left on?)"
                )

    #: Whether :meth:`factor_products` is cheap (no dense ``J`` is built): then the structured
    #: curvature route is the default (:func:`landscapes.curvature.lambda_min`).
    cheap_factor_products: bool = False

    def factor_products(
        self, blocks: Sequence[tuple[int, int]], U: Sequence[Tensor], V: Sequence[Tensor]
    ) -> Tensor:
        r"""Factor products per row: :math:`(\mathrm{vec}(A_i V_j), \mathrm{vec}(A_i^\top U_j))_j`.

        :math:`A_i = \operatorname{mat}_j(\text{row } i)` is row ``i`` restricted to block ``j``
        (shape ``m_j x n_j``, row-major), ``U_j`` is ``m_j x r_j`` and ``V_j`` is ``n_j x r_j``; the
        result has shape ``(q, sum_j (m_j + n_j) r_j)``. For a Jacobian this is
        :math:`\partial z / \partial (U, V)` of the linearized LoRA model. The default
        materializes the rows; operators that can do better override it.
        """
        R = self.rows()
        q = R.shape[0]
        parts, k0 = [], 0
        for (m, n), u, v in zip(blocks, U, V):
            A = R[:, k0 : k0 + m * n].reshape(q, m, n)
            k0 += m * n
            parts.append((A @ v).reshape(q, -1))
            parts.append((A.transpose(1, 2) @ u).reshape(q, -1))
        return torch.cat(parts, dim=1)

    #: Whether :meth:`lowrank_matvec` and :meth:`gradient_factors` cost less than a product with a
    #: full ``vec D`` (:class:`TokenOperator`): then LoRA's objective uses them
    #: (:func:`landscapes.lora.lora_value_and_grad`).
    cheap_lowrank: bool = False

    def lowrank_matvec(
        self, blocks: Sequence[tuple[int, int]], U: Sequence[Tensor], V: Sequence[Tensor]
    ) -> Tensor:
        r""":math:`A \operatorname{vec}(U_j V_j^	op)_j`; the default forms the products."""
        return self._matvec(torch.cat([(u @ v.T).reshape(-1) for u, v in zip(U, V)]))

    def gradient_factors(
        self, blocks: Sequence[tuple[int, int]], y: Tensor, U: Sequence[Tensor], V: Sequence[Tensor]
    ) -> tuple[list[Tensor], list[Tensor]]:
        r""":math:`(S_j V_j)_j` and :math:`(S_j^\top U_j)_j` for :math:`S_j = \operatorname{mat}_j(A^\top y)`.

        The default forms :math:`S_j` with one :meth:`rmatvec`.
        """
        x, k, S = self._rmatvec(y), 0, []
        for m, n in blocks:
            S.append(x[k : k + m * n].view(m, n))
            k += m * n
        return [s @ v for s, v in zip(S, V)], [s.T @ u for s, u in zip(S, U)]

    def rows(self) -> Tensor:
        """Materialize ``A`` as a dense ``(q, p)`` tensor, one ``rmatvec`` per row."""
        eye = torch.eye(self.shape[0], dtype=self.dtype, device=self.device)
        return torch.stack([self._rmatvec(eye[i]) for i in range(self.shape[0])])

    def gram(self) -> Tensor:
        """The ``q x q`` Gram matrix ``A A^T`` (the empirical NTK for a Jacobian)."""
        R = self.rows()
        return R @ R.T

    def to_scipy(self) -> spla.LinearOperator:
        """Export as a SciPy ``LinearOperator`` in float64 (numpy in, numpy out)."""

        def mv(x: np.ndarray) -> np.ndarray:
            t = torch.as_tensor(np.ascontiguousarray(x).reshape(-1), dtype=self.dtype, device=self.device)
            return self._matvec(t).detach().cpu().double().numpy()

        def rmv(y: np.ndarray) -> np.ndarray:
            t = torch.as_tensor(np.ascontiguousarray(y).reshape(-1), dtype=self.dtype, device=self.device)
            return self._rmatvec(t).detach().cpu().double().numpy()

        return spla.LinearOperator(self.shape, matvec=mv, rmatvec=rmv, dtype=np.float64)


class DenseOperator(LinearOperator):
    """A stored matrix."""

    cheap_factor_products = True

    def __init__(self, matrix: Tensor) -> None:
        if not isinstance(matrix, Tensor) or matrix.ndim != 2:
            got = tuple(matrix.shape) if isinstance(matrix, Tensor) else type(matrix).__name__
            raise UserInputError(f"matrix: expected a 2-D torch.Tensor, got {got}")
        self.matrix = matrix
        self.shape = (int(matrix.shape[0]), int(matrix.shape[1]))
        self.dtype = matrix.dtype
        self.device = matrix.device

    def _matvec(self, x: Tensor) -> Tensor:
        return self.matrix @ x

    def _rmatvec(self, y: Tensor) -> Tensor:
        return self.matrix.T @ y

    def rows(self) -> Tensor:  # noqa: D102
        return self.matrix

    def __repr__(self) -> str:
        return f"DenseOperator(shape={self.shape}, dtype={self.dtype})"


class LowRankOperator(LinearOperator):
    r"""A matrix stored as two factors, :math:`A = L R`.

    ``left`` :math:`L` has shape ``(q, s)`` and ``right`` :math:`R` shape ``(s, p)``. For a Jacobian
    of ``K N`` rows this stores :math:`(KN + p) s` numbers instead of :math:`KN p`; products cost
    :math:`O((q + p) s)`. ``rows()`` materializes :math:`L R` when asked. Both factors are checked:
    2-D, non-empty, one floating dtype and device, matching inner sizes, finite.
    """

    cheap_factor_products = True

    def __init__(self, left: Tensor, right: Tensor) -> None:
        for name, t in (("left", left), ("right", right)):
            if not isinstance(t, Tensor):
                raise InputTypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
            if t.ndim != 2:
                raise UserInputError(f"{name}: expected a 2-D tensor, got shape {tuple(t.shape)}")
            if not t.dtype.is_floating_point:
                raise UserInputError(f"{name}: expected a floating dtype, got {t.dtype}")
            if min(t.shape) < 1:
                raise UserInputError(f"{name}: expected a non-empty matrix, got shape {tuple(t.shape)}")
        if right.dtype != left.dtype:
            raise UserInputError(f"right: expected dtype {left.dtype} (the dtype of left), got {right.dtype}")
        if right.device != left.device:
            raise UserInputError(
                f"right: expected device {left.device} (the device of left), got {right.device}"
            )
        if right.shape[0] != left.shape[1]:
            raise UserInputError(
                f"right: expected {left.shape[1]} rows (the columns of left, shape {tuple(left.shape)}), "
                f"got shape {tuple(right.shape)}"
            )
        for name, t in (("left", left), ("right", right)):
            if not bool(torch.isfinite(t).all()):
                raise UserInputError(f"{name}: expected finite values, got NaN or inf")
        self.left = left
        self.right = right
        self.shape = (int(left.shape[0]), int(right.shape[1]))
        self.dtype = left.dtype
        self.device = left.device

    @property
    def rank(self) -> int:
        """Inner dimension ``s`` of the factorization (an upper bound on the rank of ``A``)."""
        return int(self.left.shape[1])

    def _matvec(self, x: Tensor) -> Tensor:
        return self.left @ (self.right @ x)

    def _rmatvec(self, y: Tensor) -> Tensor:
        return self.right.T @ (self.left.T @ y)

    def rows(self) -> Tensor:
        """The dense ``(q, p)`` matrix ``L R``."""
        return self.left @ self.right

    def gram(self) -> Tensor:
        r""":math:`A A^\top = L (R R^\top) L^\top`, without forming ``A``."""
        return self.left @ (self.right @ self.right.T) @ self.left.T

    def factor_products(
        self, blocks: Sequence[tuple[int, int]], U: Sequence[Tensor], V: Sequence[Tensor]
    ) -> Tensor:
        r"""Factor products through the factors (see :meth:`LinearOperator.factor_products`).

        Row ``i`` restricted to block ``j`` is :math:`A_i = \sum_t L_{it} R_t^{(j)}`, where
        :math:`R_t^{(j)}` is row ``t`` of ``right`` restricted to block ``j`` (``m_j x n_j``). So
        :math:`A_i V_j = \sum_t L_{it} R_t^{(j)} V_j`: the ``s`` products :math:`R_t^{(j)} V_j` are
        computed once and mixed by ``L`` (same for :math:`A_i^\top U_j`). Cost
        :math:`O(s\, m_j n_j r_j + q\, s\, (m_j + n_j) r_j)`; the dense ``(q, p)`` matrix is never formed.
        """
        if len(blocks) != len(U) or len(blocks) != len(V):
            raise UserInputError(
                f"U, V: expected one factor per block ({len(blocks)}), got {len(U)} and {len(V)}"
            )
        p = sum(int(m) * int(n) for m, n in blocks)
        if p != self.shape[1]:
            raise UserInputError(
                f"blocks: expected sizes summing to {self.shape[1]} columns, got {list(blocks)}"
            )
        _check_block_factors(blocks, U, V)
        s = self.rank
        parts, k0 = [], 0
        for (m, n), u, v in zip(blocks, U, V):
            Rb = self.right[:, k0 : k0 + m * n].reshape(s, m, n)
            k0 += m * n
            parts.append(self.left @ (Rb @ v).reshape(s, -1))
            parts.append(self.left @ (Rb.transpose(1, 2) @ u).reshape(s, -1))
        return torch.cat(parts, dim=1)

    def __repr__(self) -> str:
        return f"LowRankOperator(shape={self.shape}, rank={self.rank}, dtype={self.dtype})"


def _check_block_factors(blocks: Sequence[tuple[int, int]], U: Sequence[Tensor], V: Sequence[Tensor]) -> None:
    """Raise unless ``U[j]`` is ``m_j x r_j`` and ``V[j]`` is ``n_j x r_j`` for every block."""
    for j, ((m, n), u, v) in enumerate(zip(blocks, U, V)):
        if u.ndim != 2 or u.shape[0] != m or v.ndim != 2 or v.shape[0] != n or u.shape[1] != v.shape[1]:
            raise UserInputError(
                f"U[{j}], V[{j}]: expected shapes ({m}, r) and ({n}, r), "
                f"got {tuple(u.shape)} and {tuple(v.shape)}"
            )


def _checked_output(name: str, out: Tensor, size: int) -> Tensor:
    """``out`` if it is a vector of length ``size``; else raise naming the user's ``name`` function."""
    if out.shape != (size,):
        raise UserInputError(f"{name}: expected an output of shape ({size},), got {tuple(out.shape)}")
    return out


class FunctionOperator(LinearOperator):
    """An operator given by two functions (e.g. ``jvp``/``vjp`` of a model): nothing is stored."""

    def __init__(
        self,
        matvec: Callable[[Tensor], Tensor],
        rmatvec: Callable[[Tensor], Tensor],
        shape: tuple[int, int],
        *,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
    ) -> None:
        if len(shape) != 2 or any(int(s) < 1 for s in shape):
            raise UserInputError(f"shape: expected two positive ints, got {shape!r}")
        self._mv, self._rmv = matvec, rmatvec
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = dtype
        self.device = torch.device(device)

    def _matvec(self, x: Tensor) -> Tensor:
        return _checked_output("matvec", self._mv(x), self.shape[0])

    def _rmatvec(self, y: Tensor) -> Tensor:
        return _checked_output("rmatvec", self._rmv(y), self.shape[1])

    def __repr__(self) -> str:
        return f"FunctionOperator(shape={self.shape}, dtype={self.dtype})"


@dataclass(frozen=True)
class TokenBucket:
    r"""The token factors of a group of examples, padded to one length ``T``.

    ``examples``: the examples' indices, shape ``(B,)``; ``inputs[j]``: the input of adapted block
    ``j`` at every token, ``(B, T, n_j)``; ``grads[j]``: the derivative of output ``k`` with
    respect to the block's output at every token, ``(K, B, T, m_j)``.  A padding token carries
    zero ``grads`` (nothing downstream reads it).
    """

    examples: Tensor
    inputs: tuple[Tensor, ...]
    grads: tuple[Tensor, ...]


class TokenOperator(LinearOperator):
    r"""A Jacobian of adapted linear layers, kept as its token factors: ``J`` is never formed.

    Row :math:`(e, k)` of ``J`` (example-major, ``K`` outputs) restricted to block ``j`` is a sum
    over the example's tokens,

    .. math:: \operatorname{mat}_j(J_{e,k}) = \sum_{t \in e} \delta^{(j)}_{k,t}\, x^{(j)\top}_t,

    with :math:`x_t` the layer's input and :math:`\delta_{k,t}` the derivative of output ``k``
    with respect to the layer's output at token ``t``.  So, per block and ``L`` tokens in all,

    * :math:`J \operatorname{vec} D`: :math:`\sum_t \delta_{k,t}^\top (D x_t)`, :math:`O(L m n)`;
    * :math:`\operatorname{mat}_j(J^\top w) = \sum_t (\sum_k w_{e(t),k} \delta_{k,t}) x_t^\top`,
      :math:`O(L m n)`;
    * the factor products :math:`A_i V = \sum_t \delta_t (x_t^\top V)` and
      :math:`A_i^\top U = \sum_t x_t (\delta_t^\top U)`, :math:`O(L K (m + n) r)`;

    against :math:`O(K N m n)` numbers read per product for the dense ``J``.  Storage is
    :math:`L (n + K m)` numbers per block (:meth:`nbytes`).
    """

    cheap_factor_products = True

    def __init__(
        self, N: int, K: int, blocks: Sequence[tuple[int, int]], buckets: Sequence[TokenBucket]
    ) -> None:
        if isinstance(N, bool) or not isinstance(N, int) or N < 1:
            raise UserInputError(f"N: expected a positive int, got {N!r}")
        if isinstance(K, bool) or not isinstance(K, int) or K < 1:
            raise UserInputError(f"K: expected a positive int, got {K!r}")
        self.blocks = tuple((int(m), int(n)) for m, n in blocks)
        if not self.blocks or any(m < 1 or n < 1 for m, n in self.blocks):
            raise UserInputError(f"blocks: expected positive (m, n) pairs, got {list(blocks)!r}")
        if not buckets:
            raise UserInputError("buckets: expected at least one TokenBucket, got none")
        first = buckets[0].inputs[0] if buckets[0].inputs else None
        if first is None:
            raise UserInputError("buckets[0].inputs: expected one tensor per block, got none")
        self.dtype, self.device = first.dtype, first.device
        seen = torch.zeros(N, dtype=torch.long, device=self.device)
        for i, b in enumerate(buckets):
            self._check_bucket(i, b, N, K)
            seen.index_add_(0, b.examples, torch.ones_like(b.examples))
        if not bool((seen == 1).all()):
            missing = int((seen == 0).sum())
            raise UserInputError(
                f"buckets: expected every example 0..{N - 1} exactly once, got {missing} missing and "
                f"{int((seen > 1).sum())} repeated"
            )
        self.N, self.K = N, K
        self.buckets = tuple(buckets)
        self.shape = (N * K, sum(m * n for m, n in self.blocks))

    def _check_bucket(self, i: int, b: TokenBucket, N: int, K: int) -> None:
        if not isinstance(b, TokenBucket):
            raise InputTypeError(f"buckets[{i}]: expected a TokenBucket, got {type(b).__name__}")
        e = b.examples
        if not isinstance(e, Tensor) or e.ndim != 1 or e.dtype != torch.long or e.numel() < 1:
            raise UserInputError(f"buckets[{i}].examples: expected a non-empty 1-D long tensor, got {e!r}")
        if int(e.min()) < 0 or int(e.max()) >= N:
            raise UserInputError(f"buckets[{i}].examples: expected indices in [0, {N}), got {e.tolist()}")
        if len(b.inputs) != len(self.blocks) or len(b.grads) != len(self.blocks):
            raise UserInputError(
                f"buckets[{i}]: expected {len(self.blocks)} inputs and grads (one per block), "
                f"got {len(b.inputs)} and {len(b.grads)}"
            )
        B = int(e.shape[0])
        for j, ((m, n), x, g) in enumerate(zip(self.blocks, b.inputs, b.grads)):
            for name, t, want in ((f"inputs[{j}]", x, (B, None, n)), (f"grads[{j}]", g, (K, B, None, m))):
                ok = isinstance(t, Tensor) and t.ndim == len(want)
                ok = ok and all(w is None or s == w for s, w in zip(t.shape, want))
                if not ok:
                    got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                    shown = "(" + ", ".join("T" if w is None else str(w) for w in want) + ")"
                    raise UserInputError(f"buckets[{i}].{name}: expected shape {shown}, got {got}")
                if t.dtype != self.dtype or t.device != self.device:
                    raise UserInputError(
                        f"buckets[{i}].{name}: expected {self.dtype} on {self.device}, "
                        f"got {t.dtype} on {t.device}"
                    )
            if g.shape[2] != x.shape[1]:
                raise UserInputError(
                    f"buckets[{i}]: expected grads[{j}] and inputs[{j}] over the same {x.shape[1]} tokens, "
                    f"got {g.shape[2]}"
                )

    def nbytes(self) -> int:
        """Memory held by the token factors."""
        return sum(t.numel() * t.element_size() for b in self.buckets for t in (*b.inputs, *b.grads))

    def _split(self, x: Tensor) -> list[Tensor]:
        sizes = [m * n for m, n in self.blocks]
        return [c.view(m, n) for c, (m, n) in zip(torch.split(x, sizes), self.blocks)]

    def _matvec(self, x: Tensor) -> Tensor:
        Ds = self._split(x)
        z = torch.empty(self.N, self.K, dtype=self.dtype, device=self.device)
        for b in self.buckets:
            acc = torch.zeros(int(b.examples.shape[0]), self.K, dtype=self.dtype, device=self.device)
            for D, xs, g in zip(Ds, b.inputs, b.grads):
                acc += torch.einsum("kbtm,btm->bk", g, xs @ D.T)
            z[b.examples] = acc
        return z.reshape(-1)

    def _rmatvec(self, y: Tensor) -> Tensor:
        W = y.view(self.N, self.K)
        S = [torch.zeros(m, n, dtype=self.dtype, device=self.device) for m, n in self.blocks]
        for b in self.buckets:
            w = W[b.examples]  # (B, K)
            for Sj, xs, g, (m, n) in zip(S, b.inputs, b.grads, self.blocks):
                Sj += torch.einsum("kbtm,bk->btm", g, w).reshape(-1, m).T @ xs.reshape(-1, n)
        return torch.cat([s.reshape(-1) for s in S])

    def rows(self) -> Tensor:
        """The dense ``(K N, p)`` matrix, one ``(B, m, n)`` product per bucket, output and block."""
        J = torch.empty(self.N, self.K, self.shape[1], dtype=self.dtype, device=self.device)
        for b in self.buckets:
            o = 0
            for (m, n), xs, g in zip(self.blocks, b.inputs, b.grads):
                for k in range(self.K):
                    J[b.examples, k, o : o + m * n] = (g[k].transpose(1, 2) @ xs).reshape(-1, m * n)
                o += m * n
        return J.view(self.N * self.K, -1)

    def lowrank_matvec(
        self, blocks: Sequence[tuple[int, int]], U: Sequence[Tensor], V: Sequence[Tensor]
    ) -> Tensor:
        r""":math:`J \operatorname{vec}(U V^\top)` as :math:`\sum_t (\delta_{k,t}^\top U)(V^\top x_t)`.

        Cost :math:`O(L K (m + n) r)`; ``U V^T`` is never formed.
        """
        z = torch.empty(self.N, self.K, dtype=self.dtype, device=self.device)
        for b in self.buckets:
            acc = torch.zeros(int(b.examples.shape[0]), self.K, dtype=self.dtype, device=self.device)
            for xs, g, u, v in zip(b.inputs, b.grads, U, V):
                acc += torch.einsum("kbtr,btr->bk", g @ u, xs @ v)
            z[b.examples] = acc
        return z.reshape(-1)

    def gradient_factors(
        self, blocks: Sequence[tuple[int, int]], y: Tensor, U: Sequence[Tensor], V: Sequence[Tensor]
    ) -> tuple[list[Tensor], list[Tensor]]:
        r""":math:`S_j V_j` and :math:`S_j^\top U_j` without forming :math:`S_j`.

        With :math:`\gamma_t = \sum_k y_{e(t),k} \delta_{k,t}`:
        :math:`S V = \sum_t \gamma_t (x_t^\top V)` and :math:`S^\top U = \sum_t x_t (\gamma_t^\top U)`;
        cost :math:`O(L (K m + (m + n) r))`.
        """
        W = y.view(self.N, self.K)
        SV = [
            torch.zeros(m, v.shape[1], dtype=self.dtype, device=self.device)
            for (m, _), v in zip(self.blocks, V)
        ]
        StU = [
            torch.zeros(n, u.shape[1], dtype=self.dtype, device=self.device)
            for (_, n), u in zip(self.blocks, U)
        ]
        for b in self.buckets:
            w = W[b.examples]
            for j, ((m, n), xs, g, u, v) in enumerate(zip(self.blocks, b.inputs, b.grads, U, V)):
                gam = torch.einsum("kbtm,bk->btm", g, w).reshape(-1, m)
                x2 = xs.reshape(-1, n)
                SV[j] += gam.T @ (x2 @ v)
                StU[j] += x2.T @ (gam @ u)
        return SV, StU

    def factor_products(
        self, blocks: Sequence[tuple[int, int]], U: Sequence[Tensor], V: Sequence[Tensor]
    ) -> Tensor:
        r"""Factor products from the token factors (see :meth:`LinearOperator.factor_products`).

        :math:`A_{e,k} V = \sum_{t \in e} \delta_{k,t} (x_t^\top V)` and
        :math:`A_{e,k}^\top U = \sum_{t \in e} x_t (\delta_{k,t}^\top U)`: :math:`O(L K (m + n) r)`.
        """
        if tuple(tuple(int(s) for s in bl) for bl in blocks) != self.blocks:
            raise UserInputError(f"blocks: expected {list(self.blocks)}, got {list(blocks)}")
        if len(U) != len(self.blocks) or len(V) != len(self.blocks):
            raise UserInputError(f"U, V: expected {len(self.blocks)} factors each, got {len(U)} and {len(V)}")
        _check_block_factors(self.blocks, U, V)
        widths = [(m + n) * u.shape[1] for (m, n), u in zip(self.blocks, U)]
        out = torch.empty(self.N, self.K, sum(widths), dtype=self.dtype, device=self.device)
        for b in self.buckets:
            o = 0
            for (m, n), xs, g, u, v in zip(self.blocks, b.inputs, b.grads, U, V):
                r = u.shape[1]
                AV = torch.einsum("kbtm,btr->bkmr", g, xs @ v)
                AtU = torch.einsum("btn,kbtr->bknr", xs, g @ u)
                out[b.examples, :, o : o + m * r] = AV.reshape(*AV.shape[:2], m * r)
                out[b.examples, :, o + m * r : o + (m + n) * r] = AtU.reshape(*AtU.shape[:2], n * r)
                o += (m + n) * r
        return out.view(self.N * self.K, -1)

    def __repr__(self) -> str:
        return (
            f"TokenOperator(shape={self.shape}, dtype={self.dtype}, blocks={len(self.blocks)}, "
            f"tokens={sum(int(b.inputs[0].shape[0] * b.inputs[0].shape[1]) for b in self.buckets)})"
        )
