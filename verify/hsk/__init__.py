"""The [HSK24] room: checkers of the computational claims about LoRA gradients in attention."""

from verify.hsk.checkers import (
    autograd_gradients,
    check_hsk_above,
    check_hsk_below,
    check_hsk_exact,
    check_hsk_poly_error,
    fit_exponent,
    rank_grid,
)

__all__ = [
    "autograd_gradients",
    "fit_exponent",
    "check_hsk_exact",
    "check_hsk_poly_error",
    "check_hsk_below",
    "check_hsk_above",
    "rank_grid",
]
