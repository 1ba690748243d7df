r"""Checkers of the [KKR25] claims on non-linearized problems (and KKR-includes-JLR on linearized ones).

Every checker works on *evidence*: a reference minimizer of the penalized problem
(:func:`landscapes.nonlinear.penalized.minimize_penalized`), a set of training end points
(:func:`verify.kkr.training.kkr_run`, each with its SOSP certificate) and the restricted constants
about the reference.  :func:`collect_evidence` computes it for one problem; an experiment file
(``loracheck kkr``) holds the same data for many.

How far each number can be trusted decides the verdict:

* *non-global* is certified (the reference is a feasible point with a lower penalized value);
  *global* only when the reference is certified (convex risk, or a zero risk without decay);
* an SOSP is approximate: gradient norm and the Lanczos Ritz value (an upper bound on
  :math:`\lambda_{\min}`), both within tolerance;
* sampled :math:`\hat\alpha` is an upper estimate of :math:`\alpha` and :math:`\hat\beta` a lower
  estimate of :math:`\beta`, so :math:`\hat\rho = 2\hat\alpha/\hat\beta \ge \rho = 2\alpha/\beta`.
  The end points themselves lie in the restricted set when they are within the radius, so their
  RSC / RSM ratios join the sample (a spurious point often *is* the witness that RSC fails).
  Structural bounds (:func:`landscapes.nonlinear.restricted.restricted_bounds`) give
  :math:`\rho \ge \rho_{lo} = 2\alpha_{lo}/\beta_{hi}`.

Each inequality of [KKR25] is monotone in :math:`\rho`; it is checked at both ends of
:math:`[\rho_{lo}, \hat\rho]`: it *holds* when it holds at the unfavourable end, and a failure
is a *violation* only when it fails at the favourable end **and** the hypothesis
(:math:`\alpha > 0`) is certified (:math:`\alpha_{lo} > 0`); otherwise the verdict is
``inconclusive`` and says which number is missing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from landscapes.nonlinear.penalized import PenalizedMinimum, minimize_penalized
from landscapes.nonlinear.problems import NonlinearProblem
from landscapes.nonlinear.restricted import (
    RestrictedBounds,
    RestrictedConstants,
    null_direction,
    restricted_bounds,
    restricted_constants,
    restricted_witnesses,
    rsc_ratio,
    rsm_ratio,
)
from landscapes.nonlinear.sosp import Factors
from theory.errors import InputTypeError, UserInputError, finite_number
from theory.kkr import dichotomy, loud
from verify.kkr.training import (
    DENSE_MAX,
    KKR_INITS,
    _fingerprint,
    classify,
    end_point_matrices,
    global_tolerance,
    kkr_run,
    kkr_table,
    make_init,
    sosp_certified,
)
from verify.options import validated
from verify.verdict import Verdict

__all__ = [
    "Evidence",
    "collect_evidence",
    "check_kkr_special",
    "check_kkr_dichotomy",
    "check_kkr_loud",
    "check_kkr_magnitude",
    "check_kkr_bias",
    "check_kkr_includes_jlr",
    "check_kkr_sgd_rank",
]

Blocks = tuple[Tensor, ...]


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
            ref = minimize_penalized(problem, starts={"best-run": _X(best, problem)})
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


_COLLECT = ("rank", "radius", "inits", "seeds", "steps", "lr", "samples", "starts", "dense_max", "witnesses")


def _resolve(
    problem: NonlinearProblem | Evidence, evidence: Evidence | None, collect: Mapping[str, Any] | None
) -> Evidence:
    """The evidence to judge: given, or collected on ``problem`` with the ``collect`` options."""
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


def _X(run: Mapping[str, Any], problem: NonlinearProblem) -> Blocks:
    return end_point_matrices(run, problem)


def _dist(X: Sequence[Tensor], Y: Sequence[Tensor]) -> float:
    return math.sqrt(sum(float((x - y).pow(2).sum()) for x, y in zip(X, Y)))


@dataclass(frozen=True)
class _Judged:
    """End points classified, with the constants every checker uses."""

    points: list[dict[str, Any]]
    alpha_hat: float
    beta_hat: float
    rho_hat: float
    rho_lo: float
    alpha_certified: bool
    r_star: int
    x_star_norm: float
    numbers: dict[str, Any]


def _check_rtol(global_rtol: float) -> None:
    if isinstance(global_rtol, bool) or not (isinstance(global_rtol, (int, float)) and 0 < global_rtol < 1):
        raise UserInputError(f"global_rtol: expected a number in (0, 1), got {global_rtol!r}")


def _check_consistent(ev: Evidence) -> None:
    """Bounds, constants and witnesses must be about the evidence's own set (rank, radius)."""
    b = ev.bounds
    off_radius = b.radius is not None and abs(b.radius - ev.radius) > 1e-12 * ev.radius
    if off_radius or (b.radius is not None and b.rank not in (None, ev.rank)):
        raise UserInputError(
            f"evidence: bounds computed at radius {b.radius}, rank {b.rank}; expected radius {ev.radius}, "
            f"rank {ev.rank}"
        )
    c = ev.constants
    if c is not None and (c.rank != ev.rank or abs(c.radius - ev.radius) > 1e-12 * ev.radius):
        raise UserInputError(
            f"evidence: constants sampled at radius {c.radius}, rank {c.rank}; expected radius {ev.radius}, "
            f"rank {ev.rank}"
        )


def _judge(ev: Evidence, global_rtol: float) -> _Judged:
    _check_rtol(global_rtol)
    _check_consistent(ev)
    p, ref = ev.problem, ev.reference
    pts = []
    a_hat = ev.constants.alpha if ev.constants is not None else math.inf
    b_hat = ev.constants.beta if ev.constants is not None else -math.inf
    # The problem's depth L(0) - F*: the global test's scale (invariant to rescaling and shifting the risk).
    depth = max(p.value(p.zeros()) - ref.value, 0.0)
    witness = None
    if ev.witnesses is not None and ev.constants is not None:
        # Searched points of the set: explicit members, so one-sided like the samples.
        if ev.witnesses["alpha_upper"] < a_hat:
            a_hat, witness = ev.witnesses["alpha_upper"], ("searched", "alpha")
        b_hat = max(b_hat, ev.witnesses["beta_lower"])
    for k, r in enumerate(ev.runs):
        c = classify(r, ref.value, global_rtol=global_rtol, depth=depth)
        if c in ("global", "spurious") and int(r.get("lora_rank", ev.rank)) != ev.rank:
            # A point of another LoRA rank: the constants and conditions here are at rank ev.rank.
            c = "other-rank"
        d: dict[str, Any] = {
            "init": r["init"],
            "seed": r["seed"],
            "class": c,
            "sosp_certified": sosp_certified(r),
            "lambda_min_method": r.get("lambda_min_method"),
        }
        if r.get("status") == "finished":
            X = _X(r, p)
            d.update(
                distance=_dist(X, ref.X),
                singular_values=r["singular_values"][0] if len(r["singular_values"]) == 1 else None,
                ranks=r["ranks"],
                frobenius=r["frobenius"],
                penalized=r["penalized"],
                excess=r["penalized"] - ref.value,
                test_risk=r.get("test_risk"),
                grad_op_over_lam=r.get("grad_op_over_lam"),
            )
            # An end point is a sample of the set too -- unless it sits on X* (the reference is
            # refined from the best end point): there the ratio is round-off over round-off.
            # The same floor as the sampler's (1e-3 of the radius).
            if max(r["ranks"]) <= ev.rank and 1e-3 * ev.radius <= d["distance"] <= ev.radius:
                rsc, _ = rsc_ratio(p, X, ref.X)
                rsm = rsm_ratio(p, X, torch.Generator().manual_seed(k))
                d.update(rsc_ratio=rsc, rsm_ratio=rsm)
                if rsc < a_hat:
                    a_hat, witness = rsc, (r["init"], r["seed"])
                if rsm > b_hat:
                    b_hat = rsm
        pts.append(d)
    b = ev.bounds
    rho_hat = 2 * a_hat / b_hat if (b_hat > 0 and math.isfinite(a_hat)) else math.inf
    rho_lo = 2 * b.alpha_lower / b.beta_upper if (b.alpha_lower > 0 and math.isfinite(b.beta_upper)) else 0.0
    if rho_lo > 0 and rho_lo > rho_hat * (1 + 1e-9):
        raise ValueError(
            f"evidence: the certified rho_lower = {rho_lo:.6g} exceeds the sampled rho_hat = {rho_hat:.6g}; "
            "the bounds, constants or witnesses are not about the same problem and set"
        )
    numbers = {
        "alpha_hat": a_hat,
        "beta_hat": b_hat,
        "rho_hat": rho_hat,
        "rho_lower": rho_lo,
        "alpha_witness_end_point": witness,
        "witnesses": dict(ev.witnesses) if ev.witnesses is not None else None,
        "bounds": b.to_dict(),
        "constants": ev.constants.to_dict() if ev.constants is not None else None,
        "reference": {
            "value": ref.value,
            "rank": ref.rank,
            "frobenius": ref.frobenius,
            "certified": ref.certified,
            "method": ref.method,
            "stationarity": ref.stationarity,
        },
        "rank": ev.rank,
        "radius": ev.radius,
        "end_points": len(ev.runs),
        "sosps": sum(1 for d in pts if d["class"] in ("global", "spurious")),
        "certified_sosps": sum(
            1 for d in pts if d["class"] in ("global", "spurious") and d["sosp_certified"]
        ),
        "spurious": sum(1 for d in pts if d["class"] == "spurious"),
    }
    return _Judged(pts, a_hat, b_hat, rho_hat, rho_lo, b.alpha_lower > 0, ref.rank, ref.frobenius, numbers)


def _save(
    save_dir: str | Path | None, claim: str, ev: Evidence, bad: Sequence[Mapping[str, Any]]
) -> str | None:
    """Write the offending end points (with the problem's name and meta) as JSON; the path, or ``None``."""
    if save_dir is None or not bad:
        return None
    import hashlib
    import json

    from landscapes.io import atomic_write_text
    from verify.verdict import jsonable

    keys = {(d["init"], d["seed"]) for d in bad}
    points = [
        {
            "init": r["init"],
            "seed": r["seed"],
            **{k: r[k] for k in ("A", "B", "X") if k in r},
            "penalized": r.get("penalized"),
        }
        for r in ev.runs
        if (r["init"], r["seed"]) in keys and r.get("status") == "finished"
    ]
    data = {
        "claim": claim,
        "problem": {"name": ev.problem.name, "meta": dict(ev.problem.meta), "lam": list(ev.problem.lam)},
        "reference": {"X": [x.tolist() for x in ev.reference.X], "value": ev.reference.value},
        "rank": ev.rank,
        "radius": ev.radius,
        "options": dict(ev.options),
        "points": points,
    }
    text = json.dumps(jsonable(data), indent=1, allow_nan=False)
    tag = hashlib.sha256(text.encode()).hexdigest()[:8]
    path = Path(save_dir) / f"{claim}-{ev.problem.name}-{tag}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text + "\n")
    return str(path)


#: Singular values below this fraction of sigma_1 are zero (the numerical rank of the end points).
RANK_RTOL = 1e-6


def _numerical(singular_values: Sequence[float], r: int) -> list[float]:
    """The spectrum with values below ``RANK_RTOL * sigma_1`` set to 0, padded with zeros to ``r``."""
    sv = [float(x) for x in singular_values]
    top = sv[0] if sv else 0.0
    sv = [x if x > RANK_RTOL * top else 0.0 for x in sv]
    return sv + [0.0] * max(0, r - len(sv))


def _verdict(
    claim: str,
    ev: Evidence,
    status: str,
    reason: str,
    cert: dict[str, Any],
    opts: dict[str, Any],
    *,
    bad: Sequence[Mapping[str, Any]] = (),
    save_dir: str | Path | None = None,
) -> Verdict:
    saved = _save(save_dir, claim, ev, bad) if status == "violated" else None
    return Verdict(
        claim,
        status,  # type: ignore[arg-type]
        dict(
            _fingerprint(ev.problem),
            name=ev.problem.name,
            N=ev.problem.meta.get("N"),
            K=ev.problem.meta.get("K"),
            meta=dict(ev.problem.meta),
        ),
        cert,
        reason,
        {"evidence": ev.seconds},
        dict(ev.options, **opts),
        saved,
    )


def _outside(ev: Evidence, j: _Judged) -> str | None:
    """Why the theorems do not apply to this evidence at all (``None`` when they may)."""
    if ev.rank < j.r_star:
        return f"r = {ev.rank} < r* = {j.r_star}: [KKR25] assumes r >= r* (no LoRA point reaches X*)"
    if ev.constants is None or not math.isfinite(j.rho_hat):
        return "no restricted constants"
    return None


def _hypothesis_fails(j: _Judged) -> str | None:
    if j.alpha_hat <= 0:
        where = (
            f"at end point {j.numbers['alpha_witness_end_point']}"
            if j.numbers["alpha_witness_end_point"]
            else "at a sampled point"
        )
        return f"RSC fails on the set: ratio {j.alpha_hat:.3g} <= 0 {where}; [KKR25]'s hypothesis is not met"
    return None


def _check_planted(rho_factor: float, margin: float) -> None:
    if isinstance(rho_factor, bool) or not (
        isinstance(rho_factor, (int, float)) and 0 < rho_factor < math.inf
    ):
        raise UserInputError(f"rho_factor: expected a positive finite number, got {rho_factor!r}")
    if isinstance(margin, bool) or not (isinstance(margin, (int, float)) and 0 <= margin < 1):
        raise UserInputError(f"margin: expected a number in [0, 1), got {margin!r}")


def _sosp_words(points: Sequence[Mapping[str, Any]]) -> str:
    """``"k SOSPs (c certified, a approximate)"``: how each was accepted."""
    n = len(points)
    c = sum(1 for d in points if d.get("sosp_certified"))
    if c == n:
        return f"{n} certified SOSP(s) (dense Hessian)"
    if c == 0:
        return f"{n} approximate SOSP(s) (Lanczos Ritz value, an upper bound on lambda_min)"
    return f"{n} SOSPs ({c} certified by the dense Hessian, {n - c} approximate: Lanczos)"


def _tightness(res: Mapping[str, Any]) -> dict[str, float]:
    """How tight (ii) and (iii) are: measured / needed (>= 1 where the condition holds)."""
    need_ii, need_iii = float(res["sigma_r_needed"]), float(res["distance_sq_needed"])
    return {
        "ii": float(res["sigma_r"]) / need_ii if need_ii > 0 else math.inf,
        # (iii) cannot be met when its denominator is not positive (needed = inf): ratio 0.
        "iii": float(res["distance_sq"]) / need_iii if need_iii > 0 else math.inf,
    }


def _fails_by_margin(weak: Mapping[str, Any], margin: float) -> bool:
    r"""Theorem 1.2 fails by more than the relative ``margin``.

    ``weak`` is :func:`theory.kkr.dichotomy` at :math:`(1 - \text{margin})\rho_{lo}`: the rank
    condition is exact, (ii) fails beyond the margin, or (iii) fails there by more than the margin
    (a failing (ii) leaves (iii) without a positive denominator: it fails too).
    """
    if not weak["rank_is_r"] or not weak["sigma_ratio_ok"]:
        return True
    return _tightness(weak)["iii"] < 1 - margin


def _why_not_refuted(
    evidence: Evidence,
    j: _Judged,
    definite: Sequence[Mapping[str, Any]],
    approximate: Sequence[Mapping[str, Any]],
    contradicts: Any,
) -> str | None:
    """Why contradicting points refute nothing (``None`` when they do, or when there are none).

    A refutation needs a certified reference (X*, r*), a certified alpha > 0 and certified SOSPs;
    ``contradicts(rows)`` says what the rows contradict.
    """
    if definite and not evidence.reference.certified:
        return (
            f"{contradicts(definite)}, but the reference (X*, r*) is the best point found, not a "
            "certified minimizer"
        )
    if definite and not j.alpha_certified:
        return (
            f"{contradicts(definite)}, but alpha > 0 is not certified on this set ({evidence.bounds.method})"
        )
    if not definite and approximate:
        return (
            f"{contradicts(approximate)}, but they are approximate SOSPs only (Lanczos Ritz value, an upper "
            "bound on lambda_min)"
        )
    return None


@validated("KKR-dichotomy")
def check_kkr_dichotomy(
    problem: NonlinearProblem | Evidence,
    *,
    evidence: Evidence | None = None,
    collect: Mapping[str, Any] | None = None,
    save_dir: str | Path | None = None,
    variant: str = "theorem",
    global_rtol: float = 1e-6,
    rho_factor: float = 1.0,
    margin: float = 1e-3,
) -> Verdict:
    r"""KKR-dichotomy (Thm 1.2): a non-global SOSP near :math:`X^\star` has rank ``r`` and two bounds.

    Within ``radius`` of :math:`X^\star`, a non-global SOSP has rank exactly ``r`` (i),
    :math:`\sigma_r \ge \rho\,\sigma_{r^\star}` (ii) and
    :math:`\|X - X^\star\|_F^2 \ge \|X - \Pi_{r^\star}X\|_F^2 / (1 - \rho\,\sigma_{r^\star}/\sigma_r)`
    (iii), :math:`\rho = 2\alpha/\beta`.

    Every SOSP within the radius that is not certified global is checked at both ends of
    :math:`[\rho_{lo}, \hat\rho]`, and the tightness of (ii) and (iii) (measured over needed) is
    reported.  ``violated`` needs all of: a *certified* SOSP (dense Hessian), certified
    non-global (the reference is lower), :math:`\alpha > 0` certified (:math:`\alpha_{lo} > 0`),
    and a failure at :math:`\rho_{lo}` by more than the relative ``margin`` (the end point is an
    SOSP only up to the solver's tolerance).

    Planted false statements, through the same code: ``rho_factor`` multiplies :math:`\rho` in the
    statement (a wrong constant: ``rho_factor > 1`` asks more of (ii) and (iii));
    ``variant="all-global"`` ("every SOSP is a global minimizer") and ``variant="low-rank"``
    ("every SOSP has rank at most ``r*``") need no constants: any certified spurious (resp.
    higher-rank) certified SOSP refutes them.
    """
    evidence = _resolve(problem, evidence, collect)
    claim = "KKR-dichotomy"
    if variant not in ("theorem", "all-global", "low-rank"):
        raise UserInputError(f"variant: expected 'theorem', 'all-global' or 'low-rank', got {variant!r}")
    _check_planted(rho_factor, margin)
    opts = {"variant": variant, "global_rtol": global_rtol, "rho_factor": rho_factor, "margin": margin}
    j = _judge(evidence, global_rtol)
    cert = dict(j.numbers)
    if variant == "theorem" and (why := _outside(evidence, j)) is not None:
        return _verdict(claim, evidence, "inconclusive", why, cert, opts)
    sosps = [d for d in j.points if d["class"] in ("global", "spurious")]
    if not sosps:
        why = "no end point is an SOSP (even approximately)"
        return _verdict(claim, evidence, "inconclusive", why, cert, opts)
    if variant in ("all-global", "low-rank"):
        if variant == "all-global":
            bad = [d for d in sosps if d["class"] == "spurious"]
            what = "are not global"
        else:
            bad = [d for d in sosps if max(d["ranks"]) > j.r_star]
            what = f"have rank > r* = {j.r_star}"
        sure = [d for d in bad if d["sosp_certified"]]
        cert["points"] = bad or sosps
        if sure:
            b0 = sure[0]
            return _verdict(
                claim,
                evidence,
                "violated",
                f"{len(sure)} certified SOSP(s) {what} (excess {b0['excess']:.3g}, rank {max(b0['ranks'])}, "
                f"||X||_F {b0['frobenius']:.3g})",
                cert,
                opts,
                bad=sure,
                save_dir=save_dir,
            )
        if bad:
            return _verdict(
                claim, evidence, "inconclusive", f"{_sosp_words(bad)} {what}, none certified", cert, opts
            )
        if variant == "all-global":
            ok = "holds" if evidence.reference.certified else "inconclusive"
            return _verdict(claim, evidence, ok, f"all {_sosp_words(sosps)} are global", cert, opts)
        return _verdict(claim, evidence, "holds", f"all {_sosp_words(sosps)} have rank <= r*", cert, opts)
    r, rs = evidence.rank, j.r_star
    if len(evidence.problem.blocks) > 1:
        return _verdict(
            claim,
            evidence,
            "inconclusive",
            f"Theorem 1.2 is stated for one adapted matrix; this problem has {len(evidence.problem.blocks)}",
            cert,
            opts,
        )
    if j.rho_lo > 1:
        return _verdict(
            claim,
            evidence,
            "inconclusive",
            f"the special regime is certified (2 alpha / beta >= {j.rho_lo:.3g} > 1): Theorem 1.2 (generic "
            "regime) does not apply; see KKR-special",
            cert,
            opts,
        )
    # Points at the best value found are checked too when that value is not certified global: they
    # may be non-global, and then the theorem constrains them.
    uncertain = not evidence.reference.certified
    rho_hi = rho_factor * j.rho_hat if math.isfinite(j.rho_hat) else math.inf
    rho_lo = rho_factor * j.rho_lo
    checked: list[dict[str, Any]] = []
    definite: list[dict[str, Any]] = []
    approximate: list[dict[str, Any]] = []
    undecided: list[dict[str, Any]] = []
    beyond = 0
    for d in sosps:
        if d["class"] != "spurious" and not uncertain:
            continue
        if d["distance"] > evidence.radius:
            beyond += 1
            continue
        sv = _numerical(d["singular_values"], r)
        d2 = d["distance"] ** 2
        worst = dichotomy(
            sv,
            r=r,
            r_star=rs,
            alpha=max(rho_hi, 1e-300) / 2 if math.isfinite(rho_hi) else 0.5,
            beta=1.0,
            distance_sq=d2,
            rank_rtol=1e-6,
        )
        best = dichotomy(
            sv, r=r, r_star=rs, alpha=max(rho_lo, 1e-300) / 2, beta=1.0, distance_sq=d2, rank_rtol=1e-6
        )
        weak = dichotomy(
            sv,
            r=r,
            r_star=rs,
            alpha=max(rho_lo * (1 - margin), 1e-300) / 2,
            beta=1.0,
            distance_sq=d2,
            rank_rtol=1e-6,
        )
        row = {
            "init": d["init"],
            "seed": d["seed"],
            "class": d["class"],
            "sosp_certified": d["sosp_certified"],
            "distance": d["distance"],
            "at_rho_hat": worst,
            "at_rho_lower": best,
            "tightness_at_rho_lower": _tightness(best),
            "tightness_at_rho_hat": _tightness(worst),
            "tightness_with_margin": _tightness(weak),
        }
        checked.append(row)
        saddle = any(float(g) > 1 + 1e-6 for g in (d.get("grad_op_over_lam") or []))
        if d["class"] != "spurious":
            # At the best value found (not certified global): a failure cannot be told from a
            # global minimizer, which the theorem does not constrain.
            if not worst["all"]:
                undecided.append(row)
        elif _fails_by_margin(weak, margin) and not (best["rank"] < r and saddle):
            (definite if d["sosp_certified"] else approximate).append(row)
        elif not best["all"] and best["rank"] < r and saddle:
            # Rank-deficient with ||grad L(X)||_op > lam: the free columns give negative curvature
            # that Lanczos missed; not an SOSP after all.
            undecided.append(dict(row, why="rank-deficient with ||grad L||_op > lam: a saddle"))
        elif not worst["all"]:
            undecided.append(row)
    cert["points_checked"] = checked
    cert["beyond_radius"] = beyond
    if (why := _hypothesis_fails(j)) is not None:
        return _verdict(claim, evidence, "inconclusive", why, cert, opts)
    planted = "" if rho_factor == 1 else f" (planted: rho x {rho_factor:g})"
    why = _why_not_refuted(
        evidence,
        j,
        definite,
        approximate,
        lambda rows: f"{len(rows)} non-global SOSP(s) break Theorem 1.2{planted}",
    )
    if why is not None:
        return _verdict(claim, evidence, "inconclusive", why, cert, opts)
    if definite:
        t = definite[0]["tightness_at_rho_lower"]
        return _verdict(
            claim,
            evidence,
            "violated",
            f"{len(definite)} certified non-global SOSP(s) break Theorem 1.2{planted} at the certified "
            f"rho_lower = {rho_lo:.3g} (alpha >= {evidence.bounds.alpha_lower:.3g}): rank "
            f"{definite[0]['at_rho_lower']['rank']} (r = {r}), sigma_r / needed {t['ii']:.4g}, "
            f"distance^2 / needed {t['iii']:.4g}",
            cert,
            opts,
            bad=definite,
            save_dir=save_dir,
        )
    if undecided:
        at_best = [row for row in undecided if row["class"] != "spurious"]
        spur = len(undecided) - len(at_best)
        parts = []
        if spur:
            parts.append(
                f"{spur} non-global SOSP(s) satisfy the conditions at rho_lower = {rho_lo:.3g} but not at "
                f"the estimate rho_hat = {rho_hi:.3g}"
            )
        if at_best:
            parts.append(
                f"{len(at_best)} SOSP(s) at the best value found fail them (rank "
                f"{at_best[0]['at_rho_lower']['rank']} < r = {r}): consistent with a global minimizer, "
                "but that value is not certified global"
            )
        return _verdict(claim, evidence, "inconclusive", "; ".join(parts), cert, opts)
    spurious = [row for row in checked if row["class"] == "spurious"]
    if not spurious:
        how = (
            f"{len(checked)} SOSPs at the best value found (not certified global) satisfy the conditions"
            if checked
            else f"all {_sosp_words(sosps)} are global"
        )
        if beyond:
            how += f"; {beyond} point(s) beyond D not checked"
        return _verdict(
            claim,
            evidence,
            "inconclusive",
            f"no non-global SOSP within D = {evidence.radius:g}: the theorem's non-global branch is not "
            f"exercised ({how})",
            cert,
            opts,
        )
    if not any(row["sosp_certified"] for row in spurious):
        return _verdict(
            claim,
            evidence,
            "inconclusive",
            f"{_sosp_words(spurious)}, non-global, satisfy all three conditions at rho_hat = "
            f"{rho_hi:.3g}, but none is a certified SOSP",
            cert,
            opts,
        )
    tmin = min(row["tightness_at_rho_hat"]["ii"] for row in spurious)
    tmin3 = min(row["tightness_at_rho_hat"]["iii"] for row in spurious)
    return _verdict(
        claim,
        evidence,
        "holds",
        f"{_sosp_words(spurious)}, certified non-global, within D = {evidence.radius:g} satisfy all three "
        f"conditions{planted} at rho_hat = {rho_hi:.3g} (tightest: sigma_r / needed {tmin:.4g}, "
        f"distance^2 / needed {tmin3:.4g}; at the certified rho_lower = {rho_lo:.3g} too)",
        cert,
        opts,
    )


@validated("KKR-special")
def check_kkr_special(
    problem: NonlinearProblem | Evidence,
    *,
    evidence: Evidence | None = None,
    collect: Mapping[str, Any] | None = None,
    save_dir: str | Path | None = None,
    global_rtol: float = 1e-6,
    variant: str = "theorem",
    rho_factor: float = 1.0,
) -> Verdict:
    r"""KKR-special (Thm 1.1): in the special regime every SOSP near :math:`X^\star` is global.

    Special regime: :math:`2\alpha > \beta`; near: within ``radius``.

    The regime must be *certified* by structural bounds (:math:`2\alpha_{lo} > \beta_{hi}`, e.g.
    well-conditioned matrix sensing).  The Monte-Carlo ratio :math:`2\hat\alpha/\hat\beta` is
    biased upward (:math:`\hat\alpha \ge \alpha`, :math:`\hat\beta \le \beta`), so an estimate
    above 1 does not place the problem in the special regime: the verdict is then
    ``inconclusive``.  ``holds`` needs a certified reference (so that "global" is certified too);
    ``violated`` a certified non-global, *certified* SOSP (dense Hessian) within ``radius``.
    ``variant="any-regime"`` is a planted false claim: Theorem 1.1's conclusion without its
    hypothesis (any such SOSP refutes it, whatever the regime); ``rho_factor`` plants a wrong
    constant in the hypothesis (the special regime read as ``rho_factor`` :math:`\cdot 2\alpha/\beta
    > 1`), so a generic-regime problem with a certified spurious SOSP refutes it through the
    theorem's own branch.
    """
    evidence = _resolve(problem, evidence, collect)
    claim = "KKR-special"
    if variant not in ("theorem", "any-regime"):
        raise UserInputError(f"variant: expected 'theorem' or 'any-regime', got {variant!r}")
    _check_planted(rho_factor, 0.0)
    opts = {"global_rtol": global_rtol, "variant": variant, "rho_factor": rho_factor}
    j = _judge(evidence, global_rtol)
    cert = dict(j.numbers)
    certified = rho_factor * j.rho_lo > 1
    estimated = math.isfinite(j.rho_hat) and rho_factor * j.rho_hat > 1
    if evidence.rank < j.r_star:
        return _verdict(
            claim,
            evidence,
            "inconclusive",
            f"r = {evidence.rank} < r* = {j.r_star}: Theorem 1.1 assumes r >= r*",
            cert,
            opts,
        )
    cert["special_certified"] = certified
    cert["special_estimated"] = estimated
    if variant == "any-regime":
        certified = True  # the planted claim drops the hypothesis
    if not certified:
        if estimated:
            why = (
                f"the special regime is only estimated (2 alpha_hat / beta_hat = {j.rho_hat:.3g} > 1, "
                "a ratio biased upward by sampling); the certified side is "
                + (
                    f"2 alpha_lower / beta_upper = {j.rho_lo:.3g} <= 1"
                    if j.rho_lo > 0
                    else f"not available ({evidence.bounds.method})"
                )
            )
        else:
            why = (
                f"not in the special regime (2 alpha_hat / beta_hat = {j.rho_hat:.3g} <= 1): "
                "Theorem 1.1 says nothing"
            )
        return _verdict(claim, evidence, "inconclusive", why, cert, opts)
    near = [d for d in j.points if d["class"] in ("global", "spurious") and d["distance"] <= evidence.radius]
    bad = [d for d in near if d["class"] == "spurious"]
    # Rank-deficient with ||grad L(X)||_op > lam: the free columns carry negative curvature (a saddle).
    sure = [
        d
        for d in bad
        if d["sosp_certified"]
        and not (
            max(d["ranks"]) < evidence.rank
            and any(float(g) > 1 + 1e-6 for g in d.get("grad_op_over_lam") or [])
        )
    ]
    cert["points"] = bad or near
    if not near:
        return _verdict(claim, evidence, "inconclusive", "no SOSP within the radius", cert, opts)
    if sure:
        return _verdict(
            claim,
            evidence,
            "violated",
            f"{len(sure)} certified SOSP(s) within D are not global (excess {sure[0]['excess']:.3g})"
            + (
                " (planted: any regime)"
                if variant != "theorem"
                else f" in a certified special regime (2 alpha_lower / beta_upper = {j.rho_lo:.3g}"
                + (f", planted: rho x {rho_factor:g})" if rho_factor != 1 else ")")
            ),
            cert,
            opts,
            bad=sure,
            save_dir=save_dir,
        )
    if bad:
        return _verdict(
            claim,
            evidence,
            "inconclusive",
            f"{_sosp_words(bad)} within D are not global, none certified as an SOSP",
            cert,
            opts,
        )
    if not evidence.reference.certified:
        return _verdict(
            claim,
            evidence,
            "inconclusive",
            f"all {len(near)} SOSPs reach the best known value, but it is not certified global",
            cert,
            opts,
        )
    return _verdict(
        claim,
        evidence,
        "holds",
        f"all {_sosp_words(near)} within D = {evidence.radius:g} are certified global; "
        + (
            f"special regime certified (2 alpha_lower / beta_upper = {j.rho_lo:.3g}"
            + (f", planted: rho x {rho_factor:g})" if rho_factor != 1 else " > 1)")
            if variant == "theorem"
            else "(planted: any regime)"
        ),
        cert,
        opts,
    )


@validated("KKR-loud")
def check_kkr_loud(
    problem: NonlinearProblem | Evidence,
    *,
    evidence: Evidence | None = None,
    collect: Mapping[str, Any] | None = None,
    save_dir: str | Path | None = None,
    global_rtol: float = 1e-6,
    variant: str = "theorem",
    rho_factor: float = 1.0,
    margin: float = 1e-3,
) -> Verdict:
    r"""KKR-loud (Cor. 1, ``r > r*``, generic regime): small :math:`\sigma_r` means global, else spurious.

    :math:`\sigma_r \le \rho\,\sigma_{r^\star}` implies global; otherwise spurious with
    :math:`\|X\|_F \ge \sqrt{\sum_{s=r^\star+1}^{r}\sigma_s^2 / (1 - \rho\sigma_{r^\star}/\sigma_r)}
    - \|X^\star\|_F` (the square root as reconstructed; tested).

    The corollary is stated for the generic regime :math:`2\alpha \le \beta`: it is checked only
    when the samples certify it (:math:`\hat\rho \le 1`, given :math:`\alpha > 0`).  Each SOSP
    within ``radius`` is classified at both ends of :math:`[\rho_{lo}, \hat\rho]` and compared
    with its certificate; the certificate also reports the magnitude separation between failures
    and successes.  A contradiction is ``violated`` when it is beyond the relative ``margin``, at
    the end of the interval that favours the corollary, with :math:`\alpha_{lo} > 0` certified and,
    for a spurious point, a *certified* SOSP (dense Hessian).  ``holds`` needs a point that could
    have contradicted it (a non-global SOSP, or a global one with :math:`\sigma_r > 0`).

    Planted false statements: ``rho_factor`` multiplies :math:`\rho` in the statement (a wrong
    constant), and ``variant="quiet"`` claims "no certified SOSP within ``radius`` has more than
    twice the norm of :math:`X^\star`" (no loud failure at all); any such SOSP refutes it.
    """
    evidence = _resolve(problem, evidence, collect)
    claim = "KKR-loud"
    if variant not in ("theorem", "quiet"):
        raise UserInputError(f"variant: expected 'theorem' or 'quiet', got {variant!r}")
    _check_planted(rho_factor, margin)
    opts = {"global_rtol": global_rtol, "variant": variant, "rho_factor": rho_factor, "margin": margin}
    j = _judge(evidence, global_rtol)
    cert = dict(j.numbers)
    if variant == "quiet":
        loud_pts = [
            d
            for d in j.points
            if d["class"] in ("global", "spurious")
            and d["sosp_certified"]
            and d["distance"] <= evidence.radius
            and d["frobenius"] > 2 * j.x_star_norm
        ]
        cert["points"] = loud_pts
        if loud_pts:
            return _verdict(
                claim,
                evidence,
                "violated",
                f"{len(loud_pts)} certified SOSP(s) with ||X||_F {loud_pts[0]['frobenius']:.3g} > "
                f"2 ||X*||_F = {2 * j.x_star_norm:.3g}",
                cert,
                opts,
                bad=loud_pts,
                save_dir=save_dir,
            )
        return _verdict(claim, evidence, "holds", "no certified SOSP above 2 ||X*||_F", cert, opts)
    r, rs = evidence.rank, j.r_star
    if len(evidence.problem.blocks) > 1:
        return _verdict(
            claim,
            evidence,
            "inconclusive",
            f"Corollary 1 is stated for one adapted matrix; this problem has {len(evidence.problem.blocks)}",
            cert,
            opts,
        )
    if r <= rs:
        return _verdict(
            claim, evidence, "inconclusive", f"Corollary 1 needs r > r* (r = {r}, r* = {rs})", cert, opts
        )
    if (why := _outside(evidence, j)) is not None:
        return _verdict(claim, evidence, "inconclusive", why, cert, opts)
    if (why := _hypothesis_fails(j)) is not None:
        return _verdict(claim, evidence, "inconclusive", why, cert, opts)
    if j.rho_lo > 1:
        return _verdict(
            claim,
            evidence,
            "inconclusive",
            f"the special regime is certified (2 alpha / beta >= {j.rho_lo:.3g} > 1): Corollary 1 is stated "
            "for the generic regime; see KKR-special",
            cert,
            opts,
        )
    if j.rho_hat > 1:
        return _verdict(
            claim,
            evidence,
            "inconclusive",
            f"the generic regime is not established (2 alpha_hat / beta_hat = {j.rho_hat:.3g} > 1, "
            f"2 alpha_lower / beta_upper = {j.rho_lo:.3g}): Corollary 1 is stated for 2 alpha <= beta",
            cert,
            opts,
        )
    rho_hi, rho_lo = rho_factor * j.rho_hat, rho_factor * j.rho_lo
    rows: list[dict[str, Any]] = []
    definite: list[dict[str, Any]] = []
    approximate: list[dict[str, Any]] = []
    undecided: list[dict[str, Any]] = []
    for d in j.points:
        if (
            d["class"] not in ("global", "spurious")
            or d.get("singular_values") is None
            or d["distance"] > evidence.radius
        ):
            continue
        sv = _numerical(d["singular_values"], r)
        at_hat = (
            loud(sv, r=r, r_star=rs, alpha=rho_hi / 2, beta=1.0, x_star_norm=j.x_star_norm)
            if rho_hi > 0
            else None
        )
        at_lo = loud(sv, r=r, r_star=rs, alpha=max(rho_lo, 1e-300) / 2, beta=1.0, x_star_norm=j.x_star_norm)
        # The favourable end, weakened by the margin: what a violation must fail.
        at_weak = loud(
            sv,
            r=r,
            r_star=rs,
            alpha=max(rho_lo * (1 - margin), 1e-300) / 2,
            beta=1.0,
            x_star_norm=j.x_star_norm,
        )
        truth = "global" if d["class"] == "global" else "spurious"
        s_r, s_rs = sv[r - 1], sv[rs - 1]
        row = {
            "init": d["init"],
            "seed": d["seed"],
            "certificate": truth,
            "sosp_certified": d["sosp_certified"],
            "sigma_r": s_r,
            "sigma_r_star": s_rs,
            "at_rho_hat": at_hat,
            "at_rho_lower": at_lo,
        }
        rows.append(row)
        # Prediction "global" is certain when it holds at rho_lo; "spurious" when it holds at rho_hat.
        saddle = any(float(g) > 1 + 1e-6 for g in (d.get("grad_op_over_lam") or []))
        target = definite if d["sosp_certified"] or truth == "global" else approximate
        if truth == "spurious" and s_r <= (1 - margin) * rho_lo * s_rs:
            if saddle and s_r == 0.0:
                undecided.append(dict(row, why="rank-deficient with ||grad L||_op > lam: a saddle"))
            else:
                target.append(dict(row, why="predicted global, certified spurious"))
        elif truth == "global" and rho_hi > 0 and s_r > (1 + margin) * rho_hi * s_rs:
            if evidence.reference.certified:
                target.append(dict(row, why="predicted spurious, certified global"))
            else:
                undecided.append(row)  # "global" is the best value found, not certified
        elif (
            truth == "spurious"
            and at_weak["prediction"] == "spurious"
            and at_weak["norm"] < (1 - margin) * at_weak["spurious_norm_bound"]
        ):
            target.append(dict(row, why="spurious point below the norm bound"))
        elif truth == "spurious" and (
            at_hat is None or at_hat["prediction"] != "spurious" or not at_hat["bound_holds"]
        ):
            undecided.append(row)
        elif truth == "global" and at_lo["prediction"] != "global":
            undecided.append(row)
    cert["points"] = rows
    succ = [d["frobenius"] for d in j.points if d["class"] == "global"]
    fail = [d["frobenius"] for d in j.points if d["class"] == "spurious"]
    cert["separation_ratio"] = min(fail) / max(succ) if succ and fail else None
    cert["success_norm_max"] = max(succ) if succ else None
    cert["failure_norm_min"] = min(fail) if fail else None
    planted = "" if rho_factor == 1 else f" (planted: rho x {rho_factor:g})"
    if not rows:
        return _verdict(claim, evidence, "inconclusive", "no SOSP within the radius", cert, opts)
    why = _why_not_refuted(
        evidence,
        j,
        definite,
        approximate,
        lambda rows: f"{len(rows)} point(s) contradict Corollary 1{planted} ({rows[0]['why']})",
    )
    if why is not None:
        return _verdict(claim, evidence, "inconclusive", why, cert, opts)
    if definite:
        return _verdict(
            claim,
            evidence,
            "violated",
            f"{len(definite)} point(s) contradict Corollary 1{planted}: {definite[0]['why']} "
            f"(sigma_r = {definite[0]['sigma_r']:.4g}, sigma_r* = {definite[0]['sigma_r_star']:.4g}, "
            f"rho in [{rho_lo:.3g}, {rho_hi:.3g}], alpha >= {evidence.bounds.alpha_lower:.3g} certified)",
            cert,
            opts,
            bad=definite,
            save_dir=save_dir,
        )
    if undecided:
        return _verdict(
            claim,
            evidence,
            "inconclusive",
            f"{len(undecided)} point(s) fall between rho_lower = {rho_lo:.3g} and rho_hat = {rho_hi:.3g}",
            cert,
            opts,
        )
    sep = cert["separation_ratio"]
    if not evidence.reference.certified and any(row["certificate"] == "global" for row in rows):
        return _verdict(
            claim,
            evidence,
            "inconclusive",
            f"{len(rows)} SOSPs classified as predicted, but 'global' is the best value found, not certified",
            cert,
            opts,
        )
    tested = [
        row
        for row in rows
        if (row["certificate"] == "spurious" and row["sosp_certified"])
        or (row["certificate"] == "global" and row["sigma_r"] > 0)
    ]
    if not tested:
        return _verdict(
            claim,
            evidence,
            "inconclusive",
            f"{len(rows)} SOSPs classified as predicted, but none could contradict Corollary 1: every one is "
            f"global with sigma_r = 0 (rank < r), or an approximate SOSP",
            cert,
            opts,
        )
    return _verdict(
        claim,
        evidence,
        "holds",
        f"{_sosp_words(rows)} classified as the certificate says{planted}, {len(tested)} of them able to "
        "contradict it"
        + (
            ""
            if not sep
            else f"; failures are {sep:.3g}x larger in norm"
            if sep >= 1
            else f"; not loud in norm: the smallest failure has {sep:.3g}x the norm of the largest success"
        ),
        cert,
        opts,
    )


@validated("KKR-magnitude")
def check_kkr_magnitude(
    problem: NonlinearProblem | Evidence,
    *,
    evidence: Evidence | None = None,
    collect: Mapping[str, Any] | None = None,
    save_dir: str | Path | None = None,
    factor: float = 1.0,
    global_rtol: float = 1e-6,
) -> Verdict:
    r"""KKR-magnitude (Sec. 3.4): :math:`\|X^\star\|_* \le (L(0) - L(X^\star))/\lambda < L(0)/\lambda`.

    Checked at the reference and at every global end point (``factor`` scales the right side:
    ``factor < 1`` is a planted false variant).  Follows from the penalized value at
    :math:`X^\star` being at most the value at 0; the tolerance is the reference's certified gap
    (or ``global_rtol`` when it is not certified).
    """
    evidence = _resolve(problem, evidence, collect)
    claim = "KKR-magnitude"
    if not (isinstance(factor, (int, float)) and factor > 0):
        raise UserInputError(f"factor: expected a positive number, got {factor!r}")
    _check_rtol(global_rtol)
    opts = {"factor": factor, "global_rtol": global_rtol}
    p, ref = evidence.problem, evidence.reference
    if len(set(p.lam)) != 1 or p.lam[0] <= 0:
        return _verdict(
            claim, evidence, "inconclusive", "needs one weight decay lam > 0 on all blocks", {}, opts
        )
    lam = p.lam[0]
    L0 = p.value(p.zeros())
    depth = max(L0 - ref.value, 0.0)
    tol = (
        max(ref.value - ref.lower_bound, 0.0)
        if ref.certified
        else global_tolerance(ref.value, global_rtol=global_rtol, depth=depth)
    )
    rows: list[dict[str, Any]] = []
    # At a point within eps of the minimum, lam ||X||_* + L(X) <= L(0) + eps: each point's tolerance
    # is the reference's gap plus how far the point is above the reference.
    pts: list[tuple[str, Blocks, float]] = [("reference", ref.X, 0.0)] + [
        (f"{r['init']}:{r['seed']}", _X(r, p), max(0.0, float(r["penalized"]) - ref.value))
        for r in evidence.runs
        if classify(r, ref.value, global_rtol=global_rtol, depth=depth) == "global"
    ]
    for name, X, above in pts:
        nuc = sum(float(torch.linalg.matrix_norm(x, ord="nuc")) for x in X)
        LX = p.value(X)
        rhs = factor * (L0 - LX) / lam
        rows.append(
            {
                "point": name,
                "nuclear": nuc,
                "L": LX,
                "bound": rhs,
                "excess": nuc - rhs,
                "tolerance": (tol + above) / lam + 1e-12 * max(1.0, nuc),
                "below_L0_over_lam": nuc < L0 / lam,
            }
        )
    bad = [row for row in rows if float(row["excess"]) > float(row["tolerance"])]
    cert = {"L0": L0, "lam": lam, "tolerance": tol, "points": rows, "reference_certified": ref.certified}
    if bad:
        if ref.certified:
            return _verdict(
                claim,
                evidence,
                "violated",
                f"{len(bad)} global minimizer(s) exceed the bound (by {bad[0]['excess']:.3g})",
                cert,
                opts,
            )
        return _verdict(
            claim,
            evidence,
            "inconclusive",
            f"{len(bad)} point(s) exceed the bound, but they are not certified global",
            cert,
            opts,
        )
    if not ref.certified:
        return _verdict(
            claim,
            evidence,
            "inconclusive",
            f"the bound holds at {len(rows)} point(s), not certified global",
            cert,
            opts,
        )
    return _verdict(
        claim,
        evidence,
        "holds",
        f"||X||_* <= {factor:g} (L(0) - L(X))/lam at {len(rows)} certified global point(s) (a consistency "
        "check: at factor 1 it restates F(X) <= F(0), true at any global minimizer)",
        cert,
        opts,
    )


@validated("KKR-bias")
def check_kkr_bias(
    problem: NonlinearProblem | Evidence,
    *,
    evidence: Evidence | None = None,
    collect: Mapping[str, Any] | None = None,
    save_dir: str | Path | None = None,
    favoured: str = "zero",
    against: str = "large",
    global_rtol: float = 1e-6,
) -> Verdict:
    r"""KKR-bias: zero init with weight decay reaches the global minimizer; a large random init can fail.

    Success fractions among SOSPs per init (certified or approximate), with 95 % Wilson intervals.
    ``holds`` when the ``favoured`` init's interval lies above 1/2, its fraction is at least the
    ``against`` init's, and there is a contrast: some ``against`` run ends certified non-global
    (otherwise ``inconclusive: no contrast``); ``violated`` when its interval lies below 1/2 or
    entirely below the other's
    (``favoured="large"`` is a planted false variant).  The certificate has the test risk and the
    norm per class.
    """
    evidence = _resolve(problem, evidence, collect)
    claim = "KKR-bias"
    _check_rtol(global_rtol)
    names = {r["init"] for r in evidence.runs} | set(KKR_INITS)
    for name, v in (("favoured", favoured), ("against", against)):
        if v not in names:
            raise UserInputError(f"{name}: expected an init among {sorted(names)}, got {v!r}")
    opts = {"favoured": favoured, "against": against, "global_rtol": global_rtol}
    ref = evidence.reference
    runs = [dict(r, reference_value=ref.value) for r in evidence.runs]
    p = evidence.problem
    depth = max(p.value(p.zeros()) - ref.value, 0.0)
    table = kkr_table(runs, {"value": ref.value}, global_rtol=global_rtol, depth=depth)
    cert: dict[str, Any] = {
        "table": table,
        "reference_certified": ref.certified,
        "lam": list(evidence.problem.lam),
    }
    if favoured not in table or against not in table:
        return _verdict(
            claim, evidence, "inconclusive", f"needs runs of both {favoured!r} and {against!r}", cert, opts
        )
    if any(x <= 0 for x in evidence.problem.lam) and favoured == "zero":
        return _verdict(
            claim,
            evidence,
            "inconclusive",
            "the claim is about zero init *with* weight decay (lam > 0)",
            cert,
            opts,
        )
    f, a = table[favoured], table[against]
    if f["converged"] == 0:
        return _verdict(claim, evidence, "inconclusive", f"no certified SOSP from {favoured!r}", cert, opts)
    lo, hi = f["success_interval"]
    alo, ahi = a["success_interval"]
    tag = (
        f"{favoured}: {f['successes']}/{f['converged']} global [{lo:.2f}, {hi:.2f}]; "
        f"{against}: {a['successes']}/{a['converged']} [{alo:.2f}, {ahi:.2f}]"
    )
    if hi < 0.5 or (a["converged"] and hi < alo):
        return _verdict(claim, evidence, "violated", tag, cert, opts)
    frac_a = a["success_fraction"] if a["converged"] else 0.0
    # The contrast: end points of the other init that are certified non-global (above the reference),
    # whether or not they are SOSPs.
    fails_a = int(a["failures"])
    cert["contrast"] = {
        "against_failures": fails_a,
        "against_runs": a["runs"],
        "against_not_sosp_above": int(a.get("not_sosp_above", 0)),
        "failure_norm_median": a.get("failure_norm_median"),
        "failure_rank_median": a.get("failure_rank_median"),
        "failure_test_median": a.get("failure_test_median"),
        "success_norm_median": f.get("success_norm_median"),
        "success_test_median": f.get("success_test_median"),
    }
    if lo > 0.5 and f["success_fraction"] >= frac_a and fails_a == 0:
        return _verdict(
            claim,
            evidence,
            "inconclusive",
            tag + f"; no contrast: none of the {a['runs']} {against!r} runs ends at a spurious SOSP, "
            "so the claim's other half (a large init can fail) is not exercised",
            cert,
            opts,
        )
    if lo > 0.5 and f["success_fraction"] >= frac_a:
        if not ref.certified:
            return _verdict(
                claim,
                evidence,
                "inconclusive",
                tag + " (global = the best value found, not certified)",
                cert,
                opts,
            )
        fn, sn = cert["contrast"]["failure_norm_median"], cert["contrast"]["success_norm_median"]
        extra = (
            f"; {against} failures: median ||X||_F {fn:.3g} against {sn:.3g} for {favoured} successes, "
            f"median rank {cert['contrast']['failure_rank_median']:g}"
            if isinstance(fn, float) and fn == fn and isinstance(sn, float) and sn == sn
            else ""
        )
        return _verdict(claim, evidence, "holds", tag + extra, cert, opts)
    return _verdict(claim, evidence, "inconclusive", tag, cert, opts)


def _perturbed(problem: Any, form: str, eps: float, seed: int) -> NonlinearProblem:
    """The linearized risk plus the perturbation ``form``, as a :class:`NonlinearProblem`."""
    from landscapes.nonlinear.problems import from_problem

    base = from_problem(problem)
    if form == "none":
        return base
    gen = torch.Generator().manual_seed(seed)
    P = tuple(
        torch.randn(m, n, generator=gen, dtype=torch.float64).to(problem.dtype) for m, n in problem.blocks
    )

    def risk(X: Blocks) -> Tensor:
        extra = (
            sum(0.5 * eps * (x * x).sum() for x in X)
            if form == "ridge"
            else sum(eps * (pp * x).sum() for pp, x in zip(P, X))
        )
        return base.risk(X) + extra

    return NonlinearProblem(
        risk,
        base.blocks,
        base.lam,
        dtype=base.dtype,
        device=base.device,
        name=f"{base.name}-{form}{eps:g}",
        meta=dict(base.meta, perturbation=form, eps=eps),
    )


@validated("KKR-includes-JLR")
def check_kkr_includes_jlr(
    problem: Any,
    *,
    eps: float = 1e-3,
    form: str = "ridge",
    rank: int | None = None,
    radius: float = 1.0,
    samples: int = 100,
    seed: int = 0,
    save_dir: str | Path | None = None,
) -> Verdict:
    r"""KKR-includes-JLR: "the eps-perturbed linearized loss lies in the special regime" ([KKR25]).

    ``problem`` is a linearized :class:`~landscapes.problem.Problem`.  Perturbation forms of the
    risk :math:`L(X)` (JLR's own perturbation acts on the factors, not on ``X``, so it has no
    ``X``-space constants; these are the readings that do): ``"none"``; ``"linear"``,
    :math:`+\varepsilon\langle P, X\rangle` (Gaussian ``P``); ``"ridge"``,
    :math:`+\tfrac\varepsilon2\|X\|_F^2` (the reading that makes :math:`\alpha = \varepsilon`).

    For each form: a null direction ``D`` of ``J`` (rank ``rank - r*``, :func:`null_direction`)
    keeps the predictions fixed, so the RSC ratio along :math:`X^\star + tD` is exactly 0
    (``none``, ``linear``) or :math:`\varepsilon` (``ridge``): a rigorous upper bound on
    :math:`\alpha`.  :math:`\hat\beta` is a rigorous *lower* bound on :math:`\beta` (sampled
    curvatures).  ``violated`` when :math:`2\alpha_{up} \le \hat\beta` for ``form`` (generic or
    no RSC, certified); ``holds`` when the structural bounds certify :math:`2\alpha > \beta`.
    The witnesses are in the certificate (``save_dir`` is accepted for the suite; nothing is saved).
    """
    from landscapes.problem import Problem

    claim = "KKR-includes-JLR"
    if not isinstance(problem, Problem):
        raise InputTypeError(f"problem: expected a linearized Problem, got {type(problem).__name__}")
    forms = ("none", "linear", "ridge")
    if form not in forms:
        raise UserInputError(f"form: expected one of {forms}, got {form!r}")
    if not (isinstance(eps, (int, float)) and eps > 0 and finite_number(eps)):
        raise UserInputError(f"eps: expected a positive finite number, got {eps!r}")
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        raise UserInputError(f"rank: expected None or a positive int, got {rank!r}")
    if not (isinstance(radius, (int, float)) and radius > 0 and finite_number(radius)):
        raise UserInputError(f"radius: expected a positive finite number, got {radius!r}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise UserInputError(f"samples: expected a positive int, got {samples!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise UserInputError(f"seed: expected an int, got {seed!r}")
    t0 = time.perf_counter()
    rows: dict[str, Any] = {}
    bounds = restricted_bounds(_perturbed(problem, "none", float(eps), seed))
    for f in forms:
        q = _perturbed(problem, f, float(eps), seed)
        ref = minimize_penalized(q)
        x0, r_star = ref.X, ref.rank
        r = rank if rank is not None else r_star + 1
        # X* + t D has rank <= r* + rank(D): the witness lies in the set only when r > r*.
        D = null_direction(problem, rank=r - r_star, seed=seed) if r > r_star else None
        row: dict[str, Any] = {"r": r, "r_star": r_star, "reference_method": ref.method}
        if D is not None:
            t = 0.5 * radius
            X = tuple(x + t * d for x, d in zip(x0, D))
            g, g0 = q.grad(X), q.grad(x0)
            num = sum(float(((a - b) * (t * d)).sum()) for a, b, d in zip(g, g0, D))
            row["alpha_upper"] = num / (t * t)
            row["null_residual"] = float(problem.J.matvec(problem.vec(D)).norm())
        else:
            row["alpha_upper"] = math.inf
            row["null_residual"] = None
        if r < r_star:
            row.update(
                alpha_hat=math.nan, beta_lower=math.nan, generic_certified=False, special_certified=False
            )
            rows[f] = row
            continue
        rc = restricted_constants(q, rank=r, radius=radius, x_star=x0, samples=samples, seed=seed)
        row["alpha_hat"] = min(rc.alpha, row["alpha_upper"])
        row["beta_lower"] = rc.beta
        # The perturbations add eps I (ridge) or nothing (linear) to every Hessian.
        shift = float(eps) if f == "ridge" else 0.0
        row["alpha_lower"], row["beta_upper"] = bounds.alpha_lower + shift, bounds.beta_upper + shift
        row["generic_certified"] = 2 * row["alpha_hat"] <= row["beta_lower"]
        row["special_certified"] = 2 * row["alpha_lower"] > row["beta_upper"]
        rows[f] = row
    cert = {"forms": rows, "eps": eps, "claimed": {"alpha": eps, "beta": eps}}
    opts = {"eps": eps, "form": form, "rank": rank, "radius": radius, "samples": samples, "seed": seed}
    fp = dict(problem.fingerprint())
    row = rows[form]
    if row["generic_certified"]:
        how = (
            f"a null direction of J (residual {row['null_residual']:.1e})"
            if row["null_residual"] is not None and row["alpha_hat"] == row["alpha_upper"]
            else "a sampled point"
        )
        status, reason = (
            "violated",
            f"{form}: alpha <= {row['alpha_hat']:.3g} (witness: {how}) and beta >= {row['beta_lower']:.3g}, "
            "so 2 alpha <= beta: not the special regime",
        )
    elif row["special_certified"]:
        status, reason = (
            "holds",
            f"{form}: 2 alpha >= {2 * row['alpha_lower']:.3g} > beta <= {row['beta_upper']:.3g}",
        )
    else:
        status, reason = "inconclusive", f"{form}: neither regime certified"
    return Verdict(claim, status, fp, cert, reason, {"total": time.perf_counter() - t0}, opts)  # type: ignore[arg-type]


def _per_sample_rank(problem: NonlinearProblem, X: Blocks, *, at_most: int = 64) -> tuple[int, list[int]]:
    r"""The largest numerical rank of the per-example gradients :math:`\nabla_X \ell_i` at ``X``.

    Over the first ``at_most`` examples, each block, rank at ``sqrt(eps)`` times the largest
    singular value (``problem.batch_risk`` on one example).
    """
    assert problem.batch_risk is not None
    N = int(problem.meta["N"])
    tol = math.sqrt(torch.finfo(problem.dtype).eps)
    ranks = []
    for i in range(min(N, at_most)):
        Xs = [x.detach().clone().requires_grad_(True) for x in X]
        with torch.enable_grad():
            f = problem.batch_risk(tuple(Xs), torch.tensor([i]))
            gs = torch.autograd.grad(f, Xs)
        rk = 0
        for g in gs:
            sv = torch.linalg.svdvals(g)
            rk = max(rk, int((sv > tol * sv[0]).sum()) if float(sv[0]) > 0 else 0)
        ranks.append(rk)
    return max(ranks, default=0), ranks


@validated("KKR-sgd-rank")
def check_kkr_sgd_rank(
    problem: NonlinearProblem,
    *,
    rank: int = 4,
    batch: int = 1,
    lr: float = 0.1,
    steps: int = 20000,
    init: str = "small",
    eps: Sequence[float] = (0.5, 0.1, 0.01),
    window: int = 200,
    conv_rtol: float = 1e-6,
    factor: float = 1.0,
    seed: int = 0,
    save_dir: str | Path | None = None,
) -> Verdict:
    r"""KKR-sgd-rank (Lemma 1): the limit :math:`\bar X` of SGD with weight decay is near low rank.

    For every :math:`\varepsilon`, some ``W`` with :math:`\|\bar X/\|\bar X\| - W\| < \varepsilon`
    has rank at most :math:`b\log(\varepsilon/4)/\log(1 - \mu\lambda)` (times ``factor``:
    ``factor < 1`` is a planted false variant).  SGD (:func:`landscapes.nonlinear.sosp.train_sgd`)
    runs ``steps`` steps; when its last ``window`` iterates move by more than ``conv_rtol``
    (relative) it has not converged and the lemma says nothing (``inconclusive``).  The measured
    rank is Eckart--Young exact: the smallest ``k`` with :math:`\sigma_{k+1}/\|\bar X\|_F <
    \varepsilon` (spectral distance, normalized by the Frobenius norm: the weakest reading) per
    block; the Frobenius-distance readings, normalized by :math:`\|\bar X\|_F` and by the spectral
    norm (the strongest), are reported too.  The lemma's hypothesis (as in Galanti et al.) is that
    every per-example gradient :math:`\nabla_X \ell_i` has rank at most 1, so that one step adds
    rank at most ``b``; it is measured at :math:`\bar X` (numerical rank at
    :math:`\sqrt{\varepsilon_{mach}}\,\sigma_1`), and a problem outside it is ``inconclusive``.
    ``violated`` when the weakest reading exceeds the bound; ``holds`` when the strongest reading
    is within a bound that is not vacuous (below the largest rank ``min(r, m, n)`` that
    ``X = A B^T`` can have); otherwise ``inconclusive``.
    """
    from landscapes.nonlinear.sosp import train_sgd
    from theory.kkr import sgd_rank_bound

    claim = "KKR-sgd-rank"
    if not isinstance(problem, NonlinearProblem):
        raise InputTypeError(f"problem: expected a NonlinearProblem, got {type(problem).__name__}")
    if not eps or any(not (isinstance(e, float) and 0 < e < 4) for e in eps):
        raise UserInputError(f"eps: expected floats in (0, 4), got {list(eps)!r}")
    if not (isinstance(factor, (int, float)) and factor > 0):
        raise UserInputError(f"factor: expected a positive number, got {factor!r}")
    if init not in ("zero", "small", "large"):
        raise UserInputError(f"init: expected 'zero', 'small' or 'large' (no weight offset), got {init!r}")
    if not (isinstance(conv_rtol, (int, float)) and conv_rtol > 0):
        raise UserInputError(f"conv_rtol: expected a positive number, got {conv_rtol!r}")
    lams = set(problem.lam)
    if len(lams) == 1 and isinstance(lr, (int, float)) and not 0 < lr * next(iter(lams)) < 1:
        raise UserInputError(f"lr: expected 0 < lr * lam < 1, got lr = {lr!r}, lam = {next(iter(lams))!r}")
    opts = {
        "rank": rank, "batch": batch, "lr": lr, "steps": steps, "init": init, "eps": list(eps),
        "window": window, "conv_rtol": conv_rtol, "factor": factor, "seed": seed,
    }  # fmt: skip
    fp = dict(_fingerprint(problem), name=problem.name, meta=dict(problem.meta))
    if len(set(problem.lam)) != 1 or problem.lam[0] <= 0:
        return Verdict(claim, "inconclusive", fp, {}, "needs one weight decay lam > 0", {}, opts)
    lam = problem.lam[0]
    t0 = time.perf_counter()
    start, _ = make_init(problem, init, rank=rank, seed=seed)
    end, spread = train_sgd(problem, start, batch=batch, lr=lr, steps=steps, seed=seed, window=window)
    X = tuple(a @ b.T for a, b in zip(end.A, end.B))
    norm = math.sqrt(sum(float(x.pow(2).sum()) for x in X))
    rows = []
    for e in eps:
        bound = factor * sgd_rank_bound(batch=batch, eps=e, lr=lr, lam=lam)
        for j, x in enumerate(X):
            # Each block is its own matrix of the lemma: normalized by its own norm.
            sv = torch.linalg.svdvals(x).tolist()
            fro_j = math.sqrt(sum(v * v for v in sv))
            spec = next(
                (k for k in range(len(sv) + 1) if (sv[k] if k < len(sv) else 0.0) < e * fro_j), len(sv)
            )
            tails = [math.sqrt(sum(s * s for s in sv[k:])) for k in range(len(sv) + 1)]
            # The strongest reading: Frobenius distance, normalized by the spectral norm (<= ||X_j||_F).
            top = sv[0] if sv else 0.0
            if fro_j == 0:  # a zero block: rank 0 in every reading
                spec = frob = frob_op = 0
            else:
                frob = next(k for k in range(len(sv) + 1) if tails[k] < e * fro_j)
                frob_op = next(k for k in range(len(sv) + 1) if tails[k] < e * top)
            rows.append(
                {"eps": e, "block": j, "bound": bound, "rank_spectral": spec, "rank_frobenius": frob,
                 "rank_frobenius_opnorm": frob_op,
                 "nontrivial": bound < min(rank, *x.shape), "singular_values": sv[: max(frob, spec) + 2]}
            )  # fmt: skip
    q, q_rows = _per_sample_rank(problem, X)
    cert = {
        "spread": spread,
        "norm": norm,
        "normalization": "per block, Frobenius: X_bar_j / ||X_bar_j||_F (the lemma does not name the norm; "
        "the spectral normalization is in rank_frobenius_opnorm)",
        "lam": lam,
        "mu_lam": lr * lam,
        "rows": rows,
        "per_sample_gradient_rank": q,
        "per_sample_gradient_ranks": q_rows,
        "hypothesis": "per-example gradients grad_X l_i of rank <= 1 (Galanti et al.'s setting, a linear "
        "layer's outer product): then b steps' updates add rank <= b",
    }
    timings = {"sgd": time.perf_counter() - t0}
    if q > 1:
        worst = max(rows, key=lambda r: r["rank_spectral"] - r["bound"])
        return Verdict(
            claim, "inconclusive", fp, cert,
            f"outside Lemma 1's hypothesis: the per-example gradients have rank up to {q} > 1 (the bound "
            f"counts b rank-one updates per step); measured eps-rank {worst['rank_spectral']} against the "
            f"bound {worst['bound']:.3g} at eps = {worst['eps']:g}, for information only",
            timings, opts,
        )  # fmt: skip
    if norm == 0:
        return Verdict(
            claim, "inconclusive", fp, cert, "SGD ended at X = 0: the lemma is vacuous", timings, opts
        )
    if not spread <= conv_rtol:
        return Verdict(
            claim, "inconclusive", fp, cert,
            f"SGD did not converge: the last {window} iterates move by {spread:.2e} (relative) "
            f"> {conv_rtol:g}",
            timings, opts,
        )  # fmt: skip
    bad = [r for r in rows if r["rank_spectral"] > r["bound"]]
    if bad:
        b = bad[0]
        return Verdict(
            claim, "violated", fp, cert,
            f"eps = {b['eps']:g}: rank {b['rank_spectral']} needed, bound {b['bound']:.3g}", timings, opts,
        )  # fmt: skip
    live = [r for r in rows if r["nontrivial"]]
    if not live:
        return Verdict(
            claim, "inconclusive", fp, cert,
            f"every bound is vacuous (>= the largest possible rank min(r, m, n)); mu lam = {lr * lam:.3g}: "
            "the lemma cannot fail here",
            timings, opts,
        )  # fmt: skip
    if any(r["rank_frobenius_opnorm"] > r["bound"] for r in live):
        return Verdict(
            claim, "inconclusive", fp, cert,
            "within the bounds in spectral distance, not in Frobenius distance with the spectral "
            "normalization (the lemma's norms are not stated)",
            timings, opts,
        )  # fmt: skip
    return Verdict(
        claim, "holds", fp, cert,
        f"measured eps-ranks (Frobenius distance, spectral normalization: the strongest reading) within "
        f"{len(live)} non-vacuous bound(s) for eps in {list(eps)}; mu lam = {lr * lam:.3g}; per-example "
        "gradients of rank 1",
        timings, opts,
    )  # fmt: skip
