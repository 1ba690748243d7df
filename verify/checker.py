"""One way to write a checker: registration, verdict constructors, the float64 gate, counterexamples.

A checker is a function ``check_<claim>(problem, *, save_dir=None, **options) -> Verdict`` in its
paper's room (:mod:`verify.jlr`, :mod:`verify.kkr`, :mod:`verify.wyl`, :mod:`verify.hsk`), written as

.. code-block:: python

    @checker(
        "JLR-magnitude",
        options={"factor": POS, "gap_rtol": TOL, "seed": SEED, "solution": ANY},
        certificate={"holds": [("L0", "rhs", "rel_gap")], "violated": [("L0", "rhs", "rel_gap")]},
        evidence=fields(("rhs", "L(0)-L(D*)"), ("rel_gap", "rel gap")),
    )
    def check_jlr_magnitude(problem, *, factor=1.0, gap_rtol=1e-8, seed=0, solution=None, save_dir=None):
        judge = Judge("JLR-magnitude", problem.fingerprint(), {"factor": factor, ...})
        ...
        return judge.holds(certificate, "lam |D*|_* <= L(0) - L(D*) within the gap")

so everything about a claim sits beside its checker: the options and their ranges (validated on
every call, :mod:`verify.options`), the certificate fields each status always carries (a resumed
or replayed verdict without them is refused, :data:`verify.verdict.CERTIFICATE_KEYS`), and the
evidence line of the report (:func:`verify.report.evidence`).  Adding a claim touches its paper's
room and :mod:`theory.claims` only: :mod:`verify.registry` gathers the rooms.

The shared helpers: :class:`Judge` builds the verdicts of one call (claim, problem fingerprint and
options given once); :func:`needs_float64` gives the honest ``inconclusive`` on other dtypes (the
tolerances are float64 tolerances); :func:`save_counterexample` writes a ``violated`` verdict's
counterexample in the problem-file format that ``loracheck audit`` replays.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import torch
from torch import Tensor

from landscapes.problem import Problem
from verify.counterexample import save_counterexample as _write_counterexample
from verify.options import Spec, register_options, validated
from verify.verdict import Status, Verdict, declare_certificate

__all__ = [
    "Evidence",
    "Judge",
    "Registration",
    "checker",
    "fields",
    "fmt",
    "fmt_gap",
    "needs_float64",
    "num",
    "registered",
    "save_counterexample",
]

_F = TypeVar("_F", bound=Callable[..., Any])

#: The evidence line of a verdict: ``(certificate, verdict dict) -> parts`` joined by ", ".
Evidence = Callable[[Mapping[str, Any], Mapping[str, Any]], list[str]]


@dataclass(frozen=True)
class Registration:
    """A checker and what is declared with it."""

    claim: str
    function: Callable[..., Verdict]
    evidence: Evidence | None = None


_REGISTERED: dict[str, Registration] = {}


def registered() -> Mapping[str, Registration]:
    """The checkers registered so far (claim -> :class:`Registration`), in registration order.

    A room registers its checkers when it is imported; :mod:`verify.registry` imports them all.
    """
    return MappingProxyType(_REGISTERED)


def checker(
    claim: str,
    *,
    options: Mapping[str, Spec],
    certificate: Mapping[str, Sequence[Sequence[str]]] | None = None,
    evidence: Evidence | None = None,
) -> Callable[[_F], _F]:
    """Register the decorated function as the checker of ``claim``.

    ``options``: every keyword option of the checker and its range (:mod:`verify.options`); the
    checker is wrapped so a call with an option out of range raises before any work.
    ``certificate``: per status (``"holds"``, ``"violated"``), the alternatives of certificate
    fields the checker always writes (one alternative per mode).  ``evidence``: the report's
    one-line summary of a verdict (see :func:`fields`); without one the report shows the first
    certificate fields.
    """

    def wrap(fn: _F) -> _F:
        if claim in _REGISTERED:
            raise RuntimeError(f"two checkers registered for {claim}")
        register_options(claim, options)
        if certificate:
            declare_certificate(claim, certificate)
        wrapped = validated(claim)(fn)
        _REGISTERED[claim] = Registration(claim, wrapped, evidence)
        return wrapped

    return wrap


@dataclass(frozen=True)
class Judge:
    """The verdicts of one checker call: claim, problem fingerprint and options fixed once.

    ``timings`` collects seconds per stage while the checker runs; every verdict carries them.
    """

    claim: str
    problem: Mapping[str, Any]
    options: Mapping[str, Any]
    timings: dict[str, float] = field(default_factory=dict)

    def verdict(
        self,
        status: Status,
        certificate: Mapping[str, Any],
        reason: str,
        *,
        counterexample: str | None = None,
    ) -> Verdict:
        """A verdict of a status computed by the checker."""
        if counterexample is not None and status == "inconclusive":
            raise ValueError(f"{self.claim}: a saved file belongs to a decided verdict, not {status!r}")
        return Verdict(
            self.claim,
            status,
            self.problem,
            certificate,
            reason,
            dict(self.timings),
            self.options,
            counterexample,
        )

    def holds(self, certificate: Mapping[str, Any], reason: str, *, witness: str | None = None) -> Verdict:
        """The claim holds on this problem: ``certificate`` shows it within the tolerances.

        ``witness``: the saved file of a point that makes an existence claim hold (e.g. the spurious
        local minimizer JLR-spurious-below finds), replayable like a counterexample.
        """
        return self.verdict("holds", certificate, reason, counterexample=witness)

    def violated(
        self, certificate: Mapping[str, Any], reason: str, *, counterexample: str | None = None
    ) -> Verdict:
        """The claim fails by more than the tolerances allow; ``counterexample`` is the saved file."""
        return self.verdict("violated", certificate, reason, counterexample=counterexample)

    def inconclusive(self, certificate: Mapping[str, Any], reason: str) -> Verdict:
        """Neither could be certified; ``reason`` says why."""
        return self.verdict("inconclusive", certificate, reason)


# --------------------------------------------------------------------------------------------------
# Evidence lines


def num(x: Any) -> float:
    """A certificate number back from JSON (non-finite floats are stored as strings); NaN otherwise."""
    if isinstance(x, bool):
        return math.nan
    if isinstance(x, (int, float)):
        return float(x)
    if isinstance(x, str) and x in ("inf", "-inf", "nan"):
        return float(x)
    return math.nan


def fmt(x: Any) -> str:
    """A certificate value in a few characters: 3 significant digits, lists element-wise."""
    if isinstance(x, float):
        return f"{x:.3g}" if 1e-3 <= abs(x) < 1e4 else f"{x:.1e}"
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(fmt(v) for v in x) + "]"
    return str(x)


def fmt_gap(x: Any) -> str:
    """A relative duality gap, with what a negative one (primal below dual) means.

    Slightly negative is rounding; below -1e-6 it is more than rounding (the bounds are lost).
    """
    v = num(x)
    if v < -1e-6:
        return f"{v:.1e} (< 0 beyond round-off: bounds not trusted)"
    return f"{v:.1e} (< 0: round-off)" if v < 0 else fmt(x)


def fields(*labelled: tuple[str, str]) -> Evidence:
    """An evidence line of ``label value`` for each ``(key, label)`` present in the certificate.

    Keys with ``gap`` in their name are shown with :func:`fmt_gap`.
    """

    def line(c: Mapping[str, Any], d: Mapping[str, Any]) -> list[str]:
        return [f"{label} {fmt_gap(c[k]) if 'gap' in k else fmt(c[k])}" for k, label in labelled if k in c]

    return line


# --------------------------------------------------------------------------------------------------
# The float64 gate and counterexamples


def needs_float64(claim: str, problem: Problem, opts: dict[str, Any]) -> Verdict | None:
    """The default tolerances are float64 tolerances: other dtypes get an honest ``inconclusive``."""
    if problem.dtype == torch.float64:
        return None
    return Verdict(
        claim,
        "inconclusive",
        problem.fingerprint(),
        {"dtype": str(problem.dtype)},
        f"certificates need float64 (the tolerances are float64 tolerances), got {problem.dtype}",
        {},
        opts,
    )


def save_counterexample(
    problem: Problem,
    save_dir: str | Path | None,
    claim: str,
    point: Sequence[Tensor] | None,
    opts: dict[str, Any],
) -> str | None:
    """Save a counterexample: the problem file with the point and the options that refute the claim.

    The one counterexample format (:func:`verify.counterexample.save_counterexample`, kind
    ``"problem"``): a problem file of :mod:`landscapes.io` (``loracheck audit`` replays it), named
    ``CLAIM-SHA256-TAG.npz`` (the problem's fingerprint; a hash of the options and the point),
    with the point's blocks ``D0, D1, ...`` (none when the problem itself is the counterexample,
    ``point=None``), ``claim``, ``options_json`` and the metadata ``counterexample_json`` as
    extras.  ``None`` when ``save_dir`` is ``None`` or the problem holds an operator-form ``J``
    (nothing to save).
    """
    return _write_counterexample(save_dir, claim, options=opts, problem=problem, point=point)
