"""The [KKR25] room: checkers of the non-linearized claims, their training runs and experiments."""

from verify.kkr.checkers import (
    Evidence,
    check_kkr_bias,
    check_kkr_dichotomy,
    check_kkr_includes_jlr,
    check_kkr_loud,
    check_kkr_magnitude,
    check_kkr_sgd_rank,
    check_kkr_special,
    collect_evidence,
)

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
