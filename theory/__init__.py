"""Pure mathematics of the LoRA theory: bounds, the claim registry, symbolic derivations.

No torch is imported here.
"""

from theory.bounds import (
    r_max,
    rank_above_bound,
    rank_within_bound,
    ranks_above_bound,
    ranks_within_bound,
    triangular,
)
from theory.claims import CLAIMS, DEFAULT_TOLERANCES, PAPERS, Claim, Tolerances, claim_ids, get_claim

__all__ = [
    "r_max",
    "triangular",
    "rank_within_bound",
    "rank_above_bound",
    "ranks_within_bound",
    "ranks_above_bound",
    "Claim",
    "Tolerances",
    "DEFAULT_TOLERANCES",
    "CLAIMS",
    "PAPERS",
    "claim_ids",
    "get_claim",
]
