"""The [JLR24] room: checkers of the rank-bound, second-order and generalization claims; experiments."""

from landscapes.curvature.autodiff import AutodiffHessian, lora_hessian_dense  # moved; old path kept
from verify.jlr import gen, rank, second_order
from verify.jlr.gen import *  # noqa: F403  (the room's public names are those of its modules)
from verify.jlr.rank import *  # noqa: F403
from verify.jlr.rank import PREDICTION_RTOL  # public name of the old module path
from verify.jlr.second_order import *  # noqa: F403

__all__ = [
    "PREDICTION_RTOL",
    "AutodiffHessian",
    "lora_hessian_dense",
    *rank.__all__,
    *second_order.__all__,
    *gen.__all__,
]
