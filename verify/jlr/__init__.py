"""The [JLR24] room: checkers of the rank-bound, second-order and generalization claims; experiments."""

from landscapes.curvature.autodiff import AutodiffHessian, lora_hessian_dense  # moved; old path kept
from verify.jlr.gen import (
    DEFAULT_GRID_RATIO,
    check_jlr_gen,
    held_out_problem,
    rademacher_monte_carlo,
    shared_examples,
    variance_statistic,
    with_held_out,
    with_review_held_out,
)
from verify.jlr.rank import (  # public names of the old module path
    PREDICTION_RTOL,
    check_jlr_equiv,
    check_jlr_magnitude,
    check_jlr_rank_blocks,
    check_jlr_rank_ft,
    check_jlr_rank_nuc,
    check_jlr_zero_saddle,
)
from verify.jlr.second_order import (
    DEFAULT_INITS,
    VIOLATED_MEANS,
    check_jlr_gd,
    check_jlr_no_spurious,
    check_jlr_spurious_below,
    counterexample_test,
)

__all__ = [
    "PREDICTION_RTOL",
    "AutodiffHessian",
    "lora_hessian_dense",
    "check_jlr_rank_ft",
    "check_jlr_rank_nuc",
    "check_jlr_rank_blocks",
    "check_jlr_equiv",
    "check_jlr_magnitude",
    "check_jlr_zero_saddle",
    "check_jlr_no_spurious",
    "check_jlr_spurious_below",
    "check_jlr_gd",
    "counterexample_test",
    "DEFAULT_INITS",
    "VIOLATED_MEANS",
    "check_jlr_gen",
    "with_held_out",
    "shared_examples",
    "DEFAULT_GRID_RATIO",
    "with_review_held_out",
    "held_out_problem",
    "variance_statistic",
    "rademacher_monte_carlo",
]
