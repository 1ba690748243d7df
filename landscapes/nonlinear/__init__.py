"""LoRA without linearization ([KKR25]): problems, SOSPs, the penalized reference, restricted constants."""

from landscapes.nonlinear import problems
from landscapes.nonlinear.problems import *  # noqa: F403  (the package's public names are the module's)

__all__ = [*problems.__all__]
