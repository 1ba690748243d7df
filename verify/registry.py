"""Claim id -> checker function. The CLI and the suites read this together with ``theory.claims``.

Every checker here validates its options against :data:`verify.options.OPTION_SPECS` when called.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from types import MappingProxyType

from theory.claims import claim_ids
from verify.checker import registered
from verify.hsk.checkers import check_hsk_above, check_hsk_below, check_hsk_exact, check_hsk_poly_error
from verify.jlr.gen import check_jlr_gen
from verify.jlr.rank import (
    check_jlr_equiv,
    check_jlr_rank_blocks,
    check_jlr_rank_ft,
    check_jlr_rank_nuc,
    check_jlr_zero_saddle,
)
from verify.jlr.second_order import check_jlr_gd, check_jlr_no_spurious, check_jlr_spurious_below
from verify.kkr.checkers import (
    check_kkr_bias,
    check_kkr_dichotomy,
    check_kkr_includes_jlr,
    check_kkr_loud,
    check_kkr_magnitude,
    check_kkr_sgd_rank,
    check_kkr_special,
)
from verify.options import OPTION_SPECS, validated
from verify.verdict import Verdict
from verify.wyl.checkers import (
    check_wyl_alignment,
    check_wyl_directions,
    check_wyl_first_step,
    check_wyl_unchanged,
)
from verify.wyl.speed import check_wyl_speed

__all__ = ["CHECKERS", "NUC_CLAIMS", "EVIDENCE_CLAIMS", "get_checker"]

_UNREGISTERED: dict[str, Callable[..., Verdict]] = {
    "JLR-rank-FT": check_jlr_rank_ft,
    "JLR-rank-NUC": check_jlr_rank_nuc,
    "JLR-rank-blocks": check_jlr_rank_blocks,
    "JLR-equiv": check_jlr_equiv,
    "JLR-zero-saddle": check_jlr_zero_saddle,
    "JLR-no-spurious": check_jlr_no_spurious,
    "JLR-spurious-below": check_jlr_spurious_below,
    "JLR-gd": check_jlr_gd,
    "JLR-gen": check_jlr_gen,
    "WYL-first-step": check_wyl_first_step,
    "WYL-directions": check_wyl_directions,
    "WYL-unchanged": check_wyl_unchanged,
    "WYL-alignment": check_wyl_alignment,
    # (check_wyl_speed is validated here: verify/wyl_speed.py does not decorate it itself)
    "WYL-speed": validated("WYL-speed")(check_wyl_speed),
    "KKR-special": check_kkr_special,
    "KKR-dichotomy": check_kkr_dichotomy,
    "KKR-loud": check_kkr_loud,
    "KKR-magnitude": check_kkr_magnitude,
    "KKR-bias": check_kkr_bias,
    "KKR-includes-JLR": check_kkr_includes_jlr,
    "KKR-sgd-rank": check_kkr_sgd_rank,
    "HSK-exact": check_hsk_exact,
    "HSK-below": check_hsk_below,
    "HSK-above": check_hsk_above,
    "HSK-poly-error": check_hsk_poly_error,
}

# every room's checkers, registered beside them (verify.checker.checker), then those not yet moved;
# in the order of theory.claims
CHECKERS: Mapping[str, Callable[..., Verdict]] = MappingProxyType(
    {
        c: registered()[c].function if c in registered() else _UNREGISTERED[c]
        for c in claim_ids()
        if c in registered() or c in _UNREGISTERED
    }
)

assert set(CHECKERS) <= set(claim_ids()), "a checker for an unregistered claim"
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
