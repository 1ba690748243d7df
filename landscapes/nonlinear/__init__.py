"""LoRA without linearization ([KKR25]): problems, SOSPs, the penalized reference, restricted constants."""

from landscapes.nonlinear.problems import (
    Blocks,
    NonlinearProblem,
    SensingStructure,
    attention_block,
    double_well,
    double_well_minimum,
    double_well_points,
    from_problem,
    matrix_sensing,
    nonlinear_sensing,
    quadratic_sensing,
    shifted,
    two_layer,
)

__all__ = [
    "Blocks",
    "NonlinearProblem",
    "matrix_sensing",
    "quadratic_sensing",
    "nonlinear_sensing",
    "SensingStructure",
    "two_layer",
    "attention_block",
    "from_problem",
    "double_well",
    "double_well_points",
    "double_well_minimum",
    "shifted",
]
