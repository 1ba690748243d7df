"""The [WYL24] room: checkers of the LoRA-GA claims and the WYL-speed comparison."""

from verify.wyl.checkers import (
    FirstStep,
    check_wyl_alignment,
    check_wyl_directions,
    check_wyl_first_step,
    check_wyl_unchanged,
    first_step,
    pipeline_tolerance,
)
from verify.wyl.speed import (
    DEFAULT_LRS,
    SpeedRun,
    check_wyl_speed,
    speed_runs,
    speed_table,
)

__all__ = [
    "first_step",
    "FirstStep",
    "check_wyl_first_step",
    "pipeline_tolerance",
    "check_wyl_directions",
    "check_wyl_unchanged",
    "check_wyl_alignment",
    "SpeedRun",
    "speed_runs",
    "speed_table",
    "check_wyl_speed",
    "DEFAULT_LRS",
]
