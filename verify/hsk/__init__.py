"""The [HSK24] room: checkers of the computational claims about LoRA gradients in attention."""

from verify.hsk import checkers
from verify.hsk.checkers import *  # noqa: F403  (the room's public names are those of its modules)

__all__ = list(checkers.__all__)
