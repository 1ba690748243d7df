r"""Hypothesis strategies for property-based tests of the LoRA-theory claims.

The strategies draw the objects the claims are about: linearized problems (:class:`Problem`), LoRA
points (:class:`LoRAPoint`), symmetric PSD matrices, and ranks on either side of the
Barvinok--Pataki bound of [JLR24].

**The bound.**  A linearized model's loss depends on an adapted weight :math:`D` only through the
:math:`KN` numbers :math:`J \operatorname{vec} D`, so among the NUC minimizers there is one of rank
:math:`r` with

.. math:: \frac{r (r + 1)}{2} \le K N, \qquad
          r_{\max}(K, N) = \left\lfloor \frac{\sqrt{8 K N + 1} - 1}{2} \right\rfloor

(with several blocks: :math:`\sum_j r_j (r_j + 1)/2 \le KN`).  Above the bound,
:math:`r (r + 1)/2 > KN`, i.e. :math:`r \ge r_{\max} + 1`, the LoRA objective
:math:`L(UV^\top) + \tfrac{\lambda}{2}(\|U\|_F^2 + \|V\|_F^2)` has no spurious second-order stationary
points [JLR24].  :func:`ranks_above_bound` and :func:`ranks_below_bound` draw ranks on the two
sides.

**Argument conventions.**  Every argument is keyword-only (``lora_points`` takes its problem
first) and is checked when the strategy function is *called*: a bad argument raises ``TypeError``
(wrong type) or ``ValueError`` (wrong value) naming the argument, what was expected and what came.

* A *size* (``K``, ``N``, ``blocks``, ``m``, ``n``, ``rank``, ...) is an ``int`` (that value), a
  ``tuple`` ``(lo, hi)`` (every int with ``lo <= value <= hi``; a list is never a range) or a
  Hypothesis strategy of ints (checked when drawn).
* A *real* (``lam``, ``scale``, ``condition``) is a number, a ``tuple`` ``(lo, hi)`` of numbers
  (the closed interval) or a strategy of floats.

**Seeds.**  Tensors are never drawn entry by entry: each strategy draws the sizes and an integer
seed with Hypothesis, then builds the tensors from a ``torch.Generator`` seeded with it (problems
through the generators of :mod:`landscapes.synthetic`).  Shrinking then acts on sizes, losses and
seeds, and every drawn object can be rebuilt from the line that :func:`hypothesis.note` records
for a failing example (paste it into ``@example`` to pin the counterexample).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeGuard

import torch
from hypothesis import assume, note
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy
from torch import Tensor

from landscapes.lora import LoRAPoint, random_factors
from landscapes.problem import Problem
from landscapes.synthetic import gaussian_problem, random_features_problem, teacher_problem
from theory.bounds import r_max
from theory.errors import InputTypeError, UserInputError

__all__ = [
    "SizeLike",
    "RealLike",
    "problems",
    "lora_points",
    "psd_matrices",
    "ranks_above_bound",
    "ranks_below_bound",
]

#: A size argument: an int, an inclusive ``(lo, hi)`` tuple of ints, or a strategy of ints.
SizeLike: TypeAlias = int | tuple[int, int] | SearchStrategy[int]
#: A real argument: a number, an inclusive ``(lo, hi)`` tuple of numbers, or a strategy of floats.
RealLike: TypeAlias = float | tuple[float, float] | SearchStrategy[float]

#: The range of K each loss accepts (None: no upper limit).
_LOSS_K: dict[str, tuple[int, int | None]] = {
    "squared": (1, None),
    "logistic": (1, 1),
    "cross_entropy": (2, None),
}
_KINDS = ("gaussian", "teacher", "random_features")
_SPECIAL_POINTS = ("zero_B", "zero")
_SEEDS = st.integers(0, 2**31 - 1)


# ---- argument specs ------------------------------------------------------------------------------
def _is_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: object) -> TypeGuard[float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class _IntSpec:
    """A validated size argument: the range ``[lo, hi]`` or a user strategy (``hi = None``)."""

    name: str
    minimum: int
    lo: int
    hi: int | None
    strategy: SearchStrategy[int] | None

    def allows(self, lo: int, hi: int | None) -> bool:
        """Whether some value in ``[lo, hi]`` can be drawn (always ``True`` for a strategy)."""
        if self.strategy is not None:
            return True
        assert self.hi is not None
        return max(self.lo, lo) <= (self.hi if hi is None else min(self.hi, hi))

    def _from_strategy(self, draw: st.DrawFn) -> int:
        assert self.strategy is not None
        v = draw(self.strategy)
        if not _is_int(v):
            raise InputTypeError(
                f"{self.name}: expected the strategy to draw ints, got {type(v).__name__} {v!r}"
            )
        if v < self.minimum:
            raise UserInputError(
                f"{self.name}: expected the strategy to draw ints >= {self.minimum}, got {v}"
            )
        return int(v)

    def draw(self, draw: st.DrawFn, lo: int | None = None, hi: int | None = None) -> int:
        """Draw a value in ``[lo, hi]`` (a strategy's values outside are rejected with ``assume``)."""
        lo = self.minimum if lo is None else lo
        if self.strategy is not None:
            v = self._from_strategy(draw)
            assume(lo <= v and (hi is None or v <= hi))
            return v
        assert self.hi is not None
        a, b = max(self.lo, lo), self.hi if hi is None else min(self.hi, hi)
        assert a <= b, (self.name, a, b)  # the callers checked, at call time, that a value exists
        return a if a == b else draw(st.integers(a, b))

    def draw_capped(self, draw: st.DrawFn, cap: int | None) -> int:
        """Draw a value and cap it at ``cap`` (a range is capped before drawing)."""
        if self.strategy is not None:
            v = self._from_strategy(draw)
            return v if cap is None else min(v, cap)
        assert self.hi is not None
        a, b = (self.lo, self.hi) if cap is None else (min(self.lo, cap), min(self.hi, cap))
        return a if a == b else draw(st.integers(a, b))


def _int_spec(name: str, value: object, *, minimum: int) -> _IntSpec:
    if isinstance(value, SearchStrategy):
        return _IntSpec(name, minimum, minimum, None, value)
    if _is_int(value):
        v = int(value)
        if v < minimum:
            raise UserInputError(f"{name}: expected an int >= {minimum}, got {v!r}")
        return _IntSpec(name, minimum, v, v, None)
    if isinstance(value, tuple):
        if len(value) != 2 or not all(_is_int(x) for x in value):
            raise InputTypeError(f"{name}: expected a (lo, hi) tuple of two ints, got {value!r}")
        lo, hi = value
        if not minimum <= lo <= hi:
            raise UserInputError(
                f"{name}: expected a (lo, hi) range with {minimum} <= lo <= hi, got {value!r}"
            )
        return _IntSpec(name, minimum, lo, hi, None)
    raise InputTypeError(
        f"{name}: expected an int, a (lo, hi) tuple of ints or a hypothesis strategy, "
        f"got {type(value).__name__} {value!r}"
    )


@dataclass(frozen=True)
class _RealSpec:
    """A validated real argument: the interval ``[lo, hi]`` or a user strategy."""

    name: str
    minimum: float
    lo: float
    hi: float
    strategy: SearchStrategy[float] | None

    def draw(self, draw: st.DrawFn) -> float:
        """Draw a value (a strategy's values are checked here)."""
        if self.strategy is None:
            return self.lo if self.lo == self.hi else draw(st.floats(self.lo, self.hi))
        v = draw(self.strategy)
        if not _is_real(v):
            raise InputTypeError(
                f"{self.name}: expected the strategy to draw numbers, got {type(v).__name__} {v!r}"
            )
        if not (math.isfinite(v) and v >= self.minimum):
            raise UserInputError(
                f"{self.name}: expected the strategy to draw finite numbers >= {self.minimum}, got {v!r}"
            )
        return float(v)


def _real_spec(name: str, value: object, *, minimum: float) -> _RealSpec:
    if isinstance(value, SearchStrategy):
        return _RealSpec(name, minimum, minimum, math.inf, value)
    if _is_real(value):
        v = float(value)
        if not (math.isfinite(v) and v >= minimum):
            raise UserInputError(f"{name}: expected a finite number >= {minimum}, got {value!r}")
        return _RealSpec(name, minimum, v, v, None)
    if isinstance(value, tuple):
        if len(value) != 2 or not all(_is_real(x) for x in value):
            raise InputTypeError(f"{name}: expected a (lo, hi) tuple of two numbers, got {value!r}")
        lo, hi = float(value[0]), float(value[1])
        if not (math.isfinite(lo) and math.isfinite(hi) and minimum <= lo <= hi):
            raise UserInputError(
                f"{name}: expected a (lo, hi) range of finite numbers with {minimum} <= lo <= hi, "
                f"got {value!r}"
            )
        return _RealSpec(name, minimum, lo, hi, None)
    raise InputTypeError(
        f"{name}: expected a number, a (lo, hi) tuple of numbers or a hypothesis strategy, "
        f"got {type(value).__name__} {value!r}"
    )


def _names(name: str, value: object, choices: Sequence[str]) -> tuple[str, ...]:
    """A non-empty sequence of names from ``choices`` (duplicates dropped, order kept)."""
    if isinstance(value, str):
        raise InputTypeError(
            f"{name}: expected a sequence of names such as ({value!r},), got the string {value!r}"
        )
    if not isinstance(value, Sequence):
        raise InputTypeError(
            f"{name}: expected a sequence of names from {tuple(choices)}, "
            f"got {type(value).__name__} {value!r}"
        )
    if len(value) == 0:
        raise UserInputError(
            f"{name}: expected a non-empty sequence of names from {tuple(choices)}, got {value!r}"
        )
    for v in value:
        if v not in choices:
            raise UserInputError(f"{name}: expected names from {tuple(choices)}, got {v!r}")
    return tuple(dict.fromkeys(value))


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise InputTypeError(f"{name}: expected a bool, got {type(value).__name__} {value!r}")


def _check_dtype(value: object) -> torch.dtype:
    if value not in (torch.float32, torch.float64):
        raise UserInputError(f"dtype: expected torch.float32 or torch.float64, got {value!r}")
    assert isinstance(value, torch.dtype)
    return value


def _call_text(fn: Callable[..., Any], kwargs: dict[str, Any]) -> str:
    return f"{fn.__name__}(" + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + ")"


# ---- problems ------------------------------------------------------------------------------------
def problems(
    *,
    K: SizeLike = (1, 3),
    N: SizeLike = (1, 6),
    blocks: SizeLike = (1, 2),
    m: SizeLike = (1, 5),
    n: SizeLike = (1, 5),
    losses: Sequence[str] = ("squared", "logistic", "cross_entropy"),
    lam: RealLike = (1e-3, 0.5),
    lam_per_block: bool = False,
    kinds: Sequence[str] = ("gaussian", "teacher", "random_features"),
    teacher_rank: SizeLike = (1, 2),
    dtype: torch.dtype = torch.float64,
) -> SearchStrategy[Problem]:
    r"""Linearized LoRA problems built by the seeded generators of :mod:`landscapes.synthetic`.

    A draw picks, in this order: a loss from ``losses``, ``K`` (restricted to what that loss
    accepts), ``N``, a generator from ``kinds``, the number of blocks, each block's shape
    ``(m_j, n_j)``, ``lam``, the teacher's rank (``"teacher"`` only) and a seed; then it calls the
    generator with the seed, so every tensor comes from a seeded ``torch.Generator``.  Shrinking
    makes these choices small and few (a loss or kind that fixes a later choice, e.g. logistic's
    ``K = 1``, counts as simpler).  The returned problem records the seed
    (``problem.seed``), and a failing example notes the generator call that rebuilds it.

    Parameters
    ----------
    K, N
        Outputs per example and number of examples (sizes, >= 1).  Losses constrain ``K``:
        ``logistic`` needs ``K = 1`` and ``cross_entropy`` needs ``K >= 2``; a loss that no
        allowed ``K`` satisfies is skipped.
    blocks
        Number of adapted matrices (a size, >= 1).  ``"random_features"`` problems have one block.
    m, n
        Shape of each block (sizes, >= 1), drawn independently per block.
    losses
        Names among ``'squared'``, ``'logistic'``, ``'cross_entropy'``.
    lam
        Weight decay (a real, >= 0); one value for all blocks, or one per block when
        ``lam_per_block`` is ``True``.
    lam_per_block
        Draw a separate ``lam`` for each block.
    kinds
        Generators among ``'gaussian'`` (:func:`~landscapes.synthetic.gaussian_problem`),
        ``'teacher'`` (:func:`~landscapes.synthetic.teacher_problem`) and
        ``'random_features'`` (:func:`~landscapes.synthetic.random_features_problem`).
    teacher_rank
        Rank of the planted teacher of ``'teacher'`` problems (a size, >= 1).
    dtype
        ``torch.float64`` (default) or ``torch.float32``.

    Returns
    -------
    SearchStrategy[Problem]
        Problems that passed :class:`~landscapes.problem.Problem`'s validation.

    Raises
    ------
    TypeError, ValueError
        On a bad argument, or when no loss fits ``K`` or no kind fits ``blocks``.

    Examples
    --------
    >>> import math
    >>> from hypothesis import given
    >>> from verify.strategies import problems
    >>> @given(problems(K=(1, 2), N=(1, 4), blocks=1, losses=("squared", "cross_entropy")))
    ... def test_risk_at_zero_is_finite(problem):
    ...     assert problem.loss.name == "squared" or problem.K >= 2
    ...     assert math.isfinite(problem.risk(problem.zeros()))
    >>> test_risk_at_zero_is_finite()
    """
    K_ = _int_spec("K", K, minimum=1)
    N_ = _int_spec("N", N, minimum=1)
    blocks_ = _int_spec("blocks", blocks, minimum=1)
    m_ = _int_spec("m", m, minimum=1)
    n_ = _int_spec("n", n, minimum=1)
    loss_names = _names("losses", losses, tuple(_LOSS_K))
    lam_ = _real_spec("lam", lam, minimum=0.0)
    _check_bool("lam_per_block", lam_per_block)
    kind_names = _names("kinds", kinds, _KINDS)
    teacher_ = _int_spec("teacher_rank", teacher_rank, minimum=1)
    dtype = _check_dtype(dtype)
    ok_losses = tuple(name for name in loss_names if K_.allows(*_LOSS_K[name]))
    if not ok_losses:
        raise UserInputError(
            f"losses: expected a loss possible with K={K!r} (logistic needs K = 1, cross_entropy "
            f"needs K >= 2), got {tuple(losses)!r}"
        )
    ok_kinds = tuple(k for k in kind_names if k != "random_features" or blocks_.allows(1, 1))
    if not ok_kinds:
        raise UserInputError(
            f"kinds: expected a kind possible with blocks={blocks!r} ('random_features' problems "
            f"have one block), got {tuple(kinds)!r}"
        )

    return _draw_problem(
        _ProblemChoices(ok_losses, ok_kinds, K_, N_, blocks_, m_, n_, lam_, lam_per_block, teacher_, dtype)
    )


@dataclass(frozen=True)
class _ProblemChoices:
    """The checked arguments of :func:`problems`: what a draw chooses from."""

    losses: tuple[str, ...]
    kinds: tuple[str, ...]
    K: Any
    N: Any
    blocks: Any
    m: Any
    n: Any
    lam: Any
    lam_per_block: bool
    teacher_rank: Any
    dtype: torch.dtype


@st.composite
def _draw_problem(draw: st.DrawFn, c: _ProblemChoices) -> Problem:
    loss = draw(st.sampled_from(c.losses))
    k = c.K.draw(draw, *_LOSS_K[loss])
    num = c.N.draw(draw)
    kind = draw(st.sampled_from(c.kinds))
    b = c.blocks.draw(draw, 1, 1) if kind == "random_features" else c.blocks.draw(draw)
    shapes = [(c.m.draw(draw), c.n.draw(draw)) for _ in range(b)]
    lam_value: float | list[float] = (
        [c.lam.draw(draw) for _ in range(b)] if c.lam_per_block else c.lam.draw(draw)
    )
    kwargs: dict[str, Any] = {"K": k, "N": num}
    fn: Callable[..., Problem]
    if kind == "random_features":
        fn = random_features_problem
        kwargs.update(m=shapes[0][0], n=shapes[0][1])
    else:
        fn = gaussian_problem if kind == "gaussian" else teacher_problem
        kwargs["blocks"] = shapes
    kwargs.update(lam=lam_value, loss=loss)
    if kind == "teacher":
        kwargs["teacher_rank"] = c.teacher_rank.draw(draw)
    kwargs.update(seed=draw(_SEEDS), dtype=c.dtype)
    note(f"problems() drew {_call_text(fn, kwargs)}")
    return fn(**kwargs)


# ---- LoRA points ---------------------------------------------------------------------------------
def lora_points(
    problem: Problem,
    *,
    rank: SizeLike | list[SizeLike] = (1, 3),
    scale: RealLike = (0.1, 2.0),
    special: Sequence[str] = (),
    cap_rank: bool = True,
) -> SearchStrategy[LoRAPoint]:
    r"""LoRA factors :math:`(U_j, V_j)` for ``problem``, Gaussian from a seeded generator.

    A draw picks the rank of each block, the kind of point, the scale and a seed, and returns
    :func:`~landscapes.lora.random_factors` of the problem (i.i.d. :math:`N(0, \text{scale}^2)`
    entries, :math:`U_j \in \mathbb{R}^{m_j \times r_j}`, :math:`V_j \in \mathbb{R}^{n_j \times r_j}`,
    the problem's dtype and device).  The special points replace the random factors:
    ``"zero_B"`` is LoRA's usual initialization :math:`U = 0` (``B = 0`` in ``D = B A``) with a
    random :math:`V`; ``"zero"`` is :math:`U = V = 0`, where the Hessian is known in closed form
    (eigenvalues :math:`\lambda \pm \sigma_i(\nabla L(0))`).  The zero point needs no scale and no
    seed, so with ``"zero"`` among the special points shrinking ends there when it can.

    Parameters
    ----------
    problem
        The problem the factors belong to.
    rank
        The rank of every block (a size, >= 1, drawn per block), or a ``list`` with one size per
        block.
    scale
        Standard deviation of the entries (a real, >= 0).
    special
        Special points to draw besides random ones: names among ``'zero_B'`` and ``'zero'``.
    cap_rank
        Cap each block's rank at :math:`\min(m_j, n_j)` (a larger rank adds no expressiveness to
        :math:`D_j = U_j V_j^\top`); ``False`` keeps the drawn rank.

    Returns
    -------
    SearchStrategy[LoRAPoint]
        Points with ``point.ranks[j]`` columns in block ``j``.

    Raises
    ------
    TypeError, ValueError
        On a bad argument (also a per-block ``rank`` list of the wrong length).

    Examples
    --------
    >>> from hypothesis import given
    >>> from landscapes import gaussian_problem
    >>> from verify.strategies import lora_points
    >>> P = gaussian_problem(K=1, N=3, blocks=[(4, 2)], lam=0.1, seed=0)
    >>> @given(lora_points(P, rank=(1, 5), special=("zero",)))
    ... def test_ranks_are_capped(point):
    ...     assert 1 <= point.ranks[0] <= 2 and point.U[0].shape == (4, point.ranks[0])
    >>> test_ranks_are_capped()
    """
    if not isinstance(problem, Problem):
        raise InputTypeError(f"problem: expected a landscapes.problem.Problem, got {type(problem).__name__}")
    nb = len(problem.blocks)
    if isinstance(rank, list):
        if len(rank) != nb:
            raise UserInputError(
                f"rank: expected one rank per block ({nb}), got a list of {len(rank)}: {rank!r}"
            )
        rank_specs = [_int_spec(f"rank[{j}]", r, minimum=1) for j, r in enumerate(rank)]
    else:
        rank_specs = [_int_spec("rank", rank, minimum=1)] * nb
    scale_ = _real_spec("scale", scale, minimum=0.0)
    point_kinds: tuple[str, ...] = ("random",)
    if not (isinstance(special, (list, tuple)) and len(special) == 0):
        point_kinds += _names("special", special, _SPECIAL_POINTS)
    _check_bool("cap_rank", cap_rank)
    caps = [min(mn) if cap_rank else None for mn in problem.blocks]

    @st.composite
    def draw_point(draw: st.DrawFn) -> LoRAPoint:
        ranks = [spec.draw_capped(draw, cap) for spec, cap in zip(rank_specs, caps)]
        kind = draw(st.sampled_from(point_kinds))
        if kind == "zero":
            note(f"lora_points() drew the zero point of ranks {ranks}")
            zeros = [
                (
                    torch.zeros(mm, r, dtype=problem.dtype, device=problem.device),
                    torch.zeros(nn, r, dtype=problem.dtype, device=problem.device),
                )
                for (mm, nn), r in zip(problem.blocks, ranks)
            ]
            return LoRAPoint(tuple(u for u, _ in zeros), tuple(v for _, v in zeros))
        s = scale_.draw(draw)
        seed = draw(_SEEDS)
        zero_u = " with every U_j set to 0 (the 'zero_B' point)" if kind == "zero_B" else ""
        note(
            f"lora_points() drew random_factors(problem, {ranks}, scale={s!r}, "
            f"generator=torch.Generator().manual_seed({seed})){zero_u}"
        )
        pt = random_factors(problem, ranks, scale=s, generator=torch.Generator().manual_seed(seed))
        # random_factors builds on the CPU; keep the problem's device.
        U = tuple(u.to(problem.device) for u in pt.U)
        V = tuple(v.to(problem.device) for v in pt.V)
        if kind == "zero_B":
            U = tuple(torch.zeros_like(u) for u in U)
        return LoRAPoint(U, V)

    return draw_point()


# ---- PSD matrices --------------------------------------------------------------------------------
def psd_matrices(
    *,
    n: SizeLike = (1, 6),
    rank: SizeLike | None = None,
    condition: RealLike | None = None,
    dtype: torch.dtype = torch.float64,
) -> SearchStrategy[Tensor]:
    r"""Symmetric positive semidefinite ``n x n`` matrices :math:`M = Q \operatorname{diag}(\mu) Q^\top`.

    ``Q`` (``n x r``, orthonormal columns) is the QR factor of a Gaussian matrix from a seeded
    generator, so ``M`` has rank exactly ``r`` and nonzero eigenvalues ``mu``.  Without
    ``condition`` the ``mu_i`` are log-uniform in ``[0.01, 1]``; with ``condition = c`` they lie in
    ``[1/c, 1]`` with ``max mu = 1`` and ``min mu = 1/c`` exactly, so the condition number of the
    nonzero part is ``c``.  ``M`` is exactly symmetric; its computed eigenvalues are
    ``>= -n * eps`` (rounding), and the condition number holds to relative accuracy about
    ``n * eps * c``.  The matrix is built in float64 and then cast to ``dtype``.

    Parameters
    ----------
    n
        Size of the matrix (a size, >= 1).
    rank
        ``None`` (full rank ``n``) or the rank (a size, >= 0; ``n`` is then drawn >= ``rank``).
    condition
        ``None`` or the condition number :math:`\mu_{\max}/\mu_{\min}` of the nonzero eigenvalues
        (a real, >= 1).  A condition number needs two nonzero eigenvalues: with ``condition``
        the rank (and ``n``) is at least 2.
    dtype
        ``torch.float64`` (default) or ``torch.float32``.

    Returns
    -------
    SearchStrategy[torch.Tensor]
        Square, symmetric, PSD tensors of the given ``dtype``.

    Raises
    ------
    TypeError, ValueError
        On a bad argument, or when the ranges of ``n``, ``rank`` and ``condition`` cannot be met
        together.

    Examples
    --------
    >>> import torch
    >>> from hypothesis import given
    >>> from verify.strategies import psd_matrices
    >>> @given(psd_matrices(n=(2, 5), rank=2, condition=10.0))
    ... def test_spectrum(M):
    ...     mu = torch.linalg.eigvalsh(M)
    ...     assert torch.equal(M, M.T) and float(mu.min()) >= -1e-12
    ...     assert abs(float(mu[-1] / mu[-2]) - 10.0) <= 1e-9
    >>> test_spectrum()
    """
    n_ = _int_spec("n", n, minimum=1)
    rank_ = None if rank is None else _int_spec("rank", rank, minimum=0)
    cond_ = None if condition is None else _real_spec("condition", condition, minimum=1.0)
    dtype = _check_dtype(dtype)
    min_rank = 0 if cond_ is None else 2
    if rank_ is None:
        if not n_.allows(max(min_rank, 1), None):
            raise UserInputError(
                f"n: expected sizes >= 2 with a condition number (two eigenvalues), got {n!r}"
            )
    else:
        if not rank_.allows(min_rank, None):
            raise UserInputError(
                f"rank: expected ranks >= 2 with a condition number (two eigenvalues), got {rank!r}"
            )
        if not n_.allows(max(rank_.lo, min_rank, 1), None):
            raise UserInputError(f"rank: expected ranks <= n, got rank={rank!r} with n={n!r}")

    @st.composite
    def draw_matrix(draw: st.DrawFn) -> Tensor:
        if rank_ is None:
            size = n_.draw(draw, max(min_rank, 1))
            r = size
        else:
            r = rank_.draw(draw, min_rank, n_.hi)
            size = n_.draw(draw, max(r, 1))
        c = None if cond_ is None else cond_.draw(draw)
        seed = draw(_SEEDS)
        note(f"psd_matrices() drew n={size}, rank={r}, condition={c!r}, seed={seed}")
        gen = torch.Generator().manual_seed(seed)
        if r == 0:
            return torch.zeros(size, size, dtype=dtype)
        Q, _ = torch.linalg.qr(torch.randn(size, r, generator=gen, dtype=torch.float64))
        t = torch.rand(r, generator=gen, dtype=torch.float64)
        if c is None:
            mu = 10.0 ** (-2.0 * t)
        else:
            t[0], t[-1] = 0.0, 1.0
            mu = torch.tensor(c, dtype=torch.float64) ** (-t)
        M = (Q * mu) @ Q.T
        return (0.5 * (M + M.T)).to(dtype)  # exactly symmetric: (M + M^T)_ij = (M + M^T)_ji

    return draw_matrix()


# ---- ranks ---------------------------------------------------------------------------------------
def _positive_int(name: str, v: object) -> int:
    if not _is_int(v):
        raise InputTypeError(f"{name}: expected an int >= 1, got {type(v).__name__} {v!r}")
    if v < 1:
        raise UserInputError(f"{name}: expected an int >= 1, got {v!r}")
    return int(v)


def ranks_above_bound(*, K: int, N: int, max_rank: int | None = None) -> SearchStrategy[int]:
    r"""Ranks ``r`` with :math:`r(r+1)/2 > KN`: the no-spurious regime of [JLR24].

    These are the integers :math:`r_{\max}(K, N) + 1 \le r \le` ``max_rank``; shrinking goes to
    the smallest, :math:`r_{\max} + 1`.

    Parameters
    ----------
    K, N
        Outputs per example and number of examples (ints >= 1).
    max_rank
        The largest rank drawn (an int >= :math:`r_{\max}(K, N) + 1`); default
        :math:`2 (r_{\max}(K, N) + 1)`.

    Returns
    -------
    SearchStrategy[int]
        Ranks strictly above the Barvinok--Pataki bound.

    Raises
    ------
    TypeError, ValueError
        On a bad argument, or when ``max_rank < r_max(K, N) + 1`` (the range would be empty).

    Examples
    --------
    >>> from hypothesis import given
    >>> from theory import triangular
    >>> from verify.strategies import ranks_above_bound
    >>> @given(ranks_above_bound(K=2, N=32, max_rank=20))
    ... def test_above(r):
    ...     assert 11 <= r <= 20 and triangular(r) > 64
    >>> test_above()
    """
    K, N = _positive_int("K", K), _positive_int("N", N)
    lo = r_max(K, N) + 1
    if max_rank is None:
        return st.integers(lo, 2 * lo)
    if not _is_int(max_rank):
        raise InputTypeError(
            f"max_rank: expected None or an int >= 1, got {type(max_rank).__name__} {max_rank!r}"
        )
    if max_rank < 1:
        raise UserInputError(f"max_rank: expected an int >= 1, got {max_rank!r}")
    if max_rank < lo:
        raise UserInputError(
            f"max_rank: expected an int >= {lo} = r_max(K, N) + 1 (the smallest rank with "
            f"r(r+1)/2 > KN = {K * N}), got {max_rank!r}"
        )
    return st.integers(lo, max_rank)


def ranks_below_bound(*, K: int, N: int, min_rank: int = 1) -> SearchStrategy[int]:
    r"""Ranks ``r >= min_rank`` with :math:`r(r+1)/2 \le KN`: where the low-rank minimizer lives.

    These are the integers ``min_rank`` :math:`\le r \le r_{\max}(K, N)`; shrinking goes to
    ``min_rank``.

    Parameters
    ----------
    K, N
        Outputs per example and number of examples (ints >= 1).
    min_rank
        The smallest rank drawn (an int, ``1 <= min_rank <= r_max(K, N)``).

    Returns
    -------
    SearchStrategy[int]
        Ranks within the Barvinok--Pataki bound.

    Raises
    ------
    TypeError, ValueError
        On a bad argument, or when ``min_rank > r_max(K, N)`` (the range would be empty).

    Examples
    --------
    >>> from hypothesis import given
    >>> from theory import r_max, triangular
    >>> from verify.strategies import ranks_below_bound
    >>> @given(ranks_below_bound(K=1, N=10))
    ... def test_below(r):
    ...     assert 1 <= r <= r_max(1, 10) == 4 and triangular(r) <= 10
    >>> test_below()
    """
    K, N = _positive_int("K", K), _positive_int("N", N)
    if not _is_int(min_rank):
        raise InputTypeError(f"min_rank: expected an int >= 1, got {type(min_rank).__name__} {min_rank!r}")
    if min_rank < 1:
        raise UserInputError(f"min_rank: expected an int >= 1, got {min_rank!r}")
    hi = r_max(K, N)
    if min_rank > hi:
        raise UserInputError(
            f"min_rank: expected an int <= {hi} = r_max(K, N) (the largest rank with "
            f"r(r+1)/2 <= KN = {K * N}), got {min_rank!r}"
        )
    return st.integers(min_rank, hi)
