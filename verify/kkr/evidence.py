r"""The evidence the [KKR25] checkers judge: a reference minimizer, training end points, constants.

:func:`collect_evidence` computes it for one problem (an experiment file, ``loracheck kkr``, holds
the same data for many: :func:`verify.kkr.experiment.evidence_from_entry`); :func:`resolve_evidence`
gives a checker its evidence from what it was called with (evidence, or a problem and the
``collect`` options, :data:`COLLECT_OPTIONS`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from landscapes.nonlinear.penalized import PenalizedMinimum, minimize_penalized
from landscapes.nonlinear.problems import NonlinearProblem
from landscapes.nonlinear.restricted import (
    RestrictedBounds,
    RestrictedConstants,
    restricted_bounds,
    restricted_constants,
    restricted_witnesses,
)
from landscapes.nonlinear.sosp import Factors
from theory.errors import InputTypeError, UserInputError, finite_number
from verify.kkr.training import DENSE_MAX, KKR_INITS, end_point_matrices, kkr_run, make_init
from verify.options import ANY, BOOL, POS, SEED, Fields, Int, Seq, Str

__all__ = ["COLLECT_OPTIONS", "Evidence", "collect_evidence", "resolve_evidence"]

#: ``collect=`` of the KKR checkers: the options of :func:`collect_evidence`.
COLLECT_OPTIONS = Fields(
    {
        "rank": Int(1, 100_000, optional=True),
        "radius": POS,
        "inits": Seq(Str(), 1, 64, distinct=True),
        "seeds": Seq(SEED, 1, 1_000, distinct=True),
        "steps": Int(0, 10**7),
        "lr": POS,
        "samples": Int(1, 10**6),
        "starts": ANY,
        "dense_max": Int(0, 10_000),
        "witnesses": BOOL,
    },
    optional=True,
)

_COLLECT = tuple(COLLECT_OPTIONS.fields)


@dataclass(frozen=True)
class Evidence:
    """What the [KKR25] checkers judge: the reference, end points, and constants about the reference.

    ``runs`` are dicts of :func:`verify.kkr.training.kkr_run` with ``init`` and ``seed`` (and ``X``,
    the end point); ``constants`` the Monte-Carlo estimate at ``rank`` and ``radius``;
    ``witnesses`` (optional) the searched points of the set,
    :func:`landscapes.nonlinear.restricted.restricted_witnesses`: ``alpha_upper`` and ``beta_lower``.
    """

    problem: NonlinearProblem
    reference: PenalizedMinimum
    runs: tuple[Mapping[str, Any], ...]
    constants: RestrictedConstants | None
    bounds: RestrictedBounds
    rank: int
    radius: float
    seconds: float = 0.0
    options: Mapping[str, Any] = field(default_factory=dict)
    witnesses: Mapping[str, float] | None = None


def _check_collect(
    problem: NonlinearProblem,
    rank: int | None,
    radius: float,
    inits: Sequence[str],
    seeds: Sequence[int],
    steps: int,
    lr: float,
    samples: int,
    starts: Mapping[str, Any] | None,
    dense_max: int,
) -> None:
    """Refuse the arguments of :func:`collect_evidence` that are out of range, naming the first one."""
    if not isinstance(problem, NonlinearProblem):
        raise InputTypeError(f"problem: expected a NonlinearProblem, got {type(problem).__name__}")
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        raise UserInputError(f"rank: expected a positive int, got {rank!r}")
    if not (isinstance(radius, (int, float)) and radius > 0 and finite_number(radius)):
        raise UserInputError(f"radius: expected a positive finite number, got {radius!r}")
    for i in inits:
        if i not in KKR_INITS or i == "loraga":
            allowed = [k for k in KKR_INITS if k != "loraga"]
            raise UserInputError(f"inits: expected names from {allowed}, got {i!r}")
    if len(set(inits)) != len(inits):
        raise UserInputError(f"inits: expected distinct names, got {list(inits)!r}")
    if any(isinstance(x, bool) or not isinstance(x, int) for x in seeds) or len(set(seeds)) != len(seeds):
        raise UserInputError(f"seeds: expected distinct ints, got {list(seeds)!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise UserInputError(f"steps: expected an int >= 0, got {steps!r}")
    if not (isinstance(lr, (int, float)) and lr > 0 and finite_number(lr)):
        raise UserInputError(f"lr: expected a positive finite number, got {lr!r}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise UserInputError(f"samples: expected a positive int, got {samples!r}")
    if isinstance(dense_max, bool) or not isinstance(dense_max, int) or dense_max < 0:
        raise UserInputError(f"dense_max: expected an int >= 0, got {dense_max!r}")
    for name, st in (starts or {}).items():
        if not isinstance(st, Factors):
            raise InputTypeError(
                f"starts[{name!r}]: expected landscapes.nonlinear.sosp.Factors, got {type(st).__name__}"
            )


def collect_evidence(
    problem: NonlinearProblem,
    *,
    rank: int | None = None,
    radius: float = 3.0,
    inits: Sequence[str] = ("zero", "small", "large"),
    seeds: Sequence[int] = (0, 1, 2),
    steps: int = 1500,
    lr: float = 0.02,
    samples: int = 200,
    starts: Mapping[str, Any] | None = None,
    dense_max: int = DENSE_MAX,
    witnesses: bool = False,
) -> Evidence:
    r"""Reference minimum, constants and one training run per (init, seed) (plus named ``starts``: Factors).

    ``rank`` is the LoRA rank ``r`` (default ``r* + 2``, ``r*`` the reference's rank, capped by the
    block sizes); the constants are measured at ``(rank, radius)`` about the reference.  End points
    with at most ``dense_max`` LoRA parameters get the dense curvature certificate (a *certified*
    SOSP); larger ones Lanczos (an *approximate* SOSP).  ``witnesses`` adds the searched points of
    :func:`landscapes.nonlinear.restricted.restricted_witnesses` (one-block quadratic risks with
    :math:`\|X^\star\|_F < D`; seconds on a 3 x 3 problem, a minute on 4 x 4): a smaller
    :math:`\hat\alpha` and a larger :math:`\hat\beta` than sampling finds, so a tighter
    :math:`\hat\rho`.
    """
    _check_collect(problem, rank, radius, inits, seeds, steps, lr, samples, starts, dense_max)
    t0 = time.perf_counter()
    ref = minimize_penalized(problem)
    if rank is None:
        rank = min(ref.rank + 2, min(min(b) for b in problem.blocks))
    runs: list[dict[str, Any]] = []
    norm = ref.frobenius
    for init in inits:
        for seed in seeds:
            start, _ = make_init(problem, init, rank=rank, seed=seed, reference_norm=norm)
            run = kkr_run(problem, start, steps=steps, lr=lr, dense_max=dense_max)
            run.update(init=init, seed=seed, lora_rank=rank)
            runs.append(run)
    for name, start in (starts or {}).items():
        run = kkr_run(problem, start, steps=steps, lr=lr, dense_max=dense_max)
        run.update(init=str(name), seed=-1, lora_rank=max(a.shape[1] for a in start.A))
        runs.append(run)
    # A run that beats the reference refines it.
    fin = [r for r in runs if r.get("status") == "finished"]
    if fin:
        best = min(fin, key=lambda r: r["penalized"])
        if best["penalized"] < ref.value - 1e-12 * max(1.0, abs(ref.value)):
            ref = minimize_penalized(problem, starts={"best-run": end_point_matrices(best, problem)})
    for run in runs:
        run["reference_rank"] = ref.rank  # a run with r < r* is outside the theorems ("rank-limited")
    consts = (
        restricted_constants(problem, rank=rank, radius=radius, x_star=ref.X, samples=samples)
        if rank >= ref.rank
        else None
    )
    wit = None
    if witnesses and rank >= ref.rank:
        w = restricted_witnesses(problem, rank=rank, radius=float(radius), x_star=ref.X)
        wit = {"alpha_upper": w.alpha_upper, "beta_lower": w.beta_lower, "rho_upper": w.rho_upper}
    return Evidence(
        problem,
        ref,
        tuple(runs),
        consts,
        restricted_bounds(problem, x_star=ref.X, radius=float(radius), rank=rank),
        rank,
        float(radius),
        time.perf_counter() - t0,
        {
            "inits": list(inits),
            "seeds": list(seeds),
            "steps": steps,
            "lr": lr,
            "samples": samples,
            "dense_max": dense_max,
            "witnesses": witnesses,
        },
        wit,
    )


def resolve_evidence(
    problem: NonlinearProblem | Evidence, evidence: Evidence | None, collect: Mapping[str, Any] | None
) -> Evidence:
    """The evidence a checker judges: given (as ``problem`` or ``evidence``), or collected on ``problem``.

    ``collect``: the options of :func:`collect_evidence` for a problem given without evidence.
    """
    if isinstance(problem, Evidence):
        return problem
    if evidence is not None:
        if evidence.problem is not problem:
            raise UserInputError("evidence: expected evidence collected on this problem (evidence.problem)")
        return evidence
    if not isinstance(problem, NonlinearProblem):
        raise InputTypeError(
            f"problem: expected a NonlinearProblem or Evidence, got {type(problem).__name__}"
        )
    opts = dict(collect or {})
    unknown = sorted(set(opts) - set(_COLLECT))
    if unknown:
        raise UserInputError(f"collect: expected options among {_COLLECT}, got {unknown}")
    return collect_evidence(problem, **opts)
