"""The result of a checker: a verdict with the certificate a reader can re-check."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from theory.errors import InputTypeError, UserInputError, shown

__all__ = [
    "declare_certificate",
    "Verdict",
    "Status",
    "STATUSES",
    "CERTIFICATE_KEYS",
    "check_certificate",
    "jsonable",
]

Status = Literal["holds", "violated", "inconclusive"]
STATUSES: tuple[str, ...] = ("holds", "violated", "inconclusive")


_CERTIFICATE_TABLE: dict[str, Mapping[str, tuple[frozenset[str], ...]]] = {}
#: Claim -> status -> alternatives of the certificate fields its checker always writes with that
#: status (one alternative per mode of the checker), declared where the checker is written
#: (:func:`verify.checker.checker` calls :func:`declare_certificate`; ``tests/verify/
#: test_options_resume.py`` runs the checkers and asserts the fields, so this cannot drift).  A
#: status not declared (``inconclusive``: early returns carry little) requires nothing.  Used when
#: a finished verdict is reused from a file (``loracheck audit --json``, ``loracheck run``): a
#: ``holds`` without the fields that certify it is a forgery or a damaged file and is refused.  A
#: forged but *plausible* certificate (the right fields, invented numbers) is not caught by this
#: check: only re-verifying the certificate catches it (``--fresh`` recomputes).
CERTIFICATE_KEYS: Mapping[str, Mapping[str, tuple[frozenset[str], ...]]] = MappingProxyType(
    _CERTIFICATE_TABLE
)


def declare_certificate(claim: str, by_status: Mapping[str, Sequence[Sequence[str]]]) -> None:
    """Declare the certificate fields ``claim``'s checker always writes, per status.

    ``by_status`` maps ``"holds"`` / ``"violated"`` to alternatives (one per mode of the checker),
    each a sequence of field names of which one alternative must be present in full.
    """
    for st in by_status:
        if st not in STATUSES:
            raise ValueError(f"certificate of {claim}: expected statuses among {STATUSES}, got {st!r}")
    _CERTIFICATE_TABLE[claim] = MappingProxyType(
        {st: tuple(frozenset(a) for a in alts) for st, alts in by_status.items()}
    )


def check_certificate(d: Mapping[str, Any], where: str) -> None:
    """Refuse a serialized verdict whose certificate lacks the fields its checker always writes.

    ``d`` is :meth:`Verdict.to_dict` data that already validates against the verdict schema;
    ``where`` names the file and the verdict.  Raises :class:`~theory.errors.UserInputError` naming
    the missing fields (see :data:`CERTIFICATE_KEYS`).  This catches a forged ``holds`` with an
    empty or partial certificate, not a forged but plausible one: that takes re-verifying it.
    """
    alts = CERTIFICATE_KEYS.get(str(d.get("claim")), {}).get(str(d.get("status")), ())
    if not alts:
        return
    cert = d.get("certificate")
    have = set(cert) if isinstance(cert, Mapping) else set()
    if any(a <= have for a in alts):
        return
    best = min(alts, key=lambda a: len(a - have))
    raise UserInputError(
        f"{where}: expected a {d.get('status')!r} verdict of {d.get('claim')} with the certificate fields "
        f"its checker writes; missing {', '.join(sorted(best - have))}"
    )


def jsonable(x: Any) -> Any:
    """Convert numbers, tensors, arrays and containers into plain JSON data.

    Non-finite floats become the strings ``"inf"``, ``"-inf"``, ``"nan"`` (JSON has no such numbers).
    """
    try:
        import torch

        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().tolist()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    if hasattr(x, "tolist") and not isinstance(x, (str, bytes)):
        x = x.tolist()
    if isinstance(x, bool) or x is None or isinstance(x, str):
        return x
    if isinstance(x, int):
        return int(x)
    if isinstance(x, float):
        if math.isfinite(x):
            return x
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    # the package's own data (certificates, options, timings): a value that is not JSON data is a
    # defect of the code that produced it, not bad input
    raise TypeError(f"jsonable: expected JSON-compatible data, got {type(x).__name__}")


@dataclass(frozen=True)
class Verdict:
    """A checker's verdict on one claim and one problem.

    Attributes
    ----------
    claim
        The claim id (see ``theory.claims``).
    status
        ``"holds"`` (certified within tolerance), ``"violated"`` (certified counterexample) or
        ``"inconclusive"`` (``reason`` says why).
    problem
        The problem's fingerprint (sizes, K, N, lam, loss, seed, hash).
    certificate
        Numbers a reader can re-check: gaps, residuals, ranks, singular values, the bound.
    reason
        One sentence.
    timings
        Seconds per stage.
    options
        The checker's options (tolerances, ranks, claim variants).
    counterexample
        Path of the saved problem file when ``status == "violated"`` and it was saved.
    """

    claim: str
    status: Status
    problem: Mapping[str, Any]
    certificate: Mapping[str, Any]
    reason: str
    timings: Mapping[str, float] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    counterexample: str | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:  # a checker's defect; a file's status is checked in from_dict
            raise ValueError(f"status: expected one of {STATUSES}, got {self.status!r}")
        if self.counterexample is not None and self.status == "inconclusive":
            raise ValueError(
                "counterexample: a saved file belongs to a decided verdict, not an inconclusive one"
            )
        for name in ("problem", "certificate", "timings", "options"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    @property
    def holds(self) -> bool:
        """``True`` for a certified ``holds``."""
        return self.status == "holds"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data with the field names as keys."""
        return {
            "claim": self.claim,
            "status": self.status,
            "problem": jsonable(dict(self.problem)),
            "certificate": jsonable(dict(self.certificate)),
            "reason": self.reason,
            "timings": jsonable(dict(self.timings)),
            "options": jsonable(dict(self.options)),
            "counterexample": self.counterexample,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Verdict:
        """Inverse of :meth:`to_dict` (numbers stay plain JSON numbers).

        Data that are not a serialized verdict (a missing ``status``, a certificate that is not an
        object) raise :class:`~theory.errors.UserInputError` naming the field.
        """
        if not isinstance(d, Mapping):
            raise InputTypeError(f"verdict: expected a JSON object, got {type(d).__name__}")
        required = (
            ("claim", str),
            ("status", str),
            ("problem", Mapping),
            ("certificate", Mapping),
            ("reason", str),
        )
        for name, kind in required:
            if name not in d:
                raise UserInputError(f"verdict: expected a field {name!r}, got none (fields {sorted(d)})")
            if not isinstance(d[name], kind):
                raise InputTypeError(
                    f"verdict.{name}: expected a {kind.__name__}, got {type(d[name]).__name__}"
                )
        if d["status"] not in STATUSES:
            raise UserInputError(f"verdict.status: expected one of {STATUSES}, got {shown(d['status'])}")
        if not isinstance(d.get("reason", ""), str):
            raise InputTypeError(f"verdict.reason: expected a str, got {type(d['reason']).__name__}")
        for name in ("timings", "options"):
            if not isinstance(d.get(name, {}), Mapping):
                raise InputTypeError(f"verdict.{name}: expected a mapping, got {type(d[name]).__name__}")
        if not isinstance(d.get("counterexample"), (str, type(None))):
            raise InputTypeError(
                f"verdict.counterexample: expected a str or null, got {d['counterexample']!r}"
            )
        if d.get("counterexample") is not None and d["status"] == "inconclusive":
            raise UserInputError(
                "verdict.counterexample: expected null on an inconclusive verdict, got a path"
            )
        return cls(
            claim=d["claim"],
            status=d["status"],
            problem=d["problem"],
            certificate=d["certificate"],
            reason=d["reason"],
            timings=d.get("timings", {}),
            options=d.get("options", {}),
            counterexample=d.get("counterexample"),
        )

    def summary(self) -> str:
        """One line: claim, status, problem, reason."""
        p = self.problem
        if "N" in p:
            where = f"{p.get('name', '')} N={p.get('N')} K={p.get('K')}"
        else:  # e.g. an attention head of [HSK24]: no examples x outputs
            where = f"{p.get('name', '')}" + (f" case {p['case']}" if "case" in p else "")
        return f"{self.claim:<16} {self.status:<12} {where}: {self.reason}"
