r"""LoRA without linearization: a smooth loss of the adapted matrices, by autodiff ([KKR25]).

A :class:`NonlinearProblem` holds a twice-differentiable risk :math:`L_{\mathrm{full}}(X)` of the
weight changes :math:`X = (X_1, \dots, X_b)` (block ``j`` of shape ``m_j x n_j``) and the weight
decays :math:`\lambda_j`.  Its LoRA objective ([KKR25], with :math:`X_j = A_j B_j^\top`) is

.. math:: L^{\mathrm{lora}}_\lambda(A, B) = L_{\mathrm{full}}(AB^\top)
          + \tfrac12\sum_j \lambda_j (\|A_j\|_F^2 + \|B_j\|_F^2),

and :math:`L^{\mathrm{full}}_\lambda(X) = L_{\mathrm{full}}(X) + \sum_j \lambda_j\|X_j\|_*` the convex-penalty
problem it matches at its global minima.  Value, gradient and Hessian-vector products come from
``torch.autograd`` / ``torch.func`` on the risk (nothing is linearized); the LoRA factors use the
same convention as :mod:`landscapes.lora` (``U = A``, ``V = B``).

Synthetic families (each with its planted :math:`X^\star`, seeded):

* :func:`matrix_sensing` -- :math:`L(X) = \frac{1}{2N}\sum_i (\langle M_i, X\rangle - y_i)^2` with
  Gaussian :math:`M_i` and :math:`y_i = \langle M_i, X^\star\rangle` (+ noise); a planted rank-``r*``
  :math:`X^\star` with singular values spread by ``condition``.  Well-conditioned with many
  measurements it is the textbook special-regime example; ill-conditioned or with few
  measurements its restricted constants drift apart.
* :func:`nonlinear_sensing` -- the same measurements through a link,
  :math:`L(X) = \frac{1}{2N}\sum_i (\phi(\langle M_i, X\rangle) - y_i)^2`, :math:`\phi = \tanh`
  by default: not convex in ``X``.
* :func:`two_layer` -- a two-layer network :math:`f(x) = C \tanh((W_0 + X) x)` with a planted
  low-rank teacher :math:`X^\star` (squared loss on the teacher's outputs).
* :func:`attention_block` -- one softmax attention head, :math:`W_Q` adapted, mean-pooled into a
  linear head, with a planted teacher.
* :func:`from_problem` -- a linearized :class:`~landscapes.problem.Problem` seen through the same
  interface (for comparing constants with and without linearization).

``matrix_sensing(measurement_condition=k)`` draws :math:`\operatorname{vec} M_i` with covariance
of condition number ``k`` (so :math:`\mathbb E \nabla^2 L` is ill-conditioned): the generic
regime's textbook case.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from landscapes.problem import Problem, check_block_matrices
from theory.errors import InputTypeError, UserInputError

__all__ = [
    "Blocks",
    "NonlinearProblem",
    "matrix_sensing",
    "quadratic_sensing",
    "nonlinear_sensing",
    "SensingStructure",
    "two_layer",
    "attention_block",
    "from_problem",
    "double_well",
    "double_well_points",
    "double_well_minimum",
    "shifted",
]

Blocks = tuple[Tensor, ...]


@dataclass(frozen=True, eq=False)
class NonlinearProblem:
    """A smooth risk of the adapted matrices, with weight decays (see the module docstring).

    Attributes
    ----------
    risk
        ``risk(X) -> Tensor`` (a 0-d tensor), ``X`` a tuple of one matrix per block; must be
        differentiable twice by torch (autograd and ``torch.func``).
    blocks
        ``(m_j, n_j)`` per block.
    lam
        Weight decay per block (``>= 0``).
    x_star
        A planted or certified minimizer of the risk, when known (the [KKR25] constants are
        measured about it).
    name, meta
        For reports.
    linear
        The same risk as a linearized :class:`~landscapes.problem.Problem`, when it is one
        (matrix sensing, :func:`from_problem`): its risk is convex, so the certified NUC solver
        decides global optimality of the penalized problem.
    test_risk
        The risk on held-out data (same planted model, fresh inputs), when the family has one.
    batch_risk
        ``batch_risk(X, idx)``: the risk on the examples ``idx`` (a mean, like ``risk``), for
        minibatch SGD; ``meta["N"]`` is then the number of examples.
    """

    risk: Callable[[Blocks], Tensor]
    blocks: tuple[tuple[int, int], ...]
    lam: tuple[float, ...]
    dtype: torch.dtype = torch.float64
    device: torch.device = torch.device("cpu")
    x_star: Blocks | None = None
    name: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    linear: Any = None
    test_risk: Callable[[Blocks], Tensor] | None = None
    batch_risk: Callable[[Blocks, Tensor], Tensor] | None = None

    def __post_init__(self) -> None:
        if not callable(self.risk):
            raise InputTypeError(f"risk: expected a callable X -> 0-d tensor, got {type(self.risk).__name__}")
        blocks = tuple((int(m), int(n)) for m, n in self.blocks)
        if not blocks or any(m < 1 or n < 1 for m, n in blocks):
            raise UserInputError(
                f"blocks: expected a non-empty list of positive (m, n), got {list(self.blocks)}"
            )
        object.__setattr__(self, "blocks", blocks)
        lam = tuple(float(x) for x in self.lam)
        if len(lam) != len(blocks) or any(not (x >= 0 and math.isfinite(x)) for x in lam):
            raise UserInputError(
                f"lam: expected {len(blocks)} finite values >= 0 (one per block), got {list(self.lam)}"
            )
        object.__setattr__(self, "lam", lam)
        if self.x_star is not None:
            object.__setattr__(self, "x_star", self.check_point(self.x_star, "x_star"))
        if self.linear is not None:
            lin_blocks = tuple(tuple(b) for b in getattr(self.linear, "blocks", ()))
            if lin_blocks != blocks or tuple(getattr(self.linear, "lam", ())) != lam:
                raise UserInputError(
                    f"linear: expected a Problem with blocks {list(blocks)} and lam {list(lam)}, "
                    f"got {type(self.linear).__name__} with blocks {list(lin_blocks)}"
                )
        for name in ("test_risk", "batch_risk"):
            f = getattr(self, name)
            if f is not None and not callable(f):
                raise InputTypeError(f"{name}: expected None or a callable, got {type(f).__name__}")

    # ---- points --------------------------------------------------------------------------------
    def check_point(self, X: Sequence[Tensor], name: str = "X") -> Blocks:
        """Validate one matrix per block (shape, dtype, device, finite entries) and return them as a tuple."""
        if isinstance(X, Tensor) and len(self.blocks) == 1:
            X = (X,)
        return check_block_matrices(name, X, self.blocks, dtype=self.dtype, device=self.device)

    def zeros(self) -> Blocks:
        """``X = 0`` (the pretrained weights)."""
        return tuple(torch.zeros(m, n, dtype=self.dtype, device=self.device) for m, n in self.blocks)

    # ---- the full-matrix risk -------------------------------------------------------------------
    def value(self, X: Sequence[Tensor]) -> float:
        r""":math:`L_{\mathrm{full}}(X)`."""
        with torch.no_grad():
            return float(self.risk(self.check_point(X)))

    def grad(self, X: Sequence[Tensor]) -> Blocks:
        r""":math:`\nabla L_{\mathrm{full}}(X)` by autograd."""
        Xs = [x.detach().clone().requires_grad_(True) for x in self.check_point(X)]
        with torch.enable_grad():
            g = torch.autograd.grad(self.risk(tuple(Xs)), Xs)
        return tuple(x.detach() for x in g)

    def hvp(self, X: Sequence[Tensor], Z: Sequence[Tensor]) -> Blocks:
        r""":math:`\nabla^2 L_{\mathrm{full}}(X)[Z]` (forward-over-reverse, ``torch.func``)."""
        Xs = self.check_point(X)
        Zs = self.check_point(Z, "Z")

        def g(*xs: Tensor) -> tuple[Tensor, ...]:
            return torch.func.grad(lambda *ys: self.risk(tuple(ys)), argnums=tuple(range(len(xs))))(*xs)

        out = torch.func.jvp(g, tuple(Xs), tuple(Zs))[1]
        return tuple(out)

    def curvature(self, X: Sequence[Tensor], Z: Sequence[Tensor]) -> float:
        r""":math:`\nabla^2 L_{\mathrm{full}}(X)[Z, Z]`."""
        return float(sum((h * z).sum() for h, z in zip(self.hvp(X, Z), self.check_point(Z, "Z"))))

    def test_value(self, X: Sequence[Tensor]) -> float:
        """The held-out risk at ``X`` (``nan`` when the family has no test data)."""
        if self.test_risk is None:
            return math.nan
        with torch.no_grad():
            return float(self.test_risk(self.check_point(X)))

    def penalized(self, X: Sequence[Tensor]) -> float:
        r""":math:`L^{\mathrm{full}}_\lambda(X) = L_{\mathrm{full}}(X) + \sum_j \lambda_j \|X_j\|_*`."""
        Xs = self.check_point(X)
        return self.penalized_at(Xs, self.value(Xs))

    def penalized_at(self, X: Sequence[Tensor], risk: float) -> float:
        r"""The penalized value at ``X`` from its already computed risk (no checks)."""
        return risk + sum(lam * float(torch.linalg.matrix_norm(x, ord="nuc")) for lam, x in zip(self.lam, X))

    # ---- the LoRA objective --------------------------------------------------------------------
    def lora_value_and_grad(self, A: Sequence[Tensor], B: Sequence[Tensor]) -> tuple[float, Blocks, Blocks]:
        r""":math:`L^{\mathrm{lora}}_\lambda(A, B)` and its gradient, by autograd (``X_j = A_j B_j^T``)."""
        As = [a.detach().clone().requires_grad_(True) for a in A]
        Bs = [b.detach().clone().requires_grad_(True) for b in B]
        self.check_point(tuple(a @ b.T for a, b in zip(As, Bs)), "A B^T")
        with torch.enable_grad():
            X = tuple(a @ b.T for a, b in zip(As, Bs))
            f = self.risk(X) + sum(
                0.5 * lam * ((a * a).sum() + (b * b).sum()) for lam, a, b in zip(self.lam, As, Bs)
            )
            grads = torch.autograd.grad(f, As + Bs)
        k = len(As)
        return float(f.detach()), tuple(g.detach() for g in grads[:k]), tuple(g.detach() for g in grads[k:])

    def lora_objective(self, A: Sequence[Tensor], B: Sequence[Tensor]) -> Tensor:
        r"""The LoRA objective :math:`L^{\mathrm{lora}}_\lambda(A, B)`, differentiable (no checks)."""
        X = tuple(a @ b.T for a, b in zip(A, B))
        return self.risk(X) + sum(
            0.5 * lam * ((a * a).sum() + (b * b).sum()) for lam, a, b in zip(self.lam, A, B)
        )

    def lora_hvp(
        self, A: Sequence[Tensor], B: Sequence[Tensor], dA: Sequence[Tensor], dB: Sequence[Tensor]
    ) -> tuple[Blocks, Blocks]:
        r"""Hessian-vector product of the LoRA objective at ``(A, B)`` along ``(dA, dB)`` (``torch.func``)."""
        k = len(A)

        def g(*ab: Tensor) -> tuple[Tensor, ...]:
            return torch.func.grad(
                lambda *xs: self.lora_objective(xs[:k], xs[k:]), argnums=tuple(range(2 * k))
            )(*ab)

        out = torch.func.jvp(g, tuple(A) + tuple(B), tuple(dA) + tuple(dB))[1]
        return tuple(out[:k]), tuple(out[k:])


def _check_sizes(**sizes: int) -> None:
    """Raise ``ValueError`` naming the first of ``sizes`` (in order) that is not a positive int."""
    for name, v in sizes.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise UserInputError(f"{name}: expected a positive int, got {v!r}")


def _check_n_test(n_test: int) -> None:
    if isinstance(n_test, bool) or not isinstance(n_test, int) or n_test < 0:
        raise UserInputError(f"n_test: expected an int >= 0 (held-out examples), got {n_test!r}")


def _planted(m: int, n: int, rank: int, condition: float, scale: float, gen: torch.Generator) -> Tensor:
    """A rank-``rank`` matrix, singular values from ``scale`` down to ``scale / condition`` (geometric)."""
    P, _ = torch.linalg.qr(torch.randn(m, rank, generator=gen, dtype=torch.float64))
    Q, _ = torch.linalg.qr(torch.randn(n, rank, generator=gen, dtype=torch.float64))
    if rank == 1:
        sv = torch.tensor([scale], dtype=torch.float64)
    else:
        sv = scale * condition ** (-torch.arange(rank, dtype=torch.float64) / (rank - 1))
    return (P * sv) @ Q.T


def _sensing_inputs(
    m: int,
    n: int,
    N: int,
    rank: int,
    condition: float,
    scale: float,
    seed: int,
    measurement_condition: float = 1.0,
    n_test: int = 0,
) -> tuple[Tensor, Tensor, Tensor]:
    _check_sizes(m=m, n=n, N=N, rank=rank)
    if rank > min(m, n):
        raise UserInputError(f"rank: expected at most min(m, n) = {min(m, n)}, got {rank}")
    _check_n_test(n_test)
    if not (isinstance(condition, (int, float)) and condition >= 1 and math.isfinite(condition)):
        raise UserInputError(f"condition: expected a finite number >= 1, got {condition!r}")
    if not (isinstance(measurement_condition, (int, float)) and 1 <= measurement_condition < math.inf):
        raise UserInputError(
            f"measurement_condition: expected a finite number >= 1, got {measurement_condition!r}"
        )
    gen = torch.Generator().manual_seed(seed)
    M = torch.randn(N, m, n, generator=gen, dtype=torch.float64)
    Xs = _planted(m, n, rank, float(condition), scale, gen)
    if measurement_condition > 1:
        # vec(M_i) = Q diag(s) g_i with s^2 log-spaced from 1 down to 1 / measurement_condition.
        p = m * n
        Q, _ = torch.linalg.qr(torch.randn(p, p, generator=gen, dtype=torch.float64))
        s = measurement_condition ** (-0.5 * torch.arange(p, dtype=torch.float64) / max(p - 1, 1))
        M = ((M.reshape(N, p) * s) @ Q.T).reshape(N, m, n)
    # Held-out measurements come last from the generator, so the training draws do not depend
    # on how many there are.
    M_test = torch.randn(n_test, m, n, generator=gen, dtype=torch.float64)
    if measurement_condition > 1:
        M_test = ((M_test.reshape(n_test, p) * s) @ Q.T).reshape(n_test, m, n)
    return M, Xs, M_test


def _sensing_risk(
    Mflat: Tensor, y: Tensor, link: Callable[[Tensor], Tensor] | None = None
) -> Callable[[Blocks], Tensor]:
    r"""The risk :math:`\frac{1}{2N}\sum_i (\phi(\langle M_i, X_1\rangle) - y_i)^2`, :math:`\phi` = ``link``.

    ``Mflat`` holds :math:`\operatorname{vec} M_i` (row-major) as rows; ``link=None`` is the
    identity (the quadratic risk).
    """

    def risk(X: Blocks) -> Tensor:
        z = Mflat @ X[0].reshape(-1)
        r = (z if link is None else link(z)) - y
        return 0.5 * (r * r).mean()

    return risk


def matrix_sensing(
    *,
    m: int,
    n: int,
    N: int,
    rank: int = 2,
    condition: float = 1.0,
    noise: float = 0.0,
    lam: float = 0.0,
    scale: float = 1.0,
    measurement_condition: float = 1.0,
    n_test: int = 200,
    seed: int = 0,
) -> NonlinearProblem:
    r"""Gaussian matrix sensing: :math:`L(X) = \frac{1}{2N}\sum_i (\langle M_i, X\rangle - y_i)^2`.

    ``M_i`` has i.i.d. :math:`\mathcal N(0, 1)` entries, so :math:`\mathbb E\,\nabla^2 L = I` (with
    ``measurement_condition = k > 1``, :math:`\operatorname{vec} M_i` has a covariance of condition
    number ``k`` instead);
    :math:`y_i = \langle M_i, X^\star\rangle + \text{noise}\cdot\varepsilon_i` with a planted
    rank-``rank`` :math:`X^\star` of top singular value ``scale`` and condition number
    ``condition``.  ``x_star`` is :math:`X^\star` (the risk's minimizer when ``noise = 0`` and
    ``N >= rank (m + n)``-ish; with ``lam > 0`` the penalized minimizer differs).  The risk is a
    convex quadratic, also given as a linearized ``Problem`` (``linear``); ``n_test`` held-out
    measurements of the same :math:`X^\star` give ``test_risk``.
    """
    M, Xs, M_test = _sensing_inputs(m, n, N, rank, condition, scale, seed, measurement_condition, n_test)
    gen = torch.Generator().manual_seed(seed + 1)
    y = torch.einsum("imn,mn->i", M, Xs) + noise * torch.randn(N, generator=gen, dtype=torch.float64)
    y_test = torch.einsum("imn,mn->i", M_test, Xs) + noise * torch.randn(
        n_test, generator=gen, dtype=torch.float64
    )
    return quadratic_sensing(
        M.reshape(N, m * n),
        y,
        shape=(m, n),
        lam=lam,
        x_star=Xs,
        M_test=M_test.reshape(n_test, m * n) if n_test > 0 else None,
        y_test=y_test if n_test > 0 else None,
        seed=seed,
        name=f"sensing-{m}x{n}-N{N}-r{rank}-c{condition:g}-k{measurement_condition:g}",
        meta=_family_meta(
            "matrix_sensing",
            N=N,
            rank=rank,
            condition=condition,
            measurement_condition=measurement_condition,
            noise=noise,
            seed=seed,
        ),
    )


def quadratic_sensing(
    Mflat: Tensor,
    y: Tensor,
    *,
    shape: tuple[int, int],
    lam: float,
    x_star: Tensor,
    name: str,
    meta: dict[str, Any],
    M_test: Tensor | None = None,
    y_test: Tensor | None = None,
    seed: int = 0,
    linear_name: str = "sensing-as-linear",
) -> NonlinearProblem:
    r"""The sensing risk :math:`\frac{1}{2N}\sum_i (\langle M_i, X\rangle - y_i)^2` of given measurements.

    ``Mflat`` holds :math:`\operatorname{vec} M_i` (row-major) as rows.  The problem carries the
    minibatch risk, the held-out risk when ``M_test``/``y_test`` are given, and the same risk as a
    linearized ``Problem`` (``linear``: f0 = 0, squared loss, mean), so the certified NUC solver and
    the eigenvalues of :math:`J^\top J/N` apply.
    """
    m, n = shape
    N = Mflat.shape[0]

    def batch_risk(X: Blocks, idx: Tensor) -> Tensor:
        return _sensing_risk(Mflat[idx], y[idx])(X)

    test_risk = None
    if M_test is not None and y_test is not None:
        test_risk = _sensing_risk(M_test, y_test)
    linear = Problem(
        Mflat,
        torch.zeros(N, 1, dtype=torch.float64),
        y.unsqueeze(1),
        loss="squared",
        blocks=[(m, n)],
        lam=lam,
        seed=seed,
        name=linear_name,
    )
    return NonlinearProblem(
        _sensing_risk(Mflat, y),
        ((m, n),),
        (lam,),
        x_star=(x_star,),
        linear=linear,
        test_risk=test_risk,
        batch_risk=batch_risk,
        name=name,
        meta=meta,
    )


_SENSING_LINKS = ("identity", "tanh", "softplus")


@dataclass(frozen=True, eq=False)
class SensingStructure:
    r"""The generalized-linear sensing form of a one-block risk.

    Read by :mod:`landscapes.nonlinear.restricted`.

    Declares :math:`L(X) = \frac{1}{2N}\sum_i (\phi(\langle M_i, X\rangle) - y_i)^2` exactly: ``M``
    of shape ``(N, m, n)``, ``y`` of shape ``(N,)``, ``link`` one of ``"identity"``, ``"tanh"``,
    ``"softplus"`` (:math:`\phi(z) = \log(1 + e^z)`).  :func:`nonlinear_sensing` attaches one to
    its risk function as ``risk.structure`` (read it with ``getattr(problem.risk, "structure",
    None)``): a risk built around another one (:func:`shifted`) is a new function without it, so
    the declaration never outlives the function it describes.
    """

    M: Tensor
    y: Tensor
    link: str

    def __post_init__(self) -> None:
        if self.link not in _SENSING_LINKS:
            raise UserInputError(f"link: expected one of {list(_SENSING_LINKS)}, got {self.link!r}")
        if not isinstance(self.M, Tensor) or self.M.ndim != 3:
            got = getattr(self.M, "shape", self.M)
            raise UserInputError(f"M: expected a tensor of shape (N, m, n), got {got!r}")
        if not isinstance(self.y, Tensor) or tuple(self.y.shape) != (self.M.shape[0],):
            got = getattr(self.y, "shape", self.y)
            raise UserInputError(f"y: expected a tensor of shape ({self.M.shape[0]},), got {got!r}")


def nonlinear_sensing(
    *,
    m: int,
    n: int,
    N: int,
    rank: int = 2,
    condition: float = 1.0,
    link: str = "tanh",
    lam: float = 0.0,
    scale: float = 1.0,
    n_test: int = 200,
    seed: int = 0,
) -> NonlinearProblem:
    r"""Sensing through a link: :math:`L(X) = \frac{1}{2N}\sum_i (\phi(\langle M_i, X\rangle) - y_i)^2`.

    :math:`y_i = \phi(\langle M_i, X^\star\rangle)`, so :math:`X^\star` is a global minimizer
    (risk 0); ``link`` is ``"tanh"`` or ``"softplus"``.  Not convex in ``X``.  The risk function
    carries its form as ``risk.structure``, a :class:`SensingStructure` (``M`` of shape
    ``(N, m, n)``, the targets ``y``, the link), from which
    :func:`landscapes.nonlinear.restricted.restricted_bounds`
    certifies restricted constants.  (``torch``'s softplus returns ``z`` itself above ``z = 20``,
    within :math:`\log(1 + e^{-20}) < 2.1\cdot 10^{-9}` of :math:`\log(1 + e^z)`; the structure
    describes the exact link.)
    """
    links: dict[str, Callable[[Tensor], Tensor]] = {
        "tanh": torch.tanh,
        "softplus": torch.nn.functional.softplus,
    }
    if link not in links:
        raise UserInputError(f"link: expected one of {sorted(links)}, got {link!r}")
    phi = links[link]
    M, Xs, M_test = _sensing_inputs(m, n, N, rank, condition, scale, seed, n_test=n_test)
    Mflat = M.reshape(N, m * n)
    Mflat_test = M_test.reshape(n_test, m * n)
    y = phi(Mflat @ Xs.reshape(-1))
    y_test = phi(Mflat_test @ Xs.reshape(-1))

    risk = _sensing_risk(Mflat, y, phi)
    # Machine-readable form of ``risk`` (for certified restricted constants); kept off ``meta``,
    # which reports serialize and :func:`shifted` copies onto a different risk.
    risk.structure = SensingStructure(M, y, link)  # type: ignore[attr-defined]
    return _planted_problem(
        risk,
        (m, n),
        lam,
        Xs,
        test_risk=_sensing_risk(Mflat_test, y_test, phi),
        n_test=n_test,
        name=f"{link}-sensing-{m}x{n}-N{N}-r{rank}-c{condition:g}",
        family="nonlinear_sensing",
        link=link,
        N=N,
        rank=rank,
        condition=condition,
        seed=seed,
    )


def _half_squared(
    predict: Callable[[Tensor, Tensor], Tensor], inputs: Tensor, y: Tensor, count: int
) -> Callable[[Blocks], Tensor]:
    r"""The risk :math:`\frac{1}{2\,\mathrm{count}}\sum_i \|f(X_1; x_i) - y_i\|^2`, ``f = predict``."""

    def risk(X: Blocks) -> Tensor:
        r = predict(X[0], inputs) - y
        return 0.5 * (r * r).sum() / count

    return risk


def _family_meta(family: str, **params: Any) -> dict[str, Any]:
    """The ``meta`` of a built-in family: its risk is nonnegative, its name, then ``params`` in order.

    (``risk_nonnegative`` gives :func:`~landscapes.nonlinear.penalized.minimize_penalized` the lower
    bound 0 on the risk.)
    """
    return {"risk_nonnegative": True, "family": family, **params}


def _planted_problem(
    risk: Callable[[Blocks], Tensor],
    shape: tuple[int, int],
    lam: float,
    x_star: Tensor,
    *,
    test_risk: Callable[[Blocks], Tensor],
    n_test: int,
    name: str,
    family: str,
    batch_risk: Callable[[Blocks, Tensor], Tensor] | None = None,
    **meta: Any,
) -> NonlinearProblem:
    """A one-block problem whose planted ``x_star`` is a global minimizer (a nonnegative risk, 0 there).

    ``test_risk`` is kept when there are held-out examples (``n_test > 0``); ``meta`` records the
    family and the construction's parameters, in order.
    """
    return NonlinearProblem(
        risk,
        (shape,),
        (lam,),
        x_star=(x_star,),
        test_risk=test_risk if n_test > 0 else None,
        batch_risk=batch_risk,
        name=name,
        meta=_family_meta(family, **meta),
    )


def _teacher_problem(
    predict: Callable[[Tensor, Tensor], Tensor],
    inputs: Tensor,
    test_inputs: Tensor,
    x_star: Tensor,
    lam: float,
    *,
    name: str,
    family: str,
    minibatch: bool = False,
    **meta: Any,
) -> NonlinearProblem:
    r"""The squared loss on a planted teacher: targets :math:`y_i = f(X^\star; x_i)`, ``f = predict``.

    ``predict(X_1, inputs)`` maps a batch of inputs (first axis) to outputs; the risk is
    :math:`\frac{1}{2N}\sum_i \|f(X_1; x_i) - y_i\|^2` over ``inputs`` (``test_inputs`` give the
    held-out risk), so ``x_star`` is a global minimizer (risk 0).  ``minibatch`` adds the same risk
    on a subset of the examples (``batch_risk``, for SGD).  ``name``, ``family`` and ``meta`` as in
    :func:`_planted_problem`.
    """
    y = predict(x_star, inputs)
    y_test = predict(x_star, test_inputs)
    batch_risk = None
    if minibatch:

        def batch_risk(X: Blocks, idx: Tensor) -> Tensor:
            return _half_squared(predict, inputs[idx], y[idx], len(idx))(X)

    n_test = len(test_inputs)
    return _planted_problem(
        _half_squared(predict, inputs, y, len(inputs)),
        (x_star.shape[0], x_star.shape[1]),
        lam,
        x_star,
        test_risk=_half_squared(predict, test_inputs, y_test, max(n_test, 1)),
        n_test=n_test,
        batch_risk=batch_risk,
        name=name,
        family=family,
        **meta,
    )


def _teacher_data(
    sample: tuple[int, ...],
    N: int,
    n_test: int,
    shape: tuple[int, int],
    rank: int,
    scale: float,
    gen: torch.Generator,
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Gaussian inputs, a planted teacher and held-out inputs, drawn from ``gen`` in that order.

    The ``N`` inputs and the ``n_test`` held-out ones have shape ``sample`` each; the teacher
    :math:`X^\star` of shape ``shape`` has rank ``rank`` and all its singular values equal to
    ``scale``.  The held-out inputs come last, so the training draws do not depend on ``n_test``.
    """
    m, n = shape
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= min(m, n):
        raise UserInputError(f"rank: expected an int in [1, min(m, n)] = [1, {min(m, n)}], got {rank!r}")
    inputs = torch.randn(N, *sample, generator=gen, dtype=torch.float64)
    x_star = _planted(m, n, rank, 1.0, scale, gen)
    test_inputs = torch.randn(n_test, *sample, generator=gen, dtype=torch.float64)
    return inputs, x_star, test_inputs


def two_layer(
    *,
    m: int,
    n: int,
    N: int,
    K: int = 2,
    rank: int = 1,
    lam: float = 0.0,
    scale: float = 1.0,
    n_test: int = 200,
    seed: int = 0,
) -> NonlinearProblem:
    r"""A two-layer network :math:`f(x) = C \tanh((W_0 + X)x)`, squared loss on a planted teacher.

    :math:`W_0` (``m x n``) has :math:`\mathcal N(0, 1/n)` entries, the head ``C`` (``K x m``)
    :math:`\mathcal N(0, 1/m)`, inputs :math:`x_i \sim \mathcal N(0, I_n)`; targets
    :math:`y_i = f(x_i)` at :math:`W_0 + X^\star` with a rank-``rank`` :math:`X^\star` whose
    singular values all equal ``scale``.  :math:`L(X) = \frac{1}{2N}\sum_i \|f(x_i) - y_i\|^2`, so
    :math:`X^\star` is a global minimizer (risk 0).
    """
    _check_n_test(n_test)
    _check_sizes(m=m, n=n, N=N, K=K)
    gen = torch.Generator().manual_seed(seed)
    W0 = torch.randn(m, n, generator=gen, dtype=torch.float64) / math.sqrt(n)
    C = torch.randn(K, m, generator=gen, dtype=torch.float64) / math.sqrt(m)
    x, Xs, x_test = _teacher_data((n,), N, n_test, (m, n), rank, scale, gen)

    def predict(X0: Tensor, inputs: Tensor) -> Tensor:
        return torch.tanh(inputs @ (W0 + X0).T) @ C.T

    return _teacher_problem(
        predict,
        x,
        x_test,
        Xs,
        lam,
        minibatch=True,
        name=f"two-layer-{m}x{n}-N{N}-K{K}-r{rank}",
        family="two_layer",
        N=N,
        K=K,
        rank=rank,
        scale=scale,
        seed=seed,
    )


def attention_block(
    *,
    d: int = 8,
    T: int = 6,
    N: int = 40,
    K: int = 2,
    rank: int = 1,
    lam: float = 0.0,
    scale: float = 1.0,
    n_test: int = 200,
    seed: int = 0,
) -> NonlinearProblem:
    r"""One softmax attention head with :math:`W_Q` adapted, a planted teacher and the squared loss.

    Tokens :math:`Z_i \in \mathbb R^{T \times d}` (Gaussian); the head computes
    :math:`\operatorname{softmax}(Z_i (W_Q + X) W_K^\top Z_i^\top / \sqrt d)\, Z_i W_V`, mean-pools
    over tokens and maps to ``K`` outputs with a fixed head; targets come from
    :math:`W_Q + X^\star` (rank ``rank``, singular values ``scale``), so :math:`X^\star` is a global
    minimizer.
    """
    _check_n_test(n_test)
    _check_sizes(d=d, T=T, N=N, K=K)
    gen = torch.Generator().manual_seed(seed)
    Wq, Wk, Wv = (torch.randn(d, d, generator=gen, dtype=torch.float64) / math.sqrt(d) for _ in range(3))
    head = torch.randn(K, d, generator=gen, dtype=torch.float64) / math.sqrt(d)
    Z, Xs, Z_test = _teacher_data((T, d), N, n_test, (d, d), rank, scale, gen)

    def predict(X0: Tensor, Z: Tensor) -> Tensor:
        att = torch.softmax(Z @ (Wq + X0) @ Wk.T @ Z.transpose(1, 2) / math.sqrt(d), dim=-1)
        return (att @ Z @ Wv).mean(dim=1) @ head.T

    return _teacher_problem(
        predict,
        Z,
        Z_test,
        Xs,
        lam,
        name=f"attention-d{d}-T{T}-N{N}-K{K}-r{rank}",
        family="attention_block",
        N=N,
        K=K,
        T=T,
        rank=rank,
        scale=scale,
        seed=seed,
    )


def from_problem(problem: Any, *, x_star: Sequence[Tensor] | None = None) -> NonlinearProblem:
    r"""A linearized :class:`~landscapes.problem.Problem` seen as a :class:`NonlinearProblem`.

    Its risk is :math:`\frac1N\sum_i \ell(f_0 + J_i \operatorname{vec} X, y_i)`, differentiated by
    autodiff (a cross-check of the closed forms, and the same interface for the [KKR25] constants).
    """
    J, f0, y, loss = problem.J, problem.f0, problem.y, problem.loss
    N, K = problem.N, problem.K

    def risk(X: Blocks) -> Tensor:
        z = f0 + J.matvec(torch.cat([x.reshape(-1) for x in X])).reshape(N, K)
        return loss.value(z, y).mean()

    return NonlinearProblem(
        risk,
        tuple(problem.blocks),
        tuple(problem.lam),
        dtype=problem.dtype,
        device=problem.device,
        x_star=tuple(x_star) if x_star is not None else None,
        linear=problem,
        name=(problem.name or "problem") + "-as-nonlinear",
        meta=dict(problem.meta, form="linearized", risk_nonnegative=True),
    )


def _well(x: Tensor, a: float, b: float) -> Tensor:
    return ((x - a) * (x - b)) ** 2 / 8


def double_well(*, lam: float = 0.05) -> NonlinearProblem:
    r"""A 2 x 2 problem whose global and spurious end points can be written down.

    .. math:: L(X) = w_{1,-3}(X_{11}) + w_{0,-3}(X_{22}) + \tfrac12 (X_{12}^2 + X_{21}^2),
              \qquad w_{a,b}(x) = (x - a)^2 (x - b)^2 / 8 .

    Each diagonal entry has two wells of depth 0; the nuclear penalty prefers the small one, so
    the penalized global minimizer is :math:`\operatorname{diag}(x_1, 0)` with :math:`x_1` just
    below 1 (rank :math:`r^\star = 1`, small norm), while :math:`\operatorname{diag}(x_1', x_2')`
    with both entries near -3 is a spurious local minimizer of full rank 2 and large norm: the
    "fails loudly" picture of [KKR25] in closed form (:func:`double_well_points`).  Restricted
    strong convexity fails once the radius reaches the far wells, so [KKR25]'s theorems do not
    apply there.
    """
    if not (isinstance(lam, (int, float)) and 0 <= lam < 0.5):
        raise UserInputError(f"lam: expected a number in [0, 0.5) (the wells stay local minima), got {lam!r}")

    def risk(X: Blocks) -> Tensor:
        x = X[0]
        return _well(x[0, 0], 1.0, -3.0) + _well(x[1, 1], 0.0, -3.0) + 0.5 * (x[0, 1] ** 2 + x[1, 0] ** 2)

    x1 = double_well_points(lam)["global"][0]
    return NonlinearProblem(
        risk,
        ((2, 2),),
        (float(lam),),
        x_star=(torch.diag(torch.tensor([x1, 0.0], dtype=torch.float64)),),
        name=f"double-well-lam{lam:g}",
        meta=_family_meta("double_well", lam=float(lam), penalized_minimum=double_well_minimum(lam)),
    )


def _well_stationary(a: float, b: float, lam: float, sign: float) -> list[float]:
    r"""Real roots of :math:`w_{a,b}'(x) = (x - a)(x - b)(2x - a - b)/4 = -\lambda\,\mathrm{sign}`."""
    import numpy as np

    c = np.polymul(np.polymul([1.0, -a], [1.0, -b]), [2.0, -(a + b)]) / 4.0
    c[-1] += lam * sign
    return [float(x.real) for x in np.roots(c) if abs(x.imag) < 1e-9]


def double_well_minimum(lam: float) -> float:
    r"""The exact minimum of the penalized :func:`double_well` problem (a certified lower bound).

    :math:`\|X\|_* \ge |X_{11}| + |X_{22}|` and the off-diagonal terms are non-negative, so
    :math:`L(X) + \lambda\|X\|_* \ge \sum_i \min_x (w_i(x) + \lambda|x|)`, attained at a
    diagonal ``X``.  Each scalar minimum is taken over all its stationary points (real roots of
    the cubics :math:`w_i'(x) = \mp\lambda`) and the kink at 0.
    """

    def scalar_min(a: float, b: float) -> float:
        w = lambda x: (x - a) ** 2 * (x - b) ** 2 / 8  # noqa: E731
        best = w(0.0)
        for sign in (1.0, -1.0):
            for x in _well_stationary(a, b, lam, sign):
                if x * sign > 0:
                    best = min(best, w(x) + lam * abs(x))
        return float(best)

    return scalar_min(1.0, -3.0) + scalar_min(0.0, -3.0)


def double_well_points(lam: float) -> dict[str, tuple[float, float]]:
    r"""The diagonal of the global minimizer and of the spurious local minimizer of :func:`double_well`.

    Stationarity of :math:`w(x) + \lambda|x|` is :math:`w'(x) = -\lambda\,\mathrm{sign}(x)`, a cubic
    in each well (``numpy.roots``): near 1 for :math:`X_{11} > 0`, near -3 for the spurious
    entries (:math:`X_{22} = 0` exactly at the global one, where :math:`|w'(0)| = 0 \le \lambda`).
    """

    def root(a: float, b: float, sign: float, near: float) -> float:
        return min(_well_stationary(a, b, lam, sign), key=lambda x: abs(x - near))

    g1 = root(1.0, -3.0, +1.0, 1.0)
    s1 = root(1.0, -3.0, -1.0, -3.0)
    s2 = root(0.0, -3.0, -1.0, -3.0)
    return {"global": (g1, 0.0), "spurious": (s1, s2)}


def shifted(
    problem: NonlinearProblem, offset: Sequence[Tensor], *, name: str | None = None
) -> NonlinearProblem:
    r"""The problem in the variable :math:`Y = X + O`: the risk :math:`Y \mapsto L(Y - O)` of an offset init.

    LoRA-GA-style inits subtract :math:`O = s B_0 A_0` from the base weight, so training
    :math:`Y = AB^\top` from :math:`(A_0, B_0)` starts at :math:`X = 0`; weight decay then
    acts on :math:`Y`, which makes this a problem of its own (its own penalized minimum).
    ``x_star`` and ``test_risk`` are shifted along; a linear form stays linear (``f0 - J vec O``).
    """
    O = problem.check_point(offset, "offset")  # noqa: E741 - the offset of [WYL24]

    def risk(Y: Blocks) -> Tensor:
        return problem.risk(tuple(y - o for y, o in zip(Y, O)))

    test = None
    if problem.test_risk is not None:
        base_test = problem.test_risk

        def test(Y: Blocks) -> Tensor:
            return base_test(tuple(y - o for y, o in zip(Y, O)))

    batch = None
    if problem.batch_risk is not None:
        base_batch = problem.batch_risk

        def batch(Y: Blocks, idx: Tensor) -> Tensor:
            return base_batch(tuple(y - o for y, o in zip(Y, O)), idx)

    linear = None
    if problem.linear is not None:
        from landscapes.inits import shifted_problem

        linear = shifted_problem(problem.linear, O)
    return NonlinearProblem(
        risk,
        problem.blocks,
        problem.lam,
        dtype=problem.dtype,
        device=problem.device,
        x_star=None if problem.x_star is None else tuple(x + o for x, o in zip(problem.x_star, O)),
        name=name or f"{problem.name}-shifted",
        meta=dict(problem.meta, shifted=True),
        linear=linear,
        test_risk=test,
        batch_risk=batch,
    )
