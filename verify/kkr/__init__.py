"""The [KKR25] room: checkers of the non-linearized claims, their training runs and experiments."""

from verify.kkr import checkers
from verify.kkr.checkers import *  # noqa: F403  (the room's public names are those of its modules)
from verify.kkr.checkers import RANK_RTOL, Blocks  # public names of the old module path

__all__ = ["Blocks", "RANK_RTOL", *checkers.__all__]
