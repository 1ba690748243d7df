r"""Audit a user's own problem -- and optionally a LoRA point they trained -- against the claims.

:func:`audit` runs the applicable checkers on one :class:`~landscapes.problem.Problem` (built in
Python, or read from a problem file, see :mod:`landscapes.io`) and returns an
:class:`AuditResult`: the verdicts, and, when a point is given, a :class:`PointAudit` that says
whether the point is a second-order stationary point (SOSP) of the LoRA objective

.. math::

    F(U, V) = L(UV^\top) + \tfrac{\lambda}{2}(\|U\|_F^2 + \|V\|_F^2)

and whether it is globally optimal, with the numbers that decide it.

How a point is certified is described in :mod:`verify.run.points`.

Which claims run by default (``claims=None``)
-------------------------------------------
``JLR-rank-NUC`` (one block) or ``JLR-rank-blocks`` (several), ``JLR-equiv``, ``JLR-magnitude``,
``JLR-zero-saddle``, ``JLR-no-spurious`` (at ``r_max + 1`` unless ``ranks`` say otherwise) and,
for the squared loss, ``JLR-rank-FT`` (for the logistic and cross-entropy losses full fine-tuning
has no minimizer whenever the data are separable, which is generic for ``p > KN``; ask for it
explicitly to run it anyway).  ``ranks`` adds ``JLR-no-spurious`` at each rank assignment above
the bound in every block, :math:`r_j(r_j+1)/2 > KN` for all ``j``, and ``JLR-spurious-below`` at
each other assignment (one block at or below the bound is enough for spurious points to exist).
``JLR-gd`` (tens of thousands of optimizer steps) runs only when asked for.

Problem files saved by a checker as counterexamples carry the claim and the options that refuted
it; :func:`replay_options` reads them back, so that ``loracheck audit FILE`` replays the verdict.
"""

from __future__ import annotations

import datetime as _dt
import inspect
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from torch import Tensor

from landscapes.io import loads_json
from landscapes.lora import LoRAPoint
from landscapes.nuc import NucSolution, solve_nuc
from landscapes.problem import Problem
from landscapes.threads import gradient_work, work_threads
from theory.bounds import ranks_above_bound
from theory.claims import DEFAULT_TOLERANCES
from theory.errors import InputTypeError, UserInputError
from verify.options import check_options, object_options
from verify.registry import CHECKERS, NUC_CLAIMS, get_checker
from verify.report import (
    COUNTS_SCHEMA,
    VERDICT_SCHEMA,
    environment,
    evidence,
    exit_code,
    validate_json,
)
from verify.results import ResultsFile, results_schema
from verify.run.points import PointAudit, as_point, audit_point, load_point, point_from_extras
from verify.verdict import STATUSES, Verdict, check_certificate, jsonable

__all__ = [
    "AUDIT_FORMAT",
    "AUDIT_VERSION",
    "AUDIT_SCHEMA",
    "DEFAULT_AUDIT_CLAIMS",
    "AuditTask",
    "PointAudit",
    "AuditResult",
    "plan_audit",
    "audit",
    "audit_point",
    "load_point",
    "replay_options",
    "point_from_extras",
    "read_audit",
    "write_audit",
]

AUDIT_FORMAT = "loracheck.audit"
AUDIT_VERSION = 1
_T = DEFAULT_TOLERANCES

#: Claims an audit runs when none are named (those that apply to the problem, see the module doc).
DEFAULT_AUDIT_CLAIMS: tuple[str, ...] = (
    "JLR-rank-FT",
    "JLR-rank-NUC",
    "JLR-rank-blocks",
    "JLR-equiv",
    "JLR-magnitude",
    "JLR-zero-saddle",
    "JLR-no-spurious",
)
#: Claims that take a LoRA rank (``ranks`` are routed to them).
_RANKED = ("JLR-no-spurious", "JLR-spurious-below")

_VERDICT_SCHEMA: dict[str, Any] = {
    **VERDICT_SCHEMA,
    "required": [*VERDICT_SCHEMA["required"], "request"],
    "properties": {
        **VERDICT_SCHEMA["properties"],
        "request": {
            "type": "object",
            "required": ["claim", "options"],
            "properties": {"claim": {"type": "string"}, "options": {"type": "object"}},
        },
    },
}

#: JSON Schema (draft 2020-12) of an audit file (``loracheck audit --json OUT``).
AUDIT_SCHEMA: dict[str, Any] = results_schema(
    "loracheck audit",
    AUDIT_FORMAT,
    AUDIT_VERSION,
    required=["source", "problem", "tasks", "verdicts", "counts", "point", "exit_code", "seconds"],
    properties={
        "source": {"type": ["string", "null"]},
        "problem": {
            "type": "object",
            "required": ["N", "K", "blocks", "lam", "loss", "sha256"],
        },
        "tasks": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["claim", "options"],
                "properties": {"claim": {"type": "string"}, "options": {"type": "object"}},
            },
        },
        "verdicts": {"type": "array", "items": _VERDICT_SCHEMA},
        "counts": COUNTS_SCHEMA,
        "point": {
            "oneOf": [
                {"type": "null"},
                {
                    "type": "object",
                    "required": [
                        "status",
                        "is_sosp",
                        "objective",
                        "nuc_dual",
                        "nuc_primal",
                        "excess_upper",
                        "excess_lower",
                        "ranks",
                        "product_ranks",
                        "sosp",
                        "reason",
                    ],
                    "properties": {
                        "status": {"enum": ["global", "not global", "undecided"]},
                        "is_sosp": {"type": "boolean"},
                    },
                },
            ]
        },
        "exit_code": {"enum": [0, 1, 2]},
        "seconds": {"type": "number"},
    },
)


# ------------------------------------------------------------------------------------------------
# Planning


@dataclass(frozen=True)
class AuditTask:
    """One checker run: a claim id and the keyword options passed to its checker."""

    claim: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data; an option that takes an object (a function, a solution) by its name."""
        objects = object_options(self.claim)
        opts = {k: _object_name(v) if k in objects else v for k, v in self.options.items()}
        return {"claim": self.claim, "options": jsonable(opts)}

    def key(self) -> str:
        """A canonical string: two tasks with equal keys run the same computation.

        An object option enters by its identity, so a verdict computed with one function or
        solution is never reused for another of the same name.
        """
        d = self.to_dict()
        for k in object_options(self.claim) & set(self.options):
            if self.options[k] is not None:
                d["options"][k] += f" at {id(self.options[k]):#x}"
        return json.dumps(d, sort_keys=True)


def _object_name(value: Any) -> str | None:
    return None if value is None else f"<{getattr(value, '__name__', type(value).__name__)}>"


RankAssignment = int | tuple[int, ...]


def _as_ranks(ranks: int | Iterable[int | Sequence[int]] | None, n_blocks: int) -> list[RankAssignment]:
    """Rank assignments: each an int (the same rank in every block) or one rank per block."""
    if ranks is None:
        return []
    what = (
        "a positive int, or a list of rank assignments (each a positive int for every block or a "
        f"tuple of {n_blocks} positive ints, one per block)"
    )
    if isinstance(ranks, bool) or isinstance(ranks, (str, bytes)):
        raise UserInputError(f"ranks: expected {what}, got {ranks!r}")
    if isinstance(ranks, int):
        ranks = [ranks]
    if not isinstance(ranks, Iterable):
        raise UserInputError(f"ranks: expected {what}, got {ranks!r}")
    out: list[RankAssignment] = []
    for item in ranks:
        if isinstance(item, bool) or isinstance(item, (str, bytes)):
            raise UserInputError(f"ranks: expected {what}, got {list(ranks)!r}")
        if isinstance(item, int):
            if item < 1:
                raise UserInputError(f"ranks: expected positive ints (LoRA ranks >= 1), got {item!r}")
            out.append(item)
            continue
        if not isinstance(item, Iterable):
            raise UserInputError(f"ranks: expected {what}, got {item!r}")
        tup = tuple(item)
        if any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in tup):
            raise UserInputError(f"ranks: expected positive ints (LoRA ranks >= 1) per block, got {tup!r}")
        if len(tup) != n_blocks:
            raise UserInputError(
                f"ranks: a per-block rank assignment needs one rank per block ({n_blocks}), got {tup!r}"
            )
        out.append(tup[0] if len(set(tup)) == 1 else tup)
    if not out:
        raise UserInputError(f"ranks: expected {what}, got an empty list")
    return list(dict.fromkeys(out))


def _block_ranks(r: RankAssignment, n_blocks: int) -> list[int]:
    return [r] * n_blocks if isinstance(r, int) else list(r)


def _as_claims(claims: str | Iterable[str] | None) -> list[str] | None:
    if claims is None:
        return None
    if isinstance(claims, str):
        claims = [claims]
    if not isinstance(claims, Iterable):
        raise UserInputError(f"claims: expected claim ids (strings), got {claims!r}")
    out = list(claims)
    if any(not isinstance(c, str) for c in out):
        raise UserInputError(f"claims: expected claim ids (strings), got {out!r}")
    unknown = [c for c in out if c not in CHECKERS]
    if unknown:
        raise UserInputError(
            f"claims: expected ids with checkers ({', '.join(CHECKERS)}); got {', '.join(map(repr, unknown))}"
        )
    return list(dict.fromkeys(out))


def _checker_params(claim: str) -> set[str]:
    sig = inspect.signature(get_checker(claim))
    return {n for n, p in sig.parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _is_above(problem: Problem, r: RankAssignment) -> bool:
    return ranks_above_bound(_block_ranks(r, len(problem.blocks)), problem.K, problem.N)


def plan_audit(
    problem: Problem,
    *,
    claims: str | Iterable[str] | None = None,
    ranks: int | Iterable[int | Sequence[int]] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[AuditTask, ...]:
    r"""The checker runs of an audit (see the module docstring for the defaults).

    Parameters
    ----------
    problem
        The problem to audit.
    claims
        Claim ids to run (default: those of :data:`DEFAULT_AUDIT_CLAIMS` that apply).  An empty
        list plans no checker run (a point-only audit).
    ranks
        LoRA rank assignments: each an int (the same rank in every block) or a tuple with one
        rank per block.  ``JLR-no-spurious`` runs at each assignment above the bound in every
        block, :math:`r_j(r_j+1)/2 > KN` for all ``j`` (:func:`theory.bounds.ranks_above_bound`:
        the hypothesis is per block, not the sum), ``JLR-spurious-below`` at each other one.
        ``ranks=(7, 1)`` is two uniform assignments (a sequence of ints); one per-block assignment
        is ``ranks=[(7, 1)]``.
    options
        Extra keyword options per claim id, passed to the checker (e.g.
        ``{"JLR-no-spurious": {"n_starts": 6}}``).
    """
    if not isinstance(problem, Problem):
        raise InputTypeError(f"problem: expected a landscapes.problem.Problem, got {type(problem).__name__}")
    wanted = _as_claims(claims)
    rs = _as_ranks(ranks, len(problem.blocks))
    opts: dict[str, dict[str, Any]] = {}
    if options is not None:
        if not isinstance(options, Mapping):
            raise UserInputError(f"options: expected a mapping claim id -> keyword options, got {options!r}")
        for c, o in options.items():
            _as_claims([c])
            if not isinstance(o, Mapping):
                raise UserInputError(f"options[{c!r}]: expected a mapping of keyword options, got {o!r}")
            unknown = sorted(set(o) - _checker_params(c) - {"save_dir", "solution"})
            if unknown:
                known = ", ".join(sorted(_checker_params(c)))
                raise UserInputError(
                    f"options[{c!r}]: expected options of the checker ({known}); "
                    f"got unknown {', '.join(unknown)}"
                )
            if {"save_dir", "solution"} & set(o):
                raise UserInputError(f"options[{c!r}]: save_dir and solution are set by the audit itself")
            opts[c] = dict(o)
    b = len(problem.blocks)
    if wanted is None:
        chosen = [
            c
            for c in DEFAULT_AUDIT_CLAIMS
            if not (c == "JLR-rank-FT" and problem.loss.name != "squared")
            and not (c == "JLR-rank-NUC" and b > 1)
            and not (c == "JLR-rank-blocks" and b == 1)
        ]
        if rs:
            chosen = [c for c in chosen if c not in _RANKED]
            if any(not _is_above(problem, r) for r in rs):
                chosen.append("JLR-spurious-below")
            if any(_is_above(problem, r) for r in rs):
                chosen.append("JLR-no-spurious")
    else:
        chosen = wanted
    tasks: list[AuditTask] = []
    for c in chosen:
        base = dict(opts.get(c, {}))
        if c in _RANKED and rs and "rank" not in base:
            above = c == "JLR-no-spurious"
            picked = [r for r in rs if _is_above(problem, r) == above] if wanted is None else rs
            for r in picked:
                tasks.append(AuditTask(c, {**base, "rank": r if isinstance(r, int) else list(r)}))
        else:
            tasks.append(AuditTask(c, base))
    for t in tasks:  # kinds and ranges (verify.options), ranks against the problem's blocks
        check_options(t.claim, t.options, problem)
    return tuple(tasks)


# ------------------------------------------------------------------------------------------------
# Counterexample files


def replay_options(extras: Mapping[str, np.ndarray]) -> AuditTask | None:
    """The checker run stored in a counterexample file's extras (``None`` if it is not one).

    Files saved by :mod:`verify.jlr.rank` carry ``claim`` and ``options_json``; files saved by
    :mod:`verify.jlr.second_order` carry ``claim`` and ``record_json`` (with the options inside).  Only
    options the checker accepts are kept (the stored ones also record derived values), and they
    are range-checked (:mod:`verify.options`): a file whose stored ``rtol`` is ``-1`` or ``"x"``
    is refused with :class:`~theory.errors.UserInputError`, never replayed.  Options that take
    Python objects (:func:`verify.options.object_options`: a solution, a prediction function,
    evidence) are stored as descriptions and are not replayed: the claim is checked as stated.
    """
    if "claim" not in extras:
        return None
    claim = str(np.asarray(extras["claim"]))
    if claim not in CHECKERS:
        raise UserInputError(f"claim: the file names claim {claim!r}, which has no checker")
    opts: Any = {}
    key = "options_json" if "options_json" in extras else "record_json"
    if key in extras:
        # size and depth capped; invalid JSON, deep nesting and ints over 4,300 digits are UserInputError
        data = loads_json(str(np.asarray(extras[key])), key, expected="the checker options stored as JSON")
        if key == "options_json":
            opts = data
        else:
            if not isinstance(data, dict):
                raise InputTypeError(f"record_json: expected a JSON object, got {type(data).__name__}")
            opts = data.get("options", {})
    if not isinstance(opts, dict):
        raise InputTypeError(f"{key}: expected a JSON object of checker options, got {type(opts).__name__}")
    # objects (a solution, a prediction function, evidence, ...) are recorded as descriptions only:
    # never replayed, so a value a file puts there cannot reach the checker
    keep = _checker_params(claim) - {"save_dir"} - object_options(claim)
    kept = {k: v for k, v in opts.items() if k in keep}
    check_options(claim, kept)  # kinds and ranges; ranks are checked against the problem by audit()
    return AuditTask(claim, kept)


# ------------------------------------------------------------------------------------------------
# The audit


@dataclass(frozen=True)
class AuditResult:
    """Verdicts of an audit, the point audit (if a point was given) and the bookkeeping."""

    problem: Mapping[str, Any]
    tasks: tuple[AuditTask, ...]
    verdicts: tuple[Verdict, ...]
    point: PointAudit | None
    seconds: float
    complete: bool = True
    source: str | None = None
    resumed: int = 0

    @property
    def exit_code(self) -> int:
        """0 all hold, 1 some violated, 2 some inconclusive.

        A point audit counts too: a certified spurious point (``"not global"`` with an exact local
        minimizer certified nearby) as 1, any other ``"not global"`` or ``"undecided"`` point as 2.
        """
        code = exit_code(self.verdicts)
        if self.point is not None:
            if self.point.status == "not global" and self.point.spurious:
                return 1
            if self.point.status in ("not global", "undecided") and code == 0:
                return 2
        return code

    @property
    def counts(self) -> dict[str, int]:
        """Number of verdicts per status."""
        return {s: sum(v.status == s for v in self.verdicts) for s in STATUSES}

    def to_dict(self) -> dict[str, Any]:
        """The audit file's content (see :data:`AUDIT_SCHEMA`)."""
        verdicts = []
        for t, v in zip(self.tasks, self.verdicts):
            d = v.to_dict()
            d["request"] = t.to_dict()
            verdicts.append(d)
        return {
            "format": AUDIT_FORMAT,
            "version": AUDIT_VERSION,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "complete": bool(self.complete),
            "environment": environment(),
            "source": self.source,
            "problem": jsonable(dict(self.problem)),
            "tasks": [t.to_dict() for t in self.tasks],
            "verdicts": verdicts,
            "counts": self.counts,
            "point": None if self.point is None else self.point.to_dict(),
            "exit_code": self.exit_code,
            "seconds": float(self.seconds),
        }

    def table(self) -> str:
        """A concise table, one line per verdict, then the point audit and the counts."""
        lines = [f"{'claim':<18} {'rank':<5} {'status':<12} evidence"] if self.verdicts else []
        for t, v in zip(self.tasks, self.verdicts):
            r = t.options.get("rank", v.options.get("rank", "-"))
            r = r[0] if isinstance(r, (list, tuple)) and len(set(r)) == 1 else r
            r = "-" if r is None else r  # an option left at its default (the checker chooses)
            lines.append(f"{v.claim:<18} {str(r):<5} {v.status:<12} {evidence(v)}")
        for v in self.verdicts:
            if v.status != "holds":
                lines.append(f"  {v.status}: {v.claim}: {v.reason}")
        if self.point is not None:
            lines.append(self.point.summary())
        c = self.counts
        if self.verdicts:
            lines.append(f"{c['holds']} holds, {c['violated']} violated, {c['inconclusive']} inconclusive")
        return "\n".join(lines)


def _check_resume_data(data: Mapping[str, Any], where: str, *, certificates: bool) -> bool:
    """Validate an audit's data for resuming; return whether its verdicts may be reused.

    The data must validate against :data:`AUDIT_SCHEMA` and each verdict must be the one its
    ``request`` asked for; otherwise :class:`~theory.errors.UserInputError` names ``where``.  The
    verdicts may be reused only when the file records the loracheck version that wrote it and it is
    this one (``False`` otherwise: they are recomputed).  With ``certificates``, every reusable
    verdict must also carry the certificate fields its checker writes
    (:func:`verify.verdict.check_certificate`).
    """
    if not isinstance(data, Mapping):
        raise InputTypeError(f"{where}: expected an audit (a JSON object), got {type(data).__name__}")
    validate_json(dict(data), AUDIT_SCHEMA, where)
    same_code = data["environment"].get("loracheck") == environment()["loracheck"]
    for i, d in enumerate(data["verdicts"]):
        what = f"{where}: verdict {i} ({d['claim']})"
        if d["request"]["claim"] != d["claim"]:
            raise UserInputError(
                f"{what}: expected the verdict of the requested claim {d['request']['claim']!r}, "
                f"got one of {d['claim']!r}"
            )
        sha = d["problem"].get("sha256")
        if sha is not None and sha != data["problem"]["sha256"]:
            raise UserInputError(
                f"{what}: expected a verdict on the audited problem (sha256 {data['problem']['sha256']}), "
                f"got one on {sha!r}"
            )
        if certificates and same_code:
            check_certificate(d, what)
    return bool(same_code)


def read_audit(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read an audit file; a file that is not one gets a clear ``ValueError``.

    The file must validate against :data:`AUDIT_SCHEMA` (checked by code): a verdict without
    ``status`` or a certificate that is not an object is a :class:`~theory.errors.UserInputError`
    naming the file.  An interrupted audit (``complete: false``) written by this loracheck version
    is one whose verdicts :func:`audit` would reuse: each must also carry the certificate fields its
    checker writes (:data:`verify.verdict.CERTIFICATE_KEYS`), so a forged ``holds`` with an empty
    certificate is refused, naming the verdict and the missing fields.  A forged but plausible
    certificate is not caught here: only re-verifying it does (``--fresh`` recomputes everything).
    """
    p = Path(path)
    # size-bounded; nesting, non-JSON text and another format or version are UserInputError
    data = _audit_file(p).read()
    _check_resume_data(data, f"json {str(p)!r}", certificates=data.get("complete") is False)
    return data


def _audit_file(path: str | os.PathLike[str]) -> ResultsFile:
    return ResultsFile(path, fmt=AUDIT_FORMAT, version=AUDIT_VERSION, what="json", noun=None, hint="")


def audit(
    problem: Problem,
    *,
    claims: str | Iterable[str] | None = None,
    ranks: int | Iterable[int | Sequence[int]] | None = None,
    point: LoRAPoint | tuple[Sequence[Tensor], Sequence[Tensor]] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    tasks: Sequence[AuditTask] | None = None,
    solution: NucSolution | None = None,
    save_dir: str | os.PathLike[str] | None = None,
    resume: Mapping[str, Any] | None = None,
    on_verdict: Callable[[AuditResult], object] | None = None,
    progress: bool | None = None,
    source: str | None = None,
    point_source: str | None = None,
) -> AuditResult:
    """Run the applicable checkers on ``problem`` (and audit ``point`` if given).

    Parameters
    ----------
    problem
        A :class:`~landscapes.problem.Problem` (see :func:`landscapes.io.load_problem` for files).
    claims, ranks, options
        What to run, see :func:`plan_audit`.
    tasks
        An explicit plan instead (e.g. :func:`replay_options` of a counterexample file).
    point
        A LoRA point ``(U, V)`` (one factor pair per block) to certify, see :func:`audit_point`.
    solution
        A NUC solution to reuse (it is re-certified, never trusted).
    save_dir
        Where checkers save counterexamples (problem files that replay the verdict).
    resume
        A previous audit's data (:func:`read_audit`) of the same problem: its verdicts for equal
        tasks (same claim, same options) are reused instead of recomputed (an interrupted audit
        resumes), unless it was written by another loracheck version or records none (then
        everything is recomputed).  Data that do not validate against :data:`AUDIT_SCHEMA`, or a
        reusable verdict without the certificate fields its checker writes (a forged ``holds``
        with an empty certificate), are refused with :class:`~theory.errors.UserInputError`
        (``resume: ...``; the CLI suggests ``--fresh``).  A forged but plausible certificate is
        caught only by re-verifying it: pass no ``resume`` (``--fresh``) to recompute.
    on_verdict
        Called with the partial result after every verdict (the CLI writes the JSON there).
    progress
        ``None``: a tqdm bar on a terminal only.
    source, point_source
        Where the problem and the point came from (recorded in the result).
    """
    from tqdm.auto import tqdm

    if not isinstance(problem, Problem):
        raise InputTypeError(f"problem: expected a landscapes.problem.Problem, got {type(problem).__name__}")
    if tasks is None:
        plan = plan_audit(problem, claims=claims, ranks=ranks, options=options)
    else:
        if claims is not None or ranks is not None or options is not None:
            raise UserInputError("tasks: expected either tasks or claims/ranks/options, got both")
        plan = tuple(tasks)
        for t in plan:
            if not isinstance(t, AuditTask):
                raise UserInputError(f"tasks: expected AuditTask items, got {type(t).__name__}")
            _as_claims([t.claim])
            check_options(t.claim, t.options, problem)
    pt = as_point(problem, point) if point is not None else None
    if pt is not None and problem.dtype != torch.float64:
        raise UserInputError(
            f"point: point audits need a float64 problem (certificates), got {problem.dtype}"
        )
    fp = problem.fingerprint()
    done = _resumed_verdicts(resume, fp) if resume is not None else {}
    t0 = time.perf_counter()
    verdicts: list[Verdict] = []
    resumed = 0
    nuc: NucSolution | None = solution

    def partial(complete: bool, point_audit: PointAudit | None = None) -> AuditResult:
        return AuditResult(
            problem=fp,
            tasks=plan[: len(verdicts)],
            verdicts=tuple(verdicts),
            point=point_audit,
            seconds=time.perf_counter() - t0,
            complete=complete,
            source=source,
            resumed=resumed,
        )

    bar = tqdm(
        total=len(plan), desc="audit", unit="check", disable=None if progress is None else not progress
    )
    try:
        for task in plan:
            bar.set_postfix_str(task.claim)
            if task.key() in done:
                verdicts.append(done[task.key()])
                resumed += 1
            else:
                opts = dict(task.options)
                with work_threads(gradient_work(problem), label=task.claim):  # small: one thread
                    if task.claim in NUC_CLAIMS and nuc is None and problem.dtype == torch.float64:
                        nuc = solve_nuc(problem, gap_rtol=1e-10)
                    if task.claim in NUC_CLAIMS and nuc is not None:
                        opts["solution"] = nuc
                    verdicts.append(get_checker(task.claim)(problem, save_dir=save_dir, **opts))
            bar.update(1)
            if on_verdict is not None:
                on_verdict(partial(False))
    finally:
        bar.close()
    pa = None
    if pt is not None:
        with work_threads(gradient_work(problem), label="the point"):
            if nuc is None and problem.dtype == torch.float64:
                nuc = solve_nuc(problem, gap_rtol=1e-10)
            pa = audit_point(problem, pt, solution=nuc, source=point_source)
    result = partial(True, pa)
    if on_verdict is not None:
        on_verdict(result)
    return result


def _resumed_verdicts(resume: Mapping[str, Any], fp: Mapping[str, Any]) -> dict[str, Verdict]:
    """The finished verdicts of an interrupted audit of the same problem, by task key.

    Empty when the file was written by another loracheck version (its verdicts are recomputed).
    """
    same_code = _check_resume_data(resume, "resume", certificates=True)
    if resume["problem"]["sha256"] != fp["sha256"]:
        raise UserInputError(
            f"resume: expected an audit of the same problem (sha256 {fp['sha256']}), got one of "
            f"{resume['problem']['sha256']!r}"
        )
    done: dict[str, Verdict] = {}
    for d in resume["verdicts"] if same_code else []:
        req = d["request"]
        done[AuditTask(req["claim"], req["options"]).key()] = Verdict.from_dict(d)
    return done


def write_audit(result: AuditResult, path: str | os.PathLike[str]) -> Path:
    """Write the audit JSON atomically (readers see the old file or the new one)."""
    return _audit_file(path).save(result.to_dict())
