r"""JLR-gen: the held-out loss of the low-rank NUC solution against a Rademacher bound.

The bound (:mod:`theory.generalization`, where every step, constant and source is stated): for
the clipped loss :math:`\ell_b = \min(\ell, b)`, with probability :math:`\ge 1 - \delta` over the
training sample, every :math:`D` with :math:`\sum_j\|D_j\|_* \le B_0 r^k` has

.. math::
    \mathbb E\,\ell_b \le \hat L_b(D) + \frac{4\rho B_0 r^k}{N}\sqrt{v\log(d_1 + d_2)}
    + 3b\sqrt{\frac{\log(2/\delta_k)}{2N}}

for all grid points ``k`` at once (ratio :math:`r` = ``grid_ratio``, default :math:`2^{1/4}`); the
checker evaluates the smallest admissible one at the judged point :math:`\hat D` (the NUC solution
of the training problem, or a given ``point``). The radius is :math:`B = \sum_j\|\hat D_j\|_*`
(``radius="solution"``) or the magnitude bound :math:`B = L(0)/\min_j\lambda_j` of JLR-magnitude
(``radius="magnitude"``; it needs no solve, and covers :math:`\hat D` when :math:`\sum_j\|\hat
D_j\|_*` is within the grid radius, which is checked).

The measurement: the mean clipped loss of :math:`\hat D` on ``M`` held-out examples with its
one-sided Hoeffding limits :math:`\pm b\sqrt{\log(1/\alpha)/(2M)}`.  The trivial predictor is
:math:`D = 0` (the pretrained logits :math:`f_0`): the lower Hoeffding limit of its held-out mean
clipped loss is the yardstick of non-vacuity.

Held-out data: a :class:`~landscapes.problem.Problem` of held-out examples (same blocks, ``K``, loss
and dtype; no example shared with the training set), given as ``held_out`` or carried by the
training problem in ``problem.meta["held_out"]`` (what :func:`with_held_out`,
:func:`with_review_held_out` and the suite generator ``held_out`` build).  Without one the verdict
is ``inconclusive``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from landscapes.catalog import held_out_problem
from landscapes.held_out import with_held_out, with_review_held_out
from landscapes.nuc import NucSolution, nuc_certificate, solve_nuc
from landscapes.operators import DenseOperator, LinearOperator
from landscapes.problem import Blocks, Problem
from theory.claims import DEFAULT_TOLERANCES
from theory.errors import UserInputError, finite_number
from theory.generalization import (
    GeneralizationBound,
    clipped_lipschitz,
    default_clip,
    generalization_bound,
    hoeffding_radius,
    khintchine_bound,
)
from verify.checker import Judge, checker, fmt
from verify.options import ANY, POS_OPT, TOL, Both, Choice, Either, Int, Real
from verify.verdict import Status, Verdict

__all__ = [
    "check_jlr_gen",
    "with_held_out",
    "shared_examples",
    "DEFAULT_GRID_RATIO",
    "with_review_held_out",
    "held_out_problem",
    "variance_statistic",
    "rademacher_monte_carlo",
]

_T = DEFAULT_TOLERANCES
CLAIM = "JLR-gen"
#: The default ratio :math:`r` of the union-bound grid :math:`B_0 r^k`: the radius is rounded up by
#: less than :math:`2^{1/4} \approx 1.19` (with :math:`r = 2` the factor swings in ``[1, 2)`` with the
#: units of ``J`` and could flip the verdict).
DEFAULT_GRID_RATIO = 2.0**0.25
_SEED_RANGE = (-(2**63), 2**64)  # what torch.Generator.manual_seed accepts


# --------------------------------------------------------------------------------------------------
# Held-out data
def _test_compatible(problem: Problem, test: Problem) -> None:
    if not isinstance(test, Problem):
        raise UserInputError(f"held_out: expected a landscapes.problem.Problem, got {type(test).__name__}")
    if test.blocks != problem.blocks or test.K != problem.K or test.loss.name != problem.loss.name:
        raise UserInputError(
            f"held_out: expected the training problem's blocks {list(problem.blocks)}, K = {problem.K} and "
            f"loss {problem.loss.name!r}, got {list(test.blocks)}, K = {test.K}, loss {test.loss.name!r}"
        )
    if test.dtype != problem.dtype:
        raise UserInputError(f"held_out: expected dtype {problem.dtype}, got {test.dtype}")


def _example_hashes(problem: Problem, with_J: bool) -> list[bytes]:
    """One digest per example: its ``K`` rows of a stored ``J`` (``with_J``), its ``f0`` row and label."""
    f0 = problem.f0.detach().to("cpu").contiguous()
    y = problem.y.detach().to("cpu").contiguous()
    J = problem.J.matrix.detach().to("cpu") if with_J and isinstance(problem.J, DenseOperator) else None
    K, out = problem.K, []
    for i in range(problem.N):
        h = hashlib.blake2b(digest_size=16)
        if J is not None:
            h.update(J[i * K : (i + 1) * K].contiguous().numpy().tobytes())
        h.update(f0[i].contiguous().numpy().tobytes())
        h.update(y[i].numpy().tobytes())
        out.append(h.digest())
    return out


def shared_examples(problem: Problem, test: Problem) -> tuple[int, bool]:
    r"""How many examples of ``test`` equal one of ``problem`` (exactly), and whether ``J`` was compared.

    An example is identified by a hash of its ``K`` Jacobian rows, its ``f0`` row and its label
    when both problems store ``J``; when either gives ``J`` as an operator only ``f0`` and the
    label are compared (reading an operator's rows costs ``K N`` products), so two different
    examples with equal ``f0`` rows and labels count as shared there.
    """
    with_J = isinstance(problem.J, DenseOperator) and isinstance(test.J, DenseOperator)
    train = set(_example_hashes(problem, with_J))
    return sum(h in train for h in _example_hashes(test, with_J)), with_J


# --------------------------------------------------------------------------------------------------
# The matrix variance and a Monte-Carlo reference
def _row_chunks(J: LinearOperator, chunk: int) -> Any:
    q = J.shape[0]
    if isinstance(J, DenseOperator):
        for a in range(0, q, chunk):
            yield J.matrix[a : a + chunk]
    else:
        eye = torch.eye(q, dtype=J.dtype, device=J.device)
        for a in range(0, q, chunk):
            yield torch.stack([J.rmatvec(eye[i]) for i in range(a, min(a + chunk, q))])


def variance_statistic(problem: Problem, *, chunk: int | None = None) -> tuple[float, ...]:
    r"""Per block the matrix variance :math:`v_j` of the Rademacher series of the Jacobian slices.

    .. math:: v_j = \max\big(\|\textstyle\sum_{i,k} G_{ikj}G_{ikj}^\top\|_{op},
              \|\sum_{i,k} G_{ikj}^\top G_{ikj}\|_{op}\big);

    :math:`G_{ikj}` is row ``i*K + k`` of ``J`` restricted to block ``j``, as an
    :math:`m_j \times n_j` matrix.  Rows are read in chunks of ``chunk`` (default: about
    :math:`2^{22}` entries of ``J`` at a time; an operator's rows by ``rmatvec`` on unit vectors).
    """
    if chunk is None:
        chunk = max(8, 2**22 // max(problem.num_params, 1))
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise UserInputError(f"chunk: expected a positive int or None, got {chunk!r}")
    left = [torch.zeros(m, m, dtype=problem.dtype, device=problem.device) for m, _ in problem.blocks]
    right = [torch.zeros(n, n, dtype=problem.dtype, device=problem.device) for _, n in problem.blocks]
    for R in _row_chunks(problem.J, chunk):
        o = 0
        for j, (m, n) in enumerate(problem.blocks):
            G = R[:, o : o + m * n].reshape(-1, m, n)
            o += m * n
            A = G.permute(1, 0, 2).reshape(m, -1)
            left[j] += A @ A.T
            Bm = G.reshape(-1, n)
            right[j] += Bm.T @ Bm
    out = []
    for Lm, Rm in zip(left, right):
        top = max(float(torch.linalg.eigvalsh(Lm)[-1]), float(torch.linalg.eigvalsh(Rm)[-1]))
        out.append(max(top, 0.0))
    return tuple(out)


def _op_norm(Z: Tensor) -> float:
    """``||Z||_op`` as the square root of the top eigenvalue of the smaller Gram matrix (no SVD)."""
    G = Z @ Z.T if Z.shape[0] <= Z.shape[1] else Z.T @ Z
    return math.sqrt(max(float(torch.linalg.eigvalsh(G)[-1]), 0.0))


def rademacher_monte_carlo(problem: Problem, *, samples: int, seed: int = 0) -> tuple[float, float]:
    r"""Monte-Carlo mean and standard error of :math:`\max_j\|\sum_{i,k}\varepsilon_{ik}G_{ikj}\|_{op}`.

    A reference for :func:`theory.generalization.khintchine_bound` (an estimate, not a bound):
    ``samples`` draws of the Rademacher signs (seeded), one ``rmatvec`` each.
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 2:
        raise UserInputError(f"samples: expected an int >= 2, got {samples!r}")
    gen = torch.Generator().manual_seed(int(seed))
    vals = []
    for _ in range(samples):
        eps = (torch.randint(0, 2, (problem.KN,), generator=gen) * 2 - 1).to(problem.dtype)
        Z = problem.unvec(problem.J.rmatvec(eps.to(problem.device)))
        vals.append(max(_op_norm(z) for z in Z))
    t = torch.tensor(vals, dtype=torch.float64)
    return float(t.mean()), float(t.std() / math.sqrt(samples))


# --------------------------------------------------------------------------------------------------
def _clipped(problem: Problem, z: Tensor, clip: float) -> Tensor:
    return problem.loss.value(z, problem.y).clamp(max=clip)


def _accuracy(problem: Problem, z: Tensor) -> float | None:
    if problem.loss.name == "cross_entropy":
        return float((z.argmax(1) == problem.y).to(torch.float64).mean())
    if problem.loss.name == "logistic":
        return float(((z[:, 0] > 0).long() == problem.y).to(torch.float64).mean())
    return None


def _bound_dict(b: GeneralizationBound) -> dict[str, Any]:
    return dataclasses.asdict(b)


@dataclasses.dataclass(frozen=True)
class _GenOptions:
    """The options of one JLR-gen call, in the order its verdict records them (``point``: given)."""

    clip: float | None
    delta: float
    alpha: float
    radius: str
    grid_base: float
    grid_ratio: float
    bound_scale: float
    gap_rtol: float
    mc_samples: int
    seed: int
    point: bool

    def check(self, solution: NucSolution | None) -> None:
        """Refuse an option out of its range (``solution``: a NUC solution or ``None``)."""
        seed, mc_samples = self.seed, self.mc_samples
        if isinstance(seed, bool) or not isinstance(seed, int) or not _SEED_RANGE[0] <= seed < _SEED_RANGE[1]:
            raise UserInputError(f"seed: expected an int in [-2**63, 2**64), got {seed!r}")
        if solution is not None and not isinstance(solution, NucSolution):
            raise UserInputError(
                f"solution: expected a landscapes.nuc.NucSolution or None, got {type(solution).__name__}"
            )
        for name, x in (("delta", self.delta), ("alpha", self.alpha)):
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not 0 < x < 1:
                raise UserInputError(f"{name}: expected a number in (0, 1), got {x!r}")
        for name, x in (
            ("grid_base", self.grid_base),
            ("bound_scale", self.bound_scale),
            ("grid_ratio", self.grid_ratio),
        ):
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not (finite_number(x) and x > 0):
                raise UserInputError(f"{name}: expected a finite positive number, got {x!r}")
        if not self.grid_ratio > 1:
            raise UserInputError(f"grid_ratio: expected a finite number > 1, got {self.grid_ratio!r}")
        if self.radius not in ("solution", "magnitude"):
            raise UserInputError(f"radius: expected 'solution' or 'magnitude', got {self.radius!r}")
        if (
            isinstance(mc_samples, bool)
            or not isinstance(mc_samples, int)
            or mc_samples < 0
            or mc_samples == 1
        ):
            raise UserInputError(f"mc_samples: expected 0 or an int >= 2, got {mc_samples!r}")


def _disjoint_held_out(problem: Problem, test: Problem) -> None:
    """Refuse held-out data that are not the training problem's kind, or share an example with it."""
    _test_compatible(problem, test)
    shared, with_J = shared_examples(problem, test)
    if shared:
        what = "J rows, f0 row and label" if with_J else "f0 row and label (J is an operator: not compared)"
        raise UserInputError(
            f"held_out: expected examples disjoint from the training set, got {shared} of {test.N} "
            f"held-out examples equal to training examples ({what})"
        )


def _judged_point(
    problem: Problem,
    point: Sequence[Tensor] | None,
    solution: NucSolution | None,
    *,
    gap_rtol: float,
    seed: int,
    cert: dict[str, Any],
) -> tuple[Blocks, str]:
    """The judged point: ``point``, or the NUC solution (re-certified, or solved here).

    Returns it and the reason's note when a solution is not certified to ``gap_rtol`` (then it is
    judged as a point); ``cert`` gets the solution's ``nuc_rel_gap``, ``nuc_certified``, ``ranks``.
    """
    if point is not None:
        D: Blocks = problem.check_point(point, "point")
        if not all(bool(torch.isfinite(d).all()) for d in D):
            raise UserInputError("point: expected finite entries, got NaN or inf")
        return D, ""
    if solution is None:
        sol = solve_nuc(problem, gap_rtol=gap_rtol, seed=seed)
        c = sol.certificate
    else:
        D0 = problem.check_point(solution.D, "solution.D")
        c = nuc_certificate(problem, D0)  # never trust a passed-in certificate
        sol = dataclasses.replace(solution, certificate=c, converged=c.within(gap_rtol))
    cert.update(nuc_rel_gap=c.rel_gap, nuc_certified=c.within(gap_rtol), ranks=list(sol.ranks))
    if c.within(gap_rtol):
        return sol.D, ""
    given = "the passed solution" if solution is not None else "the NUC solve"
    return sol.D, (
        f"; {given} is not certified (relative gap {c.rel_gap:.3g} > gap_rtol {gap_rtol:.3g}): "
        "judged as a point, not as the NUC minimizer"
    )


def _training_side(
    problem: Problem,
    D: Blocks,
    o: _GenOptions,
    *,
    clip: float,
    rho: float,
    cert: dict[str, Any],
) -> tuple[GeneralizationBound, GeneralizationBound | None]:
    """The bound at the solution's radius and at the magnitude radius (``None`` when ``lam = 0``).

    ``cert`` gets the training numbers: clipped and plain loss, ``L(0)``, nuclear norms, both
    radii, the variance statistic and Khintchine's bound, and both bounds.
    """
    z_tr = problem.predictions(D)
    emp = float(_clipped(problem, z_tr, clip).mean())
    L0 = problem.risk(problem.zeros())
    nuclear = [float(torch.linalg.matrix_norm(d, ord="nuc")) for d in D]
    B_sol = sum(nuclear)
    lam_min = min(problem.lam)
    B_mag = L0 / lam_min if lam_min > 0 else math.inf
    vs = variance_statistic(problem)
    v = max(vs)
    d1 = sum(m for m, _ in problem.blocks)
    d2 = sum(n for _, n in problem.blocks)
    common = dict(
        empirical=emp, v=v, d1=d1, d2=d2, N=problem.N, rho=rho, clip=clip, delta=o.delta, base=o.grid_base,
        ratio=float(o.grid_ratio),
    )  # fmt: skip
    bound_sol = generalization_bound(B=B_sol, **common)  # type: ignore[arg-type]
    bound_mag = generalization_bound(B=B_mag, **common) if math.isfinite(B_mag) else None  # type: ignore[arg-type]
    cert.update(
        train_clipped_loss=emp,
        train_loss=problem.risk_at(z_tr),
        L0_train=L0,
        nuclear_norms=nuclear,
        B_solution=B_sol,
        B_magnitude=B_mag,
        v_blocks=list(vs),
        v=v,
        khintchine=khintchine_bound(v, d1, d2),
        bound_solution=_bound_dict(bound_sol),
        bound_magnitude=None if bound_mag is None else _bound_dict(bound_mag),
    )
    return bound_sol, bound_mag


def _held_out_side(test: Problem, D: Blocks, *, clip: float, alpha: float, cert: dict[str, Any]) -> None:
    """``cert`` gets the held-out clipped loss of ``D`` and of ``D = 0``, their Hoeffding limits and more."""
    z_te = test.predictions(D)
    test_mean = float(_clipped(test, z_te, clip).mean())
    trivial = float(_clipped(test, test.f0, clip).mean())
    rad = hoeffding_radius(clip=clip, M=test.N, alpha=alpha)
    cert.update(
        test_clipped_loss=test_mean,
        test_ucl=test_mean + rad,
        test_lcl=test_mean - rad,
        hoeffding_radius=rad,
        test_loss=test.risk_at(z_te),
        test_clipped_fraction=float((test.loss.value(z_te, test.y) > clip).to(torch.float64).mean()),
        trivial_test_clipped_loss=trivial,
        trivial_test_lcl=trivial - rad,
        trivial_test_loss=test.risk_at(test.f0),
        test_accuracy=_accuracy(test, z_te),
        trivial_test_accuracy=_accuracy(test, test.f0),
    )


def _gen_verdict(
    cert: dict[str, Any], chosen: GeneralizationBound | None, o: _GenOptions, *, N: int
) -> tuple[Status, str, float | None]:
    """The status, reason and error probability of JLR-gen on the bound ``chosen`` (``cert`` gets it)."""
    if chosen is None:
        return "inconclusive", "radius='magnitude' needs lam > 0", None
    if o.radius == "magnitude" and cert["B_solution"] > chosen.B_grid:
        return (
            "inconclusive",
            f"the judged point has sum ||D_j||_* = {cert['B_solution']:.4g}, outside the magnitude radius "
            f"{chosen.B_grid:.4g}: the magnitude bound does not cover it",
            None,
        )
    bound_scale, delta, alpha = o.bound_scale, o.delta, o.alpha
    test_mean, M, rad = cert["test_clipped_loss"], cert["M"], cert["hoeffding_radius"]
    ucl, lcl = cert["test_ucl"], cert["test_lcl"]
    trivial, trivial_lcl = cert["trivial_test_clipped_loss"], cert["trivial_test_lcl"]
    bound = bound_scale * chosen.value
    cert.update(
        bound=bound,
        looseness=bound - test_mean,
        B=chosen.B,
        B_grid=chosen.B_grid,
        grid_rounding=chosen.rounding,
    )
    scaled = "scaled " if bound_scale != 1 else ""
    what = (
        f"the {scaled}bound {bound:.4g} (B = {chosen.B:.4g} rounded up to the grid's {chosen.B_grid:.4g}, "
        f"a factor {chosen.rounding:.4g}; N = {N})"
    )
    held = f"held-out clipped loss {test_mean:.4g} (M = {M}"
    if lcl > bound:
        return (
            "violated",
            f"{held}, lower limit {lcl:.4g}) exceeds {what}; if the bound held this has probability "
            f"<= delta + alpha = {delta + alpha:.3g}",
            delta + alpha,
        )
    if bound >= trivial_lcl:
        return (
            "inconclusive",
            f"vacuous: {what} is not below the trivial predictor's (D = 0) held-out clipped loss "
            f"{trivial:.4g} less its Hoeffding radius: lower limit {trivial_lcl:.4g}; {held}, upper "
            f"limit {ucl:.4g})",
            None,
        )
    if ucl <= bound:
        return (
            "holds",
            f"{held}, upper limit {ucl:.4g}) <= {what} < the trivial predictor's lower limit "
            f"{trivial_lcl:.4g} (mean {trivial:.4g}); limits at level 1 - alpha each, together wrong "
            f"with probability <= 2 alpha = {2 * alpha:.3g}",
            2 * alpha,
        )
    return (
        "inconclusive",
        f"{held}) is within its Hoeffding radius {rad:.3g} of {what}: not certified either way",
        None,
    )


def _measure(
    judge: Judge,
    problem: Problem,
    test: Problem,
    point: Sequence[Tensor] | None,
    solution: NucSolution | None,
    o: _GenOptions,
    *,
    clip: float,
    rho: float,
) -> Verdict:
    """Measure the judged point on both sides (training: the bound; held-out: the loss) and judge."""
    timings = judge.timings
    # ---- the judged point -----------------------------------------------------------------------
    t0 = time.perf_counter()
    cert: dict[str, Any] = {
        "clip": clip,
        "rho": rho,
        "held_out_source": judge.problem["held_out_source"],
        "M": test.N,
    }
    D, uncertified = _judged_point(problem, point, solution, gap_rtol=o.gap_rtol, seed=o.seed, cert=cert)
    timings["solve"] = time.perf_counter() - t0
    # ---- training side: radius, variance, bound --------------------------------------------------
    t0 = time.perf_counter()
    bound_sol, bound_mag = _training_side(problem, D, o, clip=clip, rho=rho, cert=cert)
    timings["variance"] = time.perf_counter() - t0
    chosen = bound_sol if o.radius == "solution" else bound_mag
    if o.mc_samples:
        t0 = time.perf_counter()
        mean, se = rademacher_monte_carlo(problem, samples=o.mc_samples, seed=o.seed)
        cert.update(rademacher_mc_mean=mean, rademacher_mc_stderr=se)
        timings["monte_carlo"] = time.perf_counter() - t0
    # ---- held-out side ---------------------------------------------------------------------------
    t0 = time.perf_counter()
    _held_out_side(test, D, clip=clip, alpha=o.alpha, cert=cert)
    timings["held_out"] = time.perf_counter() - t0
    # ---- verdict --------------------------------------------------------------------------------
    status, reason, error = _gen_verdict(cert, chosen, o, N=problem.N)
    cert["error_probability"] = error
    return judge.verdict(status, cert, reason + uncertified)


def _gen_evidence(c: Mapping[str, Any], d: Mapping[str, Any]) -> list[str]:
    """The bound and its radius, the held-out clipped loss with its upper limit, the trivial one."""
    if "bound" not in c:
        return []
    return [
        f"bound {fmt(c['bound'])} (B {fmt(c.get('B'))})",
        f"held-out {fmt(c.get('test_clipped_loss'))} (UCL {fmt(c.get('test_ucl'))}, M {c.get('M')})",
        f"trivial {fmt(c.get('trivial_test_clipped_loss'))}",
    ]


@checker(
    CLAIM,
    options={
        "held_out": ANY,
        "solution": ANY,
        "point": ANY,
        "clip": POS_OPT,
        "delta": TOL,
        "alpha": TOL,
        "radius": Choice(("solution", "magnitude")),
        "grid_base": Real(expect="a finite positive number"),
        "grid_ratio": Both((Real(expect="a finite positive number"), Real(1.0, math.inf))),
        "bound_scale": Real(expect="a finite positive number"),
        "gap_rtol": TOL,
        "mc_samples": Either((Choice((0,)), Int(2, 10**6)), expect="0 or an int >= 2 (at most 1000000)"),
        "seed": Int(-(2**63), 2**64 - 1, expect="an int in [-2**63, 2**64)"),
    },
    certificate={
        "holds": [
            ("bound", "B", "M", "test_clipped_loss", "test_ucl", "test_lcl", "hoeffding_radius")
            + ("trivial_test_clipped_loss", "error_probability")
        ],
        "violated": [("bound", "B", "M", "test_clipped_loss", "test_lcl", "error_probability")],
    },
    evidence=_gen_evidence,
)
def check_jlr_gen(
    problem: Problem,
    *,
    held_out: Problem | None = None,
    solution: NucSolution | None = None,
    point: Sequence[Tensor] | None = None,
    clip: float | None = None,
    delta: float = 0.05,
    alpha: float = 0.05,
    radius: Literal["solution", "magnitude"] = "solution",
    grid_base: float = 1.0,
    grid_ratio: float = DEFAULT_GRID_RATIO,
    bound_scale: float = 1.0,
    gap_rtol: float = _T.gap_rtol,
    mc_samples: int = 32,
    seed: int = 0,
    save_dir: Any = None,
) -> Verdict:
    r"""JLR-gen: the held-out clipped loss of :math:`\hat D` against the Rademacher bound.

    Parameters
    ----------
    problem
        The training problem (``N`` examples).
    held_out
        The held-out examples (default: ``problem.meta["held_out"]``); none: ``inconclusive``.
        They must be disjoint from the training examples: ``ValueError`` when any held-out example
        equals a training one (:func:`shared_examples`: ``J`` rows, ``f0`` row and label for a
        stored ``J``; ``f0`` row and label only when either ``J`` is an operator).
    solution, point
        The judged :math:`\hat D`: ``point`` (any adapted weight: the bound holds for every
        :math:`D` of the grid's balls) or the NUC solution (``solution``, re-certified on
        ``problem``; default: solved here to ``gap_rtol``).  A solution whose re-computed gap is
        above ``gap_rtol`` is judged as a point, and the reason says it is not certified.  The
        judged point must not depend on the held-out data (chosen, tuned or stopped by it): the
        held-out limits assume the held-out examples are independent of :math:`\hat D`.
    clip
        The clipping level :math:`b` (default :func:`theory.generalization.default_clip`:
        :math:`2\log K` for cross-entropy; required for the squared loss).
    delta, alpha
        Confidence of the bound (:math:`1 - \delta`) and of each held-out limit (:math:`1 - \alpha`).
    radius
        ``"solution"``: :math:`B = \sum_j\|\hat D_j\|_*`; ``"magnitude"``: :math:`B = L(0)/\min_j\lambda_j`.
    grid_base, grid_ratio
        :math:`B_0` and the ratio :math:`r > 1` of the union-bound grid :math:`B_0 r^k` (fixed before
        seeing the data; the confidences :math:`\delta_k` do not depend on :math:`r`).  The radius
        is rounded up to the grid, by the factor ``B_grid / B`` (< :math:`r`) in the certificate.
    bound_scale
        The variant claim :math:`\mathbb E\ell_b \le` ``bound_scale`` :math:`\times` bound (a planted
        false variant with ``bound_scale < 1`` must come out ``violated`` where the bound is tight).
    gap_rtol
        Relative duality gap of the NUC solve (the verdict records whether the solution meets it;
        the bound holds for any point).
    mc_samples
        Monte-Carlo draws of :math:`\max_j\|Z_j\|_{op}` reported beside its rigorous bound (0: none).
    seed
        Seeds the NUC solve and the Monte-Carlo signs (an int in :math:`[-2^{63}, 2^{64})`).
    save_dir
        Unused (no counterexample file, see below); accepted for the suite's uniform call.

    Notes
    -----
    Verdict (``UCL``/``LCL``: the held-out mean's one-sided Hoeffding limits at level
    :math:`1-\alpha` each; ``trivial LCL``: the same lower limit for the trivial predictor
    :math:`D = 0`): ``violated`` when ``LCL`` exceeds the (scaled) bound -- if the bound held with
    probability :math:`1 - \delta` this happens with probability at most :math:`\delta + \alpha`;
    ``inconclusive: vacuous`` when the bound is not below the trivial LCL; ``holds`` when it is and
    ``UCL`` is below the bound -- then :math:`\mathbb E\ell_b(\hat D) \le` bound :math:`<
    \mathbb E\ell_b(0)`, wrong with probability at most :math:`2\alpha` (two limits); otherwise
    ``inconclusive``.  The certificate's ``error_probability`` is the total for the verdict given.
    No counterexample file is saved: held-out data do not fit a problem file.

    Certificate (empty without held-out data): ``clip`` (:math:`b`), ``rho`` (the clipped loss's
    Lipschitz constant), ``held_out_source``, ``M``; for a NUC solution ``nuc_rel_gap``,
    ``nuc_certified``, ``ranks``; the training side's ``train_clipped_loss``, ``train_loss``,
    ``L0_train``, ``nuclear_norms``, ``B_solution``, ``B_magnitude``, ``v_blocks``, ``v``,
    ``khintchine`` (the bound on :math:`\mathbb E\max_j\|Z_j\|_{op}`), ``bound_solution`` and
    ``bound_magnitude`` (each bound's terms), with ``mc_samples`` ``rademacher_mc_mean`` and
    ``rademacher_mc_stderr``; the held-out side's ``test_clipped_loss``, ``test_ucl``,
    ``test_lcl``, ``hoeffding_radius``, ``test_loss``, ``test_clipped_fraction``,
    ``test_accuracy`` and the trivial predictor's ``trivial_test_clipped_loss``,
    ``trivial_test_lcl``, ``trivial_test_loss``, ``trivial_test_accuracy``; the judged ``bound``
    (scaled), ``looseness`` (bound less held-out loss), ``B``, ``B_grid``, ``grid_rounding`` when
    the chosen radius applies; ``error_probability``.
    """
    del save_dir
    o = _GenOptions(
        clip,
        delta,
        alpha,
        radius,
        grid_base,
        grid_ratio,
        bound_scale,
        gap_rtol,
        mc_samples,
        seed,
        point is not None,
    )
    o.check(solution)
    loss = problem.loss.name
    if clip is not None:
        clipped_lipschitz(loss, clip)  # validates clip before anything is computed
    opts: dict[str, Any] = dataclasses.asdict(o)
    fp = problem.fingerprint()
    test = held_out if held_out is not None else problem.meta.get("held_out")
    if test is None:
        return Judge(CLAIM, fp, opts).inconclusive(
            {},
            "no held-out data: give held_out (a Problem of held-out examples) or a problem carrying "
            "meta['held_out'] (verify.jlr.gen.with_held_out)",
        )
    _disjoint_held_out(problem, test)
    b = default_clip(loss, problem.K) if clip is None else float(clip)
    rho = clipped_lipschitz(loss, b)
    opts["clip"] = b
    source = "given" if held_out is not None else str(problem.meta.get("held_out_source", "meta"))
    judge = Judge(CLAIM, dict(fp, n_test=test.N, held_out_source=source), opts)
    return _measure(judge, problem, test, point, solution, o, clip=b, rho=rho)
