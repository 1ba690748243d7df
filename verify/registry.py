"""Claim id -> checker function, gathered from the rooms; the CLI and the suites read it with the claims.

Each paper's room (:mod:`verify.jlr`, :mod:`verify.kkr`, :mod:`verify.wyl`, :mod:`verify.hsk`)
registers its checkers, with their options, certificate fields and evidence lines, when it is
imported (:func:`verify.checker.checker`); this module imports the rooms and lists the checkers in
the order of :mod:`theory.claims`.  Every checker validates its options when called.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from types import MappingProxyType

# the rooms register their checkers when imported
import verify.hsk  # noqa: F401
import verify.jlr  # noqa: F401
import verify.kkr  # noqa: F401
import verify.wyl  # noqa: F401
from theory.claims import claim_ids
from verify.checker import registered
from verify.options import OPTION_SPECS
from verify.verdict import Verdict

__all__ = ["CHECKERS", "NUC_CLAIMS", "EVIDENCE_CLAIMS", "get_checker"]

# every room registers its checkers (verify.checker.checker) when imported; in the order of theory.claims
CHECKERS: Mapping[str, Callable[..., Verdict]] = MappingProxyType(
    {c: registered()[c].function for c in claim_ids() if c in registered()}
)

assert set(CHECKERS) == set(registered()), "a checker for a claim theory.claims does not list"
assert set(CHECKERS) == set(OPTION_SPECS), "a checker without an option spec (verify.options)"

#: Claims whose checkers accept a certified NUC ``solution`` (one solve can be shared by them).
NUC_CLAIMS: frozenset[str] = frozenset(
    c for c, f in CHECKERS.items() if "solution" in inspect.signature(f).parameters
)

#: Claims judged on training evidence of a non-linearized problem (one collection is shared).
EVIDENCE_CLAIMS: frozenset[str] = frozenset(
    c for c, f in CHECKERS.items() if "evidence" in inspect.signature(f).parameters
)


def get_checker(claim_id: str) -> Callable[..., Verdict]:
    """The checker of a claim; ``KeyError`` names the claims that have checkers."""
    try:
        return CHECKERS[claim_id]
    except KeyError:
        known = ", ".join(CHECKERS)
        raise KeyError(f"claim: expected a claim with a checker ({known}); got {claim_id!r}") from None
