"""The suite's record: each verdict of ``loracheck run`` against the status recorded for it.

The default suite is curated: every (problem, claim) pair has a recorded status --
``holds`` unless the suite lists it (:attr:`landscapes.catalog.ProblemSpec.expected`) as a known
refutation (``violated``, e.g. KKR-includes-JLR, whose statement fails on a linearized problem
with a null direction) or a known ``inconclusive`` (with why).  Like an expected failure in a
test suite, a verdict as recorded is not news; a difference is:

* exit 1 -- a **new violation**: ``violated`` where the record says ``holds`` or ``inconclusive``;
* exit 2 -- any other difference: a recorded ``holds`` came out ``inconclusive``, or a recorded
  refutation or inconclusive came out otherwise (the record is out of date: look, then update it);
* exit 0 -- every verdict as recorded.

``loracheck run --strict`` ignores the record (exit 1 on any violation, 2 on any inconclusive),
the semantics ``loracheck audit`` keeps for a user's own problems.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from landscapes.catalog import ProblemSpec
from verify.verdict import Verdict

__all__ = ["Comparison", "compare", "record_exit_code", "record_summary"]


@dataclass(frozen=True)
class Comparison:
    """One verdict against its record.

    ``kind``: ``"as recorded"``, ``"new violation"``, ``"holds became inconclusive"`` or
    ``"differs"`` (a recorded refutation or inconclusive came out otherwise).  ``why`` is the
    record's reason for a non-holds status (empty for a recorded ``holds``).
    """

    claim: str
    problem: str
    expected: str
    got: str
    why: str
    kind: str

    @property
    def as_recorded(self) -> bool:
        """The verdict has the recorded status."""
        return self.kind == "as recorded"

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the report."""
        return {
            "claim": self.claim,
            "problem": self.problem,
            "expected": self.expected,
            "got": self.got,
            "why": self.why,
            "kind": self.kind,
        }


def _kind(expected: str, got: str) -> str:
    if got == expected:
        return "as recorded"
    if got == "violated":
        return "new violation"
    if expected == "holds":
        return "holds became inconclusive"
    return "differs"


def compare(verdicts: Iterable[Verdict], suite: Sequence[ProblemSpec]) -> list[Comparison]:
    """Each verdict against the status its suite records for it (by problem name and claim)."""
    specs: Mapping[str, ProblemSpec] = {s.name: s for s in suite}
    out = []
    for v in verdicts:
        name = str(v.problem.get("name"))
        spec = specs.get(name)
        expected = spec.expected_status(v.claim) if spec is not None else "holds"
        why = spec.expected[v.claim][1] if spec is not None and v.claim in spec.expected else ""
        out.append(Comparison(v.claim, name, expected, v.status, why, _kind(expected, v.status)))
    return out


def record_exit_code(comparisons: Sequence[Comparison]) -> int:
    """1 if a verdict is a new violation; else 2 if any differs from the record; else 0."""
    if any(c.kind == "new violation" for c in comparisons):
        return 1
    if any(not c.as_recorded for c in comparisons):
        return 2
    return 0


def record_summary(comparisons: Sequence[Comparison]) -> dict[str, Any]:
    """Counts against the record, and every difference (for the report)."""
    known = [c for c in comparisons if c.as_recorded and c.expected != "holds"]
    return {
        "as_recorded": sum(c.as_recorded for c in comparisons),
        "known_refutations": sum(c.expected == "violated" for c in known),
        "known_inconclusive": sum(c.expected == "inconclusive" for c in known),
        "differences": [c.to_dict() for c in comparisons if not c.as_recorded],
    }
