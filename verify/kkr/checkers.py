r"""Checkers of the [KKR25] claims on non-linearized problems (and KKR-includes-JLR on linearized ones).

Every checker works on *evidence* (:mod:`verify.kkr.evidence`): a reference minimizer of the
penalized problem (:func:`landscapes.nonlinear.penalized.minimize_penalized`), a set of training
end points (:func:`verify.kkr.training.kkr_run`, each with its SOSP certificate) and the restricted
constants about the reference.  :func:`collect_evidence` computes it for one problem; an experiment
file (``loracheck kkr``) holds the same data for many.

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

The certificates of KKR-special, KKR-dichotomy and KKR-loud start with the *regime numbers*:
``rank`` and ``radius`` (the set), ``reference`` (value, rank, norm, certified, method,
stationarity of :math:`X^\star`), ``alpha_hat``, ``beta_hat``, ``rho_hat`` (sampled, end points
and witnesses included), ``rho_lower`` (certified), ``alpha_witness_end_point`` (the end point
or search that gave :math:`\hat\alpha`, if not a sample), ``witnesses``, ``bounds``,
``constants``, ``end_points``, ``sosps``, ``certified_sosps`` and ``spurious`` (counts).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from landscapes.catalog import KKR_PROBLEMS, NONLINEAR_BUILDERS
from landscapes.nonlinear.penalized import minimize_penalized
from landscapes.nonlinear.problems import NonlinearProblem
from landscapes.nonlinear.restricted import (
    RestrictedBounds,
    null_direction,
    restricted_bounds,
    restricted_constants,
    rsc_ratio,
    rsm_ratio,
)
from theory.errors import InputTypeError, UserInputError, finite_number
from theory.kkr import dichotomy, loud
from verify.checker import Judge, checker, fmt, num, save_counterexample
from verify.counterexample import save_counterexample as write_counterexample
from verify.kkr.evidence import COLLECT_OPTIONS, Evidence, collect_evidence, resolve_evidence
from verify.kkr.training import (
    KKR_INITS,
    classify,
    end_point_matrices,
    global_tolerance,
    kkr_table,
    make_init,
    problem_fingerprint,
    same_problem,
    sosp_certified,
)
from verify.options import ANY, POS, SEED, TOL, Choice, Int, Rank, Real, Seq, Str
from verify.verdict import Status, Verdict

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

#: The regime numbers (module docstring): every decided verdict of the regime checkers has them.
_REGIME_FIELDS = (
    "rank",
    "radius",
    "reference",
    "alpha_hat",
    "beta_hat",
    "rho_hat",
    "rho_lower",
    "bounds",
) + (
    "end_points",
    "sosps",
    "certified_sosps",
    "spurious",
)
_REGIME_CERTIFICATE = {st: [_REGIME_FIELDS] for st in ("holds", "violated")}
_PLANTED_MARGIN = Real(0.0, 1.0, lo_open=False)


# --------------------------------------------------------------------------------------------------
# Evidence lines of the report


def _regime_line(c: Mapping[str, Any], separation: bool) -> list[str]:
    """The set, the constants, the SOSPs (and the norm separation of failures: ``separation``)."""
    if "rho_hat" not in c:
        return []
    ref = c.get("reference", {})
    parts = [
        f"r {c.get('rank')}, r* {ref.get('rank')}, D {fmt(c.get('radius'))}",
        f"alpha^ {fmt(c.get('alpha_hat'))}, beta^ {fmt(c.get('beta_hat'))}",
    ]
    if num(c.get("rho_lower")) > 0:
        parts.append(f"2alpha/beta in [{fmt(c.get('rho_lower'))}, {fmt(c.get('rho_hat'))}]")
    parts.append(f"{c.get('certified_sosps')}/{c.get('end_points')} SOSPs, {c.get('spurious')} spurious")
    if separation and c.get("separation_ratio") is not None:
        parts.append(f"separation {fmt(c['separation_ratio'])}")
    return parts


def _regime_evidence(c: Mapping[str, Any], d: Mapping[str, Any]) -> list[str]:
    """Evidence line of KKR-special and KKR-dichotomy."""
    return _regime_line(c, separation=False)


def _loud_evidence(c: Mapping[str, Any], d: Mapping[str, Any]) -> list[str]:
    """Evidence line of KKR-loud: the regime numbers and the separation ratio."""
    return _regime_line(c, separation=True)


def _magnitude_evidence(c: Mapping[str, Any], d: Mapping[str, Any]) -> list[str]:
    """Evidence line of KKR-magnitude: the points checked and the largest excess over the bound."""
    if "points" not in c:
        return []
    worst = max(num(r.get("excess")) for r in c["points"])
    return [f"{len(c['points'])} points, max ||X||_* - bound {fmt(worst)}"]


def _bias_evidence(c: Mapping[str, Any], d: Mapping[str, Any]) -> list[str]:
    """Evidence line of KKR-bias: global end points over SOSPs, per init."""
    if "table" not in c:
        return []
    # An empty table (no runs) shows as an empty line, not as the certificate's first fields.
    return [f"{init} {row['successes']}/{row['converged']}" for init, row in c["table"].items()] or [""]


def _includes_jlr_evidence(c: Mapping[str, Any], d: Mapping[str, Any]) -> list[str]:
    """Evidence line of KKR-includes-JLR: the bounds on alpha and beta per perturbation form."""
    if "forms" not in c:
        return []
    return [
        f"{form}: alpha<={fmt(row.get('alpha_hat'))} beta>={fmt(row.get('beta_lower'))}"
        for form, row in c["forms"].items()
    ]


# --------------------------------------------------------------------------------------------------
# The evidence judged: classes of the end points and the constants


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
    """Classify the end points of ``ev`` against its reference and gather the regime numbers.

    An end point within the radius is a sample of the restricted set too: its RSC / RSM ratios join
    the constants (module docstring).
    """
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
            X = end_point_matrices(r, p)
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


def _catalog_source(p: NonlinearProblem) -> dict[str, Any] | None:
    """The :data:`landscapes.catalog.KKR_PROBLEMS` entry that rebuilds ``p``, or ``None``.

    The entry named like ``p`` first (a suite problem), then every other one but MiniLM's (an
    experiment's problem keeps its builder's name; its weight decay may differ from the entry's):
    an entry rebuilds ``p`` when the rebuilt problem, named like ``p``, has its fingerprint
    (:func:`verify.kkr.training.same_problem`: shapes, decays, the risk at a probe point).
    """
    fp = problem_fingerprint(p)
    names = [p.name] if p.name in KKR_PROBLEMS else []
    names += [n for n in KKR_PROBLEMS if n != p.name and KKR_PROBLEMS[n]["builder"] != "minilm"]
    for name in names:
        spec = KKR_PROBLEMS[name]
        kwargs = dict(spec["kwargs"])
        if "lam" in kwargs and len(set(p.lam)) == 1:
            kwargs["lam"] = p.lam[0]
        try:
            q = NONLINEAR_BUILDERS[spec["builder"]](**kwargs)
            if q.blocks != p.blocks:
                continue
            q = dataclasses.replace(q, name=p.name)
            if same_problem(fp, problem_fingerprint(q)):
                return {"name": name, "builder": spec["builder"], "kwargs": kwargs}
        except Exception:  # noqa: BLE001 - an entry that cannot be built here does not rebuild p
            continue
    return None


#: The numbers of an end point a saved counterexample keeps (besides its arrays).
_POINT_KEYS = (
    "init",
    "seed",
    "class",
    "status",
    "objective",
    "risk",
    "penalized",
    "excess",
    "grad_norm",
    "sosp",
    "sosp_certified",
    "lambda_min",
    "lambda_min_lower",
    "lambda_min_method",
    "ranks",
    "frobenius",
    "distance",
    "tolerances",
)


def _save(
    save_dir: str | Path | None, judge: Judge, ev: Evidence, bad: Sequence[Mapping[str, Any]]
) -> str | None:
    """Save the offending end points in the one counterexample format; the path, or ``None``.

    Kind ``"nonlinear"`` (:mod:`verify.counterexample`): the end points' factors ``P<i>.A<j>``,
    ``P<i>.B<j>`` (or ``P<i>.X<j>``) and the reference ``REF.X<j>`` as arrays; their numbers, the
    reference's value, the rank and radius and the evidence's options as the record; the problem's
    name, meta, decays, fingerprint and catalog entry (:func:`_catalog_source`) as the source.
    """
    if save_dir is None or not bad:
        return None
    judged = {(d["init"], d["seed"]): d for d in bad}
    arrays: dict[str, Any] = {}
    points: list[dict[str, Any]] = []
    for r in ev.runs:
        key = (r["init"], r["seed"])
        if key not in judged or r.get("status") != "finished":
            continue
        i = len(points)
        for k in ("A", "B", "X"):
            for j, x in enumerate(r.get(k, ())):
                arrays[f"P{i}.{k}{j}"] = np.asarray(x, dtype=np.float64)
        both = {**r, **judged[key]}
        points.append({k: both[k] for k in _POINT_KEYS if k in both})
    for j, x in enumerate(ev.reference.X):
        arrays[f"REF.X{j}"] = x
    record = {
        "points": points,
        "reference": {
            "value": ev.reference.value,
            "rank": ev.reference.rank,
            "certified": ev.reference.certified,
        },
        "rank": ev.rank,
        "radius": ev.radius,
        "evidence_options": dict(ev.options),
    }
    p = ev.problem
    source = {
        "name": p.name,
        "meta": dict(p.meta),
        "lam": list(p.lam),
        "blocks": [list(b) for b in p.blocks],
        "fingerprint": problem_fingerprint(p),
        "catalog": _catalog_source(p),
    }
    return write_counterexample(
        save_dir,
        judge.claim,
        kind="nonlinear",
        options=judge.options,
        record=record,
        source=source,
        arrays=arrays,
        ident=p.name or "problem",
    )


#: Singular values below this fraction of sigma_1 are zero (the numerical rank of the end points).
RANK_RTOL = 1e-6


def _numerical(singular_values: Sequence[float], r: int) -> list[float]:
    """The spectrum with values below ``RANK_RTOL * sigma_1`` set to 0, padded with zeros to ``r``."""
    sv = [float(x) for x in singular_values]
    top = sv[0] if sv else 0.0
    sv = [x if x > RANK_RTOL * top else 0.0 for x in sv]
    return sv + [0.0] * max(0, r - len(sv))


def _problem_record(problem: NonlinearProblem) -> dict[str, Any]:
    """The problem as a verdict names it: its fingerprint, name, sizes and meta."""
    return dict(
        problem_fingerprint(problem),
        name=problem.name,
        N=problem.meta.get("N"),
        K=problem.meta.get("K"),
        meta=dict(problem.meta),
    )


def _judge_on(claim: str, ev: Evidence, opts: Mapping[str, Any]) -> Judge:
    """The verdicts of one checker call on ``ev``: the evidence's options and the call's, its seconds."""
    return Judge(claim, _problem_record(ev.problem), dict(ev.options, **opts), {"evidence": ev.seconds})


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


def _one_matrix(ev: Evidence, statement: str) -> str | None:
    """Why ``statement`` (about one adapted matrix) says nothing on a problem of several blocks."""
    n = len(ev.problem.blocks)
    return f"{statement} is stated for one adapted matrix; this problem has {n}" if n > 1 else None


def _special_certified(j: _Judged, consequence: str) -> str | None:
    """Why a generic-regime statement says nothing where the special regime is certified."""
    if j.rho_lo > 1:
        return f"the special regime is certified (2 alpha / beta >= {j.rho_lo:.3g} > 1): {consequence}"
    return None


def _check_planted(rho_factor: float, margin: float) -> None:
    if isinstance(rho_factor, bool) or not (
        isinstance(rho_factor, (int, float)) and 0 < rho_factor < math.inf
    ):
        raise UserInputError(f"rho_factor: expected a positive finite number, got {rho_factor!r}")
    if isinstance(margin, bool) or not (isinstance(margin, (int, float)) and 0 <= margin < 1):
        raise UserInputError(f"margin: expected a number in [0, 1), got {margin!r}")


def _planted_words(rho_factor: float) -> str:
    """How a reason names a planted constant (nothing for the statement itself)."""
    return "" if rho_factor == 1 else f" (planted: rho x {rho_factor:g})"


def _exceeds_lam(point: Mapping[str, Any]) -> bool:
    r"""Whether :math:`\|\nabla L(X)_j\|_{op} > \lambda_j` in some block (beyond 1e-6, relative).

    At a rank-deficient end point the free columns then give a direction of negative curvature that
    Lanczos missed: a saddle, not an SOSP.
    """
    return any(float(g) > 1 + 1e-6 for g in (point.get("grad_op_over_lam") or []))


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


@dataclass
class _Sorted:
    """The SOSPs a generic-regime statement was checked at, sorted by what they show about it."""

    checked: list[dict[str, Any]] = field(default_factory=list)
    #: contradict it beyond the margin at the favourable end (certified SOSPs, or certified global)
    definite: list[dict[str, Any]] = field(default_factory=list)
    #: contradict it likewise, but are approximate SOSPs only
    approximate: list[dict[str, Any]] = field(default_factory=list)
    #: agree at one end of the rho interval and not at the other, or cannot be told from global
    undecided: list[dict[str, Any]] = field(default_factory=list)
    #: SOSPs beyond the radius (not checked)
    beyond: int = 0


def _why_not_refuted(
    evidence: Evidence, j: _Judged, pts: _Sorted, contradicts: Callable[[list[dict[str, Any]]], str]
) -> str | None:
    """Why contradicting points refute nothing (``None`` when they do, or when there are none).

    A refutation needs a certified reference (X*, r*), a certified alpha > 0 and certified SOSPs;
    ``contradicts(rows)`` says what the rows contradict.
    """
    definite, approximate = pts.definite, pts.approximate
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


# --------------------------------------------------------------------------------------------------
# KKR-dichotomy (Theorem 1.2)


def _planted_sosp_claim(
    judge: Judge,
    evidence: Evidence,
    j: _Judged,
    sosps: list[dict[str, Any]],
    variant: str,
    cert: dict[str, Any],
    save_dir: str | Path | None,
) -> Verdict:
    """The planted "every SOSP is global" (``all-global``) or "has rank at most r*" (``low-rank``)."""
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
        return judge.violated(
            cert,
            f"{len(sure)} certified SOSP(s) {what} (excess {b0['excess']:.3g}, rank {max(b0['ranks'])}, "
            f"||X||_F {b0['frobenius']:.3g})",
            counterexample=_save(save_dir, judge, evidence, sure),
        )
    if bad:
        return judge.inconclusive(cert, f"{_sosp_words(bad)} {what}, none certified")
    if variant == "all-global":
        ok: Status = "holds" if evidence.reference.certified else "inconclusive"
        return judge.verdict(ok, cert, f"all {_sosp_words(sosps)} are global")
    return judge.holds(cert, f"all {_sosp_words(sosps)} have rank <= r*")


def _dichotomy_at(sv: list[float], r: int, r_star: int, distance_sq: float, rho: float) -> dict[str, Any]:
    """Theorem 1.2's conditions at a point of spectrum ``sv`` for the constant ``rho = 2 alpha / beta``."""
    return dichotomy(
        sv,
        r=r,
        r_star=r_star,
        alpha=max(rho, 1e-300) / 2,
        beta=1.0,
        distance_sq=distance_sq,
        rank_rtol=1e-6,
    )


def _dichotomy_points(
    evidence: Evidence, j: _Judged, sosps: list[dict[str, Any]], rho_lo: float, rho_hi: float, margin: float
) -> _Sorted:
    """Theorem 1.2 at each SOSP within the radius that is not certified global, at both ends of rho."""
    r, rs = evidence.rank, j.r_star
    # Points at the best value found are checked too when that value is not certified global: they
    # may be non-global, and then the theorem constrains them.
    uncertain = not evidence.reference.certified
    out = _Sorted()
    for d in sosps:
        if d["class"] != "spurious" and not uncertain:
            continue
        if d["distance"] > evidence.radius:
            out.beyond += 1
            continue
        sv = _numerical(d["singular_values"], r)
        d2 = d["distance"] ** 2
        # (an infinite rho_hat: the unfavourable end at rho = 1, the edge of the generic regime)
        worst = _dichotomy_at(sv, r, rs, d2, rho_hi if math.isfinite(rho_hi) else 1.0)
        best = _dichotomy_at(sv, r, rs, d2, rho_lo)
        weak = _dichotomy_at(sv, r, rs, d2, rho_lo * (1 - margin))
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
        out.checked.append(row)
        saddle = _exceeds_lam(d)
        if d["class"] != "spurious":
            # At the best value found (not certified global): a failure cannot be told from a
            # global minimizer, which the theorem does not constrain.
            if not worst["all"]:
                out.undecided.append(row)
        elif _fails_by_margin(weak, margin) and not (best["rank"] < r and saddle):
            (out.definite if d["sosp_certified"] else out.approximate).append(row)
        elif not best["all"] and best["rank"] < r and saddle:
            # Rank-deficient with ||grad L(X)||_op > lam: the free columns give negative curvature
            # that Lanczos missed; not an SOSP after all.
            out.undecided.append(dict(row, why="rank-deficient with ||grad L||_op > lam: a saddle"))
        elif not worst["all"]:
            out.undecided.append(row)
    return out


def _dichotomy_verdict(
    judge: Judge,
    evidence: Evidence,
    j: _Judged,
    sosps: list[dict[str, Any]],
    pts: _Sorted,
    cert: dict[str, Any],
    rho: tuple[float, float],
    planted: str,
    save_dir: str | Path | None,
) -> Verdict:
    """The verdict on Theorem 1.2 from the sorted points; ``rho``: its interval ``(lower, hat)``."""
    r, (rho_lo, rho_hi) = evidence.rank, rho
    why = _why_not_refuted(
        evidence, j, pts, lambda rows: f"{len(rows)} non-global SOSP(s) break Theorem 1.2{planted}"
    )
    if why is not None:
        return judge.inconclusive(cert, why)
    if pts.definite:
        t = pts.definite[0]["tightness_at_rho_lower"]
        return judge.violated(
            cert,
            f"{len(pts.definite)} certified non-global SOSP(s) break Theorem 1.2{planted} at the certified "
            f"rho_lower = {rho_lo:.3g} (alpha >= {evidence.bounds.alpha_lower:.3g}): rank "
            f"{pts.definite[0]['at_rho_lower']['rank']} (r = {r}), sigma_r / needed {t['ii']:.4g}, "
            f"distance^2 / needed {t['iii']:.4g}",
            counterexample=_save(save_dir, judge, evidence, pts.definite),
        )
    if pts.undecided:
        at_best = [row for row in pts.undecided if row["class"] != "spurious"]
        spur = len(pts.undecided) - len(at_best)
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
        return judge.inconclusive(cert, "; ".join(parts))
    spurious = [row for row in pts.checked if row["class"] == "spurious"]
    if not spurious:
        how = (
            f"{len(pts.checked)} SOSPs at the best value found (not certified global) satisfy the conditions"
            if pts.checked
            else f"all {_sosp_words(sosps)} are global"
        )
        if pts.beyond:
            how += f"; {pts.beyond} point(s) beyond D not checked"
        return judge.inconclusive(
            cert,
            f"no non-global SOSP within D = {evidence.radius:g}: the theorem's non-global branch is not "
            f"exercised ({how})",
        )
    if not any(row["sosp_certified"] for row in spurious):
        return judge.inconclusive(
            cert,
            f"{_sosp_words(spurious)}, non-global, satisfy all three conditions at rho_hat = "
            f"{rho_hi:.3g}, but none is a certified SOSP",
        )
    tmin = min(row["tightness_at_rho_hat"]["ii"] for row in spurious)
    tmin3 = min(row["tightness_at_rho_hat"]["iii"] for row in spurious)
    return judge.holds(
        cert,
        f"{_sosp_words(spurious)}, certified non-global, within D = {evidence.radius:g} satisfy all three "
        f"conditions{planted} at rho_hat = {rho_hi:.3g} (tightest: sigma_r / needed {tmin:.4g}, "
        f"distance^2 / needed {tmin3:.4g}; at the certified rho_lower = {rho_lo:.3g} too)",
    )


@checker(
    "KKR-dichotomy",
    options={
        "evidence": ANY,
        "collect": COLLECT_OPTIONS,
        "variant": Choice(("theorem", "all-global", "low-rank")),
        "global_rtol": TOL,
        "rho_factor": POS,
        "margin": _PLANTED_MARGIN,
    },
    certificate=_REGIME_CERTIFICATE,
    evidence=_regime_evidence,
)
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

    Certificate: the regime numbers (module docstring); ``points_checked``, a row per SOSP checked
    (``init``, ``seed``, ``class``, ``sosp_certified``, ``distance``, the conditions
    ``at_rho_hat`` and ``at_rho_lower`` of :func:`theory.kkr.dichotomy`, and the measured / needed
    ratios of (ii) and (iii) ``tightness_at_rho_lower``, ``tightness_at_rho_hat``,
    ``tightness_with_margin``); ``beyond_radius`` (SOSPs not checked); for the planted variants
    ``points`` instead (the SOSPs against the statement, or all of them).
    """
    evidence = resolve_evidence(problem, evidence, collect)
    claim = "KKR-dichotomy"
    if variant not in ("theorem", "all-global", "low-rank"):
        raise UserInputError(f"variant: expected 'theorem', 'all-global' or 'low-rank', got {variant!r}")
    _check_planted(rho_factor, margin)
    opts = {"variant": variant, "global_rtol": global_rtol, "rho_factor": rho_factor, "margin": margin}
    j = _judge(evidence, global_rtol)
    judge = _judge_on(claim, evidence, opts)
    cert = dict(j.numbers)
    if variant == "theorem" and (why := _outside(evidence, j)) is not None:
        return judge.inconclusive(cert, why)
    sosps = [d for d in j.points if d["class"] in ("global", "spurious")]
    if not sosps:
        return judge.inconclusive(cert, "no end point is an SOSP (even approximately)")
    if variant in ("all-global", "low-rank"):
        return _planted_sosp_claim(judge, evidence, j, sosps, variant, cert, save_dir)
    why = _one_matrix(evidence, "Theorem 1.2") or _special_certified(
        j, "Theorem 1.2 (generic regime) does not apply; see KKR-special"
    )
    if why is not None:
        return judge.inconclusive(cert, why)
    rho_hi = rho_factor * j.rho_hat if math.isfinite(j.rho_hat) else math.inf
    rho_lo = rho_factor * j.rho_lo
    pts = _dichotomy_points(evidence, j, sosps, rho_lo, rho_hi, margin)
    cert["points_checked"] = pts.checked
    cert["beyond_radius"] = pts.beyond
    if (why := _hypothesis_fails(j)) is not None:
        return judge.inconclusive(cert, why)
    planted = _planted_words(rho_factor)
    return _dichotomy_verdict(judge, evidence, j, sosps, pts, cert, (rho_lo, rho_hi), planted, save_dir)


# --------------------------------------------------------------------------------------------------
# KKR-special (Theorem 1.1)


def _not_special(evidence: Evidence, j: _Judged, estimated: bool) -> str:
    """Why Theorem 1.1's hypothesis (the special regime) is not established."""
    if estimated:
        return (
            f"the special regime is only estimated (2 alpha_hat / beta_hat = {j.rho_hat:.3g} > 1, "
            "a ratio biased upward by sampling); the certified side is "
            + (
                f"2 alpha_lower / beta_upper = {j.rho_lo:.3g} <= 1"
                if j.rho_lo > 0
                else f"not available ({evidence.bounds.method})"
            )
        )
    return (
        f"not in the special regime (2 alpha_hat / beta_hat = {j.rho_hat:.3g} <= 1): Theorem 1.1 says nothing"
    )


@checker(
    "KKR-special",
    options={
        "evidence": ANY,
        "collect": COLLECT_OPTIONS,
        "global_rtol": TOL,
        "variant": Choice(("theorem", "any-regime")),
        "rho_factor": POS,
    },
    certificate=_REGIME_CERTIFICATE,
    evidence=_regime_evidence,
)
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

    Certificate: the regime numbers (module docstring); ``special_certified`` and
    ``special_estimated`` (the regime by the bounds, by the samples; with ``rho_factor``);
    ``points``, the judged end points of the SOSPs within the radius that are not global (or, when
    there are none, of all SOSPs within it).
    """
    evidence = resolve_evidence(problem, evidence, collect)
    claim = "KKR-special"
    if variant not in ("theorem", "any-regime"):
        raise UserInputError(f"variant: expected 'theorem' or 'any-regime', got {variant!r}")
    _check_planted(rho_factor, 0.0)
    opts = {"global_rtol": global_rtol, "variant": variant, "rho_factor": rho_factor}
    j = _judge(evidence, global_rtol)
    judge = _judge_on(claim, evidence, opts)
    cert = dict(j.numbers)
    certified = rho_factor * j.rho_lo > 1
    estimated = math.isfinite(j.rho_hat) and rho_factor * j.rho_hat > 1
    if evidence.rank < j.r_star:
        return judge.inconclusive(cert, f"r = {evidence.rank} < r* = {j.r_star}: Theorem 1.1 assumes r >= r*")
    cert["special_certified"] = certified
    cert["special_estimated"] = estimated
    if variant == "any-regime":
        certified = True  # the planted claim drops the hypothesis
    if not certified:
        return judge.inconclusive(cert, _not_special(evidence, j, estimated))
    near = [d for d in j.points if d["class"] in ("global", "spurious") and d["distance"] <= evidence.radius]
    bad = [d for d in near if d["class"] == "spurious"]
    # Rank-deficient with ||grad L(X)||_op > lam: the free columns carry negative curvature (a saddle).
    sure = [
        d for d in bad if d["sosp_certified"] and not (max(d["ranks"]) < evidence.rank and _exceeds_lam(d))
    ]
    cert["points"] = bad or near
    if not near:
        return judge.inconclusive(cert, "no SOSP within the radius")
    planted = f", planted: rho x {rho_factor:g})" if rho_factor != 1 else None
    if sure:
        return judge.violated(
            cert,
            f"{len(sure)} certified SOSP(s) within D are not global (excess {sure[0]['excess']:.3g})"
            + (
                " (planted: any regime)"
                if variant != "theorem"
                else f" in a certified special regime (2 alpha_lower / beta_upper = {j.rho_lo:.3g}"
                + (planted or ")")
            ),
            counterexample=_save(save_dir, judge, evidence, sure),
        )
    if bad:
        return judge.inconclusive(
            cert, f"{_sosp_words(bad)} within D are not global, none certified as an SOSP"
        )
    if not evidence.reference.certified:
        return judge.inconclusive(
            cert, f"all {len(near)} SOSPs reach the best known value, but it is not certified global"
        )
    return judge.holds(
        cert,
        f"all {_sosp_words(near)} within D = {evidence.radius:g} are certified global; "
        + (
            f"special regime certified (2 alpha_lower / beta_upper = {j.rho_lo:.3g}" + (planted or " > 1)")
            if variant == "theorem"
            else "(planted: any regime)"
        ),
    )


# --------------------------------------------------------------------------------------------------
# KKR-loud (Corollary 1)


def _quiet(
    judge: Judge, evidence: Evidence, j: _Judged, cert: dict[str, Any], save_dir: str | Path | None
) -> Verdict:
    """The planted "no certified SOSP within the radius has more than twice the norm of X*"."""
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
        return judge.violated(
            cert,
            f"{len(loud_pts)} certified SOSP(s) with ||X||_F {loud_pts[0]['frobenius']:.3g} > "
            f"2 ||X*||_F = {2 * j.x_star_norm:.3g}",
            counterexample=_save(save_dir, judge, evidence, loud_pts),
        )
    return judge.holds(cert, "no certified SOSP above 2 ||X*||_F")


def _loud_outside(evidence: Evidence, j: _Judged) -> str | None:
    """Why Corollary 1 says nothing on this evidence (``None`` when it may be checked)."""
    r, rs = evidence.rank, j.r_star
    if (why := _one_matrix(evidence, "Corollary 1")) is not None:
        return why
    if r <= rs:
        return f"Corollary 1 needs r > r* (r = {r}, r* = {rs})"
    why = (
        _outside(evidence, j)
        or _hypothesis_fails(j)
        or _special_certified(j, "Corollary 1 is stated for the generic regime; see KKR-special")
    )
    if why is None and j.rho_hat > 1:
        why = (
            f"the generic regime is not established (2 alpha_hat / beta_hat = {j.rho_hat:.3g} > 1, "
            f"2 alpha_lower / beta_upper = {j.rho_lo:.3g}): Corollary 1 is stated for 2 alpha <= beta"
        )
    return why


def _loud_at(sv: list[float], r: int, r_star: int, x_star_norm: float, alpha: float) -> dict[str, Any]:
    """Corollary 1's prediction at a point of spectrum ``sv`` for ``alpha`` (with ``beta = 1``)."""
    return loud(sv, r=r, r_star=r_star, alpha=alpha, beta=1.0, x_star_norm=x_star_norm)


def _loud_points(evidence: Evidence, j: _Judged, rho_lo: float, rho_hi: float, margin: float) -> _Sorted:
    """Corollary 1's prediction at each SOSP within the radius, at both ends of rho, against its class."""
    r, rs = evidence.rank, j.r_star
    out = _Sorted()
    for d in j.points:
        if (
            d["class"] not in ("global", "spurious")
            or d.get("singular_values") is None
            or d["distance"] > evidence.radius
        ):
            continue
        sv = _numerical(d["singular_values"], r)
        at_hat = _loud_at(sv, r, rs, j.x_star_norm, rho_hi / 2) if rho_hi > 0 else None
        at_lo = _loud_at(sv, r, rs, j.x_star_norm, max(rho_lo, 1e-300) / 2)
        # The favourable end, weakened by the margin: what a violation must fail.
        at_weak = _loud_at(sv, r, rs, j.x_star_norm, max(rho_lo * (1 - margin), 1e-300) / 2)
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
        out.checked.append(row)
        # Prediction "global" is certain when it holds at rho_lo; "spurious" when it holds at rho_hat.
        saddle = _exceeds_lam(d)
        target = out.definite if d["sosp_certified"] or truth == "global" else out.approximate
        if truth == "spurious" and s_r <= (1 - margin) * rho_lo * s_rs:
            if saddle and s_r == 0.0:
                out.undecided.append(dict(row, why="rank-deficient with ||grad L||_op > lam: a saddle"))
            else:
                target.append(dict(row, why="predicted global, certified spurious"))
        elif truth == "global" and rho_hi > 0 and s_r > (1 + margin) * rho_hi * s_rs:
            if evidence.reference.certified:
                target.append(dict(row, why="predicted spurious, certified global"))
            else:
                out.undecided.append(row)  # "global" is the best value found, not certified
        elif (
            truth == "spurious"
            and at_weak["prediction"] == "spurious"
            and at_weak["norm"] < (1 - margin) * at_weak["spurious_norm_bound"]
        ):
            target.append(dict(row, why="spurious point below the norm bound"))
        elif truth == "spurious" and (
            at_hat is None or at_hat["prediction"] != "spurious" or not at_hat["bound_holds"]
        ):
            out.undecided.append(row)
        elif truth == "global" and at_lo["prediction"] != "global":
            out.undecided.append(row)
    return out


def _loud_verdict(
    judge: Judge,
    evidence: Evidence,
    j: _Judged,
    pts: _Sorted,
    cert: dict[str, Any],
    rho: tuple[float, float],
    planted: str,
    save_dir: str | Path | None,
) -> Verdict:
    """The verdict on Corollary 1 from the sorted points; ``rho``: its interval ``(lower, hat)``."""
    (rho_lo, rho_hi), rows = rho, pts.checked
    if not rows:
        return judge.inconclusive(cert, "no SOSP within the radius")
    why = _why_not_refuted(
        evidence,
        j,
        pts,
        lambda rows: f"{len(rows)} point(s) contradict Corollary 1{planted} ({rows[0]['why']})",
    )
    if why is not None:
        return judge.inconclusive(cert, why)
    if pts.definite:
        first = pts.definite[0]
        return judge.violated(
            cert,
            f"{len(pts.definite)} point(s) contradict Corollary 1{planted}: {first['why']} "
            f"(sigma_r = {first['sigma_r']:.4g}, sigma_r* = {first['sigma_r_star']:.4g}, "
            f"rho in [{rho_lo:.3g}, {rho_hi:.3g}], alpha >= {evidence.bounds.alpha_lower:.3g} certified)",
            counterexample=_save(save_dir, judge, evidence, pts.definite),
        )
    if pts.undecided:
        return judge.inconclusive(
            cert,
            f"{len(pts.undecided)} point(s) fall between rho_lower = {rho_lo:.3g} and rho_hat = {rho_hi:.3g}",
        )
    sep = cert["separation_ratio"]
    if not evidence.reference.certified and any(row["certificate"] == "global" for row in rows):
        return judge.inconclusive(
            cert,
            f"{len(rows)} SOSPs classified as predicted, but 'global' is the best value found, not certified",
        )
    tested = [
        row
        for row in rows
        if (row["certificate"] == "spurious" and row["sosp_certified"])
        or (row["certificate"] == "global" and row["sigma_r"] > 0)
    ]
    if not tested:
        return judge.inconclusive(
            cert,
            f"{len(rows)} SOSPs classified as predicted, but none could contradict Corollary 1: every one is "
            f"global with sigma_r = 0 (rank < r), or an approximate SOSP",
        )
    return judge.holds(
        cert,
        f"{_sosp_words(rows)} classified as the certificate says{planted}, {len(tested)} of them able to "
        "contradict it"
        + (
            ""
            if not sep
            else f"; failures are {sep:.3g}x larger in norm"
            if sep >= 1
            else f"; not loud in norm: the smallest failure has {sep:.3g}x the norm of the largest success"
        ),
    )


@checker(
    "KKR-loud",
    options={
        "evidence": ANY,
        "collect": COLLECT_OPTIONS,
        "global_rtol": TOL,
        "variant": Choice(("theorem", "quiet")),
        "rho_factor": POS,
        "margin": _PLANTED_MARGIN,
    },
    certificate=_REGIME_CERTIFICATE,
    evidence=_loud_evidence,
)
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

    Certificate: the regime numbers (module docstring); ``points``, a row per SOSP classified
    (``init``, ``seed``, ``certificate`` (its class: global or spurious), ``sosp_certified``,
    ``sigma_r``, ``sigma_r_star``, the predictions ``at_rho_hat`` and ``at_rho_lower`` of
    :func:`theory.kkr.loud`; for ``quiet`` the judged end points above twice the norm);
    ``separation_ratio`` (smallest failure norm over largest success norm), ``success_norm_max``,
    ``failure_norm_min`` (``None`` without both classes).
    """
    evidence = resolve_evidence(problem, evidence, collect)
    claim = "KKR-loud"
    if variant not in ("theorem", "quiet"):
        raise UserInputError(f"variant: expected 'theorem' or 'quiet', got {variant!r}")
    _check_planted(rho_factor, margin)
    opts = {"global_rtol": global_rtol, "variant": variant, "rho_factor": rho_factor, "margin": margin}
    j = _judge(evidence, global_rtol)
    judge = _judge_on(claim, evidence, opts)
    cert = dict(j.numbers)
    if variant == "quiet":
        return _quiet(judge, evidence, j, cert, save_dir)
    if (why := _loud_outside(evidence, j)) is not None:
        return judge.inconclusive(cert, why)
    rho_hi, rho_lo = rho_factor * j.rho_hat, rho_factor * j.rho_lo
    pts = _loud_points(evidence, j, rho_lo, rho_hi, margin)
    cert["points"] = pts.checked
    succ = [d["frobenius"] for d in j.points if d["class"] == "global"]
    fail = [d["frobenius"] for d in j.points if d["class"] == "spurious"]
    cert["separation_ratio"] = min(fail) / max(succ) if succ and fail else None
    cert["success_norm_max"] = max(succ) if succ else None
    cert["failure_norm_min"] = min(fail) if fail else None
    planted = _planted_words(rho_factor)
    return _loud_verdict(judge, evidence, j, pts, cert, (rho_lo, rho_hi), planted, save_dir)


# --------------------------------------------------------------------------------------------------
# KKR-magnitude and KKR-bias


@checker(
    "KKR-magnitude",
    options={"evidence": ANY, "collect": COLLECT_OPTIONS, "factor": POS, "global_rtol": TOL},
    certificate={
        st: [("L0", "lam", "tolerance", "points", "reference_certified")] for st in ("holds", "violated")
    },
    evidence=_magnitude_evidence,
)
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

    Certificate: ``L0``, ``lam``, ``tolerance`` (the reference's), ``reference_certified``, and
    ``points``, a row per point (``point``: ``reference`` or ``init:seed``; ``nuclear``, ``L``,
    ``bound`` (``factor (L(0) - L(X)) / lam``), ``excess`` over it, the point's ``tolerance``,
    ``below_L0_over_lam``); empty when the weight decays are not one ``lam > 0``.
    """
    evidence = resolve_evidence(problem, evidence, collect)
    claim = "KKR-magnitude"
    if not (isinstance(factor, (int, float)) and factor > 0):
        raise UserInputError(f"factor: expected a positive number, got {factor!r}")
    _check_rtol(global_rtol)
    opts = {"factor": factor, "global_rtol": global_rtol}
    judge = _judge_on(claim, evidence, opts)
    p, ref = evidence.problem, evidence.reference
    if len(set(p.lam)) != 1 or p.lam[0] <= 0:
        return judge.inconclusive({}, "needs one weight decay lam > 0 on all blocks")
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
        (f"{r['init']}:{r['seed']}", end_point_matrices(r, p), max(0.0, float(r["penalized"]) - ref.value))
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
    if bad and ref.certified:
        return judge.violated(
            cert, f"{len(bad)} global minimizer(s) exceed the bound (by {bad[0]['excess']:.3g})"
        )
    if bad:
        return judge.inconclusive(
            cert, f"{len(bad)} point(s) exceed the bound, but they are not certified global"
        )
    if not ref.certified:
        return judge.inconclusive(cert, f"the bound holds at {len(rows)} point(s), not certified global")
    return judge.holds(
        cert,
        f"||X||_* <= {factor:g} (L(0) - L(X))/lam at {len(rows)} certified global point(s) (a consistency "
        "check: at factor 1 it restates F(X) <= F(0), true at any global minimizer)",
    )


def _bias_contrast(f: Mapping[str, Any], a: Mapping[str, Any]) -> dict[str, Any]:
    """The other init's failures against the favoured init's successes (rows of :func:`kkr_table`)."""
    return {
        "against_failures": int(a["failures"]),
        "against_runs": a["runs"],
        "against_not_sosp_above": int(a.get("not_sosp_above", 0)),
        "failure_norm_median": a.get("failure_norm_median"),
        "failure_rank_median": a.get("failure_rank_median"),
        "failure_test_median": a.get("failure_test_median"),
        "success_norm_median": f.get("success_norm_median"),
        "success_test_median": f.get("success_test_median"),
    }


@checker(
    "KKR-bias",
    options={
        "evidence": ANY,
        "collect": COLLECT_OPTIONS,
        "favoured": Str(),
        "against": Str(),
        "global_rtol": TOL,
    },
    certificate={st: [("table", "reference_certified", "lam")] for st in ("holds", "violated")},
    evidence=_bias_evidence,
)
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

    Certificate: ``table`` (:func:`verify.kkr.training.kkr_table` per init, and ``all``),
    ``reference_certified``, ``lam``; once both inits have SOSPs, ``contrast`` (the ``against``
    init's failures, runs, runs above the reference without an SOSP, median norm, rank and test
    risk of its failures; median norm and test risk of the ``favoured`` init's successes).
    """
    evidence = resolve_evidence(problem, evidence, collect)
    claim = "KKR-bias"
    _check_rtol(global_rtol)
    names = {r["init"] for r in evidence.runs} | set(KKR_INITS)
    for name, v in (("favoured", favoured), ("against", against)):
        if v not in names:
            raise UserInputError(f"{name}: expected an init among {sorted(names)}, got {v!r}")
    opts = {"favoured": favoured, "against": against, "global_rtol": global_rtol}
    judge = _judge_on(claim, evidence, opts)
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
        return judge.inconclusive(cert, f"needs runs of both {favoured!r} and {against!r}")
    if any(x <= 0 for x in evidence.problem.lam) and favoured == "zero":
        return judge.inconclusive(cert, "the claim is about zero init *with* weight decay (lam > 0)")
    f, a = table[favoured], table[against]
    if f["converged"] == 0:
        return judge.inconclusive(cert, f"no certified SOSP from {favoured!r}")
    lo, hi = f["success_interval"]
    alo, ahi = a["success_interval"]
    tag = (
        f"{favoured}: {f['successes']}/{f['converged']} global [{lo:.2f}, {hi:.2f}]; "
        f"{against}: {a['successes']}/{a['converged']} [{alo:.2f}, {ahi:.2f}]"
    )
    if hi < 0.5 or (a["converged"] and hi < alo):
        return judge.violated(cert, tag)
    frac_a = a["success_fraction"] if a["converged"] else 0.0
    # The contrast: end points of the other init that are certified non-global (above the reference),
    # whether or not they are SOSPs.
    cert["contrast"] = _bias_contrast(f, a)
    if not (lo > 0.5 and f["success_fraction"] >= frac_a):
        return judge.inconclusive(cert, tag)
    if cert["contrast"]["against_failures"] == 0:
        return judge.inconclusive(
            cert,
            tag + f"; no contrast: none of the {a['runs']} {against!r} runs ends at a spurious SOSP, "
            "so the claim's other half (a large init can fail) is not exercised",
        )
    if not ref.certified:
        return judge.inconclusive(cert, tag + " (global = the best value found, not certified)")
    fn, sn = cert["contrast"]["failure_norm_median"], cert["contrast"]["success_norm_median"]
    extra = (
        f"; {against} failures: median ||X||_F {fn:.3g} against {sn:.3g} for {favoured} successes, "
        f"median rank {cert['contrast']['failure_rank_median']:g}"
        if isinstance(fn, float) and fn == fn and isinstance(sn, float) and sn == sn
        else ""
    )
    return judge.holds(cert, tag + extra)


# --------------------------------------------------------------------------------------------------
# KKR-includes-JLR


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


def _check_includes_jlr(
    problem: Any, eps: float, form: str, rank: int | None, radius: float, samples: int, seed: int
) -> None:
    """Refuse the options of :func:`check_kkr_includes_jlr` that are out of range, naming the first."""
    from landscapes.problem import Problem

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


def _form_row(
    problem: Any,
    form: str,
    eps: float,
    bounds: RestrictedBounds,
    *,
    rank: int | None,
    radius: float,
    samples: int,
    seed: int,
) -> dict[str, Any]:
    """The restricted constants of the linearized risk with the perturbation ``form`` (a certificate row)."""
    q = _perturbed(problem, form, float(eps), seed)
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
        row.update(alpha_hat=math.nan, beta_lower=math.nan, generic_certified=False, special_certified=False)
        return row
    rc = restricted_constants(q, rank=r, radius=radius, x_star=x0, samples=samples, seed=seed)
    row["alpha_hat"] = min(rc.alpha, row["alpha_upper"])
    row["beta_lower"] = rc.beta
    # The perturbations add eps I (ridge) or nothing (linear) to every Hessian.
    shift = float(eps) if form == "ridge" else 0.0
    row["alpha_lower"], row["beta_upper"] = bounds.alpha_lower + shift, bounds.beta_upper + shift
    row["generic_certified"] = 2 * row["alpha_hat"] <= row["beta_lower"]
    row["special_certified"] = 2 * row["alpha_lower"] > row["beta_upper"]
    return row


@checker(
    "KKR-includes-JLR",
    options={
        "eps": POS,
        "form": Choice(("none", "linear", "ridge")),
        "rank": Rank(optional=True),
        "radius": POS,
        "samples": Int(1, 10**6),
        "seed": SEED,
    },
    certificate={st: [("forms", "eps", "claimed")] for st in ("holds", "violated")},
    evidence=_includes_jlr_evidence,
)
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
    The witnesses are in the certificate; a ``violated`` verdict saves the problem with its options
    in ``save_dir`` (the problem is the counterexample: ``loracheck audit FILE`` replays it).

    Certificate: ``eps``, ``claimed`` (the constants the statement implies, ``alpha = beta =
    eps``) and ``forms``, a row per perturbation form: ``r``, ``r_star``, ``reference_method``,
    ``alpha_upper`` (the RSC ratio along the null direction, ``inf`` without one) and its
    ``null_residual`` ``|J vec(D)|``, ``alpha_hat`` (the smallest ratio found), ``beta_lower``,
    the structural ``alpha_lower`` and ``beta_upper``, ``generic_certified`` (``2 alpha_hat <=
    beta_lower``) and ``special_certified`` (``2 alpha_lower > beta_upper``).
    """
    claim = "KKR-includes-JLR"
    _check_includes_jlr(problem, eps, form, rank, radius, samples, seed)
    t0 = time.perf_counter()
    bounds = restricted_bounds(_perturbed(problem, "none", float(eps), seed))
    rows = {
        f: _form_row(problem, f, eps, bounds, rank=rank, radius=radius, samples=samples, seed=seed)
        for f in ("none", "linear", "ridge")
    }
    cert = {"forms": rows, "eps": eps, "claimed": {"alpha": eps, "beta": eps}}
    opts = {"eps": eps, "form": form, "rank": rank, "radius": radius, "samples": samples, "seed": seed}
    judge = Judge(claim, dict(problem.fingerprint()), opts)
    row = rows[form]
    judge.timings["total"] = time.perf_counter() - t0
    if row["generic_certified"]:
        how = (
            f"a null direction of J (residual {row['null_residual']:.1e})"
            if row["null_residual"] is not None and row["alpha_hat"] == row["alpha_upper"]
            else "a sampled point"
        )
        return judge.violated(
            cert,
            f"{form}: alpha <= {row['alpha_hat']:.3g} (witness: {how}) and beta >= {row['beta_lower']:.3g}, "
            "so 2 alpha <= beta: not the special regime",
            # the problem itself refutes the claim: saved with the options, replayable by `loracheck audit`
            counterexample=save_counterexample(problem, save_dir, claim, None, opts),
        )
    if row["special_certified"]:
        return judge.holds(
            cert, f"{form}: 2 alpha >= {2 * row['alpha_lower']:.3g} > beta <= {row['beta_upper']:.3g}"
        )
    return judge.inconclusive(cert, f"{form}: neither regime certified")


# --------------------------------------------------------------------------------------------------
# KKR-sgd-rank (Lemma 1)


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


def _check_sgd_rank(
    problem: Any, eps: Sequence[float], factor: float, init: str, conv_rtol: float, lr: float
) -> None:
    """Refuse the options of :func:`check_kkr_sgd_rank` that are out of range, naming the first."""
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


def _eps_ranks(x: Tensor, e: float) -> tuple[list[float], int, int, int]:
    r"""The block's singular values and its eps-ranks: spectral, Frobenius, Frobenius over the spectral norm.

    Each is the smallest ``k`` whose rank-``k`` truncation is within ``e`` times the norm (the
    block's own Frobenius norm; the spectral norm in the last, the strongest reading).
    """
    sv = torch.linalg.svdvals(x).tolist()
    fro_j = math.sqrt(sum(v * v for v in sv))
    spec = next((k for k in range(len(sv) + 1) if (sv[k] if k < len(sv) else 0.0) < e * fro_j), len(sv))
    tails = [math.sqrt(sum(s * s for s in sv[k:])) for k in range(len(sv) + 1)]
    top = sv[0] if sv else 0.0
    if fro_j == 0:  # a zero block: rank 0 in every reading
        return sv, 0, 0, 0
    frob = next(k for k in range(len(sv) + 1) if tails[k] < e * fro_j)
    frob_op = next(k for k in range(len(sv) + 1) if tails[k] < e * top)
    return sv, spec, frob, frob_op


def _sgd_verdict(
    judge: Judge,
    cert: dict[str, Any],
    *,
    eps: Sequence[float],
    lr: float,
    lam: float,
    window: int,
    conv_rtol: float,
) -> Verdict:
    """The verdict on Lemma 1 from the certificate's measured ranks and bounds."""
    rows, q, spread = cert["rows"], cert["per_sample_gradient_rank"], cert["spread"]
    if q > 1:
        worst = max(rows, key=lambda r: r["rank_spectral"] - r["bound"])
        return judge.inconclusive(
            cert,
            f"outside Lemma 1's hypothesis: the per-example gradients have rank up to {q} > 1 (the bound "
            f"counts b rank-one updates per step); measured eps-rank {worst['rank_spectral']} against the "
            f"bound {worst['bound']:.3g} at eps = {worst['eps']:g}, for information only",
        )
    if cert["norm"] == 0:
        return judge.inconclusive(cert, "SGD ended at X = 0: the lemma is vacuous")
    if not spread <= conv_rtol:
        return judge.inconclusive(
            cert,
            f"SGD did not converge: the last {window} iterates move by {spread:.2e} (relative) "
            f"> {conv_rtol:g}",
        )
    bad = [r for r in rows if r["rank_spectral"] > r["bound"]]
    if bad:
        b = bad[0]
        return judge.violated(
            cert, f"eps = {b['eps']:g}: rank {b['rank_spectral']} needed, bound {b['bound']:.3g}"
        )
    live = [r for r in rows if r["nontrivial"]]
    if not live:
        return judge.inconclusive(
            cert,
            f"every bound is vacuous (>= the largest possible rank min(r, m, n)); mu lam = {lr * lam:.3g}: "
            "the lemma cannot fail here",
        )
    if any(r["rank_frobenius_opnorm"] > r["bound"] for r in live):
        return judge.inconclusive(
            cert,
            "within the bounds in spectral distance, not in Frobenius distance with the spectral "
            "normalization (the lemma's norms are not stated)",
        )
    return judge.holds(
        cert,
        f"measured eps-ranks (Frobenius distance, spectral normalization: the strongest reading) within "
        f"{len(live)} non-vacuous bound(s) for eps in {list(eps)}; mu lam = {lr * lam:.3g}; per-example "
        "gradients of rank 1",
    )


@checker(
    "KKR-sgd-rank",
    options={
        "rank": Rank(),
        "batch": Int(1, 10**6),
        "lr": POS,
        "steps": Int(1, 10**7),
        "init": Choice(("zero", "small", "large")),
        "eps": Seq(Real(0.0, 4.0), 1, 64),
        "window": Int(1, 10**7),
        "conv_rtol": TOL,
        "factor": POS,
        "seed": SEED,
    },
    certificate={st: [("rows", "lam", "mu_lam", "spread", "norm")] for st in ("holds", "violated")},
)
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

    Certificate: ``spread`` (the last iterates' relative move), ``norm`` (:math:`\|\bar X\|_F`),
    ``normalization``, ``lam``, ``mu_lam``, ``rows`` (per ``eps`` and block: ``bound``, the
    readings ``rank_spectral``, ``rank_frobenius``, ``rank_frobenius_opnorm``, ``nontrivial``
    (the bound is below the largest possible rank), the leading ``singular_values``),
    ``per_sample_gradient_rank`` (the largest) and ``per_sample_gradient_ranks``, ``hypothesis``.
    Empty when the weight decays are not one ``lam > 0``.
    """
    from landscapes.nonlinear.sosp import train_sgd
    from theory.kkr import sgd_rank_bound

    claim = "KKR-sgd-rank"
    _check_sgd_rank(problem, eps, factor, init, conv_rtol, lr)
    opts = {
        "rank": rank, "batch": batch, "lr": lr, "steps": steps, "init": init, "eps": list(eps),
        "window": window, "conv_rtol": conv_rtol, "factor": factor, "seed": seed,
    }  # fmt: skip
    judge = Judge(claim, dict(problem_fingerprint(problem), name=problem.name, meta=dict(problem.meta)), opts)
    if len(set(problem.lam)) != 1 or problem.lam[0] <= 0:
        return judge.inconclusive({}, "needs one weight decay lam > 0")
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
            sv, spec, frob, frob_op = _eps_ranks(x, e)
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
    judge.timings["sgd"] = time.perf_counter() - t0
    return _sgd_verdict(judge, cert, eps=eps, lr=lr, lam=lam, window=window, conv_rtol=conv_rtol)
