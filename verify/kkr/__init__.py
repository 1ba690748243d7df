"""The [KKR25] room: checkers of the non-linearized claims, their training runs and experiments."""

from verify.kkr.checkers import (  # with the public names of the old module path
    RANK_RTOL,
    Blocks,
    check_kkr_bias,
    check_kkr_dichotomy,
    check_kkr_includes_jlr,
    check_kkr_loud,
    check_kkr_magnitude,
    check_kkr_sgd_rank,
    check_kkr_special,
)
from verify.kkr.evidence import Evidence, collect_evidence

__all__ = [
    "Blocks",
    "RANK_RTOL",
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
