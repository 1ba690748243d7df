r"""The LoRA objective of a linearized problem and its gradient (closed form).

.. math:: F(U, V) = L(U V^\top) + \tfrac{\lambda}{2}\left(\|U\|_F^2 + \|V\|_F^2\right),

block by block (``U_j`` is ``m_j x r_j``, ``V_j`` is ``n_j x r_j``; LoRA's ``B A`` is ``U V^T``).
With :math:`S_j = \nabla_{D_j} L(UV^\top)` the gradient is
:math:`(S_j V_j + \lambda_j U_j,\; S_j^\top U_j + \lambda_j V_j)`.  Because
:math:`\min_{UV^\top = D} (\|U\|_F^2 + \|V\|_F^2)/2 = \|D\|_*`, the minimum of ``F`` equals the NUC
minimum once ``r_j`` is at least the rank of a NUC minimizer [JLR24].

Every function takes an optional ``perturbation``: one symmetric matrix :math:`C_j` of size
:math:`m_j + n_j` per block, adding :math:`\tfrac12\langle C_j, R_j R_j^\top\rangle` with
:math:`R_j = [U_j; V_j]` to ``F``.  A full random symmetric ``C_j`` is reading (a) of the
perturbed objective of [JLR24] (a perturbed regularizer); ``C_j = [[0, P_j], [P_j^T, 0]]`` gives
:math:`\langle P_j, U_j V_j^\top\rangle`, reading (b) (a random linear term).  See
:func:`random_perturbation`.

Second derivatives (HVP, dense Hessian, :math:`\lambda_{\min}`) are in :mod:`landscapes.curvature`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from landscapes.losses import SquaredLoss
from landscapes.operators import DenseOperator
from landscapes.problem import Blocks, Problem, check_matrix
from theory.errors import UserInputError

__all__ = [
    "LoRAPoint",
    "LoRATrainingResult",
    "lora_value",
    "lora_value_and_grad",
    "prediction_jacobian",
    "random_perturbation",
    "check_perturbation",
    "check_factors",
    "check_finite_factors",
    "balanced_factors",
    "product",
    "random_factors",
    "minimize_lora",
]


@dataclass(frozen=True)
class LoRAPoint:
    """LoRA factors, one ``(U_j, V_j)`` pair per block; ``D_j = U_j V_j^T``."""

    U: Blocks
    V: Blocks

    @property
    def ranks(self) -> tuple[int, ...]:
        """Number of columns of each factor pair (the LoRA rank per block)."""
        return tuple(int(u.shape[1]) for u in self.U)


def check_factors(problem: Problem, U: Sequence[Tensor], V: Sequence[Tensor]) -> None:
    """Raise ``ValueError`` unless ``U, V`` hold one pair ``(m_j, r), (n_j, r)`` with ``r >= 1`` per block."""
    if len(U) != len(problem.blocks) or len(V) != len(problem.blocks):
        raise UserInputError(
            f"U, V: expected {len(problem.blocks)} factor pairs (one per block), got {len(U)} and {len(V)}"
        )
    for j, ((m, n), u, v) in enumerate(zip(problem.blocks, U, V)):
        if u.ndim != 2 or v.ndim != 2 or u.shape[0] != m or v.shape[0] != n or u.shape[1] != v.shape[1]:
            raise UserInputError(
                f"U[{j}], V[{j}]: expected shapes ({m}, r) and ({n}, r) with the same r, "
                f"got {tuple(u.shape)} and {tuple(v.shape)}"
            )
        if u.shape[1] < 1:
            raise UserInputError(f"U[{j}]: expected rank r >= 1, got r = {u.shape[1]}")


def check_finite_factors(U: Sequence[Tensor], V: Sequence[Tensor]) -> None:
    """Raise ``ValueError`` naming the block when a factor has NaN or inf entries."""
    for j, (u, v) in enumerate(zip(U, V)):
        if not (bool(torch.isfinite(u).all()) and bool(torch.isfinite(v).all())):
            raise UserInputError(f"U[{j}], V[{j}]: expected finite factors, got NaN or inf")


def product(U: Sequence[Tensor], V: Sequence[Tensor]) -> Blocks:
    """``D_j = U_j V_j^T`` for each block."""
    return tuple(u @ v.T for u, v in zip(U, V))


class _CheckedPerturbation(tuple):  # type: ignore[type-arg]
    """A perturbation already validated for a problem (validation scans every entry)."""

    problem_id: int


def check_perturbation(problem: Problem, perturbation: Sequence[Tensor] | None) -> Blocks | None:
    """Validate a perturbation: one finite symmetric ``(m_j + n_j)``-square matrix per block.

    Returns a tuple marked as checked for this problem, so that the inner loops (every
    objective and gradient evaluation) do not scan the matrices again.
    """
    if perturbation is None:
        return None
    if (
        isinstance(perturbation, _CheckedPerturbation)
        and perturbation.problem_id == id(problem)
        and all(C.shape == (m + n, m + n) for C, (m, n) in zip(perturbation, problem.blocks))
    ):
        return perturbation
    if isinstance(perturbation, Tensor) or len(perturbation) != len(problem.blocks):
        got = "a single tensor" if isinstance(perturbation, Tensor) else f"{len(perturbation)} matrices"
        raise UserInputError(
            f"perturbation: expected {len(problem.blocks)} matrices (one per block), got {got}"
        )
    for j, ((m, n), C) in enumerate(zip(problem.blocks, perturbation)):
        C = check_matrix(f"perturbation[{j}]", C, m + n, m + n, problem.dtype)
        asym = float((C - C.T).abs().max()) if C.numel() else 0.0
        if asym > 1e-12 * max(1.0, float(C.abs().max())):
            raise UserInputError(
                f"perturbation[{j}]: expected a symmetric matrix, got max |C - C^T| = {asym:.3g}"
            )
    checked = _CheckedPerturbation(perturbation)
    checked.problem_id = id(problem)
    return checked


def random_perturbation(
    problem: Problem,
    *,
    form: Literal["symmetric", "linear"],
    scale: float,
    generator: torch.Generator,
) -> Blocks:
    r"""A random perturbation of the LoRA objective (see the module docstring).

    ``"symmetric"``: :math:`C_j = \text{scale}\,(G + G^\top)/\sqrt{2(m_j+n_j)}`, ``G`` standard
    Gaussian (so :math:`\|C_j\|_{op} \approx 2\,\text{scale}`).  ``"linear"``:
    :math:`C_j = [[0, P_j], [P_j^\top, 0]]` with :math:`P_j = \text{scale}\,G/\sqrt{\max(m_j, n_j)}`
    (:math:`\|P_j\|_{op} \lesssim 2\,\text{scale}`), i.e. the term :math:`\langle P_j, U_j V_j^\top\rangle`.
    """
    if form not in ("symmetric", "linear"):
        raise UserInputError(f"form: expected 'symmetric' or 'linear', got {form!r}")
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale >= 0):
        raise UserInputError(f"scale: expected a finite number >= 0, got {scale!r}")
    out = []
    for m, n in problem.blocks:
        if form == "symmetric":
            G = torch.randn(m + n, m + n, generator=generator, dtype=torch.float64)
            C = scale * (G + G.T) / math.sqrt(2.0 * (m + n))
        else:
            P = scale * torch.randn(m, n, generator=generator, dtype=torch.float64) / math.sqrt(max(m, n))
            C = torch.zeros(m + n, m + n, dtype=torch.float64)
            C[:m, m:] = P
            C[m:, :m] = P.T
        out.append(C.to(dtype=problem.dtype, device=problem.device))
    return tuple(out)


def _stack(u: Tensor, v: Tensor) -> Tensor:
    return torch.cat([u, v], dim=0)


def _perturbation_value(perturbation: Blocks | None, U: Sequence[Tensor], V: Sequence[Tensor]) -> float:
    if perturbation is None:
        return 0.0
    total = 0.0
    for C, u, v in zip(perturbation, U, V):
        R = _stack(u, v)
        total += 0.5 * float((R * (C @ R)).sum())
    return total


def lora_value(
    problem: Problem,
    U: Sequence[Tensor],
    V: Sequence[Tensor],
    *,
    perturbation: Sequence[Tensor] | None = None,
) -> float:
    """The LoRA objective ``F(U, V)`` (plus the perturbation term, if any)."""
    check_factors(problem, U, V)
    pert = check_perturbation(problem, perturbation)
    reg = sum(
        0.5 * lam * (float((u * u).sum()) + float((v * v).sum())) for lam, u, v in zip(problem.lam, U, V)
    )
    return problem.risk(product(U, V)) + reg + _perturbation_value(pert, U, V)


def lora_value_and_grad(
    problem: Problem,
    U: Sequence[Tensor],
    V: Sequence[Tensor],
    *,
    perturbation: Sequence[Tensor] | None = None,
) -> tuple[float, Blocks, Blocks]:
    r"""``F(U, V)`` and its gradient :math:`(S_j V_j + \lambda_j U_j, S_j^\top U_j + \lambda_j V_j)`.

    With a perturbation, :math:`C_j [U_j; V_j]` is added (split into its ``U`` and ``V`` rows).
    """
    check_factors(problem, U, V)
    pert = check_perturbation(problem, perturbation)
    J = problem.J
    if J.cheap_lowrank:  # token factors: never form U V^T or S (O(tokens (m + n) r) per block)
        z = problem.f0 + J.lowrank_matvec(problem.blocks, U, V).view(problem.N, problem.K)
        value = problem.risk_at(z)
        SV, StU = J.gradient_factors(
            problem.blocks, (problem.loss.grad(z, problem.y) / problem.N).reshape(-1), U, V
        )
    else:
        ev = problem.evaluate(product(U, V))
        value = ev.value
        SV, StU = [S @ v for S, v in zip(ev.S, V)], [S.T @ u for S, u in zip(ev.S, U)]
    reg = 0.0
    gU, gV = [], []
    for j, (lam, u, v, sv, stu) in enumerate(zip(problem.lam, U, V, SV, StU)):
        reg += 0.5 * lam * (float((u * u).sum()) + float((v * v).sum()))
        gu = sv + lam * u
        gv = stu + lam * v
        if pert is not None:
            CR = pert[j] @ _stack(u, v)
            reg += 0.5 * float((_stack(u, v) * CR).sum())
            gu = gu + CR[: u.shape[0]]
            gv = gv + CR[u.shape[0] :]
        gU.append(gu)
        gV.append(gv)
    return value + reg, tuple(gU), tuple(gV)


def prediction_jacobian(problem: Problem, U: Sequence[Tensor], V: Sequence[Tensor]) -> Tensor:
    r""":math:`\Phi = \partial z / \partial (U, V)`, shape ``(K N, P)``, in :func:`minimize_lora` order.

    Row ``i``: :math:`(\operatorname{vec}(A_i V_j), \operatorname{vec}(A_i^\top U_j))_j` with
    :math:`A_i = \operatorname{mat}(J_i)` restricted to block ``j``; one pass over ``J``'s rows
    (:meth:`~landscapes.operators.LinearOperator.factor_products`; an encoder's operator form
    computes it without ``J``).
    """
    check_factors(problem, U, V)
    return problem.J.factor_products(problem.blocks, U, V)


def balanced_factors(D: Sequence[Tensor], *, rank: int | Sequence[int] | None = None) -> LoRAPoint:
    r"""Balanced factors :math:`U = P\Sigma^{1/2}`, :math:`V = Q\Sigma^{1/2}` of :math:`D = P \Sigma Q^\top`.

    They satisfy :math:`U^\top U = V^\top V = \Sigma` and
    :math:`(\|U\|_F^2 + \|V\|_F^2)/2 = \|D\|_*`.  ``rank`` pads with zero columns (or truncates)
    to ``r`` columns per block; by default the numerical rank is kept.
    """
    Us, Vs = [], []
    ranks = [rank] * len(D) if (rank is None or isinstance(rank, int)) else list(rank)
    for j, Dj in enumerate(D):
        P, s, Qh = torch.linalg.svd(Dj, full_matrices=False)
        tol = 1e-12 * float(s[0]) if s.numel() and float(s[0]) > 0 else 0.0
        k = int((s > tol).sum()) if float(s[0] if s.numel() else 0) > 0 else 0
        r = ranks[j] if ranks[j] is not None else max(k, 1)
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise UserInputError(f"rank: expected a positive int, got {r!r}")
        kk = min(k, r)
        root = s[:kk].sqrt()
        u = torch.zeros(Dj.shape[0], r, dtype=Dj.dtype, device=Dj.device)
        v = torch.zeros(Dj.shape[1], r, dtype=Dj.dtype, device=Dj.device)
        u[:, :kk] = P[:, :kk] * root
        v[:, :kk] = Qh[:kk].T * root
        Us.append(u)
        Vs.append(v)
    return LoRAPoint(tuple(Us), tuple(Vs))


@dataclass(frozen=True)
class LoRATrainingResult:
    """End point of :func:`minimize_lora` with its cost and final gradient norm."""

    point: LoRAPoint
    value: float
    grad_norm: float
    iterations: int
    gradient_evaluations: int
    stopped_by_callback: bool
    message: str


def random_factors(
    problem: Problem, ranks: Sequence[int], *, scale: float, generator: torch.Generator
) -> LoRAPoint:
    """Gaussian factors ``U_j, V_j`` with i.i.d. ``N(0, scale^2)`` entries."""
    U, V = [], []
    for (m, n), r in zip(problem.blocks, ranks):
        U.append(scale * torch.randn(m, r, generator=generator, dtype=torch.float64).to(problem.dtype))
        V.append(scale * torch.randn(n, r, generator=generator, dtype=torch.float64).to(problem.dtype))
    return LoRAPoint(tuple(U), tuple(V))


def _fused_objective(
    problem: Problem, sizes: Sequence[tuple[int, int, int]]
) -> Callable[[Any], tuple[float, Any]]:
    """The LoRA objective and gradient on a flat float64 vector, for :func:`minimize_lora`'s loop.

    The same arithmetic as :func:`lora_value_and_grad` (no perturbation) without its per-call
    validation (the sizes are fixed once): one ``J`` product each way, and the gradient written
    straight into the returned array when the problem is float64 on the CPU.
    """
    import numpy as np

    J, f0, y, loss = problem.J, problem.f0, problem.y, problem.loss
    N, K = problem.N, problem.K
    lams = problem.lam
    direct = problem.dtype == torch.float64 and problem.device.type == "cpu"
    offsets, k = [], 0
    for m, n, r in sizes:
        offsets.append((k, k + m * r, k + (m + n) * r))
        k += (m + n) * r
    total = k

    if direct and isinstance(J, DenseOperator):
        # Small dense problems: numpy's per-call overhead is a few times below torch's, and at
        # KN x mn sizes like 64 x 4096 that overhead is most of an evaluation.
        Jn = J.matrix.numpy()
        f0n = f0.numpy()
        yn = y.numpy() if isinstance(loss, SquaredLoss) else None
        blocks = list(zip(offsets, sizes))

        def objective_np(x: Any) -> tuple[float, Any]:
            Ds = [x[a:b].reshape(m, r) @ x[b:c].reshape(n, r).T for (a, b, c), (m, n, r) in blocks]
            d = Ds[0].reshape(-1) if len(Ds) == 1 else np.concatenate([D.reshape(-1) for D in Ds])
            zn = f0n + (Jn @ d).reshape(N, K)
            if yn is not None:  # squared loss: 0.5 ||z - y||^2 per example, gradient z - y
                res = (zn - yn).reshape(-1)
                value = 0.5 * float(res @ res) / N
                s = Jn.T @ (res / N)
            else:
                z = torch.from_numpy(zn)
                value = float(loss.value(z, y).mean())
                s = Jn.T @ (loss.grad(z, y) / N).numpy().reshape(-1)
            out = np.empty(total)
            o = 0
            for lam, (a, b, c), (m, n, r) in zip(lams, offsets, sizes):
                S = s[o : o + m * n].reshape(m, n)
                o += m * n
                xa, xb = x[a:b], x[b:c]
                value += 0.5 * lam * (float(xa @ xa) + float(xb @ xb))
                np.matmul(S, xb.reshape(n, r), out=out[a:b].reshape(m, r))
                np.matmul(S.T, xa.reshape(m, r), out=out[b:c].reshape(n, r))
                out[a:c] += lam * x[a:c]
            return value, out

        return objective_np

    def objective(x: Any) -> tuple[float, Any]:
        t = torch.from_numpy(x)
        if not direct:
            t = t.to(dtype=problem.dtype, device=problem.device)
        Us = [t[a:b].view(m, r) for (a, b, _), (m, _n, r) in zip(offsets, sizes)]
        Vs = [t[b:c].view(n, r) for (_a, b, c), (_m, n, r) in zip(offsets, sizes)]
        Ds = [u @ v.T for u, v in zip(Us, Vs)]
        d = Ds[0].reshape(-1) if len(Ds) == 1 else torch.cat([D.reshape(-1) for D in Ds])
        z = f0 + J._matvec(d).reshape(N, K)
        value = float(loss.value(z, y).mean())
        s = J._rmatvec((loss.grad(z, y) / N).reshape(-1))
        out = np.empty(total)
        g = torch.from_numpy(out) if direct else torch.empty(total, dtype=t.dtype, device=t.device)
        o = 0
        for lam, u, v, (a, b, c), (m, n, _r) in zip(lams, Us, Vs, offsets, sizes):
            S = s[o : o + m * n].view(m, n)
            o += m * n
            value += 0.5 * lam * float(torch.dot(t[a:c], t[a:c]))
            torch.addmm(u, S, v, beta=lam, out=g[a:b].view_as(u))
            torch.addmm(v, S.T, u, beta=lam, out=g[b:c].view_as(v))
        if not direct:
            out[:] = g.detach().cpu().double().numpy()
        return value, out

    return objective


def minimize_lora(
    problem: Problem,
    *,
    rank: int | Sequence[int],
    init: LoRAPoint | None = None,
    seed: int = 0,
    init_scale: float = 1e-2,
    max_iter: int = 20000,
    callback: Callable[[LoRAPoint, int], bool] | None = None,
    callback_every: int = 25,
    grad_tol: float = 0.0,
    perturbation: Sequence[Tensor] | None = None,
) -> LoRATrainingResult:
    r"""Minimize the LoRA objective with L-BFGS (:func:`landscapes.lbfgs.lbfgs`, memory 20).

    ``grad_tol`` stops at the first accepted iterate whose gradient has Euclidean norm at most
    ``grad_tol`` (0: never); ``perturbation`` minimizes the perturbed objective.

    Starts from ``init`` or from Gaussian factors of scale ``init_scale`` (seeded by ``seed``);
    ``rank`` is one rank for all blocks or one per block (capped at ``min(m_j, n_j)``).  Every
    ``callback_every`` iterations ``callback(point, iteration)`` may return ``True`` to stop
    (used to stop on a certificate).  Runs until the callback stops it, ``max_iter``, or the
    round-off floor (``"no_progress"``, or no step satisfies the Wolfe conditions); ``message``
    says which.
    """
    import numpy as np

    from landscapes.lbfgs import lbfgs
    from landscapes.threads import scipy_blas_single_thread

    ranks = [rank] * len(problem.blocks) if isinstance(rank, int) else list(rank)
    if len(ranks) != len(problem.blocks):
        raise UserInputError(f"rank: expected one rank or {len(problem.blocks)}, got {len(ranks)}")
    for r in ranks:
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise UserInputError(f"rank: expected a positive int (rank >= 1), got {r!r}")
    if init is None:
        ranks = [min(r, m, n) for r, (m, n) in zip(ranks, problem.blocks)]
        init = random_factors(problem, ranks, scale=init_scale, generator=torch.Generator().manual_seed(seed))
    else:
        check_factors(problem, init.U, init.V)
        ranks = list(init.ranks)
    pert = check_perturbation(problem, perturbation)
    if not (isinstance(grad_tol, (int, float)) and grad_tol >= 0):
        raise UserInputError(f"grad_tol: expected a number >= 0, got {grad_tol!r}")
    sizes = [(m, n, r) for (m, n), r in zip(problem.blocks, ranks)]
    x0 = torch.cat([torch.cat([u.reshape(-1), v.reshape(-1)]) for u, v in zip(init.U, init.V)])
    x0_np = x0.detach().cpu().double().numpy()

    def split(x: np.ndarray) -> LoRAPoint:
        t = torch.from_numpy(np.ascontiguousarray(x)).to(dtype=problem.dtype, device=problem.device)
        U, V, k = [], [], 0
        for m, n, r in sizes:
            U.append(t[k : k + m * r].reshape(m, r))
            k += m * r
            V.append(t[k : k + n * r].reshape(n, r))
            k += n * r
        return LoRAPoint(tuple(U), tuple(V))

    def perturbed(x: np.ndarray) -> tuple[float, np.ndarray]:
        pt = split(x)
        f, gU, gV = lora_value_and_grad(problem, pt.U, pt.V, perturbation=pert)
        g = torch.cat([torch.cat([a.reshape(-1), b.reshape(-1)]) for a, b in zip(gU, gV)])
        return f, g.detach().cpu().double().numpy()

    objective = _fused_objective(problem, sizes) if pert is None else perturbed

    def stop(x: np.ndarray, g: np.ndarray, k: int) -> bool:
        if grad_tol > 0 and float(np.linalg.norm(g)) <= grad_tol:
            return True
        return callback is not None and k % callback_every == 0 and bool(callback(split(x), k))

    with scipy_blas_single_thread():
        res = lbfgs(objective, x0_np, memory=20, max_iter=max_iter, callback=stop)
    pt = split(res.x)
    f, gU, gV = lora_value_and_grad(problem, pt.U, pt.V, perturbation=pert)
    gn = float(torch.cat([torch.cat([a.reshape(-1), b.reshape(-1)]) for a, b in zip(gU, gV)]).norm())
    return LoRATrainingResult(
        point=pt,
        value=f,
        grad_norm=gn,
        iterations=res.iterations,
        gradient_evaluations=res.evaluations + 1,
        stopped_by_callback=res.stopped == "callback",
        message=res.stopped,
    )
